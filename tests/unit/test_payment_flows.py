"""Specifications of the pure payment flows (`paycell.core.payments.flows`), no I/O.

Each flow takes records and a time and returns a `Decision`: the records to write and the ledger
transfers to apply. These tests assert on the exact transfers (accounts from the chart, amounts,
codes, linked flags, ids) and on the records, for every rule the flows state: the fee and its
rounding, escrow holds and releases, refunds (source, proportional fee, limits), the refund
request pausing auto-confirm, order idempotency, channel callbacks and reservations.
"""

from dataclasses import replace
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycell.core.money import divide_half_even, fee_for
from paycell.core.payments import chart, flows
from paycell.core.payments.flows import TransferCode, transfer_id
from paycell.core.payments.outcomes import Decision, PaymentError
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
)
from paycell.core.types import Transfer, TransferFlags

NS = 1_000_000_000
DAY = 86_400 * NS
T0 = 1_700_000_000 * NS
CNY = 156
USD = 840
LINKED = int(TransferFlags.LINKED)
AMOUNT_MAX = (1 << 128) - 1

BUYER = User(id=7, name="Li Lei", created_at=T0)
OTHER_BUYER = User(id=8, name="Han Meimei", created_at=T0)
SHOP = Merchant(
    id=3,
    name="Tea House",
    fee_rate_basis_points=60,
    settlement_bank_account="6222 0000 0001",
    webhook_url="",
    webhook_secret="",
    created_at=T0,
)

WALLET = chart.user_wallet(BUYER.id, CNY)
MERCHANT = chart.merchant_balance(SHOP.id, CNY)
FEES = chart.fee_revenue(CNY)
ESCROW = chart.escrow(CNY)
CHANNEL = chart.channel_settlement(1, CNY)


# ---------------------------------------------------------------------------------- helpers


def ok(decision: Decision) -> Decision:
    assert decision.error is None, f"{decision.error}: {decision.message}"
    return decision


def create(
    *,
    order_id: int = 11,
    amount: int = 25_00,
    mode: PaymentMode = PaymentMode.DIRECT,
    merchant: Merchant | None = SHOP,
    existing: Order | None = None,
    out_trade_no: str = "T-1",
    ledger: int = CNY,
    subject: str = "Oolong",
    timeout_seconds: int = 1800,
    auto_confirm_seconds: int = flows.DEFAULT_AUTO_CONFIRM_SECONDS,
    refund_period_seconds: int = flows.DEFAULT_REFUND_PERIOD_SECONDS,
    now: int = T0,
) -> Decision:
    return flows.create_order(
        merchant=merchant,
        existing=existing,
        new_order_id=order_id,
        out_trade_no=out_trade_no,
        ledger=ledger,
        amount=amount,
        subject=subject,
        mode=mode,
        timeout_seconds=timeout_seconds,
        auto_confirm_seconds=auto_confirm_seconds,
        refund_period_seconds=refund_period_seconds,
        now=now,
    )


def new_order(**kwargs: object) -> Order:
    return ok(create(**kwargs)).orders[0]  # type: ignore[arg-type]


def paid_order(
    *,
    amount: int = 25_00,
    mode: PaymentMode = PaymentMode.DIRECT,
    merchant: Merchant = SHOP,
    now: int = T0 + 60 * NS,
    **kwargs: object,
) -> Order:
    order = new_order(amount=amount, mode=mode, merchant=merchant, **kwargs)
    return ok(flows.pay_order(order=order, merchant=merchant, buyer=BUYER, now=now)).orders[0]


def released_order(**kwargs: object) -> Order:
    order = paid_order(mode=PaymentMode.ESCROW, **kwargs)  # type: ignore[arg-type]
    return ok(flows.confirm_receipt(order=order, buyer_id=BUYER.id, now=T0 + DAY)).orders[0]


def do_refund(
    order: Order,
    amount: int,
    *,
    refund_id: int = 21,
    out_request_no: str = "R-1",
    existing: Refund | None = None,
    now: int = T0 + 2 * DAY,
) -> Decision:
    return flows.refund(
        order=order,
        existing=existing,
        new_refund_id=refund_id,
        out_request_no=out_request_no,
        amount=amount,
        reason="damaged",
        now=now,
    )


def transfer(
    identifier: int,
    debit: int,
    credit: int,
    amount: int,
    code: TransferCode,
    reference: int,
    *,
    flags: int = 0,
    ledger: int = CNY,
) -> Transfer:
    return Transfer(
        id=identifier,
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        user_data_64=reference,
        ledger=ledger,
        code=int(code),
        flags=flags,
    )


def reference_fee(amount: int, basis_points: int) -> int:
    exact = Decimal(amount) * Decimal(basis_points) / Decimal(10_000)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def channel_request(
    kind: ChannelRequestKind,
    *,
    amount: int = 50_00,
    request_id: int = 31,
    party_kind: PartyKind = PartyKind.USER,
    party_id: int = BUYER.id,
    existing: ChannelRequest | None = None,
    request_no: str = "W-1",
    ledger: int = CNY,
) -> Decision:
    return flows.request_channel_transfer(
        kind=kind,
        party_kind=party_kind,
        party_id=party_id,
        existing=existing,
        new_request_id=request_id,
        request_no=request_no,
        ledger=ledger,
        amount=amount,
        channel_number=1,
        now=T0,
    )


