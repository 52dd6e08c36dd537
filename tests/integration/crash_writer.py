"""A writer for the crash-safety test: `python -m tests.integration.crash_writer URL FIRST`.

Writes batch FIRST, FIRST+1, ... of transfers forever and prints `ACK <batch>` (flushed) only
after `create_transfers` returned, i.e. after the batch's commit is durable. Each batch's
content is a pure function of its number, so the test can recompute it and a restarted writer
retrying a batch whose ACK was lost sends exactly the same events (and must get `exists`).
"""

import random
import sys

from paycell import Account, CreateTransferResult, Ledger, Transfer, TransferFlags
from paycell.adapters.storage import sqlite as sqlite_storage

ACCOUNTS = 50
LEDGER = 156
CODE = 1
BATCH_SIZE_MAX = 200
IDS_PER_BATCH = 1_000
# On SQLite, index statements and write the account log back every few batches rather than
# every few thousand, so kills land before, during and after both.
STATEMENT_INDEX_EVERY = 250
ACCOUNT_CHANGES_MERGE_EVERY = 300


def accounts() -> list[Account]:
    return [Account(id=i, ledger=LEDGER, code=CODE) for i in range(1, ACCOUNTS + 1)]


def batch_transfers(batch_number: int) -> list[Transfer]:
    rng = random.Random(batch_number)
    size = rng.randint(1, BATCH_SIZE_MAX)
    transfers = []
    for index in range(size):
        debit = rng.randint(1, ACCOUNTS)
        credit = rng.randint(1, ACCOUNTS - 1)
        if credit >= debit:
            credit += 1
        transfers.append(
            Transfer(
                id=batch_number * IDS_PER_BATCH + index + 1,
                debit_account_id=debit,
                credit_account_id=credit,
                amount=rng.randint(1, 1_000_000),
                user_data_64=batch_number,
                ledger=LEDGER,
                code=CODE,
            )
        )
    # Some linked chains of 2 to 5 events, each closed (its last event not linked).
    index = 0
    while index < size - 1:
        if rng.random() < 0.2:
            length = min(rng.randint(2, 5), size - index)
            for k in range(index, index + length - 1):
                transfers[k] = transfers[k]._replace(flags=int(TransferFlags.LINKED))
            index += length
        else:
            index += 1
    return transfers


def main(url: str, first_batch: int) -> int:
    # Shrink the thresholds on purpose. Both are `Final`, and the second is only imported into
    # the sqlite module, but a ledger reads both from that module when it opens (the tests'
    # monkeypatch.setattr patches the same names).
    sqlite_storage.STATEMENT_INDEX_EVERY = STATEMENT_INDEX_EVERY  # type: ignore[misc]
    sqlite_storage.ACCOUNT_CHANGES_MERGE_EVERY = ACCOUNT_CHANGES_MERGE_EVERY  # type: ignore[attr-defined]
    with Ledger(url) as ledger:
        print("READY", flush=True)
        batch_number = first_batch
        while True:
            results = ledger.create_transfers(batch_transfers(batch_number))
            # A batch is all new or, when its ACK was lost to a kill, all already there. On such
            # a replay, as in TigerBeetle, `exists` fails a linked chain: the chain's other
            # events report `linked_event_failed` (they exist too; the test looks them up).
            replayed = {CreateTransferResult.EXISTS, CreateTransferResult.LINKED_EVENT_FAILED}
            if set(results) != {CreateTransferResult.OK} and not set(results) <= replayed:
                print(f"batch {batch_number}: unexpected results {set(results)}", file=sys.stderr)
                return 3
            print(f"ACK {batch_number}", flush=True)
            batch_number += 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
