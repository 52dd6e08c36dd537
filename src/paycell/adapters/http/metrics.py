"""GET /metrics: the Prometheus text exposition format (version 0.0.4), written by hand.

Everything is kept in memory by the request middleware and rendered on a scrape; the only
database read is the platform's own accounts (a handful of rows per currency), taken with a
try-lock and cached, so a scrape never waits behind payments. See docs/operations.md.

Several workers (`paycell serve --workers N`) share one port, so a scrape reaches one of them,
and that one answers for all. Each worker publishes a `MetricsSnapshot` of its figures every
second (the server does that through `MetricsBoard.publish`) to `metrics-worker-<n>.json` in
the server's run directory. A scrape sums the worker's live figures with the other workers'
last published snapshots (`MetricsBoard.peers`): counters, histograms, the admission gauges
(in flight, queued) and the group commit queue depth are totals over the workers, and the
other workers' share is at most about a second old. Limits are each worker's configuration,
not summed; switch states and ledger totals are read once, not summed; `paycell_workers` says
how many workers a scrape covers. A restarted worker first takes over the counters its
predecessor last published (`Metrics.resume` with `MetricsBoard.last_published`), so the
totals do not go backwards.
"""

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Final, TypedDict

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

_log = logging.getLogger(__name__)


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


class MetricsSnapshot(TypedDict):
    """One worker's figures as it publishes them to the other workers: plain JSON (the tuples
    are written as lists; MetricsBoard reads them back as tuples). Bucket counts are per
    bucket (LATENCY_BUCKETS, GROUP_SIZE_BUCKETS), not cumulative; per-class lists follow
    CLASS_NAMES. Every field is a counter except the three gauges at the end."""

    # (route template, method, status, requests)
    requests: list[tuple[str, str, int, int]]
    # (route template, method, requests per latency bucket, seconds in all, requests)
    latency: list[tuple[str, str, list[int], float, int]]
    rate_limited: int
    # Requests refused, by switch.
    degraded: dict[str, int]
    # Bulk payment items, by result code.
    bulk_items: dict[str, int]
    # Groups per group size bucket.
    group_sizes: list[int]
    groups: int
    group_requests: int
    group_fallbacks: int
    # (class name, reason, requests shed)
    shed: list[tuple[str, str, int]]
    # Gauges: admitted and waiting requests per class; payments waiting for a group (None
    # when the worker runs without group commit).
    in_flight: list[int]
    queued: list[int]
    group_queue_depth: int | None


