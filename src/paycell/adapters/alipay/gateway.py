"""The Alipay Open API gateway over the payment platform: one call of /gateway.do in, one
signed Alipay response out.

`AlipayGateway.call(params, base_url)` runs the pipeline of a request: check the common
parameters (40001 for a missing one, 40002 for a bad one), find the app (isv.invalid-app-id),
verify the RSA2 signature with the app's public key (isv.invalid-signature), parse
biz_content, then run the method as platform commands on the app's merchant. Every answer
is `{"<method>_response": {...}, "sign": "..."}` signed with the platform's private key over
the exact JSON text of the response object. A rejected call changes nothing; an unexpected
failure is 20000 aop.unknow-error, never an HTTP 500.

Identifiers: `trade_no` is the order's creation day (Beijing time, yyyyMMdd) and its platform
id on 20 digits (28 digits, as Alipay's); user and merchant ids appear as Alipay's 16-digit
ids `2088` + the id on 12 digits. Times are Beijing time (UTC+8), `yyyy-MM-dd HH:mm:ss`.
"""

import json
import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import rsa

from paycell.adapters.alipay import signing
from paycell.adapters.alipay.store import App, Bill, GatewayStore, PaymentCode, Trade
from paycell.core.currency import InvalidAmountError, currency_for_code, format_amount, parse_amount
from paycell.core.payments.flows import OUT_TRADE_NO_LENGTH_MAX, TIMEOUT_SECONDS_MAX
from paycell.core.payments.outcomes import Decision, PaymentError
from paycell.core.payments.records import (
    ChannelRequest,
    ChannelRequestStatus,
    Order,
    OrderStatus,
    PartyKind,
    Refund,
)
from paycell.platform import Platform

_log = logging.getLogger(__name__)

CURRENCY: Final = currency_for_code("CNY")
BEIJING: Final = timezone(timedelta(hours=8))
TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
NANOSECONDS_PER_SECOND: Final = 1_000_000_000
# Alipay's limits on one trade: 0.01 to 100,000,000.00 yuan.
AMOUNT_MIN: Final = 1
AMOUNT_MAX: Final = 100_000_000_00
PAYMENT_CODE_SECONDS: Final = 120
BILL_URL_SECONDS: Final = 30
USER_ID_PREFIX: Final = "2088"

MESSAGES: Final = {
    "10000": "Success",
    "20000": "Service Currently Unavailable",
    "20001": "Insufficient Token Permissions",
    "40001": "Missing Required Arguments",
    "40002": "Invalid Arguments",
    "40004": "Business Failed",
    "40006": "Insufficient Permissions",
}

COMMON_REQUIRED: Final = (
    ("app_id", "isv.missing-app-id"),
    ("sign_type", "isv.missing-signature-type"),
    ("sign", "isv.missing-signature"),
    ("timestamp", "isv.missing-timestamp"),
    ("version", "isv.missing-version"),
)


class AlipayError(Exception):
    """An Alipay error answer: code (40002, 40004, ...), sub_code and sub_msg."""

    def __init__(self, code: str, sub_code: str, sub_msg: str) -> None:
        super().__init__(f"{code} {sub_code}: {sub_msg}")
        self.code = code
        self.sub_code = sub_code
        self.sub_msg = sub_msg

    def content(self) -> dict[str, str]:
        return {
            "code": self.code,
            "msg": MESSAGES[self.code],
            "sub_code": self.sub_code,
            "sub_msg": self.sub_msg,
        }


def business(sub_code: str, sub_msg: str) -> AlipayError:
    return AlipayError("40004", sub_code, sub_msg)


def invalid_parameter(sub_msg: str) -> AlipayError:
    return business("ACQ.INVALID_PARAMETER", sub_msg)


# The platform's rejections as Alipay's business errors (some depend on the method).
_PLATFORM_ERRORS: Final[dict[PaymentError, str]] = {
    PaymentError.ORDER_NOT_FOUND: "ACQ.TRADE_NOT_EXIST",
    PaymentError.ORDER_ALREADY_PAID: "ACQ.TRADE_HAS_SUCCESS",
    PaymentError.ORDER_ALREADY_CLOSED: "ACQ.TRADE_HAS_CLOSE",
    PaymentError.ORDER_EXPIRED: "ACQ.TRADE_HAS_CLOSE",
    PaymentError.ORDER_ALREADY_FINISHED: "ACQ.TRADE_HAS_FINISHED",
    PaymentError.ORDER_NOT_PAID: "ACQ.TRADE_STATUS_ERROR",
    PaymentError.ORDER_EXISTS_WITH_DIFFERENT_CONTENT: "ACQ.CONTEXT_INCONSISTENT",
    PaymentError.REFUND_EXCEEDS_AMOUNT_PAID: "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
    PaymentError.REFUND_EXISTS_WITH_DIFFERENT_CONTENT: "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
    PaymentError.USER_NOT_FOUND: "ACQ.BUYER_NOT_EXIST",
    PaymentError.CHANNEL_REQUEST_EXISTS_WITH_DIFFERENT_CONTENT: "PAYMENT_INFO_INCONSISTENCY",
}


