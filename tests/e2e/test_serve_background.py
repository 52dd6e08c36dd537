"""`paycell serve`'s background threads, as a real process: a payment made through the Alipay
gateway reaches the merchant twice, as a signed webhook and as a signed Alipay notification,
each delivered by the server on its own without any test calling a dispatcher."""

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest

from paycell.adapters.alipay import signing
from paycell.core.payments.webhook_schedule import verify_signature
from tests.e2e.serving import ServerProcess, free_port, wait_until

ADMIN_KEY = "background-test-admin-key"
WEBHOOK_SECRET = "whsec_background"


class Receiver:
    """The merchant's server: records what arrives; answers notifications `success`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((self.path, dict(self.headers.items()), body))
                answer = b"success" if self.path == "/notify" else b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_arguments: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def on(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(headers, body) for seen, headers, body in self.requests if seen == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    opened = Receiver()
    yield opened
    opened.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[httpx.Client]:
    port = free_port()
    server = ServerProcess(
        [sys.executable, "-m", "paycell.adapters.cli.main", "serve", "--database",
         str(tmp_path / "served.db"), "--host", "127.0.0.1", "--port", str(port)],
        tmp_path,
        env={**os.environ, "PAYCELL_ADMIN_KEY": ADMIN_KEY},
    )  # fmt: skip
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def up() -> bool:
        assert server.poll() is None, server.logs()
        try:
            return client.get("/openapi.json").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, 30, "the server to start")
        yield client
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=30)


def test_served_payment_reaches_the_merchant_as_webhook_and_alipay_notification(
    served: httpx.Client, receiver: Receiver
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    buyer = served.post("/v1/admin/users", json={"name": "Li"}, headers=admin).json()
    shop = served.post(
        "/v1/admin/merchants",
        json={
            "name": "Tea",
            "fee_rate_basis_points": 60,
            "settlement_bank_account": "6222 0000 0001",
            "webhook_url": f"{receiver.url}/webhooks",
            "webhook_secret": WEBHOOK_SECRET,
        },
        headers=admin,
    ).json()
    buyer_headers = {"Authorization": f"Bearer {buyer['api_key']}"}
    app_key = signing.generate_private_key()
    app = served.post(
        "/alipay/admin/apps",
        json={
            "merchant_id": shop["merchant"]["id"],
            "public_key": signing.public_key_pem(app_key.public_key()),
        },
        headers=admin,
    )
    assert app.status_code == 201, app.text
    app_id = app.json()["app_id"]
    platform_key = signing.load_public_key(
        served.get("/alipay/platform-public-key").json()["alipay_public_key_pem"]
    )

    top_up = served.post(
        "/v1/wallet/top-ups", json={"request_no": "T-1", "amount": 100_00}, headers=buyer_headers
    )
    assert top_up.status_code == 201, top_up.text
    wait_until(
        lambda: served.get("/v1/wallet", headers=buyer_headers).json()["available"] == 100_00,
        15,
        "the bank to answer the top-up",
    )

    params = {
        "app_id": app_id,
        "method": "alipay.trade.precreate",
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "version": "1.0",
        "notify_url": f"{receiver.url}/notify",
        "biz_content": json.dumps(
            {"out_trade_no": "BG-1", "total_amount": "25.00", "subject": "Oolong"}
        ),
    }
    params["sign"] = signing.sign_params(app_key, params, signing.REQUEST_EXCLUDED)
    precreated = served.post("/gateway.do", data=params).json()
    qr_code = precreated["alipay_trade_precreate_response"]["qr_code"]
    paid = served.post("/alipay/buyer/pay", json={"qr_code": qr_code}, headers=buyer_headers)
    assert paid.status_code == 200, paid.text
    assert paid.json()["trade_status"] == "TRADE_SUCCESS"

    wait_until(lambda: bool(receiver.on("/notify")), 20, "the Alipay notification")
    wait_until(
        lambda: any(b'"payment.succeeded"' in body or b"TRADE_SUCCESS" in body
                    for _, body in receiver.on("/webhooks")),
        20,
        "the webhook",
    )  # fmt: skip

    headers, body = receiver.on("/notify")[0]
    notification = dict(parse_qsl(body.decode()))
    assert notification["out_trade_no"] == "BG-1"
    assert notification["trade_status"] == "TRADE_SUCCESS"
    assert notification["total_amount"] == "25.00"
    assert signing.verify_params(platform_key, notification)

    for headers, body in receiver.on("/webhooks"):
        signature = {k.lower(): v for k, v in headers.items()}["paycell-signature"]
        assert verify_signature(WEBHOOK_SECRET, signature, body, int(time.time()))
    events = [
        {k.lower(): v for k, v in headers.items()}["paycell-event-type"]
        for headers, _ in receiver.on("/webhooks")
    ]
    assert "payment.succeeded" in events
