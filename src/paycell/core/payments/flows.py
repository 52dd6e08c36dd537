"""The payment flows: each a pure function from records and time to a `Decision`.

A flow validates the command against the records (returning a rejection with a stable code),
then returns the new versions of the records it changes and the ledger transfers that move
the money. It never checks balances: the ledger does, in the same transaction (a wallet's
`debits_must_not_exceed_credits` flag turns an overdraft into `exceeds_credits`, which the
service reports as `insufficient_funds` and nothing is kept).

Transfer ids are derived from the business record and the step (`transfer_id`), so a command
retried after a crash produces the same ids and the ledger's exactly-once rule applies to it.

Rules stated here once (docs/payments.md repeats them):
- **Fee**: `fee_for(amount, merchant.fee_rate_basis_points)`, round-half-even on minor units,
  fixed at payment. Direct payments send `amount - fee` to the merchant and `fee` to the
  platform; escrow payments hold `amount` and split it at release.
- **Fee on refunds**: refunded proportionally. After refunds totalling R of an order of A with
  fee F, the platform keeps `F - half_even(F * R / A)`; a full refund returns the whole fee.
  Before release the fee was never taken, so the refund comes from escrow whole and the fee
  taken at release shrinks; after release the merchant returns `refund - fee_refunded` and the
  platform returns `fee_refunded`.
"""

from dataclasses import replace
from enum import IntEnum
from typing import Final

from paycell.core.limits import NANOSECONDS_PER_SECOND
from paycell.core.money import divide_half_even, fee_for
from paycell.core.payments import chart
from paycell.core.payments.outcomes import Decision, PaymentError, rejected
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

# Alipay's defaults: an unpaid order closes after 15 minutes... paycell's default is longer to
# suit a marketplace checkout; both are per order.
DEFAULT_ORDER_TIMEOUT_SECONDS: Final = 30 * 60
# Escrow funds release on their own 10 days after payment unless the buyer acts first.
DEFAULT_AUTO_CONFIRM_SECONDS: Final = 10 * 24 * 3600
# A paid trade can be refunded for 90 days; then it is TRADE_FINISHED.
DEFAULT_REFUND_PERIOD_SECONDS: Final = 90 * 24 * 3600
# Bounds that keep every derived time within the ledger's 63-bit nanoseconds.
TIMEOUT_SECONDS_MAX: Final = 366 * 24 * 3600
AMOUNT_LIMIT: Final = (1 << 63) - 1
OUT_TRADE_NO_LENGTH_MAX: Final = 64
SUBJECT_LENGTH_MAX: Final = 256


class TransferCode(IntEnum):
    """The ledger `code` of each kind of platform transfer: statements group by it."""

    TOP_UP = 1
    WITHDRAWAL = 2
    PAYOUT = 3
    PAYMENT = 4
    FEE = 5
    ESCROW_HOLD = 6
    ESCROW_RELEASE = 7
    REFUND = 8
    FEE_REFUND = 9


def transfer_id(code: TransferCode, entity_id: int, step: int = 0) -> int:
    """A ledger transfer id derived from the business record it belongs to and the step.

    Layout: code (8 bits) | entity id (64 bits) | step (8 bits), so a retried command maps
    to the same ids and the ledger applies it once.
    """
    assert 0 < entity_id < (1 << 64)
    assert 0 <= step < 256
    return (int(code) << 120) | (entity_id << 8) | step


def _transfer(
    identifier: int,
    debit: int,
    credit: int,
    amount: int,
    ledger: int,
    code: TransferCode,
    reference: int,
    *,
    flags: int = 0,
    pending_id: int = 0,
) -> Transfer:
    return Transfer(
        id=identifier,
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        pending_id=pending_id,
        user_data_64=reference,
        ledger=ledger,
        code=int(code),
        flags=flags,
    )


def _linked(transfers: list[Transfer]) -> list[Transfer]:
    """Chain the transfers so they apply all together or not at all."""
    return [
        t._replace(flags=t.flags | int(TransferFlags.LINKED)) if i < len(transfers) - 1 else t
        for i, t in enumerate(transfers)
    ]


def _seconds(seconds: int) -> int:
    return seconds * NANOSECONDS_PER_SECOND


def _amount_is_valid(amount: int) -> bool:
    return type(amount) is int and 0 < amount <= AMOUNT_LIMIT


# ------------------------------------------------------------------------------------ orders


