"""The payment platform as a library (`Platform`), end to end, on SQLite and PostgreSQL.

Every flow runs through `Platform` with the simulated bank and a clock the test moves; after
each step the balances that must change (buyer wallet, merchant balance, escrow, fee revenue,
channel account) are checked exactly, and every test ends with `platform.verify()` passing.
"""

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from paycell.core.payments import chart
from paycell.core.payments.outcomes import Decision, PaymentError
from paycell.core.payments.records import (
    ChannelRequestStatus,
    EscrowState,
    Merchant,
    OrderStatus,
    PartyKind,
    PaymentMode,
    User,
)
from paycell.core.types import Transfer, TransferFlags
from paycell.platform import Platform
from paycell.service.platform import PlatformConfig

NS = 1_000_000_000
DAY_SECONDS = 86_400
DAY = DAY_SECONDS * NS
# 2023-11-15T00:00:00Z: a day boundary, so settlement days are easy to name.
START = 19_676 * DAY
CNY = 156
ESCROW = PaymentMode.ESCROW


class Clock:
    def __init__(self, now: int = START) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds * NS


@dataclass(frozen=True)
class Books:
    """Net balances of the platform's accounts: what each holds, as a positive number."""

    escrow: int
    fees: int
    channel: int
    channel_pending: int


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def platform(database_url: str, clock: Clock) -> Iterator[Platform]:
    opened = Platform(database_url, clock=clock)
    yield opened
    try:
        report = opened.verify()
        assert report.ok, report.render()
    finally:
        opened.close()


# ---------------------------------------------------------------------------------- helpers


def ok(decision: Decision) -> Decision:
    assert decision.error is None, f"{decision.error}: {decision.message}"
    return decision


def wallet(platform: Platform, user: User) -> int:
    account = platform.balance_of_user(user.id)
    assert account is not None
    return account.credits_posted - account.debits_posted - account.debits_pending


def merchant_balance(platform: Platform, merchant: Merchant) -> int:
    account = platform.balance_of_merchant(merchant.id)
    assert account is not None
    return account.credits_posted - account.debits_posted - account.debits_pending


def books(platform: Platform) -> Books:
    escrow, fees, channel = platform.ledger.lookup_accounts(
        [chart.escrow(CNY), chart.fee_revenue(CNY), chart.channel_settlement(1, CNY)]
    )
    return Books(
        escrow=escrow.credits_posted - escrow.debits_posted,
        fees=fees.credits_posted - fees.debits_posted,
        channel=channel.debits_posted - channel.credits_posted,
        channel_pending=channel.credits_pending - channel.debits_pending,
    )


def buyer_with(platform: Platform, amount: int, name: str = "Li Lei") -> User:
    user = platform.create_user(name)
    if amount:
        ok(platform.request_top_up(user.id, f"top-up-{user.id}", amount))
        assert all(d.ok for d in platform.deliver_bank_callbacks())
    return user


def shop(platform: Platform, fee: int = 60, **kwargs: object) -> Merchant:
    return platform.create_merchant(
        "Tea House",
        fee_rate_basis_points=fee,
        settlement_bank_account="6222 0000 0001",
        **kwargs,  # type: ignore[arg-type]
    )


def order_of(
    platform: Platform,
    merchant: Merchant,
    amount: int,
    mode: PaymentMode = PaymentMode.DIRECT,
    out_trade_no: str | None = None,
    **kwargs: object,
) -> int:
    number = out_trade_no or f"T-{merchant.id}-{amount}-{mode.value}-{kwargs}"
    decision = ok(
        platform.create_order(
            merchant.id,
            number,
            amount,
            subject="Oolong",
            mode=mode,
            **kwargs,  # type: ignore[arg-type]
        )
    )
    return decision.orders[0].id


def status(platform: Platform, order_id: int) -> OrderStatus:
    order = platform.get_order(order_id)
    assert order is not None
    return order.status


def state(platform: Platform, users: list[User], merchants: list[Merchant]) -> tuple[object, ...]:
    """Every balance a test might touch, to show a rejected command changed nothing."""
    return (
        tuple(wallet(platform, u) for u in users),
        tuple(merchant_balance(platform, m) for m in merchants),
        books(platform),
    )


def everything(
    platform: Platform, users: list[User], merchants: list[Merchant]
) -> tuple[object, ...]:
    """The whole stored state (every ledger account and transfer, every order), the named
    parties' channel requests and webhook events, and what the bank was asked to do."""
    return (
        state(platform, users, merchants),
        list(platform.store.all_accounts()),
        list(platform.store.all_transfers()),
        list(platform.store.all_orders()),
        [platform.list_channel_requests(PartyKind.USER, u.id) for u in users],
        [platform.list_channel_requests(PartyKind.MERCHANT, m.id) for m in merchants],
        [platform.webhook_events(m.id) for m in merchants],
        platform.bank.pending_instructions,
    )


# ------------------------------------------------------------------------- top-up, withdraw


