"""Errors at the HTTP edge: one table from `PaymentError` to HTTP status, plus the adapter's
own codes, all rendered as `{"error": {"code": ..., "message": ...}}`.

Status rules:
- 404: the thing named does not exist for this caller (another merchant's order is also 404,
  so a merchant learns nothing about orders that are not its own).
- 409: the request is well formed but conflicts with the current state of a record: the
  order is closed, paid, finished or expired; escrow is already released; a number was used
  before with other content; a callback contradicts a final answer. **insufficient_funds is
  409**, not 402: the request is valid, the wallet's balance (state) does not allow it now,
  and the same request may succeed after a top-up. 402 is reserved by RFC 9110.
- 422: the request is well formed JSON but a value is invalid on its own (an amount that is
  not a positive integer, an unknown currency, a refund above what was paid).
- 403: the caller is authenticated but not the party allowed to act (not the buyer).
"""

from http import HTTPStatus
from typing import Final

from starlette.responses import JSONResponse

from paycell.core.payments.outcomes import PaymentError

PAYMENT_ERROR_STATUS: Final[dict[PaymentError, int]] = {
    PaymentError.USER_NOT_FOUND: 404,
    PaymentError.MERCHANT_NOT_FOUND: 404,
    PaymentError.ORDER_NOT_FOUND: 404,
    PaymentError.CHANNEL_REQUEST_NOT_FOUND: 404,
    PaymentError.ORDER_EXISTS_WITH_DIFFERENT_CONTENT: 409,
    PaymentError.ORDER_ALREADY_PAID: 409,
    PaymentError.ORDER_ALREADY_CLOSED: 409,
    PaymentError.ORDER_ALREADY_FINISHED: 409,
    PaymentError.ORDER_EXPIRED: 409,
    PaymentError.ORDER_NOT_PAID: 409,
    PaymentError.ORDER_NOT_ESCROW: 409,
    PaymentError.ESCROW_ALREADY_RELEASED: 409,
    PaymentError.NOT_THE_BUYER: 403,
    PaymentError.REFUND_EXCEEDS_AMOUNT_PAID: 422,
    PaymentError.REFUND_EXISTS_WITH_DIFFERENT_CONTENT: 409,
    PaymentError.REFUND_REQUEST_ALREADY_OPEN: 409,
    PaymentError.NO_REFUND_REQUEST_OPEN: 409,
    PaymentError.INSUFFICIENT_FUNDS: 409,
    PaymentError.INVALID_AMOUNT: 422,
    PaymentError.INVALID_FIELD: 422,
    PaymentError.UNSUPPORTED_CURRENCY: 422,
    PaymentError.CHANNEL_REQUEST_EXISTS_WITH_DIFFERENT_CONTENT: 409,
    PaymentError.CHANNEL_CALLBACK_CONFLICT: 409,
    PaymentError.INVALID_CHANNEL_SIGNATURE: 401,
    PaymentError.NOTHING_TO_PAY_OUT: 409,
}

# The adapter's own codes (requests rejected before they reach the platform).
MALFORMED_JSON: Final = "malformed_json"
INVALID_FIELD: Final = PaymentError.INVALID_FIELD.value
BODY_TOO_LARGE: Final = "body_too_large"
UNAUTHORIZED: Final = "unauthorized"
FORBIDDEN: Final = "forbidden"
NOT_FOUND: Final = "not_found"
METHOD_NOT_ALLOWED: Final = "method_not_allowed"
IDEMPOTENCY_KEY_REUSED: Final = "idempotency_key_reused"
INVALID_SIGNATURE: Final = "invalid_signature"
INTERNAL_ERROR: Final = "internal_error"
WEBHOOK_EVENT_NOT_FOUND: Final = "webhook_event_not_found"
# Load and degradation (docs/operations.md): refused at the edge, before the platform.
OVERLOADED: Final = "overloaded"
RATE_LIMITED: Final = "rate_limited"
DEGRADED: Final = "degraded"
TOO_MANY_ITEMS: Final = "too_many_items"

ADAPTER_ERROR_STATUS: Final[dict[str, int]] = {
    MALFORMED_JSON: 400,
    INVALID_FIELD: 422,
    BODY_TOO_LARGE: 413,
    UNAUTHORIZED: 401,
    FORBIDDEN: 403,
    NOT_FOUND: 404,
    METHOD_NOT_ALLOWED: 405,
    IDEMPOTENCY_KEY_REUSED: 422,
    INVALID_SIGNATURE: 401,
    WEBHOOK_EVENT_NOT_FOUND: 404,
    OVERLOADED: 503,
    RATE_LIMITED: 429,
    DEGRADED: 503,
    TOO_MANY_ITEMS: 413,
    INTERNAL_ERROR: 500,
}

ERROR_DESCRIPTIONS: Final[dict[str, str]] = {
    MALFORMED_JSON: "the body is not a JSON object (or not UTF-8)",
    INVALID_FIELD: "a field or parameter is missing, unknown, of the wrong type or out of range",
    BODY_TOO_LARGE: "the body is larger than the server's limit",
    UNAUTHORIZED: "no API key, or an unknown one",
    FORBIDDEN: "the API key's party may not use this endpoint",
    NOT_FOUND: "no such route",
    METHOD_NOT_ALLOWED: "the route exists but not with this method",
    IDEMPOTENCY_KEY_REUSED: "the Idempotency-Key was used before with another request",
    INVALID_SIGNATURE: "a channel callback whose X-Channel-Signature does not verify",
    WEBHOOK_EVENT_NOT_FOUND: "no such webhook event for this merchant",
    OVERLOADED: "the server is saturated and shed this request (lowest priority class "
    "first); retry after the Retry-After header's seconds",
    RATE_LIMITED: "the API key is over its request rate; retry after Retry-After seconds",
    DEGRADED: "this feature is switched off for now by the operator (payments still work); "
    "Retry-After suggests when to look again",
    TOO_MANY_ITEMS: "a bulk request with more items than its documented limit",
    INTERNAL_ERROR: "a bug: never the answer to bad input",
}

# Every code a client may see, with its status: what the OpenAPI document lists.
ALL_ERROR_STATUS: Final[dict[str, int]] = {
    **{error.value: status for error, status in PAYMENT_ERROR_STATUS.items()},
    **ADAPTER_ERROR_STATUS,
}


class ApiError(Exception):
    """A rejection at the edge: raised anywhere in a request, rendered by one handler."""

    def __init__(
        self, code: str, message: str, status: int | None = None, *, reached_platform: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else ALL_ERROR_STATUS[code]
        # A business outcome of the platform (kept for an Idempotency-Key), not a rejection of
        # the request's form (which keeps nothing, so a corrected retry may reuse the key).
        self.reached_platform = reached_platform


def payment_error(error: PaymentError, message: str) -> ApiError:
    return ApiError(
        error.value,
        message or error.value.replace("_", " "),
        PAYMENT_ERROR_STATUS[error],
        reached_platform=True,
    )


def error_body(code: str, message: str) -> dict[str, object]:
    return {"error": {"code": code, "message": message}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(error.code, error.message), status_code=error.status)


def code_for_status(status: int) -> str:
    """The code for Starlette's own HTTP errors (unknown route, wrong method)."""
    if status == 404:
        return NOT_FOUND
    if status == 405:
        return METHOD_NOT_ALLOWED
    if status == 413:
        return BODY_TOO_LARGE
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_")
    except ValueError:
        return "error"