def callback(request: ChannelRequest, succeeded: bool, amount: int | None = None) -> Decision:
    return flows.channel_callback(
        request=request,
        succeeded=succeeded,
        amount=request.amount if amount is None else amount,
        channel_number=1,
        now=T0 + 5 * NS,
    )


# -------------------------------------------------------------------------------------- fee


@pytest.mark.parametrize(
    ("amount", "basis_points", "fee"),
    [
        (25_00, 60, 15),  # exact
        (250, 100, 2),  # 2.5 -> 2 (tie to even)
        (350, 100, 4),  # 3.5 -> 4 (tie to even)
        (50, 100, 0),  # 0.5 -> 0
        (150, 100, 2),  # 1.5 -> 2
        (251, 100, 3),  # 2.51 -> 3
        (249, 100, 2),  # 2.49 -> 2
        (1, 60, 0),
        (99, 10_000, 99),  # the whole amount
        (12_345, 0, 0),
    ],
)
def test_fee_rounds_half_even(amount: int, basis_points: int, fee: int) -> None:
    assert fee_for(amount, basis_points) == fee


@given(st.integers(1, 10**15), st.integers(0, 10_000))
def test_fee_matches_decimal_round_half_even(amount: int, basis_points: int) -> None:
    assert fee_for(amount, basis_points) == reference_fee(amount, basis_points)


def test_fee_is_fixed_at_payment_from_the_merchants_rate() -> None:
    cheap = replace(SHOP, fee_rate_basis_points=250)
    order = paid_order(amount=350, merchant=cheap)
    assert order.fee == 9  # 8.75 -> 9


# ----------------------------------------------------------------------------------- orders


def test_new_order_waits_for_the_buyer_until_its_time_limit() -> None:
    order = new_order(timeout_seconds=900, auto_confirm_seconds=3600)
    assert order == Order(
        id=11,
        merchant_id=SHOP.id,
        out_trade_no="T-1",
        ledger=CNY,
        amount=25_00,
        subject="Oolong",
        mode=PaymentMode.DIRECT,
        status=OrderStatus.WAIT_BUYER_PAY,
        created_at=T0,
        expires_at=T0 + 900 * NS,
        auto_confirm_seconds=3600,
        refund_period_seconds=flows.DEFAULT_REFUND_PERIOD_SECONDS,
    )
    assert ok(create()).transfers == []


def test_order_created_again_with_same_content_is_the_same_order() -> None:
    order = new_order()
    again = ok(create(order_id=99, existing=order, now=T0 + 5 * NS))
    assert again.replayed
    assert again.orders == [order]
    assert again.transfers == []


@pytest.mark.parametrize(
    "change",
    [{"amount": 25_01}, {"subject": "Pu-erh"}, {"mode": PaymentMode.ESCROW}, {"ledger": USD}],
    ids=["amount", "subject", "mode", "currency"],
)
def test_order_created_again_with_other_content_is_rejected(change: dict[str, object]) -> None:
    order = new_order()
    again = create(order_id=99, existing=order, **change)  # type: ignore[arg-type]
    assert again.error is PaymentError.ORDER_EXISTS_WITH_DIFFERENT_CONTENT
    assert again.orders == []
    assert again.transfers == []


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"merchant": None}, PaymentError.MERCHANT_NOT_FOUND),
        ({"amount": 0}, PaymentError.INVALID_AMOUNT),
        ({"amount": -5}, PaymentError.INVALID_AMOUNT),
        ({"amount": 2.5}, PaymentError.INVALID_AMOUNT),
        ({"amount": True}, PaymentError.INVALID_AMOUNT),
        ({"amount": 1 << 63}, PaymentError.INVALID_AMOUNT),
        ({"out_trade_no": ""}, PaymentError.INVALID_FIELD),
        ({"subject": "x" * (flows.SUBJECT_LENGTH_MAX + 1)}, PaymentError.INVALID_FIELD),
        ({"out_trade_no": "x" * 65}, PaymentError.INVALID_FIELD),
        ({"timeout_seconds": 0}, PaymentError.INVALID_FIELD),
        ({"auto_confirm_seconds": flows.TIMEOUT_SECONDS_MAX + 1}, PaymentError.INVALID_FIELD),
        ({"refund_period_seconds": -1}, PaymentError.INVALID_FIELD),
    ],
)
def test_invalid_order_is_rejected(change: dict[str, object], error: PaymentError) -> None:
    decision = create(**change)  # type: ignore[arg-type]
    assert decision.error is error
    assert decision.message
    assert decision.orders == []
    assert decision.transfers == []


def test_cancelling_an_unpaid_order_closes_it_and_again_is_a_replay() -> None:
    order = new_order()
    closed = ok(flows.close_order(order=order, now=T0 + 10 * NS, reason="cancelled")).orders[0]
    assert closed == replace(
        order, status=OrderStatus.TRADE_CLOSED, closed_at=T0 + 10 * NS, close_reason="cancelled"
    )
    again = ok(flows.close_order(order=closed, now=T0 + 20 * NS, reason="expired"))
    assert again.replayed
    assert again.orders == [closed]