def test_top_up_credits_the_wallet_when_the_bank_confirms(platform: Platform) -> None:
    user = platform.create_user("Li Lei")
    request = ok(platform.request_top_up(user.id, "first", 100_00)).channel_requests[0]
    assert request.status is ChannelRequestStatus.PENDING
    assert wallet(platform, user) == 0
    [answer] = platform.deliver_bank_callbacks()
    assert ok(answer).channel_requests[0].status is ChannelRequestStatus.SUCCEEDED
    assert wallet(platform, user) == 100_00
    assert books(platform) == Books(escrow=0, fees=0, channel=100_00, channel_pending=0)
    stored = platform.get_channel_request(request.id)
    assert stored is not None
    assert stored.status is ChannelRequestStatus.SUCCEEDED


def test_declined_top_up_credits_nothing(platform: Platform) -> None:
    user = platform.create_user("Li Lei")
    ok(platform.request_top_up(user.id, "unlucky", 100_13))
    [answer] = platform.deliver_bank_callbacks()
    assert ok(answer).channel_requests[0].status is ChannelRequestStatus.FAILED
    assert wallet(platform, user) == 0
    assert books(platform).channel == 0


def test_top_up_request_again_is_the_same_request(platform: Platform) -> None:
    user = platform.create_user("Li Lei")
    first = ok(platform.request_top_up(user.id, "R1", 50_00))
    again = ok(platform.request_top_up(user.id, "R1", 50_00))
    assert again.replayed
    assert again.channel_requests == first.channel_requests
    other = platform.request_top_up(user.id, "R1", 60_00)
    assert other.error is PaymentError.CHANNEL_REQUEST_EXISTS_WITH_DIFFERENT_CONTENT
    assert platform.bank.pending_instructions == 1  # the bank was asked once
    platform.deliver_bank_callbacks()
    assert wallet(platform, user) == 50_00


def test_channel_callback_twice_and_out_of_order_applies_each_once(platform: Platform) -> None:
    user = platform.create_user("Li Lei")
    ok(platform.request_top_up(user.id, "A", 10_00))
    ok(platform.request_top_up(user.id, "B", 20_00))
    callbacks = platform.bank.callbacks(platform.clock())
    for message in [callbacks[1], callbacks[1], callbacks[0], callbacks[1], callbacks[0]]:
        ok(platform.channel_callback_message(message.body, message.signature))
    replays = [platform.channel_callback_message(c.body, c.signature).replayed for c in callbacks]
    assert replays == [True, True]
    assert wallet(platform, user) == 30_00
    assert books(platform).channel == 30_00


def test_forged_conflicting_and_unknown_callbacks_change_nothing(platform: Platform) -> None:
    user = platform.create_user("Li Lei")
    ok(platform.request_top_up(user.id, "A", 10_00))
    [message] = platform.bank.callbacks(platform.clock())
    body = json.loads(message.body)
    # Forged: a body the bank did not sign.
    forged = json.dumps({**body, "amount": 10_000_00}, sort_keys=True)
    assert (
        platform.channel_callback_message(forged, message.signature).error
        is PaymentError.INVALID_CHANNEL_SIGNATURE
    )
    assert wallet(platform, user) == 0
    # The real answer, then a signed one that says the opposite.
    ok(platform.channel_callback_message(message.body, message.signature))
    opposite = json.dumps({**body, "status": "FAILED"}, sort_keys=True)
    conflicting = platform.channel_callback_message(opposite, platform.bank.sign(opposite))
    assert conflicting.error is PaymentError.CHANNEL_CALLBACK_CONFLICT
    other_amount = json.dumps({**body, "amount": 11_00}, sort_keys=True)
    changed = platform.channel_callback_message(other_amount, platform.bank.sign(other_amount))
    assert changed.error is PaymentError.CHANNEL_CALLBACK_CONFLICT
    unknown = json.dumps({**body, "channel_reference": "PC0199999999999999"}, sort_keys=True)
    missing = platform.channel_callback_message(unknown, platform.bank.sign(unknown))
    assert missing.error is PaymentError.CHANNEL_REQUEST_NOT_FOUND
    malformed = platform.channel_callback_message("[1, 2]", platform.bank.sign("[1, 2]"))
    assert malformed.error is PaymentError.CHANNEL_CALLBACK_CONFLICT
    assert wallet(platform, user) == 10_00
    assert books(platform).channel == 10_00


def test_withdrawal_reserves_then_pays_out(platform: Platform) -> None:
    user = buyer_with(platform, 100_00)
    ok(platform.request_withdrawal(user.id, "W1", 40_00))
    account = platform.balance_of_user(user.id)
    assert account is not None
    assert (account.debits_pending, account.debits_posted) == (40_00, 0)
    assert wallet(platform, user) == 60_00
    assert books(platform).channel_pending == 40_00
    [answer] = platform.deliver_bank_callbacks()
    assert ok(answer).channel_requests[0].status is ChannelRequestStatus.SUCCEEDED
    assert wallet(platform, user) == 60_00
    assert books(platform) == Books(escrow=0, fees=0, channel=60_00, channel_pending=0)


