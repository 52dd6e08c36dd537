"""The platform's storage contract: every `PlatformStore` and `PlatformWriteUnit` method, run on
SQLite and PostgreSQL.

Platform records share the ledger's database and transaction: a unit that writes records and a
ledger batch commits both or neither.
"""

import dataclasses
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import psycopg
import pytest

from paycell import Account
from paycell.adapters.storage.factory import open_store
from paycell.adapters.storage.platform_factory import open_platform_store
from paycell.adapters.storage.sqlite_platform import idempotency_records_query
from paycell.core import state_machine
from paycell.core.payments.outcomes import Decision
from paycell.core.payments.records import (
    ChannelRequest,
    ChannelRequestKind,
    ChannelRequestStatus,
    EscrowState,
    Merchant,
    Order,
    OrderStatus,
    PartyKind,
    PaymentMode,
    Refund,
    User,
    WebhookEvent,
)
from paycell.service.platform_ports import (
    ApiKey,
    IdempotencyRecord,
    PlatformStore,
    PlatformWriteUnit,
    WebhookDelivery,
)
from tests.contract.conftest import CNY, START_NANOSECONDS, RawDatabase

T = START_NANOSECONDS
SECOND = 1_000_000_000
# Large-ish values: above 2**62, and the largest a signed 64-bit column holds.
BIG = (1 << 62) + 12_345
INT64_MAX = (1 << 63) - 1

INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)

R = TypeVar("R")
USER = PartyKind.USER
MERCHANT = PartyKind.MERCHANT


@pytest.fixture
def store(database_url: str) -> Iterator[PlatformStore]:
    opened = open_platform_store(database_url)
    yield opened
    opened.close()


@pytest.fixture
def other_store(database_url: str, store: PlatformStore) -> Iterator[PlatformStore]:
    """A second store on the same database, as another process would open it."""
    opened = open_platform_store(database_url)
    yield opened
    opened.close()


# ------------------------------------------------------------------------------- records


def a_user(user_id: int = 1, **changes: Any) -> User:
    return dataclasses.replace(User(id=user_id, name="Zhang Wei 张伟", created_at=T), **changes)


def a_merchant(merchant_id: int = 1, **changes: Any) -> Merchant:
    merchant = Merchant(
        id=merchant_id,
        name=f"Tea House {merchant_id}",
        fee_rate_basis_points=60,
        settlement_bank_account="6222 0200 1234 5678",
        webhook_url="https://tea.example/notify?x=1&y=%20",
        webhook_secret="s3cret'; DROP TABLE orders; --",
        created_at=T,
        daily_payout=False,
    )
    return dataclasses.replace(merchant, **changes)


def an_order(order_id: int, merchant_id: int = 1, **changes: Any) -> Order:
    """A plain unpaid direct order: every optional field at its default."""
    order = Order(
        id=order_id,
        merchant_id=merchant_id,
        out_trade_no=f"T-{order_id}",
        ledger=CNY,
        amount=100_00,
        subject="",
        mode=PaymentMode.DIRECT,
        status=OrderStatus.WAIT_BUYER_PAY,
        created_at=T,
        expires_at=T + 900 * SECOND,
        auto_confirm_seconds=0,
        refund_period_seconds=0,
    )
    return dataclasses.replace(order, **changes)


def a_full_order(order_id: int = 1) -> Order:
    """An order with no field at its default, and the largest values a column holds."""
    return an_order(
        order_id,
        out_trade_no="2024-订单-001",
        amount=BIG,
        subject="A pot of Longjing tea 龙井",
        mode=PaymentMode.ESCROW,
        status=OrderStatus.TRADE_SUCCESS,
        expires_at=T + 900 * SECOND,
        auto_confirm_seconds=10 * 86_400,
        refund_period_seconds=90 * 86_400,
        buyer_id=7,
        paid_at=T + SECOND,
        fee=BIG // 100,
        escrow_state=EscrowState.HELD,
        auto_confirm_at=T + 2 * SECOND,
        auto_confirm_remaining=3 * SECOND,
        refund_request_open=True,
        released_at=T + 4 * SECOND,
        refunded_amount=BIG // 2,
        refunded_fee=BIG // 200,
        refundable_until=INT64_MAX,
        closed_at=T + 5 * SECOND,
        close_reason="buyer asked",
        finished_at=T + 6 * SECOND,
    )


def a_refund(refund_id: int, order_id: int = 1, **changes: Any) -> Refund:
    refund = Refund(
        id=refund_id,
        order_id=order_id,
        merchant_id=1,
        out_request_no=f"R-{refund_id}",
        amount=BIG,
        fee_refunded=60,
        source="escrow",
        reason="",
        created_at=T + refund_id,
    )
    return dataclasses.replace(refund, **changes)


def a_channel_request(request_id: int, **changes: Any) -> ChannelRequest:
    request = ChannelRequest(
        id=request_id,
        kind=ChannelRequestKind.TOP_UP,
        party_kind=PartyKind.USER,
        party_id=1,
        ledger=CNY,
        amount=500_00,
        status=ChannelRequestStatus.PENDING,
        request_no=f"Q-{request_id}",
        channel_reference="",
        created_at=T,
    )
    return dataclasses.replace(request, **changes)


