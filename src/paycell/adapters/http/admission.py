"""Admission control: a bounded queue per priority class in front of the platform lock, and a
token bucket per API key.

Every route has a priority class (`route_class`): 0 payments (money movement), 1 queries,
2 reports, 3 console. A request takes a slot of its class before it may queue for the
platform's lock. When no slot is free it waits in its class's queue, for a bounded time:

- a request whose class is full, or whose queue is full, or that cannot get a slot within its
  class's bounded wait, is shed: 503 `overloaded` with `Retry-After`;
- while any request of a higher class waits, a lower-class request is shed at once, and a
  request that starts waiting sheds every waiting request of a lower class; so lower classes
  are shed before any payment waits behind them, and the lowest class goes first;
- the lower classes' in-flight limits add up to less than the total, so payments always
  keep most of the slots.

Nothing waits without bound: every wait has a deadline, every queue has a depth.

The state is guarded by a `threading.Lock` and waiters are woken through their own event loop
(`call_soon_threadsafe`), so one controller serves requests from any number of loops.
"""

import asyncio
import fcntl
import hashlib
import math
import mmap
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

from paycell.adapters.http.shared_files import replace_file

PAYMENTS: Final = 0
QUERIES: Final = 1
REPORTS: Final = 2
CONSOLE: Final = 3
CLASS_NAMES: Final[tuple[str, ...]] = ("payments", "queries", "reports", "console")

# Routes outside admission and rate limiting: the operator must always be able to see the
# server (/metrics reads in-memory counters and never waits for the platform's lock) and to
# turn features off (switches are in memory or a mapped file, never behind the platform lock).
EXEMPT_PATHS: Final = frozenset({"/metrics", "/v1/admin/switches"})


@dataclass(frozen=True, slots=True)
class ClassLimits:
    # Requests of the class admitted at once (running or waiting for the platform's lock).
    in_flight: int
    # Requests of the class waiting for a slot; one more is shed at once.
    queue_depth: int
    # How long a request may wait for a slot before it is shed.
    max_wait_seconds: float
    # What a shed request is told (Retry-After, whole seconds).
    retry_after_seconds: int


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    classes: tuple[ClassLimits, ClassLimits, ClassLimits, ClassLimits]
    # Slots of all classes together. Keep it below the worker thread pool (anyio's default is
    # 40 threads): an admitted request then never waits for a thread, only for the lock.
    total_in_flight: int

    def __post_init__(self) -> None:
        if self.total_in_flight < 1 or any(c.in_flight < 1 for c in self.classes):
            raise ValueError("in-flight limits must be at least 1")
        if any(c.queue_depth < 0 or c.max_wait_seconds < 0 for c in self.classes):
            raise ValueError("queue depths and waits must not be negative")


# Payments: 32 in flight is about 32 ms of queueing at ~1 ms per platform command, within the
# 50 ms p99 target; a deep queue (512) and a 2 s wait absorb a spike (the pent-up backlog after
# an outage) rather than refusing money that a client would resend at once.
PAYMENTS_LIMITS: Final = ClassLimits(32, 512, 2.0, 1)
# Queries (an order, a balance): a few at once, a short wait; a client polls again.
QUERIES_LIMITS: Final = ClassLimits(8, 64, 0.5, 2)
# Reports (lists, statements, settlement reports, bills): expensive, can wait for the peak.
REPORTS_LIMITS: Final = ClassLimits(2, 8, 0.25, 10)
# Console (docs, the OpenAPI document, cashier pages): humans; shed first.
CONSOLE_LIMITS: Final = ClassLimits(2, 4, 0.1, 10)
# 36 < 40 worker threads; the lower classes together hold at most 12, payments at least 24.
TOTAL_IN_FLIGHT: Final = 36

DEFAULT_ADMISSION: Final = AdmissionConfig(
    (PAYMENTS_LIMITS, QUERIES_LIMITS, REPORTS_LIMITS, CONSOLE_LIMITS), TOTAL_IN_FLIGHT
)