def test_failed_withdrawal_returns_the_money(platform: Platform) -> None:
    user = buyer_with(platform, 100_00)
    ok(platform.request_withdrawal(user.id, "W1", 40_13))
    assert wallet(platform, user) == 100_00 - 40_13
    [answer] = platform.deliver_bank_callbacks()
    assert ok(answer).channel_requests[0].status is ChannelRequestStatus.FAILED
    assert wallet(platform, user) == 100_00
    assert books(platform) == Books(escrow=0, fees=0, channel=100_00, channel_pending=0)


def test_insufficient_funds_changes_nothing(platform: Platform) -> None:
    user = buyer_with(platform, 10_00)
    merchant = shop(platform)
    before = state(platform, [user], [merchant])
    order_id = order_of(platform, merchant, 10_01)
    events_before = platform.webhook_events(merchant.id)
    refused = platform.pay_order(order_id, user.id)
    assert refused.error is PaymentError.INSUFFICIENT_FUNDS
    assert refused.message
    assert status(platform, order_id) is OrderStatus.WAIT_BUYER_PAY
    assert platform.webhook_events(merchant.id) == events_before
    withdrawal = platform.request_withdrawal(user.id, "W1", 10_01)
    assert withdrawal.error is PaymentError.INSUFFICIENT_FUNDS
    assert platform.bank.pending_instructions == 0
    assert platform.list_channel_requests(PartyKind.USER, user.id)[-1].request_no != "W1"
    payout = platform.request_payout(merchant.id, "P1", 1)
    assert payout.error is PaymentError.INSUFFICIENT_FUNDS
    assert state(platform, [user], [merchant]) == before
    # The same order can still be paid once the money is there.
    ok(platform.request_top_up(user.id, "more", 1))
    platform.deliver_bank_callbacks()
    ok(platform.pay_order(order_id, user.id))
    assert wallet(platform, user) == 0


# ----------------------------------------------------------------------------------- orders


def test_direct_payment_end_to_end(platform: Platform) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform, fee=60)
    order_id = order_of(platform, merchant, 25_00)
    assert status(platform, order_id) is OrderStatus.WAIT_BUYER_PAY
    paid = ok(platform.pay_order(order_id, buyer.id)).orders[0]
    assert paid.status is OrderStatus.TRADE_SUCCESS
    assert paid.fee == 15
    assert wallet(platform, buyer) == 75_00
    assert merchant_balance(platform, merchant) == 24_85
    assert books(platform) == Books(escrow=0, fees=15, channel=100_00, channel_pending=0)
    again = ok(platform.pay_order(order_id, buyer.id))
    assert again.replayed
    assert wallet(platform, buyer) == 75_00
    events = [e.type for e in platform.webhook_events(merchant.id)]
    assert events == ["payment.succeeded"]


def test_order_created_again_is_the_same_order(platform: Platform) -> None:
    merchant = shop(platform)
    first = ok(platform.create_order(merchant.id, "T-1", 25_00, subject="Oolong"))
    again = ok(platform.create_order(merchant.id, "T-1", 25_00, subject="Oolong"))
    assert again.replayed
    assert again.orders == first.orders
    other = platform.create_order(merchant.id, "T-1", 26_00, subject="Oolong")
    assert other.error is PaymentError.ORDER_EXISTS_WITH_DIFFERENT_CONTENT
    another_merchant = shop(platform)
    theirs = ok(platform.create_order(another_merchant.id, "T-1", 26_00, subject="Oolong"))
    assert theirs.orders[0].id != first.orders[0].id
    assert [o.id for o in platform.list_orders(merchant.id)] == [first.orders[0].id]


def test_bad_orders_are_rejected(platform: Platform) -> None:
    merchant = shop(platform)
    buyer = buyer_with(platform, 10_00)
    order_id = order_of(platform, merchant, 1_00)
    before = everything(platform, [buyer], [merchant])
    unknown = 999
    rejections: list[tuple[Decision, PaymentError]] = [
        (platform.create_order(unknown, "T", 1), PaymentError.MERCHANT_NOT_FOUND),
        (platform.create_order(merchant.id, "T", 0), PaymentError.INVALID_AMOUNT),
        (platform.create_order(merchant.id, "T", -1), PaymentError.INVALID_AMOUNT),
        (
            platform.create_order(merchant.id, "T", 1, currency="EUR"),
            PaymentError.UNSUPPORTED_CURRENCY,
        ),
    ]
    for field in ("timeout_seconds", "auto_confirm_seconds"):
        for seconds in (0, -1):
            bad = platform.create_order(merchant.id, "T", 1, **{field: seconds})  # type: ignore[arg-type]
            rejections.append((bad, PaymentError.INVALID_FIELD))
    rejections += [
        (platform.pay_order(order_id, unknown), PaymentError.USER_NOT_FOUND),
        (platform.pay_order(unknown, buyer.id), PaymentError.ORDER_NOT_FOUND),
        (platform.request_top_up(unknown, "x", 1), PaymentError.USER_NOT_FOUND),
        (platform.request_payout(unknown, "x", 1), PaymentError.MERCHANT_NOT_FOUND),
        (platform.request_top_up(buyer.id, "x", 0), PaymentError.INVALID_AMOUNT),
    ]
    assert [decision.error for decision, _ in rejections] == [error for _, error in rejections]
    assert all(decision.message for decision, _ in rejections)
    assert everything(platform, [buyer], [merchant]) == before
    assert [o.id for o in platform.list_orders(merchant.id)] == [order_id]
    assert platform.list_orders(unknown) == []
    assert platform.list_channel_requests(PartyKind.USER, unknown) == []
    assert platform.list_channel_requests(PartyKind.MERCHANT, unknown) == []
    assert wallet(platform, buyer) == 10_00


