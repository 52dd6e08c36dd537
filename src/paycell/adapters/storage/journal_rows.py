"""The rows one journal entry covers, read the same way on every backend.

`paycell verify` recomputes each entry's hash from these rows, so both backends must return
exactly the same records in exactly the same order; writing the queries once here makes that
true by construction. A backend supplies how to run a query (and its placeholder), how to
turn a row into a record, and how to decode a stored 128-bit id.
"""

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from paycell.core.journal import Expiry, Failure, JournalEntry
from paycell.core.types import Account, Transfer

Query = Callable[[str, tuple[int, int]], Iterable[Sequence[Any]]]


def read_batch_records(
    entry: JournalEntry,
    query: Query,
    placeholder: str,
    account_columns: str,
    transfer_columns: str,
    account_from_row: Callable[[Sequence[Any]], Account],
    transfer_from_row: Callable[[Sequence[Any]], Transfer],
    decode_id: Callable[[Any], int],
) -> tuple[list[Account], list[Transfer], list[Expiry], list[Failure]]:
    bounds = (entry.timestamp_first, entry.timestamp_last)
    in_entry = f"WHERE timestamp BETWEEN {placeholder} AND {placeholder} ORDER BY timestamp"
    # Accounts as created: zero balances and the flags they were created with, which is what
    # the journal hashed (a closing transfer may have changed `flags` since).
    accounts = [
        account_from_row(row)._replace(
            debits_pending=0,
            debits_posted=0,
            credits_pending=0,
            credits_posted=0,
            flags=row[13],
        )
        for row in query(
            f"SELECT {account_columns}, created_flags FROM accounts {in_entry}", bounds
        )
    ]
    transfers = [
        transfer_from_row(row)
        for row in query(f"SELECT {transfer_columns} FROM transfers {in_entry}", bounds)
    ]
    expiries = [
        Expiry(decode_id(row[0]), row[1])
        for row in query(f"SELECT pending_id, timestamp FROM expiries {in_entry}", bounds)
    ]
    failures = [
        Failure(decode_id(row[0]), row[1], row[2])
        for row in query(f"SELECT id, result, timestamp FROM failed_transfers {in_entry}", bounds)
    ]
    return accounts, transfers, expiries, failures