def an_event(event_id: int, merchant_id: int = 1, **changes: Any) -> WebhookEvent:
    event = WebhookEvent(
        id=event_id,
        merchant_id=merchant_id,
        type="trade.paid",
        body=json.dumps({"id": event_id, "subject": "龙井", "amount": "100.00"}),
        created_at=T + event_id,
    )
    return dataclasses.replace(event, **changes)


def pending_delivery(event: WebhookEvent) -> WebhookDelivery:
    return WebhookDelivery(
        event_id=event.id,
        merchant_id=event.merchant_id,
        attempts=0,
        next_attempt_at=event.created_at,
        status="pending",
        last_error="",
        delivered_at=0,
    )


def save(store: PlatformStore, **records: list[Any]) -> None:
    """Commit the records, each list in reverse order: a read that must order its rows cannot
    pass by returning them in insertion order."""
    with store.write() as unit:
        reversed_records: dict[str, Any] = {kind: rows[::-1] for kind, rows in records.items()}
        unit.save_records(Decision(**reversed_records))


def save_ledger_account(unit: PlatformWriteUnit, account_id: int) -> None:
    """Write a one-account ledger batch in the unit."""
    account = Account(id=account_id, ledger=CNY, code=1)
    outcome = state_machine.create_accounts([account], {}, unit.meta(), T)
    assert outcome.committed is not None
    unit.save(outcome.committed)


def all_pages(read_page: Callable[[int, int], list[R]], key: Callable[[R], int]) -> list[list[R]]:
    pages: list[list[R]] = []
    after = 0
    while True:
        page = read_page(after, 2)
        pages.append(page)
        if not page:
            return pages
        assert len(page) <= 2
        after = key(page[-1])


def nothing_of_the_platform_is_there(store: PlatformStore) -> None:
    assert store.user(1) is None
    assert store.merchant(1) is None
    assert store.order(1) is None
    assert store.refunds_of_order(1) == []
    assert store.channel_request(1) is None
    assert store.webhook_events_of_merchant(1, 0, 10) == []
    assert store.webhook_delivery(1) is None
    assert store.party_for_api_key("hash") is None
    assert store.idempotency_record(MERCHANT, 1, "k") is None
    assert list(store.all_orders()) == []


# ------------------------------------------------------------------------------- schema


def test_columns_hold_enum_values_bools_as_0_or_1_and_integer_nanoseconds(
    store: PlatformStore, raw_database: RawDatabase
) -> None:
    save(
        store,
        orders=[a_full_order(1)],
        merchants=[a_merchant(1)],
        channel_requests=[a_channel_request(1)],
    )
    assert raw_database.execute(
        "SELECT mode, status, escrow_state, refund_request_open, amount, refundable_until "
        "FROM orders"
    ) == [("escrow", "TRADE_SUCCESS", "held", True, BIG, INT64_MAX)]
    assert raw_database.execute("SELECT daily_payout FROM merchants") == [(False,)]
    assert raw_database.execute("SELECT kind, party_kind, status FROM channel_requests") == [
        ("top_up", "user", "PENDING")
    ]
    if not raw_database.is_postgres:
        assert raw_database.execute(
            "SELECT typeof(refund_request_open), typeof(created_at) FROM orders"
        ) == [("integer", "integer")]


def test_the_samples_set_every_field_away_from_its_default() -> None:
    # Guards the round-trip tests: a field added to a record must be exercised here too.
    full = a_full_order()
    for field in dataclasses.fields(Order):
        if field.default is not dataclasses.MISSING:
            assert getattr(full, field.name) != field.default, field.name
    assert a_merchant().daily_payout != Merchant.__dataclass_fields__["daily_payout"].default
    request = a_channel_request(1, completed_at=T, failure_reason="x")
    for field in dataclasses.fields(ChannelRequest):
        if field.default is not dataclasses.MISSING:
            assert getattr(request, field.name) != field.default, field.name


def test_schema_creation_is_idempotent_and_adds_to_an_existing_ledger(database_url: str) -> None:
    ledger_only = open_store(database_url)
    with ledger_only.write() as unit:
        outcome = state_machine.create_accounts(
            [Account(id=5, ledger=CNY, code=1)], {}, unit.meta(), T
        )
        assert outcome.committed is not None
        unit.save(outcome.committed)
    ledger_only.close()
    for user_id in (11, 12):
        store = open_platform_store(database_url)
        assert set(store.lookup_accounts([5])) == {5}
        save(store, users=[a_user(user_id)])
        store.close()
    store = open_platform_store(database_url)
    assert store.user(11) is not None
    assert store.user(12) is not None
    store.close()
    # The ledger alone still opens a database with the platform's tables.
    open_store(database_url).close()


# ---------------------------------------------------------------------------- round trips