def test_a_merchant_touches_only_its_own_orders(platform: Platform) -> None:
    buyer = buyer_with(platform, 100_00)
    mine, theirs = shop(platform), shop(platform)
    order_id = order_of(platform, mine, 10_00)
    assert platform.cancel_order(order_id, theirs.id).error is PaymentError.ORDER_NOT_FOUND
    ok(platform.pay_order(order_id, buyer.id))
    assert platform.refund(order_id, theirs.id, "R", 1_00).error is PaymentError.ORDER_NOT_FOUND
    assert wallet(platform, buyer) == 90_00


def test_paying_a_closed_order_is_rejected(platform: Platform) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform)
    order_id = order_of(platform, merchant, 10_00)
    closed = ok(platform.cancel_order(order_id, merchant.id)).orders[0]
    assert closed.status is OrderStatus.TRADE_CLOSED
    assert closed.close_reason == "cancelled"
    assert platform.pay_order(order_id, buyer.id).error is PaymentError.ORDER_ALREADY_CLOSED
    assert wallet(platform, buyer) == 100_00
    assert ok(platform.cancel_order(order_id, merchant.id)).replayed


def test_unpaid_order_closes_after_its_time_limit(platform: Platform, clock: Clock) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform)
    default = order_of(platform, merchant, 10_00)  # 30 minutes
    short = order_of(platform, merchant, 11_00, timeout_seconds=60)
    clock.advance(59)
    assert platform.run_scheduler().closed_orders == 0
    clock.advance(1)
    assert platform.run_scheduler().closed_orders == 1
    assert status(platform, short) is OrderStatus.TRADE_CLOSED
    assert status(platform, default) is OrderStatus.WAIT_BUYER_PAY
    clock.advance(30 * 60 - 60)
    # Past its time but not yet closed by the scheduler: paying is refused all the same.
    assert platform.pay_order(default, buyer.id).error is PaymentError.ORDER_EXPIRED
    assert platform.run_scheduler().closed_orders == 1
    order = platform.get_order(default)
    assert order is not None
    assert (order.status, order.close_reason) == (OrderStatus.TRADE_CLOSED, "expired")
    assert platform.pay_order(default, buyer.id).error is PaymentError.ORDER_ALREADY_CLOSED
    assert wallet(platform, buyer) == 100_00
    assert platform.run_scheduler().closed_orders == 0


# ----------------------------------------------------------------------------------- escrow


def test_escrow_payment_end_to_end(platform: Platform) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform, fee=60)
    order_id = order_of(platform, merchant, 25_00, ESCROW)
    paid = ok(platform.pay_order(order_id, buyer.id)).orders[0]
    assert paid.escrow_state is EscrowState.HELD
    assert wallet(platform, buyer) == 75_00
    assert merchant_balance(platform, merchant) == 0
    assert books(platform) == Books(escrow=25_00, fees=0, channel=100_00, channel_pending=0)
    other = buyer_with(platform, 0, "Han Meimei")
    assert platform.confirm_receipt(order_id, other.id).error is PaymentError.NOT_THE_BUYER
    released = ok(platform.confirm_receipt(order_id, buyer.id)).orders[0]
    assert released.escrow_state is EscrowState.RELEASED
    assert merchant_balance(platform, merchant) == 24_85
    assert books(platform) == Books(escrow=0, fees=15, channel=100_00, channel_pending=0)
    twice = platform.confirm_receipt(order_id, buyer.id)
    assert twice.error is PaymentError.ESCROW_ALREADY_RELEASED
    assert merchant_balance(platform, merchant) == 24_85
    assert [e.type for e in platform.webhook_events(merchant.id)] == [
        "payment.succeeded",
        "escrow.released",
    ]


