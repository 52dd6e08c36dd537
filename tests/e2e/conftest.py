"""End-to-end fixtures: the REST API over a real platform (SQLite or PostgreSQL), driven
through HTTP with Starlette's TestClient, with a clock the test moves."""

import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from paycell.adapters.http import create_app
from paycell.core.payments.records import PartyKind
from paycell.platform import Platform

ADMIN_KEY = "test-admin-key"
# 2024-11-11T00:00:00Z, Singles' Day.
START_NANOSECONDS = 1_731_283_200 * 1_000_000_000
NANOSECONDS_PER_SECOND = 1_000_000_000


class Clock:
    """Time under the test's control; each reading moves it on by a microsecond so that
    ledger timestamps stay strictly increasing."""

    def __init__(self, start: int = START_NANOSECONDS) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1_000
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * NANOSECONDS_PER_SECOND)


@dataclass
class Party:
    id: int
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class World:
    platform: Platform
    client: TestClient
    clock: Clock
    users: list[Party] = field(default_factory=list)
    merchants: list[Party] = field(default_factory=list)

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    def new_user(self, name: str = "buyer") -> Party:
        response = self.client.post("/v1/admin/users", json={"name": name}, headers=self.admin)
        assert response.status_code == 201, response.text
        body = response.json()
        party = Party(body["user"]["id"], body["api_key"])
        self.users.append(party)
        return party

    def new_merchant(self, name: str = "shop", fee_rate_basis_points: int = 60) -> Party:
        response = self.client.post(
            "/v1/admin/merchants",
            json={
                "name": name,
                "fee_rate_basis_points": fee_rate_basis_points,
                "settlement_bank_account": "6222 0000 0001",
            },
            headers=self.admin,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        party = Party(body["merchant"]["id"], body["api_key"])
        self.merchants.append(party)
        return party

    def deliver_callbacks(self) -> list[dict[str, Any]]:
        """The bank answers every instruction, through the HTTP callback endpoint."""
        results = []
        for callback in self.platform.bank.callbacks(self.clock()):
            response = self.client.post(
                "/v1/channel/callbacks",
                content=callback.body,
                headers={"X-Channel-Signature": callback.signature},
            )
            assert response.status_code == 200, response.text
            results.append(response.json())
        return results

    def top_up(self, user: Party, amount: int, request_no: str = "top-up-1") -> None:
        response = self.client.post(
            "/v1/wallet/top-ups",
            json={"request_no": request_no, "amount": amount},
            headers=user.headers,
        )
        assert response.status_code == 201, response.text
        self.deliver_callbacks()

    def wallet(self, user: Party) -> int:
        response = self.client.get("/v1/wallet", headers=user.headers)
        assert response.status_code == 200, response.text
        return int(response.json()["available"])

    def balance(self, merchant: Party) -> int:
        response = self.client.get("/v1/balance", headers=merchant.headers)
        assert response.status_code == 200, response.text
        return int(response.json()["available"])

    def create_order(self, merchant: Party, out_trade_no: str, amount: int, **extra: Any) -> int:
        response = self.client.post(
            "/v1/orders",
            json={"out_trade_no": out_trade_no, "amount": amount, **extra},
            headers=merchant.headers,
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def order(self, merchant: Party, order_id: int) -> dict[str, Any]:
        response = self.client.get(f"/v1/orders/{order_id}", headers=merchant.headers)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def snapshot(self) -> dict[str, Any]:
        """Everything a rejected request must leave as it was: balances, every record."""
        platform = self.platform
        state: dict[str, Any] = {
            "ledger": platform.store.meta(),
            "users": [
                (
                    platform.balance(PartyKind.USER, u.id),
                    platform.list_channel_requests(PartyKind.USER, u.id),
                )
                for u in self.users
            ],
            "merchants": [],
        }
        for m in self.merchants:
            orders = platform.list_orders(m.id)
            state["merchants"].append(
                (
                    platform.balance(PartyKind.MERCHANT, m.id),
                    orders,
                    [platform.refunds_of_order(o.id) for o in orders],
                    platform.list_channel_requests(PartyKind.MERCHANT, m.id),
                    platform.webhook_events(m.id),
                )
            )
        return state


@pytest.fixture
def world_on(request: pytest.FixtureRequest) -> Any:
    """A factory: `world_on(database_url)`, closed and verified after the test."""
    opened: list[World] = []

    def make(database_url: str) -> World:
        clock = Clock()
        platform = Platform(database_url, clock=clock)
        client = TestClient(create_app(platform, admin_key=ADMIN_KEY))
        world = World(platform, client, clock)
        opened.append(world)
        return world

    yield make
    for world in opened:
        report = world.platform.verify()
        world.client.close()
        world.platform.close()
        assert report.ok, report.render()


@pytest.fixture
def world(world_on: Any, database_url: str) -> World:
    """A fresh platform and API on each backend in turn."""
    result: World = world_on(database_url)
    return result


@pytest.fixture
def sqlite_world(world_on: Any, sqlite_url: str) -> World:
    result: World = world_on(sqlite_url)
    return result
