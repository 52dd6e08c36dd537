"""Group commit in the server: concurrent `POST /v1/orders/{id}/pay` requests are paid in
groups, one unit of work and one commit each, and every request answers exactly as alone.

Groups are made deterministic the way a busy server makes them: the test holds the platform's
lock (as one slow platform call would) while the requests queue, then lets go; the worker
drains them all into one group. No assertion is about time."""

import json
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from paycell.adapters.http import create_app
from paycell.adapters.http.group_commit import GroupCommitConfig, GroupCommitter
from paycell.adapters.http.idempotency import REPLAYED_HEADER
from paycell.adapters.http.metrics import Metrics
from paycell.adapters.storage.sqlite import SqliteStore
from paycell.core.currency import currency_for_code
from paycell.core.payments import chart
from paycell.core.payments.records import OrderStatus
from paycell.core.types import Transfer, TransferFlags
from paycell.platform import Platform
from tests.e2e.conftest import ADMIN_KEY, Clock, Party, World
from tests.integration.sqlite_files import logged_changes

FEE_BASIS_POINTS = 60
# Order amounts whose 0.60% fee needs rounding (half to even): 7_50 -> 4.5 -> 4 and
# 17_50 -> 10.5 -> 10 (down to even), 12_50 -> 7.5 -> 8 (up to even), 10_84 -> 6.504 -> 7,
# 10_83 -> 6.498 -> 6, 10_00 -> 6 exactly.
AMOUNTS = (10_00, 7_50, 12_50, 10_84, 10_83, 17_50)

# A payment to send: (order id, buyer, extra headers).
Payment = tuple[int | str, Party, dict[str, str]]


@dataclass
class Server:
    world: World
    lock: threading.RLock
    groups: GroupCommitter
    metrics: Metrics

    def pay_together(self, requests: Sequence[Payment]) -> list[Any]:
        """Send the payments at once and let them through the lock only when all are queued:
        (order id, buyer, extra headers) -> responses in the same order."""
        responses: list[Any] = [None] * len(requests)

        def send(index: int, order: int | str, buyer: Party, extra: dict[str, str]) -> None:
            responses[index] = self.world.client.post(
                f"/v1/orders/{order}/pay", headers={**buyer.headers, **extra}
            )

        threads = [
            threading.Thread(target=send, args=(index, *request), daemon=True)
            for index, request in enumerate(requests)
        ]
        with self.lock:
            for queued, thread in enumerate(threads, start=1):
                # One at a time, so the group holds them in the order given.
                thread.start()
                _wait_for(partial(self._queue_holds, queued))
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive()
        return responses

    def _queue_holds(self, count: int) -> bool:
        return self.groups.depth() == count

    def buyers_with_orders(
        self, shop: Party, count: int, money: int = 100_00
    ) -> list[tuple[Party, int, int]]:
        """(buyer, order id, amount) for `count` buyers, each topped up with `money`; the
        amounts go through `AMOUNTS`, plus 10.00 a round so that they differ (which adds
        exactly 6 to the fee: the rounding stays the same)."""
        result = []
        for number in range(count):
            buyer = self.world.new_user(f"buyer {number}")
            if money:
                self.world.top_up(buyer, money, request_no=f"top-up-{number}")
            rounds, index = divmod(number, len(AMOUNTS))
            amount = AMOUNTS[index] + 10_00 * rounds
            result.append((buyer, self.world.create_order(shop, f"G-{number}", amount), amount))
        return result


def _wait_for(condition: Callable[[], bool]) -> None:
    # A liveness guard, not a timing assertion: the requests are queued within milliseconds.
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the requests never queued"
        time.sleep(0.002)


@contextmanager
def _open(database_url: str, **options: Any) -> Iterator[Server]:
    clock = Clock()
    platform = Platform(database_url, clock=clock)
    lock = threading.RLock()
    app = create_app(platform, admin_key=ADMIN_KEY, lock=lock, **options)
    # A 500 is an answer here (the fallback test), not an exception raised into the test.
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Server(
            World(platform, client, clock), lock, app.state.group_commit, app.state.metrics
        )
    report = platform.verify()
    platform.close()
    assert report.ok, report.render()


@pytest.fixture
def server(database_url: str) -> Iterator[Server]:
    with _open(database_url) as opened:
        yield opened


@pytest.fixture
def sqlite_server(sqlite_url: str) -> Iterator[Server]:
    with _open(sqlite_url) as opened:
        yield opened


def _net(amount: int) -> int:
    """What the merchant is credited for a payment: the amount less its fee, rounded half to
    even (worked out here with Decimal, independently of core/money.py)."""
    fee = (Decimal(amount) * FEE_BASIS_POINTS / 10_000).quantize(
        Decimal(1), rounding=ROUND_HALF_EVEN
    )
    return amount - int(fee)