def test_escrow_auto_confirms_after_ten_days_by_default(platform: Platform, clock: Clock) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform)
    order_id = order_of(platform, merchant, 25_00, ESCROW)
    ok(platform.pay_order(order_id, buyer.id))
    clock.advance(10 * DAY_SECONDS - 1)
    assert platform.run_scheduler().auto_confirmed == 0
    assert books(platform).escrow == 25_00
    clock.advance(1)
    assert platform.run_scheduler().auto_confirmed == 1
    order = platform.get_order(order_id)
    assert order is not None
    assert order.escrow_state is EscrowState.RELEASED
    assert order.status is OrderStatus.TRADE_SUCCESS
    assert merchant_balance(platform, merchant) == 24_85
    assert books(platform).escrow == 0
    assert books(platform).fees == 15
    assert platform.run_scheduler().auto_confirmed == 0


def test_escrow_auto_confirm_period_is_settable_per_order(platform: Platform, clock: Clock) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform)
    quick = order_of(platform, merchant, 10_00, ESCROW, auto_confirm_seconds=3 * DAY_SECONDS)
    default = order_of(platform, merchant, 20_00, ESCROW)
    ok(platform.pay_order(quick, buyer.id))
    ok(platform.pay_order(default, buyer.id))
    clock.advance(3 * DAY_SECONDS)
    assert platform.run_scheduler().auto_confirmed == 1
    assert merchant_balance(platform, merchant) == 10_00 - 6
    assert books(platform).escrow == 20_00
    clock.advance(7 * DAY_SECONDS)
    assert platform.run_scheduler().auto_confirmed == 1
    assert merchant_balance(platform, merchant) == 10_00 - 6 + 20_00 - 12
    assert books(platform) == Books(escrow=0, fees=18, channel=100_00, channel_pending=0)


def test_refund_request_pauses_auto_confirm_and_rejection_resumes_it(
    platform: Platform, clock: Clock
) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform)
    order_id = order_of(platform, merchant, 25_00, ESCROW)
    ok(platform.pay_order(order_id, buyer.id))
    clock.advance(3 * DAY_SECONDS)
    ok(platform.open_refund_request(order_id, buyer.id))
    assert platform.open_refund_request(order_id, buyer.id).error is (
        PaymentError.REFUND_REQUEST_ALREADY_OPEN
    )
    clock.advance(30 * DAY_SECONDS)
    assert platform.run_scheduler().auto_confirmed == 0
    assert books(platform).escrow == 25_00
    other = shop(platform)
    assert platform.reject_refund_request(order_id, other.id).error is PaymentError.ORDER_NOT_FOUND
    ok(platform.reject_refund_request(order_id, merchant.id))
    clock.advance(7 * DAY_SECONDS - 1)
    assert platform.run_scheduler().auto_confirmed == 0
    clock.advance(1)
    assert platform.run_scheduler().auto_confirmed == 1
    assert merchant_balance(platform, merchant) == 24_85


def test_trade_finishes_after_the_refund_period(platform: Platform, clock: Clock) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform)
    direct = order_of(platform, merchant, 10_00)
    escrow = order_of(platform, merchant, 20_00, ESCROW)
    ok(platform.pay_order(direct, buyer.id))
    ok(platform.pay_order(escrow, buyer.id))
    clock.advance(90 * DAY_SECONDS - 1)
    report = platform.run_scheduler()
    assert (report.auto_confirmed, report.finished_trades) == (1, 0)
    assert platform.refund(direct, merchant.id, "R-late", 1_00).ok
    clock.advance(1)
    assert platform.run_scheduler().finished_trades == 2
    assert status(platform, direct) is OrderStatus.TRADE_FINISHED
    assert status(platform, escrow) is OrderStatus.TRADE_FINISHED
    before = state(platform, [buyer], [merchant])
    too_late = platform.refund(direct, merchant.id, "R-too-late", 1_00)
    assert too_late.error is PaymentError.ORDER_ALREADY_FINISHED
    assert state(platform, [buyer], [merchant]) == before
    assert platform.run_scheduler().finished_trades == 0


def test_refund_after_the_refund_period_is_rejected_before_the_scheduler_runs(
    platform: Platform, clock: Clock
) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform)
    order_id = order_of(platform, merchant, 10_00)
    ok(platform.pay_order(order_id, buyer.id))
    clock.advance(90 * DAY_SECONDS)
    late = platform.refund(order_id, merchant.id, "R-late", 1_00)
    assert late.error is PaymentError.ORDER_ALREADY_FINISHED


# ---------------------------------------------------------------------------------- refunds


def test_refund_before_release_comes_from_escrow(platform: Platform) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform, fee=60)
    order_id = order_of(platform, merchant, 25_00, ESCROW)
    ok(platform.pay_order(order_id, buyer.id))
    refund = ok(platform.refund(order_id, merchant.id, "R-1", 10_00)).refunds[0]
    assert (refund.source, refund.fee_refunded) == ("escrow", 6)
    assert wallet(platform, buyer) == 85_00
    assert books(platform).escrow == 15_00
    assert merchant_balance(platform, merchant) == 0
    ok(platform.confirm_receipt(order_id, buyer.id))
    # The fee shrinks with the refund: 15 - 6 = 9 kept.
    assert merchant_balance(platform, merchant) == 15_00 - 9
    assert books(platform) == Books(escrow=0, fees=9, channel=100_00, channel_pending=0)