def test_every_record_round_trips_with_every_field(store: PlatformStore) -> None:
    users = [a_user(1), a_user(2, name="", created_at=INT64_MAX)]
    merchants = [
        a_merchant(1),
        a_merchant(
            2, daily_payout=True, webhook_url="", webhook_secret="", fee_rate_basis_points=0
        ),
    ]
    orders = [a_full_order(1), an_order(2)]
    refunds = [a_refund(1), a_refund(2, source="merchant", reason="damaged 破损", amount=1)]
    requests = [
        a_channel_request(1),
        a_channel_request(
            2,
            kind=ChannelRequestKind.PAYOUT,
            party_kind=PartyKind.MERCHANT,
            party_id=1,
            amount=BIG,
            status=ChannelRequestStatus.FAILED,
            channel_reference="BANK-REF-2",
            completed_at=T + SECOND,
            failure_reason="account closed",
        ),
        a_channel_request(
            3,
            kind=ChannelRequestKind.WITHDRAWAL,
            status=ChannelRequestStatus.SUCCEEDED,
            channel_reference="BANK-REF-3",
        ),
    ]
    events = [an_event(1), an_event(2, type="refund.succeeded", body="")]
    decision = Decision(
        users=users,
        merchants=merchants,
        orders=orders,
        refunds=refunds,
        channel_requests=requests,
        events=events,
    )
    with store.write() as unit:
        unit.save_records(decision)
        # The unit reads its own writes.
        assert unit.order(1) == orders[0]
        assert unit.refunds_of_order(1) == refunds

    assert [store.user(u.id) for u in users] == users
    assert [store.merchant(m.id) for m in merchants] == merchants
    assert [store.order(o.id) for o in orders] == orders
    assert [store.order_by_out_trade_no(1, o.out_trade_no) for o in orders] == orders
    assert store.refunds_of_order(1) == refunds
    assert [store.channel_request(r.id) for r in requests] == requests
    assert store.webhook_events_of_merchant(1, 0, 10) == events
    assert [store.webhook_delivery(e.id) for e in events] == [pending_delivery(e) for e in events]
    assert list(store.all_orders()) == orders

    with store.write() as unit:
        assert [unit.user(u.id) for u in users] == users
        assert [unit.merchant(m.id) for m in merchants] == merchants
        assert [unit.order(o.id) for o in orders] == orders
        assert unit.order_by_out_trade_no(1, "2024-订单-001") == orders[0]
        assert unit.order_by_out_trade_no(2, "2024-订单-001") is None
        assert unit.refunds_of_order(1) == refunds
        assert unit.refunds_of_order(2) == []
        assert [unit.channel_request(r.id) for r in requests] == requests
        for request in requests:
            assert (
                unit.channel_request_by_request_no(
                    request.party_kind, request.party_id, request.kind, request.request_no
                )
                == request
            )
        assert (
            unit.channel_request_by_request_no(
                PartyKind.MERCHANT, 1, ChannelRequestKind.TOP_UP, "Q-1"
            )
            is None
        )
        assert unit.channel_request_by_reference("BANK-REF-2") == requests[1]
        assert unit.channel_request_by_reference("BANK-REF-9") is None
        # An empty reference is "not known yet", never a match.
        assert unit.channel_request_by_reference("") is None
        assert [unit.webhook_event(e.id) for e in events] == events
        assert unit.webhook_event(3) is None
        # Types come back as stored: enums and bools, not their column encodings.
        order = unit.order(1)
        assert order is not None
        assert type(order.status) is OrderStatus
        assert type(order.mode) is PaymentMode
        assert type(order.escrow_state) is EscrowState
        assert order.refund_request_open is True
        plain = unit.order(2)
        assert plain is not None
        assert plain.refund_request_open is False
        merchant = unit.merchant(2)
        assert merchant is not None
        assert merchant.daily_payout is True


def test_missing_records_read_as_none(store: PlatformStore) -> None:
    nothing_of_the_platform_is_there(store)
    assert store.order_by_out_trade_no(1, "T-1") is None
    assert store.orders_of_merchant(1, 0, 10) == []
    assert store.channel_requests_of_party(PartyKind.USER, 1, 0, 10) == []
    with store.write() as unit:
        assert unit.user(1) is None
        assert unit.idempotency_record(MERCHANT, 1, "key") is None
        assert unit.webhook_deliveries_due(INT64_MAX, 10) == []
        assert unit.unpaid_orders_due(INT64_MAX, 10) == []
        assert unit.merchants_page(0, 10) == []


