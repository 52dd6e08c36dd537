"""GET /metrics: the Prometheus text exposition format (version 0.0.4), written by hand.

Everything is kept in memory by the request middleware and rendered on a scrape; the only
database read is the platform's own accounts (a handful of rows per currency), taken with a
try-lock and cached, so a scrape never waits behind payments. See docs/operations.md.
"""

import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, Final

from paycell.adapters.http.admission import CLASS_NAMES, Admission
from paycell.adapters.http.switches import SWITCHES, Switches
from paycell.core.currency import currency_for_code
from paycell.core.payments import chart
from paycell.platform import Platform

# Seconds. Fine below 50 ms (the p99 target), coarse above.
LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# Requests per group commit (group_commit.py): powers of two up to the largest group allowed.
GROUP_SIZE_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
# Ledger totals are read at most this often; scrapes in between answer the last reading.
LEDGER_CACHE_SECONDS: Final = 5.0
# How long a scrape waits for the platform's lock before it answers the cached totals.
LEDGER_LOCK_WAIT_SECONDS: Final = 0.05
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    text = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)
    return "{" + text + "}" if text else ""


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Histogram:
    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * len(LATENCY_BUCKETS)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        for index, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.counts[index] += 1
                break
        self.total += seconds
        self.count += 1


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._mutex = threading.Lock()
        self.started = clock()
        self._clock = clock
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[tuple[str, str], _Histogram] = {}
        self._rate_limited = 0
        self._degraded: dict[str, int] = {}
        self._bulk_items: dict[str, int] = {}
        self._group_sizes = [0] * len(GROUP_SIZE_BUCKETS)
        self._group_requests = 0
        self._groups = 0
        self._group_fallbacks = 0

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._mutex:
            key = (route, method, status)
            self._requests[key] = self._requests.get(key, 0) + 1
            histogram = self._latency.get((route, method))
            if histogram is None:
                histogram = self._latency[route, method] = _Histogram()
            histogram.observe(seconds)

    def rate_limited(self) -> None:
        with self._mutex:
            self._rate_limited += 1

    def degraded(self, switch: str) -> None:
        with self._mutex:
            self._degraded[switch] = self._degraded.get(switch, 0) + 1

    def bulk_items(self, code: str, count: int = 1) -> None:
        with self._mutex:
            self._bulk_items[code] = self._bulk_items.get(code, 0) + count

    def group_started(self, size: int) -> None:
        """A group of `size` single payments goes through one unit of work."""
        with self._mutex:
            for index, bound in enumerate(GROUP_SIZE_BUCKETS):
                if size <= bound:
                    self._group_sizes[index] += 1
                    break
            self._group_requests += size
            self._groups += 1

    def group_fell_back(self) -> None:
        """A group failed unexpectedly and ran its requests one by one."""
        with self._mutex:
            self._group_fallbacks += 1

    def groups(self) -> tuple[int, int]:
        """(groups, requests in them) so far."""
        with self._mutex:
            return self._groups, self._group_requests

    def requests(self) -> dict[tuple[str, str, int], int]:
        with self._mutex:
            return dict(self._requests)

    def render(
        self,
        admission: Admission,
        switches: Switches,
        ledger: "LedgerTotals | None" = None,
        group_queue_depth: Callable[[], int] | None = None,
    ) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, text: str) -> None:
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")

        def sample(name: str, labels: Iterable[tuple[str, str]], value: float) -> None:
            lines.append(f"{name}{_labels(labels)} {_number(value)}")

        with self._mutex:
            requests = sorted(self._requests.items())
            latency = sorted(
                (key, list(h.counts), h.total, h.count) for key, h in self._latency.items()
            )
            rate_limited = self._rate_limited
            degraded = sorted(self._degraded.items())
            bulk = sorted(self._bulk_items.items())
            group_sizes = list(self._group_sizes)
            group_requests, groups = self._group_requests, self._groups
            group_fallbacks = self._group_fallbacks
        family("paycell_http_requests_total", "counter", "HTTP requests by route and status")
        for (route, method, status), count in requests:
            sample(
                "paycell_http_requests_total",
                (("route", route), ("method", method), ("status", str(status))),
                count,
            )
        family(
            "paycell_http_request_duration_seconds",
            "histogram",
            "request latency by route, from the first byte in to the response",
        )
        for (route, method), counts, total, count in latency:
            labels = (("route", route), ("method", method))
            cumulative = 0
            for bound, bucket in zip(LATENCY_BUCKETS, counts, strict=True):
                cumulative += bucket
                sample(
                    "paycell_http_request_duration_seconds_bucket",
                    (*labels, ("le", _number(bound))),
                    cumulative,
                )
            sample("paycell_http_request_duration_seconds_bucket", (*labels, ("le", "+Inf")), count)
            sample("paycell_http_request_duration_seconds_sum", labels, total)
            sample("paycell_http_request_duration_seconds_count", labels, count)

        snapshot = admission.snapshot()
        config = admission.config
        for name, kind, text, values in (
            ("paycell_admission_in_flight", "gauge", "admitted requests", snapshot.in_flight),
            ("paycell_admission_queue_depth", "gauge", "requests waiting", snapshot.queued),
            (
                "paycell_admission_in_flight_limit",
                "gauge",
                "in-flight limit",
                [c.in_flight for c in config.classes],
            ),
            (
                "paycell_admission_queue_limit",
                "gauge",
                "queue depth limit",
                [c.queue_depth for c in config.classes],
            ),
        ):
            family(name, kind, f"{text} per priority class")
            for index, value in enumerate(values):
                sample(name, (("class", CLASS_NAMES[index]),), value)
        family("paycell_admission_shed_total", "counter", "requests shed (503) by class, reason")
        for (priority, reason), count in sorted(snapshot.shed.items()):
            sample(
                "paycell_admission_shed_total",
                (("class", CLASS_NAMES[priority]), ("reason", reason)),
                count,
            )
        family("paycell_rate_limited_total", "counter", "requests refused over a key's rate (429)")
        sample("paycell_rate_limited_total", (), rate_limited)
        family("paycell_degraded_total", "counter", "requests refused by a switch (503)")
        for switch, count in degraded:
            sample("paycell_degraded_total", (("switch", switch),), count)
        family("paycell_bulk_items_total", "counter", "bulk payment items by result code")
        for code, count in bulk:
            sample("paycell_bulk_items_total", (("code", code),), count)

        family(
            "paycell_group_commit_size",
            "histogram",
            "single payments per group commit (one unit of work, one commit)",
        )
        cumulative = 0
        for bound, bucket in zip(GROUP_SIZE_BUCKETS, group_sizes, strict=True):
            cumulative += bucket
            sample("paycell_group_commit_size_bucket", (("le", _number(bound)),), cumulative)
        sample("paycell_group_commit_size_bucket", (("le", "+Inf"),), groups)
        sample("paycell_group_commit_size_sum", (), group_requests)
        sample("paycell_group_commit_size_count", (), groups)
        family("paycell_group_commit_groups_total", "counter", "groups of single payments run")
        sample("paycell_group_commit_groups_total", (), groups)
        family(
            "paycell_group_commit_fallbacks_total",
            "counter",
            "groups that failed unexpectedly and ran their requests one by one",
        )
        sample("paycell_group_commit_fallbacks_total", (), group_fallbacks)
        if group_queue_depth is not None:
            family("paycell_group_commit_queue_depth", "gauge", "payments waiting for a group")
            sample("paycell_group_commit_queue_depth", (), group_queue_depth())

        family("paycell_switch_on", "gauge", "1 when a feature runs normally, 0 when degraded")
        state = switches.state()
        for name in SWITCHES:
            sample("paycell_switch_on", (("switch", name),), 1 if switches.on(name) else 0)
        family("paycell_switch_state", "gauge", "1 for each switch's current value")
        for name, (choices, _) in SWITCHES.items():
            for choice in choices:
                sample(
                    "paycell_switch_state",
                    (("switch", name), ("value", choice)),
                    1 if state[name] == choice else 0,
                )

        if ledger is not None:
            totals = ledger.read()
            for side in ("debits", "credits"):
                name = f"paycell_ledger_platform_{side}_posted"
                family(
                    name,
                    "gauge",
                    f"{side} posted on the platform's own accounts, minor units "
                    "(channel_settlement: money in from and out to the bank)",
                )
                for (currency, account), (debits, credits) in sorted(totals.items()):
                    sample(
                        name,
                        (("currency", currency), ("account", account)),
                        debits if side == "debits" else credits,
                    )
            family("paycell_ledger_totals_age_seconds", "gauge", "age of the ledger figures")
            sample("paycell_ledger_totals_age_seconds", (), round(ledger.age(), 3))

        now = self._clock()
        family("paycell_process_start_time_seconds", "gauge", "start time, Unix seconds")
        sample("paycell_process_start_time_seconds", (), round(self.started, 3))
        family("paycell_process_uptime_seconds", "gauge", "seconds since the server started")
        sample("paycell_process_uptime_seconds", (), round(now - self.started, 3))
        return "\n".join(lines) + "\n"