def test_a_paid_order_cannot_be_cancelled() -> None:
    decision = flows.close_order(order=paid_order(), now=T0 + DAY, reason="cancelled")
    assert decision.error is PaymentError.ORDER_ALREADY_PAID
    assert decision.orders == []


# ---------------------------------------------------------------------------------- payment


def test_direct_payment_sends_amount_minus_fee_to_merchant_and_fee_to_platform() -> None:
    order = new_order(order_id=11, amount=25_00)
    now = T0 + 60 * NS
    decision = ok(flows.pay_order(order=order, merchant=SHOP, buyer=BUYER, now=now))
    assert decision.transfers == [
        transfer(
            transfer_id(TransferCode.PAYMENT, 11),
            WALLET,
            MERCHANT,
            24_85,
            TransferCode.PAYMENT,
            11,
            flags=LINKED,
        ),
        transfer(transfer_id(TransferCode.FEE, 11), WALLET, FEES, 15, TransferCode.FEE, 11),
    ]
    assert decision.orders == [
        replace(
            order,
            status=OrderStatus.TRADE_SUCCESS,
            buyer_id=BUYER.id,
            paid_at=now,
            fee=15,
            refundable_until=now + flows.DEFAULT_REFUND_PERIOD_SECONDS * NS,
        )
    ]
    assert not decision.replayed


def test_direct_payment_without_a_fee_is_one_unlinked_transfer() -> None:
    free = replace(SHOP, fee_rate_basis_points=0)
    order = new_order(merchant=free, amount=25_00)
    decision = ok(flows.pay_order(order=order, merchant=free, buyer=BUYER, now=T0))
    assert decision.transfers == [
        transfer(
            transfer_id(TransferCode.PAYMENT, 11), WALLET, MERCHANT, 25_00, TransferCode.PAYMENT, 11
        )
    ]


def test_escrow_payment_holds_the_whole_amount() -> None:
    order = new_order(mode=PaymentMode.ESCROW, amount=25_00, auto_confirm_seconds=3 * 86_400)
    now = T0 + 60 * NS
    decision = ok(flows.pay_order(order=order, merchant=SHOP, buyer=BUYER, now=now))
    assert decision.transfers == [
        transfer(
            transfer_id(TransferCode.ESCROW_HOLD, 11),
            WALLET,
            ESCROW,
            25_00,
            TransferCode.ESCROW_HOLD,
            11,
        )
    ]
    [paid] = decision.orders
    assert paid.status is OrderStatus.TRADE_SUCCESS
    assert paid.escrow_state is EscrowState.HELD
    assert paid.fee == 15  # fixed now, taken at release
    assert paid.auto_confirm_at == now + 3 * DAY
    assert paid.refundable_until == now + flows.DEFAULT_REFUND_PERIOD_SECONDS * NS


def test_paying_a_closed_order_is_rejected() -> None:
    order = new_order()
    closed = ok(flows.close_order(order=order, now=T0 + NS, reason="cancelled")).orders[0]
    decision = flows.pay_order(order=closed, merchant=SHOP, buyer=BUYER, now=T0 + 2 * NS)
    assert decision.error is PaymentError.ORDER_ALREADY_CLOSED
    assert decision.transfers == []
    assert decision.orders == []


def test_paying_an_expired_order_is_rejected_even_before_it_is_closed() -> None:
    order = new_order(timeout_seconds=1800)
    decision = flows.pay_order(order=order, merchant=SHOP, buyer=BUYER, now=T0 + 1800 * NS)
    assert decision.error is PaymentError.ORDER_EXPIRED
    assert decision.transfers == []
    just_in_time = flows.pay_order(order=order, merchant=SHOP, buyer=BUYER, now=T0 + 1799 * NS)
    assert just_in_time.ok


def test_paying_again_by_the_same_buyer_is_a_replay_and_by_another_is_rejected() -> None:
    order = paid_order()
    again = ok(flows.pay_order(order=order, merchant=SHOP, buyer=BUYER, now=T0 + DAY))
    assert again.replayed
    assert again.orders == [order]
    assert again.transfers == []
    other = flows.pay_order(order=order, merchant=SHOP, buyer=OTHER_BUYER, now=T0 + DAY)
    assert other.error is PaymentError.ORDER_ALREADY_PAID
    assert other.transfers == []


def test_paying_with_an_unknown_buyer_is_rejected() -> None:
    decision = flows.pay_order(order=new_order(), merchant=SHOP, buyer=None, now=T0)
    assert decision.error is PaymentError.USER_NOT_FOUND


# ----------------------------------------------------------------------------------- escrow


