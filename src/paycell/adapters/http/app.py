"""The native REST API under /v1: the route table, its handlers, and the request pipeline.

Pipeline of every request (`_endpoint`): read the body within the size limit (413) ->
authenticate (401/403) -> for a POST with an Idempotency-Key, replay or reject a reused key ->
validate the body and query (400/422) -> run the handler (one platform command) -> keep the
response for the key. Every platform call runs in a worker thread under one lock shared with
the server's background jobs: the platform's store holds one database connection.
"""

import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from datetime import date, timedelta
from typing import Any, Final, NamedTuple

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from paycell.adapters.alipay.asgi import AbsoluteFormPaths
from paycell.adapters.alipay.gateway import AlipayGateway
from paycell.adapters.alipay.routes import alipay_routes, bearer_token
from paycell.adapters.channels.simulated_bank import Callback
from paycell.adapters.http import idempotency, render
from paycell.adapters.http.admission import (
    DEFAULT_ADMISSION,
    Admission,
    AdmissionConfig,
    RateLimit,
    RateLimiter,
)
from paycell.adapters.http.auth import Caller, Role, authenticate
from paycell.adapters.http.bulk import BULK_BODY_LIMIT_BYTES, BULK_PATH, bulk_operations
from paycell.adapters.http.docs import DOCS_HTML
from paycell.adapters.http.edge import Edge
from paycell.adapters.http.errors import (
    BODY_TOO_LARGE,
    INTERNAL_ERROR,
    INVALID_FIELD,
    INVALID_SIGNATURE,
    MALFORMED_JSON,
    UNAUTHORIZED,
    WEBHOOK_EVENT_NOT_FOUND,
    ApiError,
    code_for_status,
    error_body,
    error_response,
    payment_error,
)
from paycell.adapters.http.group_commit import (
    DEFAULT_GROUP_COMMIT,
    GroupCommitConfig,
    GroupCommitter,
    Pending,
)
from paycell.adapters.http.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from paycell.adapters.http.metrics import LedgerTotals, Metrics, MetricsSnapshot
from paycell.adapters.http.openapi import build_document
from paycell.adapters.http.route_index import IndexedRouter, RouteIndex
from paycell.adapters.http.routing import Call, Operation, Reply
from paycell.adapters.http.switches import Switches, switch_operations
from paycell.adapters.http.validation import (
    INTEGER_MAX,
    Field,
    check_query,
    page_parameters,
    parse_body,
)
from paycell.core.payments.flows import OUT_TRADE_NO_LENGTH_MAX, TIMEOUT_SECONDS_MAX
from paycell.core.payments.outcomes import Decision, PaymentError
from paycell.core.payments.records import Order, PartyKind, PaymentMode
from paycell.platform import Platform
from paycell.service.platform import (
    LAST_DAY_START,
    NANOSECONDS_PER_DAY,
    OrderAction,
    OrderCommand,
)
from paycell.service.platform_ports import IdempotencyRecord
from paycell.service.webhooks import WebhookEventNotFoundError

BODY_LIMIT_BYTES_DEFAULT: Final = 64 * 1024
REQUEST_NUMBER_LENGTH_MAX: Final = OUT_TRADE_NO_LENGTH_MAX

_log = logging.getLogger(__name__)

ADMIN = frozenset({Role.ADMIN})
USER = frozenset({Role.USER})
MERCHANT = frozenset({Role.MERCHANT})
USER_OR_MERCHANT = frozenset({Role.USER, Role.MERCHANT})
CHANNEL = frozenset({Role.CHANNEL})

# ------------------------------------------------------------------------------ helpers