_ACCOUNT_NAMES: Final = {
    chart.AccountCode.PLATFORM_FEE_REVENUE: "fee_revenue",
    chart.AccountCode.PLATFORM_ESCROW: "escrow",
    chart.AccountCode.PLATFORM_SUSPENSE: "suspense",
    chart.AccountCode.CHANNEL_SETTLEMENT: "channel_settlement",
}


class LedgerTotals:
    """Debits and credits posted on the platform's own accounts, per currency: a few rows,
    read under the platform's lock only when it is free within a few milliseconds, at most
    every LEDGER_CACHE_SECONDS."""

    def __init__(self, platform: Platform, lock: AbstractContextManager[Any]) -> None:
        self._platform = platform
        self._lock = lock
        self._mutex = threading.Lock()
        self._read_at = 0.0
        self._totals: dict[tuple[str, str], tuple[int, int]] = {}
        self._accounts: dict[int, tuple[str, str]] = {}
        for currency in platform.config.currencies:
            ledger = currency_for_code(currency).ledger
            for account in chart.platform_accounts(ledger, (platform.config.channel_number,)):
                code = chart.AccountCode(account.code)
                self._accounts[account.id] = (currency, _ACCOUNT_NAMES[code])

    def age(self) -> float:
        return time.monotonic() - self._read_at if self._read_at else 0.0

    def read(self) -> dict[tuple[str, str], tuple[int, int]]:
        with self._mutex:
            if self._read_at and time.monotonic() - self._read_at < LEDGER_CACHE_SECONDS:
                return dict(self._totals)
            acquire = getattr(self._lock, "acquire", None)
            if acquire is None or not acquire(timeout=LEDGER_LOCK_WAIT_SECONDS):
                return dict(self._totals)
            try:
                found = self._platform.ledger.lookup_accounts(list(self._accounts))
            finally:
                self._lock.__exit__(None, None, None)
            self._totals = {
                self._accounts[account.id]: (account.debits_posted, account.credits_posted)
                for account in found
            }
            self._read_at = time.monotonic()
            return dict(self._totals)
