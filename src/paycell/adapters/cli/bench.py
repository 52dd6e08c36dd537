"""`paycell bench ledger`: create_transfers throughput and batch latency, per backend.

For each backend x batch size x pattern the bench creates a fresh database (an SQLite file in a
temporary directory; a new database on a throwaway PostgreSQL server it starts and stops),
creates the accounts, then times `create_transfers` alone (building the batches is not timed)
over `--transfers` transfers per run, or, by default, over as many batches as fill
`--min-seconds` of ledger time per run, so each figure is stable. It prints one JSON line per
configuration:

- `transfers`: transfers timed, over all runs;
- `transfers_per_second_median` / `_runs`: transfers divided by time inside create_transfers;
- `batch_latency_ms_p50` / `_p99`: per create_transfers call, over all runs;
- `peak_rss_mb`: the bench process's peak resident memory so far (it never goes down, so a
  later configuration reports at least what an earlier one did).

Patterns: `random` moves money between two random accounts among `--accounts`; `hot` credits
one account with every transfer (a merchant on a sales peak) from random debit accounts.

With `--machine`, a first line (`"bench": "machine"`) says how fast the machine is at that
moment, so runs on different days (or on a busy shared machine) can be read against each
other: `python_loop_seconds` (ten million additions in a Python loop, the interpreter's
speed), `sqlite_inserts_per_second` (plain multi-column rows in batches of 8,190, one
transaction each, WAL with synchronous=FULL: SQLite and the disk with no ledger around them)
and `sqlite_commit_ms_median` (a one-row commit: mostly the fsync).
"""

import json
import os
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from paycell.adapters.cli.progress import Progress
from paycell.core.limits import BATCH_EVENTS_MAX
from paycell.core.results import CreateTransferResult
from paycell.core.types import Account, Transfer
from paycell.ledger import Ledger

BACKENDS: Final = ("sqlite", "postgres")
PATTERNS: Final = ("random", "hot")
DEFAULT_BATCH_SIZES: Final = (1, 100, BATCH_EVENTS_MAX)
DEFAULT_ACCOUNTS: Final = 10_000
DEFAULT_RUNS: Final = 3
DEFAULT_MIN_SECONDS: Final = 2.0
BENCH_LEDGER: Final = 156
BENCH_CODE: Final = 1
HOT_ACCOUNT_ID: Final = 1


class BenchUnavailableError(RuntimeError):
    """A backend the bench was asked for cannot run here (no PostgreSQL binaries)."""


@dataclass(frozen=True, slots=True)
class BenchSettings:
    backends: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    patterns: tuple[str, ...] = PATTERNS
    transfers: int | None = None
    runs: int = DEFAULT_RUNS
    accounts: int = DEFAULT_ACCOUNTS
    min_seconds: float = DEFAULT_MIN_SECONDS
    seed: int = 1
    machine: bool = False


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `fraction` of values <= it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def peak_rss_megabytes() -> float:
    # Linux reports ru_maxrss in kibibytes (macOS in bytes; paycell targets Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _TransferSource:
    """Builds batches of transfers for one pattern with fresh ids; building is not timed."""

    def __init__(self, pattern: str, accounts: int, seed: int) -> None:
        self.pattern = pattern
        self.accounts = accounts
        self.random = random.Random(seed)
        self.next_id = 1

    def batch(self, size: int) -> list[Transfer]:
        batch = []
        randrange = self.random.randrange
        # Account ids run from 1 to `accounts`; account 1 is the hot one.
        for _ in range(size):
            if self.pattern == "hot":
                debit = randrange(2, self.accounts + 1)
                credit = HOT_ACCOUNT_ID
            else:
                debit = randrange(1, self.accounts + 1)
                credit = randrange(1, self.accounts)
                if credit >= debit:
                    credit += 1
            batch.append(
                Transfer(
                    id=self.next_id,
                    debit_account_id=debit,
                    credit_account_id=credit,
                    amount=randrange(1, 100_000),
                    ledger=BENCH_LEDGER,
                    code=BENCH_CODE,
                )
            )
            self.next_id += 1
        return batch


def _create_accounts(ledger: Ledger, count: int) -> None:
    for start in range(1, count + 1, BATCH_EVENTS_MAX):
        stop = min(start + BATCH_EVENTS_MAX, count + 1)
        results = ledger.create_accounts(
            [Account(id=i, ledger=BENCH_LEDGER, code=BENCH_CODE) for i in range(start, stop)]
        )
        if any(result.value != "ok" for result in results):
            raise RuntimeError("the bench could not create its accounts")


def _timed_run(
    ledger: Ledger, source: _TransferSource, batch_size: int, settings: BenchSettings
) -> tuple[int, float, list[float]]:
    """One run: returns (transfers, seconds inside create_transfers, batch latencies)."""
    transfers = 0
    elapsed = 0.0
    latencies: list[float] = []
    while True:
        if settings.transfers is not None:
            if transfers >= settings.transfers:
                break
            size = min(batch_size, settings.transfers - transfers)
        else:
            if elapsed >= settings.min_seconds:
                break
            size = batch_size
        batch = source.batch(size)
        started = time.perf_counter()
        results = ledger.create_transfers(batch)
        latency = time.perf_counter() - started
        if any(result is not CreateTransferResult.OK for result in results):
            raise RuntimeError(f"a bench transfer was rejected: {results[0].value}")
        transfers += size
        elapsed += latency
        latencies.append(latency)
    return transfers, elapsed, latencies


