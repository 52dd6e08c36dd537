"""Webhooks end to end against a real local HTTP receiver, on SQLite and PostgreSQL.

Real platform events (a payment, a refund, a payout) are delivered by `WebhookDispatcher`
with the real httpx sender to a `ThreadingHTTPServer` on 127.0.0.1 that checks every
signature with `verify_signature`, as a merchant would, and can be told to fail. The clock is
the test's: a retry happens only when the clock reaches the schedule's next time.
"""

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from paycell.adapters.storage.platform_factory import open_platform_store
from paycell.adapters.webhooks import DispatchReport, HttpWebhookSender, WebhookDispatcher
from paycell.core.batch import CommittedBatch
from paycell.core.payments.outcomes import Decision
from paycell.core.payments.records import Merchant, User
from paycell.core.payments.webhook_schedule import (
    MAX_ATTEMPTS,
    RETRY_DELAYS_SECONDS,
    verify_signature,
)
from paycell.platform import Platform
from paycell.service.ledger_service import LedgerService
from paycell.service.platform_ports import WebhookDelivery
from paycell.service.webhooks import (
    DELIVERED,
    FAILED,
    LEASE_SECONDS,
    PENDING,
    SKIPPED,
    WebhookEventNotFoundError,
    WebhookService,
)

NS = 1_000_000_000
# 2023-11-15T00:00:00Z
START = 19_676 * 86_400 * NS
SECRET = "whsec_tea_house"


class Clock:
    def __init__(self, now: int = START) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds * NS


@dataclass(frozen=True)
class Received:
    event_id: int
    event_type: str
    body: str
    signature: str
    content_type: str
    signature_valid: bool
    answered: int


class Receiver:
    """A merchant's webhook endpoint: records every request, verifies its signature against
    the test clock, answers 200, or 500 for the next `fail_next` requests, after `delay`."""

    def __init__(self, clock: Clock, secret: str = SECRET) -> None:
        self.clock = clock
        self.secret = secret
        self.requests: list[Received] = []
        self.fail_remaining = 0
        self.delay_seconds = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver._handle(self, raw)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/paycell"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        signature = handler.headers.get("Paycell-Signature", "")
        with self._lock:
            failing = self.fail_remaining > 0
            self.fail_remaining -= int(failing)
            status = 500 if failing else 200
            self.requests.append(
                Received(
                    event_id=int(handler.headers.get("Paycell-Event-Id", "0")),
                    event_type=handler.headers.get("Paycell-Event-Type", ""),
                    body=raw.decode(),
                    signature=signature,
                    content_type=handler.headers.get("Content-Type", ""),
                    signature_valid=verify_signature(
                        self.secret, signature, raw, self.clock() // NS
                    ),
                    answered=status,
                )
            )
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def fail_next(self, count: int) -> None:
        with self._lock:
            self.fail_remaining = count

    def of_event(self, event_id: int) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.event_id == event_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@dataclass
class World:
    clock: Clock
    platform: Platform
    service: WebhookService
    dispatcher: WebhookDispatcher
    receiver: Receiver


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def receiver(clock: Clock) -> Iterator[Receiver]:
    opened = Receiver(clock)
    yield opened
    opened.close()


@pytest.fixture
def sender() -> Iterator[HttpWebhookSender]:
    with HttpWebhookSender(timeout_seconds=2.0) as opened:
        yield opened


@pytest.fixture
def world(
    database_url: str, clock: Clock, receiver: Receiver, sender: HttpWebhookSender
) -> Iterator[World]:
    platform = Platform(database_url, clock=clock)
    service = WebhookService(platform.store, platform.ledger, clock)
    try:
        yield World(clock, platform, service, WebhookDispatcher(service, sender), receiver)
    finally:
        platform.close()


# ---------------------------------------------------------------------------------- helpers


def ok(decision: Decision) -> Decision:
    assert decision.error is None, f"{decision.error}: {decision.message}"
    return decision


def shop(platform: Platform, url: str, name: str = "Tea House") -> Merchant:
    return platform.create_merchant(
        name,
        fee_rate_basis_points=60,
        settlement_bank_account="6222 0000 0001",
        webhook_url=url,
        webhook_secret=SECRET,
    )