def platform_error(decision: Decision, insufficient: str) -> AlipayError:
    assert decision.error is not None
    if decision.error is PaymentError.INSUFFICIENT_FUNDS:
        return business(insufficient, decision.message)
    sub_code = _PLATFORM_ERRORS.get(decision.error, "ACQ.INVALID_PARAMETER")
    return business(sub_code, decision.message)


# ------------------------------------------------------------------------- formats


def yuan(minor_units: int) -> str:
    return format_amount(minor_units, CURRENCY)


def parse_yuan(value: object, name: str) -> int:
    """A decimal yuan amount ("88.88", or a JSON number kept as its text) in fen, exactly;
    more than two decimals, signs, exponents and amounts out of Alipay's range are refused."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise invalid_parameter(f'{name} must be a decimal amount in yuan such as "88.88"')
    try:
        amount = parse_amount(value.strip(), CURRENCY)
    except InvalidAmountError as problem:
        raise invalid_parameter(f"{name}: {problem}") from None
    if not AMOUNT_MIN <= amount <= AMOUNT_MAX:
        raise invalid_parameter(f"{name} must be between 0.01 and 100000000.00")
    return amount


def beijing_time(nanoseconds: int) -> str:
    if nanoseconds <= 0:
        return ""
    moment = datetime.fromtimestamp(nanoseconds / NANOSECONDS_PER_SECOND, BEIJING)
    return moment.strftime(TIME_FORMAT)


def beijing_day_start(day: date) -> int:
    """The first nanosecond of a Beijing calendar day."""
    start = datetime(day.year, day.month, day.day, tzinfo=BEIJING)
    return int(start.timestamp()) * NANOSECONDS_PER_SECOND


def trade_no(order: Order) -> str:
    day = datetime.fromtimestamp(order.created_at / NANOSECONDS_PER_SECOND, BEIJING)
    return f"{day:%Y%m%d}{order.id:020d}"


def order_id_of_trade_no(text: str) -> int | None:
    if len(text) != 28 or not text.isascii() or not text.isdigit():
        return None
    order_id = int(text[8:])
    # Order ids are signed 64-bit in storage: anything larger names no order.
    return order_id if order_id < 1 << 63 else None


def alipay_user_id(party_id: int) -> str:
    return f"{USER_ID_PREFIX}{party_id:012d}"


class _Number(str):
    """A JSON number kept as its exact text (amounts must never pass through a float)."""


def parse_biz_content(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_float=_Number, parse_int=_Number)
    except (ValueError, RecursionError):
        raise AlipayError(
            "40002", "isv.invalid-parameter", "biz_content is not valid JSON"
        ) from None
    if not isinstance(value, dict):
        raise AlipayError("40002", "isv.invalid-parameter", "biz_content must be a JSON object")
    return value


def text_field(
    biz: Mapping[str, Any], name: str, *, required: bool = False, max_length: int = 256
) -> str:
    value = biz.get(name)
    if value is None or value == "":
        if required:
            raise AlipayError("40001", "isv.missing-parameter", f"{name} is required")
        return ""
    if isinstance(value, bool | _Number) or not isinstance(value, str):
        raise invalid_parameter(f"{name} must be a string")
    if len(value) > max_length:
        raise invalid_parameter(f"{name} must be at most {max_length} characters")
    return str(value)


def _timeout_seconds(biz: Mapping[str, Any], now: int) -> int | None:
    """timeout_express ("90m", "2h", "1d", "1c": until the end of today) or time_expire."""
    express = text_field(biz, "timeout_express", max_length=8)
    expire = text_field(biz, "time_expire", max_length=19)
    seconds: int | None = None
    if express:
        number, unit = express[:-1], express[-1:]
        if not (number.isascii() and number.isdigit()) or unit not in "mhdc" or int(number) < 1:
            raise invalid_parameter("timeout_express must look like 90m, 2h, 1d or 1c")
        if unit == "c":
            today = datetime.fromtimestamp(now / NANOSECONDS_PER_SECOND, BEIJING).date()
            end = beijing_day_start(today + timedelta(days=1))
            seconds = max(1, (end - now) // NANOSECONDS_PER_SECOND)
        else:
            seconds = int(number) * {"m": 60, "h": 3600, "d": 86400}[unit]
    if expire:
        try:
            moment = datetime.strptime(expire, TIME_FORMAT).replace(tzinfo=BEIJING)
        except ValueError:
            raise invalid_parameter("time_expire must be yyyy-MM-dd HH:mm:ss") from None
        until = int(moment.timestamp()) * NANOSECONDS_PER_SECOND - now
        if until <= 0:
            raise invalid_parameter("time_expire is in the past")
        seconds = until // NANOSECONDS_PER_SECOND
    if seconds is not None and not 1 <= seconds <= TIMEOUT_SECONDS_MAX:
        raise invalid_parameter("the trade's time limit is out of range")
    return seconds


# ------------------------------------------------------------------------ the gateway


@dataclass(slots=True)
class Call:
    """One verified request: the app, all parameters, the parsed biz_content."""

    app: App
    method: str
    params: dict[str, str]
    biz: dict[str, Any]
    base_url: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What /gateway.do sends back: a signed JSON body, or (page and wap pay) a redirect to
    the cashier page."""

    body: str
    redirect: str = ""
    # The response object (unsigned), for tests and the cashier.
    content: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.content.get("code") == "10000"


