"""SQLite's account change log: balances are appended per batch and written back in bulk.

Updating balances in place put every batch's accounts on as many random pages of `accounts` as
it touched accounts: at batches of 100 random transfers, some 160 pages a commit, which made
the commit's WAL write and fsync the largest cost of a batch. Instead, a batch appends the new
balances and flags of each account it changed to `account_changes`, a few pages at the end of
one table (the rest of an account never changes; logging whole rows measured 10% slower).
Once `ACCOUNT_CHANGES_MERGE_EVERY` rows have piled up, the batch that crosses the threshold
writes the latest state of each changed account back into `accounts`, sorted by id, and
empties the log, inside that batch's transaction: an account page is then written once per
write-back for all its accounts' changes, not once per batch.

An account's current state is its latest row in the log, or its row in `accounts` if the log
has none. Each store keeps the log's content in memory (`AccountChangeLog`) and brings it up
to date at the start of every transaction, by reading the rows appended since it last looked,
which are few unless another process has been writing. Rows are numbered from 1 after each
write-back, which `ledger_meta.account_log_generation` counts; when the generation moves,
another process wrote the log back and the memory starts over from what is left. (The log
numbers its rows as SQLite's rowid does, not AUTOINCREMENT, which measured 50% dearer a row.)
Everything a batch does, log rows and write-back, commits or rolls back with the batch, so a
crash leaves the log consistent with its journal.
"""

import sqlite3
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

from paycell.adapters.storage.sqlite_inserts import insert_rows
from paycell.core.types import Account

# A batch writes the log back once it holds this many rows, or this many distinct accounts,
# whichever comes first. A write-back costs one UPDATE per distinct account, so rows that
# change the same accounts again (a hot merchant, a small ledger) fold for free until the row
# limit, which bounds the log's size and what a new connection reads. Among many accounts,
# where a batch of 8,190 random transfers logs about 16,000 of them, the account limit writes
# back every second such batch; among 10,000 accounts, the row limit every sixteenth. The
# memory view holds at most the account limit plus one batch's worth (about 10 MB).
ACCOUNT_CHANGES_MERGE_EVERY: Final = 131_072
ACCOUNT_CHANGES_ACCOUNTS_MAX: Final = 32_768

# What changes of an account, as logged and written back: (id, debits_pending, debits_posted,
# credits_pending, credits_posted, flags), stored-encoded.
ChangeRow = tuple[Any, ...]

_APPEND: Final = (
    "INSERT INTO account_changes "
    "(id, debits_pending, debits_posted, credits_pending, credits_posted, flags)"
)
# Moving `log_generation` is what the trigger `accounts_change_through_the_log` lets through:
# a process still running paycell 2's code (which updated balances in place, under the log)
# has its batch refused instead of losing updates.
_WRITE_BACK: Final = (
    "UPDATE accounts SET debits_pending = ?2, debits_posted = ?3, credits_pending = ?4, "
    "credits_posted = ?5, flags = ?6, log_generation = log_generation + 1 WHERE id = ?1"
)
_WHERE_THE_LOG_IS: Final = (
    "SELECT account_log_generation, (SELECT max(seq) FROM account_changes) FROM ledger_meta"
)
_READ: Final = (
    "SELECT seq, id, debits_pending, debits_posted, credits_pending, credits_posted, flags "
    "FROM account_changes WHERE seq > ? ORDER BY seq"
)


