"""Single payments through the HTTP API: many clients, one `POST /v1/orders/{id}/pay` each.

Prepares a fresh SQLite file (or `--database`) in-process: buyers with money, one merchant
(the hot account every payment credits) and one unpaid order per payment. Then starts
`paycell serve` on it as a subprocess on a free 127.0.0.1 port (access log off, as a
benchmark's server logs to nobody), and drives it from `--clients` keep-alive connections on
one asyncio loop with raw sockets (a light client: the machine has few cores and the client
must not take them from the server). Each connection pays its share of the orders one request
at a time. Prints one JSON line per run: payments/s (2xx answers over the wall time of the
run), the status counts and latency percentiles.

    .venv/bin/python bench/single_pay.py --runs 5 --payments 6000 --clients 64
    .venv/bin/python bench/single_pay.py --serve-argument=--workers=2     # two server workers
    .venv/bin/python bench/single_pay.py --wallet-queries                 # reads instead

`--wallet-queries` sends `GET /v1/wallet` (the buyer's balance) instead of each payment: a
read, which takes no writer lock, for comparing how reads and payments scale with workers.
"""

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from paycell.adapters.http.logging_setup import ACCESS_LOG_ENVIRONMENT_VARIABLE
from paycell.platform import Platform

ADMIN_KEY = "bench-admin-key"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _prepare(database: str, buyers: int, payments: int) -> list[tuple[int, str]]:
    """(order id, buyer's API key) for every payment to make."""
    from paycell.core.payments.records import PartyKind

    with Platform(database) as platform:
        shop = platform.create_merchant("hot shop", fee_rate_basis_points=60,
                                        settlement_bank_account="6222")  # fmt: skip
        keys = []
        for number in range(buyers):
            buyer = platform.create_user(f"buyer {number}")
            keys.append((buyer.id, platform.issue_api_key(PartyKind.USER, buyer.id)))
            assert platform.request_top_up(buyer.id, f"t-{number}", 10_000_000_00).ok
        platform.deliver_bank_callbacks()
        work = []
        for number in range(payments):
            decision = platform.create_order(shop.id, f"P-{number}", 1_00 + number % 997)
            _, key = keys[number % buyers]
            work.append((decision.orders[0].id, key))
    random.Random(7).shuffle(work)
    return work


def _request(order_id: int, key: str, query: bool) -> bytes:
    if query:
        return (
            f"GET /v1/wallet HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n\r\n"
        ).encode()
    return (
        f"POST /v1/orders/{order_id}/pay HTTP/1.1\r\nHost: bench\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def _client(
    port: int,
    share: list[tuple[int, str]],
    statuses: dict[int, int],
    latencies: list[float],
    query: bool,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for order_id, key in share:
            request = _request(order_id, key, query)
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _drive(
    port: int, work: list[tuple[int, str]], clients: int, query: bool = False
) -> dict[str, object]:
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    shares = [work[index::clients] for index in range(clients)]
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, share, statuses, latencies, query) for share in shares))
    elapsed = time.perf_counter() - started
    latencies.sort()
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    return {
        "payments_per_second": round(ok / elapsed),
        "seconds": round(elapsed, 3),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


def _wait_for_banner(process: "subprocess.Popen[str]") -> None:
    """Until the server printed its banner: with several workers, once all of them listen,
    so that the clients' connections are spread over every worker."""
    assert process.stdout is not None
    for line in process.stdout:
        if "stop with Ctrl-C" in line:
            return
    raise SystemExit(f"the server exited with {process.wait()}")


def _wait_for_port(port: int, process: "subprocess.Popen[str]") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--payments", type=int, default=5_000, help="per run")
    parser.add_argument("--clients", type=int, default=64, help="concurrent connections")
    parser.add_argument("--buyers", type=int, default=200)
    parser.add_argument("--database", help="a PostgreSQL URL (default: a fresh SQLite file)")
    parser.add_argument("--wallet-queries", action="store_true",
                        help="GET /v1/wallet instead of paying (a read per request)")  # fmt: skip
    parser.add_argument("--serve-argument", action="append", default=[],
                        help="passed on to `paycell serve` (repeat)")  # fmt: skip
    arguments = parser.parse_args()
    figures = []
    for run in range(arguments.runs):
        with tempfile.TemporaryDirectory(prefix="paycell-single-pay-") as directory:
            database = arguments.database or os.path.join(directory, "pay.db")
            work = _prepare(database, arguments.buyers, arguments.payments)
            port = _free_port()
            environment = {**os.environ, ACCESS_LOG_ENVIRONMENT_VARIABLE: "off",
                           "PAYCELL_ADMIN_KEY": ADMIN_KEY}  # fmt: skip
            process = subprocess.Popen(
                [sys.executable, "-m", "paycell.adapters.cli.main", "serve", "--database",
                 database, "--port", str(port), *arguments.serve_argument],
                env=environment, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                _wait_for_banner(process)
                _wait_for_port(port, process)
                result = asyncio.run(
                    _drive(port, work, arguments.clients, arguments.wallet_queries)
                )
            finally:
                process.terminate()
                process.wait(timeout=30)
            result["run"] = run + 1
            figures.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    rates = [int(str(f["payments_per_second"])) for f in figures]
    print(
        json.dumps(
            {
                "bench": "single_pay",
                "requests": "GET /v1/wallet" if arguments.wallet_queries else "pay",
                "server_arguments": arguments.serve_argument,
                "clients": arguments.clients,
                "payments_per_run": arguments.payments,
                "median_payments_per_second": statistics.median(rates),
                "runs": rates,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