# GET routes under /v1 that list or report: class 2.
_REPORT_ROUTES: Final = frozenset(
    {
        "/v1/orders",
        "/v1/orders/{order_id}/refunds",
        "/v1/payouts",
        "/v1/settlements/{day}",
        "/v1/webhook-events",
        "/v1/wallet/requests",
    }
)
_PAYMENT_ROUTES: Final = frozenset(
    {"/gateway.do", "/alipay/buyer/payment-codes", "/alipay/buyer/pay", "/alipay/admin/apps"}
)


def route_class(method: str, template: str) -> int:
    """The priority class of a route (by its template, e.g. /v1/orders/{order_id}/pay)."""
    if template in _PAYMENT_ROUTES:
        return PAYMENTS
    if template == "/alipay/cashier/{trade_no}":
        return PAYMENTS if method == "POST" else CONSOLE
    if template.startswith("/alipay/bills/"):
        return REPORTS
    if template.startswith("/v1/"):
        if template == "/v1/webhook-events/{event_id}/replay":
            return REPORTS
        if method in ("POST", "PUT", "DELETE", "PATCH"):
            return PAYMENTS
        return REPORTS if template in _REPORT_ROUTES else QUERIES
    # /docs, /openapi.json, the platform's public key, and any unknown path.
    return CONSOLE


class ShedError(Exception):
    """A request refused by admission control (503 overloaded, Retry-After)."""

    def __init__(self, priority: int, reason: str, retry_after: int) -> None:
        super().__init__(f"{CLASS_NAMES[priority]} shed: {reason}")
        self.priority = priority
        self.reason = reason
        self.retry_after = retry_after


class _Waiter:
    __slots__ = ("future", "loop", "priority", "state")

    def __init__(self, priority: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()
        self.priority = priority
        self.state = "waiting"  # -> "granted" | "shed:<reason>"

    def wake(self) -> None:
        def resolve() -> None:
            if not self.future.done():
                self.future.set_result(None)

        self.loop.call_soon_threadsafe(resolve)


@dataclass(frozen=True, slots=True)
class AdmissionSnapshot:
    in_flight: tuple[int, ...]
    queued: tuple[int, ...]
    shed: Mapping[tuple[int, str], int]


class Admission:
    def __init__(self, config: AdmissionConfig = DEFAULT_ADMISSION) -> None:
        self.config = config
        self._mutex = threading.Lock()
        self._in_flight = [0] * len(CLASS_NAMES)
        self._total = 0
        self._waiters: list[deque[_Waiter]] = [deque() for _ in CLASS_NAMES]
        self._shed: dict[tuple[int, str], int] = {}

    def snapshot(self) -> AdmissionSnapshot:
        with self._mutex:
            return AdmissionSnapshot(
                tuple(self._in_flight), tuple(len(w) for w in self._waiters), dict(self._shed)
            )

    def _can_run(self, priority: int) -> bool:
        return (
            self._total < self.config.total_in_flight
            and self._in_flight[priority] < self.config.classes[priority].in_flight
        )

    def _take(self, priority: int) -> None:
        self._in_flight[priority] += 1
        self._total += 1

    def _count_shed(self, priority: int, reason: str) -> None:
        self._shed[priority, reason] = self._shed.get((priority, reason), 0) + 1

    def _refuse(self, priority: int, reason: str) -> ShedError:
        self._count_shed(priority, reason)
        return ShedError(priority, reason, self.config.classes[priority].retry_after_seconds)

    async def acquire(self, priority: int) -> None:
        """Take a slot of `priority`, waiting at most the class's bounded wait; raises ShedError."""
        limits = self.config.classes[priority]
        with self._mutex:
            higher_waiting = any(self._waiters[c] for c in range(priority))
            if not higher_waiting and not self._waiters[priority] and self._can_run(priority):
                self._take(priority)
                return
            if higher_waiting:
                raise self._refuse(priority, "priority")
            if len(self._waiters[priority]) >= limits.queue_depth or limits.max_wait_seconds == 0:
                raise self._refuse(priority, "queue_full")
            waiter = _Waiter(priority)
            self._waiters[priority].append(waiter)
            # ShedError every waiting request of a lower class: they would wait behind this one.
            for lower in range(priority + 1, len(CLASS_NAMES)):
                while self._waiters[lower]:
                    other = self._waiters[lower].popleft()
                    other.state = "shed:priority"
                    self._count_shed(lower, "priority")
                    other.wake()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), limits.max_wait_seconds)
        except (TimeoutError, asyncio.CancelledError) as interrupted:
            with self._mutex:
                if waiter.state == "waiting":
                    self._waiters[priority].remove(waiter)
                    waiter.state = "shed:timeout"
                    self._count_shed(priority, "timeout")
                granted = waiter.state == "granted"
            if isinstance(interrupted, asyncio.CancelledError):
                if granted:
                    self.release(priority)
                raise
        with self._mutex:
            state = waiter.state
        if state != "granted":
            raise ShedError(priority, state.removeprefix("shed:"), limits.retry_after_seconds)

    def release(self, priority: int) -> None:
        with self._mutex:
            self._in_flight[priority] -= 1
            self._total -= 1
            for c, waiters in enumerate(self._waiters):
                while waiters and self._can_run(c):
                    waiter = waiters.popleft()
                    self._take(c)
                    waiter.state = "granted"
                    waiter.wake()