class _Counters:
    """The counters of one worker, or of several added up for a scrape."""

    __slots__ = (
        "bulk_items",
        "degraded",
        "group_fallbacks",
        "group_requests",
        "group_sizes",
        "groups",
        "latency",
        "rate_limited",
        "requests",
        "shed",
    )

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.rate_limited = 0
        self.degraded: dict[str, int] = {}
        self.bulk_items: dict[str, int] = {}
        self.group_sizes = [0] * len(GROUP_SIZE_BUCKETS)
        self.group_requests = 0
        self.groups = 0
        self.group_fallbacks = 0
        # By (class, reason). Admission counts the sheds of its own process; these are the
        # ones taken over from a predecessor (or, in a sum, every worker's).
        self.shed: dict[tuple[int, str], int] = {}

    def histogram(self, route: str, method: str) -> _Histogram:
        histogram = self.latency.get((route, method))
        if histogram is None:
            histogram = self.latency[route, method] = _Histogram()
        return histogram

    def add(self, snapshot: MetricsSnapshot) -> None:
        for route, method, status, count in snapshot["requests"]:
            key = (route, method, status)
            self.requests[key] = self.requests.get(key, 0) + count
        for route, method, counts, total, count in snapshot["latency"]:
            histogram = self.histogram(route, method)
            histogram.counts = [a + b for a, b in zip(histogram.counts, counts, strict=True)]
            histogram.total += total
            histogram.count += count
        self.rate_limited += snapshot["rate_limited"]
        for switch, count in snapshot["degraded"].items():
            self.degraded[switch] = self.degraded.get(switch, 0) + count
        for code, count in snapshot["bulk_items"].items():
            self.bulk_items[code] = self.bulk_items.get(code, 0) + count
        self.group_sizes = [
            a + b for a, b in zip(self.group_sizes, snapshot["group_sizes"], strict=True)
        ]
        self.group_requests += snapshot["group_requests"]
        self.groups += snapshot["groups"]
        self.group_fallbacks += snapshot["group_fallbacks"]
        for name, reason, count in snapshot["shed"]:
            shed = (CLASS_NAMES.index(name), reason)
            self.shed[shed] = self.shed.get(shed, 0) + count


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._mutex = threading.Lock()
        self.started = clock()
        self._clock = clock
        self._counters = _Counters()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._mutex:
            key = (route, method, status)
            self._counters.requests[key] = self._counters.requests.get(key, 0) + 1
            self._counters.histogram(route, method).observe(seconds)

    def rate_limited(self) -> None:
        with self._mutex:
            self._counters.rate_limited += 1

    def degraded(self, switch: str) -> None:
        with self._mutex:
            degraded = self._counters.degraded
            degraded[switch] = degraded.get(switch, 0) + 1

    def bulk_items(self, code: str, count: int = 1) -> None:
        with self._mutex:
            bulk_items = self._counters.bulk_items
            bulk_items[code] = bulk_items.get(code, 0) + count

    def group_started(self, size: int) -> None:
        """A group of `size` single payments goes through one unit of work."""
        with self._mutex:
            for index, bound in enumerate(GROUP_SIZE_BUCKETS):
                if size <= bound:
                    self._counters.group_sizes[index] += 1
                    break
            self._counters.group_requests += size
            self._counters.groups += 1

    def group_fell_back(self) -> None:
        """A group failed unexpectedly and ran its requests one by one."""
        with self._mutex:
            self._counters.group_fallbacks += 1

    def groups(self) -> tuple[int, int]:
        """(groups, requests in them) so far."""
        with self._mutex:
            return self._counters.groups, self._counters.group_requests

    def requests(self) -> dict[tuple[str, str, int], int]:
        with self._mutex:
            return dict(self._counters.requests)

    def resume(self, snapshot: MetricsSnapshot) -> None:
        """Take over the counters of `snapshot`, the last figures a predecessor of this worker
        published, so that the totals go on from there instead of starting again from 0 (which
        Prometheus would read as a reset). Its gauges are not taken: they were its own."""
        with self._mutex:
            self._counters.add(snapshot)

    def snapshot(self, admission: Admission, group_queue_depth: int | None) -> MetricsSnapshot:
        """This worker's figures, to publish for the other workers' scrapes."""
        # Admission has a lock of its own: read it first, so the two are never held together.
        figures = admission.snapshot()
        with self._mutex:
            counters = self._counters
            shed = dict(counters.shed)
            for key, count in figures.shed.items():
                shed[key] = shed.get(key, 0) + count
            return {
                "requests": [
                    (route, method, status, count)
                    for (route, method, status), count in counters.requests.items()
                ],
                "latency": [
                    (route, method, list(histogram.counts), histogram.total, histogram.count)
                    for (route, method), histogram in counters.latency.items()
                ],
                "rate_limited": counters.rate_limited,
                "degraded": dict(counters.degraded),
                "bulk_items": dict(counters.bulk_items),
                "group_sizes": list(counters.group_sizes),
                "groups": counters.groups,
                "group_requests": counters.group_requests,
                "group_fallbacks": counters.group_fallbacks,
                "shed": [
                    (CLASS_NAMES[priority], reason, count)
                    for (priority, reason), count in shed.items()
                ],
                "in_flight": list(figures.in_flight),
                "queued": list(figures.queued),
                "group_queue_depth": group_queue_depth,
            }

    def render(
        self,
        admission: Admission,
        switches: Switches,
        ledger: "LedgerTotals | None" = None,
        group_queue_depth: Callable[[], int] | None = None,
        peers: Sequence[MetricsSnapshot] = (),
    ) -> str:
        """The answer to a scrape: this worker's live figures added to `peers`, the other
        workers' last published snapshots (see the module's docstring)."""
        lines: list[str] = []

        def family(name: str, kind: str, text: str) -> None:
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")

        def sample(name: str, labels: Iterable[tuple[str, str]], value: float) -> None:
            lines.append(f"{name}{_labels(labels)} {_number(value)}")

        own = self.snapshot(admission, None if group_queue_depth is None else group_queue_depth())
        workers = (own, *peers)
        totals = _Counters()
        for figures in workers:
            totals.add(figures)
        in_flight = [sum(w["in_flight"][c] for w in workers) for c in range(len(CLASS_NAMES))]
        queued = [sum(w["queued"][c] for w in workers) for c in range(len(CLASS_NAMES))]
        depths = [d for w in workers if (d := w["group_queue_depth"]) is not None]

        family("paycell_http_requests_total", "counter", "HTTP requests by route and status")
        for (route, method, status), count in sorted(totals.requests.items()):
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
        for (route, method), histogram in sorted(totals.latency.items(), key=lambda kv: kv[0]):
            labels = (("route", route), ("method", method))
            cumulative = 0
            for bound, bucket in zip(LATENCY_BUCKETS, histogram.counts, strict=True):
                cumulative += bucket
                sample(
                    "paycell_http_request_duration_seconds_bucket",
                    (*labels, ("le", _number(bound))),
                    cumulative,
                )
            sample(
                "paycell_http_request_duration_seconds_bucket",
                (*labels, ("le", "+Inf")),
                histogram.count,
            )
            sample("paycell_http_request_duration_seconds_sum", labels, histogram.total)
            sample("paycell_http_request_duration_seconds_count", labels, histogram.count)

        config = admission.config
        for name, kind, text, values in (
            ("paycell_admission_in_flight", "gauge", "admitted requests", in_flight),
            ("paycell_admission_queue_depth", "gauge", "requests waiting", queued),
            # Limits are each worker's configuration: the same in every worker, not summed.
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
            per_worker = ", per worker" if name.endswith("_limit") else ""
            family(name, kind, f"{text} per priority class{per_worker}")
            for index, value in enumerate(values):
                sample(name, (("class", CLASS_NAMES[index]),), value)
        family("paycell_admission_shed_total", "counter", "requests shed (503) by class, reason")
        for (priority, reason), count in sorted(totals.shed.items()):
            sample(
                "paycell_admission_shed_total",
                (("class", CLASS_NAMES[priority]), ("reason", reason)),
                count,
            )
        family("paycell_rate_limited_total", "counter", "requests refused over a key's rate (429)")
        sample("paycell_rate_limited_total", (), totals.rate_limited)
        family("paycell_degraded_total", "counter", "requests refused by a switch (503)")
        for switch, count in sorted(totals.degraded.items()):
            sample("paycell_degraded_total", (("switch", switch),), count)
        family("paycell_bulk_items_total", "counter", "bulk payment items by result code")
        for code, count in sorted(totals.bulk_items.items()):
            sample("paycell_bulk_items_total", (("code", code),), count)

        family(
            "paycell_group_commit_size",
            "histogram",
            "single payments per group commit (one unit of work, one commit)",
        )
        cumulative = 0
        for bound, bucket in zip(GROUP_SIZE_BUCKETS, totals.group_sizes, strict=True):
            cumulative += bucket
            sample("paycell_group_commit_size_bucket", (("le", _number(bound)),), cumulative)
        sample("paycell_group_commit_size_bucket", (("le", "+Inf"),), totals.groups)
        sample("paycell_group_commit_size_sum", (), totals.group_requests)
        sample("paycell_group_commit_size_count", (), totals.groups)
        family("paycell_group_commit_groups_total", "counter", "groups of single payments run")
        sample("paycell_group_commit_groups_total", (), totals.groups)
        family(
            "paycell_group_commit_fallbacks_total",
            "counter",
            "groups that failed unexpectedly and ran their requests one by one",
        )
        sample("paycell_group_commit_fallbacks_total", (), totals.group_fallbacks)
        if depths:
            family("paycell_group_commit_queue_depth", "gauge", "payments waiting for a group")
            sample("paycell_group_commit_queue_depth", (), sum(depths))

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
            totals_by_account = ledger.read()
            for side in ("debits", "credits"):
                name = f"paycell_ledger_platform_{side}_posted"
                family(
                    name,
                    "gauge",
                    f"{side} posted on the platform's own accounts, minor units "
                    "(channel_settlement: money in from and out to the bank)",
                )
                for (currency, account), (debits, credits) in sorted(totals_by_account.items()):
                    sample(
                        name,
                        (("currency", currency), ("account", account)),
                        debits if side == "debits" else credits,
                    )
            family("paycell_ledger_totals_age_seconds", "gauge", "age of the ledger figures")
            sample("paycell_ledger_totals_age_seconds", (), round(ledger.age(), 3))

        family(
            "paycell_workers",
            "gauge",
            "server workers whose figures are summed here (this one and the others' snapshots)",
        )
        sample("paycell_workers", (), len(workers))
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


# ------------------------------------------------------------------------ several workers


def _board_file(worker: int) -> str:
    return f"metrics-worker-{worker}.json"


_BOARD_FILE: Final = re.compile(r"metrics-worker-(\d+)\.json")


class MetricsBoard:
    """The workers' snapshots, one JSON file per worker in the server's run directory: each
    worker publishes its own and reads the others' (see the module's docstring)."""

    def __init__(self, directory: Path, worker: int) -> None:
        self.directory = directory
        self.worker = worker
        self.path = directory / _board_file(worker)
        # The temporary file's name is this process's: two publishing threads would share it.
        self._mutex = threading.Lock()

    def publish(self, snapshot: MetricsSnapshot) -> None:
        """Replace this worker's file. A reader sees the previous snapshot or this one, never
        part of one: the text goes to a temporary file in the same directory, which then
        takes the file's name in one rename. No fsync: the figures are worth a second, and a
        machine that crashes restarts every worker anyway."""
        text = json.dumps(snapshot, separators=(",", ":"))
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with self._mutex:
            try:
                temporary.write_text(text, encoding="utf-8")
                os.replace(temporary, self.path)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise

    def peers(self) -> list[MetricsSnapshot]:
        """The other workers' last snapshots, in worker order. A file that cannot be read or
        is not a snapshot (a worker of another version, a disk fault) is left out and logged
        at debug level: the scrape answers with the figures there are."""
        found: list[tuple[int, MetricsSnapshot]] = []
        for path in self.directory.glob("metrics-worker-*.json"):
            match = _BOARD_FILE.fullmatch(path.name)
            if match is None or int(match[1]) == self.worker:
                continue
            snapshot = _read_snapshot(path)
            if snapshot is not None:
                found.append((int(match[1]), snapshot))
        return [snapshot for _, snapshot in sorted(found, key=lambda found: found[0])]

    def last_published(self) -> MetricsSnapshot | None:
        """What this worker (a predecessor of this process) last published, for `resume`;
        None before the first publication or when the file is unusable."""
        return _read_snapshot(self.path)


def _read_snapshot(path: Path) -> MetricsSnapshot | None:
    try:
        return _snapshot_from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError) as error:
        _log.debug("metrics snapshot %s skipped: %r", path, error)
        return None


