"""The run's world, created through the API before the clock starts: merchants and buyers
(admin key), each buyer's top-up (completed by the bank's callback, which the server's
background thread delivers every second), then one order per planned payment."""

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

SETUP_CONCURRENCY: Final = 32
TOP_UP_WAIT_SECONDS: Final = 120.0
ORDER_TIMEOUT_SECONDS: Final = 6 * 3600
FEE_RATE_BASIS_POINTS: Final = 60


class SetupFailedError(Exception):
    """A setup request was refused, or the top-ups never completed."""


@dataclass(frozen=True)
class Party:
    id: int
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class World:
    run_id: str
    merchants: list[Party] = field(default_factory=list)
    buyers: list[Party] = field(default_factory=list)
    top_ups: list[int] = field(default_factory=list)  # per buyer, minor units
    # Per planned payment: order id, its merchant (index), amount.
    order_ids: list[int] = field(default_factory=list)
    order_merchants: list[int] = field(default_factory=list)
    order_amounts: list[int] = field(default_factory=list)


async def _bounded(
    count: int, make: Callable[[int], Awaitable[Any]], concurrency: int = SETUP_CONCURRENCY
) -> list[Any]:
    """`make(0) ... make(count - 1)`, at most `concurrency` at once, results in order (a pool
    of workers, not one task per call parked on a Semaphore, whose waits cost O(waiters))."""
    results: list[Any] = [None] * count
    next_index = iter(range(count))

    async def worker() -> None:
        for i in next_index:
            results[i] = await make(i)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return results


async def _send(
    client: httpx.AsyncClient, method: str, path: str, **options: Any
) -> httpx.Response:
    """The request, tried again while admission control sheds it (429/503, Retry-After)."""
    for _ in range(100):
        response = await client.request(method, path, **options)
        if response.status_code not in (429, 503):
            return response
        await asyncio.sleep(min(float(response.headers.get("retry-after", "0.2") or 0.2), 2.0))
    return response


def _checked(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code not in (200, 201):
        raise SetupFailedError(f"{what}: HTTP {response.status_code} {response.text[:200]}")
    body: dict[str, Any] = response.json()
    return body


async def create_world(
    client: httpx.AsyncClient,
    admin_key: str,
    *,
    run_id: str,
    merchants: int,
    buyers: int,
    payment_buyers: list[int],
    hot_merchant_share: float,
    seed: int,
    say: Callable[[str], None],
) -> World:
    """`payment_buyers[k]` is the buyer of planned payment k."""
    world = World(run_id)
    admin = {"Authorization": f"Bearer {admin_key}"}
    started = time.monotonic()

    async def merchant(i: int) -> Party:
        body = _checked(
            await _send(
                client,
                "POST",
                "/v1/admin/merchants",
                json={
                    "name": f"loadtest {run_id} shop {i}",
                    "fee_rate_basis_points": FEE_RATE_BASIS_POINTS,
                    "settlement_bank_account": f"6222 {i:08d}",
                    "daily_payout": False,
                },
                headers=admin,
            ),
            "create merchant",
        )
        return Party(body["merchant"]["id"], body["api_key"])

    async def buyer(i: int) -> Party:
        body = _checked(
            await _send(
                client,
                "POST",
                "/v1/admin/users",
                json={"name": f"loadtest {run_id} buyer {i}"},
                headers=admin,
            ),
            "create user",
        )
        return Party(body["user"]["id"], body["api_key"])

    world.merchants = await _bounded(merchants, merchant)
    world.buyers = await _bounded(buyers, buyer)
    say(f"  {merchants} merchants and {buyers} buyers created")

    rng = random.Random(seed)
    for _ in payment_buyers:
        hot = merchants == 1 or rng.random() < hot_merchant_share
        world.order_merchants.append(0 if hot else rng.randrange(1, merchants))
        world.order_amounts.append(rng.randrange(1_00, 200_00))
    world.top_ups = [0] * buyers
    for k, b in enumerate(payment_buyers):
        world.top_ups[b] += world.order_amounts[k]
    # Whole yuan: the simulated bank declines amounts whose minor units end in 13.
    world.top_ups = [-(-amount // 100) * 100 for amount in world.top_ups]

    async def top_up(i: int) -> None:
        if world.top_ups[i] == 0:
            return
        _checked(
            await _send(
                client,
                "POST",
                "/v1/wallet/top-ups",
                json={"request_no": f"lt-{run_id}-{i}", "amount": world.top_ups[i]},
                headers={**world.buyers[i].headers, "Idempotency-Key": f"lt-top-up-{run_id}-{i}"},
            ),
            "top-up",
        )

    await _bounded(buyers, top_up)
    waiting = {i for i in range(buyers) if world.top_ups[i] > 0}
    deadline = time.monotonic() + TOP_UP_WAIT_SECONDS
    while waiting:
        if time.monotonic() > deadline:
            raise SetupFailedError(f"{len(waiting)} top-ups not completed by the bank in time")
        await asyncio.sleep(0.5)
        pending = sorted(waiting)

        async def wallet(j: int, pending: list[int] = pending) -> tuple[int, int]:
            i = pending[j]
            body = _checked(
                await _send(client, "GET", "/v1/wallet", headers=world.buyers[i].headers), "wallet"
            )
            return i, int(body["available"])

        for i, available in await _bounded(len(pending), wallet):
            if available >= world.top_ups[i]:
                waiting.discard(i)
    say(f"  {buyers} top-ups completed by the bank")

    async def order(k: int) -> int:
        shop = world.merchants[world.order_merchants[k]]
        body = _checked(
            await _send(
                client,
                "POST",
                "/v1/orders",
                json={
                    "out_trade_no": f"lt-{run_id}-{k}",
                    "amount": world.order_amounts[k],
                    "subject": "Singles' Day",
                    "timeout_seconds": ORDER_TIMEOUT_SECONDS,
                },
                headers=shop.headers,
            ),
            "create order",
        )
        return int(body["id"])

    world.order_ids = await _bounded(len(payment_buyers), order)
    say(f"  {len(world.order_ids)} orders created (setup took {time.monotonic() - started:.1f} s)")
    return world
