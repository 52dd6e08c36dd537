"""Stable error codes of the payment platform, and the value every flow returns.

A rejection is a value with a code from this table, documented in docs/payments.md and mapped
to an HTTP status and a CLI exit code at the edge; a rejected command changes nothing.
"""

from dataclasses import dataclass, field
from enum import StrEnum

from paycell.core.payments.records import (
    ChannelRequest,
    Merchant,
    Order,
    Refund,
    User,
    WebhookEvent,
)
from paycell.core.types import Transfer


class PaymentError(StrEnum):
    USER_NOT_FOUND = "user_not_found"
    MERCHANT_NOT_FOUND = "merchant_not_found"
    ORDER_NOT_FOUND = "order_not_found"
    ORDER_EXISTS_WITH_DIFFERENT_CONTENT = "order_exists_with_different_content"
    ORDER_ALREADY_PAID = "order_already_paid"
    ORDER_ALREADY_CLOSED = "order_already_closed"
    ORDER_ALREADY_FINISHED = "order_already_finished"
    ORDER_EXPIRED = "order_expired"
    ORDER_NOT_PAID = "order_not_paid"
    ORDER_NOT_ESCROW = "order_not_escrow"
    ESCROW_ALREADY_RELEASED = "escrow_already_released"
    NOT_THE_BUYER = "not_the_buyer"
    REFUND_EXCEEDS_AMOUNT_PAID = "refund_exceeds_amount_paid"
    REFUND_EXISTS_WITH_DIFFERENT_CONTENT = "refund_exists_with_different_content"
    REFUND_REQUEST_ALREADY_OPEN = "refund_request_already_open"
    NO_REFUND_REQUEST_OPEN = "no_refund_request_open"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    INVALID_AMOUNT = "invalid_amount"
    INVALID_FIELD = "invalid_field"
    UNSUPPORTED_CURRENCY = "unsupported_currency"
    CHANNEL_REQUEST_NOT_FOUND = "channel_request_not_found"
    CHANNEL_REQUEST_EXISTS_WITH_DIFFERENT_CONTENT = "channel_request_exists_with_different_content"
    CHANNEL_CALLBACK_CONFLICT = "channel_callback_conflict"
    INVALID_CHANNEL_SIGNATURE = "invalid_channel_signature"
    NOTHING_TO_PAY_OUT = "nothing_to_pay_out"


@dataclass(slots=True)
class Decision:
    """What a flow decided: records to write and transfers to apply, all or nothing."""

    error: PaymentError | None = None
    message: str = ""
    transfers: list[Transfer] = field(default_factory=list)
    users: list[User] = field(default_factory=list)
    merchants: list[Merchant] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    channel_requests: list[ChannelRequest] = field(default_factory=list)
    events: list[WebhookEvent] = field(default_factory=list)
    # True when the command was a replay of one already applied: nothing to write.
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def rejected(error: PaymentError, message: str) -> Decision:
    return Decision(error=error, message=message)