def _snapshot_from_json(data: Any) -> MetricsSnapshot:
    """A snapshot read back from JSON, every field checked, so that a scrape never fails on a
    file it summed: raises ValueError, TypeError or KeyError when `data` is not a snapshot
    with this version's buckets and classes."""
    return {
        "requests": [
            (_text(route), _text(method), _count(status), _count(count))
            for route, method, status, count in _rows(data["requests"], 4)
        ],
        "latency": [
            (
                _text(route),
                _text(method),
                _counts(counts, len(LATENCY_BUCKETS)),
                _seconds(total),
                _count(count),
            )
            for route, method, counts, total, count in _rows(data["latency"], 5)
        ],
        "rate_limited": _count(data["rate_limited"]),
        "degraded": _tally(data["degraded"]),
        "bulk_items": _tally(data["bulk_items"]),
        "group_sizes": _counts(data["group_sizes"], len(GROUP_SIZE_BUCKETS)),
        "groups": _count(data["groups"]),
        "group_requests": _count(data["group_requests"]),
        "group_fallbacks": _count(data["group_fallbacks"]),
        "shed": [
            (_class_name(name), _text(reason), _count(count))
            for name, reason, count in _rows(data["shed"], 3)
        ],
        "in_flight": _counts(data["in_flight"], len(CLASS_NAMES)),
        "queued": _counts(data["queued"], len(CLASS_NAMES)),
        "group_queue_depth": (
            None if data["group_queue_depth"] is None else _count(data["group_queue_depth"])
        ),
    }


def _count(value: object) -> int:
    # A bool is an int to Python, never a count.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not a count: {value!r}")
    return value


def _seconds(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not seconds: {value!r}")
    return float(value)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not text: {value!r}")
    return value


def _class_name(value: object) -> str:
    if value not in CLASS_NAMES:
        raise ValueError(f"no priority class {value!r}")
    return _text(value)


def _counts(value: object, length: int) -> list[int]:
    if not isinstance(value, list) or len(value) != length:
        raise ValueError(f"not {length} counts: {value!r}")
    return [_count(item) for item in value]


def _tally(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        raise TypeError(f"not a mapping: {value!r}")
    return {_text(key): _count(count) for key, count in value.items()}


def _rows(value: object, width: int) -> list[list[Any]]:
    if not isinstance(value, list) or any(
        not isinstance(row, list) or len(row) != width for row in value
    ):
        raise ValueError(f"not rows of {width}: {value!r}")
    return value