Handler = Callable[["AlipayGateway", Call], dict[str, Any]]
PAGE_METHODS: Final = frozenset({"alipay.trade.page.pay", "alipay.trade.wap.pay"})


class AlipayGateway:
    """The gateway over one platform. The store opens on first use (on the platform's own
    database URL unless one is given), so an app that never sees an Alipay call pays
    nothing for it. `lock` is the one every platform call of the server takes."""

    def __init__(
        self,
        platform: Platform,
        *,
        store: GatewayStore | None = None,
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self.platform = platform
        self.lock: AbstractContextManager[Any] = lock or nullcontext()
        self._store = store
        self._private_key: rsa.RSAPrivateKey | None = None
        self._public_key_pem = ""
        self._opening = threading.Lock()
        self._app_keys: dict[str, tuple[str, rsa.RSAPublicKey]] = {}

    # ------------------------------------------------------------------------ plumbing

    @property
    def store(self) -> GatewayStore:
        with self._opening:
            if self._store is None:
                self._store = GatewayStore(self.platform.store.url)
            return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def _keys(self) -> tuple[rsa.RSAPrivateKey, str]:
        if self._private_key is None:
            saved = self.store.platform_key()
            if saved is None:
                key = signing.generate_private_key()
                saved = self.store.save_platform_key(
                    signing.private_key_pem(key),
                    signing.public_key_pem(key.public_key()),
                    self.platform.clock(),
                )
            self._private_key = signing.load_private_key(saved[0])
            self._public_key_pem = saved[1]
        return self._private_key, self._public_key_pem

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        return self._keys()[0]

    @property
    def public_key_pem(self) -> str:
        """The platform's public key (PEM): merchants verify responses and notifications."""
        return self._keys()[1]

    @property
    def public_key(self) -> str:
        """The platform's public key as Alipay's console shows it (bare base64)."""
        return signing.bare_base64(self.public_key_pem)

    def signed_body(self, response_key: str, content: Mapping[str, Any]) -> str:
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        signature = signing.sign(self.private_key, text)
        return f'{{"{response_key}":{text},"sign":"{signature}"}}'

    def sign_params(self, params: Mapping[str, str]) -> str:
        return signing.sign_params(self.private_key, params)

    # -------------------------------------------------------------------------- apps

    def register_app(self, merchant_id: int, public_key: str) -> App:
        """A new app for a merchant with the app's RSA public key (PEM or bare base64).
        Raises ValueError for an unknown merchant or a key that is not a usable RSA key."""
        key = signing.load_public_key(public_key)
        with self.lock:
            if self.platform.get_merchant(merchant_id) is None:
                raise ValueError(f"no merchant {merchant_id}")
            app = App(
                app_id="2021" + "".join(secrets.choice("0123456789") for _ in range(12)),
                merchant_id=merchant_id,
                public_key=signing.public_key_pem(key),
                created_at=self.platform.clock(),
            )
            self.store.add_app(app)
        return app

    def _app_key(self, app: App) -> rsa.RSAPublicKey:
        cached = self._app_keys.get(app.app_id)
        if cached is None or cached[0] != app.public_key:
            cached = (app.public_key, signing.load_public_key(app.public_key))
            self._app_keys[app.app_id] = cached
        return cached[1]

    # ------------------------------------------------------------------------ a call

    def call(self, params: Mapping[str, str], base_url: str) -> Answer:
        """One request to /gateway.do: `params` are its query and form parameters together."""
        method = params.get("method", "")
        known = method in METHODS
        response_key = (
            method.replace(".", "_") + "_response"
            if method and method.replace(".", "").isascii() and method.replace(".", "").isalpha()
            else "error_response"
        )
        try:
            with self.lock:
                call = self._verified(dict(params), base_url)
                content = {"code": "10000", "msg": "Success", **METHODS[call.method](self, call)}
        except AlipayError as error:
            content = error.content()
        except Exception:  # an Alipay-style answer, never a 500
            _log.exception("alipay gateway: %s failed", method)
            content = AlipayError("20000", "aop.unknow-error", "internal error").content()
        if known and method in PAGE_METHODS and content.get("code") == "10000":
            return Answer("", redirect=str(content["cashier_url"]), content=content)
        return Answer(self.signed_body(response_key, content), content=content)

    def error_answer(self, method: str, error: AlipayError) -> Answer:
        """A signed error answer for a request that could not even be read."""
        name = method.replace(".", "")
        key = (
            method.replace(".", "_") + "_response"
            if name.isascii() and name.isalpha()
            else "error_response"
        )
        return Answer(self.signed_body(key, error.content()), content=error.content())

    def _verified(self, params: dict[str, str], base_url: str) -> Call:
        charset = params.get("charset", "utf-8").lower()
        if charset not in ("utf-8", "utf8"):
            raise AlipayError("40002", "isv.invalid-charset", "only charset utf-8 is supported")
        method = params.get("method", "")
        if not method:
            raise AlipayError("40001", "isv.missing-method", "method is required")
        for name, sub_code in COMMON_REQUIRED:
            if not params.get(name):
                raise AlipayError("40001", sub_code, f"{name} is required")
        app = self.store.app(params["app_id"])
        if app is None:
            raise AlipayError("40002", "isv.invalid-app-id", "no such app_id")
        if method not in METHODS:
            raise AlipayError("40002", "isv.invalid-method", f"unknown method {method!r}")
        if params["sign_type"] != "RSA2":
            raise AlipayError("40002", "isv.invalid-signature-type", "only RSA2 is supported")
        if not signing.verify_params(self._app_key(app), params, signing.REQUEST_EXCLUDED):
            raise AlipayError(
                "40002",
                "isv.invalid-signature",
                "the signature does not verify with the app's public key",
            )
        if params.get("format", "json").lower() != "json":
            raise AlipayError("40002", "isv.invalid-format", "only format JSON is supported")
        try:
            datetime.strptime(params["timestamp"], TIME_FORMAT)
        except ValueError:
            raise AlipayError(
                "40002", "isv.invalid-timestamp", "timestamp must be yyyy-MM-dd HH:mm:ss"
            ) from None
        if params["version"] != "1.0":
            raise AlipayError("40002", "isv.invalid-version", "version must be 1.0")
        if params.get("app_auth_token"):
            raise AlipayError(
                "20001",
                "aop.invalid-app-auth-token",
                "third-party app authorization (app_auth_token) is not supported",
            )
        for name in ("notify_url", "return_url"):
            url = params.get(name, "")
            if url and (len(url) > 2048 or not url.startswith(("http://", "https://"))):
                raise AlipayError(
                    "40002", "isv.invalid-parameter", f"{name} must be an http(s) URL"
                )
        biz_text = params.get("biz_content")
        if not biz_text:
            raise AlipayError("40001", "isv.missing-biz-content", "biz_content is required")
        return Call(app, method, params, parse_biz_content(biz_text), base_url.rstrip("/"))

    # ----------------------------------------------------------------------- helpers

    def _order_of(self, call: Call) -> Order:
        """The trade named by trade_no or out_trade_no, if it is the app merchant's."""
        wanted_trade_no = text_field(call.biz, "trade_no", max_length=64)
        out_trade_no = text_field(call.biz, "out_trade_no", max_length=OUT_TRADE_NO_LENGTH_MAX)
        order: Order | None = None
        if wanted_trade_no:
            order_id = order_id_of_trade_no(wanted_trade_no)
            order = self.platform.get_order(order_id) if order_id is not None else None
            if order is not None and trade_no(order) != wanted_trade_no:
                order = None
        elif out_trade_no:
            order = self.platform.get_order_by_out_trade_no(call.app.merchant_id, out_trade_no)
        else:
            raise AlipayError(
                "40001", "isv.missing-parameter", "trade_no or out_trade_no is required"
            )
        if order is None or order.merchant_id != call.app.merchant_id:
            raise business("ACQ.TRADE_NOT_EXIST", "no such trade")
        if out_trade_no and order.out_trade_no != out_trade_no:
            raise business("ACQ.TRADE_NOT_EXIST", "trade_no and out_trade_no do not match")
        return order

    def _new_trade(self, call: Call, *, default_timeout: int | None = None) -> Order:
        """Create (or find again) the order of a precreate/create/pay/page pay call."""
        biz = call.biz
        out_trade_no = text_field(biz, "out_trade_no", required=True, max_length=64)
        amount = parse_yuan(biz.get("total_amount"), "total_amount")
        subject = text_field(biz, "subject", required=True, max_length=256)
        currency = text_field(biz, "trans_currency", max_length=8) or "CNY"
        if currency.upper() != "CNY":
            raise invalid_parameter("only trans_currency CNY is supported")
        timeout = _timeout_seconds(biz, self.platform.clock()) or default_timeout
        existing = self.platform.get_order_by_out_trade_no(call.app.merchant_id, out_trade_no)
        if existing is not None:
            if existing.status in (OrderStatus.TRADE_SUCCESS, OrderStatus.TRADE_FINISHED):
                raise business("ACQ.TRADE_HAS_SUCCESS", "the trade has been paid")
            if existing.status is OrderStatus.TRADE_CLOSED:
                raise business("ACQ.TRADE_HAS_CLOSE", "the trade is closed")
        decision = self.platform.create_order(
            call.app.merchant_id,
            out_trade_no,
            amount,
            subject=subject,
            timeout_seconds=timeout,
        )
        if not decision.ok:
            raise platform_error(decision, "ACQ.SYSTEM_ERROR")
        order = decision.orders[0]
        self.store.add_trade(
            Trade(
                order.id,
                call.app.app_id,
                call.method,
                call.params.get("notify_url", ""),
                call.params.get("return_url", ""),
                OrderStatus.WAIT_BUYER_PAY.value,
                0,
                self.platform.clock(),
            )
        )
        return order

    def cashier_url(self, base_url: str, order: Order) -> str:
        return f"{base_url.rstrip('/')}/alipay/cashier/{trade_no(order)}"

    def trade_fields(self, order: Order) -> dict[str, Any]:
        fields: dict[str, Any] = {"trade_no": trade_no(order), "out_trade_no": order.out_trade_no}
        return fields

    def paid_fields(self, order: Order) -> dict[str, Any]:
        amount = yuan(order.amount)
        return {
            **self.trade_fields(order),
            "buyer_logon_id": alipay_user_id(order.buyer_id),
            "buyer_user_id": alipay_user_id(order.buyer_id),
            "total_amount": amount,
            "receipt_amount": amount,
            "buyer_pay_amount": amount,
            "invoice_amount": amount,
            "point_amount": "0.00",
            "gmt_payment": beijing_time(order.paid_at),
            "fund_bill_list": [{"fund_channel": "ALIPAYACCOUNT", "amount": amount}],
        }

    # ----------------------------------------------------------------------- buyers

    def issue_payment_code(self, user_id: int) -> PaymentCode:
        """A one-time payment code (18 digits, as Alipay's start 25 to 30) for bar_code pay."""
        now = self.platform.clock()
        code = PaymentCode(
            "28" + "".join(secrets.choice("0123456789") for _ in range(16)),
            user_id,
            now + PAYMENT_CODE_SECONDS * NANOSECONDS_PER_SECOND,
            0,
            0,
        )
        self.store.add_payment_code(code)
        return code

    def pay_on_cashier(self, order_id: int, user_id: int) -> Decision:
        """The buyer, signed in on the cashier page (or scanning with the CLI), pays."""
        with self.lock:
            return self.platform.pay_order(order_id, user_id)

    def return_params(self, order: Order) -> dict[str, str]:
        """The signed parameters of the browser's return to return_url after page pay."""
        trade = self.store.trade(order.id)
        params = {
            "app_id": trade.app_id if trade else "",
            "auth_app_id": trade.app_id if trade else "",
            "charset": "utf-8",
            "method": f"{trade.method if trade else 'alipay.trade.page.pay'}.return",
            "out_trade_no": order.out_trade_no,
            "seller_id": alipay_user_id(order.merchant_id),
            "timestamp": beijing_time(self.platform.clock()),
            "total_amount": yuan(order.amount),
            "trade_no": trade_no(order),
            "version": "1.0",
        }
        params = {k: v for k, v in params.items() if v}
        params["sign"] = self.sign_params(params)
        params["sign_type"] = "RSA2"
        return params

    # ------------------------------------------------------------------------ bills

    def bill_csv(self, bill: Bill) -> str:
        """The day's trades and refunds of a merchant in Alipay's detail bill layout."""
        day = date.fromisoformat(bill.bill_date)
        start = beijing_day_start(day)
        end = beijing_day_start(day + timedelta(days=1))
        rows: list[list[str]] = []
        trades = refunds = 0
        after = 0
        with self.lock:
            while True:
                orders = self.platform.list_orders(bill.merchant_id, after, 500)
                if not orders:
                    break
                after = orders[-1].id
                for order in orders:
                    if start <= order.paid_at < end:
                        trades += 1
                        rows.append(_bill_row(order, "交易", order.amount, order.fee, ""))
                    if order.refunded_amount:
                        for refund in self.platform.refunds_of_order(order.id):
                            if start <= refund.created_at < end:
                                refunds += 1
                                rows.append(_refund_row(order, refund))
        lines = [
            "#支付宝业务明细查询",
            f"#账号：[{alipay_user_id(bill.merchant_id)}0156]",
            f"#起始日期：[{day:%Y年%m月%d日} 00:00:00]   "
            f"终止日期：[{day + timedelta(days=1):%Y年%m月%d日} 00:00:00]",
            "#-----------------------------------------业务明细列表----------------------------------------",
            ",".join(BILL_COLUMNS),
            *(",".join(_csv(cell) for cell in row) for row in rows),
            "#-----------------------------------------业务明细列表结束------------------------------------",
            f"#交易合计：{trades}笔，退款合计：{refunds}笔",
            f"#导出时间：[{beijing_time(self.platform.clock())}]",
        ]
        return "\r\n".join(lines) + "\r\n"


BILL_COLUMNS: Final = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
)


