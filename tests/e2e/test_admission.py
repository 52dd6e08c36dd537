"""Admission control: classes are shed lowest first, payments are still served, every shed
answer is 503 with Retry-After, nothing waits without bound; and the per-key rate limit.

Saturation is made deterministic by holding the platform's lock from the test (as one slow
platform call would): admitted requests then wait for it, holding their slots."""

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from paycell.adapters.http import create_app
from paycell.adapters.http.admission import (
    CONSOLE,
    PAYMENTS,
    QUERIES,
    REPORTS,
    Admission,
    AdmissionConfig,
    ClassLimits,
    RateLimit,
    RateLimiter,
    route_class,
)
from tests.e2e.conftest import ADMIN_KEY, Party, World


def test_every_route_has_a_class() -> None:
    assert route_class("POST", "/v1/orders/{order_id}/pay") == PAYMENTS
    assert route_class("POST", "/v1/orders/{order_id}/refunds") == PAYMENTS
    assert route_class("POST", "/v1/orders/bulk-pay") == PAYMENTS
    assert route_class("POST", "/v1/channel/callbacks") == PAYMENTS
    assert route_class("POST", "/gateway.do") == PAYMENTS
    assert route_class("POST", "/alipay/cashier/{trade_no}") == PAYMENTS
    assert route_class("GET", "/v1/orders/{order_id}") == QUERIES
    assert route_class("GET", "/v1/wallet") == QUERIES
    assert route_class("GET", "/v1/balance") == QUERIES
    assert route_class("GET", "/v1/orders") == REPORTS
    assert route_class("GET", "/v1/settlements/{day}") == REPORTS
    assert route_class("GET", "/v1/webhook-events") == REPORTS
    assert route_class("GET", "/alipay/bills/{token}.csv") == REPORTS
    assert route_class("GET", "/docs") == CONSOLE
    assert route_class("GET", "/openapi.json") == CONSOLE
    assert route_class("GET", "/alipay/cashier/{trade_no}") == CONSOLE


def _limits(in_flight: int, depth: int, wait: float) -> ClassLimits:
    return ClassLimits(in_flight, depth, wait, 1)


@contextmanager
def _app(
    world: World,
    config: AdmissionConfig,
    *,
    raise_server_exceptions: bool = True,
    **options: Any,
) -> Iterator[tuple[TestClient, threading.RLock, Admission]]:
    lock = threading.RLock()
    app = create_app(world.platform, admin_key=ADMIN_KEY, lock=lock, admission=config, **options)
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        yield client, lock, app.state.admission


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


