"""Real flows through both published SDKs, pointed at a live paycell server: every
response the SDKs return here passed their own RSA2 signature verification with the
platform's public key."""

import re
from collections.abc import Iterator, Mapping
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from paycell.adapters.alipay.notify import AlipayNotifier
from paycell.core.payments.records import PartyKind
from tests.alipay.conftest import Live, Merchant, Sdk


@pytest.fixture
def shop(live: Live, app_key: rsa.RSAPrivateKey) -> Merchant:
    return live.merchant(app_key)


@pytest.fixture
def sdk(sdk_kind: str, live: Live, shop: Merchant, app_key: rsa.RSAPrivateKey) -> Iterator[Sdk]:
    bridge = Sdk(sdk_kind, live, shop, app_key)
    yield bridge
    bridge.close()


def _ok(response: dict[str, object]) -> dict[str, object]:
    assert response["code"] == "10000", response
    assert response["msg"] == "Success"
    return response


def test_precreate_then_the_buyer_scans_and_pays_then_query(live: Live, sdk: Sdk) -> None:
    buyer = live.buyer(money=100_00)
    created = _ok(
        sdk.call(
            "alipay.trade.precreate",
            {
                "out_trade_no": "QR-1",
                "total_amount": "88.88",
                "subject": "Oolong 乌龙茶",
            },
        )
    )
    qr_code = str(created["qr_code"])
    assert qr_code.startswith(live.base_url + "/alipay/cashier/")
    waiting = _ok(sdk.call("alipay.trade.query", {"out_trade_no": "QR-1"}))
    assert waiting["trade_status"] == "WAIT_BUYER_PAY"
    # The buyer opens the QR code's URL: the cashier page, signs in and pays.
    page = live.http.get(qr_code)
    assert page.status_code == 200 and "88.88" in page.text
    wrong = live.http.post(qr_code, data={"user_id": str(buyer.id), "api_key": "nope"})
    assert "sign-in failed" in wrong.text
    paid = live.http.post(qr_code, data={"user_id": str(buyer.id), "api_key": buyer.api_key})
    assert paid.status_code == 200 and "TRADE_SUCCESS" in paid.text, paid.text
    query = _ok(sdk.call("alipay.trade.query", {"out_trade_no": "QR-1"}))
    assert query["trade_status"] == "TRADE_SUCCESS"
    assert query["total_amount"] == "88.88"
    assert query["buyer_user_id"] == f"2088{buyer.id:012d}"
    assert query["trade_no"] == re.sub(r".*/", "", qr_code)
    assert live.wallet(buyer) == 100_00 - 88_88
    with live.lock:
        balance = live.platform.balance(PartyKind.MERCHANT, query_merchant(live))
    assert balance is not None and balance.credits_posted == 88_88 - 53  # 0.60% fee


def query_merchant(live: Live) -> int:
    return live.merchants[0].id


