"""Several processes write to one database at once; every transfer applies exactly once.

Four writer processes (`concurrent_writer`) move money among twenty guarded accounts (they may
never go below zero) and into one hot account that receives from all of them; each retries
some of its own batches and replays some of a peer's, concurrently with the peer. Afterwards:
- each transfer id was applied at most once: one `ok`, every other submission `exists`; or it
  was rejected everywhere and never applied;
- each account's balances equal exactly its opening balance plus the acknowledged transfers;
- no guarded account went below zero, and `verify` passes.
"""

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from paycell import CreateTransferResult, Ledger
from tests.integration.concurrent_writer import (
    HOT_ACCOUNT,
    OPENING_BALANCE,
    REGULAR_ACCOUNTS,
    SOURCE_ACCOUNT,
    accounts,
    batch_transfers,
    opening_transfers,
)

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4
BATCHES = 30


def _open_the_books(database_url: str) -> None:
    with Ledger(database_url) as ledger:
        assert {r.value for r in ledger.create_accounts(accounts())} == {"ok"}
        assert {r.value for r in ledger.create_transfers(opening_transfers())} == {"ok"}


def _writer(
    database_url: str, worker: int, batches: int, peer: int, *, report: bool
) -> "subprocess.Popen[str]":
    """A `concurrent_writer` process; its submissions on stdout if `report`."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.concurrent_writer",
            database_url,
            str(worker),
            str(batches),
            str(peer),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE if report else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # The writers import this checkout's tests package.
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )


def test_concurrent_writers_apply_each_transfer_exactly_once(database_url: str) -> None:
    _open_the_books(database_url)
    writers = [
        _writer(database_url, worker, BATCHES, (worker + 1) % WORKERS, report=True)
        for worker in range(WORKERS)
    ]
    submissions = []
    for writer in writers:
        output, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0, errors
        submissions += [json.loads(line) for line in output.splitlines()]
    assert len(submissions) >= WORKERS * BATCHES

    # Every submission of an id, from any process, in any order.
    outcomes: defaultdict[int, list[str]] = defaultdict(list)
    transfers_by_id = {}
    for submission in submissions:
        batch = batch_transfers(submission["worker"], submission["batch"])
        assert len(batch) == len(submission["results"])
        for transfer, result in zip(batch, submission["results"], strict=True):
            outcomes[transfer.id].append(result)
            transfers_by_id[transfer.id] = transfer
    ok = CreateTransferResult.OK.value
    exists = CreateTransferResult.EXISTS.value
    applied = []
    for transfer_id, results in outcomes.items():
        if ok in results:
            assert results.count(ok) == 1, f"transfer {transfer_id} applied twice: {results}"
            assert set(results) == {ok} or set(results) == {ok, exists}, results
            applied.append(transfers_by_id[transfer_id])
        else:
            assert exists not in results, f"transfer {transfer_id}: exists but never ok"
    assert len(applied) > len(outcomes) // 2, "most transfers should have been affordable"
    assert any(t.credit_account_id == HOT_ACCOUNT for t in applied)

    expected: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0])  # debits, credits
    for account_id in REGULAR_ACCOUNTS:
        expected[account_id][1] += OPENING_BALANCE
        expected[SOURCE_ACCOUNT][0] += OPENING_BALANCE
    for transfer in applied:
        expected[transfer.debit_account_id][0] += transfer.amount
        expected[transfer.credit_account_id][1] += transfer.amount

    with Ledger(database_url) as ledger:
        stored = ledger.lookup_accounts([*REGULAR_ACCOUNTS, HOT_ACCOUNT, SOURCE_ACCOUNT])
        assert len(stored) == len(REGULAR_ACCOUNTS) + 2
        for account in stored:
            assert [account.debits_posted, account.credits_posted] == expected[account.id], (
                f"account {account.id}"
            )
            assert account.debits_pending == account.credits_pending == 0
            if account.id != SOURCE_ACCOUNT:
                assert account.debits_posted <= account.credits_posted
        found = ledger.lookup_transfers(sorted(outcomes))
        assert sorted(t.id for t in found) == sorted(t.id for t in applied)
        report = ledger.verify()
        assert report.ok, report.render()


def test_verify_sees_one_snapshot_while_other_processes_write(database_url: str) -> None:
    # verify reads the journal, every record and every balance: if a batch committed between
    # two of those reads, they would disagree and it would report discrepancies that are not
    # there. It reads one snapshot, so on a live database it passes as on an idle one.
    _open_the_books(database_url)
    writers = [
        _writer(database_url, worker, BATCHES * 2, worker, report=False) for worker in range(2)
    ]
    reports = []
    with Ledger(database_url) as ledger:
        while any(writer.poll() is None for writer in writers):
            report = ledger.verify()
            reports.append(report)
            assert report.ok, report.render()
        journal_entries = [report.journal_entries for report in reports]
    for writer in writers:
        _, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0, errors
    # Several verifies ran while the journal grew under them.
    assert len(set(journal_entries)) >= 3, journal_entries