def test_saving_again_replaces_users_merchants_orders_and_channel_requests(
    store: PlatformStore,
) -> None:
    save(
        store,
        users=[a_user(1)],
        merchants=[a_merchant(1)],
        orders=[an_order(1), an_order(2)],
        channel_requests=[a_channel_request(1)],
    )
    paid = dataclasses.replace(
        a_full_order(1), out_trade_no="T-1", status=OrderStatus.TRADE_SUCCESS
    )
    succeeded = a_channel_request(
        1,
        status=ChannelRequestStatus.SUCCEEDED,
        channel_reference="BANK-1",
        completed_at=T + SECOND,
    )
    save(
        store,
        users=[a_user(1, name="Li Na")],
        merchants=[a_merchant(1, daily_payout=True, webhook_url="https://new.example/")],
        orders=[paid],
        channel_requests=[succeeded],
    )
    assert store.user(1) == a_user(1, name="Li Na")
    assert store.merchant(1) == a_merchant(1, daily_payout=True, webhook_url="https://new.example/")
    assert store.order(1) == paid
    assert store.order(2) == an_order(2)
    assert list(store.all_orders()) == [paid, an_order(2)]
    assert store.channel_request(1) == succeeded
    with store.write() as unit:
        assert unit.channel_request_by_reference("BANK-1") == succeeded
        assert unit.merchants_page(0, 10) == [
            a_merchant(1, daily_payout=True, webhook_url="https://new.example/")
        ]


def test_a_value_beyond_a_signed_64_bit_column_is_rejected(store: PlatformStore) -> None:
    with pytest.raises(AssertionError, match=r"orders\.amount"), store.write() as unit:
        unit.save_records(Decision(users=[a_user(1)], orders=[an_order(1, amount=1 << 63)]))
    with pytest.raises(AssertionError, match=r"refunds\.created_at"), store.write() as unit:
        unit.save_records(Decision(refunds=[a_refund(1, created_at=1 << 64)]))
    nothing_of_the_platform_is_there(store)
    save(store, orders=[an_order(1, amount=INT64_MAX)])
    order = store.order(1)
    assert order is not None
    assert order.amount == INT64_MAX


# ---------------------------------------------------------------------------- uniqueness


def fails(
    store: PlatformStore,
    write: Callable[[PlatformWriteUnit], object],
    error: type[BaseException] | tuple[type[BaseException], ...] = INTEGRITY_ERRORS,
) -> None:
    """Run `write` in one unit, which must fail with `error`."""

    def attempt() -> None:
        with store.write() as unit:
            write(unit)

    with pytest.raises(error):
        attempt()


def violate(store: PlatformStore, *records: Decision, ledger_account: int = 0) -> None:
    """Write the decisions in one unit, with a ledger batch first; the unit must fail."""

    def write(unit: PlatformWriteUnit) -> None:
        if ledger_account:
            save_ledger_account(unit, ledger_account)
        unit.save_records(Decision(users=[a_user(99)]))
        unit.next_id("order")
        for decision in records:
            unit.save_records(decision)

    fails(store, write)


def nothing_new(store: PlatformStore, *, ledger_account: int | None = None) -> None:
    """The failed unit's writes before its violation are gone: user 99 and, when the unit
    wrote one, the ledger batch that created `ledger_account`."""
    assert store.user(99) is None
    if ledger_account is not None:
        assert store.lookup_accounts([ledger_account]) == {}
        assert store.meta().batch_number == 0


def test_an_out_trade_no_is_unique_per_merchant(store: PlatformStore) -> None:
    save(store, orders=[an_order(1)])
    violate(store, Decision(orders=[an_order(2, out_trade_no="T-1")]), ledger_account=7)
    nothing_new(store, ledger_account=7)
    assert store.order(2) is None
    # The same number at another merchant is another order.
    save(store, orders=[an_order(2, merchant_id=2, out_trade_no="T-1")])
    assert store.order_by_out_trade_no(2, "T-1") == an_order(2, merchant_id=2, out_trade_no="T-1")
    assert store.order_by_out_trade_no(1, "T-1") == an_order(1)
    with store.write() as unit:
        # The failed unit's sequence step was rolled back with it.
        assert unit.next_id("order") == 1


def test_an_out_request_no_is_unique_per_order_and_refunds_are_inserted_once(
    store: PlatformStore,
) -> None:
    save(store, refunds=[a_refund(1)])
    violate(store, Decision(refunds=[a_refund(2, out_request_no="R-1")]), ledger_account=7)
    violate(store, Decision(refunds=[a_refund(1, out_request_no="R-other")]))
    nothing_new(store, ledger_account=7)
    save(store, refunds=[a_refund(2, order_id=2, out_request_no="R-1")])
    assert store.refunds_of_order(1) == [a_refund(1)]
    assert store.refunds_of_order(2) == [a_refund(2, order_id=2, out_request_no="R-1")]


def test_a_request_no_is_unique_per_party_and_kind(store: PlatformStore) -> None:
    save(store, channel_requests=[a_channel_request(1)])
    violate(store, Decision(channel_requests=[a_channel_request(2, request_no="Q-1")]))
    nothing_new(store)
    assert store.channel_request(2) is None
    others = [
        a_channel_request(2, request_no="Q-1", party_kind=PartyKind.MERCHANT),
        a_channel_request(3, request_no="Q-1", party_id=2),
        a_channel_request(4, request_no="Q-1", kind=ChannelRequestKind.WITHDRAWAL),
    ]
    save(store, channel_requests=others)
    assert [store.channel_request(r.id) for r in others] == others