def test_refund_after_release_comes_from_merchant_and_returns_fee_proportionally(
    platform: Platform,
) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform, fee=60)
    order_id = order_of(platform, merchant, 25_00)
    ok(platform.pay_order(order_id, buyer.id))
    refund = ok(platform.refund(order_id, merchant.id, "R-1", 10_00)).refunds[0]
    assert (refund.source, refund.fee_refunded) == ("merchant", 6)
    assert wallet(platform, buyer) == 85_00
    assert merchant_balance(platform, merchant) == 24_85 - (10_00 - 6)
    assert books(platform) == Books(escrow=0, fees=9, channel=100_00, channel_pending=0)
    assert platform.refunds_of_order(order_id) == [refund]


def test_full_refund_returns_the_whole_fee_and_closes_the_trade(platform: Platform) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform, fee=60)
    direct = order_of(platform, merchant, 25_00)
    escrow = order_of(platform, merchant, 30_00, ESCROW)
    ok(platform.pay_order(direct, buyer.id))
    ok(platform.pay_order(escrow, buyer.id))
    ok(platform.refund(direct, merchant.id, "R-1", 7_77))
    ok(platform.refund(direct, merchant.id, "R-2", 25_00 - 7_77))
    ok(platform.refund(escrow, merchant.id, "R-1", 30_00))
    for order_id in (direct, escrow):
        order = platform.get_order(order_id)
        assert order is not None
        assert (order.status, order.close_reason) == (OrderStatus.TRADE_CLOSED, "refunded")
        assert order.refunded_fee == order.fee
    assert wallet(platform, buyer) == 100_00
    assert merchant_balance(platform, merchant) == 0
    assert books(platform) == Books(escrow=0, fees=0, channel=100_00, channel_pending=0)
    before = everything(platform, [buyer], [merchant])
    assert platform.refund(direct, merchant.id, "R-3", 1).error is PaymentError.ORDER_ALREADY_CLOSED
    assert platform.confirm_receipt(escrow, buyer.id).error is PaymentError.ORDER_ALREADY_CLOSED
    assert everything(platform, [buyer], [merchant]) == before


def test_several_partial_refunds_never_exceed_the_order(platform: Platform) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform, fee=60)
    order_id = order_of(platform, merchant, 25_00)
    ok(platform.pay_order(order_id, buyer.id))
    ok(platform.refund(order_id, merchant.id, "R-1", 10_00))
    ok(platform.refund(order_id, merchant.id, "R-2", 10_00))
    before = state(platform, [buyer], [merchant])
    over = platform.refund(order_id, merchant.id, "R-3", 5_01)
    assert over.error is PaymentError.REFUND_EXCEEDS_AMOUNT_PAID
    assert state(platform, [buyer], [merchant]) == before
    replay = ok(platform.refund(order_id, merchant.id, "R-2", 10_00))
    assert replay.replayed
    changed = platform.refund(order_id, merchant.id, "R-2", 9_00)
    assert changed.error is PaymentError.REFUND_EXISTS_WITH_DIFFERENT_CONTENT
    assert state(platform, [buyer], [merchant]) == before
    ok(platform.refund(order_id, merchant.id, "R-3", 5_00))
    assert wallet(platform, buyer) == 100_00
    assert len(platform.refunds_of_order(order_id)) == 3
    assert sum(r.fee_refunded for r in platform.refunds_of_order(order_id)) == 15
    assert books(platform).fees == 0


def test_refund_on_an_unpaid_order_is_rejected(platform: Platform) -> None:
    merchant = shop(platform)
    order_id = order_of(platform, merchant, 25_00)
    assert platform.refund(order_id, merchant.id, "R", 1).error is PaymentError.ORDER_NOT_PAID
    assert platform.refunds_of_order(order_id) == []


def test_refund_after_release_needs_the_merchants_balance(platform: Platform) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform, fee=0)
    order_id = order_of(platform, merchant, 25_00)
    ok(platform.pay_order(order_id, buyer.id))
    ok(platform.request_payout(merchant.id, "P1", 20_00))
    before = state(platform, [buyer], [merchant])
    short = platform.refund(order_id, merchant.id, "R-1", 10_00)
    assert short.error is PaymentError.INSUFFICIENT_FUNDS
    assert state(platform, [buyer], [merchant]) == before
    assert platform.refunds_of_order(order_id) == []
    order = platform.get_order(order_id)
    assert order is not None
    assert order.refunded_amount == 0
    ok(platform.refund(order_id, merchant.id, "R-1", 5_00))
    assert merchant_balance(platform, merchant) == 0


# ------------------------------------------------------------------------ payouts, settling