def create_order(
    *,
    merchant: Merchant | None,
    existing: Order | None,
    new_order_id: int,
    out_trade_no: str,
    ledger: int,
    amount: int,
    subject: str,
    mode: PaymentMode,
    timeout_seconds: int,
    auto_confirm_seconds: int,
    refund_period_seconds: int,
    now: int,
) -> Decision:
    """A merchant's order, WAIT_BUYER_PAY; the same out_trade_no and content returns it again."""
    if merchant is None:
        return rejected(PaymentError.MERCHANT_NOT_FOUND, "no such merchant")
    if not _amount_is_valid(amount):
        return rejected(PaymentError.INVALID_AMOUNT, "amount must be a positive integer")
    if len(subject) > SUBJECT_LENGTH_MAX:
        return rejected(
            PaymentError.INVALID_FIELD, f"subject must be at most {SUBJECT_LENGTH_MAX} characters"
        )
    if not 0 < len(out_trade_no) <= OUT_TRADE_NO_LENGTH_MAX:
        return rejected(PaymentError.INVALID_FIELD, "out_trade_no must be 1 to 64 characters")
    for name, seconds in (
        ("timeout_seconds", timeout_seconds),
        ("auto_confirm_seconds", auto_confirm_seconds),
        ("refund_period_seconds", refund_period_seconds),
    ):
        if not 0 < seconds <= TIMEOUT_SECONDS_MAX:
            return rejected(
                PaymentError.INVALID_FIELD, f"{name} must be between 1 and {TIMEOUT_SECONDS_MAX}"
            )
    if existing is not None:
        same = (
            existing.ledger == ledger
            and existing.amount == amount
            and existing.subject == subject
            and existing.mode == mode
        )
        if not same:
            return rejected(
                PaymentError.ORDER_EXISTS_WITH_DIFFERENT_CONTENT,
                f"order {out_trade_no!r} already exists with a different amount, currency, "
                "subject or mode",
            )
        return Decision(orders=[existing], replayed=True)
    order = Order(
        id=new_order_id,
        merchant_id=merchant.id,
        out_trade_no=out_trade_no,
        ledger=ledger,
        amount=amount,
        subject=subject,
        mode=mode,
        status=OrderStatus.WAIT_BUYER_PAY,
        created_at=now,
        expires_at=now + _seconds(timeout_seconds),
        auto_confirm_seconds=auto_confirm_seconds,
        refund_period_seconds=refund_period_seconds,
    )
    return Decision(orders=[order])


def _payable(order: Order, now: int) -> Decision | None:
    if order.status is OrderStatus.TRADE_CLOSED:
        return rejected(PaymentError.ORDER_ALREADY_CLOSED, f"order {order.id} is closed")
    if order.status is not OrderStatus.WAIT_BUYER_PAY:
        return rejected(PaymentError.ORDER_ALREADY_PAID, f"order {order.id} is already paid")
    if now >= order.expires_at:
        return rejected(PaymentError.ORDER_EXPIRED, f"order {order.id} expired unpaid")
    return None


def pay_order(*, order: Order, merchant: Merchant, buyer: User | None, now: int) -> Decision:
    """The buyer pays from their wallet: to the merchant (direct) or into escrow."""
    if buyer is None:
        return rejected(PaymentError.USER_NOT_FOUND, "no such buyer")
    if order.buyer_id == buyer.id and order.status in (
        OrderStatus.TRADE_SUCCESS,
        OrderStatus.TRADE_FINISHED,
    ):
        # The same buyer paying again (a retry after a lost response): the payment stands.
        return Decision(orders=[order], replayed=True)
    problem = _payable(order, now)
    if problem is not None:
        return problem
    ledger = order.ledger
    wallet = chart.user_wallet(buyer.id, ledger)
    fee = fee_for(order.amount, merchant.fee_rate_basis_points)
    refund_period = _seconds(order.refund_period_seconds)
    if order.mode is PaymentMode.DIRECT:
        legs = [
            _transfer(
                transfer_id(TransferCode.PAYMENT, order.id),
                wallet,
                chart.merchant_balance(merchant.id, ledger),
                order.amount - fee,
                ledger,
                TransferCode.PAYMENT,
                order.id,
            ),
            _transfer(
                transfer_id(TransferCode.FEE, order.id),
                wallet,
                chart.fee_revenue(ledger),
                fee,
                ledger,
                TransferCode.FEE,
                order.id,
            ),
        ]
        paid = replace(
            order,
            status=OrderStatus.TRADE_SUCCESS,
            buyer_id=buyer.id,
            paid_at=now,
            fee=fee,
            refundable_until=now + refund_period,
        )
    else:
        legs = [
            _transfer(
                transfer_id(TransferCode.ESCROW_HOLD, order.id),
                wallet,
                chart.escrow(ledger),
                order.amount,
                ledger,
                TransferCode.ESCROW_HOLD,
                order.id,
            )
        ]
        paid = replace(
            order,
            status=OrderStatus.TRADE_SUCCESS,
            buyer_id=buyer.id,
            paid_at=now,
            fee=fee,
            escrow_state=EscrowState.HELD,
            auto_confirm_at=now + _seconds(order.auto_confirm_seconds),
            refundable_until=now + refund_period,
        )
    return Decision(transfers=_linked([t for t in legs if t.amount > 0]), orders=[paid])


