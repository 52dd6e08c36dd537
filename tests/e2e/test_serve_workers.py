"""`paycell serve --workers 2` as real processes: one port, one database, two workers.

Connections reach both workers; a switch set through one holds in both; a scrape of either
counts the requests of both; a worker killed with SIGKILL is started again while the other
keeps serving, and the counters do not go backwards; SIGTERM stops the supervisor and every
worker cleanly, and the books balance.
"""

import contextlib
import json
import os
import re
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from paycell.platform import Platform
from tests.e2e.serving import ServerProcess, buyer_and_shop, free_port, stop, wait_until

ADMIN_KEY = "workers-test-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
STARTUP_SECONDS = 60


def _workers_of(supervisor: int) -> set[int]:
    """The supervisor's worker processes (spawned: their command line names spawn_main)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == supervisor and b"spawn_main" in command:
            found.add(int(entry.name))
    return found


def _fresh_get(base: str, path: str) -> httpx.Response:
    """A request on a new connection, so that the kernel picks a worker for it again."""
    with httpx.Client(base_url=base, timeout=10) as client:
        return client.get(path, headers=ADMIN)


def _counted_requests(metrics: str, route: str) -> int:
    pattern = re.compile(rf'^paycell_http_requests_total\{{route="{re.escape(route)}".*\}} (\d+)$')
    return sum(int(m.group(1)) for m in map(pattern.match, metrics.splitlines()) if m)


def _published_requests(run_directories: Path, route: str) -> int:
    """The requests to `route` that the workers' published snapshots count, summed."""
    total = 0
    for path in run_directories.glob("paycell-serve-*/metrics-worker-*.json"):
        try:
            snapshot = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # replaced between the glob and the read: try again
            return -1
        total += sum(count for counted, _, _, count in snapshot["requests"] if counted == route)
    return total


def _board_files(run_directories: Path) -> dict[str, int]:
    """The workers' metrics files by name, each with its inode: a publication replaces the
    file by a new one, so a changed inode means its worker has published since."""
    return {
        path.name: path.stat().st_ino
        for path in run_directories.glob("paycell-serve-*/metrics-worker-*.json")
    }


def _pay_orders_through_both_workers(base: str, orders: int) -> None:
    """Orders paid concurrently on new connections (so through both workers): each is paid
    once, and the merchant's balance (no fee) is exactly their sum."""
    with httpx.Client(base_url=base, timeout=10) as client:
        buyer, shop = buyer_and_shop(client, ADMIN, fee_rate_basis_points=0)
    # Eight top-ups on new connections, so both workers instruct their bank: each worker
    # must take its own bank's answers.
    for number in range(8):
        with httpx.Client(base_url=base, timeout=10) as client:
            top_up = {"request_no": f"T-{number}", "amount": 125_00}
            assert client.post("/v1/wallet/top-ups", json=top_up, headers=buyer).is_success
    with httpx.Client(base_url=base, timeout=10) as client:
        wait_until(
            lambda: client.get("/v1/wallet", headers=buyer).json()["available"] == 1_000_00,
            15,
            "the top-ups",
        )
        ids = [
            client.post(
                "/v1/orders", json={"out_trade_no": f"W-{n}", "amount": 1_00 + n}, headers=shop
            ).json()["id"]
            for n in range(orders)
        ]

    def pay(order_id: str) -> str:
        with httpx.Client(base_url=base, timeout=30) as payer:
            status: str = payer.post(f"/v1/orders/{order_id}/pay", headers=buyer).json()["status"]
            return status

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(pay, ids)) == ["TRADE_SUCCESS"] * orders
    with httpx.Client(base_url=base, timeout=10) as client:
        balance = client.get("/v1/balance", headers=shop).json()["available"]
    assert balance == sum(1_00 + n for n in range(orders))