def test_payout_on_demand(platform: Platform) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform, fee=0)
    ok(platform.pay_order(order_of(platform, merchant, 30_00), buyer.id))
    ok(platform.request_payout(merchant.id, "P1", 10_00))
    assert merchant_balance(platform, merchant) == 20_00
    everything = ok(platform.request_payout(merchant.id, "P2")).channel_requests[0]
    assert everything.amount == 20_00
    assert merchant_balance(platform, merchant) == 0
    assert platform.request_payout(merchant.id, "P3").error is PaymentError.NOTHING_TO_PAY_OUT
    answers = platform.deliver_bank_callbacks()
    assert [ok(a).channel_requests[0].status for a in answers] == [
        ChannelRequestStatus.SUCCEEDED
    ] * 2
    assert books(platform) == Books(escrow=0, fees=0, channel=70_00, channel_pending=0)
    assert [e.type for e in platform.webhook_events(merchant.id)][-2:] == [
        "payout.succeeded",
        "payout.succeeded",
    ]


def test_failed_payout_returns_the_money_to_the_merchant(platform: Platform) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform, fee=0)
    ok(platform.pay_order(order_of(platform, merchant, 30_13), buyer.id))
    ok(platform.request_payout(merchant.id, "P1"))
    assert merchant_balance(platform, merchant) == 0
    platform.deliver_bank_callbacks()
    assert merchant_balance(platform, merchant) == 30_13
    assert books(platform).channel == 100_00


def test_settlement_pays_out_each_available_balance_once_per_day(
    platform: Platform, clock: Clock
) -> None:
    buyer = buyer_with(platform, 1_000_00)
    first, second = shop(platform, fee=0), shop(platform, fee=100)
    idle = shop(platform)
    manual = shop(platform, fee=0, daily_payout=False)
    ok(platform.pay_order(order_of(platform, first, 100_00), buyer.id))
    ok(platform.pay_order(order_of(platform, second, 200_00), buyer.id))
    ok(platform.pay_order(order_of(platform, manual, 50_00), buyer.id))
    held = order_of(platform, first, 70_00, ESCROW)
    ok(platform.pay_order(held, buyer.id))  # not available until released
    ok(platform.request_withdrawal(buyer.id, "W", 1_00))
    platform.deliver_bank_callbacks()
    day = clock.now // DAY * DAY
    decisions = platform.settle_day(day)
    payouts = [ok(d).channel_requests[0] for d in decisions]
    assert [(p.party_id, p.amount) for p in payouts] == [(first.id, 100_00), (second.id, 198_00)]
    assert all(not d.replayed for d in decisions)
    assert merchant_balance(platform, first) == 0
    assert merchant_balance(platform, second) == 0
    assert merchant_balance(platform, idle) == 0
    assert merchant_balance(platform, manual) == 50_00
    # Money that arrives later the same day waits for the next day's settlement.
    ok(platform.confirm_receipt(held, buyer.id))
    again = platform.settle_day(day)
    assert all(d.replayed for d in again)
    assert platform.bank.pending_instructions == 2
    assert merchant_balance(platform, first) == 70_00
    platform.deliver_bank_callbacks()
    clock.advance(DAY_SECONDS)
    next_day = platform.settle_day(day + DAY)
    assert [(ok(d).channel_requests[0].party_id, d.replayed) for d in next_day] == [
        (first.id, False)
    ]
    assert next_day[0].channel_requests[0].amount == 70_00
    platform.deliver_bank_callbacks()
    assert merchant_balance(platform, first) == 0
    paid_out = 100_00 + 198_00 + 70_00 + 1_00
    assert books(platform) == Books(
        escrow=0, fees=2_00, channel=1_000_00 - paid_out, channel_pending=0
    )


# -------------------------------------------------------------------------------- scheduler


def test_scheduler_running_twice_applies_each_change_once(platform: Platform, clock: Clock) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform)
    for n in range(3):
        order_of(platform, merchant, 1_00 + n)
    escrows = [order_of(platform, merchant, 10_00 + n, ESCROW) for n in range(2)]
    for order_id in escrows:
        ok(platform.pay_order(order_id, buyer.id))
    clock.advance(90 * DAY_SECONDS)
    first = platform.run_scheduler()
    assert (first.closed_orders, first.auto_confirmed, first.finished_trades) == (3, 2, 2)
    assert first.errors == []
    second = platform.run_scheduler()
    assert (second.closed_orders, second.auto_confirmed, second.finished_trades) == (0, 0, 0)
    assert merchant_balance(platform, merchant) == 10_00 - 6 + 10_01 - 6
    assert books(platform).escrow == 0
    events = [e.type for e in platform.webhook_events(merchant.id)]
    assert events.count("order.closed") == 3
    assert events.count("escrow.released") == 2
    assert events.count("trade.finished") == 2