def test_a_channel_reference_is_unique_once_known(store: PlatformStore) -> None:
    # Any number of requests wait for their reference.
    save(store, channel_requests=[a_channel_request(1), a_channel_request(2)])
    save(store, channel_requests=[a_channel_request(1, channel_reference="BANK-1")])
    violate(
        store,
        Decision(channel_requests=[a_channel_request(2, channel_reference="BANK-1")]),
        ledger_account=7,
    )
    nothing_new(store, ledger_account=7)
    assert store.channel_request(2) == a_channel_request(2)


def test_events_api_keys_and_idempotency_records_are_inserted_once(store: PlatformStore) -> None:
    save(store, events=[an_event(1)])
    violate(store, Decision(events=[an_event(1, type="other")]))
    with store.write() as unit:
        unit.save_api_key(ApiKey(MERCHANT, 1, "ab" * 32, T))
        unit.save_idempotency_record(IdempotencyRecord(MERCHANT, 1, "key-1", "cd" * 32, 200, "", T))

    def another_key_with_the_same_hash(unit: PlatformWriteUnit) -> None:
        unit.save_records(Decision(users=[a_user(99)]))
        unit.save_api_key(ApiKey(USER, 2, "ab" * 32, T))

    def a_second_record_for_the_key(unit: PlatformWriteUnit) -> None:
        unit.save_records(Decision(users=[a_user(99)]))
        unit.save_idempotency_record(IdempotencyRecord(MERCHANT, 1, "key-1", "ef", 201, "", T))

    fails(store, another_key_with_the_same_hash)
    fails(store, a_second_record_for_the_key)
    nothing_new(store)
    assert store.party_for_api_key("ab" * 32) == (MERCHANT, 1)
    assert store.idempotency_record(MERCHANT, 1, "key-1") == IdempotencyRecord(
        MERCHANT, 1, "key-1", "cd" * 32, 200, "", T
    )
    assert store.webhook_events_of_merchant(1, 0, 10) == [an_event(1)]


# ------------------------------------------------------------------------------- api keys


def test_api_keys_and_idempotency_records(store: PlatformStore) -> None:
    record = IdempotencyRecord(
        party_kind=MERCHANT,
        party_id=1,
        key="d6c5a3e2-idem",
        request_hash="f" * 64,
        status=201,
        body='{"order": {"id": 1, "subject": "龙井"}}',
        created_at=T,
    )
    of_user = record._replace(party_kind=USER, status=500, body="")
    of_merchant_2 = record._replace(party_id=2, created_at=INT64_MAX)
    with store.write() as unit:
        unit.save_api_key(ApiKey(party_kind=MERCHANT, party_id=1, key_hash="a" * 64, created_at=T))
        unit.save_api_key(ApiKey(MERCHANT, 1, "b" * 64, T + 1))
        unit.save_api_key(ApiKey(USER, 1, "c" * 64, T))
        unit.save_api_key(ApiKey(MERCHANT, BIG, "e" * 64, T))
        unit.save_idempotency_record(record)
        unit.save_idempotency_record(of_user)
        unit.save_idempotency_record(of_merchant_2)
        assert unit.idempotency_record(MERCHANT, 1, record.key) == record
    assert store.party_for_api_key("a" * 64) == (MERCHANT, 1)
    assert store.party_for_api_key("b" * 64) == (MERCHANT, 1)
    assert store.party_for_api_key("c" * 64) == (USER, 1)
    assert store.party_for_api_key("e" * 64) == (MERCHANT, BIG)
    found = store.party_for_api_key("c" * 64)
    assert found is not None
    assert type(found[0]) is PartyKind
    assert store.party_for_api_key("d" * 64) is None
    assert store.party_for_api_key("") is None
    for read in (store.idempotency_record,):
        assert read(MERCHANT, 1, record.key) == record
        assert read(USER, 1, record.key) == of_user
        assert read(MERCHANT, 2, record.key) == of_merchant_2
        assert read(USER, 2, record.key) is None
        assert read(MERCHANT, 3, record.key) is None
        assert read(MERCHANT, 1, "other") is None
    with store.write() as unit:
        assert unit.idempotency_record(MERCHANT, 1, record.key) == record
        assert unit.idempotency_record(USER, 1, record.key) == of_user
        assert unit.idempotency_record(USER, 2, record.key) is None
        assert unit.idempotency_record(MERCHANT, 1, "other") is None
        # A group's lookup: many keys at once, hits and misses, a key asked twice.
        wanted = [
            (MERCHANT, 1, record.key),
            (USER, 2, record.key),
            (USER, 1, record.key),
            (MERCHANT, 2, record.key),
            (MERCHANT, 1, record.key),
            (MERCHANT, 1, "other"),
        ]
        assert unit.idempotency_records(wanted) == {
            (MERCHANT, 1, record.key): record,
            (USER, 1, record.key): of_user,
            (MERCHANT, 2, record.key): of_merchant_2,
        }


