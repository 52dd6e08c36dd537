"""SQLite's account change log: balances are appended per batch and written back in bulk.

Updating balances in place put every batch's accounts on as many random pages of `accounts` as
it touched accounts: at batches of 100 random transfers, some 160 pages a commit, which made
the commit's WAL write and fsync the largest cost of a batch. Instead, a batch appends the new
balances and flags of each account it changed to `account_log`, at the end of one table (the
rest of an account never changes; logging whole rows measured 10% slower). Once
`ACCOUNT_CHANGES_MERGE_EVERY` changes have piled up, the batch that crosses the threshold
writes the latest state of each changed account back into `accounts`, sorted by id, and
empties the log, inside that batch's transaction: an account page is then written once per
write-back for all its accounts' changes, not once per batch.

A batch's changes are one row, `changes` packed in a BLOB (`pack_changes`; schema 5). As one
row per account (schema 3 and 4, `account_changes`), the rows of a batch of 8,190 random
transfers, some 8,000, cost about 7% of the batch to build and insert; packed by the compiled
path they cost a few tenths of a millisecond.

An account's current state is its latest change in the log, or its row in `accounts` if the
log has none. Each store keeps the log's content in memory (`AccountChangeLog`) and brings it
up to date at the start of every transaction, by reading the rows appended since it last
looked, which are few unless another process has been writing. Rows are numbered from 1
after each write-back, which `ledger_meta.account_log_generation` counts; when the generation
moves, another process wrote the log back and the memory starts over from what is left. (The
log numbers its rows as SQLite's rowid does, not AUTOINCREMENT.) Everything a batch does, log
row and write-back, commits or rolls back with the batch, so a crash leaves the log
consistent with its journal.
"""

import sqlite3
import struct
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, Final

from paycell.core import compiled
from paycell.core.errors import PaycellError
from paycell.core.types import Account

# A batch writes the log back once it holds this many changes, or this many distinct
# accounts, whichever comes first. A write-back costs one UPDATE per distinct account, so
# changes of the same accounts again (a hot merchant, a small ledger) fold for free until the
# change limit, which bounds the log's size and what a new connection reads. Among many
# accounts, where a batch of 8,190 random transfers logs about 16,000 of them, the account
# limit writes back every second such batch; among 10,000 accounts, the change limit every
# sixteenth. The memory view holds at most the account limit plus one batch's worth (about
# 10 MB).
ACCOUNT_CHANGES_MERGE_EVERY: Final = 131_072
ACCOUNT_CHANGES_ACCOUNTS_MAX: Final = 32_768

# What changes of an account, as written back: (id, debits_pending, debits_posted,
# credits_pending, credits_posted, flags), stored-encoded.
ChangeRow = tuple[Any, ...]
# The same, as logged and unpacked: plain ints.
Change = tuple[int, int, int, int, int, int]

# The packed formats, by their first byte: each change is six little-endian unsigned ints of
# one width, the narrowest that holds every value of the batch. The four bytes after the
# format are the CRC-32 of the format and the changes, so a row altered or damaged in any
# way (cut at a change's boundary, its format swapped) does not unpack.
_FORMATS: Final = {b"I": struct.Struct("<6I"), b"Q": struct.Struct("<6Q")}
_WIDE: Final = b"W"  # 16 bytes each: a value beyond 64 bits
_WIDE_SIZE: Final = 6 * 16
_HEADER: Final = 5  # the format and the checksum

_APPEND: Final = "INSERT INTO account_log (changes) VALUES (?)"
# Moving `log_generation` is what the trigger `accounts_change_through_the_log` lets through:
# a process still running paycell 2's code (which updated balances in place, under the log)
# has its batch refused instead of losing updates.
_WRITE_BACK: Final = (
    "UPDATE accounts SET debits_pending = ?2, debits_posted = ?3, credits_pending = ?4, "
    "credits_posted = ?5, flags = ?6, log_generation = log_generation + 1 WHERE id = ?1"
)
_WHERE_THE_LOG_IS: Final = (
    "SELECT account_log_generation, (SELECT max(seq) FROM account_log) FROM ledger_meta"
)
# As a BLOB whatever was stored: a row altered to TEXT must fail to unpack, not to decode.
_READ: Final = "SELECT seq, CAST(changes AS BLOB) FROM account_log WHERE seq > ? ORDER BY seq"


