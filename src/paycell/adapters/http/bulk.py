"""POST /v1/orders/bulk-pay: many payments in one request, for aggregators.

Authorization: a merchant cannot debit arbitrary users. Each item carries the buyer's
one-time **payment code** (Alipay's bar-code "付款码": 18 digits, issued to the buyer by
`POST /alipay/buyer/payment-codes` with the buyer's own key, valid 120 s, usable once), exactly
what `alipay.trade.pay` (scene bar_code) redeems. The code is the buyer's consent to one
payment; nothing else names a buyer. Each item is `create order` (idempotent by
`out_trade_no`) + `redeem the code` + `pay from the buyer's wallet`, as bar-code pay does:

- a refused item changes nothing: its code is given back and an order it created is closed;
- an item retried after success (same out_trade_no and code) answers the paid order again
  (`replayed: true`), so a whole bulk request is safe to resend; an Idempotency-Key on the
  request replays the first response byte for byte.

Each item gets its own result (`status` as the HTTP status the single call would have had,
`code`, `message`, the order when paid); the request itself is 200 once its form is valid.
At most BULK_ITEMS_MAX items (413 too_many_items) and BULK_BODY_LIMIT_BYTES bytes (413).
"""

from typing import Any, Final

from paycell.adapters.alipay.gateway import AlipayGateway
from paycell.adapters.alipay.store import PaymentCode
from paycell.adapters.http import render
from paycell.adapters.http.auth import Role
from paycell.adapters.http.errors import (
    INVALID_FIELD,
    PAYMENT_ERROR_STATUS,
    TOO_MANY_ITEMS,
    ApiError,
)
from paycell.adapters.http.metrics import Metrics
from paycell.adapters.http.routing import Call, Operation, Reply
from paycell.adapters.http.validation import Field, check_value, parse_json_object
from paycell.core.currency import currency_for_ledger
from paycell.core.payments.flows import OUT_TRADE_NO_LENGTH_MAX
from paycell.core.payments.outcomes import PaymentError
from paycell.core.payments.records import OrderStatus
from paycell.service.platform import OrderPayment

BULK_PATH: Final = "/v1/orders/bulk-pay"
# 1,000 items: ~150 KB of JSON, about a second of platform work at ~1 ms a payment: big
# enough to amortize a round trip, small enough that one request never holds the server long.
BULK_ITEMS_MAX: Final = 1_000
# 1,000 items of at most ~900 bytes each (long subjects) fit.
BULK_BODY_LIMIT_BYTES: Final = 1024 * 1024
PAYMENT_CODE_LENGTH_MAX: Final = 32
INVALID_PAYMENT_CODE: Final = "invalid_payment_code"
DUPLICATE_ITEM: Final = "duplicate_item"
OK: Final = "ok"
_INVALID_CODE: Final = "the payment code is invalid, used or expired"

ITEM_FIELDS: Final = (
    Field(
        "out_trade_no",
        "string",
        "the merchant's order number, unique per merchant",
        max_length=OUT_TRADE_NO_LENGTH_MAX,
        example="T-1",
    ),
    Field("amount", "integer", "integer minor units", example=25_00),
    Field("currency", "string", "ISO 4217 code (default CNY)", False, 3, example="CNY"),
    Field("subject", "string", "what is sold", False, example="Oolong tea"),
    Field(
        "payment_code",
        "string",
        "the buyer's one-time payment code (POST /alipay/buyer/payment-codes)",
        max_length=PAYMENT_CODE_LENGTH_MAX,
        example="281234567890123456",
    ),
)
# Codes an item can answer (besides `ok`), for the OpenAPI document.
ITEM_CODES: Final = (
    INVALID_FIELD,
    INVALID_PAYMENT_CODE,
    DUPLICATE_ITEM,
    PaymentError.INVALID_AMOUNT.value,
    PaymentError.UNSUPPORTED_CURRENCY.value,
    PaymentError.ORDER_EXISTS_WITH_DIFFERENT_CONTENT.value,
    PaymentError.ORDER_ALREADY_PAID.value,
    PaymentError.ORDER_ALREADY_CLOSED.value,
    PaymentError.ORDER_EXPIRED.value,
    PaymentError.INSUFFICIENT_FUNDS.value,
    PaymentError.USER_NOT_FOUND.value,
    PaymentError.MERCHANT_NOT_FOUND.value,
)