def test_confirming_receipt_releases_amount_minus_fee_to_merchant_and_fee_to_platform() -> None:
    order = paid_order(mode=PaymentMode.ESCROW, amount=25_00)
    now = T0 + DAY
    decision = ok(flows.confirm_receipt(order=order, buyer_id=BUYER.id, now=now))
    assert decision.transfers == [
        transfer(
            transfer_id(TransferCode.ESCROW_RELEASE, 11, 0),
            ESCROW,
            MERCHANT,
            24_85,
            TransferCode.ESCROW_RELEASE,
            11,
            flags=LINKED,
        ),
        transfer(
            transfer_id(TransferCode.ESCROW_RELEASE, 11, 1), ESCROW, FEES, 15, TransferCode.FEE, 11
        ),
    ]
    assert decision.orders == [
        replace(
            order,
            escrow_state=EscrowState.RELEASED,
            released_at=now,
            auto_confirm_at=0,
            auto_confirm_remaining=0,
        )
    ]
    assert decision.orders[0].status is OrderStatus.TRADE_SUCCESS


def test_auto_confirm_releases_without_a_buyer() -> None:
    order = paid_order(mode=PaymentMode.ESCROW)
    decision = ok(flows.confirm_receipt(order=order, buyer_id=None, now=order.auto_confirm_at))
    assert decision.orders[0].escrow_state is EscrowState.RELEASED
    assert sum(t.amount for t in decision.transfers) == order.amount


def test_confirming_twice_is_rejected() -> None:
    released = released_order()
    decision = flows.confirm_receipt(order=released, buyer_id=BUYER.id, now=T0 + 2 * DAY)
    assert decision.error is PaymentError.ESCROW_ALREADY_RELEASED
    assert decision.transfers == []
    assert decision.orders == []


@pytest.mark.parametrize(
    ("order_kind", "buyer_id", "error"),
    [
        ("direct", BUYER.id, PaymentError.ORDER_NOT_ESCROW),
        ("unpaid_escrow", BUYER.id, PaymentError.ORDER_NOT_PAID),
        ("escrow", OTHER_BUYER.id, PaymentError.NOT_THE_BUYER),
    ],
)
def test_confirming_is_rejected(order_kind: str, buyer_id: int, error: PaymentError) -> None:
    order = {
        "direct": lambda: paid_order(),
        "unpaid_escrow": lambda: new_order(mode=PaymentMode.ESCROW),
        "escrow": lambda: paid_order(mode=PaymentMode.ESCROW),
    }[order_kind]()
    decision = flows.confirm_receipt(order=order, buyer_id=buyer_id, now=T0 + DAY)
    assert decision.error is error
    assert decision.transfers == []


@pytest.mark.parametrize("buyer_id", [BUYER.id, OTHER_BUYER.id, None])
@pytest.mark.parametrize("closed_kind", ["cancelled_unpaid", "refunded_held", "refunded_released"])
def test_confirming_a_closed_escrow_order_is_rejected_as_closed(
    closed_kind: str, buyer_id: int | None
) -> None:
    """Closed is final: whoever asks (the buyer, someone else, the scheduler) gets
    `order_already_closed`, as paying or refunding a closed order does, and nothing moves."""
    if closed_kind == "cancelled_unpaid":
        unpaid = new_order(mode=PaymentMode.ESCROW)
        closed = ok(flows.close_order(order=unpaid, now=T0 + NS, reason="cancelled")).orders[0]
    else:
        paid = (
            paid_order(mode=PaymentMode.ESCROW)
            if closed_kind == "refunded_held"
            else released_order()
        )
        closed = ok(do_refund(paid, paid.amount)).orders[0]
    assert closed.status is OrderStatus.TRADE_CLOSED
    decision = flows.confirm_receipt(order=closed, buyer_id=buyer_id, now=T0 + 3 * DAY)
    assert decision.error is PaymentError.ORDER_ALREADY_CLOSED
    assert decision.message == f"order {closed.id} is closed"
    assert decision.transfers == []
    assert decision.orders == []


def test_refund_request_pauses_auto_confirm_and_rejection_resumes_it() -> None:
    order = paid_order(mode=PaymentMode.ESCROW, now=T0)  # auto-confirm at T0 + 10 days
    assert order.auto_confirm_at == T0 + 10 * DAY
    paused = ok(flows.open_refund_request(order=order, buyer_id=BUYER.id, now=T0 + 3 * DAY))
    assert paused.transfers == []
    [paused_order] = paused.orders
    assert paused_order.refund_request_open
    assert paused_order.auto_confirm_at == 0  # nothing due while the request is open
    assert paused_order.auto_confirm_remaining == 7 * DAY
    resumed = ok(flows.reject_refund_request(order=paused_order, now=T0 + 20 * DAY)).orders[0]
    assert not resumed.refund_request_open
    assert resumed.auto_confirm_at == T0 + 27 * DAY  # the 7 days left, from now
    assert resumed.auto_confirm_remaining == 0