class AccountChangeLog:
    """One connection's memory of the log: the latest state of each account in it.

    It holds exactly the log's rows of generation `_generation` up to `_seen_through`, folded
    by account, as whole accounts. `synchronize` runs at the start of every transaction (so it
    and the reads that follow see one snapshot) and brings it up to date; `append` adds a write
    transaction's own rows as it writes them. A transaction that rolls back, or a commit that
    fails, must call `forget`: the memory may then hold rows the database does not.
    """

    def __init__(
        self,
        merge_every: int,
        change_rows: Callable[[list[Account]], list[ChangeRow]],
        decode: Callable[[Any], int],
        read_accounts: Callable[[sqlite3.Connection, Collection[int]], dict[int, Account]],
        accounts_max: int = ACCOUNT_CHANGES_ACCOUNTS_MAX,
    ) -> None:
        self.merge_every = merge_every
        self.accounts_max = accounts_max
        self._change_rows = change_rows
        self._decode = decode
        # Reads accounts from `accounts`, for the fields the log does not hold.
        self._read_accounts = read_accounts
        self._latest: dict[int, Account] = {}
        # None: unknown, read the whole log at the next synchronize.
        self._generation: int | None = None
        self._seen_through = 0

    def forget(self) -> None:
        """Read the whole log again at the next synchronize."""
        self._latest.clear()
        self._generation = None
        self._seen_through = 0

    def synchronize(self, connection: sqlite3.Connection) -> None:
        # One query in the common case, where nobody else wrote: the log's last row number
        # is the one this memory has seen.
        generation, last_seq = connection.execute(_WHERE_THE_LOG_IS).fetchone()
        if generation != self._generation:
            # Written back by someone else (or never read): what is in the log is all.
            self._latest.clear()
            self._generation = generation
            self._seen_through = 0
        if (last_seq or 0) == self._seen_through:
            return
        decode = self._decode
        # Folded by account as the rows stream in: a cold read of a full log (up to
        # ACCOUNT_CHANGES_MERGE_EVERY rows) holds one entry per account, not every row.
        changes: dict[int, tuple[int, int, int, int, int]] = {}
        read_through: int | None = None
        for row in connection.execute(_READ, (self._seen_through,)):
            read_through = row[0]
            changes[decode(row[1])] = (
                decode(row[2]),
                decode(row[3]),
                decode(row[4]),
                decode(row[5]),
                row[6],
            )
        if read_through is None:
            return
        latest = self._latest
        unknown = [account_id for account_id in changes if account_id not in latest]
        bases = self._read_accounts(connection, unknown) if unknown else {}
        for account_id, (
            debits_pending,
            debits_posted,
            credits_pending,
            credits_posted,
            flags,
        ) in changes.items():
            base = latest.get(account_id) or bases.get(account_id)
            if base is None:
                continue  # A row naming no account changes nothing that exists; verify names it.
            latest[account_id] = base._replace(
                debits_pending=debits_pending,
                debits_posted=debits_posted,
                credits_pending=credits_pending,
                credits_posted=credits_posted,
                flags=flags,
            )
        self._seen_through = read_through

    def patch(self, account: Account) -> Account:
        """The account's current state: its logged one if it has any, else as read."""
        return self._latest.get(account.id, account)

    def split(self, ids: Collection[int]) -> tuple[dict[int, Account], list[int]]:
        """The logged accounts among `ids`, and the ids to read from `accounts`."""
        latest = self._latest
        found: dict[int, Account] = {}
        missing: list[int] = []
        for account_id in ids:
            account = latest.get(account_id)
            if account is None:
                missing.append(account_id)
            else:
                found[account_id] = account
        return found, missing

    def append(self, connection: sqlite3.Connection, accounts: Mapping[int, Account]) -> None:
        """Log the accounts' new states (by id), in a write transaction begun with
        `synchronize`."""
        assert self._generation is not None, "append before synchronize"
        insert_rows(connection, _APPEND, 6, self._change_rows(list(accounts.values())))
        # Rows inserted in order under the writer lock are numbered consecutively.
        (last_seq,) = connection.execute("SELECT last_insert_rowid()").fetchone()
        self._latest.update(accounts)
        self._seen_through = last_seq
        if last_seq >= self.merge_every or len(self._latest) >= self.accounts_max:
            self._write_back(connection)

    def _write_back(self, connection: sqlite3.Connection) -> None:
        # The memory is the log folded by account, so it is what to write: no GROUP BY over
        # the log (which measured two and a half times slower). In key order, so each page of
        # `accounts` is visited once.
        latest = self._latest
        written = connection.executemany(
            _WRITE_BACK, self._change_rows([latest[account_id] for account_id in sorted(latest)])
        ).rowcount
        if written != len(latest):
            # A logged account that `accounts` does not hold: the batch rolls back.
            raise RuntimeError(
                f"account log write-back matched {written} of {len(latest)} accounts"
            )
        connection.execute("DELETE FROM account_changes")
        connection.execute(
            "UPDATE ledger_meta SET account_log_generation = account_log_generation + 1"
        )
        latest.clear()
        assert self._generation is not None
        self._generation += 1
        self._seen_through = 0

    def discrepancies(self, connection: sqlite3.Connection) -> list[str]:
        """What `paycell verify` checks of the log beyond the balances (which it checks on the
        accounts' current states): every row is of an account that exists."""
        (unknown,) = connection.execute(
            "SELECT count(*) FROM account_changes c "
            "WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = c.id)"
        ).fetchone()
        return [f"account_changes: {unknown} rows name no account"] if unknown else []