ITEM_RESULT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "index": {"type": "integer", "description": "the item's position in `items`"},
        "out_trade_no": {"type": "string"},
        "status": {
            "type": "integer",
            "description": "the status the single payment would have answered",
        },
        "code": {"type": "string", "enum": [OK, *ITEM_CODES]},
        "message": {"type": "string"},
        "replayed": {"type": "boolean", "description": "already paid by an earlier request"},
        "order": {"oneOf": [{"$ref": "#/components/schemas/Order"}, {"type": "null"}]},
    },
    "required": ["index", "out_trade_no", "status", "code", "message", "replayed", "order"],
}
RESPONSE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "object": {"const": "bulk_payment"},
        "paid": {"type": "integer", "description": "items paid (including replays)"},
        "failed": {"type": "integer"},
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/BulkPayItemResult"}},
    },
    "required": ["object", "paid", "failed", "results"],
}
REQUEST_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": BULK_ITEMS_MAX,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    f.name: {"type": f.kind, "description": f.description} for f in ITEM_FIELDS
                },
                "required": [f.name for f in ITEM_FIELDS if f.required],
            },
        }
    },
    "required": ["items"],
}


class _ItemError(Exception):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _refused(error: PaymentError | None, message: str) -> _ItemError:
    assert error is not None
    return _ItemError(
        error.value, message or error.value.replace("_", " "), PAYMENT_ERROR_STATUS[error]
    )