def close_order(*, order: Order, now: int, reason: str) -> Decision:
    """Close an unpaid order (cancelled by the merchant, or expired)."""
    if order.status is OrderStatus.TRADE_CLOSED:
        return Decision(orders=[order], replayed=True)
    if order.status is not OrderStatus.WAIT_BUYER_PAY:
        return rejected(PaymentError.ORDER_ALREADY_PAID, f"order {order.id} is paid; refund it")
    closed = replace(order, status=OrderStatus.TRADE_CLOSED, closed_at=now, close_reason=reason)
    return Decision(orders=[closed])


def _release_legs(order: Order) -> list[Transfer]:
    ledger = order.ledger
    fee_kept = order.fee - order.refunded_fee
    to_merchant = order.amount - order.refunded_amount - fee_kept
    assert to_merchant >= 0
    assert fee_kept >= 0
    legs = [
        _transfer(
            transfer_id(TransferCode.ESCROW_RELEASE, order.id, 0),
            chart.escrow(ledger),
            chart.merchant_balance(order.merchant_id, ledger),
            to_merchant,
            ledger,
            TransferCode.ESCROW_RELEASE,
            order.id,
        ),
        _transfer(
            transfer_id(TransferCode.ESCROW_RELEASE, order.id, 1),
            chart.escrow(ledger),
            chart.fee_revenue(ledger),
            fee_kept,
            ledger,
            TransferCode.FEE,
            order.id,
        ),
    ]
    return _linked([t for t in legs if t.amount > 0])


def confirm_receipt(*, order: Order, buyer_id: int | None, now: int) -> Decision:
    """Release escrow to the merchant (minus the fee): the buyer confirmed, or time ran out.

    `buyer_id` None means the scheduler's auto-confirm. A closed order (cancelled or expired
    unpaid, or fully refunded) is rejected as closed whoever asks, as `pay_order` and `refund`
    reject it.
    """
    if order.mode is not PaymentMode.ESCROW:
        return rejected(PaymentError.ORDER_NOT_ESCROW, f"order {order.id} is not an escrow order")
    if order.status is OrderStatus.TRADE_CLOSED:
        return rejected(PaymentError.ORDER_ALREADY_CLOSED, f"order {order.id} is closed")
    if order.status is OrderStatus.WAIT_BUYER_PAY:
        return rejected(PaymentError.ORDER_NOT_PAID, f"order {order.id} is not paid")
    if buyer_id is not None and buyer_id != order.buyer_id:
        return rejected(PaymentError.NOT_THE_BUYER, "only the buyer can confirm receipt")
    if order.escrow_state is not EscrowState.HELD:
        return rejected(
            PaymentError.ESCROW_ALREADY_RELEASED,
            f"order {order.id} has nothing in escrow ({order.escrow_state.value})",
        )
    released = replace(
        order,
        escrow_state=EscrowState.RELEASED,
        released_at=now,
        auto_confirm_at=0,
        auto_confirm_remaining=0,
        refund_request_open=False,
    )
    return Decision(transfers=_release_legs(order), orders=[released])


def open_refund_request(*, order: Order, buyer_id: int, now: int) -> Decision:
    """The buyer asks for a refund of an escrow order: auto-confirm pauses until it is settled."""
    if order.mode is not PaymentMode.ESCROW or order.escrow_state is not EscrowState.HELD:
        return rejected(PaymentError.ORDER_NOT_ESCROW, "only funds held in escrow can be disputed")
    if buyer_id != order.buyer_id:
        return rejected(PaymentError.NOT_THE_BUYER, "only the buyer can request a refund")
    if order.refund_request_open:
        return rejected(PaymentError.REFUND_REQUEST_ALREADY_OPEN, "a refund request is open")
    paused = replace(
        order,
        refund_request_open=True,
        auto_confirm_remaining=max(order.auto_confirm_at - now, 0),
        auto_confirm_at=0,
    )
    return Decision(orders=[paused])


def _resume_auto_confirm(order: Order, now: int) -> Order:
    if not order.refund_request_open:
        return order
    return replace(
        order,
        refund_request_open=False,
        auto_confirm_at=now + order.auto_confirm_remaining,
        auto_confirm_remaining=0,
    )


