"""Kill -9 at random moments: no acknowledged batch is lost, no batch is half applied.

A writer subprocess (`crash_writer`) writes batches of 1 to 200 transfers, some in linked
chains, and acknowledges each on stdout after `create_transfers` returned. The test SIGKILLs it
after a random 0.05-0.5 s, many times over, restarting it on the same database from the batch
after the last acknowledged one (so a batch committed but not acknowledged is retried, and must
come back `exists`). Afterwards every acknowledged batch is present in full, every other batch
is present in full or not at all, nothing else was written, and `verify` passes.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paycell import Ledger, QueryFilter
from tests.integration.crash_writer import accounts, batch_transfers

ROOT = Path(__file__).resolve().parents[2]


def _run_and_kill(url: str, first_batch: int, pause_seconds: float) -> list[int]:
    """Start a writer, kill it with SIGKILL after `pause_seconds`; return the batches it ACKed."""
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.crash_writer", url, str(first_batch)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert writer.stdout is not None
    ready = writer.stdout.readline()
    if ready.strip() != "READY":
        writer.kill()
        writer.wait()
        errors = writer.stderr.read() if writer.stderr else ""
        pytest.fail(f"the writer did not start: {ready!r} {errors}")
    time.sleep(pause_seconds)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    # Read through the same buffered file objects as READY was (communicate() would bypass
    # their buffers and lose lines already read into them).
    assert writer.stderr is not None
    output, errors = writer.stdout.read(), writer.stderr.read()
    writer.stdout.close()
    writer.stderr.close()
    assert writer.returncode == -signal.SIGKILL, f"the writer stopped by itself: {errors}"
    acknowledged = [int(line.split()[1]) for line in output.splitlines() if line.startswith("ACK")]
    # ACKs are in order, consecutive from the first batch, and each complete (flushed lines).
    assert acknowledged == list(range(first_batch, first_batch + len(acknowledged)))
    return acknowledged


def _kill_repeatedly(url: str, kills: int) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    with Ledger(url) as ledger:
        assert {r.value for r in ledger.create_accounts(accounts())} == {"ok"}
    acknowledged: list[int] = []
    next_batch = 1
    for _ in range(kills):
        acked = _run_and_kill(url, next_batch, rng.uniform(0.05, 0.5))
        acknowledged += acked
        if acked:
            next_batch = acked[-1] + 1
    assert acknowledged, f"no batch was ever acknowledged (seed {seed})"

    # The writer never got past next_batch (it was killed while writing it, at the latest).
    with Ledger(url) as ledger:
        present_total = 0
        for batch_number in range(1, next_batch + 1):
            transfers = batch_transfers(batch_number)
            found = ledger.lookup_transfers([t.id for t in transfers])
            assert len(found) in (0, len(transfers)), (
                f"batch {batch_number} is half applied: {len(found)} of {len(transfers)} "
                f"(seed {seed})"
            )
            if batch_number in acknowledged:
                assert len(found) == len(transfers), (
                    f"acknowledged batch {batch_number} was lost (seed {seed})"
                )
            if found:
                assert [t._replace(timestamp=0) for t in found] == transfers
            present_total += len(found)
        stored = ledger.query_transfers(QueryFilter(ledger=156, limit=8190))
        assert len(stored) <= present_total
        report = ledger.verify()
        assert report.ok, report.render()
        assert report.transfers == present_total, f"stray transfers (seed {seed})"


def test_sqlite_survives_repeated_kill_9(sqlite_url: str) -> None:
    _kill_repeatedly(sqlite_url, kills=25)


@pytest.mark.postgres
def test_postgres_survives_repeated_kill_9(postgres_url: str) -> None:
    _kill_repeatedly(postgres_url, kills=8)
