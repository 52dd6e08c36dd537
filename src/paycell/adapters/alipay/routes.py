"""The gateway's HTTP routes, mounted into the REST app by `create_app`.

- `GET|POST /gateway.do`: the Open API (parameters in the query string and/or a form body).
- `GET /alipay/cashier/{trade_no}`: the cashier page a qr_code or a page/wap pay opens; the
  buyer signs in with their user id and paycell API key and pays (`POST` to the same URL),
  then the browser returns to the trade's return_url with Alipay's signed return parameters.
- `POST /alipay/buyer/payment-codes`: a one-time payment code for bar_code pay
  (`Authorization: Bearer <user API key>`).
- `POST /alipay/buyer/pay`: pay a scanned qr_code (or a trade_no) from the wallet, as JSON.
- `GET /alipay/bills/{token}.csv`: a bill file from bill.downloadurl.query (30 s link).
- `POST /alipay/admin/apps`: register an app (admin key); `GET /alipay/platform-public-key`.
"""

import hmac
import html
import json
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from paycell.adapters.alipay import gateway as gw
from paycell.adapters.alipay.gateway import AlipayGateway
from paycell.adapters.alipay.signing import InvalidKeyError
from paycell.core.payments.records import Order, OrderStatus, PartyKind

BODY_LIMIT_BYTES: Final = 64 * 1024


