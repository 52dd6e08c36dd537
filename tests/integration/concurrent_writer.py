"""A writer for the concurrency test: `python -m tests.integration.concurrent_writer URL W N P`.

Worker W writes its N batches (transfers among a few guarded accounts, about a third of them
to one hot account), retries some of them at once, then replays some of peer P's batches.
Every submission is printed as one JSON line {"worker", "batch", "results"}, after the call
returned. Batch content is a pure function of (worker, batch), so the test can recompute it.
"""

import json
import random
import sys

from paycell import Account, AccountFlags, Ledger, Transfer
from paycell.adapters.storage import sqlite as sqlite_storage

LEDGER = 156
CODE = 1
REGULAR_ACCOUNTS = tuple(range(1, 21))
HOT_ACCOUNT = 100
SOURCE_ACCOUNT = 1_000
OPENING_BALANCE = 20_000
AMOUNT_MAX = 500
# On SQLite, write the account log back every few batches, so each process keeps finding that
# another one wrote it back, and index statements as often.
ACCOUNT_CHANGES_MERGE_EVERY = 40
STATEMENT_INDEX_EVERY = 60


def accounts() -> list[Account]:
    guarded = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    return [
        *(Account(id=i, ledger=LEDGER, code=CODE, flags=guarded) for i in REGULAR_ACCOUNTS),
        Account(id=HOT_ACCOUNT, ledger=LEDGER, code=CODE, flags=guarded),
        Account(id=SOURCE_ACCOUNT, ledger=LEDGER, code=CODE),
    ]


def opening_transfers() -> list[Transfer]:
    return [
        Transfer(
            id=i,
            debit_account_id=SOURCE_ACCOUNT,
            credit_account_id=i,
            amount=OPENING_BALANCE,
            ledger=LEDGER,
            code=CODE,
        )
        for i in REGULAR_ACCOUNTS
    ]


def batch_transfers(worker: int, batch: int) -> list[Transfer]:
    rng = random.Random(worker * 1_000_003 + batch)
    transfers = []
    for index in range(rng.randint(1, 50)):
        debit = rng.choice(REGULAR_ACCOUNTS)
        if rng.random() < 0.35:
            credit = HOT_ACCOUNT
        else:
            credit = rng.choice([a for a in REGULAR_ACCOUNTS if a != debit])
        transfers.append(
            Transfer(
                id=((worker + 1) << 40) | (batch << 16) | index,
                debit_account_id=debit,
                credit_account_id=credit,
                amount=rng.randint(1, AMOUNT_MAX),
                ledger=LEDGER,
                code=CODE,
            )
        )
    return transfers


def main(url: str, worker: int, batches: int, peer: int) -> int:
    # Shrink the thresholds on purpose. Both are `Final`, and the second is only imported into
    # the sqlite module, but a ledger reads both from that module when it opens (the tests'
    # monkeypatch.setattr patches the same names).
    sqlite_storage.STATEMENT_INDEX_EVERY = STATEMENT_INDEX_EVERY  # type: ignore[misc]
    sqlite_storage.ACCOUNT_CHANGES_MERGE_EVERY = ACCOUNT_CHANGES_MERGE_EVERY  # type: ignore[attr-defined]
    rng = random.Random(worker)

    def submit(owner: int, batch: int) -> None:
        results = ledger.create_transfers(batch_transfers(owner, batch))
        line = {"worker": owner, "batch": batch, "results": [r.value for r in results]}
        print(json.dumps(line), flush=True)

    with Ledger(url) as ledger:
        for batch in range(batches):
            submit(worker, batch)
            if rng.random() < 0.3:
                submit(worker, batch)  # a client retry of the same ids
        for batch in range(0, batches, 4):
            submit(peer, batch)  # another process replays (or first applies) a peer's batch
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
