"""Degradation switches: the admin API and CLI turn features off and on at runtime; payments
keep working; background jobs honour the switches."""

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from paycell.adapters.cli.main import main
from paycell.adapters.http import create_app, serve
from paycell.adapters.http import switches as sw
from paycell.platform import Platform
from tests.e2e.conftest import ADMIN_KEY, World


def test_switches_default_on_and_change_at_runtime(world: World) -> None:
    shop = world.new_merchant()
    state = world.client.get("/v1/admin/switches", headers=world.admin)
    assert state.status_code == 200
    assert state.json() == {
        "object": "switches",
        "reports": "on",
        "console": "on",
        "webhooks": "on",
        "scheduler": "on",
        "risk_mode": "full",
    }
    changed = world.client.put(
        "/v1/admin/switches", json={"reports": "off", "console": "off"}, headers=world.admin
    )
    assert changed.status_code == 200
    assert changed.json()["reports"] == "off"
    assert changed.json()["webhooks"] == "on"
    for url, headers in (
        ("/v1/orders", shop.headers),
        ("/v1/payouts", shop.headers),
        ("/v1/settlements/2024-11-11", shop.headers),
        ("/v1/webhook-events", shop.headers),
        ("/docs", {}),
        ("/openapi.json", {}),
    ):
        refused = world.client.get(url, headers=headers)
        assert refused.status_code == 503, url
        assert refused.json()["error"]["code"] == "degraded"
        assert "Retry-After" in refused.headers
    # Payments and queries go on.
    order = world.create_order(shop, "S-1", 1_00)
    assert world.order(shop, order)["status"] == "WAIT_BUYER_PAY"
    world.client.put("/v1/admin/switches", json={"reports": "on"}, headers=world.admin)
    assert world.client.get("/v1/orders", headers=shop.headers).status_code == 200
    assert world.client.get("/docs").status_code == 503


def test_switch_changes_are_checked(sqlite_world: World) -> None:
    world = sqlite_world
    shop = world.new_merchant()
    put = world.client.put
    assert (
        put("/v1/admin/switches", json={"reports": "maybe"}, headers=world.admin).status_code == 422
    )
    assert put("/v1/admin/switches", json={"nope": "on"}, headers=world.admin).status_code == 422
    assert (
        put("/v1/admin/switches", json={"risk_mode": "cheap"}, headers=world.admin).json()[
            "risk_mode"
        ]
        == "cheap"
    )
    assert (
        put("/v1/admin/switches", json={"reports": "off"}, headers=shop.headers).status_code == 401
    )
    assert world.client.get("/v1/admin/switches").status_code == 401
    assert world.client.get("/v1/admin/switches", headers=world.admin).json()["reports"] == "on"


def test_switches_are_reachable_while_the_platform_is_busy(sqlite_world: World) -> None:
    lock = threading.RLock()
    from starlette.testclient import TestClient

    app = create_app(sqlite_world.platform, admin_key=ADMIN_KEY, lock=lock)
    with TestClient(app) as client, lock:
        answer = client.put(
            "/v1/admin/switches", json={"webhooks": "off"}, headers=sqlite_world.admin
        )
        assert answer.status_code == 200
        assert app.state.switches.value("webhooks") == "off"


def test_background_work_runs_only_while_switched_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve, "BACKGROUND_INTERVAL_SECONDS", 0.01)
    switches = sw.Switches({"webhooks": "off"})
    ran = threading.Event()
    stop = threading.Event()
    worker = threading.Thread(
        target=serve._while_switched_on,
        args=(switches, sw.WEBHOOKS, ran.set, "test", stop),
        daemon=True,
    )
    worker.start()
    assert not ran.wait(0.2)  # deferred while off
    switches.set("webhooks", "on")
    assert ran.wait(5)
    stop.set()
    worker.join(5)


def test_scheduler_switch_pauses_the_scheduler(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve, "BACKGROUND_INTERVAL_SECONDS", 0.01)
    platform = Platform(sqlite_url)
    runs: list[int] = []
    monkeypatch.setattr(platform, "run_scheduler", lambda: runs.append(1))
    switches = sw.Switches({"scheduler": "off"})
    stop = threading.Event()
    jobs = threading.Thread(
        target=serve._background_jobs,
        args=(platform, threading.RLock(), stop, switches, True),
        daemon=True,
    )
    jobs.start()
    time.sleep(0.2)
    assert runs == []
    switches.set("scheduler", "on")
    deadline = time.monotonic() + 5
    while not runs and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    jobs.join(5)
    platform.close()
    assert runs


def test_only_the_worker_that_runs_the_scheduler_runs_it_but_every_worker_takes_its_banks_answers(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve, "BACKGROUND_INTERVAL_SECONDS", 0.01)
    platform = Platform(sqlite_url)
    scheduled: list[int] = []
    answered: list[int] = []
    monkeypatch.setattr(platform, "run_scheduler", lambda: scheduled.append(1))
    monkeypatch.setattr(platform, "deliver_bank_callbacks", lambda: answered.append(1))
    stop = threading.Event()
    jobs = threading.Thread(
        target=serve._background_jobs,
        args=(platform, threading.RLock(), stop, sw.Switches(), False),
        daemon=True,
    )
    jobs.start()
    deadline = time.monotonic() + 5
    while len(answered) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    jobs.join(5)
    platform.close()
    assert len(answered) >= 5
    assert scheduled == []


@pytest.fixture
def live_server(sqlite_url: str) -> Iterator[str]:
    platform = Platform(sqlite_url)
    app = create_app(platform, admin_key=ADMIN_KEY)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    platform.close()


def test_cli_shows_and_sets_switches(live_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    options = ["switches", "--url", live_server, "--admin-key", ADMIN_KEY]
    assert main(options) == 0
    assert "reports on" in capsys.readouterr().out
    assert main([*options, "reports", "off"]) == 0
    assert "reports off" in capsys.readouterr().out
    assert main([*options, "reports", "sideways"]) == 2
    assert "invalid_field" in capsys.readouterr().err
    assert main([*options, "reports"]) == 2
    capsys.readouterr()
    assert main(["switches", "--url", live_server, "--admin-key", "wrong"]) == 1
    assert "unauthorized" in capsys.readouterr().err
    assert main(["switches", "--url", "http://127.0.0.1:9", "--admin-key", "k"]) == 3