def _csv(cell: str) -> str:
    if any(c in cell for c in ',"\r\n'):
        return '"' + cell.replace('"', '""') + '"'
    # Alipay's bills carry numbers as text with a tab, so spreadsheets keep long ids whole.
    return cell + "\t" if cell.isdigit() and len(cell) > 15 else cell


def _bill_row(order: Order, kind: str, amount: int, fee: int, request_no: str) -> list[str]:
    sign = "-" if kind == "退款" else ""
    done = order.paid_at
    return [
        trade_no(order),
        order.out_trade_no,
        kind,
        order.subject,
        beijing_time(order.created_at),
        beijing_time(done),
        "",
        "",
        "",
        "",
        alipay_user_id(order.buyer_id),
        f"{sign}{yuan(amount)}",
        f"{sign}{yuan(amount)}",
        "0.00",
        "0.00",
        "0.00",
        "0.00",
        "0.00",
        "",
        "0.00",
        "0.00",
        request_no,
        f"{'' if sign else '-'}{yuan(fee)}" if fee else "0.00",
        "0.00",
        "",
    ]


def _refund_row(order: Order, refund: Refund) -> list[str]:
    row = _bill_row(order, "退款", refund.amount, refund.fee_refunded, refund.out_request_no)
    row[5] = beijing_time(refund.created_at)
    return row