def test_two_workers_share_the_port_the_switches_and_the_metrics(tmp_path: Path) -> None:
    database = tmp_path / "served.db"
    run_directories = tmp_path / "tmp"
    run_directories.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = ServerProcess(
        [sys.executable, "-m", "paycell.adapters.cli.main", "serve", "--database", str(database),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        tmp_path,
        env={**os.environ, "PAYCELL_ADMIN_KEY": ADMIN_KEY, "TMPDIR": str(run_directories)},
    )  # fmt: skip
    try:
        wait_until(lambda: len(_workers_of(server.pid)) == 2, STARTUP_SECONDS, "two workers")

        def both_listen() -> bool:
            assert server.poll() is None, server.logs()
            try:
                return _fresh_get(base, "/v1/admin/switches").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(both_listen, STARTUP_SECONDS, "the server")
        assert [path.name[:14] for path in run_directories.iterdir()] == ["paycell-serve-"]
        _pay_orders_through_both_workers(base, 40)
        # Forty new connections: the kernel spreads them over both workers.
        for _ in range(40):
            assert _fresh_get(base, "/v1/admin/switches").status_code == 200

        with httpx.Client(base_url=base, timeout=10) as client:
            turned = client.put("/v1/admin/switches", json={"reports": "off"}, headers=ADMIN)
            assert turned.json()["reports"] == "off"
        for _ in range(20):
            assert _fresh_get(base, "/v1/admin/switches").json()["reports"] == "off"

        # 1 wait + 40 + 20 GETs (plus the wait's earlier tries, which got no answer).
        def scraped() -> int:
            return _counted_requests(_fresh_get(base, "/metrics").text, "/v1/admin/switches")

        wait_until(lambda: scraped() >= 62, 10, "both workers' requests in one scrape")
        assert "paycell_workers 2" in _fresh_get(base, "/metrics").text
        # A worker killed outright loses what it counted since its last publication (at
        # most a second's worth, as documented), so the kill waits until both workers have
        # published every request counted so far.
        wait_until(
            lambda: _published_requests(run_directories, "/v1/admin/switches") >= scraped(),
            10,
            "both workers' figures published",
        )
        before_kill = _published_requests(run_directories, "/v1/admin/switches")

        # A worker killed outright is started again; the other serves meanwhile.
        victim = min(_workers_of(server.pid))
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(_workers_of(server.pid) - {victim}) == 2, STARTUP_SECONDS, "a new worker"
        )
        wait_until(lambda: "paycell_workers 2" in _fresh_get(base, "/metrics").text, 10, "2")
        for _ in range(20):
            assert _fresh_get(base, "/v1/admin/switches").json()["reports"] == "off"
        # The new worker went on from its predecessor's counters: once both workers have
        # published since these requests (each publication is a new file), the totals hold
        # the 20 new requests on top of them.
        boards_before = _board_files(run_directories)

        def both_published_since() -> bool:
            boards = _board_files(run_directories)
            return len(boards) == 2 and not set(boards.values()) & set(boards_before.values())

        wait_until(both_published_since, 10, "both workers to publish again")
        assert _published_requests(run_directories, "/v1/admin/switches") >= before_kill + 20
        assert scraped() >= before_kill + 20
    finally:
        output, errors = stop(server, 60)
    assert server.returncode == 0, errors
    assert f"http://127.0.0.1:{port} (2 workers)" in output
    logged = [json.loads(line) for line in errors.splitlines() if line.startswith("{")]
    served_by = {line.get("worker") for line in logged if line["logger"] == "paycell.access"}
    assert served_by == {0, 1}
    assert any("exited with status -9" in line["message"] for line in logged)
    # Every worker stopped on the supervisor's SIGTERM, none had to be killed.
    assert not any("did not stop in time" in line["message"] for line in logged)
    assert _workers_of(server.pid) == set()
    assert list(run_directories.iterdir()) == []  # the run directory is removed
    with Platform(str(database)) as platform:
        assert platform.verify().ok


def _serve_two_workers(database: Path, port: int) -> ServerProcess:
    """The server in a process group of its own, as a terminal's foreground job is. Its run
    directory goes beside the database: a supervisor killed outright cannot remove it."""
    return ServerProcess(
        [sys.executable, "-m", "paycell.adapters.cli.main", "serve", "--database", str(database),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        database.parent,
        env={**os.environ, "PAYCELL_ADMIN_KEY": ADMIN_KEY, "TMPDIR": str(database.parent)},
        start_new_session=True,
    )  # fmt: skip


def _answers(port: int) -> bool:
    try:
        return _fresh_get(f"http://127.0.0.1:{port}", "/v1/admin/switches").status_code == 200
    except httpx.TransportError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_second_server_is_refused_the_port_and_ctrl_c_stops_the_first_cleanly(
    tmp_path: Path,
) -> None:
    port = free_port()
    server = _serve_two_workers(tmp_path / "served.db", port)
    wait_until(lambda: len(_workers_of(server.pid)) == 2, STARTUP_SECONDS, "two workers")
    wait_until(lambda: _answers(port), STARTUP_SECONDS, "the server")
    # A second server on the same port is refused, never let to share it.
    second = _serve_two_workers(tmp_path / "other.db", port)
    second.wait(timeout=60)
    _, refusal = second.logs()
    assert second.returncode == 1
    assert "cannot listen on 127.0.0.1" in refusal
    assert not (tmp_path / "other.db").exists()  # refused before it touched a database
    workers = _workers_of(server.pid)
    os.killpg(server.pid, signal.SIGINT)
    server.wait(timeout=60)
    _, errors = server.logs()
    assert server.returncode == 0, errors
    assert "starting it again" not in errors  # a worker's stop is not taken for a crash
    wait_until(lambda: not any(map(_alive, workers)), 10, "the workers to end")


def test_workers_end_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    port = free_port()
    server = _serve_two_workers(tmp_path / "served.db", port)
    try:
        wait_until(lambda: len(_workers_of(server.pid)) == 2, STARTUP_SECONDS, "two workers")
        wait_until(lambda: _answers(port), STARTUP_SECONDS, "the server")
        workers = _workers_of(server.pid)
        server.kill()
        server.wait(timeout=30)
        # Orphans would serve on and hold the port a new server needs.
        wait_until(lambda: not any(map(_alive, workers)), 15, "the orphaned workers to end")
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)  # whatever is left of the group