# ------------------------------------------------------------------------------- due rows


def test_unpaid_orders_due_are_exactly_the_expired_unpaid_ones_oldest_first(
    store: PlatformStore,
) -> None:
    now = T + 20 * SECOND
    save(
        store,
        orders=[
            an_order(1, expires_at=T + 30 * SECOND),
            an_order(2, expires_at=T + 10 * SECOND),
            an_order(3, expires_at=now),
            an_order(4, expires_at=now + 1),
            an_order(5, expires_at=T + 5 * SECOND, status=OrderStatus.TRADE_CLOSED),
            an_order(6, expires_at=T + 5 * SECOND, status=OrderStatus.TRADE_SUCCESS),
            an_order(7, expires_at=T + 10 * SECOND),
            an_order(8, expires_at=T + 5 * SECOND, status=OrderStatus.TRADE_FINISHED),
        ],
    )
    with store.write() as unit:
        assert [o.id for o in unit.unpaid_orders_due(now, 10)] == [2, 7, 3]
        assert [o.id for o in unit.unpaid_orders_due(now, 2)] == [2, 7]
        assert unit.unpaid_orders_due(now, 0) == []
        assert unit.unpaid_orders_due(T, 10) == []
        assert [o.id for o in unit.unpaid_orders_due(INT64_MAX, 10)] == [2, 7, 3, 4, 1]
        assert unit.unpaid_orders_due(now, 1)[0] == an_order(2, expires_at=T + 10 * SECOND)


def test_escrow_releases_due_skip_paused_released_and_future_ones(store: PlatformStore) -> None:
    now = T + 20 * SECOND
    held: dict[str, Any] = {"status": OrderStatus.TRADE_SUCCESS, "mode": PaymentMode.ESCROW}
    save(
        store,
        orders=[
            an_order(1, **held, escrow_state=EscrowState.HELD, auto_confirm_at=now),
            # Paused by an open refund request.
            an_order(2, **held, escrow_state=EscrowState.HELD, auto_confirm_at=0),
            an_order(3, **held, escrow_state=EscrowState.HELD, auto_confirm_at=T + SECOND),
            an_order(4, **held, escrow_state=EscrowState.HELD, auto_confirm_at=now + 1),
            an_order(5, **held, escrow_state=EscrowState.RELEASED, auto_confirm_at=T),
            an_order(6, escrow_state=EscrowState.NONE, auto_confirm_at=T),
            an_order(7, **held, escrow_state=EscrowState.HELD, auto_confirm_at=T + SECOND),
        ],
    )
    with store.write() as unit:
        assert [o.id for o in unit.escrow_releases_due(now, 10)] == [3, 7, 1]
        assert [o.id for o in unit.escrow_releases_due(now, 1)] == [3]
        assert unit.escrow_releases_due(T, 10) == []
        assert [o.id for o in unit.escrow_releases_due(INT64_MAX, 10)] == [3, 7, 1, 4]


def test_trades_to_finish_are_paid_unheld_and_past_their_refund_period(
    store: PlatformStore,
) -> None:
    now = T + 20 * SECOND
    paid: dict[str, Any] = {"status": OrderStatus.TRADE_SUCCESS, "paid_at": T}
    save(
        store,
        orders=[
            an_order(1, **paid, escrow_state=EscrowState.RELEASED, refundable_until=T + SECOND),
            an_order(2, **paid, refundable_until=now),
            an_order(3, **paid, escrow_state=EscrowState.HELD, refundable_until=T),
            an_order(4, **paid, refundable_until=0),
            an_order(5, **paid, refundable_until=now + 1),
            an_order(6, status=OrderStatus.TRADE_FINISHED, refundable_until=T),
            an_order(7, status=OrderStatus.TRADE_CLOSED, refundable_until=T),
            an_order(8, **paid, refundable_until=T + SECOND),
        ],
    )
    with store.write() as unit:
        assert [o.id for o in unit.trades_to_finish(now, 10)] == [1, 8, 2]
        assert [o.id for o in unit.trades_to_finish(now, 2)] == [1, 8]
        assert unit.trades_to_finish(T, 10) == []
        assert [o.id for o in unit.trades_to_finish(INT64_MAX, 10)] == [1, 8, 2, 5]