def test_refund_request_rules() -> None:
    order = paid_order(mode=PaymentMode.ESCROW)
    other = flows.open_refund_request(order=order, buyer_id=OTHER_BUYER.id, now=T0 + DAY)
    assert other.error is PaymentError.NOT_THE_BUYER
    none_open = flows.reject_refund_request(order=order, now=T0 + DAY)
    assert none_open.error is PaymentError.NO_REFUND_REQUEST_OPEN
    paused = ok(flows.open_refund_request(order=order, buyer_id=BUYER.id, now=T0 + DAY)).orders[0]
    twice = flows.open_refund_request(order=paused, buyer_id=BUYER.id, now=T0 + 2 * DAY)
    assert twice.error is PaymentError.REFUND_REQUEST_ALREADY_OPEN
    direct = flows.open_refund_request(order=paid_order(), buyer_id=BUYER.id, now=T0 + DAY)
    assert direct.error is PaymentError.ORDER_NOT_ESCROW
    released = flows.open_refund_request(order=released_order(), buyer_id=BUYER.id, now=T0)
    assert released.error is PaymentError.ORDER_NOT_ESCROW


def test_partial_refund_settles_the_refund_request_and_resumes_auto_confirm() -> None:
    order = paid_order(mode=PaymentMode.ESCROW, now=T0)
    paused = ok(flows.open_refund_request(order=order, buyer_id=BUYER.id, now=T0 + 4 * DAY))
    refunded = ok(do_refund(paused.orders[0], 5_00, now=T0 + 8 * DAY)).orders[0]
    assert not refunded.refund_request_open
    assert refunded.auto_confirm_at == T0 + 14 * DAY
    assert refunded.escrow_state is EscrowState.HELD
    assert refunded.status is OrderStatus.TRADE_SUCCESS


def test_confirming_with_an_open_refund_request_releases_and_closes_the_request() -> None:
    order = paid_order(mode=PaymentMode.ESCROW, now=T0)
    paused = ok(flows.open_refund_request(order=order, buyer_id=BUYER.id, now=T0 + DAY))
    released = ok(flows.confirm_receipt(order=paused.orders[0], buyer_id=BUYER.id, now=T0 + DAY))
    assert released.orders[0].refund_request_open is False
    assert released.orders[0].escrow_state is EscrowState.RELEASED


# ---------------------------------------------------------------------------------- refunds


def test_refund_cannot_exceed_amount_paid() -> None:
    order = paid_order(amount=25_00)
    over = do_refund(order, 25_01)
    assert over.error is PaymentError.REFUND_EXCEEDS_AMOUNT_PAID
    assert over.transfers == []
    assert over.orders == []
    assert over.refunds == []
    partly = ok(do_refund(order, 20_00)).orders[0]
    assert partly.refundable_amount == 5_00
    rest_plus_one = do_refund(partly, 5_01, refund_id=22, out_request_no="R-2")
    assert rest_plus_one.error is PaymentError.REFUND_EXCEEDS_AMOUNT_PAID


@pytest.mark.parametrize("amount", [0, -1, 1.5, True])
def test_refund_of_an_invalid_amount_is_rejected(amount: object) -> None:
    decision = do_refund(paid_order(), amount)  # type: ignore[arg-type]
    assert decision.error is PaymentError.INVALID_AMOUNT


def test_refund_of_an_unpaid_or_closed_or_finished_order_is_rejected() -> None:
    unpaid = new_order()
    assert do_refund(unpaid, 1).error is PaymentError.ORDER_NOT_PAID
    closed = ok(flows.close_order(order=unpaid, now=T0, reason="cancelled")).orders[0]
    assert do_refund(closed, 1).error is PaymentError.ORDER_ALREADY_CLOSED
    paid = paid_order()
    finished = ok(flows.finish_trade(order=paid, now=paid.refundable_until)).orders[0]
    assert finished.status is OrderStatus.TRADE_FINISHED
    assert do_refund(finished, 1).error is PaymentError.ORDER_ALREADY_FINISHED


def test_refund_after_the_refund_period_is_rejected_even_before_the_trade_is_finished() -> None:
    paid = paid_order()
    assert do_refund(paid, 1_00, now=paid.refundable_until - 1).ok
    decision = do_refund(paid, 1_00, now=paid.refundable_until)
    assert decision.error is PaymentError.ORDER_ALREADY_FINISHED
    assert decision.transfers == []
    released = released_order()
    late = do_refund(released, 1_00, now=released.refundable_until)
    assert late.error is PaymentError.ORDER_ALREADY_FINISHED


def test_funds_still_in_escrow_can_be_refunded_after_the_refund_period() -> None:
    held = paid_order(mode=PaymentMode.ESCROW)
    decision = ok(do_refund(held, 1_00, now=held.refundable_until + DAY))
    assert [(t.debit_account_id, t.credit_account_id, t.amount) for t in decision.transfers] == [
        (ESCROW, WALLET, 1_00)
    ]


