"""The gateway without HTTP: signing, amounts, every error path (each one signed, none a
state change), notifications and the CLI, on both backends where a database is involved."""

import json
import threading
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from paycell import Account
from paycell.adapters.alipay import AlipayGateway, AlipayNotifier, signing
from paycell.adapters.alipay import gateway as gw
from paycell.adapters.alipay.gateway import parse_yuan
from paycell.adapters.alipay.store import DELIVERED, FAILED
from paycell.adapters.cli.main import main
from paycell.adapters.http import create_app
from paycell.core.payments.records import Order, PartyKind
from paycell.core.payments.webhook_schedule import MAX_ATTEMPTS
from paycell.platform import Platform
from tests.alipay.conftest import ADMIN_KEY, Clock

# ------------------------------------------------------------------------ pure parts


def test_content_to_sign_sorts_skips_empty_and_sign() -> None:
    params = {"b": "2", "a": "x y&z", "sign": "s", "sign_type": "RSA2", "c": ""}
    assert signing.content_to_sign(params) == "a=x y&z&b=2"
    assert signing.content_to_sign(params, signing.REQUEST_EXCLUDED) == "a=x y&z&b=2&sign_type=RSA2"


def test_rsa2_round_trip_and_tampering(app_key: rsa.RSAPrivateKey) -> None:
    public = app_key.public_key()
    signature = signing.sign(app_key, "a=1&b=乌龙")
    assert signing.verify(public, "a=1&b=乌龙", signature)
    assert not signing.verify(public, "a=1&b=乌龙 ", signature)
    assert not signing.verify(public, "a=1", "not base64!")
    assert not signing.verify(public, "a=1", "")
    # Bare base64 and PEM load the same key; junk is refused.
    bare = signing.bare_base64(signing.public_key_pem(public))
    assert signing.verify(signing.load_public_key(bare), "a=1&b=乌龙", signature)
    for junk in ("", "hello", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"):
        with pytest.raises(signing.InvalidKeyError):
            signing.load_public_key(junk)


@pytest.mark.parametrize(
    ("text", "fen"), [("88.88", 8888), ("0.01", 1), ("5", 500), ("100000000.00", 10_000_000_000)]
)
def test_amounts_convert_exactly(text: str, fen: int) -> None:
    assert parse_yuan(text, "total_amount") == fen
    assert gw.yuan(fen) == (text if "." in text else f"{text}.00")


@pytest.mark.parametrize(
    "value", ["88.888", "0.001", "0", "0.00", "-1", "1e3", "", " ", "abc", "100000000.01", 5, None]
)
def test_bad_amounts_are_refused(value: object) -> None:
    with pytest.raises(gw.AlipayError) as refused:
        parse_yuan(value, "total_amount")
    assert refused.value.code == "40004" and refused.value.sub_code == "ACQ.INVALID_PARAMETER"


def test_json_numbers_keep_their_exact_text() -> None:
    biz = gw.parse_biz_content('{"total_amount": 88.88, "n": 99999999.99, "big": 1e400}')
    assert parse_yuan(biz["total_amount"], "x") == 8888
    assert biz["n"] == "99999999.99" and parse_yuan(biz["n"], "x") == 99_999_999_99
    with pytest.raises(gw.AlipayError):
        parse_yuan(biz["big"], "x")


# -------------------------------------------------------------------- with a database


class Direct:
    """The gateway called in-process with requests signed like an SDK's."""

    def __init__(self, database_url: str, key: rsa.RSAPrivateKey) -> None:
        self.clock = Clock()
        self.platform = Platform(database_url, clock=self.clock)
        self.gateway = AlipayGateway(self.platform)
        self.key = key
        merchant = self.platform.create_merchant(
            "shop", fee_rate_basis_points=0, settlement_bank_account="1", daily_payout=False
        )
        self.merchant_id = merchant.id
        self.app = self.gateway.register_app(merchant.id, signing.public_key_pem(key.public_key()))

    def params(self, method: str, biz: Any, **extra: str) -> dict[str, str]:
        params = {
            "app_id": self.app.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": "2024-11-11 08:00:00",
            "version": "1.0",
            "biz_content": biz if isinstance(biz, str) else json.dumps(biz, ensure_ascii=False),
            **extra,
        }
        params["sign"] = signing.sign_params(self.key, params, signing.REQUEST_EXCLUDED)
        return params

    def call(self, params: Mapping[str, str]) -> dict[str, Any]:
        answer = self.gateway.call(params, "http://127.0.0.1:8080/")
        document = json.loads(answer.body)
        (key,) = [k for k in document if k != "sign"]
        # Every answer, errors included, is signed over the exact text of its object.
        text = answer.body[len(key) + 4 : answer.body.rindex(',"sign":')]
        assert signing.verify(self.gateway.private_key.public_key(), text, document["sign"])
        return dict(document[key])

    def state(self) -> Any:
        orders = self.platform.list_orders(self.merchant_id)
        tables = {
            name: self.gateway.store._execute(f"SELECT * FROM {name} ORDER BY 1")[0]
            for name in ("alipay_trades", "alipay_payment_codes", "alipay_notifications")
        }
        return self.platform.store.meta(), orders, tables

    def close(self) -> None:
        self.gateway.close()
        report = self.platform.verify()
        self.platform.close()
        assert report.ok


@pytest.fixture
def direct(database_url: str, app_key: rsa.RSAPrivateKey) -> Iterator[Direct]:
    world = Direct(database_url, app_key)
    yield world
    world.close()


PRECREATE = {"out_trade_no": "E-1", "total_amount": "1.00", "subject": "x"}


def _error_cases(direct: Direct) -> list[tuple[dict[str, str], str, str]]:
    good = direct.params("alipay.trade.precreate", PRECREATE)
    tampered = {**good, "biz_content": good["biz_content"].replace("1.00", "0.01")}
    cases: list[tuple[dict[str, str], str, str]] = [
        ({k: v for k, v in good.items() if k != "method"}, "40001", "isv.missing-method"),
        ({k: v for k, v in good.items() if k != "app_id"}, "40001", "isv.missing-app-id"),
        ({k: v for k, v in good.items() if k != "sign"}, "40001", "isv.missing-signature"),
        ({k: v for k, v in good.items() if k != "timestamp"}, "40001", "isv.missing-timestamp"),
        ({**good, "app_id": "2021000000000000"}, "40002", "isv.invalid-app-id"),
        (
            direct.params("alipay.trade.no.such.method", PRECREATE),
            "40002",
            "isv.invalid-method",
        ),
        ({**good, "sign_type": "RSA"}, "40002", "isv.invalid-signature-type"),
        (tampered, "40002", "isv.invalid-signature"),
        ({**good, "sign": "AAAA"}, "40002", "isv.invalid-signature"),
        ({**good, "charset": "GBK"}, "40002", "isv.invalid-charset"),
        (
            direct.params("alipay.trade.precreate", PRECREATE, format="XML"),
            "40002",
            "isv.invalid-format",
        ),
        (
            direct.params("alipay.trade.precreate", PRECREATE, timestamp="yesterday"),
            "40002",
            "isv.invalid-timestamp",
        ),
        (
            direct.params("alipay.trade.precreate", PRECREATE, app_auth_token="t"),
            "20001",
            "aop.invalid-app-auth-token",
        ),
        (
            direct.params("alipay.trade.precreate", PRECREATE, notify_url="ftp://x"),
            "40002",
            "isv.invalid-parameter",
        ),
        (direct.params("alipay.trade.precreate", "{not json"), "40002", "isv.invalid-parameter"),
        (direct.params("alipay.trade.precreate", "[1, 2]"), "40002", "isv.invalid-parameter"),
        (direct.params("alipay.trade.precreate", ""), "40001", "isv.missing-biz-content"),
        (
            direct.params("alipay.trade.precreate", {**PRECREATE, "total_amount": "1.001"}),
            "40004",
            "ACQ.INVALID_PARAMETER",
        ),
        (
            direct.params("alipay.trade.precreate", {**PRECREATE, "total_amount": 1.001}),
            "40004",
            "ACQ.INVALID_PARAMETER",
        ),
        (
            direct.params("alipay.trade.precreate", {"total_amount": "1.00", "subject": "x"}),
            "40001",
            "isv.missing-parameter",
        ),
        (
            direct.params("alipay.trade.precreate", {**PRECREATE, "subject": 7}),
            "40004",
            "ACQ.INVALID_PARAMETER",
        ),
        (
            direct.params("alipay.trade.precreate", {**PRECREATE, "timeout_express": "5x"}),
            "40004",
            "ACQ.INVALID_PARAMETER",
        ),
        (
            direct.params("alipay.trade.precreate", {**PRECREATE, "trans_currency": "USD"}),
            "40004",
            "ACQ.INVALID_PARAMETER",
        ),
        (
            direct.params("alipay.trade.query", {"out_trade_no": "nope"}),
            "40004",
            "ACQ.TRADE_NOT_EXIST",
        ),
        (
            direct.params("alipay.trade.query", {"trade_no": "2024111100000000000000000999"}),
            "40004",
            "ACQ.TRADE_NOT_EXIST",
        ),
        (direct.params("alipay.trade.query", {}), "40001", "isv.missing-parameter"),
        (
            direct.params("alipay.trade.refund", {"out_trade_no": "nope", "refund_amount": "1"}),
            "40004",
            "ACQ.TRADE_NOT_EXIST",
        ),
        (
            direct.params("alipay.trade.close", {"out_trade_no": "nope"}),
            "40004",
            "ACQ.TRADE_NOT_EXIST",
        ),
        (
            direct.params("alipay.trade.cancel", {"out_trade_no": "nope"}),
            "40004",
            "ACQ.TRADE_NOT_EXIST",
        ),
        (
            direct.params(
                "alipay.trade.pay",
                {**PRECREATE, "scene": "bar_code", "auth_code": "280000000000000000"},
            ),
            "40004",
            "ACQ.PAYMENT_AUTH_CODE_INVALID",
        ),
        (
            direct.params(
                "alipay.trade.pay",
                {**PRECREATE, "scene": "face", "auth_code": "280000000000000000"},
            ),
            "40004",
            "ACQ.INVALID_PARAMETER",
        ),
        (
            direct.params(
                "alipay.fund.trans.uni.transfer", {"out_biz_no": "T", "trans_amount": "1.00"}
            ),
            "40004",
            "PAYER_BALANCE_NOT_ENOUGH",
        ),
        (
            direct.params(
                "alipay.fund.trans.uni.transfer",
                {"out_biz_no": "T", "trans_amount": "1.00", "product_code": "X"},
            ),
            "40004",
            "ACQ.INVALID_PARAMETER",
        ),
        (
            direct.params(
                "alipay.data.dataservice.bill.downloadurl.query",
                {"bill_type": "trade", "bill_date": "2024-11"},
            ),
            "40004",
            "isv.invalid-bill-date",
        ),
        (
            direct.params(
                "alipay.data.dataservice.bill.downloadurl.query",
                {"bill_type": "fund", "bill_date": "2024-11-10"},
            ),
            "40004",
            "isv.invalid-bill-type",
        ),
        (
            direct.params(
                "alipay.data.dataservice.bill.downloadurl.query",
                {"bill_type": "trade", "bill_date": "2024-11-11"},
            ),
            "40004",
            "isp.bill_not_exist",
        ),
    ]
    return cases


def test_every_error_is_a_signed_alipay_answer_and_changes_nothing(direct: Direct) -> None:
    before = direct.state()
    for params, code, sub_code in _error_cases(direct):
        content = direct.call(params)
        assert (content["code"], content["sub_code"]) == (code, sub_code), (params, content)
        assert content["msg"] == gw.MESSAGES[code]
        assert content["sub_msg"]
    assert direct.state() == before


def test_trade_state_errors(direct: Direct) -> None:
    buyer = direct.platform.create_user("b")
    direct.platform.request_top_up(buyer.id, "t", 10_00)
    direct.platform.deliver_bank_callbacks()
    assert direct.call(direct.params("alipay.trade.precreate", PRECREATE))["code"] == "10000"
    # The same out_trade_no with another amount.
    other = direct.call(
        direct.params("alipay.trade.precreate", {**PRECREATE, "total_amount": "2.00"})
    )
    assert other["sub_code"] == "ACQ.CONTEXT_INCONSISTENT"
    # Refund of an unpaid trade.
    unpaid = direct.call(
        direct.params("alipay.trade.refund", {"out_trade_no": "E-1", "refund_amount": "1.00"})
    )
    assert unpaid["sub_code"] == "ACQ.TRADE_STATUS_ERROR"
    order = direct.platform.get_order_by_out_trade_no(direct.merchant_id, "E-1")
    assert order is not None
    assert direct.platform.pay_order(order.id, buyer.id).ok
    again = direct.call(direct.params("alipay.trade.precreate", PRECREATE))
    assert again["sub_code"] == "ACQ.TRADE_HAS_SUCCESS"
    code = direct.gateway.issue_payment_code(buyer.id)
    paid = direct.call(
        direct.params(
            "alipay.trade.pay", {**PRECREATE, "scene": "bar_code", "auth_code": code.code}
        )
    )
    assert paid["sub_code"] == "ACQ.TRADE_HAS_SUCCESS"
    # The refused payment gave its code back.
    stored = direct.gateway.store.payment_code(code.code)
    assert stored is not None and stored.used_at == 0
    # A code past its two minutes is refused.
    direct.clock.advance(gw.PAYMENT_CODE_SECONDS + 1)
    expired = direct.call(
        direct.params(
            "alipay.trade.pay",
            {**PRECREATE, "out_trade_no": "E-2", "scene": "bar_code", "auth_code": code.code},
        )
    )
    assert expired["sub_code"] == "ACQ.PAYMENT_AUTH_CODE_INVALID"


# ---------------------------------------------------------------------- notifications


class Receiver:
    """A merchant's notify_url: answers `success` after `failures` failed tries."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[dict[str, str]] = []

    def __call__(self, url: str, params: Mapping[str, str]) -> tuple[bool, str]:
        assert url == "https://shop.example/notify"
        self.received.append(dict(params))
        tries = sum(r["notify_id"] == params["notify_id"] for r in self.received)
        if tries <= self.failures:
            return False, "HTTP 500: 'fail'"
        return True, ""


def _notifier(direct: Direct, receiver: Receiver) -> AlipayNotifier:
    return AlipayNotifier(
        direct.gateway.store,
        direct.platform.get_order,
        direct.platform.refunds_of_order,
        direct.gateway.sign_params,
        direct.clock,
        receiver,
    )


def test_notifications_are_signed_and_retried_until_success(direct: Direct) -> None:
    buyer = direct.platform.create_user("b")
    direct.platform.request_top_up(buyer.id, "t", 10_00)
    direct.platform.deliver_bank_callbacks()
    notify = {"notify_url": "https://shop.example/notify"}
    code = direct.gateway.issue_payment_code(buyer.id)
    paid = direct.call(
        direct.params(
            "alipay.trade.pay",
            {
                "out_trade_no": "N-1",
                "total_amount": "8.00",
                "subject": "tea",
                "scene": "bar_code",
                "auth_code": code.code,
            },
            **notify,
        )
    )
    assert paid["code"] == "10000"
    refunded = direct.call(
        direct.params(
            "alipay.trade.refund",
            {"out_trade_no": "N-1", "refund_amount": "8.00", "out_request_no": "R"},
        )
    )
    assert refunded["fund_change"] == "Y"
    receiver = Receiver(failures=2)
    notifier = _notifier(direct, receiver)
    report = notifier.run_once()
    assert report.queued == 2 and report.retrying == 2
    assert notifier.run_once().queued == 0  # each event is queued once
    # Alipay's schedule: the second try 4 minutes later.
    direct.clock.advance(4 * 60 + 1)
    assert notifier.run_once().delivered == 0
    direct.clock.advance(10 * 60 + 1)
    assert notifier.run_once().delivered == 2
    order = direct.platform.get_order_by_out_trade_no(direct.merchant_id, "N-1")
    assert order is not None
    stored = direct.gateway.store.notifications_of_order(order.id)
    assert {n.status for n in stored} == {DELIVERED}
    first = receiver.received[0]
    assert first["notify_type"] == "trade_status_sync"
    assert first["trade_status"] == "TRADE_SUCCESS" and first["total_amount"] == "8.00"
    assert first["trade_no"] == paid["trade_no"] and first["buyer_id"] == paid["buyer_user_id"]
    assert first["app_id"] == direct.app.app_id and first["sign_type"] == "RSA2"
    for key in ("notify_id", "notify_time", "gmt_payment", "receipt_amount", "charset"):
        assert first[key], key
    refund = next(r for r in receiver.received if "refund_fee" in r)
    assert refund["trade_status"] == "TRADE_CLOSED" and refund["refund_fee"] == "8.00"
    public = direct.gateway.private_key.public_key()
    for params in receiver.received:
        assert signing.verify_params(public, params)
    # The same notify_id on every try of one event.
    ids = [r["notify_id"] for r in receiver.received if r["trade_status"] == "TRADE_SUCCESS"]
    assert len(set(ids)) == 1 and len(ids) == 3


def test_notifications_give_up_after_eight_tries_over_about_25_hours(direct: Direct) -> None:
    assert (
        direct.call(
            direct.params(
                "alipay.trade.precreate", PRECREATE, notify_url="https://shop.example/notify"
            )
        )["code"]
        == "10000"
    )
    order = direct.platform.get_order_by_out_trade_no(direct.merchant_id, "E-1")
    assert order is not None
    assert direct.platform.cancel_order(order.id, direct.merchant_id).ok
    receiver = Receiver(failures=100)
    notifier = _notifier(direct, receiver)
    for _ in range(60):
        notifier.run_once()
        direct.clock.advance(30 * 60)
    (stored,) = direct.gateway.store.notifications_of_order(order.id)
    assert stored.status == FAILED
    assert stored.attempts == MAX_ATTEMPTS == 8
    assert len(receiver.received) == 8
    assert receiver.received[0]["trade_status"] == "TRADE_CLOSED"
    times = [datetime.strptime(r["notify_time"], gw.TIME_FORMAT) for r in receiver.received]
    hours = (times[-1] - times[0]).total_seconds() / 3600
    assert 24.4 <= hours < 28  # 4 min, 10 min, 10 min, 1 h, 2 h, 6 h, 15 h (30 min ticks)
    # Given up for good: however long one waits, nothing is tried or queued again.
    direct.clock.advance(7 * 24 * 3600)
    notifier.run_once()
    assert len(receiver.received) == 8
    assert direct.gateway.store.notifications_of_order(order.id) == [stored]


# ------------------------------------------------------------------------ HTTP and CLI


def test_http_edges(sqlite_url: str, app_key: rsa.RSAPrivateKey) -> None:
    platform = Platform(sqlite_url, clock=Clock())
    lock = threading.RLock()
    gateway = AlipayGateway(platform, lock=lock)
    client = TestClient(create_app(platform, admin_key=ADMIN_KEY, lock=lock, alipay=gateway))
    try:
        merchant = platform.create_merchant(
            "m", fee_rate_basis_points=0, settlement_bank_account="1"
        )
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        pem = signing.public_key_pem(app_key.public_key())
        assert (
            client.post(
                "/alipay/admin/apps", json={"merchant_id": merchant.id, "public_key": pem}
            ).status_code
            == 401
        )
        assert (
            client.post(
                "/alipay/admin/apps", json={"merchant_id": 999, "public_key": pem}, headers=admin
            ).status_code
            == 404
        )
        assert (
            client.post(
                "/alipay/admin/apps",
                json={"merchant_id": merchant.id, "public_key": "x"},
                headers=admin,
            ).status_code
            == 422
        )
        assert client.post("/alipay/admin/apps", content=b"{", headers=admin).status_code == 400
        key = client.get("/alipay/platform-public-key").json()
        assert signing.load_public_key(key["alipay_public_key"])
        # Not UTF-8, an empty call, a GET with nothing: signed Alipay errors, never a 500.
        for response in (
            client.post(
                "/gateway.do",
                content=b"method=\xff\xfe",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
            client.post("/gateway.do"),
            client.get("/gateway.do"),
            client.get("/gateway.do?method=alipay.trade.page.pay&app_id=1"),
        ):
            assert response.status_code in (200, 400), response.text
        body = client.post("/gateway.do").json()
        assert body["error_response"]["sub_code"] == "isv.missing-method" and body["sign"]
        assert client.post("/alipay/buyer/payment-codes").status_code == 401
        assert client.get("/alipay/bills/nope.csv").status_code == 404
        assert client.get("/alipay/cashier/123").status_code == 404
        # A trade number whose order part is beyond 64 bits names no trade: 404, not a 500.
        too_long = "20241111" + "9" * 20
        assert client.get(f"/alipay/cashier/{too_long}").status_code == 404
    finally:
        client.close()
        gateway.close()
        platform.close()


def test_cli_register_platform_key_payment_code_and_scan(
    tmp_path: Path, app_key: rsa.RSAPrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    database = str(tmp_path / "cli.db")
    with Platform(database) as platform:
        merchant = platform.create_merchant(
            "m", fee_rate_basis_points=0, settlement_bank_account="1"
        )
        user = platform.create_user("u")
        user_key = platform.issue_api_key(PartyKind.USER, user.id)
        platform.request_top_up(user.id, "t", 5_00)
        platform.deliver_bank_callbacks()
    key_file = tmp_path / "app.pub"
    key_file.write_text(signing.public_key_pem(app_key.public_key()))
    assert (
        main(
            [
                "alipay",
                "--database",
                database,
                "register-app",
                "--merchant-id",
                str(merchant.id),
                "--public-key",
                str(key_file),
            ]
        )
        == 0
    )
    registered = json.loads(capsys.readouterr().out)
    assert registered["app_id"].startswith("2021") and registered["alipay_public_key"]
    assert main(["alipay", "--database", database, "platform-key"]) == 0
    assert (
        json.loads(capsys.readouterr().out)["alipay_public_key"] == registered["alipay_public_key"]
    )
    assert main(["alipay", "--database", database, "payment-code", "--api-key", user_key]) == 0
    assert len(json.loads(capsys.readouterr().out)["auth_code"]) == 18
    assert main(["alipay", "--database", database, "payment-code", "--api-key", "bad"]) == 2
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("nope")
    assert (
        main(
            [
                "alipay",
                "--database",
                database,
                "register-app",
                "--merchant-id",
                str(merchant.id),
                "--public-key",
                str(bad_key),
            ]
        )
        == 2
    )
    with Platform(database) as platform:
        order = platform.create_order(merchant.id, "S-1", 3_00).orders[0]
    url = f"http://127.0.0.1:8080/alipay/cashier/{gw.trade_no(order)}"
    capsys.readouterr()
    assert main(["alipay", "--database", database, "scan", "--api-key", user_key, url]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["trade_status"] == "TRADE_SUCCESS"

    def wallet_and_orders() -> tuple[Account | None, list[Order]]:
        with Platform(database) as platform:
            return platform.balance_of_user(user.id), platform.list_orders(merchant.id)

    wallet, orders = wallet_and_orders()
    assert wallet is not None and wallet.debits_posted == 3_00
    # Scanning again is the same payment (a replay): the buyer is not charged twice.
    assert main(["alipay", "--database", database, "scan", "--api-key", user_key, url]) == 0
    assert json.loads(capsys.readouterr().out) == first
    assert wallet_and_orders() == (wallet, orders)
    # An unknown trade is refused.
    unknown = url[:-1] + "9"
    assert main(["alipay", "--database", database, "scan", "--api-key", user_key, unknown]) == 1


def test_a_bar_code_payment_retried_after_a_lost_response_answers_paid(direct: Direct) -> None:
    buyer = direct.platform.create_user("b")
    direct.platform.request_top_up(buyer.id, "t", 10_00)
    direct.platform.deliver_bank_callbacks()
    code = direct.gateway.issue_payment_code(buyer.id)
    request = direct.params(
        "alipay.trade.pay",
        {
            "out_trade_no": "RETRY-1",
            "total_amount": "8.00",
            "subject": "tea",
            "scene": "bar_code",
            "auth_code": code.code,
        },
    )
    first = direct.call(request)
    retry = direct.call(request)
    assert first["code"] == retry["code"] == "10000"
    assert retry["trade_no"] == first["trade_no"]
    wallet = direct.platform.balance_of_user(buyer.id)
    assert wallet is not None
    assert wallet.debits_posted == 8_00  # charged once
    assert direct.platform.verify().ok