def _parse_item(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _ItemError(INVALID_FIELD, "an item must be a JSON object", 422)
    known = {f.name for f in ITEM_FIELDS}
    for name in value:
        if name not in known:
            raise _ItemError(INVALID_FIELD, f"{name}: is not a field of an item", 422)
    item: dict[str, object] = {}
    for field in ITEM_FIELDS:
        if value.get(field.name) is None:
            if field.required:
                raise _ItemError(INVALID_FIELD, f"{field.name}: is required", 422)
            continue
        try:
            item[field.name] = check_value(field, value[field.name])
        except ApiError as problem:
            raise _ItemError(INVALID_FIELD, problem.message, 422) from None
    return item


def bulk_operations(gateway: AlipayGateway, metrics: Metrics) -> tuple[Operation, ...]:
    def checked_items(
        call: Call, items: list[object], results: list[dict[str, object]]
    ) -> list[tuple[dict[str, object], dict[str, object]]]:
        """Each item's form, uniqueness and currency checked: (result, item) for those that
        passed; the others' results say why they did not."""
        enabled = call.platform.config.currencies
        seen_numbers: set[str] = set()
        seen_codes: set[str] = set()
        passed: list[tuple[dict[str, object], dict[str, object]]] = []
        for index, raw_item in enumerate(items):
            number = raw_item.get("out_trade_no") if isinstance(raw_item, dict) else None
            result: dict[str, object] = {
                "index": index,
                "out_trade_no": number if isinstance(number, str) else "",
                "replayed": False,
                "order": None,
            }
            results.append(result)
            try:
                item = _parse_item(raw_item)
                key = str(item["out_trade_no"])
                code_text = str(item["payment_code"])
                if key in seen_numbers or code_text in seen_codes:
                    raise _ItemError(
                        DUPLICATE_ITEM, "out_trade_no or payment_code repeats an earlier item", 422
                    )
                seen_numbers.add(key)
                seen_codes.add(code_text)
                currency = str(item.get("currency") or "CNY").upper()
                if currency not in enabled:
                    raise _refused(
                        PaymentError.UNSUPPORTED_CURRENCY, f"currency {currency!r} is not enabled"
                    )
                item["currency"] = currency
            except _ItemError as problem:
                result.update(status=problem.status, code=problem.code, message=problem.message)
                continue
            passed.append((result, item))
        return passed

    def replayed_order(
        call: Call, item: dict[str, object], code: PaymentCode
    ) -> dict[str, object] | None:
        """The order this used code already paid for this very item, if it did (a resent
        item answers its paid order again).

        A code used with no order recorded (order_id 0) may have paid it: the request that
        paid stopped between the payment's commit and recording its codes. But such a code
        may also be in flight in another request, or have been taken by a request that
        stopped before paying. It counts only for an order that is paid and not refunded, by
        the code's buyer, for the item's amount and currency, paid after the code was taken.
        """
        existing = call.platform.get_order_by_out_trade_no(
            call.caller.party_id, str(item["out_trade_no"])
        )
        if (
            existing is None
            or existing.buyer_id != code.user_id
            or existing.amount != item["amount"]
            or currency_for_ledger(existing.ledger).code != item["currency"]
        ):
            return None
        if code.order_id == existing.id:
            paid_with_it = existing.status is not OrderStatus.WAIT_BUYER_PAY
        else:
            paid_with_it = (
                code.order_id == 0
                and existing.status in (OrderStatus.TRADE_SUCCESS, OrderStatus.TRADE_FINISHED)
                and code.used_at <= existing.paid_at
            )
        return render.record(existing, "order") if paid_with_it else None

    def reserve(
        call: Call, checked: list[tuple[dict[str, object], dict[str, object]]]
    ) -> list[tuple[dict[str, object], OrderPayment, str]]:
        """Take the payment codes of the checked items, all in the caller's transaction of
        the gateway's store, with one lookup and one update for the whole request. Items
        already paid with their code answer at once (replayed); items whose code is unknown,
        used or expired answer invalid_payment_code. The rest: (result, payment, code)."""
        store = gateway.store
        now = call.platform.clock()
        codes = store.payment_codes([str(item["payment_code"]) for _, item in checked])
        usable: list[tuple[dict[str, object], dict[str, object], PaymentCode]] = []
        for result, item in checked:
            code = codes.get(str(item["payment_code"]))
            if code is not None and code.used_at:
                replay = replayed_order(call, item, code)
                if replay is not None:
                    result.update(status=200, code=OK, message="paid", replayed=True, order=replay)
                    continue
            if code is None or code.used_at or code.expires_at <= now:
                result.update(status=422, code=INVALID_PAYMENT_CODE, message=_INVALID_CODE)
                continue
            usable.append((result, item, code))
        taken = store.use_payment_codes([code.code for _, _, code in usable], now)
        reserved: list[tuple[dict[str, object], OrderPayment, str]] = []
        for result, item, code in usable:
            if code.code not in taken:  # another request took it in the meantime
                result.update(status=422, code=INVALID_PAYMENT_CODE, message=_INVALID_CODE)
                continue
            amount = item["amount"]
            assert isinstance(amount, int)
            payment = OrderPayment(
                str(item["out_trade_no"]),
                amount,
                code.user_id,
                str(item["currency"]),
                str(item.get("subject", "")),
            )
            reserved.append((result, payment, code.code))
        return reserved

    def bulk_pay(call: Call) -> Reply:
        data = parse_json_object(call.raw_body)
        for name in data:
            if name != "items":
                raise ApiError(INVALID_FIELD, f"{name}: is not a field of this request")
        items = data.get("items")
        if not isinstance(items, list) or not items:
            raise ApiError(INVALID_FIELD, "items: must be a non-empty array of payments")
        if len(items) > BULK_ITEMS_MAX:
            raise ApiError(
                TOO_MANY_ITEMS, f"items: at most {BULK_ITEMS_MAX} per request, got {len(items)}"
            )
        results: list[dict[str, object]] = []
        checked = checked_items(call, items, results)
        # The payment codes are taken in one transaction of the gateway's store, and marked
        # paid or given back in another: two commits for the whole request, not two per item.
        # No platform write happens while that store's transaction is open.
        with gateway.store.transaction():
            reserved = reserve(call, checked)
        # One unit of work and one commit for every reserved payment (group commit); each
        # still applies wholly or not at all.
        try:
            decisions = call.platform.create_and_pay_orders(
                call.caller.party_id, [payment for _, payment, _ in reserved]
            )
        except BaseException:
            # The group rolled back whole: give every code back before reporting the failure.
            with gateway.store.transaction():
                gateway.store.release_payment_codes([code for _, _, code in reserved])
            raise
        # Codes of refused items, and of items whose order an earlier request had paid: the
        # buyer's consent was not used, so the code stays the buyer's to pay with.
        given_back: list[str] = []
        paid_codes: list[tuple[str, int]] = []
        for (result, _payment, code_text), decision in zip(reserved, decisions, strict=True):
            if decision.error is not None:
                given_back.append(code_text)
                refusal = _refused(decision.error, decision.message)
                result.update(status=refusal.status, code=refusal.code, message=refusal.message)
                continue
            paid_order = decision.orders[0]
            if decision.replayed:
                given_back.append(code_text)
            else:
                paid_codes.append((code_text, paid_order.id))
            result.update(
                status=200 if decision.replayed else 201,
                code=OK,
                message="paid",
                replayed=decision.replayed,
                order=render.record(paid_order, "order"),
            )
        with gateway.store.transaction():
            gateway.store.release_payment_codes(given_back)
            gateway.store.payment_codes_paid(paid_codes)
        paid = 0
        for result in results:
            metrics.bulk_items(str(result["code"]))
            paid += result["code"] == OK
        return Reply(
            200,
            {
                "object": "bulk_payment",
                "paid": paid,
                "failed": len(items) - paid,
                "results": results,
            },
        )

    return (
        Operation(
            "POST",
            BULK_PATH,
            frozenset({Role.MERCHANT}),
            bulk_pay,
            f"Pay up to {BULK_ITEMS_MAX} orders at once with buyers' one-time payment codes "
            "(each item: its own result)",
            "BulkPayment",
            raw_body=True,
            errors=(TOO_MANY_ITEMS, INVALID_FIELD, "malformed_json"),
            description=(
                "For aggregators. Each item creates an order (idempotent by out_trade_no) and "
                "pays it from the wallet of the buyer whose one-time payment code it carries "
                "(POST /alipay/buyer/payment-codes, 120 s, usable once): a merchant can only "
                "charge buyers who gave it a code. A refused item changes nothing (its code is "
                "given back). The answer is 200 with one result per item, in order; resending "
                f"the same items answers the paid ones again (replayed). At most {BULK_ITEMS_MAX}"
                f" items and {BULK_BODY_LIMIT_BYTES // 1024} KiB."
            ),
            tags=("orders",),
        ),
    )