# ------------------------------------------------------------------------- methods


def _precreate(gateway: AlipayGateway, call: Call) -> dict[str, Any]:
    order = gateway._new_trade(call)
    return {
        "out_trade_no": order.out_trade_no,
        "qr_code": gateway.cashier_url(call.base_url, order),
    }


def _create(gateway: AlipayGateway, call: Call) -> dict[str, Any]:
    order = gateway._new_trade(call)
    return gateway.trade_fields(order)


def _page_pay(gateway: AlipayGateway, call: Call) -> dict[str, Any]:
    order = gateway._new_trade(call)
    return {**gateway.trade_fields(order), "cashier_url": gateway.cashier_url(call.base_url, order)}


def _pay(gateway: AlipayGateway, call: Call) -> dict[str, Any]:
    biz = call.biz
    scene = text_field(biz, "scene", required=True, max_length=32)
    if scene not in ("bar_code", "wave_code"):
        raise invalid_parameter("scene must be bar_code or wave_code")
    auth_code = text_field(biz, "auth_code", required=True, max_length=32)
    # Check everything a payment needs before anything is written.
    out_trade_no = text_field(biz, "out_trade_no", required=True, max_length=64)
    amount = parse_yuan(biz.get("total_amount"), "total_amount")
    text_field(biz, "subject", required=True)
    store = gateway.store
    platform = gateway.platform
    now = platform.clock()
    code = store.payment_code(auth_code)
    existing = platform.get_order_by_out_trade_no(call.app.merchant_id, out_trade_no)
    if (
        code is not None
        and existing is not None
        and code.order_id == existing.id
        and existing.paid_at
        and existing.buyer_id == code.user_id
        and existing.amount == amount
    ):
        # A till retrying after a lost response: this code already paid this trade.
        return gateway.paid_fields(existing)
    if code is None or code.used_at or code.expires_at <= now:
        raise business("ACQ.PAYMENT_AUTH_CODE_INVALID", "the payment code is invalid or used")
    wallet = platform.balance(PartyKind.USER, code.user_id)
    available = (
        wallet.credits_posted - wallet.debits_posted - wallet.debits_pending if wallet else 0
    )
    if (existing is None or existing.status is OrderStatus.WAIT_BUYER_PAY) and available < amount:
        raise business("ACQ.BUYER_BALANCE_NOT_ENOUGH", "the buyer's balance is not enough")
    if not store.use_payment_code(auth_code, now):
        raise business("ACQ.PAYMENT_AUTH_CODE_INVALID", "the payment code is invalid or used")
    created_now = existing is None
    try:
        order = gateway._new_trade(call)
    except AlipayError:
        store.release_payment_code(auth_code)
        raise
    decision = platform.pay_order(order.id, code.user_id)
    if not decision.ok:
        store.release_payment_code(auth_code)
        if created_now:
            platform.cancel_order(order.id, call.app.merchant_id)
        raise platform_error(decision, "ACQ.BUYER_BALANCE_NOT_ENOUGH")
    store.payment_code_paid(auth_code, order.id)
    return gateway.paid_fields(decision.orders[0])


