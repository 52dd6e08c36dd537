"""Fixtures for the Alipay gateway: a real uvicorn server on a free 127.0.0.1 port over a
platform with a clock the test moves (SQLite or PostgreSQL), merchants with registered
apps, buyers with money, and both published SDKs driven from subprocesses."""

import fcntl
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from paycell.adapters.alipay import AlipayGateway, signing
from paycell.adapters.http import create_app
from paycell.core.payments.records import PartyKind
from paycell.platform import Platform

ADMIN_KEY = "alipay-test-admin"
# 2024-11-11T00:00:00Z.
START_NANOSECONDS = 1_731_283_200 * 1_000_000_000
ROOT = Path(__file__).resolve().parents[2]
COMMUNITY_SDK = "python-alipay-sdk==3.4.0"
COMMUNITY_DIR = ROOT / ".venv" / "sdk-community"
BRIDGE = Path(__file__).with_name("sdk_bridge.py")


class Clock:
    def __init__(self) -> None:
        self.now = START_NANOSECONDS
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self.now += 1_000
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += int(seconds * 1_000_000_000)


@pytest.fixture(scope="session")
def app_key() -> rsa.RSAPrivateKey:
    """One merchant app key for the session (RSA key generation is the slow part)."""
    return signing.generate_private_key()


def ensure_community_sdk() -> Path:
    """python-alipay-sdk in its own directory (it is imported as `alipay`, like the official
    SDK in the venv). `make alipay-sdks` installs it; this is the fallback, under a file lock
    so parallel test workers install it once."""
    marker = COMMUNITY_DIR / "alipay" / "__init__.py"
    if marker.exists():
        return COMMUNITY_DIR
    COMMUNITY_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(COMMUNITY_DIR.parent / ".sdk-community.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--no-deps",
                    "--target",
                    str(COMMUNITY_DIR),
                    COMMUNITY_SDK,
                ],
                check=True,
                stdin=subprocess.DEVNULL,
            )
    return COMMUNITY_DIR


@dataclass
class Merchant:
    id: int
    api_key: str
    app_id: str = ""


@dataclass
class Buyer:
    id: int
    api_key: str


@dataclass
class Live:
    platform: Platform
    gateway: AlipayGateway
    lock: threading.RLock
    clock: Clock
    base_url: str
    http: httpx.Client
    merchants: list[Merchant] = field(default_factory=list)

    @property
    def gateway_url(self) -> str:
        return f"{self.base_url}/gateway.do"

    def merchant(self, key: rsa.RSAPrivateKey, fee_rate_basis_points: int = 60) -> Merchant:
        with self.lock:
            record = self.platform.create_merchant(
                "Tea House",
                fee_rate_basis_points=fee_rate_basis_points,
                settlement_bank_account="6222 0000 0001",
                daily_payout=False,
            )
            api_key = self.platform.issue_api_key(PartyKind.MERCHANT, record.id)
        response = self.http.post(
            "/alipay/admin/apps",
            json={"merchant_id": record.id, "public_key": signing.public_key_pem(key.public_key())},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert response.status_code == 201, response.text
        merchant = Merchant(record.id, api_key, response.json()["app_id"])
        self.merchants.append(merchant)
        return merchant

    def buyer(self, money: int = 0) -> Buyer:
        with self.lock:
            user = self.platform.create_user("Li Lei")
            api_key = self.platform.issue_api_key(PartyKind.USER, user.id)
            if money:
                assert self.platform.request_top_up(user.id, f"top-up-{user.id}", money).ok
                self.platform.deliver_bank_callbacks()
        return Buyer(user.id, api_key)

    def wallet(self, buyer: Buyer) -> int:
        with self.lock:
            account = self.platform.balance(PartyKind.USER, buyer.id)
        assert account is not None
        return account.credits_posted - account.debits_posted - account.debits_pending

    def payment_code(self, buyer: Buyer) -> str:
        response = self.http.post(
            "/alipay/buyer/payment-codes", headers={"Authorization": f"Bearer {buyer.api_key}"}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["auth_code"])

    def bank(self) -> None:
        with self.lock:
            self.platform.deliver_bank_callbacks()

    def snapshot(self) -> Any:
        """Platform state plus the gateway's own tables: what a rejected call must keep."""
        with self.lock:
            platform = self.platform
            orders = [platform.list_orders(m.id) for m in self.merchants]
            store = self.gateway.store
            tables = {
                name: store._execute(f"SELECT * FROM {name} ORDER BY 1")[0]
                for name in (
                    "alipay_apps",
                    "alipay_trades",
                    "alipay_payment_codes",
                    "alipay_notifications",
                )
            }
            return (
                platform.store.meta(),
                orders,
                [[platform.refunds_of_order(o.id) for o in os] for os in orders],
                tables,
            )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def live(database_url: str) -> Iterator[Live]:
    clock = Clock()
    platform = Platform(database_url, clock=clock)
    lock = threading.RLock()
    gateway = AlipayGateway(platform, lock=lock)
    app = create_app(platform, admin_key=ADMIN_KEY, lock=lock, alipay=gateway)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http="h11")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    base_url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=base_url, timeout=10)
    world = Live(platform, gateway, lock, clock, base_url, http)
    try:
        yield world
    finally:
        http.close()
        server.should_exit = True
        thread.join(timeout=10)
        gateway.close()
        report = platform.verify()
        platform.close()
        assert report.ok, report.render()


class Sdk:
    """One SDK in its subprocess, configured for one app."""

    def __init__(self, kind: str, live: Live, merchant: Merchant, key: rsa.RSAPrivateKey) -> None:
        self.kind = kind
        arguments = [sys.executable, str(BRIDGE), kind]
        if kind == "community":
            arguments.append(str(ensure_community_sdk()))
        self.process = subprocess.Popen(
            arguments, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8"
        )
        pkcs1 = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        self.platform_public_key = live.gateway.public_key
        self._ask(
            {
                "init": {
                    "gateway": live.gateway_url,
                    "app_id": merchant.app_id,
                    # The official SDK takes keys as the console shows them: bare base64.
                    "app_private_key_pkcs1": signing.bare_base64(pkcs1),
                    "alipay_public_key": live.gateway.public_key,
                    "app_private_key_pem": pkcs1,
                    "alipay_public_key_pem": live.gateway.public_key_pem,
                }
            }
        )

    def _ask(self, request: dict[str, Any]) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        if "error" in reply:
            raise AssertionError(f"{self.kind} SDK: {reply['error']}\n{reply.get('trace', '')}")
        return reply["ok"]

    def call(self, method: str, biz: dict[str, Any], **urls: str) -> dict[str, Any]:
        """The SDK's call; it has verified the response's signature. Returns the response
        object (`<method>_response` content)."""
        result = self._ask({"call": method, "biz": biz, "urls": urls})
        return dict(result)

    def page(self, method: str, biz: dict[str, Any], **urls: str) -> str:
        return str(self._ask({"page": method, "biz": biz, "urls": urls}))

    def verify(self, params: dict[str, str]) -> bool:
        return bool(self._ask({"verify": params, "public_key": self.platform_public_key}))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture(params=["official", "community"])
def sdk_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)