# ------------------------------------------------------------------------ rate limits

# Per API key: a sustained 2,000 requests/s with bursts of 4,000 — generous: far above what
# one aggregator needs, low enough that one runaway client cannot take the whole server.
RATE_PER_SECOND_DEFAULT: Final = 2_000.0
BURST_DEFAULT: Final = 4_000.0
# Buckets kept in memory; beyond this the oldest half is forgotten (a full bucket again).
BUCKETS_MAX: Final = 100_000


@dataclass(frozen=True, slots=True)
class RateLimit:
    rate_per_second: float = RATE_PER_SECOND_DEFAULT
    burst: float = BURST_DEFAULT

    def __post_init__(self) -> None:
        if self.rate_per_second <= 0 or self.burst < 1:
            raise ValueError("rate_per_second must be positive and burst at least 1")


# A table shared by the workers of one server (`create_rate_table`): a fixed number of slots,
# each (key hash, tokens, last) as an unsigned 64-bit integer and two float64s, 24 bytes;
# 16,384 slots are 393,216 bytes (384 KiB). A key's hash is its 8-byte blake2b digest (0 marks
# a free slot); a key lives in the first slot from hash % TABLE_SLOTS, within a window of
# _PROBE slots, that holds it or is free. 64-bit hashes of distinct keys collide too rarely
# to matter (two keys would share a bucket).
TABLE_SLOTS: Final = 16_384
_SLOT: Final = struct.Struct("=Qdd")
TABLE_BYTES: Final = TABLE_SLOTS * _SLOT.size
_PROBE: Final = 8


def create_rate_table(path: Path) -> None:
    """Create (or overwrite) a zero-filled rate table: every slot free."""
    replace_file(path, bytes(TABLE_BYTES))


def _key_hash(key: str) -> int:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1  # 0 marks a free slot