def _query(gateway: AlipayGateway, call: Call) -> dict[str, Any]:
    order = gateway._order_of(call)
    fields: dict[str, Any] = {
        **gateway.trade_fields(order),
        "trade_status": order.status.value,
        "total_amount": yuan(order.amount),
    }
    if order.paid_at:
        fields.update(gateway.paid_fields(order))
        fields["send_pay_date"] = fields.pop("gmt_payment")
        fields["trade_status"] = order.status.value
    return fields


def _refund(gateway: AlipayGateway, call: Call) -> dict[str, Any]:
    order = gateway._order_of(call)
    amount = parse_yuan(call.biz.get("refund_amount"), "refund_amount")
    request_no = text_field(call.biz, "out_request_no", max_length=64) or order.out_trade_no
    reason = text_field(call.biz, "refund_reason", max_length=256)
    decision = gateway.platform.refund(order.id, order.merchant_id, request_no, amount, reason)
    if not decision.ok:
        raise platform_error(decision, "ACQ.SELLER_BALANCE_NOT_ENOUGH")
    after = decision.orders[0] if decision.orders else gateway.platform.get_order(order.id)
    assert after is not None
    refund = decision.refunds[0] if decision.refunds else None
    return {
        **gateway.trade_fields(after),
        "buyer_logon_id": alipay_user_id(after.buyer_id),
        "buyer_user_id": alipay_user_id(after.buyer_id),
        "fund_change": "N" if decision.replayed else "Y",
        "refund_fee": yuan(after.refunded_amount),
        "send_back_fee": yuan(refund.amount if refund else amount),
        "gmt_refund_pay": beijing_time(refund.created_at if refund else gateway.platform.clock()),
    }