def reject_refund_request(*, order: Order, now: int) -> Decision:
    """The merchant declines the buyer's refund request: auto-confirm resumes where it paused."""
    if not order.refund_request_open:
        return rejected(PaymentError.NO_REFUND_REQUEST_OPEN, "no refund request is open")
    return Decision(orders=[_resume_auto_confirm(order, now)])


def refund(
    *,
    order: Order,
    existing: Refund | None,
    new_refund_id: int,
    out_request_no: str,
    amount: int,
    reason: str,
    now: int,
) -> Decision:
    """Refund part or all of a paid order; several refunds per order, each with its number."""
    if existing is not None:
        if existing.amount != amount:
            return rejected(
                PaymentError.REFUND_EXISTS_WITH_DIFFERENT_CONTENT,
                f"refund {out_request_no!r} already exists with amount {existing.amount}",
            )
        return Decision(orders=[order], refunds=[existing], replayed=True)
    if not _amount_is_valid(amount):
        return rejected(PaymentError.INVALID_AMOUNT, "amount must be a positive integer")
    if order.status is OrderStatus.WAIT_BUYER_PAY:
        return rejected(PaymentError.ORDER_NOT_PAID, f"order {order.id} is not paid")
    if order.status is OrderStatus.TRADE_CLOSED:
        return rejected(PaymentError.ORDER_ALREADY_CLOSED, f"order {order.id} is closed")
    if order.status is OrderStatus.TRADE_FINISHED or (
        order.escrow_state is not EscrowState.HELD and 0 < order.refundable_until <= now
    ):
        # Past the refund period the trade is over, whether or not the scheduler has marked it
        # TRADE_FINISHED yet. Funds still in escrow can always go back to the buyer.
        return rejected(
            PaymentError.ORDER_ALREADY_FINISHED, f"order {order.id} is past its refund period"
        )
    if amount > order.refundable_amount:
        return rejected(
            PaymentError.REFUND_EXCEEDS_AMOUNT_PAID,
            f"refund of {amount} exceeds the {order.refundable_amount} still refundable",
        )
    refunded_amount = order.refunded_amount + amount
    refunded_fee_total = divide_half_even(order.fee * refunded_amount, order.amount)
    fee_refunded = refunded_fee_total - order.refunded_fee
    ledger = order.ledger
    wallet = chart.user_wallet(order.buyer_id, ledger)
    if order.escrow_state is EscrowState.HELD:
        source = "escrow"
        legs = [
            _transfer(
                transfer_id(TransferCode.REFUND, new_refund_id, 0),
                chart.escrow(ledger),
                wallet,
                amount,
                ledger,
                TransferCode.REFUND,
                order.id,
            )
        ]
    else:
        source = "merchant"
        legs = [
            _transfer(
                transfer_id(TransferCode.REFUND, new_refund_id, 0),
                chart.merchant_balance(order.merchant_id, ledger),
                wallet,
                amount - fee_refunded,
                ledger,
                TransferCode.REFUND,
                order.id,
            ),
            _transfer(
                transfer_id(TransferCode.REFUND, new_refund_id, 1),
                chart.fee_revenue(ledger),
                wallet,
                fee_refunded,
                ledger,
                TransferCode.FEE_REFUND,
                order.id,
            ),
        ]
    updated = replace(
        _resume_auto_confirm(order, now),
        refunded_amount=refunded_amount,
        refunded_fee=refunded_fee_total,
    )
    if refunded_amount == order.amount:
        updated = replace(
            updated,
            status=OrderStatus.TRADE_CLOSED,
            closed_at=now,
            close_reason="refunded",
            auto_confirm_at=0,
            auto_confirm_remaining=0,
            refund_request_open=False,
            escrow_state=(
                EscrowState.REFUNDED
                if order.escrow_state is EscrowState.HELD
                else order.escrow_state
            ),
        )
    record = Refund(
        id=new_refund_id,
        order_id=order.id,
        merchant_id=order.merchant_id,
        out_request_no=out_request_no,
        amount=amount,
        fee_refunded=fee_refunded,
        source=source,
        reason=reason,
        created_at=now,
    )
    return Decision(
        transfers=_linked([t for t in legs if t.amount > 0]), orders=[updated], refunds=[record]
    )


def finish_trade(*, order: Order, now: int) -> Decision:
    """The refund period is over: TRADE_SUCCESS becomes TRADE_FINISHED."""
    if order.status is not OrderStatus.TRADE_SUCCESS or order.escrow_state is EscrowState.HELD:
        return rejected(PaymentError.ORDER_NOT_PAID, f"order {order.id} cannot finish now")
    return Decision(orders=[replace(order, status=OrderStatus.TRADE_FINISHED, finished_at=now)])