def test_precreate_paid_through_the_buyer_api(live: Live, sdk: Sdk) -> None:
    buyer = live.buyer(money=10_00)
    created = _ok(
        sdk.call(
            "alipay.trade.precreate",
            {
                "out_trade_no": "QR-2",
                "total_amount": 5,
                "subject": "tea",
            },
        )
    )
    response = live.http.post(
        "/alipay/buyer/pay",
        json={"qr_code": created["qr_code"]},
        headers={"Authorization": f"Bearer {buyer.api_key}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["trade_status"] == "TRADE_SUCCESS"
    assert _ok(sdk.call("alipay.trade.query", {"out_trade_no": "QR-2"}))["total_amount"] == "5.00"


def test_bar_code_pay_partial_and_full_refunds_and_refund_query(live: Live, sdk: Sdk) -> None:
    buyer = live.buyer(money=200_00)
    code = live.payment_code(buyer)
    paid = _ok(
        sdk.call(
            "alipay.trade.pay",
            {
                "out_trade_no": "BAR-1",
                "scene": "bar_code",
                "auth_code": code,
                "total_amount": "100.00",
                "subject": "Pu'er",
            },
        )
    )
    assert paid["total_amount"] == "100.00" and paid["buyer_user_id"] == f"2088{buyer.id:012d}"
    trade_no = str(paid["trade_no"])
    # The code was used once: a second payment with it is refused.
    again = sdk.call(
        "alipay.trade.pay",
        {
            "out_trade_no": "BAR-2",
            "scene": "bar_code",
            "auth_code": code,
            "total_amount": "1.00",
            "subject": "x",
        },
    )
    assert again["code"] == "40004" and again["sub_code"] == "ACQ.PAYMENT_AUTH_CODE_INVALID"

    first = _ok(
        sdk.call(
            "alipay.trade.refund",
            {
                "out_trade_no": "BAR-1",
                "refund_amount": "30.00",
                "out_request_no": "R-1",
            },
        )
    )
    assert first["fund_change"] == "Y" and first["refund_fee"] == "30.00"
    replay = _ok(
        sdk.call(
            "alipay.trade.refund",
            {
                "trade_no": trade_no,
                "refund_amount": "30.00",
                "out_request_no": "R-1",
            },
        )
    )
    assert replay["fund_change"] == "N" and replay["refund_fee"] == "30.00"
    changed = sdk.call(
        "alipay.trade.refund",
        {
            "out_trade_no": "BAR-1",
            "refund_amount": "31.00",
            "out_request_no": "R-1",
        },
    )
    assert changed["sub_code"] == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
    too_much = sdk.call(
        "alipay.trade.refund",
        {
            "out_trade_no": "BAR-1",
            "refund_amount": "70.01",
            "out_request_no": "R-2",
        },
    )
    assert too_much["sub_code"] == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
    rest = _ok(
        sdk.call(
            "alipay.trade.refund",
            {
                "out_trade_no": "BAR-1",
                "refund_amount": "70.00",
                "out_request_no": "R-2",
            },
        )
    )
    assert rest["refund_fee"] == "100.00"
    assert live.wallet(buyer) == 200_00

    found = _ok(
        sdk.call(
            "alipay.trade.fastpay.refund.query",
            {
                "out_trade_no": "BAR-1",
                "out_request_no": "R-1",
            },
        )
    )
    assert found["refund_amount"] == "30.00" and found["refund_status"] == "REFUND_SUCCESS"
    missing = _ok(
        sdk.call(
            "alipay.trade.fastpay.refund.query",
            {
                "out_trade_no": "BAR-1",
                "out_request_no": "R-9",
            },
        )
    )
    assert "refund_amount" not in missing
    closed = _ok(sdk.call("alipay.trade.query", {"out_trade_no": "BAR-1"}))
    assert closed["trade_status"] == "TRADE_CLOSED"


def test_bar_code_pay_with_too_little_money_changes_nothing(live: Live, sdk: Sdk) -> None:
    buyer = live.buyer(money=1_00)
    code = live.payment_code(buyer)
    before = live.snapshot()
    refused = sdk.call(
        "alipay.trade.pay",
        {
            "out_trade_no": "BAR-P",
            "scene": "bar_code",
            "auth_code": code,
            "total_amount": "2.00",
            "subject": "x",
        },
    )
    assert refused["sub_code"] == "ACQ.BUYER_BALANCE_NOT_ENOUGH"
    assert live.snapshot() == before
    # The code is still good for a payment the buyer can afford.
    _ok(
        sdk.call(
            "alipay.trade.pay",
            {
                "out_trade_no": "BAR-P",
                "scene": "bar_code",
                "auth_code": code,
                "total_amount": "1.00",
                "subject": "x",
            },
        )
    )


@pytest.mark.parametrize("method", ["alipay.trade.page.pay", "alipay.trade.wap.pay"])
def test_page_pay_cashier_then_return_url(live: Live, sdk: Sdk, method: str) -> None:
    buyer = live.buyer(money=50_00)
    product = "FAST_INSTANT_TRADE_PAY" if method.endswith("page.pay") else "QUICK_WAP_WAY"
    url = sdk.page(
        method,
        {
            "out_trade_no": "WEB-1",
            "total_amount": "12.34",
            "subject": "Longjing",
            "product_code": product,
        },
        return_url="https://shop.example/return",
    )
    # The browser follows the SDK's URL to the gateway, which sends it to the cashier.
    opened = live.http.get(url)
    assert opened.status_code == 302, opened.text
    cashier = opened.headers["location"]
    assert "/alipay/cashier/" in cashier
    assert "12.34" in live.http.get(cashier).text
    paid = live.http.post(cashier, data={"user_id": str(buyer.id), "api_key": buyer.api_key})
    assert paid.status_code == 303
    back = urlsplit(paid.headers["location"])
    assert back.netloc == "shop.example" and back.path == "/return"
    params = dict(parse_qsl(back.query))
    assert params["out_trade_no"] == "WEB-1" and params["total_amount"] == "12.34"
    assert sdk.verify(dict(params))  # the return is signed by the platform
    assert _ok(sdk.call("alipay.trade.query", {"out_trade_no": "WEB-1"}))["trade_status"] == (
        "TRADE_SUCCESS"
    )


def test_create_close_and_cancel(live: Live, sdk: Sdk) -> None:
    buyer = live.buyer(money=50_00)
    created = _ok(
        sdk.call(
            "alipay.trade.create",
            {
                "out_trade_no": "C-1",
                "total_amount": "1.00",
                "subject": "x",
            },
        )
    )
    assert len(str(created["trade_no"])) == 28
    _ok(sdk.call("alipay.trade.close", {"out_trade_no": "C-1"}))
    assert _ok(sdk.call("alipay.trade.query", {"out_trade_no": "C-1"}))["trade_status"] == (
        "TRADE_CLOSED"
    )
    # Creating it again is refused: the trade is closed.
    again = sdk.call(
        "alipay.trade.precreate",
        {
            "out_trade_no": "C-1",
            "total_amount": "1.00",
            "subject": "x",
        },
    )
    assert again["sub_code"] == "ACQ.TRADE_HAS_CLOSE"

    _ok(
        sdk.call(
            "alipay.trade.precreate",
            {
                "out_trade_no": "C-2",
                "total_amount": "2.00",
                "subject": "x",
            },
        )
    )
    cancelled = _ok(sdk.call("alipay.trade.cancel", {"out_trade_no": "C-2"}))
    assert cancelled["action"] == "close"

    code = live.payment_code(buyer)
    _ok(
        sdk.call(
            "alipay.trade.pay",
            {
                "out_trade_no": "C-3",
                "scene": "bar_code",
                "auth_code": code,
                "total_amount": "3.00",
                "subject": "x",
            },
        )
    )
    refused = sdk.call("alipay.trade.close", {"out_trade_no": "C-3"})
    assert refused["sub_code"] == "ACQ.TRADE_STATUS_ERROR"
    reversed_ = _ok(sdk.call("alipay.trade.cancel", {"out_trade_no": "C-3"}))
    assert reversed_["action"] == "refund"
    assert live.wallet(buyer) == 50_00
    # Cancelling a paid trade refunds all of it, which closes it: it cannot be created again.
    assert _ok(sdk.call("alipay.trade.query", {"out_trade_no": "C-3"}))["trade_status"] == (
        "TRADE_CLOSED"
    )
    paid_again = sdk.call(
        "alipay.trade.precreate",
        {
            "out_trade_no": "C-3",
            "total_amount": "3.00",
            "subject": "x",
        },
    )
    assert paid_again["code"] == "40004" and paid_again["sub_code"] == "ACQ.TRADE_HAS_CLOSE"


def test_transfer_and_bill_download(live: Live, sdk: Sdk) -> None:
    buyer = live.buyer(money=500_00)
    code = live.payment_code(buyer)
    _ok(
        sdk.call(
            "alipay.trade.pay",
            {
                "out_trade_no": "B-1",
                "scene": "bar_code",
                "auth_code": code,
                "total_amount": "300.00",
                "subject": "Tieguanyin",
            },
        )
    )
    _ok(
        sdk.call(
            "alipay.trade.refund",
            {
                "out_trade_no": "B-1",
                "refund_amount": "10.00",
                "out_request_no": "B-R1",
            },
        )
    )
    transfer = _ok(
        sdk.call(
            "alipay.fund.trans.uni.transfer",
            {
                "out_biz_no": "T-1",
                "trans_amount": "100.00",
                "product_code": "TRANS_ACCOUNT_NO_PWD",
                "biz_scene": "DIRECT_TRANSFER",
                "payee_info": {"identity": "6222 0000 0001", "identity_type": "BANKCARD_ACCOUNT"},
            },
        )
    )
    assert transfer["status"] == "DEALING" and transfer["out_biz_no"] == "T-1"
    live.bank()
    too_much = sdk.call(
        "alipay.fund.trans.uni.transfer",
        {
            "out_biz_no": "T-2",
            "trans_amount": "1000.00",
            "product_code": "TRANS_ACCOUNT_NO_PWD",
        },
    )
    assert too_much["sub_code"] == "PAYER_BALANCE_NOT_ENOUGH"

    today = "2024-11-11"  # the day the live server's clock starts on (conftest.py)
    not_yet = sdk.call(
        "alipay.data.dataservice.bill.downloadurl.query",
        {
            "bill_type": "trade",
            "bill_date": today,
        },
    )
    assert not_yet["sub_code"] == "isp.bill_not_exist"
    live.clock.advance(86_400)
    bill = _ok(
        sdk.call(
            "alipay.data.dataservice.bill.downloadurl.query",
            {
                "bill_type": "trade",
                "bill_date": today,
            },
        )
    )
    download = live.http.get(str(bill["bill_download_url"]))
    assert download.status_code == 200
    lines = download.text.splitlines()
    assert lines[0] == "#支付宝业务明细查询"
    header = lines[4].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[5:7]]
    assert [r["业务类型"] for r in rows] == ["交易", "退款"]
    assert rows[0]["订单金额（元）"] == "300.00" and rows[1]["订单金额（元）"] == "-10.00"
    assert rows[0]["服务费（元）"] == "-1.80"
    assert lines[-2] == "#交易合计：1笔，退款合计：1笔"


def test_notifications_pass_each_sdks_own_signature_check(live: Live, sdk: Sdk) -> None:
    """What the SDKs' users run on their notify_url: the SDK's verify on our form post."""
    buyer = live.buyer(money=10_00)
    created = _ok(
        sdk.call(
            "alipay.trade.precreate",
            {"out_trade_no": "NT-1", "total_amount": "6.00", "subject": "tea"},
            notify_url="https://shop.example/notify",
        )
    )
    paid = live.http.post(
        "/alipay/buyer/pay",
        json={"qr_code": created["qr_code"]},
        headers={"Authorization": f"Bearer {buyer.api_key}"},
    )
    assert paid.status_code == 200, paid.text
    received: list[dict[str, str]] = []

    def merchant_endpoint(url: str, params: Mapping[str, str]) -> tuple[bool, str]:
        assert url == "https://shop.example/notify"
        received.append(dict(params))
        return True, ""

    notifier = AlipayNotifier(
        live.gateway.store,
        live.platform.get_order,
        live.platform.refunds_of_order,
        live.gateway.sign_params,
        live.clock,
        merchant_endpoint,
    )
    with live.lock:
        notifier.run_once()
    (notification,) = received
    assert notification["out_trade_no"] == "NT-1"
    assert notification["trade_status"] == "TRADE_SUCCESS"
    assert sdk.verify(notification)
    assert not sdk.verify({**notification, "total_amount": "600.00"})