def _refund_query(gateway: AlipayGateway, call: Call) -> dict[str, Any]:
    order = gateway._order_of(call)
    request_no = text_field(call.biz, "out_request_no", required=True, max_length=64)
    fields: dict[str, Any] = gateway.trade_fields(order)
    for refund in gateway.platform.refunds_of_order(order.id):
        if refund.out_request_no == request_no:
            fields.update(
                {
                    "out_request_no": request_no,
                    "total_amount": yuan(order.amount),
                    "refund_amount": yuan(refund.amount),
                    "refund_status": "REFUND_SUCCESS",
                    "refund_reason": refund.reason,
                    "gmt_refund_pay": beijing_time(refund.created_at),
                }
            )
            if not refund.reason:
                fields.pop("refund_reason")
    return fields


def _close(gateway: AlipayGateway, call: Call) -> dict[str, Any]:
    order = gateway._order_of(call)
    if order.status is not OrderStatus.WAIT_BUYER_PAY:
        raise business("ACQ.TRADE_STATUS_ERROR", f"the trade is {order.status.value}")
    decision = gateway.platform.cancel_order(order.id, order.merchant_id)
    if not decision.ok:
        raise platform_error(decision, "ACQ.SYSTEM_ERROR")
    return gateway.trade_fields(order)