def test_refund_before_release_comes_from_escrow() -> None:
    order = paid_order(mode=PaymentMode.ESCROW, amount=25_00)  # fee 15
    decision = ok(do_refund(order, 10_00, refund_id=21))
    assert decision.transfers == [
        transfer(
            transfer_id(TransferCode.REFUND, 21, 0), ESCROW, WALLET, 10_00, TransferCode.REFUND, 11
        )
    ]
    [refund] = decision.refunds
    assert refund == Refund(
        id=21,
        order_id=11,
        merchant_id=SHOP.id,
        out_request_no="R-1",
        amount=10_00,
        fee_refunded=6,  # 15 * 1000 / 2500
        source="escrow",
        reason="damaged",
        created_at=T0 + 2 * DAY,
    )
    [after] = decision.orders
    assert (after.refunded_amount, after.refunded_fee) == (10_00, 6)
    assert after.status is OrderStatus.TRADE_SUCCESS
    assert after.escrow_state is EscrowState.HELD
    # The release then splits what is left: the fee shrinks to 15 - 6 = 9.
    release = ok(flows.confirm_receipt(order=after, buyer_id=BUYER.id, now=T0 + 3 * DAY))
    assert [(t.debit_account_id, t.credit_account_id, t.amount) for t in release.transfers] == [
        (ESCROW, MERCHANT, 15_00 - 9),
        (ESCROW, FEES, 9),
    ]


def test_refund_after_release_comes_from_merchant_and_returns_fee_proportionally() -> None:
    for order in (paid_order(amount=25_00), released_order(amount=25_00)):  # fee 15 each
        decision = ok(do_refund(order, 10_00, refund_id=21))
        assert decision.transfers == [
            transfer(
                transfer_id(TransferCode.REFUND, 21, 0),
                MERCHANT,
                WALLET,
                10_00 - 6,
                TransferCode.REFUND,
                11,
                flags=LINKED,
            ),
            transfer(
                transfer_id(TransferCode.REFUND, 21, 1),
                FEES,
                WALLET,
                6,
                TransferCode.FEE_REFUND,
                11,
            ),
        ]
        [refund] = decision.refunds
        assert (refund.source, refund.fee_refunded, refund.amount) == ("merchant", 6, 10_00)
        assert decision.orders[0].refunded_fee == 6


def test_fee_refund_rounds_half_even_on_the_total_refunded() -> None:
    # Fee 15 on 2500, refunded in steps of 250: the total returned is half_even(15 * R / 2500).
    order = paid_order(amount=25_00)
    first = ok(do_refund(order, 2_50, refund_id=21))  # 15 * 250 / 2500 = 1.5 -> 2
    assert first.refunds[0].fee_refunded == 2
    second = ok(do_refund(first.orders[0], 2_50, refund_id=22, out_request_no="R-2"))
    assert second.refunds[0].fee_refunded == 1  # total 3.0 -> 3
    third = ok(do_refund(second.orders[0], 2_50, refund_id=23, out_request_no="R-3"))
    assert third.refunds[0].fee_refunded == 1  # total 4.5 -> 4 (tie to even)
    assert third.orders[0].refunded_fee == divide_half_even(15 * 7_50, 25_00)


@pytest.mark.parametrize("mode", ["direct", "escrow_held", "escrow_released"])
def test_full_refund_returns_the_whole_fee_and_closes_the_trade(mode: str) -> None:
    order = {
        "direct": lambda: paid_order(amount=25_00),
        "escrow_held": lambda: paid_order(mode=PaymentMode.ESCROW, amount=25_00),
        "escrow_released": lambda: released_order(amount=25_00),
    }[mode]()
    first = ok(do_refund(order, 7_77, refund_id=21))
    last = ok(do_refund(first.orders[0], 25_00 - 7_77, refund_id=22, out_request_no="R-2"))
    [closed] = last.orders
    assert closed.status is OrderStatus.TRADE_CLOSED
    assert closed.close_reason == "refunded"
    assert closed.closed_at == T0 + 2 * DAY
    assert (closed.refunded_amount, closed.refunded_fee) == (25_00, 15)
    assert first.refunds[0].fee_refunded + last.refunds[0].fee_refunded == 15
    assert closed.refundable_amount == 0
    if mode == "escrow_held":
        assert closed.escrow_state is EscrowState.REFUNDED
        assert all(t.debit_account_id == ESCROW for t in first.transfers + last.transfers)
    else:
        fee_back = [
            t.amount for t in first.transfers + last.transfers if t.debit_account_id == FEES
        ]
        assert sum(fee_back) == 15
    refunded_to_wallet = sum(
        t.amount for t in first.transfers + last.transfers if t.credit_account_id == WALLET
    )
    assert refunded_to_wallet == 25_00
    after = do_refund(closed, 1, refund_id=23, out_request_no="R-3")
    assert after.error is PaymentError.ORDER_ALREADY_CLOSED