class _RateTable:
    """The buckets in a table file mapped by every worker.

    Each worker opens the file itself (workers are spawned, not forked): `flock` excludes
    open file descriptions, so processes sharing one inherited description would not exclude
    each other.
    """

    def __init__(self, path: Path) -> None:
        try:
            self._file = path.open("r+b")
        except FileNotFoundError:
            raise ValueError(f"no rate table {path}") from None
        size = os.fstat(self._file.fileno()).st_size
        if size != TABLE_BYTES:
            self._file.close()
            raise ValueError(f"{path} is not a rate table: {size} bytes, expected {TABLE_BYTES}")
        self._map = mmap.mmap(self._file.fileno(), TABLE_BYTES, flags=mmap.MAP_SHARED)

    def close(self) -> None:
        self._map.close()
        self._file.close()

    def take(self, key: str, limit: RateLimit, clock: Callable[[], float]) -> int:
        wanted = _key_hash(key)
        # flock rather than a semaphore in the mapping: the kernel releases it when a process
        # dies holding it, so a killed worker cannot leave every other one blocked.
        fcntl.flock(self._file, fcntl.LOCK_EX)
        try:
            # The time is read under the lock, so a slot's `last` never goes backwards. It may
            # come from another process: time.monotonic is CLOCK_MONOTONIC, which on Linux is
            # one clock for the whole system, not per process.
            now = clock()
            offset = self._slot(wanted)
            held, tokens, last = self._read(offset)
            if held != wanted:
                tokens, last = limit.burst, now
            # The in-memory limiter's arithmetic, written out here again so that its path
            # stays short; tests/unit/test_shared_rate_limits.py checks both answer alike.
            tokens = min(limit.burst, tokens + (now - last) * limit.rate_per_second)
            if tokens >= 1:
                _SLOT.pack_into(self._map, offset, wanted, tokens - 1, now)
                return 0
            _SLOT.pack_into(self._map, offset, wanted, tokens, now)
            return max(1, math.ceil((1 - tokens) / limit.rate_per_second))
        finally:
            fcntl.flock(self._file, fcntl.LOCK_UN)

    def _slot(self, wanted: int) -> int:
        """The offset of the key's slot in its window, else of a free one, else the oldest.

        Taking over the window's least recently used slot forgets that key's bucket: it starts
        again from a full burst, the same leniency as the in-memory limiter forgetting its
        oldest half when full. Slots are never freed, so a free slot ends the key's window.
        """
        home = wanted % TABLE_SLOTS
        oldest, oldest_last = 0, math.inf
        for step in range(_PROBE):
            offset = (home + step) % TABLE_SLOTS * _SLOT.size
            held, _, last = self._read(offset)
            if held in (wanted, 0):
                return offset
            if last < oldest_last:
                oldest, oldest_last = offset, last
        return oldest

    def _read(self, offset: int) -> tuple[int, float, float]:
        return cast(tuple[int, float, float], _SLOT.unpack_from(self._map, offset))


class RateLimiter:
    """A token bucket per API key; `take` answers 0 when allowed, else seconds to wait.

    The buckets are in memory, or with `table` (a file made by `create_rate_table`) in that
    file, shared by every worker of the server: all of them draw from one bucket per key, or
    N workers would let a key through at N times its limit.
    """

    def __init__(
        self,
        limit: RateLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        table: Path | None = None,
    ) -> None:
        self.limit = limit or RateLimit()
        self._now = clock
        # Threads of one process share one open file description, which flock does not
        # exclude from itself: they take this lock first.
        self._mutex = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._table = None if table is None else _RateTable(table)

    def close(self) -> None:
        """Unmap the shared table (nothing to do in memory)."""
        if self._table is not None:
            self._table.close()

    def take(self, key: str) -> int:
        if self._table is not None:
            with self._mutex:
                return self._table.take(key, self.limit, self._now)
        now = self._now()
        limit = self.limit
        with self._mutex:
            tokens, last = self._buckets.pop(key, (limit.burst, now))
            tokens = min(limit.burst, tokens + (now - last) * limit.rate_per_second)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                if len(self._buckets) > BUCKETS_MAX:
                    for old in list(self._buckets)[: BUCKETS_MAX // 2]:
                        del self._buckets[old]
                return 0
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / limit.rate_per_second))