def _cancel(gateway: AlipayGateway, call: Call) -> dict[str, Any]:
    order = gateway._order_of(call)
    platform = gateway.platform
    fields = {**gateway.trade_fields(order), "retry_flag": "N"}
    if order.status is OrderStatus.WAIT_BUYER_PAY:
        decision = platform.cancel_order(order.id, order.merchant_id)
        if not decision.ok:
            raise platform_error(decision, "ACQ.SYSTEM_ERROR")
        return {**fields, "action": "close"}
    if order.status is OrderStatus.TRADE_FINISHED:
        raise business("ACQ.TRADE_HAS_FINISHED", "the trade is finished")
    if not order.paid_at:
        return {**fields, "action": "close"}
    remaining = order.amount - order.refunded_amount
    if remaining > 0:
        decision = platform.refund(
            order.id, order.merchant_id, f"cancel-{trade_no(order)}", remaining, "cancelled"
        )
        if not decision.ok:
            raise platform_error(decision, "ACQ.SELLER_BALANCE_NOT_ENOUGH")
    return {**fields, "action": "refund", "gmt_refund_pay": beijing_time(platform.clock())}


_TRANSFER_STATUS: Final = {
    ChannelRequestStatus.PENDING: "DEALING",
    ChannelRequestStatus.SUCCEEDED: "SUCCESS",
    ChannelRequestStatus.FAILED: "FAIL",
}


def _transfer(gateway: AlipayGateway, call: Call) -> dict[str, Any]:
    out_biz_no = text_field(call.biz, "out_biz_no", required=True, max_length=64)
    amount = parse_yuan(call.biz.get("trans_amount"), "trans_amount")
    product_code = text_field(call.biz, "product_code", max_length=64)
    if product_code and product_code != "TRANS_ACCOUNT_NO_PWD":
        raise invalid_parameter("product_code must be TRANS_ACCOUNT_NO_PWD")
    payee = call.biz.get("payee_info")
    if payee is not None and not isinstance(payee, dict):
        raise invalid_parameter("payee_info must be an object")
    decision = gateway.platform.request_payout(call.app.merchant_id, out_biz_no, amount)
    if not decision.ok:
        raise platform_error(decision, "PAYER_BALANCE_NOT_ENOUGH")
    request: ChannelRequest = decision.channel_requests[0]
    return {
        "out_biz_no": out_biz_no,
        "order_id": str(request.id),
        "pay_fund_order_id": request.channel_reference or str(request.id),
        "status": _TRANSFER_STATUS[request.status],
        "trans_date": beijing_time(request.created_at),
    }


def _bill_url(gateway: AlipayGateway, call: Call) -> dict[str, Any]:
    bill_type = text_field(call.biz, "bill_type", required=True, max_length=16)
    bill_date = text_field(call.biz, "bill_date", required=True, max_length=10)
    if bill_type not in ("trade", "signcustomer"):
        raise AlipayError(
            "40004", "isv.invalid-bill-type", "bill_type must be trade or signcustomer"
        )
    try:
        day = date.fromisoformat(bill_date)
        if len(bill_date) != 10:
            raise ValueError(bill_date)
    except ValueError:
        raise AlipayError(
            "40004", "isv.invalid-bill-date", "bill_date must be a day as yyyy-MM-dd"
        ) from None
    now = gateway.platform.clock()
    today = datetime.fromtimestamp(now / NANOSECONDS_PER_SECOND, BEIJING).date()
    if day >= today or day < date(1970, 1, 2):
        raise AlipayError("40004", "isp.bill_not_exist", "bills exist for past days only")
    token = secrets.token_urlsafe(24)
    gateway.store.add_bill(
        Bill(
            token,
            call.app.merchant_id,
            bill_type,
            bill_date,
            now + BILL_URL_SECONDS * NANOSECONDS_PER_SECOND,
        )
    )
    return {"bill_download_url": f"{call.base_url}/alipay/bills/{token}.csv"}


METHODS: Final[dict[str, Handler]] = {
    "alipay.trade.precreate": _precreate,
    "alipay.trade.create": _create,
    "alipay.trade.pay": _pay,
    "alipay.trade.page.pay": _page_pay,
    "alipay.trade.wap.pay": _page_pay,
    "alipay.trade.query": _query,
    "alipay.trade.refund": _refund,
    "alipay.trade.fastpay.refund.query": _refund_query,
    "alipay.trade.close": _close,
    "alipay.trade.cancel": _cancel,
    "alipay.fund.trans.uni.transfer": _transfer,
    "alipay.data.dataservice.bill.downloadurl.query": _bill_url,
}