def buyer(platform: Platform, amount: int) -> User:
    user = platform.create_user("Li Lei")
    ok(platform.request_top_up(user.id, f"top-up-{user.id}", amount))
    assert all(d.ok for d in platform.deliver_bank_callbacks())
    return user


def paid_order(platform: Platform, merchant: Merchant, payer: User, number: str) -> int:
    order = ok(platform.create_order(merchant.id, number, 25_00, subject="Oolong")).orders[0]
    ok(platform.pay_order(order.id, payer.id))
    return order.id


def only_event_id(platform: Platform, merchant: Merchant, after_id: int = 0) -> int:
    events = platform.webhook_events(merchant.id, after_id)
    assert len(events) == 1, events
    return events[0].id


def delivery_of(world: World, event_id: int) -> WebhookDelivery:
    delivery = world.service.delivery(event_id)
    assert delivery is not None
    return delivery


# ------------------------------------------------------------------------------------ tests


def test_payment_refund_and_payout_events_are_each_delivered_once_signed(world: World) -> None:
    platform, receiver = world.platform, world.receiver
    merchant = shop(platform, receiver.url)
    payer = buyer(platform, 100_00)
    order_id = paid_order(platform, merchant, payer, "T-1")
    ok(platform.refund(order_id, merchant.id, "R-1", 5_00, "one cup short"))
    ok(platform.request_payout(merchant.id, "P-1"))
    assert all(d.ok for d in platform.deliver_bank_callbacks())

    events = platform.webhook_events(merchant.id)
    assert [e.type for e in events] == ["payment.succeeded", "refund.succeeded", "payout.succeeded"]

    report = world.dispatcher.deliver_due()
    assert (report.claimed, report.delivered, report.retrying) == (3, 3, 0)
    assert sorted(r.event_id for r in receiver.requests) == [e.id for e in events]
    for event in events:
        (received,) = receiver.of_event(event.id)
        assert received.signature_valid, received.signature
        assert received.event_type == event.type
        assert received.body == event.body
        assert received.content_type == "application/json"
        assert received.signature.startswith(f"t={world.clock() // NS},v1=")
        delivery = delivery_of(world, event.id)
        assert (delivery.status, delivery.attempts, delivery.delivered_at) == (
            DELIVERED,
            1,
            world.clock(),
        )
    assert json.loads(receiver.of_event(events[0].id)[0].body)["status"] == "TRADE_SUCCESS"

    # Nothing is sent twice: not on the next pass, not a day later.
    assert world.dispatcher.deliver_due().claimed == 0
    world.clock.advance(86_400)
    assert world.dispatcher.deliver_due().claimed == 0
    assert len(receiver.requests) == 3
    assert platform.verify().ok