@given(
    amount=st.integers(1, 10**9),
    basis_points=st.sampled_from([0, 1, 60, 100, 250, 599, 5_000, 10_000]),
    refunds=st.lists(st.integers(1, 10**9), min_size=1, max_size=12),
    escrow=st.booleans(),
)
def test_several_partial_refunds_never_exceed_the_order(
    amount: int, basis_points: int, refunds: list[int], escrow: bool
) -> None:
    merchant = replace(SHOP, fee_rate_basis_points=basis_points)
    mode = PaymentMode.ESCROW if escrow else PaymentMode.DIRECT
    order = paid_order(amount=amount, merchant=merchant, mode=mode)
    fee = order.fee
    refunded = 0
    returned_fee = 0
    to_wallet = 0
    for number, wanted in enumerate(refunds, start=1):
        wanted = min(wanted, amount) if number % 3 else wanted  # mostly plausible amounts
        decision = do_refund(order, wanted, refund_id=100 + number, out_request_no=f"R-{number}")
        if order.status is OrderStatus.TRADE_CLOSED:
            assert decision.error is PaymentError.ORDER_ALREADY_CLOSED
            continue
        if refunded + wanted > amount:
            assert decision.error is PaymentError.REFUND_EXCEEDS_AMOUNT_PAID
            assert decision.transfers == []
            continue
        ok(decision)
        refunded += wanted
        [refund] = decision.refunds
        assert 0 <= refund.fee_refunded <= wanted
        returned_fee += refund.fee_refunded
        assert returned_fee == divide_half_even(fee * refunded, amount)
        for t in decision.transfers:
            assert t.amount > 0
            assert t.credit_account_id == chart.user_wallet(BUYER.id, CNY)
        to_wallet += sum(t.amount for t in decision.transfers)
        order = decision.orders[0]
        assert order.refunded_amount == refunded <= amount
        assert order.refunded_fee == returned_fee <= fee
    assert to_wallet == refunded
    if refunded == amount:
        assert order.status is OrderStatus.TRADE_CLOSED
        assert returned_fee == fee
    elif escrow:
        # What is left in escrow splits exactly into the merchant's part and the fee kept.
        release = ok(flows.confirm_receipt(order=order, buyer_id=BUYER.id, now=T0 + DAY))
        assert sum(t.amount for t in release.transfers) == amount - refunded
        kept = sum(t.amount for t in release.transfers if t.credit_account_id == FEES)
        assert kept == fee - returned_fee


def test_refund_with_the_same_request_number_is_applied_once() -> None:
    order = paid_order()
    first = ok(do_refund(order, 5_00, refund_id=21))
    [refund] = first.refunds
    again = ok(do_refund(first.orders[0], 5_00, refund_id=0, existing=refund))
    assert again.replayed
    assert again.transfers == []
    assert again.refunds == [refund]
    other = do_refund(first.orders[0], 6_00, refund_id=0, existing=refund)
    assert other.error is PaymentError.REFUND_EXISTS_WITH_DIFFERENT_CONTENT
    assert other.transfers == []


def test_trade_finishes_only_when_nothing_is_held() -> None:
    held = paid_order(mode=PaymentMode.ESCROW)
    assert flows.finish_trade(order=held, now=held.refundable_until).error is not None
    released = released_order()
    finished = ok(flows.finish_trade(order=released, now=released.refundable_until))
    assert finished.orders == [
        replace(released, status=OrderStatus.TRADE_FINISHED, finished_at=released.refundable_until)
    ]
    assert finished.transfers == []


# ----------------------------------------------------------------------------- bank channel


def test_top_up_moves_money_only_when_the_bank_confirms() -> None:
    requested = ok(channel_request(ChannelRequestKind.TOP_UP, amount=100_00, request_id=31))
    assert requested.transfers == []
    [request] = requested.channel_requests
    assert request.status is ChannelRequestStatus.PENDING
    assert request.channel_reference == "PC0100000000000031"
    succeeded = ok(callback(request, True))
    assert succeeded.transfers == [
        transfer(
            transfer_id(TransferCode.TOP_UP, 31), CHANNEL, WALLET, 100_00, TransferCode.TOP_UP, 31
        )
    ]
    assert succeeded.channel_requests[0].status is ChannelRequestStatus.SUCCEEDED
    assert succeeded.channel_requests[0].completed_at == T0 + 5 * NS
    failed = ok(callback(request, False))
    assert failed.transfers == []
    assert failed.channel_requests[0].status is ChannelRequestStatus.FAILED
    assert failed.channel_requests[0].failure_reason == "declined by the bank"


@pytest.mark.parametrize(
    ("kind", "party_kind", "party_id", "account", "code"),
    [
        (ChannelRequestKind.WITHDRAWAL, PartyKind.USER, BUYER.id, WALLET, TransferCode.WITHDRAWAL),
        (ChannelRequestKind.PAYOUT, PartyKind.MERCHANT, SHOP.id, MERCHANT, TransferCode.PAYOUT),
    ],
)
def test_money_out_is_reserved_then_posted_when_the_bank_confirms(
    kind: ChannelRequestKind,
    party_kind: PartyKind,
    party_id: int,
    account: int,
    code: TransferCode,
) -> None:
    requested = ok(
        channel_request(kind, amount=40_00, request_id=31, party_kind=party_kind, party_id=party_id)
    )
    assert requested.transfers == [
        transfer(
            transfer_id(code, 31, 0),
            account,
            CHANNEL,
            40_00,
            code,
            31,
            flags=int(TransferFlags.PENDING),
        )
    ]
    [request] = requested.channel_requests
    posted = ok(callback(request, True))
    assert posted.transfers == [
        Transfer(
            id=transfer_id(code, 31, 1),
            pending_id=transfer_id(code, 31, 0),
            amount=AMOUNT_MAX,
            flags=int(TransferFlags.POST_PENDING_TRANSFER),
        )
    ]


