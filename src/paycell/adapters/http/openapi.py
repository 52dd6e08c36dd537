"""The OpenAPI 3.1 document, written by hand: record schemas here, operations from the same
table the app serves (so every route is documented), every error code with its status."""

import re
from collections.abc import Sequence
from typing import Any, Final

from paycell.adapters.http import bulk, switches
from paycell.adapters.http.admission import CLASS_NAMES, CONSOLE, REPORTS, route_class
from paycell.adapters.http.errors import ALL_ERROR_STATUS, ERROR_DESCRIPTIONS
from paycell.adapters.http.routing import Operation
from paycell.adapters.http.validation import Field
from paycell.core.payments.records import (
    ChannelRequestKind,
    ChannelRequestStatus,
    EscrowState,
    OrderStatus,
    PaymentMode,
)

_INTEGER: Final = {"type": "integer"}
_STRING: Final = {"type": "string"}
_BOOLEAN: Final = {"type": "boolean"}
_AMOUNT: Final = {"type": "integer", "description": "integer minor units of `currency`"}
_CURRENCY: Final = {"type": "string", "description": "ISO 4217 code", "example": "CNY"}


def _time(description: str) -> dict[str, dict[str, Any]]:
    """A time field: nanoseconds since the epoch, and the same as ISO-8601 UTC (null if 0)."""
    return {
        "": {"type": "integer", "description": f"{description} (nanoseconds since the epoch)"},
        "_iso": {"type": ["string", "null"], "format": "date-time"},
    }


def _object(
    kind: str,
    properties: dict[str, Any],
    times: dict[str, str],
    description: str = "",
) -> dict[str, Any]:
    props: dict[str, Any] = {"object": {"type": "string", "const": kind}, **properties}
    for name, text in times.items():
        for suffix, schema in _time(text).items():
            props[name + suffix] = schema
    return {
        "type": "object",
        "description": description,
        "properties": props,
        "required": sorted(props),
    }