class _Calls:
    """Requests sent from threads; their responses by name."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.threads: list[threading.Thread] = []
        self.responses: dict[str, Any] = {}
        self.order: list[str] = []
        self._mutex = threading.Lock()

    def start(self, name: str, method: str, url: str, headers: dict[str, str]) -> None:
        def run() -> None:
            response = self.client.request(method, url, headers=headers)
            with self._mutex:
                self.responses[name] = response
                self.order.append(name)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=20)
            assert not thread.is_alive()


def _paying_world(world: World) -> tuple[Party, Party, list[int]]:
    shop = world.new_merchant()
    buyer = world.new_user()
    world.top_up(buyer, 100_00)
    orders = [world.create_order(shop, f"A-{i}", 1_00) for i in range(2)]
    return shop, buyer, orders


def test_lower_classes_are_shed_first_and_payments_are_served(world: World) -> None:
    shop, buyer, orders = _paying_world(world)
    config = AdmissionConfig(
        (_limits(2, 4, 10.0), _limits(1, 2, 10.0), _limits(1, 2, 10.0), _limits(1, 2, 10.0)),
        total_in_flight=3,
    )
    with _app(world, config) as (client, lock, admission):
        calls = _Calls(client)

        def state() -> tuple[tuple[int, ...], tuple[int, ...]]:
            snap = admission.snapshot()
            return snap.in_flight, snap.queued

        with lock:  # a slow platform call: every admitted request waits behind it
            calls.start("query", "GET", "/v1/wallet", buyer.headers)
            calls.start("report", "GET", "/v1/orders", shop.headers)
            _wait_for(lambda: state() == ((0, 1, 1, 0), (0, 0, 0, 0)))
            calls.start("report-waiting", "GET", "/v1/payouts", shop.headers)
            _wait_for(lambda: state()[1] == (0, 0, 1, 0))
            # A query that must wait sheds the waiting report at once.
            calls.start("query-waiting", "GET", "/v1/balance", shop.headers)
            _wait_for(lambda: state()[1] == (0, 1, 0, 0) and "report-waiting" in calls.responses)
            calls.start("pay-1", "POST", f"/v1/orders/{orders[0]}/pay", buyer.headers)
            _wait_for(lambda: state()[0] == (1, 1, 1, 0))
            # The server is full: a payment that must wait sheds the waiting query.
            calls.start("pay-2", "POST", f"/v1/orders/{orders[1]}/pay", buyer.headers)
            _wait_for(lambda: state()[1] == (1, 0, 0, 0) and "query-waiting" in calls.responses)
            # While a payment waits, lower classes are refused at once.
            docs = client.get("/docs")
            wallet = client.get("/v1/wallet", headers=buyer.headers)
            assert calls.order == ["report-waiting", "query-waiting"]
        calls.join()
    responses = calls.responses
    for name in ("query", "report", "pay-1", "pay-2"):
        assert responses[name].status_code == 200, (name, responses[name].text)
    for shed in (responses["report-waiting"], responses["query-waiting"], docs, wallet):
        assert shed.status_code == 503
        assert shed.json()["error"]["code"] == "overloaded"
        assert int(shed.headers["Retry-After"]) >= 1
    assert world.order(shop, orders[1])["status"] == "TRADE_SUCCESS"
    shed_counts = admission.snapshot().shed
    assert shed_counts == {
        (REPORTS, "priority"): 1,
        (QUERIES, "priority"): 2,
        (CONSOLE, "priority"): 1,
    }
    assert admission.snapshot().in_flight == (0, 0, 0, 0)


def test_waits_are_bounded_and_queues_are_bounded(sqlite_world: World) -> None:
    world = sqlite_world
    shop, buyer, orders = _paying_world(world)
    config = AdmissionConfig(
        (_limits(1, 1, 0.3), _limits(1, 1, 0.3), _limits(1, 1, 0.3), _limits(1, 1, 0.3)),
        total_in_flight=4,
    )
    with _app(world, config) as (client, lock, admission):
        calls = _Calls(client)
        with lock:
            calls.start("pay-1", "POST", f"/v1/orders/{orders[0]}/pay", buyer.headers)
            _wait_for(lambda: admission.snapshot().in_flight[PAYMENTS] == 1)
            calls.start("pay-2", "POST", f"/v1/orders/{orders[1]}/pay", buyer.headers)
            _wait_for(lambda: admission.snapshot().queued[PAYMENTS] == 1)
            # The queue (depth 1) is full: refused at once.
            full = client.post(f"/v1/orders/{orders[1]}/pay", headers=buyer.headers)
            _wait_for(lambda: "pay-2" in calls.responses)  # its bounded wait ran out
        calls.join()
    assert calls.responses["pay-1"].status_code == 200
    assert full.status_code == 503
    assert full.headers["Retry-After"] == "1"
    timed_out = calls.responses["pay-2"]
    assert timed_out.status_code == 503
    assert timed_out.json()["error"]["code"] == "overloaded"
    assert admission.snapshot().shed == {(PAYMENTS, "queue_full"): 1, (PAYMENTS, "timeout"): 1}
    # Refused payments changed nothing; the order can still be paid.
    assert world.order(shop, orders[1])["status"] == "WAIT_BUYER_PAY"


def test_no_5xx_other_than_503_under_a_burst(sqlite_world: World) -> None:
    world = sqlite_world
    shop, buyer, _ = _paying_world(world)
    orders = [world.create_order(shop, f"burst-{i}", 1_00) for i in range(40)]
    config = AdmissionConfig(
        (_limits(4, 64, 10.0), _limits(1, 1, 0.05), _limits(1, 0, 0.0), _limits(1, 0, 0.0)),
        total_in_flight=5,
    )
    # A server exception must come back as a 500 the test sees, not end the sending thread
    # (whose request would then have no response, and no status to count).
    with _app(world, config, raise_server_exceptions=False) as (client, _lock, _admission):
        calls = _Calls(client)
        for i, order in enumerate(orders):
            calls.start(f"pay-{i}", "POST", f"/v1/orders/{order}/pay", buyer.headers)
            calls.start(f"list-{i}", "GET", "/v1/orders", shop.headers)
            calls.start(f"docs-{i}", "GET", "/openapi.json", {})
        calls.join()
    assert len(calls.responses) == len(calls.threads) == 3 * len(orders)  # every request answered
    statuses = {name: r.status_code for name, r in calls.responses.items()}
    assert set(statuses.values()) <= {200, 503}, statuses
    paid = [n for n, s in statuses.items() if n.startswith("pay-") and s == 200]
    assert len(paid) == len(orders)  # the payment queue is deep enough for the burst
    assert all("Retry-After" in calls.responses[n].headers for n, s in statuses.items() if s == 503)
    assert world.platform.verify().ok


def test_rate_limit_per_api_key(sqlite_world: World) -> None:
    world = sqlite_world
    shop = world.new_merchant()
    other = world.new_merchant("other")
    lock = threading.RLock()
    app = create_app(world.platform, admin_key=ADMIN_KEY, lock=lock, rate_limit=RateLimit(1.0, 2.0))
    with TestClient(app) as client:
        answers = [client.get("/v1/balance", headers=shop.headers) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[2].json()["error"]["code"] == "rate_limited"
        assert int(answers[2].headers["Retry-After"]) >= 1
        assert client.get("/v1/balance", headers=other.headers).status_code == 200


def test_token_bucket_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimit(10.0, 2.0), clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(3)] == [0, 0, 1]
    now[0] += 0.1
    assert limiter.take("k") == 0
    assert limiter.take("k") == 1


@pytest.mark.parametrize("bad", [0, -1])
def test_admission_config_is_checked(bad: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AdmissionConfig((_limits(1, 1, 1.0),) * 4, total_in_flight=bad)