def bearer_token(authorization: str | None) -> str | None:
    """The key of `Authorization: Bearer <key>` (as the REST API reads it)."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token and len(token) <= 255 else None


async def _body(request: Request) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > BODY_LIMIT_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _form(raw: bytes) -> dict[str, str] | None:
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except (UnicodeDecodeError, ValueError):
        return None


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width"><title>{html.escape(title)}'
        "</title><style>body{font-family:sans-serif;max-width:28rem;margin:2rem auto}"
        "label{display:block;margin:.5rem 0}input{width:100%}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
    )


def alipay_routes(gateway: AlipayGateway, admin_key: str) -> list[Route]:
    async def gateway_do(request: Request) -> Response:
        raw = await _body(request) if request.method == "POST" else b""
        query = _form(request.url.query.encode("latin-1", "replace")) if request.url.query else {}
        form = _form(raw) if raw is not None else None
        base_url = str(request.base_url)
        if query is None or form is None:
            answer = await run_in_threadpool(
                gateway.error_answer,
                dict(query or {}).get("method", ""),
                gw.AlipayError(
                    "40002", "isv.invalid-charset", "parameters must be UTF-8 and at most 64 KiB"
                ),
            )
        else:
            answer = await run_in_threadpool(gateway.call, {**query, **form}, base_url)
        if answer.redirect:
            return RedirectResponse(answer.redirect, status_code=302)
        if (
            answer.content.get("code") != "10000"
            and str({**(query or {}), **(form or {})}.get("method", "")) in gw.PAGE_METHODS
        ):
            return _page(
                "支付宝 paycell: 错误",
                "<p>{}</p><p><code>{}</code> {}</p>".format(
                    html.escape(str(answer.content.get("sub_msg", ""))),
                    html.escape(str(answer.content.get("sub_code", ""))),
                    html.escape(str(answer.content.get("code", ""))),
                ),
                400,
            )
        return Response(answer.body, media_type="application/json;charset=utf-8")

    def _order(trade_no: str) -> Order | None:
        order_id = gw.order_id_of_trade_no(trade_no)
        with gateway.lock:
            order = gateway.platform.get_order(order_id) if order_id is not None else None
        return order if order is not None and gw.trade_no(order) == trade_no else None

    def cashier_page(trade_no: str, message: str = "") -> Response:
        order = _order(trade_no)
        if order is None:
            return _page("支付宝 paycell", "<p>交易不存在 (ACQ.TRADE_NOT_EXIST)</p>", 404)
        summary = (
            f"<p>{html.escape(order.subject)}</p><p><strong>¥{gw.yuan(order.amount)}</strong></p>"
            f"<p>交易号 {html.escape(trade_no)} · {order.status.value}</p>"
        )
        if order.status is not OrderStatus.WAIT_BUYER_PAY:
            return _page("支付宝 paycell 收银台", summary)
        form = (f'<p style="color:#b00">{html.escape(message)}</p>' if message else "") + (
            f'<form method="post" action="/alipay/cashier/{html.escape(trade_no)}">'
            '<label>User id <input name="user_id" inputmode="numeric" required></label>'
            '<label>API key <input name="api_key" type="password" required></label>'
            '<button type="submit">确认付款 Pay</button></form>'
        )
        return _page("支付宝 paycell 收银台", summary + form)

    async def cashier(request: Request) -> Response:
        trade_no = request.path_params["trade_no"]
        if request.method == "GET":
            return await run_in_threadpool(cashier_page, trade_no)
        raw = await _body(request)
        form = _form(raw) if raw is not None else None
        return await run_in_threadpool(_cashier_pay, trade_no, form or {})

    def _user(api_key: str | None, user_id: str | None = None) -> int | None:
        if not api_key:
            return None
        with gateway.lock:
            party = gateway.platform.authenticate(api_key)
        if party is None or party[0] is not PartyKind.USER:
            return None
        if user_id is not None and user_id.strip() != str(party[1]):
            return None
        return party[1]

    def _cashier_pay(trade_no: str, form: dict[str, str]) -> Response:
        order = _order(trade_no)
        if order is None:
            return cashier_page(trade_no)
        user_id = _user(form.get("api_key"), form.get("user_id", ""))
        if user_id is None:
            return cashier_page(trade_no, "用户名或 API key 不正确 (sign-in failed)")
        decision = gateway.pay_on_cashier(order.id, user_id)
        if not decision.ok:
            assert decision.error is not None
            return cashier_page(trade_no, f"支付失败: {decision.error.value}: {decision.message}")
        paid = decision.orders[0]
        with gateway.lock:
            trade = gateway.store.trade(paid.id)
            params = gateway.return_params(paid) if trade and trade.return_url else {}
        if trade is not None and trade.return_url:
            separator = "&" if "?" in trade.return_url else "?"
            return RedirectResponse(
                trade.return_url + separator + urlencode(params), status_code=303
            )
        return _page("支付成功", f"<p>已支付 ¥{gw.yuan(paid.amount)} · {paid.status.value}</p>")

    async def payment_code(request: Request) -> Response:
        def work() -> Response:
            user_id = _user(bearer_token(request.headers.get("authorization")))
            if user_id is None:
                return _error(401, "unauthorized", "send a user's API key as a Bearer token")
            with gateway.lock:
                code = gateway.issue_payment_code(user_id)
            return JSONResponse(
                {
                    "auth_code": code.code,
                    "user_id": user_id,
                    "expires_at": gw.beijing_time(code.expires_at),
                    "expires_in": gw.PAYMENT_CODE_SECONDS,
                },
                status_code=201,
            )

        return await run_in_threadpool(work)

    async def buyer_pay(request: Request) -> Response:
        raw = await _body(request)

        def work() -> Response:
            user_id = _user(bearer_token(request.headers.get("authorization")))
            if user_id is None:
                return _error(401, "unauthorized", "send a user's API key as a Bearer token")
            try:
                body = json.loads(raw or b"")
            except ValueError:
                return _error(400, "malformed_json", "the body must be JSON")
            target = body.get("qr_code") if isinstance(body, dict) else None
            if not isinstance(target, str) or not target:
                return _error(422, "invalid_field", "qr_code: the scanned URL or a trade_no")
            order = _order(target.rstrip("/").rsplit("/", 1)[-1])
            if order is None:
                return _error(404, "order_not_found", "no such trade")
            decision = gateway.pay_on_cashier(order.id, user_id)
            if not decision.ok:
                assert decision.error is not None
                return _error(409, decision.error.value, decision.message)
            paid = decision.orders[0]
            return JSONResponse(
                {
                    "trade_no": gw.trade_no(paid),
                    "out_trade_no": paid.out_trade_no,
                    "trade_status": paid.status.value,
                    "total_amount": gw.yuan(paid.amount),
                }
            )

        return await run_in_threadpool(work)

    async def bill(request: Request) -> Response:
        token = request.path_params["token"]

        def work() -> Response:
            with gateway.lock:
                found = gateway.store.bill(token)
                now = gateway.platform.clock()
            if found is None or found.expires_at <= now:
                return Response("the bill link is unknown or has expired", 404)
            return Response(
                gateway.bill_csv(found),
                media_type="text/csv; charset=utf-8",
                headers={
                    "Content-Disposition": (
                        f'attachment; filename="{gw.alipay_user_id(found.merchant_id)}'
                        f'_{found.bill_date.replace("-", "")}_{found.bill_type}.csv"'
                    )
                },
            )

        return await run_in_threadpool(work)

    async def register_app(request: Request) -> Response:
        raw = await _body(request)

        def work() -> Response:
            token = bearer_token(request.headers.get("authorization"))
            if token is None or not hmac.compare_digest(token.encode(), admin_key.encode()):
                return _error(401, "unauthorized", "send the admin key as a Bearer token")
            try:
                body = json.loads(raw or b"")
            except ValueError:
                return _error(400, "malformed_json", "the body must be JSON")
            if not isinstance(body, dict):
                return _error(400, "malformed_json", "the body must be a JSON object")
            merchant_id = body.get("merchant_id")
            public_key = body.get("public_key")
            if isinstance(merchant_id, bool) or not isinstance(merchant_id, int):
                return _error(422, "invalid_field", "merchant_id: an integer")
            if not isinstance(public_key, str):
                return _error(422, "invalid_field", "public_key: the app's RSA public key")
            try:
                app = gateway.register_app(merchant_id, public_key)
            except InvalidKeyError as problem:
                return _error(422, "invalid_field", f"public_key: {problem}")
            except ValueError as problem:
                return _error(404, "merchant_not_found", str(problem))
            return JSONResponse(app_json(gateway, app.app_id, merchant_id), status_code=201)

        return await run_in_threadpool(work)

    async def platform_key(_request: Request) -> Response:
        def work() -> Response:
            with gateway.lock:
                return JSONResponse(
                    {
                        "alipay_public_key": gateway.public_key,
                        "alipay_public_key_pem": gateway.public_key_pem,
                    }
                )

        return await run_in_threadpool(work)

    handlers: list[tuple[str, Callable[[Request], Any], list[str]]] = [
        ("/gateway.do", gateway_do, ["GET", "POST"]),
        ("/alipay/cashier/{trade_no}", cashier, ["GET", "POST"]),
        ("/alipay/buyer/payment-codes", payment_code, ["POST"]),
        ("/alipay/buyer/pay", buyer_pay, ["POST"]),
        ("/alipay/bills/{token}.csv", bill, ["GET"]),
        ("/alipay/admin/apps", register_app, ["POST"]),
        ("/alipay/platform-public-key", platform_key, ["GET"]),
    ]
    return [Route(path, endpoint, methods=methods) for path, endpoint, methods in handlers]


def app_json(gateway: AlipayGateway, app_id: str, merchant_id: int) -> dict[str, object]:
    with gateway.lock:
        return {
            "app_id": app_id,
            "merchant_id": merchant_id,
            "alipay_public_key": gateway.public_key,
            "alipay_public_key_pem": gateway.public_key_pem,
            "sign_type": "RSA2",
        }