# ---------------------------------------------------------------------------- bank channel


def _party_account(party_kind: PartyKind, party_id: int, ledger: int) -> int:
    if party_kind is PartyKind.USER:
        return chart.user_wallet(party_id, ledger)
    return chart.merchant_balance(party_id, ledger)


def request_channel_transfer(
    *,
    kind: ChannelRequestKind,
    party_kind: PartyKind,
    party_id: int,
    existing: ChannelRequest | None,
    new_request_id: int,
    request_no: str,
    ledger: int,
    amount: int,
    channel_number: int,
    now: int,
) -> Decision:
    """Start a top-up, withdrawal or payout. Money out is reserved now (a pending transfer to
    the channel account) and posted or voided when the bank answers."""
    if existing is not None:
        if existing.amount != amount or existing.ledger != ledger:
            return rejected(
                PaymentError.CHANNEL_REQUEST_EXISTS_WITH_DIFFERENT_CONTENT,
                f"request {request_no!r} already exists with other content",
            )
        return Decision(channel_requests=[existing], replayed=True)
    if not _amount_is_valid(amount):
        return rejected(PaymentError.INVALID_AMOUNT, "amount must be a positive integer")
    request = ChannelRequest(
        id=new_request_id,
        kind=kind,
        party_kind=party_kind,
        party_id=party_id,
        ledger=ledger,
        amount=amount,
        status=ChannelRequestStatus.PENDING,
        request_no=request_no,
        channel_reference=f"PC{channel_number:02d}{new_request_id:014d}",
        created_at=now,
    )
    transfers: list[Transfer] = []
    if kind is not ChannelRequestKind.TOP_UP:
        code = (
            TransferCode.WITHDRAWAL
            if kind is ChannelRequestKind.WITHDRAWAL
            else TransferCode.PAYOUT
        )
        transfers.append(
            _transfer(
                transfer_id(code, new_request_id, 0),
                _party_account(party_kind, party_id, ledger),
                chart.channel_settlement(channel_number, ledger),
                amount,
                ledger,
                code,
                new_request_id,
                flags=TransferFlags.PENDING,
            )
        )
    return Decision(transfers=transfers, channel_requests=[request])


def channel_callback(
    *,
    request: ChannelRequest,
    succeeded: bool,
    amount: int,
    channel_number: int,
    now: int,
    failure_reason: str = "",
) -> Decision:
    """The bank's asynchronous answer. Idempotent: the same answer twice is a replay; a
    different answer after a final one is a conflict and changes nothing."""
    outcome = ChannelRequestStatus.SUCCEEDED if succeeded else ChannelRequestStatus.FAILED
    if amount != request.amount:
        return rejected(
            PaymentError.CHANNEL_CALLBACK_CONFLICT,
            f"callback amount {amount} differs from the request's {request.amount}",
        )
    if request.status is not ChannelRequestStatus.PENDING:
        if request.status is outcome:
            return Decision(channel_requests=[request], replayed=True)
        return rejected(
            PaymentError.CHANNEL_CALLBACK_CONFLICT,
            f"request {request.id} already {request.status.value}; callback says {outcome.value}",
        )
    ledger = request.ledger
    transfers: list[Transfer] = []
    if request.kind is ChannelRequestKind.TOP_UP:
        if succeeded:
            transfers.append(
                _transfer(
                    transfer_id(TransferCode.TOP_UP, request.id),
                    chart.channel_settlement(channel_number, ledger),
                    _party_account(request.party_kind, request.party_id, ledger),
                    request.amount,
                    ledger,
                    TransferCode.TOP_UP,
                    request.id,
                )
            )
    else:
        code = (
            TransferCode.WITHDRAWAL
            if request.kind is ChannelRequestKind.WITHDRAWAL
            else TransferCode.PAYOUT
        )
        flag = (
            TransferFlags.POST_PENDING_TRANSFER
            if succeeded
            else TransferFlags.VOID_PENDING_TRANSFER
        )
        transfers.append(
            Transfer(
                id=transfer_id(code, request.id, 1),
                pending_id=transfer_id(code, request.id, 0),
                amount=(1 << 128) - 1 if succeeded else 0,
                flags=int(flag),
            )
        )
    finished = replace(
        request,
        status=outcome,
        completed_at=now,
        failure_reason="" if succeeded else (failure_reason or "declined by the bank"),
    )
    return Decision(transfers=transfers, channel_requests=[finished])