class AccountLogDamagedError(PaycellError):
    """A row of the account log does not unpack: the file was altered or damaged. Nothing is
    read or written on it (balances would be wrong); `paycell verify` names the row."""

    code = "account_log_damaged"


def pack_changes(accounts: list[Account]) -> bytes:
    """The accounts' changes (id, the four balances, flags) as `account_log.changes` stores
    them: in one C pass where the compiled path is on and every value fits 64 bits."""
    if compiled.pack_changes is not None:
        packed = compiled.pack_changes(accounts)
        if packed is not None:
            # The compiled path leaves the checksum's four bytes at zero.
            return _with_checksum(packed[:1], memoryview(packed)[_HEADER:])
    return pack_change_tuples([(a[0], a[1], a[2], a[3], a[4], a[11]) for a in accounts])


def _checksum(tag: bytes, body: bytes | memoryview) -> bytes:
    return zlib.crc32(body, zlib.crc32(tag)).to_bytes(4, "little")


def _with_checksum(tag: bytes, body: bytes | memoryview) -> bytes:
    return tag + _checksum(tag, body) + body


def pack_change_tuples(changes: Sequence[Change]) -> bytes:
    """Changes, each (id, debits_pending, debits_posted, credits_pending, credits_posted,
    flags), packed as `account_log.changes` stores them (in Python)."""
    values = [value for change in changes for value in change]
    top = max(values, default=0)
    for tag, layout in _FORMATS.items():
        if top >> (8 * layout.size // 6) == 0:
            return _with_checksum(tag, struct.pack(f"<{len(values)}{tag.decode()}", *values))
    return _with_checksum(_WIDE, b"".join(value.to_bytes(16, "little") for value in values))


def unpack_changes(packed: bytes) -> Iterator[Change]:
    """The changes `pack_changes` packed, in order. Raises ValueError on anything else."""
    if not isinstance(packed, bytes) or len(packed) < _HEADER:
        raise ValueError("not packed account changes (too short)")
    tag, body = packed[:1], memoryview(packed)[_HEADER:]
    if packed[1:_HEADER] != _checksum(tag, body):
        raise ValueError("packed changes do not match their checksum")
    layout = _FORMATS.get(tag)
    if layout is not None:
        if len(body) % layout.size:
            raise ValueError(f"packed changes of {len(packed)} bytes are cut short")
        return layout.iter_unpack(body)
    if tag != _WIDE or len(body) % _WIDE_SIZE:
        raise ValueError(f"not packed account changes (format {bytes(tag)!r})")
    return (
        tuple(  # type: ignore[misc]
            int.from_bytes(body[at + field : at + field + 16], "little")
            for field in range(0, _WIDE_SIZE, 16)
        )
        for at in range(0, len(body), _WIDE_SIZE)
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
        read_accounts: Callable[[sqlite3.Connection, Collection[int]], dict[int, Account]],
        accounts_max: int = ACCOUNT_CHANGES_ACCOUNTS_MAX,
    ) -> None:
        self.merge_every = merge_every
        self.accounts_max = accounts_max
        # Encodes accounts' changes as the write-back binds them.
        self._change_rows = change_rows
        # Reads accounts from `accounts`, for the fields the log does not hold.
        self._read_accounts = read_accounts
        self._latest: dict[int, Account] = {}
        # None: unknown, read the whole log at the next synchronize.
        self._generation: int | None = None
        self._seen_through = 0
        # How many changes the log holds (of generation `_generation`, through `_seen_through`).
        self._changes = 0

    def fresh(self) -> "AccountChangeLog":
        """An empty memory of the same log: verify reads into one of its own, so that what it
        reads past (a row that does not unpack) never reaches the memory writes decide on."""
        return AccountChangeLog(
            self.merge_every, self._change_rows, self._read_accounts, self.accounts_max
        )

    def forget(self) -> None:
        """Read the whole log again at the next synchronize."""
        self._latest.clear()
        self._generation = None
        self._seen_through = 0
        self._changes = 0

    def synchronize(self, connection: sqlite3.Connection, *, for_verify: bool = False) -> None:
        """Bring the memory up to date with the log, in the caller's transaction. A row that
        does not unpack raises AccountLogDamagedError, unless `for_verify`: verify then reads
        the balances without it and names it among its discrepancies."""
        # One query in the common case, where nobody else wrote: the log's last row number
        # is the one this memory has seen.
        generation, last_seq = connection.execute(_WHERE_THE_LOG_IS).fetchone()
        if generation != self._generation:
            # Written back by someone else (or never read): what is in the log is all.
            self._latest.clear()
            self._generation = generation
            self._seen_through = 0
            self._changes = 0
        if (last_seq or 0) == self._seen_through:
            return
        # Folded by account as the rows stream in: a cold read of a full log (up to
        # ACCOUNT_CHANGES_MERGE_EVERY changes) holds one entry per account, not every change.
        changes: dict[int, tuple[int, int, int, int, int]] = {}
        read_through: int | None = None
        # Counted here and added once all is read: a read that fails midway adds nothing.
        counted = 0
        for seq, packed in connection.execute(_READ, (self._seen_through,)):
            read_through = seq
            try:
                unpacked = list(unpack_changes(packed))
            except (ValueError, TypeError) as error:
                if for_verify:
                    continue
                self.forget()
                raise AccountLogDamagedError(
                    f"account_log row {seq} does not unpack ({error}); run paycell verify"
                ) from None
            for account_id, *change in unpacked:
                changes[account_id] = change  # type: ignore[assignment]
            counted += len(unpacked)
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
        self._changes += counted

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
        connection.execute(_APPEND, (pack_changes(list(accounts.values())),))
        # The writer lock is held since `synchronize`: this row follows the ones it read.
        self._seen_through = connection.execute("SELECT last_insert_rowid()").fetchone()[0]
        self._latest.update(accounts)
        self._changes += len(accounts)
        if self._changes >= self.merge_every or len(self._latest) >= self.accounts_max:
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
        connection.execute("DELETE FROM account_log")
        connection.execute(
            "UPDATE ledger_meta SET account_log_generation = account_log_generation + 1"
        )
        latest.clear()
        assert self._generation is not None
        self._generation += 1
        self._seen_through = 0
        self._changes = 0

    def discrepancies(self, connection: sqlite3.Connection) -> list[str]:
        """What `paycell verify` checks of the log beyond the balances (which it checks on the
        accounts' current states): every row unpacks, and every change is of an account that
        exists."""
        found: list[str] = []
        logged: set[int] = set()
        for seq, packed in connection.execute("SELECT seq, CAST(changes AS BLOB) FROM account_log"):
            try:
                logged.update(change[0] for change in unpack_changes(packed))
            except (ValueError, TypeError) as error:
                found.append(f"account_log: row {seq} does not unpack ({error})")
        unknown = len(logged) - len(self._read_accounts(connection, logged)) if logged else 0
        if unknown:
            found.append(f"account_log: {unknown} accounts changed are not in accounts")
        return found


def _stored_int(value: int | bytes) -> int:
    """A value as SQLite stores a 128-bit one: INTEGER, or a 16-byte big-endian BLOB."""
    return value if isinstance(value, int) else int.from_bytes(value, "big")


def fold_rows_logged_by_schema_4(connection: sqlite3.Connection) -> None:
    """Schema 4 to 5: write back what `account_changes` (a row per change) holds, and drop it.
    The latest row of each account is its state; the write-back moves `log_generation`, which
    the trigger `accounts_change_through_the_log` lets through. Rows of an account that does
    not exist (schema 4's verify named them) go on into `account_log`, where verify names
    them still. Nothing to do where the table is not there."""
    if not connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'account_changes'"
    ).fetchall():
        return
    latest: dict[Any, Sequence[Any]] = {}
    for row in connection.execute(
        "SELECT id, debits_pending, debits_posted, credits_pending, credits_posted, flags "
        "FROM account_changes ORDER BY seq"
    ):
        latest[row[0]] = row
    written = connection.executemany(_WRITE_BACK, list(latest.values())).rowcount
    if written != len(latest):
        existing = {
            row[0]
            for row in connection.execute(
                "SELECT a.id FROM accounts a WHERE EXISTS "
                "(SELECT 1 FROM account_changes c WHERE c.id = a.id)"
            )
        }
        orphans = [row for account_id, row in latest.items() if account_id not in existing]
        connection.execute(
            _APPEND,
            (pack_change_tuples([tuple(map(_stored_int, row)) for row in orphans]),),  # type: ignore[misc]
        )
    connection.execute("DROP TABLE account_changes")
    connection.execute("UPDATE ledger_meta SET account_log_generation = account_log_generation + 1")