def test_failures_are_retried_on_schedule_then_given_up_and_replay_sends_again(
    world: World,
) -> None:
    platform, receiver, clock = world.platform, world.receiver, world.clock
    merchant = shop(platform, receiver.url)
    paid_order(platform, merchant, buyer(platform, 100_00), "T-1")
    event_id = only_event_id(platform, merchant)
    receiver.fail_next(MAX_ATTEMPTS)
    first_try = clock()

    for attempt in range(1, MAX_ATTEMPTS + 1):
        report = world.dispatcher.deliver_due()
        assert report.claimed == 1
        assert len(receiver.of_event(event_id)) == attempt
        delivery = delivery_of(world, event_id)
        assert delivery.attempts == attempt
        assert delivery.last_error == "HTTP 500"
        if attempt == MAX_ATTEMPTS:
            assert report.given_up == 1
            break
        assert report.retrying == 1
        delay = RETRY_DELAYS_SECONDS[attempt - 1]
        assert (delivery.status, delivery.next_attempt_at) == (PENDING, clock() + delay * NS)
        # Not before its time...
        clock.advance(delay - 1)
        assert world.dispatcher.deliver_due().claimed == 0
        assert len(receiver.of_event(event_id)) == attempt
        # ...and as soon as the clock gets there.
        clock.advance(1)

    assert 24 * 3_600 <= (clock() - first_try) // NS <= 25 * 3_600
    delivery = delivery_of(world, event_id)
    assert (delivery.status, delivery.next_attempt_at, delivery.attempts) == (FAILED, 0, 8)
    assert all(r.signature_valid and r.answered == 500 for r in receiver.of_event(event_id))
    clock.advance(7 * 86_400)
    assert world.dispatcher.deliver_due().claimed == 0
    assert len(receiver.of_event(event_id)) == MAX_ATTEMPTS

    # The merchant's endpoint is fixed; the merchant asks for the event again.
    replayed = world.service.replay(merchant.id, event_id)
    assert (replayed.status, replayed.attempts, replayed.next_attempt_at) == (
        PENDING,
        MAX_ATTEMPTS,
        clock(),
    )
    report = world.dispatcher.deliver_due()
    assert report.delivered == 1
    last = receiver.of_event(event_id)[-1]
    assert (last.answered, last.signature_valid) == (200, True)
    delivery = delivery_of(world, event_id)
    assert (delivery.status, delivery.attempts, delivery.last_error) == (DELIVERED, 9, "")

    # A delivered event can be replayed too: same event id, same body, a fresh signature.
    clock.advance(60)
    world.service.replay(merchant.id, event_id)
    assert world.dispatcher.deliver_due().delivered == 1
    first, *_, again = receiver.of_event(event_id)
    assert again.body == first.body
    assert again.signature != first.signature
    assert again.signature_valid


def test_a_replay_that_fails_gets_one_try_once_every_try_is_used(world: World) -> None:
    platform, receiver = world.platform, world.receiver
    merchant = shop(platform, receiver.url)
    paid_order(platform, merchant, buyer(platform, 100_00), "T-1")
    event_id = only_event_id(platform, merchant)
    receiver.fail_next(MAX_ATTEMPTS + 1)
    for delay in (*RETRY_DELAYS_SECONDS, 0):
        world.dispatcher.deliver_due()
        world.clock.advance(delay)
    assert delivery_of(world, event_id).status == FAILED
    world.service.replay(merchant.id, event_id)
    assert world.dispatcher.deliver_due().given_up == 1
    assert delivery_of(world, event_id).status == FAILED
    assert len(receiver.of_event(event_id)) == MAX_ATTEMPTS + 1


def test_recovery_after_two_failures(world: World) -> None:
    platform, receiver, clock = world.platform, world.receiver, world.clock
    merchant = shop(platform, receiver.url)
    paid_order(platform, merchant, buyer(platform, 100_00), "T-1")
    event_id = only_event_id(platform, merchant)
    receiver.fail_next(2)
    world.dispatcher.deliver_due()
    clock.advance(RETRY_DELAYS_SECONDS[0])
    world.dispatcher.deliver_due()
    clock.advance(RETRY_DELAYS_SECONDS[1])
    assert world.dispatcher.deliver_due().delivered == 1
    assert [r.answered for r in receiver.of_event(event_id)] == [500, 500, 200]
    delivery = delivery_of(world, event_id)
    assert (delivery.status, delivery.attempts) == (DELIVERED, 3)


def test_replay_of_another_merchants_or_an_unknown_event_is_refused(world: World) -> None:
    platform, receiver = world.platform, world.receiver
    merchant = shop(platform, receiver.url)
    other = shop(platform, receiver.url, "Noodle Bar")
    paid_order(platform, merchant, buyer(platform, 100_00), "T-1")
    event_id = only_event_id(platform, merchant)
    assert world.dispatcher.deliver_due().delivered == 1
    before = delivery_of(world, event_id)
    with pytest.raises(WebhookEventNotFoundError, match=f"no webhook event {event_id}") as info:
        world.service.replay(other.id, event_id)
    assert info.value.code == "webhook_event_not_found"
    with pytest.raises(WebhookEventNotFoundError):
        world.service.replay(merchant.id, event_id + 1_000)
    assert delivery_of(world, event_id) == before
    assert world.dispatcher.deliver_due().claimed == 0