def test_webhook_deliveries_due_are_pending_and_due_oldest_first(store: PlatformStore) -> None:
    events = [
        an_event(1, created_at=T + 30),
        an_event(2, created_at=T + 10),
        an_event(3, created_at=T + 20),
        an_event(4, merchant_id=2, created_at=T + 10),
        an_event(5, created_at=T + 5),
        an_event(6, created_at=T + 5),
    ]
    save(store, merchants=[a_merchant(1), a_merchant(2)], events=events)
    delivered = pending_delivery(events[4])._replace(
        attempts=1, next_attempt_at=0, status="delivered", delivered_at=T + 6
    )
    failed = pending_delivery(events[5])._replace(
        attempts=8, next_attempt_at=0, status="failed", last_error="HTTP 500"
    )
    retry = pending_delivery(events[0])._replace(
        attempts=1, next_attempt_at=T + 90, last_error="timeout"
    )
    with store.write() as unit:
        assert [d.event_id for d in unit.webhook_deliveries_due(T + 30, 10)] == [5, 6, 2, 4, 3, 1]
        unit.save_webhook_delivery(delivered)
        unit.save_webhook_delivery(failed)
        unit.save_webhook_delivery(retry)
    assert store.webhook_delivery(5) == delivered
    assert store.webhook_delivery(6) == failed
    assert store.webhook_delivery(1) == retry
    with store.write() as unit:
        assert unit.webhook_deliveries_due(T + 20, 10) == [
            pending_delivery(events[1]),
            pending_delivery(events[3]),
            pending_delivery(events[2]),
        ]
        assert [d.event_id for d in unit.webhook_deliveries_due(T + 20, 2)] == [2, 4]
        assert [d.event_id for d in unit.webhook_deliveries_due(T + 89, 10)] == [2, 4, 3]
        assert [d.event_id for d in unit.webhook_deliveries_due(T + 90, 10)] == [2, 4, 3, 1]
        assert unit.webhook_deliveries_due(T + 9, 10) == []
        assert unit.webhook_event(4) == events[3]


def test_an_event_of_a_merchant_without_a_webhook_url_is_written_with_its_delivery_skipped(
    store: PlatformStore,
) -> None:
    save(
        store,
        merchants=[a_merchant(1, webhook_url=""), a_merchant(2)],
        events=[an_event(1), an_event(2, merchant_id=2)],
    )
    assert store.webhook_delivery(1) == pending_delivery(an_event(1))._replace(
        next_attempt_at=0, status="skipped", last_error="no webhook URL"
    )
    assert store.webhook_delivery(2) == pending_delivery(an_event(2, merchant_id=2))
    with store.write() as unit:
        assert [d.event_id for d in unit.webhook_deliveries_due(T + 100, 10)] == [2]


def test_a_negative_limit_is_refused(store: PlatformStore) -> None:
    with pytest.raises(AssertionError, match="limit"):
        store.orders_of_merchant(1, 0, -1)
    with pytest.raises(AssertionError, match="limit"), store.write() as unit:
        unit.unpaid_orders_due(T, -1)


# ------------------------------------------------------------------------------ pagination


def test_pages_walk_every_row_once_in_id_order(store: PlatformStore) -> None:
    merchants = [a_merchant(i) for i in range(1, 6)]
    orders = [an_order(i, merchant_id=1 + i % 2) for i in range(1, 10)]
    requests = [
        a_channel_request(i, party_kind=kind, party_id=1 + i % 2, request_no=f"Q-{i}")
        for i, kind in zip(range(1, 13), [PartyKind.USER, PartyKind.MERCHANT] * 6, strict=True)
    ]
    events = [an_event(i, merchant_id=1 + i % 3) for i in range(1, 10)]
    save(store, merchants=merchants, orders=orders, channel_requests=requests, events=events)

    with store.write() as unit:
        pages = all_pages(unit.merchants_page, lambda m: m.id)
    assert pages == [merchants[0:2], merchants[2:4], merchants[4:5], []]

    for merchant_id in (1, 2):
        pages_of_orders = all_pages(
            partial(store.orders_of_merchant, merchant_id),
            lambda o: o.id,
        )
        assert [o for page in pages_of_orders for o in page] == [
            o for o in orders if o.merchant_id == merchant_id
        ]
        assert all(len(page) == 2 for page in pages_of_orders[:-2])

    for party_kind in PartyKind:
        for party_id in (1, 2):
            pages_of_requests = all_pages(
                partial(store.channel_requests_of_party, party_kind, party_id),
                lambda r: r.id,
            )
            assert [r for page in pages_of_requests for r in page] == [
                r for r in requests if r.party_kind is party_kind and r.party_id == party_id
            ]

    for merchant_id in (1, 2, 3, 4):
        pages_of_events = all_pages(
            partial(store.webhook_events_of_merchant, merchant_id),
            lambda e: e.id,
        )
        assert [e for page in pages_of_events for e in page] == [
            e for e in events if e.merchant_id == merchant_id
        ]
    # A cursor in the middle of a gap, and past the end.
    assert [o.id for o in store.orders_of_merchant(2, 2, 2)] == [3, 5]
    assert store.orders_of_merchant(2, 9, 2) == []
    assert store.orders_of_merchant(2, 0, 0) == []


def test_all_orders_streams_every_order_in_id_order(store: PlatformStore) -> None:
    orders = [an_order(i, merchant_id=1 + i % 3) for i in range(1, 30)]
    save(store, orders=orders[10:])
    save(store, orders=orders[:10])
    assert list(store.all_orders()) == orders


# ------------------------------------------------------------------------------- sequences