def _journal(platform: Platform) -> list[Any]:
    return list(platform.store.journal_entries())


def test_concurrent_single_payments_commit_in_groups(server: Server) -> None:
    world = server.world
    shop = world.new_merchant(fee_rate_basis_points=FEE_BASIS_POINTS)
    payments = server.buyers_with_orders(shop, 20)
    groups_before, _ = server.metrics.groups()
    journal_before = _journal(world.platform)

    responses = server.pay_together([(order, buyer, {}) for buyer, order, _ in payments])

    assert [r.status_code for r in responses] == [200] * 20
    assert [r.json()["id"] for r in responses] == [order for _, order, _ in payments]
    assert {r.json()["status"] for r in responses} == {"TRADE_SUCCESS"}
    groups, requests = server.metrics.groups()
    assert groups - groups_before == 1  # twenty payments, one group
    assert requests >= 20
    # One ledger batch, one commit: the journal gained one entry with every payment's legs.
    new_entries = _journal(world.platform)[len(journal_before) :]
    assert [entry.event_count for entry in new_entries] == [40]
    assert world.balance(shop) == sum(_net(amount) for _, _, amount in payments)
    for buyer, order, amount in payments:
        assert world.wallet(buyer) == 100_00 - amount
        assert world.order(shop, order)["status"] == "TRADE_SUCCESS"
    metrics = world.client.get("/metrics", headers=world.admin).text
    assert 'paycell_group_commit_size_bucket{le="32"}' in metrics
    assert "paycell_group_commit_queue_depth 0" in metrics


def test_lone_payment_is_not_delayed_by_group_commit(sqlite_server: Server) -> None:
    world = sqlite_server.world
    shop = world.new_merchant()
    [(buyer, order, _)] = sqlite_server.buyers_with_orders(shop, 1)
    assert sqlite_server.groups.config.linger_seconds == 0

    response = world.client.post(f"/v1/orders/{order}/pay", headers=buyer.headers)

    assert response.status_code == 200
    # With no linger, the worker does not wait for company: the lone request is a group of 1.
    metrics = world.client.get("/metrics", headers=world.admin).text
    assert 'paycell_group_commit_size_bucket{le="1"} 1' in metrics
    assert "paycell_group_commit_size_count 1" in metrics


def test_grouped_payment_replays_with_same_idempotency_key(server: Server) -> None:
    world = server.world
    shop = world.new_merchant()
    (buyer, order, amount), (_, other_order, _) = server.buyers_with_orders(shop, 2)
    other_buyer = world.users[1]
    key = {"Idempotency-Key": "pay-once"}

    first, again, reused, own = server.pay_together(
        [
            (order, buyer, key),
            (order, buyer, key),  # the same request with the same key, in the same group
            (other_order, buyer, key),  # the same key for another request
            (other_order, other_buyer, key),  # another caller's key space
        ]
    )

    assert first.status_code == 200
    assert REPLAYED_HEADER not in first.headers
    assert again.status_code == 200
    assert again.headers[REPLAYED_HEADER] == "true"
    assert again.text == first.text
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert own.status_code == 200
    assert REPLAYED_HEADER not in own.headers
    # The response was kept in the payment's own commit: a retry later replays it byte for byte.
    later = world.client.post(f"/v1/orders/{order}/pay", headers={**buyer.headers, **key})
    assert (later.status_code, later.text) == (200, first.text)
    assert later.headers[REPLAYED_HEADER] == "true"
    assert world.wallet(buyer) == 100_00 - amount


def test_failing_payment_in_a_group_does_not_affect_others(server: Server) -> None:
    world = server.world
    shop = world.new_merchant(fee_rate_basis_points=FEE_BASIS_POINTS)
    payments = server.buyers_with_orders(shop, 4)
    poor = world.new_user("poor")
    world.top_up(poor, 5_00, request_no="poor-top-up")
    dear = world.create_order(shop, "DEAR", 50_00)
    key = {"Idempotency-Key": "poor-try"}
    requests: list[Payment] = [(order, buyer, {}) for buyer, order, _ in payments]
    requests.insert(2, (dear, poor, key))

    responses = server.pay_together(requests)

    refused = responses.pop(2)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "insufficient_funds"
    assert [r.status_code for r in responses] == [200] * 4
    assert world.wallet(poor) == 5_00
    assert world.order(shop, dear)["status"] == OrderStatus.WAIT_BUYER_PAY.value
    assert world.balance(shop) == sum(_net(amount) for _, _, amount in payments)
    # The refusal was remembered for its key, as a payment alone would have been...
    replay = world.client.post(f"/v1/orders/{dear}/pay", headers={**poor.headers, **key})
    assert (replay.status_code, replay.text) == (409, refused.text)
    # ...and left no trace in the books: after a top-up the same payment goes through.
    world.top_up(poor, 50_00, request_no="poor-top-up-2")
    paid = world.client.post(f"/v1/orders/{dear}/pay", headers=poor.headers)
    assert paid.status_code == 200