def test_merchant_without_a_webhook_url_is_skipped_not_retried(world: World) -> None:
    platform = world.platform
    merchant = shop(platform, "")
    paid_order(platform, merchant, buyer(platform, 100_00), "T-1")
    event_id = only_event_id(platform, merchant)
    # Skipped when written: the dispatcher never has to pass over it.
    assert delivery_of(world, event_id).status == SKIPPED
    report = world.dispatcher.deliver_due()
    assert report.claimed == 0
    delivery = delivery_of(world, event_id)
    assert (delivery.status, delivery.attempts, delivery.last_error) == (
        SKIPPED,
        0,
        "no webhook URL",
    )
    world.clock.advance(86_400)
    assert world.dispatcher.deliver_due().claimed == 0
    # Still readable by polling, and a replay without a URL is skipped again, by the
    # dispatcher this time (as are deliveries written pending by older versions).
    assert platform.webhook_events(merchant.id)[0].id == event_id
    assert world.service.replay(merchant.id, event_id).status == PENDING
    world.dispatcher.deliver_due()
    assert delivery_of(world, event_id).status == SKIPPED
    assert world.receiver.requests == []


def test_refused_connection_and_timeout_are_failures_with_their_reason(
    world: World, clock: Clock
) -> None:
    platform, receiver = world.platform, world.receiver
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    nobody = shop(platform, f"http://127.0.0.1:{closed_port}/hooks", "Closed Shop")
    slow = shop(platform, receiver.url, "Slow Shop")
    payer = buyer(platform, 100_00)
    paid_order(platform, nobody, payer, "T-1")
    paid_order(platform, slow, payer, "T-2")
    receiver.delay_seconds = 1.0
    with HttpWebhookSender(timeout_seconds=0.3) as impatient:
        report = WebhookDispatcher(world.service, impatient).deliver_due()
    assert (report.claimed, report.retrying) == (2, 2)
    refused = delivery_of(world, only_event_id(platform, nobody))
    timed_out = delivery_of(world, only_event_id(platform, slow))
    assert refused.last_error.startswith("ConnectError"), refused.last_error
    assert timed_out.last_error.startswith("timeout"), timed_out.last_error
    for delivery in (refused, timed_out):
        assert delivery.status == PENDING
        assert delivery.next_attempt_at == clock() + RETRY_DELAYS_SECONDS[0] * NS


def test_a_lease_keeps_an_attempt_to_one_claimant_until_it_runs_out(world: World) -> None:
    platform, clock, service = world.platform, world.clock, world.service
    merchant = shop(platform, world.receiver.url)
    paid_order(platform, merchant, buyer(platform, 100_00), "T-1")
    event_id = only_event_id(platform, merchant)

    (claimed, event, owner), *rest = service.claim_due(10)
    assert rest == []
    assert (claimed.attempts, event.id, owner.id) == (1, event_id, merchant.id)
    assert claimed.next_attempt_at == clock() + LEASE_SECONDS * NS
    # Another process, at the same time or a little later: nothing to claim.
    assert service.claim_due(10) == []
    clock.advance(LEASE_SECONDS - 1)
    assert service.claim_due(10) == []
    # The claimant died without an answer: once the lease runs out, the next attempt.
    clock.advance(1)
    (again, _event, _merchant), *_ = service.claim_due(10)
    assert again.attempts == 2
    # The first claimant's late answer no longer holds the delivery and changes nothing.
    assert service.record_result(event_id, True, attempt=1) is None
    assert delivery_of(world, event_id) == again
    recorded = service.record_result(event_id, False, "HTTP 503", attempt=2)
    assert recorded is not None
    assert recorded.next_attempt_at == clock() + RETRY_DELAYS_SECONDS[1] * NS
    # A dispatcher whose lease ran out before its turn does not send.
    clock.advance(RETRY_DELAYS_SECONDS[1])
    stale = service.claim_due(10)
    clock.advance(10_000)
    assert world.dispatcher._send(stale[0]) == (stale[0], None)
    assert world.receiver.requests == []