def _enum(values: Sequence[str]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


SCHEMAS: Final[dict[str, Any]] = {
    "Switches": {
        "type": "object",
        "description": "the degradation switches (docs/operations.md)",
        "properties": {
            "object": {"const": "switches"},
            **{
                name: {**_enum(values), "description": text}
                for name, (values, text) in switches.SWITCHES.items()
            },
        },
        "required": ["object", *switches.SWITCHES],
    },
    "BulkPayment": bulk.RESPONSE_SCHEMA,
    "BulkPayItemResult": bulk.ITEM_RESULT_SCHEMA,
    "Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": _enum(sorted(ALL_ERROR_STATUS)),
                    "message": _STRING,
                },
                "required": ["code", "message"],
            }
        },
        "required": ["error"],
    },
    "User": _object("user", {"id": _INTEGER, "name": _STRING}, {"created_at": "created"}),
    "Merchant": _object(
        "merchant",
        {
            "id": _INTEGER,
            "name": _STRING,
            "fee_rate_basis_points": _INTEGER,
            "settlement_bank_account": _STRING,
            "webhook_url": _STRING,
            "daily_payout": _BOOLEAN,
        },
        {"created_at": "created"},
    ),
    "CreatedUser": {
        "type": "object",
        "properties": {
            "user": {"$ref": "#/components/schemas/User"},
            "api_key": {
                "type": ["string", "null"],
                "description": "the user's API key, shown once (null in an idempotent replay)",
            },
        },
        "required": ["user", "api_key"],
    },
    "CreatedMerchant": {
        "type": "object",
        "properties": {
            "merchant": {"$ref": "#/components/schemas/Merchant"},
            "api_key": {
                "type": ["string", "null"],
                "description": "the merchant's API key, shown once (null in an idempotent replay)",
            },
        },
        "required": ["merchant", "api_key"],
    },
    "Order": _object(
        "order",
        {
            "id": _INTEGER,
            "merchant_id": _INTEGER,
            "out_trade_no": _STRING,
            "currency": _CURRENCY,
            "amount": _AMOUNT,
            "subject": _STRING,
            "mode": _enum([m.value for m in PaymentMode]),
            "status": _enum([s.value for s in OrderStatus]),
            "auto_confirm_seconds": _INTEGER,
            "refund_period_seconds": _INTEGER,
            "buyer_id": {"type": "integer", "description": "0 until paid"},
            "fee": _AMOUNT,
            "escrow_state": _enum([e.value for e in EscrowState]),
            "auto_confirm_remaining": {
                "type": "integer",
                "description": "nanoseconds of auto-confirm left while a refund request is open",
            },
            "refund_request_open": _BOOLEAN,
            "refunded_amount": _AMOUNT,
            "refunded_fee": _AMOUNT,
            "close_reason": _STRING,
        },
        {
            "created_at": "created",
            "expires_at": "an unpaid order closes then",
            "paid_at": "paid",
            "auto_confirm_at": "escrow releases on its own then",
            "released_at": "escrow released",
            "closed_at": "closed",
            "finished_at": "finished",
            "refundable_until": "refunds are possible until then",
        },
    ),
    "Refund": _object(
        "refund",
        {
            "id": _INTEGER,
            "order_id": _INTEGER,
            "merchant_id": _INTEGER,
            "out_request_no": _STRING,
            "amount": _AMOUNT,
            "fee_refunded": _AMOUNT,
            "source": _enum(["escrow", "merchant"]),
            "reason": _STRING,
        },
        {"created_at": "created"},
    ),
    "ChannelRequest": _object(
        "channel_request",
        {
            "id": _INTEGER,
            "kind": _enum([k.value for k in ChannelRequestKind]),
            "party_kind": _enum(["user", "merchant"]),
            "party_id": _INTEGER,
            "currency": _CURRENCY,
            "amount": _AMOUNT,
            "status": _enum([s.value for s in ChannelRequestStatus]),
            "request_no": _STRING,
            "channel_reference": _STRING,
            "failure_reason": _STRING,
        },
        {"created_at": "created", "completed_at": "the bank answered"},
    ),
    "Balance": {
        "type": "object",
        "properties": {
            "object": {"const": "balance"},
            "currency": _CURRENCY,
            "balance": _AMOUNT,
            "available": {
                **_AMOUNT,
                "description": "balance minus money reserved for withdrawals or payouts",
            },
            "reserved": _AMOUNT,
        },
        "required": ["object", "currency", "balance", "available", "reserved"],
    },
    "WebhookEvent": _object(
        "webhook_event",
        {
            "id": _INTEGER,
            "type": _STRING,
            "data": {"type": "object"},
            "delivery": {
                "oneOf": [{"$ref": "#/components/schemas/WebhookDelivery"}, {"type": "null"}]
            },
        },
        {"created_at": "created"},
    ),
    "WebhookDelivery": {
        "type": "object",
        "properties": {
            "object": {"const": "webhook_delivery"},
            "event_id": _INTEGER,
            "status": {"enum": ["pending", "delivered", "failed", "skipped"]},
            "attempts": _INTEGER,
            "next_attempt_at": _INTEGER,
            "last_error": _STRING,
            "delivered_at": _INTEGER,
        },
        "required": ["object", "event_id", "status", "attempts"],
    },
    "SchedulerReport": {
        "type": "object",
        "properties": {
            "object": {"const": "scheduler_report"},
            "closed_orders": _INTEGER,
            "auto_confirmed": _INTEGER,
            "finished_trades": _INTEGER,
            "expired_pending_transfers": _INTEGER,
            "payouts_started": _INTEGER,
            "errors": {"type": "array", "items": _STRING},
        },
    },
    "SettlementReport": {
        "type": "object",
        "properties": {
            "object": {"const": "settlement_report"},
            "day": {"type": "string", "format": "date"},
            "currency": _STRING,
            "opening_balance": _INTEGER,
            "sales": _INTEGER,
            "fees": _INTEGER,
            "refunds": _INTEGER,
            "payouts": _INTEGER,
            "closing_balance": _INTEGER,
            "sales_count": _INTEGER,
            "refunds_count": _INTEGER,
            "payouts_count": _INTEGER,
            "balanced": {"type": "boolean"},
        },
        "required": ["object", "day", "currency", "opening_balance", "closing_balance"],
    },
    "Settlement": {
        "type": "object",
        "properties": {
            "object": {"const": "settlement"},
            "day": {"type": "string", "format": "date"},
            "payouts": {
                "type": "array",
                "items": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/ChannelRequest"},
                        {"$ref": "#/components/schemas/Error"},
                    ]
                },
            },
        },
    },
}

# Codes any authenticated operation may answer.
_COMMON_ERRORS: Final = (
    "overloaded",
    "rate_limited",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "internal_error",
)
_POST_ERRORS: Final = (
    "malformed_json",
    "invalid_field",
    "body_too_large",
    "idempotency_key_reused",
)


# Requests whose body is read raw by their handler (not a flat list of fields).
_REQUEST_SCHEMAS: Final[dict[str, dict[str, Any]]] = {bulk.BULK_PATH: bulk.REQUEST_SCHEMA}


def _field_schema(field: Field) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": field.kind, "description": field.description}
    if field.kind == "string":
        schema["maxLength"] = field.max_length
        if field.choices:
            schema["enum"] = list(field.choices)
    if field.minimum is not None:
        schema["minimum"] = field.minimum
    if field.maximum is not None:
        schema["maximum"] = field.maximum
    if field.example is not None:
        schema["example"] = field.example
    return schema