def run_configuration(
    database: str, backend: str, batch_size: int, pattern: str, settings: BenchSettings
) -> dict[str, Any]:
    with Ledger(database) as ledger:
        _create_accounts(ledger, settings.accounts)
        source = _TransferSource(pattern, settings.accounts, settings.seed)
        rates: list[float] = []
        latencies: list[float] = []
        total = 0
        for _ in range(settings.runs):
            transfers, elapsed, run_latencies = _timed_run(ledger, source, batch_size, settings)
            rates.append(transfers / elapsed if elapsed > 0 else 0.0)
            latencies.extend(run_latencies)
            total += transfers
    return {
        "bench": "ledger",
        "backend": backend,
        "batch_size": batch_size,
        "pattern": pattern,
        "transfers": total,
        "runs": settings.runs,
        "transfers_per_second_median": round(statistics.median(rates), 1),
        "transfers_per_second_runs": [round(rate, 1) for rate in rates],
        "batch_latency_ms_p50": round(percentile(latencies, 0.50) * 1000, 3),
        "batch_latency_ms_p99": round(percentile(latencies, 0.99) * 1000, 3),
        "peak_rss_mb": round(peak_rss_megabytes(), 1),
    }


MACHINE_LOOP_ADDITIONS: Final = 10_000_000
MACHINE_INSERT_BATCHES: Final = 20
MACHINE_INSERT_ROUNDS: Final = 3
MACHINE_COMMITS: Final = 50


def machine_figures(directory: str) -> dict[str, object]:
    """How fast this machine is right now (see the module's docstring): about two seconds."""
    started = time.perf_counter()
    total = 0
    for number in range(MACHINE_LOOP_ADDITIONS):
        total += number
    loop_seconds = time.perf_counter() - started
    inserts: list[float] = []
    commits: list[float] = []
    for round_number in range(MACHINE_INSERT_ROUNDS):
        path = os.path.join(directory, f"machine-{round_number}.db")
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute(
                "CREATE TABLE rows (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER, c INTEGER, "
                "d INTEGER, e INTEGER, f INTEGER, g INTEGER)"
            )
            generator = random.Random(round_number)
            rows = [
                [(n, generator.randrange(10_000), generator.randrange(10_000), 1, 2, 3, 0, n)
                 for n in range(batch * BATCH_EVENTS_MAX, (batch + 1) * BATCH_EVENTS_MAX)]
                for batch in range(MACHINE_INSERT_BATCHES)
            ]  # fmt: skip
            started = time.perf_counter()
            for batch_rows in rows:
                connection.execute("BEGIN")
                connection.executemany(
                    "INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch_rows
                )
                connection.execute("COMMIT")
            elapsed = time.perf_counter() - started
            inserts.append(MACHINE_INSERT_BATCHES * BATCH_EVENTS_MAX / elapsed)
            for number in range(MACHINE_COMMITS // MACHINE_INSERT_ROUNDS + 1):
                started = time.perf_counter()
                connection.execute("UPDATE rows SET a = a + 1 WHERE id = ?", (number,))
                commits.append(time.perf_counter() - started)
        finally:
            connection.close()
            _remove_sqlite_files(path)
    return {
        "bench": "machine",
        "cpus": os.cpu_count(),
        "python_loop_seconds": round(loop_seconds, 3),
        "sqlite_inserts_per_second": round(statistics.median(inserts)),
        "sqlite_inserts_per_second_runs": [round(rate) for rate in inserts],
        "sqlite_commit_ms_median": round(1000 * statistics.median(commits), 3),
    }


@contextmanager
def _databases(backend: str) -> Iterator[Iterator[str]]:
    """Yields an endless supply of fresh, empty databases on `backend`."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="paycell-bench-") as directory:
            yield (str(Path(directory) / f"bench-{n}.db") for n in _count())
        return
    from paycell.adapters.storage.throwaway_postgres import (
        PostgresServer,
        PostgresUnavailableError,
    )

    try:
        server = PostgresServer()
    except PostgresUnavailableError as error:
        raise BenchUnavailableError(str(error)) from None
    with server:
        yield (server.create_database(f"bench_{n}") for n in _count())


def _remove_sqlite_files(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


def _count() -> Iterator[int]:
    n = 0
    while True:
        n += 1
        yield n


def postgres_available() -> bool:
    try:
        import paycell.adapters.storage.postgres  # noqa: F401
        from paycell.adapters.storage.throwaway_postgres import find_postgres_bin

        find_postgres_bin()
    except (ImportError, RuntimeError):
        return False
    return True


def run_bench(settings: BenchSettings, out: IO[str], progress: Progress) -> int:
    if settings.machine:
        progress.say("bench ledger: how fast this machine is right now")
        with tempfile.TemporaryDirectory(prefix="paycell-bench-machine-") as directory:
            out.write(json.dumps(machine_figures(directory)) + "\n")
            out.flush()
    for backend in settings.backends:
        progress.say(f"bench ledger: {backend}")
        with _databases(backend) as databases:
            for batch_size in settings.batch_sizes:
                for pattern in settings.patterns:
                    progress.say(
                        f"  {backend} batch_size={batch_size} pattern={pattern}: "
                        f"{settings.accounts} accounts, {settings.runs} runs"
                    )
                    database = next(databases)
                    figures = run_configuration(database, backend, batch_size, pattern, settings)
                    if backend == "sqlite":
                        _remove_sqlite_files(database)
                    out.write(json.dumps(figures) + "\n")
                    out.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python bench/ledger.py ...`: the same as `paycell bench ledger ...`."""
    from paycell.adapters.cli.main import main as cli_main

    return cli_main(["bench", "ledger", *(sys.argv[1:] if argv is None else argv)])