def test_two_dispatchers_on_one_database_never_send_an_attempt_twice(
    world: World, database_url: str, sender: HttpWebhookSender
) -> None:
    platform, receiver, clock = world.platform, world.receiver, world.clock
    merchants = [shop(platform, receiver.url, f"Shop {n}") for n in range(3)]
    payer = buyer(platform, 10_000_00)
    for number in range(24):
        paid_order(platform, merchants[number % 3], payer, f"T-{number}")
    events = [e for m in merchants for e in platform.webhook_events(m.id)]
    assert len(events) == 24
    receiver.fail_next(6)
    receiver.delay_seconds = 0.005

    second = Platform(database_url, clock=clock)
    try:
        dispatchers = [
            WebhookDispatcher(world.service, sender, concurrency=4),
            WebhookDispatcher(
                WebhookService(second.store, second.ledger, clock), sender, concurrency=4
            ),
        ]
        reports: list[list[DispatchReport]] = [[], []]
        start = threading.Barrier(2)

        def drain(index: int) -> None:
            start.wait()
            while True:
                report = dispatchers[index].deliver_due(limit=3)
                reports[index].append(report)
                if report.claimed == 0:
                    return

        threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads)

        # Both took part, and each event was sent exactly once in this round.
        claimed = [sum(r.claimed for r in rs) for rs in reports]
        assert all(claimed), claimed
        assert sum(claimed) == 24
        assert sorted(r.event_id for r in receiver.requests) == sorted(e.id for e in events)
        assert sum(r.answered == 500 for r in receiver.requests) == 6

        # The six failures come back at the schedule's time, once each, whoever claims them.
        clock.advance(RETRY_DELAYS_SECONDS[0])
        threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
        start.reset()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(receiver.requests) == 30
        for event in events:
            sent = receiver.of_event(event.id)
            assert [r.answered for r in sent] in ([200], [500, 200])
            assert all(r.signature_valid for r in sent)
            delivery = delivery_of(world, event.id)
            assert (delivery.status, delivery.attempts) == (DELIVERED, len(sent))
        assert all(not r.errors and not r.lease_expired for rs in reports for r in rs)
    finally:
        second.close()


def test_run_delivers_in_the_background_until_stopped(
    world: World, database_url: str, sender: HttpWebhookSender
) -> None:
    platform, receiver = world.platform, world.receiver
    merchant = shop(platform, receiver.url)
    paid_order(platform, merchant, buyer(platform, 100_00), "T-1")
    event_id = only_event_id(platform, merchant)
    # The dispatcher on a connection of its own, as it would run beside `paycell serve`.
    store = open_platform_store(database_url)
    service = WebhookService(store, LedgerService(store, world.clock), world.clock)
    stop = threading.Event()
    reports: list[DispatchReport] = []
    thread = threading.Thread(
        target=WebhookDispatcher(service, sender).run,
        args=(stop, 0.02),
        kwargs={"on_report": reports.append},
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not receiver.of_event(event_id) and time.monotonic() < deadline:
            time.sleep(0.01)
        paid_order(platform, merchant, buyer(platform, 100_00), "T-2")
        second = only_event_id(platform, merchant, after_id=event_id)
        while not receiver.of_event(second) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(timeout=5)
        store.close()
    assert not thread.is_alive()
    assert [r.event_id for r in receiver.requests] == [event_id, second]
    assert sum(r.delivered for r in reports) == 2
    assert delivery_of(world, second).status == DELIVERED


def test_a_dispatch_pass_records_all_its_results_in_one_commit(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, receiver = world.platform, world.receiver
    merchant = shop(platform, receiver.url)
    payer = buyer(platform, 100_00)
    for number in ("C-1", "C-2", "C-3", "C-4"):
        paid_order(platform, merchant, payer, number)
    units: list[object] = []
    open_unit = platform.ledger.unit_of_work

    def counted(committed: list[CommittedBatch]) -> Any:
        units.append(committed)
        return open_unit(committed)

    monkeypatch.setattr(platform.ledger, "unit_of_work", counted)
    report = world.dispatcher.deliver_due()

    assert (report.claimed, report.delivered) == (4, 4)
    # One unit of work claims the pass's deliveries, one records what came of them.
    assert len(units) == 2
    events = platform.webhook_events(merchant.id)
    assert [delivery_of(world, e.id).status for e in events] == ["delivered"] * 4