def _error_responses(codes: Sequence[str]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(ALL_ERROR_STATUS[code], []).append(code)
    return {
        str(status): {
            "description": "; ".join(
                f"`{code}`"
                + (f": {ERROR_DESCRIPTIONS[code]}" if code in ERROR_DESCRIPTIONS else "")
                for code in sorted(names)
            ),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for status, names in sorted(by_status.items())
    }


# Every parameter a route's path may hold; a path naming another fails to build the document.
_PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "order_id": {"schema": _INTEGER},
    "event_id": {"schema": _INTEGER, "description": "the event's id, as in GET /v1/webhook-events"},
    "day": {
        "schema": {"type": "string", "format": "date", "example": "2024-11-11"},
        "description": "a UTC day, YYYY-MM-DD",
    },
}


def _operation(operation: Operation) -> dict[str, Any]:
    reference = {"$ref": f"#/components/schemas/{operation.response}"}
    schema: dict[str, Any] = reference
    if operation.is_list:
        schema = {
            "type": "object",
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": reference},
                "next_cursor": {
                    "type": ["integer", "null"],
                    "description": "pass as `after` for the next page; null on the last page",
                },
            },
        }
    codes: list[str] = list(operation.errors)
    parameters: list[dict[str, Any]] = []
    for name in re.findall(r"{(\w+)}", operation.path):
        parameters.append({"name": name, "in": "path", "required": True, **_PATH_PARAMETERS[name]})
    if "{order_id}" in operation.path:
        codes.append("order_not_found")
    if "{day}" in operation.path:
        codes.append("invalid_field")
    parameters += [
        {
            "name": field.name,
            "in": "query",
            "required": False,
            "description": field.description,
            "schema": _field_schema(field),
        }
        for field in operation.query
    ]
    if operation.query:
        codes.append("invalid_field")
    priority = route_class(operation.method, operation.path)
    if priority in (REPORTS, CONSOLE):
        codes.append("degraded")
    # A raw body that is not the bank's signed callback: a request with its own schema.
    signed = operation.raw_body and operation.path not in _REQUEST_SCHEMAS
    if operation.method == "PUT":
        codes += ("malformed_json", "invalid_field", "body_too_large")
    if operation.method == "POST":
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "retry safely: the same key and request answer the first "
                "response again (header Idempotent-Replayed: true); up to 255 characters",
                "schema": {"type": "string", "maxLength": 255},
            }
        )
        codes += _POST_ERRORS
    if signed:
        parameters.append(
            {
                "name": "X-Channel-Signature",
                "in": "header",
                "required": True,
                "description": "HMAC-SHA256 of the body with the bank's secret, hex",
                "schema": _STRING,
            }
        )
        codes = [c for c in codes if c != "idempotency_key_reused"] + ["idempotency_key_reused"]
    else:
        codes += _COMMON_ERRORS
    responses: dict[str, Any] = {
        str(operation.success_status): {
            "description": "success",
            "content": {"application/json": {"schema": schema}},
        }
    }
    if operation.success_status == 201:
        responses["200"] = {
            "description": "a retry of a command already applied (same request number)",
            "content": {"application/json": {"schema": schema}},
        }
    responses.update(_error_responses(sorted(set(codes))))
    document: dict[str, Any] = {
        "summary": operation.summary,
        "operationId": operation.handler.__name__,
        "tags": list(operation.tags),
        "parameters": parameters,
        "responses": responses,
        "security": [] if signed else [{"bearer": []}],
        "x-roles": sorted(role.value for role in operation.roles),
        "x-priority-class": CLASS_NAMES[priority],
    }
    if operation.description:
        document["description"] = operation.description
    if operation.method in ("POST", "PUT"):
        if operation.path in _REQUEST_SCHEMAS:
            body_schema: dict[str, Any] = _REQUEST_SCHEMAS[operation.path]
        elif operation.raw_body:
            body_schema = {
                "type": "object",
                "properties": {
                    "channel_reference": _STRING,
                    "status": _enum(["SUCCESS", "FAILED"]),
                    "amount": _AMOUNT,
                    "reason": _STRING,
                },
                "required": ["channel_reference", "status", "amount"],
            }
        else:
            body_schema = {
                "type": "object",
                "additionalProperties": False,
                "properties": {f.name: _field_schema(f) for f in operation.body},
                "required": [f.name for f in operation.body if f.required],
            }
        document["requestBody"] = {
            "required": bool(operation.body) or operation.raw_body,
            "content": {"application/json": {"schema": body_schema}},
        }
    return document


def build_document(operations: Sequence[Operation]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "paycell native REST API",
            "version": "1",
            "description": (
                "JSON over HTTP. Amounts are integer minor units with a `currency` code; times "
                "are integer nanoseconds plus `*_iso` ISO-8601 UTC strings; enums are strings. "
                "Authenticate with `Authorization: Bearer <API key>` (admin, user or merchant). "
                "Every POST accepts an `Idempotency-Key`. Errors are "
                '`{"error": {"code", "message"}}` with the codes listed per operation. '
                "insufficient_funds is 409 (a state conflict that a top-up can resolve)."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "x-error-codes": {
            code: {"status": status, "description": ERROR_DESCRIPTIONS.get(code, "")}
            for code, status in sorted(ALL_ERROR_STATUS.items())
        },
    }