def _balance_writes(store_path: Path, account_id: int) -> int:
    """How many times the ledger has written the account's balances: on SQLite each batch
    logs one change per account it changed (sqlite_account_log.py), and the log is written
    back and emptied only after 32,768 accounts, far more than a test makes."""
    return logged_changes(store_path, account_id)


def test_hot_merchant_payments_in_a_group_update_its_balance_once_per_batch(
    sqlite_url: str,
) -> None:
    # Groups of at most 8: the 24 queued payments are paid in three groups, three batches.
    with _open(sqlite_url, group_commit=GroupCommitConfig(size_max=8)) as server:
        world = server.world
        shop = world.new_merchant(fee_rate_basis_points=FEE_BASIS_POINTS)
        payments = server.buyers_with_orders(shop, 24)
        balance_account = chart.merchant_balance(shop.id, currency_for_code("CNY").ledger)
        store = world.platform.store
        assert isinstance(store, SqliteStore)
        store_path = store.path
        groups_before, _ = server.metrics.groups()
        journal_before = _journal(world.platform)
        writes_before = _balance_writes(store_path, balance_account)

        responses = server.pay_together([(order, buyer, {}) for buyer, order, _ in payments])

        assert [r.status_code for r in responses] == [200] * 24
        groups, _ = server.metrics.groups()
        assert groups - groups_before == 3
        # Three ledger batches of eight payments (two transfers each), one commit each...
        new_entries = _journal(world.platform)[len(journal_before) :]
        assert [entry.event_count for entry in new_entries] == [16, 16, 16]
        # ...each writing the merchant's balance once, not once per payment credited to it.
        assert _balance_writes(store_path, balance_account) - writes_before == len(new_entries)
        merchant = world.platform.balance_of_merchant(shop.id)
        assert merchant is not None
        assert merchant.credits_posted == sum(_net(amount) for _, _, amount in payments)


def test_same_order_twice_in_a_group_answers_as_one_after_the_other(server: Server) -> None:
    world = server.world
    shop = world.new_merchant()
    (buyer, order, amount), (rival, _, _) = server.buyers_with_orders(shop, 2)

    first, retry, late = server.pay_together(
        [(order, buyer, {}), (order, buyer, {}), (order, rival, {})]
    )

    assert first.status_code == 200
    assert (retry.status_code, retry.text) == (200, first.text)  # the same buyer: a no-op
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "order_already_paid"
    assert world.wallet(buyer) == 100_00 - amount
    assert world.wallet(rival) == 100_00


def _close_ledger_account_of(platform: Platform, merchant: Party) -> None:
    """Close a merchant's balance account through the ledger API (an operator's mistake): the
    platform's next transfer to it is refused by the ledger, which the platform treats as a
    broken invariant (a 500), not a business outcome."""
    ledger = currency_for_code("CNY").ledger
    closing = Transfer(
        id=7_000_000 + merchant.id,
        debit_account_id=chart.suspense(ledger),
        credit_account_id=chart.merchant_balance(merchant.id, ledger),
        amount=1,
        ledger=ledger,
        code=999,
        flags=int(TransferFlags.PENDING | TransferFlags.CLOSING_CREDIT),
    )
    assert [result.value for result in platform.ledger.create_transfers([closing])] == ["ok"]


def test_a_group_that_fails_unexpectedly_answers_each_request_as_alone(server: Server) -> None:
    world = server.world
    shop = world.new_merchant(fee_rate_basis_points=FEE_BASIS_POINTS)
    payments = server.buyers_with_orders(shop, 3)
    broken = world.new_merchant("broken")
    buyer = payments[0][0]
    broken_order = world.create_order(broken, "B-1", 1_00)
    _close_ledger_account_of(world.platform, broken)
    requests: list[Payment] = [(order, payer, {}) for payer, order, _ in payments]
    requests.insert(1, (broken_order, buyer, {}))

    responses = server.pay_together(requests)

    faulty = responses.pop(1)
    assert faulty.status_code == 500
    assert faulty.json()["error"]["code"] == "internal_error"
    assert [r.status_code for r in responses] == [200] * 3
    assert world.balance(shop) == sum(_net(amount) for _, _, amount in payments)
    assert world.order(broken, broken_order)["status"] == "WAIT_BUYER_PAY"
    metrics = world.client.get("/metrics", headers=world.admin).text
    assert "paycell_group_commit_fallbacks_total 1" in metrics


