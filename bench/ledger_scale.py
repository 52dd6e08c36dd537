"""The ledger at scale: millions of accounts on disk, none of them loaded whole.

Creates `--accounts` accounts (default 10,000,000) in a fresh SQLite file in batches of
8,190, then times create_transfers batches of 8,190 between accounts drawn uniformly from all
of them, and reports throughput, the database size and the process's memory. The accounts
are never held in memory together: each batch prefetches only the accounts it touches, and
the service's account cache is bounded (200,000 accounts).

    python bench/ledger_scale.py                      # 10 million accounts, a few minutes
    python bench/ledger_scale.py --accounts 1000000   # quicker

Prints progress on stderr and one JSON line on stdout.
"""

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from paycell import BATCH_EVENTS_MAX, Account, Ledger, Transfer

LEDGER = 156


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000_000)
    parser.add_argument("--batches", type=int, default=20, help="timed transfer batches")
    parser.add_argument("--database", help="SQLite file (default: a temporary one)")
    arguments = parser.parse_args()

    directory = tempfile.TemporaryDirectory(prefix="paycell-scale-")
    path = Path(arguments.database or Path(directory.name) / "scale.db")
    ledger = Ledger(path)
    started = time.perf_counter()
    created = 0
    while created < arguments.accounts:
        count = min(BATCH_EVENTS_MAX, arguments.accounts - created)
        results = ledger.create_accounts(
            [Account(id=created + i + 1, ledger=LEDGER, code=1) for i in range(count)]
        )
        assert all(r.value in ("ok", "exists") for r in results)
        created += count
        if created % (BATCH_EVENTS_MAX * 50) < BATCH_EVENTS_MAX or created == arguments.accounts:
            print(
                f"\raccounts {created:,}/{arguments.accounts:,}  rss {rss_mb():.0f} MB",
                end="",
                file=sys.stderr,
                flush=True,
            )
    accounts_seconds = time.perf_counter() - started
    rss_after_accounts = rss_mb()
    print(file=sys.stderr)

    generator = random.Random(7)
    batch_seconds: list[float] = []
    next_id = 1
    for number in range(arguments.batches):
        batch = []
        for _ in range(BATCH_EVENTS_MAX):
            debit = generator.randint(1, arguments.accounts)
            credit = generator.randint(1, arguments.accounts)
            if credit == debit:
                credit = debit % arguments.accounts + 1
            batch.append(
                Transfer(
                    id=next_id,
                    debit_account_id=debit,
                    credit_account_id=credit,
                    amount=generator.randint(1, 100_000),
                    ledger=LEDGER,
                    code=1,
                )
            )
            next_id += 1
        begun = time.perf_counter()
        results = ledger.create_transfers(batch)
        batch_seconds.append(time.perf_counter() - begun)
        assert all(r.value == "ok" for r in results)
        print(f"\rtransfer batches {number + 1}/{arguments.batches}", end="", file=sys.stderr)
    print(file=sys.stderr)
    ledger.close()
    median = statistics.median(batch_seconds)
    figures = {
        "bench": "ledger_scale",
        "backend": "sqlite",
        "accounts": arguments.accounts,
        "accounts_per_second": round(arguments.accounts / accounts_seconds),
        "database_mb": round(
            sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
        ),
        "batch_size": BATCH_EVENTS_MAX,
        "batches": arguments.batches,
        "transfers_per_second_median": round(BATCH_EVENTS_MAX / median),
        "batch_latency_ms_p50": round(median * 1000, 1),
        "peak_rss_mb_after_accounts": round(rss_after_accounts),
        "peak_rss_mb": round(rss_mb()),
    }
    print(json.dumps(figures))
    directory.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