def _dumps(payload: Mapping[str, object]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def _decided(decision: Decision) -> Decision:
    if decision.error is not None:
        raise payment_error(decision.error, decision.message)
    return decision


def _created(decision: Decision, payload: dict[str, object]) -> Reply:
    """201 for something new; 200 when the command was a retry of one already applied."""
    return Reply(200 if decision.replayed else 201, payload)


def _order_id(call: Call) -> int:
    text = call.path_parameters["order_id"]
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > INTEGER_MAX:
        raise payment_error(PaymentError.ORDER_NOT_FOUND, f"no order {text}")
    return int(text)


def _order_json(order: Order) -> dict[str, object]:
    return render.record(order, "order")


def _visible_order(call: Call) -> Order:
    """The order, if the caller may see it: its merchant, its buyer, or any user while it
    waits for payment (a buyer must see the order it is about to pay)."""
    order_id = _order_id(call)
    order = call.platform.get_order(order_id)
    caller = call.caller
    visible = order is not None and (
        (caller.role is Role.MERCHANT and order.merchant_id == caller.party_id)
        or (
            caller.role is Role.USER
            and (order.buyer_id == caller.party_id or order.status.value == "WAIT_BUYER_PAY")
        )
    )
    if order is None or not visible:
        raise payment_error(PaymentError.ORDER_NOT_FOUND, f"no order {order_id}")
    return order


def _currency(call: Call, value: object = None) -> str:
    """The currency asked for (body or query), upper-cased, checked against the platform."""
    code = str(value if value is not None else call.query.get("currency") or "CNY").upper()
    if code not in call.platform.config.currencies:
        raise payment_error(
            PaymentError.UNSUPPORTED_CURRENCY,
            f"currency {code!r} is not enabled (enabled: "
            f"{', '.join(call.platform.config.currencies)})",
        )
    return code


def _int(body: Mapping[str, object], name: str) -> int:
    value = body[name]
    assert isinstance(value, int)
    return value


def _optional_int(body: Mapping[str, object], name: str) -> int | None:
    value = body.get(name)
    assert value is None or isinstance(value, int)
    return value


def _str(body: Mapping[str, object], name: str, default: str = "") -> str:
    value = body.get(name, default)
    assert isinstance(value, str)
    return value


# ---------------------------------------------------------------------------- admin


def create_user(call: Call) -> Reply:
    user = call.platform.create_user(_str(call.body, "name"))
    key = call.platform.issue_api_key(PartyKind.USER, user.id)
    payload: dict[str, object] = {"user": render.record(user, "user"), "api_key": key}
    return Reply(201, payload, {**payload, "api_key": None})


def create_merchant(call: Call) -> Reply:
    body = call.body
    daily_payout = body.get("daily_payout", True)
    assert isinstance(daily_payout, bool)
    merchant = call.platform.create_merchant(
        _str(body, "name"),
        fee_rate_basis_points=_int(body, "fee_rate_basis_points"),
        settlement_bank_account=_str(body, "settlement_bank_account"),
        webhook_url=_str(body, "webhook_url"),
        webhook_secret=_str(body, "webhook_secret"),
        daily_payout=daily_payout,
    )
    key = call.platform.issue_api_key(PartyKind.MERCHANT, merchant.id)
    payload: dict[str, object] = {"merchant": render.record(merchant, "merchant"), "api_key": key}
    return Reply(201, payload, {**payload, "api_key": None})


def run_scheduler(call: Call) -> Reply:
    report = call.platform.run_scheduler()
    return Reply(
        200,
        {
            "object": "scheduler_report",
            "closed_orders": report.closed_orders,
            "auto_confirmed": report.auto_confirmed,
            "finished_trades": report.finished_trades,
            "expired_pending_transfers": report.expired_pending_transfers,
            "payouts_started": report.payouts_started,
            "errors": list(report.errors),
        },
    )


_EPOCH_DAY: Final = date(1970, 1, 1)
# The last day whose every nanosecond is a ledger timestamp.
_LAST_DAY: Final = _EPOCH_DAY + timedelta(days=LAST_DAY_START // NANOSECONDS_PER_DAY)


def _day(text: str) -> tuple[date, int]:
    """A UTC day as YYYY-MM-DD, and its first nanosecond."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ApiError(INVALID_FIELD, "day: must be a date as YYYY-MM-DD") from None
    if len(text) != 10 or not date(1970, 1, 2) <= day <= _LAST_DAY:
        raise ApiError(
            INVALID_FIELD,
            f"day: must be a date as YYYY-MM-DD from 1970-01-02 to {_LAST_DAY.isoformat()}",
        )
    return day, (day - _EPOCH_DAY).days * NANOSECONDS_PER_DAY


def run_settlement(call: Call) -> Reply:
    day, day_start = _day(_str(call.body, "day"))
    currency = _currency(call, call.body.get("currency"))
    results: list[dict[str, object]] = []
    for decision in call.platform.settle_day(day_start, currency):
        if decision.error is not None:
            results.append(error_body(decision.error.value, decision.message))
        else:
            results.extend(render.record(r, "channel_request") for r in decision.channel_requests)
    return Reply(200, {"object": "settlement", "day": day.isoformat(), "payouts": results})


# ------------------------------------------------------------------------- merchant


def create_order(call: Call) -> Reply:
    body = call.body
    decision = _decided(
        call.platform.create_order(
            call.caller.party_id,
            _str(body, "out_trade_no"),
            _int(body, "amount"),
            currency=_currency(call, body.get("currency")),
            subject=_str(body, "subject"),
            mode=PaymentMode(_str(body, "mode", PaymentMode.DIRECT.value)),
            timeout_seconds=_optional_int(body, "timeout_seconds"),
            auto_confirm_seconds=_optional_int(body, "auto_confirm_seconds"),
        )
    )
    return _created(decision, _order_json(decision.orders[0]))


def get_order(call: Call) -> Reply:
    return Reply(200, _order_json(_visible_order(call)))


def list_orders(call: Call) -> Reply:
    after, limit = page_parameters(call.query)
    orders = call.platform.list_orders(call.caller.party_id, after, limit)
    return Reply(200, render.page([_order_json(o) for o in orders], limit))


def _order_reply(decision: Decision) -> Reply:
    return Reply(200, _order_json(_decided(decision).orders[0]))


def cancel_order(call: Call) -> Reply:
    return _order_reply(call.platform.cancel_order(_order_id(call), call.caller.party_id))


def refund_order(call: Call) -> Reply:
    body = call.body
    decision = _decided(
        call.platform.refund(
            _order_id(call),
            call.caller.party_id,
            _str(body, "out_request_no"),
            _int(body, "amount"),
            _str(body, "reason"),
        )
    )
    payload = render.record(decision.refunds[0], "refund")
    payload["order"] = _order_json(decision.orders[0])
    return _created(decision, payload)


def list_refunds(call: Call) -> Reply:
    order = _visible_order(call)
    refunds = [render.record(r, "refund") for r in call.platform.refunds_of_order(order.id)]
    return Reply(200, {"object": "list", "data": refunds, "next_cursor": None})


def reject_refund_request(call: Call) -> Reply:
    return _order_reply(call.platform.reject_refund_request(_order_id(call), call.caller.party_id))


def _channel_reply(decision: Decision) -> Reply:
    decision = _decided(decision)
    return _created(decision, render.record(decision.channel_requests[0], "channel_request"))


def request_payout(call: Call) -> Reply:
    body = call.body
    return _channel_reply(
        call.platform.request_payout(
            call.caller.party_id,
            _str(body, "request_no"),
            _optional_int(body, "amount"),
            _currency(call, body.get("currency")),
        )
    )


def _channel_requests(call: Call, kind: PartyKind) -> Reply:
    after, limit = page_parameters(call.query)
    requests = call.platform.list_channel_requests(kind, call.caller.party_id, after, limit)
    return Reply(200, render.page([render.record(r, "channel_request") for r in requests], limit))


def list_payouts(call: Call) -> Reply:
    return _channel_requests(call, PartyKind.MERCHANT)


def merchant_balance(call: Call) -> Reply:
    currency = _currency(call)
    account = call.platform.balance(PartyKind.MERCHANT, call.caller.party_id, currency)
    return Reply(200, render.balance(account, currency))


def settlement_report(call: Call) -> Reply:
    day, day_start = _day(call.path_parameters["day"])
    currency = _currency(call)
    report = call.platform.settlement_report(call.caller.party_id, day_start, currency)
    if report is None:
        raise payment_error(PaymentError.MERCHANT_NOT_FOUND, "no such merchant")
    return Reply(
        200,
        {
            "object": "settlement_report",
            "day": day.isoformat(),
            "currency": report.currency,
            "opening_balance": report.opening_balance,
            "sales": report.sales,
            "fees": report.fees,
            "refunds": report.refunds,
            "payouts": report.payouts,
            "closing_balance": report.closing_balance,
            "sales_count": report.sales_count,
            "refunds_count": report.refunds_count,
            "payouts_count": report.payouts_count,
            "balanced": report.balanced,
        },
    )


def list_webhook_events(call: Call) -> Reply:
    after, limit = page_parameters(call.query)
    events = call.platform.webhook_events(call.caller.party_id, after, limit)
    return Reply(
        200,
        render.page(
            [render.webhook_event(e, call.platform.webhook_delivery(e.id)) for e in events],
            limit,
        ),
    )


def replay_webhook_event(call: Call) -> Reply:
    text = call.path_parameters["event_id"]
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > INTEGER_MAX:
        raise ApiError(WEBHOOK_EVENT_NOT_FOUND, f"no webhook event {text}")
    try:
        delivery = call.platform.replay_webhook(call.caller.party_id, int(text))
    except WebhookEventNotFoundError as missing:
        raise ApiError(WEBHOOK_EVENT_NOT_FOUND, str(missing)) from None
    return Reply(202, render.webhook_delivery(delivery))


# ----------------------------------------------------------------------------- user


def wallet_balance(call: Call) -> Reply:
    currency = _currency(call)
    account = call.platform.balance(PartyKind.USER, call.caller.party_id, currency)
    return Reply(200, render.balance(account, currency))


def top_up(call: Call) -> Reply:
    return _wallet_channel_request(call, call.platform.request_top_up)


def withdraw(call: Call) -> Reply:
    return _wallet_channel_request(call, call.platform.request_withdrawal)


def _wallet_channel_request(call: Call, request: Callable[[int, str, int, str], Decision]) -> Reply:
    """A top-up or a withdrawal: the same body, sent to the bank in opposite directions."""
    body = call.body
    return _channel_reply(
        request(
            call.caller.party_id,
            _str(body, "request_no"),
            _int(body, "amount"),
            _currency(call, body.get("currency")),
        )
    )


def list_wallet_requests(call: Call) -> Reply:
    return _channel_requests(call, PartyKind.USER)


def pay_order(call: Call) -> Reply:
    return _order_reply(call.platform.pay_order(_order_id(call), call.caller.party_id))


def confirm_receipt(call: Call) -> Reply:
    return _order_reply(call.platform.confirm_receipt(_order_id(call), call.caller.party_id))


def open_refund_request(call: Call) -> Reply:
    return _order_reply(call.platform.open_refund_request(_order_id(call), call.caller.party_id))


# -------------------------------------------------------------------------- channel


def channel_callback(call: Call) -> Reply:
    try:
        body = call.raw_body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(MALFORMED_JSON, "the callback body is not UTF-8") from None
    signature = call.headers.get("x-channel-signature", "")
    if not signature or not call.platform.bank.verify(Callback(body, signature)):
        raise ApiError(INVALID_SIGNATURE, "X-Channel-Signature does not match the body")
    decision = _decided(call.platform.channel_callback_message(body, signature))
    return Reply(200, render.record(decision.channel_requests[0], "channel_request"))


# ------------------------------------------------------------------------ the table

_CURRENCY = Field("currency", "string", "ISO 4217 code (default CNY)", False, 3, example="CNY")


def _number(name: str, description: str) -> Field:
    return Field(name, "string", description, max_length=REQUEST_NUMBER_LENGTH_MAX, example="R-1")


def _amount(required: bool = True, description: str = "integer minor units") -> Field:
    return Field("amount", "integer", description, required, example=100_00)


def _seconds(name: str, description: str) -> Field:
    return Field(name, "integer", description, False, minimum=1, maximum=TIMEOUT_SECONDS_MAX)


_PAGE = (
    Field("after", "integer", "cursor: the next_cursor of the page before", False, minimum=0),
    Field("limit", "integer", "page size, 1 to 500 (default 100)", False, minimum=1, maximum=500),
)
_CURRENCY_QUERY = (_CURRENCY,)
_ORDER_STATE = ("order_not_found",)

OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation(
        "POST",
        "/v1/admin/users",
        ADMIN,
        create_user,
        "Create a user (wallet) and its API key",
        "CreatedUser",
        201,
        (Field("name", "string", "the user's display name", example="Li Lei"),),
        tags=("admin",),
    ),
    Operation(
        "POST",
        "/v1/admin/merchants",
        ADMIN,
        create_merchant,
        "Create a merchant and its API key",
        "CreatedMerchant",
        201,
        (
            Field("name", "string", "the merchant's name", example="Tea House"),
            Field(
                "fee_rate_basis_points",
                "integer",
                "fee per payment (60 = 0.60%)",
                minimum=0,
                maximum=10_000,
                example=60,
            ),
            Field("settlement_bank_account", "string", "where payouts go", example="6222 0001"),
            Field("webhook_url", "string", "where events are posted", False, 2048),
            Field("webhook_secret", "string", "HMAC-SHA256 key for webhooks", False),
            Field("daily_payout", "boolean", "pay the balance out daily (default true)", False),
        ),
        tags=("admin",),
    ),
    Operation(
        "POST",
        "/v1/admin/scheduler/run",
        ADMIN,
        run_scheduler,
        "Run the scheduler once (close unpaid orders, auto-confirm, finish trades)",
        "SchedulerReport",
        tags=("admin",),
    ),
    Operation(
        "POST",
        "/v1/admin/settlements",
        ADMIN,
        run_settlement,
        "Daily settlement: pay out every daily-payout merchant's available balance",
        "Settlement",
        200,
        (
            Field("day", "string", "the UTC day, YYYY-MM-DD", max_length=10, example="2024-11-11"),
            _CURRENCY,
        ),
        errors=("unsupported_currency",),
        tags=("admin",),
    ),
    Operation(
        "POST",
        "/v1/orders",
        MERCHANT,
        create_order,
        "Create an order (the same out_trade_no and content returns it again, 200)",
        "Order",
        201,
        (
            Field(
                "out_trade_no",
                "string",
                "the merchant's order number, unique per merchant",
                max_length=OUT_TRADE_NO_LENGTH_MAX,
                example="T-1",
            ),
            _amount(),
            _CURRENCY,
            Field("subject", "string", "what is sold", False, example="Oolong tea"),
            Field(
                "mode",
                "string",
                "direct (default) or escrow",
                False,
                choices=("direct", "escrow"),
                example="direct",
            ),
            _seconds("timeout_seconds", "an unpaid order closes after this many seconds"),
            _seconds("auto_confirm_seconds", "escrow releases on its own after this many seconds"),
        ),
        errors=(
            "invalid_amount",
            "unsupported_currency",
            "order_exists_with_different_content",
            "merchant_not_found",
        ),
        tags=("orders",),
    ),
    Operation(
        "GET",
        "/v1/orders",
        MERCHANT,
        list_orders,
        "The merchant's orders, oldest first",
        "Order",
        query=_PAGE,
        is_list=True,
        tags=("orders",),
    ),
    Operation(
        "GET",
        "/v1/orders/{order_id}",
        USER_OR_MERCHANT,
        get_order,
        "An order (merchants: their own; users: ones they paid or that await payment)",
        "Order",
        errors=_ORDER_STATE,
        tags=("orders",),
    ),
    Operation(
        "POST",
        "/v1/orders/{order_id}/cancel",
        MERCHANT,
        cancel_order,
        "Cancel an unpaid order (TRADE_CLOSED)",
        "Order",
        errors=(*_ORDER_STATE, "order_already_paid"),
        tags=("orders",),
    ),
    Operation(
        "POST",
        "/v1/orders/{order_id}/refunds",
        MERCHANT,
        refund_order,
        "Refund part or all of a paid order (idempotent by out_request_no)",
        "Refund",
        201,
        (
            _number("out_request_no", "the merchant's refund number, unique per order"),
            _amount(),
            Field("reason", "string", "why", False),
        ),
        errors=(
            *_ORDER_STATE,
            "invalid_amount",
            "order_not_paid",
            "order_already_closed",
            "order_already_finished",
            "refund_exceeds_amount_paid",
            "refund_exists_with_different_content",
            "insufficient_funds",
        ),
        tags=("refunds",),
    ),
    Operation(
        "GET",
        "/v1/orders/{order_id}/refunds",
        MERCHANT,
        list_refunds,
        "The refunds of an order",
        "Refund",
        errors=_ORDER_STATE,
        is_list=True,
        tags=("refunds",),
    ),
    Operation(
        "POST",
        "/v1/orders/{order_id}/refund-request/reject",
        MERCHANT,
        reject_refund_request,
        "Decline the buyer's refund request: auto-confirm resumes",
        "Order",
        errors=(*_ORDER_STATE, "no_refund_request_open"),
        tags=("refunds",),
    ),
    Operation(
        "POST",
        "/v1/payouts",
        MERCHANT,
        request_payout,
        "Pay the balance out to the merchant's bank (amount omitted: all available)",
        "ChannelRequest",
        201,
        (
            _number("request_no", "the merchant's payout number"),
            _amount(False, "integer minor units (default: everything available)"),
            _CURRENCY,
        ),
        errors=(
            "invalid_amount",
            "unsupported_currency",
            "insufficient_funds",
            "nothing_to_pay_out",
            "channel_request_exists_with_different_content",
            "user_not_found",
            "merchant_not_found",
        ),
        tags=("payouts",),
    ),
    Operation(
        "GET",
        "/v1/payouts",
        MERCHANT,
        list_payouts,
        "The merchant's payouts",
        "ChannelRequest",
        query=_PAGE,
        is_list=True,
        tags=("payouts",),
    ),
    Operation(
        "GET",
        "/v1/balance",
        MERCHANT,
        merchant_balance,
        "The merchant's balance",
        "Balance",
        query=_CURRENCY_QUERY,
        errors=("unsupported_currency",),
        tags=("payouts",),
    ),
    Operation(
        "GET",
        "/v1/settlements/{day}",
        MERCHANT,
        settlement_report,
        "The merchant's settlement report for a UTC day (YYYY-MM-DD): opening balance, sales, "
        "fees, refunds, payouts, closing balance",
        "SettlementReport",
        query=_CURRENCY_QUERY,
        errors=("unsupported_currency",),
        tags=("payouts",),
    ),
    Operation(
        "GET",
        "/v1/webhook-events",
        MERCHANT,
        list_webhook_events,
        "Events owed to the merchant's webhook, oldest first",
        "WebhookEvent",
        query=_PAGE,
        is_list=True,
        tags=("webhooks",),
    ),
    Operation(
        "POST",
        "/v1/webhook-events/{event_id}/replay",
        MERCHANT,
        replay_webhook_event,
        "Send one of the merchant's events again (due now; the retry schedule continues)",
        "WebhookDelivery",
        success_status=202,
        errors=("webhook_event_not_found",),
        tags=("webhooks",),
    ),
    Operation(
        "GET",
        "/v1/wallet",
        USER,
        wallet_balance,
        "The user's wallet balance",
        "Balance",
        query=_CURRENCY_QUERY,
        errors=("unsupported_currency",),
        tags=("wallet",),
    ),
    Operation(
        "POST",
        "/v1/wallet/top-ups",
        USER,
        top_up,
        "Top up the wallet through the bank (completed by the bank's callback)",
        "ChannelRequest",
        201,
        (_number("request_no", "the user's request number"), _amount(), _CURRENCY),
        errors=(
            "invalid_amount",
            "unsupported_currency",
            "channel_request_exists_with_different_content",
            "user_not_found",
            "merchant_not_found",
        ),
        tags=("wallet",),
    ),
    Operation(
        "POST",
        "/v1/wallet/withdrawals",
        USER,
        withdraw,
        "Withdraw to the bank (reserved now; returned if the bank declines)",
        "ChannelRequest",
        201,
        (_number("request_no", "the user's request number"), _amount(), _CURRENCY),
        errors=(
            "invalid_amount",
            "unsupported_currency",
            "insufficient_funds",
            "channel_request_exists_with_different_content",
            "user_not_found",
            "merchant_not_found",
        ),
        tags=("wallet",),
    ),
    Operation(
        "GET",
        "/v1/wallet/requests",
        USER,
        list_wallet_requests,
        "The user's top-ups and withdrawals",
        "ChannelRequest",
        query=_PAGE,
        is_list=True,
        tags=("wallet",),
    ),
    Operation(
        "POST",
        "/v1/orders/{order_id}/pay",
        USER,
        pay_order,
        "Pay an order from the wallet (paying again as the same buyer is a no-op)",
        "Order",
        errors=(
            *_ORDER_STATE,
            "order_already_paid",
            "order_already_closed",
            "order_expired",
            "insufficient_funds",
            "user_not_found",
        ),
        tags=("orders",),
    ),
    Operation(
        "POST",
        "/v1/orders/{order_id}/confirm",
        USER,
        confirm_receipt,
        "Confirm receipt of an escrow order: escrow is released to the merchant",
        "Order",
        errors=(
            *_ORDER_STATE,
            "order_not_escrow",
            "order_not_paid",
            "not_the_buyer",
            "escrow_already_released",
        ),
        tags=("orders",),
    ),
    Operation(
        "POST",
        "/v1/orders/{order_id}/refund-request",
        USER,
        open_refund_request,
        "Ask for a refund of an escrow order: auto-confirm pauses",
        "Order",
        errors=(*_ORDER_STATE, "order_not_escrow", "not_the_buyer", "refund_request_already_open"),
        tags=("refunds",),
    ),
    Operation(
        "POST",
        "/v1/channel/callbacks",
        CHANNEL,
        channel_callback,
        "The bank's signed callback (the exact body the bank signed; replays answer the same)",
        "ChannelRequest",
        raw_body=True,
        errors=(
            "invalid_signature",
            "invalid_channel_signature",
            "channel_request_not_found",
            "channel_callback_conflict",
        ),
        tags=("channel",),
    ),
)

# ------------------------------------------------------------------------ pipeline


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 beyond `limit` bytes: by its Content-Length when given, and
    by counting the stream in any case (a chunked body has no length)."""
    length = request.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise ApiError(BODY_TOO_LARGE, f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(BODY_TOO_LARGE, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _target(scope: Scope) -> str:
    """The path and query as `request.url` spells them (part of an Idempotency-Key's request
    hash), without building the whole URL, which costs more than the rest of the hash."""
    path = scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    query = scope.get("query_string", b"").decode()
    return f"{path}?{query}" if query else path


_UNLOCKED_PATHS: Final = frozenset({"/v1/admin/switches"})
_BODY_LIMITS: Final = {BULK_PATH: BULK_BODY_LIMIT_BYTES}


def _json_response(status: int, body: str, replayed: bool = False) -> Response:
    headers = {idempotency.REPLAYED_HEADER: "true"} if replayed else None
    return Response(body, status, headers=headers, media_type="application/json")


class _Prepared(NamedTuple):
    """A request past authentication, its idempotency check and validation."""

    call: Call
    # The request's hash for its Idempotency-Key ("" without one).
    hashed: str


class _Api:
    def __init__(
        self,
        platform: Platform,
        admin_key: str,
        body_limit_bytes: int,
        lock: AbstractContextManager[Any],
    ) -> None:
        self.platform = platform
        self.admin_key = admin_key
        self.body_limit_bytes = body_limit_bytes
        self.lock = lock
        self.groups: GroupCommitter | None = None

    def endpoint(self, operation: Operation) -> Route:
        # Admin routes that only touch server memory (switches) skip the platform's lock, so
        # the operator reaches them while the platform is busy; only the admin key opens them.
        unlocked = operation.path in _UNLOCKED_PATHS
        body_limit = max(self.body_limit_bytes, _BODY_LIMITS.get(operation.path, 0))
        grouped = operation.handler is pay_order

        async def run(request: Request) -> Response:
            is_post = request.method == "POST"
            has_body = is_post or request.method == "PUT"
            raw = await _read_body(request, body_limit) if has_body else b""
            key = idempotency.check_key(request.headers.get(idempotency.HEADER))
            target = _target(request.scope)
            if grouped and self.groups is not None:
                # Group commit: no worker-thread hop; the group's worker answers the future.
                return await self.groups.submit(request, raw, key, target)

            def work() -> Response:
                if unlocked:
                    self._require_admin(request)
                    return self._handle(operation, request, raw, None, target)
                with self.lock:
                    return self._handle(operation, request, raw, key if is_post else None, target)

            return await run_in_threadpool(work)

        methods = [operation.method]
        return Route(operation.path, run, methods=methods, name=operation.handler.__name__)

    def _require_admin(self, request: Request) -> None:
        token = bearer_token(request.headers.get("authorization"))
        if token is None or not hmac.compare_digest(token.encode(), self.admin_key.encode()):
            raise ApiError(UNAUTHORIZED, "send the admin key as 'Authorization: Bearer <key>'")

    def _prepare(
        self, operation: Operation, request: Request, raw: bytes, key: str | None, target: str
    ) -> _Prepared | Response:
        """Authenticate, answer a replay of an Idempotency-Key, validate: the request as its
        handler sees it, or the replayed response."""
        platform = self.platform
        caller = authenticate(
            platform, self.admin_key, request.headers.get("authorization"), operation.roles
        )
        hashed = ""
        if key is not None:
            hashed = idempotency.request_hash(request.method, target, raw)
            previous = idempotency.previous_response(platform, caller, key, hashed)
            if previous is not None:
                return _json_response(previous.status, previous.body, replayed=True)
        query = check_query(
            request.query_params.multi_items(), [field.name for field in operation.query]
        )
        body = {} if operation.raw_body else parse_body(raw, operation.body)
        call = Call(platform, caller, request.path_params, query, body, raw, request.headers)
        return _Prepared(call, hashed)

    def _handle(
        self, operation: Operation, request: Request, raw: bytes, key: str | None, target: str
    ) -> Response:
        prepared = self._prepare(operation, request, raw, key, target)
        if isinstance(prepared, Response):
            return prepared
        call, hashed = prepared
        caller = call.caller
        try:
            reply = operation.handler(call)
        except ApiError as error:
            if key is not None and error.reached_platform:
                self._remember(
                    caller, key, hashed, error.status, error_body(error.code, error.message)
                )
            raise
        text = _dumps(reply.payload)
        if key is not None:
            stored = self._remember(
                caller, key, hashed, reply.status, reply.stored_payload or reply.payload
            )
            if stored is not None:
                return stored
        return _json_response(reply.status, text)

    def _remember(
        self, caller: Caller, key: str, hashed: str, status: int, payload: dict[str, object]
    ) -> Response | None:
        """Keep the response; a concurrent request's response with the same key wins."""
        text = _dumps(payload)
        record = idempotency.remember(self.platform, caller, key, hashed, status, text)
        if record.body != text or record.status != status:
            return _json_response(record.status, record.body, replayed=True)
        return None

    # ------------------------------------------------------------------- group commit

    def pay_group(self, operation: Operation, items: Sequence[Pending]) -> None:
        """Pay a group of `POST /v1/orders/{order_id}/pay` requests with one platform command
        and one commit, answering each exactly as `_handle` would have. Called by the group's
        worker with the platform's lock held."""
        assert self.groups is not None
        platform = self.platform
        # Requests the group cannot take run alone after it, on the ordinary path: a second
        # request with an Idempotency-Key already in the group (alone, after the group has
        # committed, it replays or is refused exactly as if it had come second), a malformed
        # order id (its rejection is remembered for the key on its own), and any request
        # whose checks failed unexpectedly (it gets its 500 alone).
        alone: list[Pending] = []
        keys: set[tuple[object, ...]] = set()
        commands: list[OrderCommand] = []
        members: list[tuple[Pending, list[str]]] = []
        for item in items:
            try:
                prepared = self._prepare(operation, item.request, item.raw, item.key, item.target)
            except ApiError as error:
                item.fail(error)
                continue
            except Exception:
                alone.append(item)
                continue
            if isinstance(prepared, Response):
                item.answer(prepared)
                continue
            call, hashed = prepared
            if item.key is not None:
                scoped = (*idempotency.scope(call.caller), item.key)
                if scoped in keys:
                    alone.append(item)
                    continue
                keys.add(scoped)
            try:
                order_id = _order_id(call)
            except ApiError:
                alone.append(item)
                continue
            # The success body, rendered once: for the idempotency record and the answer.
            rendered: list[str] = []
            remember = (
                None
                if item.key is None
                else self._pay_record(call.caller, item.key, hashed, rendered)
            )
            commands.append(OrderCommand(OrderAction.PAY, order_id, call.caller.party_id, remember))
            members.append((item, rendered))
        answers: list[tuple[Pending, Response | ApiError]] = []
        if commands:
            outcomes = platform.run_order_commands(commands)
            for (item, rendered), outcome in zip(members, outcomes, strict=True):
                decision = outcome.decision
                if decision.error is not None:
                    # Refused: the error is the answer even if another request's record for
                    # the key won, as on the ordinary path.
                    answers.append((item, payment_error(decision.error, decision.message)))
                    continue
                text = rendered[0] if rendered else _dumps(_order_json(decision.orders[0]))
                record = outcome.idempotency_record
                if record is not None and (record.body != text or record.status != 200):
                    answers.append((item, _json_response(record.status, record.body, True)))
                else:
                    answers.append((item, _json_response(200, text)))
        # Answers go out once the group has committed, never before.
        for item, answer in answers:
            if isinstance(answer, ApiError):
                item.fail(answer)
            else:
                item.answer(answer)
        self.groups.answer_alone(alone)

    def _pay_record(
        self, caller: Caller, key: str, hashed: str, rendered: list[str]
    ) -> Callable[[Decision], IdempotencyRecord]:
        """What the ordinary path would remember for a payment's decision."""
        party_kind, party_id = idempotency.scope(caller)

        def remember(decision: Decision) -> IdempotencyRecord:
            if decision.error is not None:
                error = payment_error(decision.error, decision.message)
                status = error.status
                text = _dumps(error_body(error.code, error.message))
            else:
                status = 200
                text = _dumps(_order_json(decision.orders[0]))
                rendered.append(text)
            return IdempotencyRecord(
                party_kind, party_id, key, hashed, status, text, self.platform.clock()
            )

        return remember


# ------------------------------------------------------------------- error handlers


async def _api_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return error_response(error)


async def _http_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    message = error.detail if isinstance(error.detail, str) else "error"
    return JSONResponse(
        error_body(code_for_status(error.status_code), message),
        status_code=error.status_code,
        headers=error.headers,
    )


async def _internal_error(_request: Request, error: Exception) -> Response:
    _log.exception("internal error", exc_info=error)
    return JSONResponse(error_body(INTERNAL_ERROR, "internal error"), status_code=500)


# -------------------------------------------------------------------------- factory


def create_app(
    platform: Platform,
    *,
    admin_key: str,
    body_limit_bytes: int = BODY_LIMIT_BYTES_DEFAULT,
    lock: AbstractContextManager[Any] | None = None,
    alipay: AlipayGateway | None = None,
    admission: AdmissionConfig = DEFAULT_ADMISSION,
    rate_limit: RateLimit | None = None,
    switches: Switches | None = None,
    metrics: Metrics | None = None,
    group_commit: GroupCommitConfig | None = DEFAULT_GROUP_COMMIT,
    rate_limiter: RateLimiter | None = None,
    metrics_peers: Callable[[], Sequence[MetricsSnapshot]] | None = None,
) -> Starlette:
    """The REST API over `platform`. `lock` serializes every platform call; pass the one the
    server's background jobs take, so they never share the database connection at once.
    The Alipay Open API gateway (/gateway.do, docs/alipay.md) is mounted beside it; its own
    tables open on the platform's database on first use, unless `alipay` is given.
    In front of every route: admission control by priority class, the per-key rate limit and
    the degradation switches (pass `switches` to share them with the background jobs);
    GET /metrics (admin key) exposes `metrics` (docs/operations.md).
    Single payments (`POST /v1/orders/{order_id}/pay`) are paid in groups, one commit per
    group (group_commit.py), as `group_commit` bounds them; None pays each on its own.
    Several server processes share `rate_limiter` (instead of one made from `rate_limit`) and
    count each other's metrics through `metrics_peers` (serve.py)."""
    if not admin_key:
        raise ValueError("an admin key is required")
    if body_limit_bytes <= 0:
        raise ValueError("body_limit_bytes must be positive")
    if rate_limit is not None and rate_limiter is not None:
        raise ValueError("pass rate_limit or rate_limiter, not both (the limiter has its limit)")
    api = _Api(platform, admin_key, body_limit_bytes, lock or threading.RLock())
    gateway = alipay or AlipayGateway(platform, lock=api.lock)
    switches = switches or Switches()
    metrics = metrics or Metrics()
    controller = Admission(admission)
    ledger_totals = LedgerTotals(platform, api.lock)
    operations = (*OPERATIONS, *switch_operations(switches), *bulk_operations(gateway, metrics))
    document = build_document(operations)
    if group_commit is not None:
        pay = next(operation for operation in OPERATIONS if operation.handler is pay_order)
        api.groups = GroupCommitter(
            api.lock,
            lambda items: api.pay_group(pay, items),
            lambda item: api._handle(pay, item.request, item.raw, item.key, item.target),
            group_commit,
            metrics.group_started,
            metrics.group_fell_back,
        )
    groups = api.groups

    async def metrics_page(request: Request) -> Response:
        api._require_admin(request)
        return await run_in_threadpool(
            lambda: Response(
                metrics.render(
                    controller,
                    switches,
                    ledger_totals,
                    groups.depth if groups else None,
                    peers=metrics_peers() if metrics_peers is not None else (),
                ),
                media_type=METRICS_CONTENT_TYPE,
            )
        )

    @asynccontextmanager
    async def lifespan(_application: Starlette) -> AsyncIterator[None]:
        yield
        # The group worker finishes (or refuses with 503) every payment still queued.
        if groups is not None:
            await run_in_threadpool(groups.close)

    async def openapi(_request: Request) -> Response:
        return JSONResponse(document)

    async def docs(_request: Request) -> Response:
        return HTMLResponse(DOCS_HTML)

    routes = [api.endpoint(operation) for operation in operations]
    routes += [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
    ]
    routes += alipay_routes(gateway, admin_key)
    index = RouteIndex(routes)
    application = Starlette(
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        middleware=[
            Middleware(AbsoluteFormPaths),
            Middleware(
                Edge,
                index=index,
                admission=controller,
                limiter=rate_limiter or RateLimiter(rate_limit),
                switches=switches,
                metrics=metrics,
            ),
        ],
    )
    # Starlette's own router tries every route in turn; this one looks the route up.
    application.router = IndexedRouter(index, lifespan=lifespan)
    application.state.admission = controller
    application.state.switches = switches
    application.state.metrics = metrics
    application.state.group_commit = groups
    return application