def test_queued_payments_are_answered_503_when_the_server_stops(sqlite_server: Server) -> None:
    world = sqlite_server.world
    shop = world.new_merchant()
    payments = sqlite_server.buyers_with_orders(shop, 3)
    responses: list[Any] = []

    def send(order: int, buyer: Party) -> None:
        responses.append(world.client.post(f"/v1/orders/{order}/pay", headers=buyer.headers))

    threads = [threading.Thread(target=send, args=(o, b), daemon=True) for b, o, _ in payments]
    with sqlite_server.lock:  # the worker is stuck behind a long platform call
        for thread in threads:
            thread.start()
        _wait_for(lambda: sqlite_server.groups.depth() == 3)
        sqlite_server.groups.close(timeout_seconds=0.05)
        for thread in threads:
            thread.join(timeout=30)
    assert [r.status_code for r in responses] == [503] * 3
    assert {r.json()["error"]["code"] for r in responses} == {"overloaded"}
    assert {r.headers["retry-after"] for r in responses} == {"1"}
    # A stopped committer takes nothing more, and nothing was paid.
    refused = world.client.post(f"/v1/orders/{payments[0][1]}/pay", headers=payments[0][0].headers)
    assert refused.status_code == 503
    assert all(world.wallet(buyer) == 100_00 for buyer, _, _ in payments)


def _comparable(response: Any) -> tuple[int, Any, str | None]:
    """Status, body without its clock-dependent fields, and the replay header."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: strip(v)
                for k, v in value.items()
                if not (k.endswith("_at") or k == "refundable_until")
            }
        return value

    try:
        body = strip(response.json())
    except json.JSONDecodeError:
        body = response.text
    return response.status_code, body, response.headers.get(REPLAYED_HEADER)


def _scenario(server: Server) -> list[tuple[int, Any, str | None]]:
    world = server.world
    shop = world.new_merchant(fee_rate_basis_points=FEE_BASIS_POINTS)
    rich = world.new_user("rich")
    world.top_up(rich, 100_00)
    poor = world.new_user("poor")
    world.top_up(poor, 1_00, request_no="small")
    orders = [world.create_order(shop, f"S-{n}", 10_00 + n) for n in range(4)]
    client = world.client
    key = {"Idempotency-Key": "k-1"}

    def pay(order: int | str, headers: dict[str, str], path: str = "") -> Any:
        return client.post(f"/v1/orders/{order}/pay{path}", headers=headers)

    answers = [
        pay(orders[0], rich.headers),
        pay(orders[0], rich.headers),  # the same buyer again: a no-op
        pay(orders[0], poor.headers),  # another buyer: already paid
        pay(orders[1], poor.headers),  # too little money
        pay(orders[1], {**poor.headers, **key}),  # refused, and remembered for the key
        pay(orders[1], {**poor.headers, **key}),  # the remembered refusal
        pay(orders[2], {**poor.headers, **key}),  # the key for another request
        pay(orders[2], {**rich.headers, **key}),
        pay(orders[2], {**rich.headers, **key}),
        pay("abc", rich.headers),  # a malformed order id
        pay("abc", {**rich.headers, "Idempotency-Key": "k-2"}),
        pay("abc", {**rich.headers, "Idempotency-Key": "k-2"}),
        pay(999_999, rich.headers),
        pay(orders[3], shop.headers),  # a merchant's key
        pay(orders[3], {}),  # no key
        pay(orders[3], {"Authorization": "Bearer nobody"}),
        pay(orders[3], rich.headers, "?extra=1"),  # an unknown query parameter
        client.post(f"/v1/orders/{orders[3]}/pay", headers=rich.headers, content=b"{oops"),
        client.post(f"/v1/orders/{orders[3]}/pay", headers=rich.headers, json={"amount": 1}),
        pay(orders[3], {**rich.headers, "Idempotency-Key": "\x01"}),
        pay(orders[3], rich.headers),
    ]
    return [_comparable(answer) for answer in answers]


def test_grouped_and_ungrouped_payments_answer_the_same(server: Server, tmp_path: Any) -> None:
    grouped = _scenario(server)
    with _open(str(tmp_path / "ungrouped.db"), group_commit=None) as alone:
        assert alone.groups is None
        ungrouped = _scenario(alone)
    assert grouped == ungrouped
    groups, requests = server.metrics.groups()
    assert groups > 0  # the grouped server did pay through its groups
    assert requests >= 15


def test_group_commit_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="group size"):
        GroupCommitConfig(size_max=0)
    with pytest.raises(ValueError, match="group size"):
        GroupCommitConfig(size_max=1_001)
    with pytest.raises(ValueError, match="linger"):
        GroupCommitConfig(linger_seconds=0.5)
    with pytest.raises(ValueError, match="queue depth"):
        GroupCommitConfig(queue_depth_max=0)