def test_sequences_count_from_one_per_name_and_never_repeat(
    store: PlatformStore, other_store: PlatformStore
) -> None:
    with store.write() as unit:
        assert [unit.next_id("order") for _ in range(3)] == [1, 2, 3]
        assert unit.next_id("refund") == 1
        assert unit.next_id("channel_request") == 1
    with other_store.write() as unit:
        assert unit.next_id("order") == 4
        assert unit.next_id("event") == 1
    with store.write() as unit:
        assert unit.next_id("order") == 5
        assert unit.next_id("refund") == 2

    def take_and_fail(unit: PlatformWriteUnit) -> None:
        assert unit.next_id("order") == 6
        raise RuntimeError("nothing of this unit is kept")

    fails(other_store, take_and_fail, RuntimeError)
    with store.write() as unit:
        # Nothing committed ever used 6: the rolled-back step is no gap and no reuse.
        assert unit.next_id("order") == 6


NEXT_IDS_SCRIPT = """
import json, sys
from paycell.adapters.storage.platform_factory import open_platform_store
from paycell.adapters.storage.sqlite_platform import idempotency_records_query
store = open_platform_store(sys.argv[1])
taken = []
for _ in range(int(sys.argv[2])):
    with store.write() as unit:
        taken.append(unit.next_id("order"))
store.close()
print(json.dumps(taken))
"""


def test_sequences_never_repeat_across_processes(store: PlatformStore, database_url: str) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", NEXT_IDS_SCRIPT, database_url, "40"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    taken: list[int] = []
    for _ in range(40):
        with store.write() as unit:
            taken.append(unit.next_id("order"))
    for process in processes:
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        theirs = json.loads(output)
        assert theirs == sorted(theirs)
        taken.extend(theirs)
    assert sorted(taken) == list(range(1, 121))


# --------------------------------------------------------------------------- transactions


def test_an_exception_in_the_unit_leaves_nothing(store: PlatformStore) -> None:
    event = an_event(1)

    def write_everything_then_fail(unit: PlatformWriteUnit) -> None:
        save_ledger_account(unit, 7)
        unit.save_records(
            Decision(
                users=[a_user(1)],
                merchants=[a_merchant(1)],
                orders=[a_full_order(1)],
                refunds=[a_refund(1)],
                channel_requests=[a_channel_request(1)],
                events=[event],
            )
        )
        unit.save_api_key(ApiKey(MERCHANT, 1, "hash", T))
        unit.save_idempotency_record(IdempotencyRecord(MERCHANT, 1, "k", "h", 200, "{}", T))
        unit.save_webhook_delivery(pending_delivery(event)._replace(attempts=1))
        unit.next_id("order")
        assert unit.order(1) == a_full_order(1)
        raise RuntimeError("the flow failed after writing")

    fails(store, write_everything_then_fail, RuntimeError)
    nothing_of_the_platform_is_there(store)
    assert store.lookup_accounts([7]) == {}
    assert store.meta().batch_number == 0
    with store.write() as unit:
        assert unit.idempotency_record(MERCHANT, 1, "k") is None
        assert unit.next_id("order") == 1


def test_platform_and_ledger_writes_commit_together_and_become_visible_at_once(
    store: PlatformStore, other_store: PlatformStore
) -> None:
    with store.write() as unit:
        save_ledger_account(unit, 7)
        unit.save_records(
            Decision(merchants=[a_merchant(1)], orders=[a_full_order(1)], events=[an_event(1)])
        )
        # Another connection sees nothing before the commit.
        assert other_store.order(1) is None
        assert other_store.lookup_accounts([7]) == {}
    assert other_store.order(1) == a_full_order(1)
    assert other_store.webhook_delivery(1) == pending_delivery(an_event(1))
    assert set(other_store.lookup_accounts([7])) == {7}
    assert other_store.meta().batch_number == 1
    # The ledger's own unit of work still works on top: its meta advanced with the commit.
    with other_store.write() as unit:
        assert unit.meta().batch_number == 1
        save_ledger_account(unit, 8)
        unit.save_records(Decision(users=[a_user(1)]))
    assert store.meta().batch_number == 2
    assert set(store.lookup_accounts([7, 8])) == {7, 8}
    assert store.user(1) == a_user(1)


def test_a_group_finds_its_idempotency_records_by_key_not_by_scanning(tmp_path: Any) -> None:
    # SQLite scans a whole table for a row-value IN list; a payment's cost then grew with
    # every record kept. The lookup must seek the key's index once per key wanted.
    store = open_platform_store(str(tmp_path / "platform.db"))
    store.close()
    connection = sqlite3.connect(tmp_path / "platform.db")
    parameters = ["merchant", 1, "a", "user", 2, "b"]
    plan = [
        row[3]
        for row in connection.execute(
            "EXPLAIN QUERY PLAN " + idempotency_records_query(2), parameters
        )
    ]
    connection.close()
    key_seek = "(party_kind=? AND party_id=? AND key=?)"
    assert any(step.startswith("SEARCH r USING") and key_seek in step for step in plan), plan
    assert not any("SCAN r" in step or "SCAN idempotency_records" in step for step in plan), plan
