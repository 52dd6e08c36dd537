"""The platform's records: parties, orders, refunds, channel requests and webhook events.

Records are immutable values; a flow returns new versions of the records it changes. Times
are nanoseconds since the Unix epoch (the ledger's unit), amounts integer minor units of the
record's ledger (currency).
"""

from dataclasses import dataclass
from enum import StrEnum


class OrderStatus(StrEnum):
    """Alipay's trade statuses."""

    WAIT_BUYER_PAY = "WAIT_BUYER_PAY"
    # Paid; refunds are possible (from escrow before release, from the merchant after).
    TRADE_SUCCESS = "TRADE_SUCCESS"
    # Paid, and the refund period is over: nothing can change any more.
    TRADE_FINISHED = "TRADE_FINISHED"
    # Unpaid within its time limit, cancelled before payment, or fully refunded.
    TRADE_CLOSED = "TRADE_CLOSED"


class PaymentMode(StrEnum):
    # The buyer's money goes straight to the merchant, minus the fee.
    DIRECT = "direct"
    # Alipay's guaranteed transaction: held in escrow until the buyer confirms receipt or
    # the auto-confirm period ends.
    ESCROW = "escrow"


class EscrowState(StrEnum):
    NONE = "none"
    HELD = "held"
    RELEASED = "released"
    # Returned to the buyer in full before release.
    REFUNDED = "refunded"


class ChannelRequestKind(StrEnum):
    TOP_UP = "top_up"
    WITHDRAWAL = "withdrawal"
    PAYOUT = "payout"


class ChannelRequestStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class PartyKind(StrEnum):
    USER = "user"
    MERCHANT = "merchant"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    created_at: int


@dataclass(frozen=True, slots=True)
class Merchant:
    id: int
    name: str
    # The platform's fee on each payment, in basis points (60 = 0.60%), rounded half-even.
    fee_rate_basis_points: int
    settlement_bank_account: str
    webhook_url: str
    # Shared secret for HMAC-SHA256 webhook signatures.
    webhook_secret: str
    created_at: int
    # Pay the whole available balance out every day at settlement.
    daily_payout: bool = True


@dataclass(frozen=True, slots=True)
class Order:
    id: int
    merchant_id: int
    # The merchant's order number: unique per merchant, the idempotency key of creation.
    out_trade_no: str
    ledger: int
    amount: int
    subject: str
    mode: PaymentMode
    status: OrderStatus
    created_at: int
    # An unpaid order closes at this time.
    expires_at: int
    # Escrow orders: how long after payment the funds release on their own.
    auto_confirm_seconds: int
    # How long after payment refunds stay possible; then the trade finishes.
    refund_period_seconds: int
    buyer_id: int = 0
    paid_at: int = 0
    # The fee on the whole amount, fixed at payment.
    fee: int = 0
    escrow_state: EscrowState = EscrowState.NONE
    # When escrow releases on its own; 0 while paused by an open refund request or not held.
    auto_confirm_at: int = 0
    # While a refund request is open, the auto-confirm time left (nanoseconds).
    auto_confirm_remaining: int = 0
    refund_request_open: bool = False
    released_at: int = 0
    refunded_amount: int = 0
    refunded_fee: int = 0
    # Refunds are possible until then; after it the trade is finished.
    refundable_until: int = 0
    closed_at: int = 0
    close_reason: str = ""
    finished_at: int = 0

    @property
    def refundable_amount(self) -> int:
        return self.amount - self.refunded_amount if self.paid_at else 0


@dataclass(frozen=True, slots=True)
class Refund:
    id: int
    order_id: int
    merchant_id: int
    # The merchant's refund request number: unique per order, the refund's idempotency key.
    out_request_no: str
    amount: int
    # The part of the order's fee returned with this refund (proportional, half-even).
    fee_refunded: int
    # "escrow" before release, "merchant" after.
    source: str
    reason: str
    created_at: int


@dataclass(frozen=True, slots=True)
class ChannelRequest:
    """Money in or out through a bank channel: a top-up, a withdrawal or a payout."""

    id: int
    kind: ChannelRequestKind
    party_kind: PartyKind
    party_id: int
    ledger: int
    amount: int
    status: ChannelRequestStatus
    # The client's idempotency key for this request (unique per party and kind).
    request_no: str
    # The bank's reference, known once the channel accepted the instruction.
    channel_reference: str
    created_at: int
    completed_at: int = 0
    failure_reason: str = ""


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A notification owed to a merchant, written in the same commit as what it reports."""

    id: int
    merchant_id: int
    type: str
    # The JSON body, as it will be signed and sent.
    body: str
    created_at: int