def test_scheduler_from_two_platforms_on_one_database_applies_each_change_once(
    platform: Platform, clock: Clock, database_url: str
) -> None:
    buyer = buyer_with(platform, 1_000_00)
    merchant = shop(platform)
    for n in range(20):
        order_of(platform, merchant, 1_00 + n)
    escrows = [order_of(platform, merchant, 10_00 + n, ESCROW) for n in range(20)]
    for order_id in escrows:
        ok(platform.pay_order(order_id, buyer.id))
    clock.advance(10 * DAY_SECONDS)
    other = Platform(database_url, clock=clock)
    try:
        reports = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def run(instance: Platform) -> None:
            try:
                barrier.wait()
                reports.append(instance.run_scheduler())
            except BaseException as problem:  # pragma: no cover - reported below
                errors.append(problem)

        threads = [threading.Thread(target=run, args=(p,)) for p in (platform, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sum(r.closed_orders for r in reports) == 20
        assert sum(r.auto_confirmed for r in reports) == 20
        assert [r.errors for r in reports] == [[], []]
        expected = sum(10_00 + n - fee for n, fee in enumerate(_fees(20, 60, 10_00)))
        assert merchant_balance(platform, merchant) == expected
        assert merchant_balance(other, merchant) == expected
        assert books(other).escrow == 0
        events = [e.type for e in platform.webhook_events(merchant.id, limit=500)]
        assert events.count("order.closed") == 20
        assert events.count("escrow.released") == 20
        assert other.verify().ok
    finally:
        other.close()


def test_two_platforms_on_one_database_see_each_others_writes(
    platform: Platform, database_url: str, clock: Clock
) -> None:
    buyer = buyer_with(platform, 100_00)
    merchant = shop(platform, fee=0)
    ok(platform.pay_order(order_of(platform, merchant, 10_00), buyer.id))
    ok(platform.request_payout(merchant.id, "P0", 1_00))  # the first instance reads the balance
    with Platform(database_url, clock=clock) as other:
        ok(other.pay_order(order_of(other, merchant, 20_00), buyer.id))
        everything = ok(platform.request_payout(merchant.id, "P1")).channel_requests[0]
        assert everything.amount == 29_00
        assert other.pay_order(order_of(other, merchant, 70_01), buyer.id).error is (
            PaymentError.INSUFFICIENT_FUNDS
        )
        assert wallet(other, buyer) == 70_00
    assert merchant_balance(platform, merchant) == 0


def _fees(count: int, basis_points: int, base: int) -> list[int]:
    from paycell.core.money import fee_for

    return [fee_for(base + n, basis_points) for n in range(count)]


def test_scheduler_expires_pending_transfers_once(platform: Platform, clock: Clock) -> None:
    user = buyer_with(platform, 100_00)
    reservation = Transfer(
        id=42,
        debit_account_id=chart.user_wallet(user.id, CNY),
        credit_account_id=chart.suspense(CNY),
        amount=30_00,
        ledger=CNY,
        code=99,
        timeout=3600,
        flags=int(TransferFlags.PENDING),
    )
    assert [r.value for r in platform.ledger.create_transfers([reservation])] == ["ok"]
    assert wallet(platform, user) == 70_00
    clock.advance(3599)
    assert platform.run_scheduler().expired_pending_transfers == 0
    # The timeout counts from the transfer's ledger timestamp, a few nanoseconds after now.
    clock.advance(1)
    clock.now += 1_000_000
    assert platform.run_scheduler().expired_pending_transfers == 1
    assert platform.run_scheduler().expired_pending_transfers == 0
    assert wallet(platform, user) == 100_00


def test_two_currencies_keep_separate_books(database_url: str, clock: Clock) -> None:
    with Platform(database_url, clock=clock, config=PlatformConfig(currencies=("CNY", "USD"))) as p:
        buyer = p.create_user("Li Lei")
        merchant = shop(p, fee=100)
        ok(p.request_top_up(buyer.id, "cny", 100_00))
        ok(p.request_top_up(buyer.id, "usd", 50_00, currency="USD"))
        p.deliver_bank_callbacks()
        usd_order = ok(p.create_order(merchant.id, "T-usd", 40_00, currency="USD")).orders[0]
        ok(p.pay_order(usd_order.id, buyer.id))
        cny_order = ok(p.create_order(merchant.id, "T-cny", 200_00)).orders[0]
        assert p.pay_order(cny_order.id, buyer.id).error is PaymentError.INSUFFICIENT_FUNDS
        usd_wallet = p.balance_of_user(buyer.id, "USD")
        cny_wallet = p.balance_of_user(buyer.id, "CNY")
        usd_merchant = p.balance_of_merchant(merchant.id, "USD")
        assert usd_wallet is not None
        assert cny_wallet is not None
        assert usd_merchant is not None
        assert usd_wallet.credits_posted - usd_wallet.debits_posted == 10_00
        assert cny_wallet.credits_posted - cny_wallet.debits_posted == 100_00
        assert usd_merchant.credits_posted == 40_00 - 40
        report = p.verify()
        assert report.ok, report.render()
        assert set(report.ledgers) == {156, 840}
