"""After the run: the books, through the API.

- Every acknowledged payment (a 2xx answer) is an order in TRADE_SUCCESS (or
  TRADE_FINISHED), paid by the buyer who asked.
- Every other planned order is either fully paid by its buyer (the answer was lost: counted
  as "paid but unacknowledged") or fully unpaid (WAIT_BUYER_PAY, no buyer, no payment time);
  never anything in between.
- The ledger agrees with the orders: each buyer's wallet is its top-up minus the orders it
  paid, and each merchant's balance is the sum of its paid orders less their fees (the run's
  parties are fresh and their merchants are not paid out daily, so nothing else moves them).
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from paycell.adapters.loadtest.setup import World

PAID: Final = frozenset({"TRADE_SUCCESS", "TRADE_FINISHED"})
UNPAID: Final = "WAIT_BUYER_PAY"
PAGE: Final = 500
CONCURRENCY: Final = 16
MAX_LISTED_PROBLEMS: Final = 20


@dataclass
class Books:
    acknowledged: int = 0
    acknowledged_in_books: int = 0
    paid_but_unacknowledged: int = 0
    unacknowledged_unpaid: int = 0
    not_attempted_unpaid: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    balances_checked: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0 and self.acknowledged == self.acknowledged_in_books

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(text)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "acknowledged_payments": self.acknowledged,
            "acknowledged_in_books": self.acknowledged_in_books,
            "paid_but_unacknowledged": self.paid_but_unacknowledged,
            "unacknowledged_and_unpaid": self.unacknowledged_unpaid,
            "not_attempted_and_unpaid": self.not_attempted_unpaid,
            "balances_checked": self.balances_checked,
            "problem_count": self.problem_count,
            "problems": self.problems,
        }


async def _get(client: httpx.AsyncClient, path: str, key: str) -> dict[str, Any]:
    for _ in range(50):  # admission control may shed queries for a while after the peak
        response = await client.get(path, headers={"Authorization": f"Bearer {key}"})
        if response.status_code in (429, 503):
            await asyncio.sleep(float(response.headers.get("retry-after", "0.2") or 0.2))
            continue
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body
    raise RuntimeError(f"GET {path}: still shed after 50 tries")


async def _orders_of(client: httpx.AsyncClient, key: str, prefix: str) -> list[dict[str, Any]]:
    orders: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        path = f"/v1/orders?limit={PAGE}" + (f"&after={after}" if after is not None else "")
        page = await _get(client, path, key)
        orders.extend(o for o in page["data"] if str(o["out_trade_no"]).startswith(prefix))
        after = page["next_cursor"]
        if after is None:
            return orders


async def check_books(
    client: httpx.AsyncClient, world: World, payment_buyers: list[int], outcomes: dict[int, bool]
) -> Books:
    """`outcomes[k]`: planned payment k was sent, True if it was acknowledged (2xx)."""
    books = Books()
    gate = asyncio.Semaphore(CONCURRENCY)
    prefix = f"lt-{world.run_id}-"

    async def listed(i: int) -> list[dict[str, Any]]:
        async with gate:
            return await _orders_of(client, world.merchants[i].key, prefix)

    by_number: dict[str, dict[str, Any]] = {}
    for orders in await asyncio.gather(*(listed(i) for i in range(len(world.merchants)))):
        for listed_order in orders:
            by_number[listed_order["out_trade_no"]] = listed_order
    merchant_due = [0] * len(world.merchants)
    buyer_due = list(world.top_ups)
    for k, order_id in enumerate(world.order_ids):
        order = by_number.get(f"{prefix}{k}")
        buyer = world.buyers[payment_buyers[k]]
        if order is None or order["id"] != order_id:
            books.problem(f"order {order_id} ({prefix}{k}) is missing from its merchant's list")
            continue
        status = order["status"]
        paid = status in PAID and order["buyer_id"] == buyer.id and order["paid_at"] > 0
        unpaid = status == UNPAID and not order["buyer_id"] and not order["paid_at"]
        outcome = outcomes.get(k)
        if paid:
            merchant_due[world.order_merchants[k]] += order["amount"] - order["fee"]
            buyer_due[payment_buyers[k]] -= order["amount"]
        if outcome is True:
            books.acknowledged += 1
            if paid:
                books.acknowledged_in_books += 1
            else:
                books.problem(f"order {order_id}: payment acknowledged but order is {status}")
        elif paid and outcome is False:
            books.paid_but_unacknowledged += 1
        elif unpaid:
            if outcome is False:
                books.unacknowledged_unpaid += 1
            else:
                books.not_attempted_unpaid += 1
        elif paid:
            books.problem(f"order {order_id}: paid but its payment was never sent")
        else:
            books.problem(
                f"order {order_id}: half there: status {status}, buyer {order['buyer_id']}, "
                f"paid_at {order['paid_at']}"
            )

    async def balance(path: str, key: str, expected: int, who: str) -> None:
        async with gate:
            body = await _get(client, path, key)
        books.balances_checked += 1
        if body["balance"] != expected or body["available"] != expected:
            books.problem(
                f"{who}: the ledger says {body['balance']} (available {body['available']}), "
                f"the orders say {expected}"
            )

    await asyncio.gather(
        *(
            balance("/v1/balance", m.key, merchant_due[i], f"merchant {m.id}")
            for i, m in enumerate(world.merchants)
        ),
        *(
            balance("/v1/wallet", b.key, buyer_due[i], f"buyer {b.id}")
            for i, b in enumerate(world.buyers)
        ),
    )
    return books