def test_failed_withdrawal_voids_the_reservation() -> None:
    [request] = ok(channel_request(ChannelRequestKind.WITHDRAWAL, request_id=31)).channel_requests
    failed = ok(callback(request, False))
    assert failed.transfers == [
        Transfer(
            id=transfer_id(TransferCode.WITHDRAWAL, 31, 1),
            pending_id=transfer_id(TransferCode.WITHDRAWAL, 31, 0),
            amount=0,
            flags=int(TransferFlags.VOID_PENDING_TRANSFER),
        )
    ]
    assert failed.channel_requests[0].status is ChannelRequestStatus.FAILED


def test_channel_request_again_is_a_replay_and_with_other_content_is_rejected() -> None:
    [request] = ok(channel_request(ChannelRequestKind.WITHDRAWAL)).channel_requests
    again = ok(channel_request(ChannelRequestKind.WITHDRAWAL, request_id=99, existing=request))
    assert again.replayed
    assert again.transfers == []
    assert again.channel_requests == [request]
    for change in ({"amount": 50_01}, {"ledger": USD}):
        other = channel_request(
            ChannelRequestKind.WITHDRAWAL,
            request_id=99,
            existing=request,
            **change,  # type: ignore[arg-type]
        )
        assert other.error is PaymentError.CHANNEL_REQUEST_EXISTS_WITH_DIFFERENT_CONTENT
    for amount in (0, -1):
        invalid = channel_request(ChannelRequestKind.WITHDRAWAL, amount=amount)
        assert invalid.error is PaymentError.INVALID_AMOUNT


@pytest.mark.parametrize("succeeded", [True, False])
@pytest.mark.parametrize("kind", list(ChannelRequestKind))
def test_channel_callback_twice_is_a_replay(kind: ChannelRequestKind, succeeded: bool) -> None:
    [request] = ok(channel_request(kind)).channel_requests
    [answered] = ok(callback(request, succeeded)).channel_requests
    again = ok(callback(answered, succeeded))
    assert again.replayed
    assert again.transfers == []
    assert again.channel_requests == [answered]


@pytest.mark.parametrize("succeeded", [True, False])
@pytest.mark.parametrize("kind", list(ChannelRequestKind))
def test_conflicting_callback_changes_nothing(kind: ChannelRequestKind, succeeded: bool) -> None:
    [request] = ok(channel_request(kind)).channel_requests
    [answered] = ok(callback(request, succeeded)).channel_requests
    conflicting = callback(answered, not succeeded)
    assert conflicting.error is PaymentError.CHANNEL_CALLBACK_CONFLICT
    assert conflicting.transfers == []
    assert conflicting.channel_requests == []
    wrong_amount = callback(request, succeeded, amount=request.amount + 1)
    assert wrong_amount.error is PaymentError.CHANNEL_CALLBACK_CONFLICT
    assert wrong_amount.transfers == []
    assert wrong_amount.channel_requests == []


# ----------------------------------------------------------------------------- transfer ids


def test_transfer_ids_are_deterministic_per_record_and_step() -> None:
    assert transfer_id(TransferCode.REFUND, 21, 1) == (8 << 120) | (21 << 8) | 1
    order = new_order(mode=PaymentMode.DIRECT)
    first = flows.pay_order(order=order, merchant=SHOP, buyer=BUYER, now=T0)
    retried = flows.pay_order(order=order, merchant=SHOP, buyer=BUYER, now=T0 + 5 * NS)
    assert [t.id for t in first.transfers] == [t.id for t in retried.transfers]
    paid = first.orders[0]
    assert [t.id for t in do_refund(paid, 100, refund_id=21).transfers] == [
        t.id for t in do_refund(paid, 100, refund_id=21, now=T0 + 9 * DAY).transfers
    ]


def test_transfer_ids_differ_across_records_steps_and_kinds() -> None:
    ids = [
        transfer_id(code, entity, step)
        for code in TransferCode
        for entity in (1, 2, 255, 256, (1 << 64) - 1)
        for step in (0, 1, 255)
    ]
    assert len(set(ids)) == len(ids)
    # Every transfer of a record's whole life has its own id.
    escrow_order = paid_order(mode=PaymentMode.ESCROW, amount=25_00)
    held_refund = ok(do_refund(escrow_order, 5_00, refund_id=21))
    release = ok(flows.confirm_receipt(order=held_refund.orders[0], buyer_id=BUYER.id, now=T0))
    later_refund = ok(do_refund(release.orders[0], 5_00, refund_id=22, out_request_no="R-2"))
    direct = ok(flows.pay_order(order=new_order(order_id=12), merchant=SHOP, buyer=BUYER, now=T0))
    every = [
        *ok(
            flows.pay_order(
                order=new_order(mode=PaymentMode.ESCROW), merchant=SHOP, buyer=BUYER, now=T0
            )
        ).transfers,
        *held_refund.transfers,
        *release.transfers,
        *later_refund.transfers,
        *direct.transfers,
    ]
    assert len({t.id for t in every}) == len(every) == 1 + 1 + 2 + 2 + 2
