"""The embedded SQLite backend: the default book of record, one file per ledger database.

Durability: WAL journal with synchronous=FULL, so a commit that returned survives power loss.
Concurrency: every write runs under `BEGIN IMMEDIATE`, SQLite's single writer lock, taken
before the prefetch; other processes wait for it (busy timeout) instead of failing, and readers
are never blocked (WAL).

Encoding of unsigned 128-bit values: SQLite integers are signed 64-bit, so a value below 2**63
is stored as an INTEGER and a larger one as a 16-byte big-endian BLOB. SQLite orders every
INTEGER before every BLOB and BLOBs by memcmp, so this encoding keeps numeric order, while the
common case (ids and amounts that fit) stays a compact, fast integer.

Account statements are indexed in bulk. An index on a transfer's accounts puts every new
transfer on two random index pages, and at small batches those page writes were half of a
commit's cost. Instead, `statement_debits` / `statement_credits` are filled once per
`STATEMENT_INDEX_EVERY` transfers, in one sorted INSERT ... SELECT inside the batch that crosses
the threshold. Each fill is a run of its own, keyed (fill, account, timestamp), where `fill`
numbers the fills in order (`statement_fills`, with each one's watermark): a fill appends to the
end of the tables instead of inserting into every busy account's part of them, so its cost does
not grow with the tables. A statement reads an account's run in each fill that can hold its
time range, one index seek a fill, merged in order by SQLite; the transfers after
`ledger_meta.statement_indexed_through` (the tail, about that many) are found by scanning the
transfers table, which is ordered by timestamp. Both reads run in one read transaction, so a
statement sees one consistent snapshot.
"""

import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Final

from paycell.adapters.storage import ledger_queries
from paycell.adapters.storage.ledger_queries import (
    ACCOUNT_COLUMNS,
    TRANSFER_COLUMNS,
    Dialect,
    SqlLedgerReads,
    query,
)
from paycell.adapters.storage.sqlite_account_log import (
    ACCOUNT_CHANGES_ACCOUNTS_MAX,
    ACCOUNT_CHANGES_MERGE_EVERY,
    AccountChangeLog,
    fold_rows_logged_by_schema_4,
)
from paycell.adapters.storage.sqlite_inserts import insert_rows
from paycell.adapters.storage.sqlite_writer_queue import WriterQueue
from paycell.core import compiled
from paycell.core.batch import CommittedBatch, LedgerMeta, PendingState
from paycell.core.errors import PaycellError
from paycell.core.journal import GENESIS_HASH
from paycell.core.limits import BATCH_EVENTS_MAX
from paycell.core.types import (
    Account,
    AccountBalance,
    AccountFilter,
    AccountFilterFlags,
    PendingStatus,
    QueryFilter,
    Transfer,
)

# Version 2 replaced the two indexes on transfers' accounts with the bulk-filled statement tables;
# version 3 added the account change log (sqlite_account_log.py); version 4 keys the statement
# tables by fill; version 5 logs a batch's account changes as one packed row.
SCHEMA_VERSION: Final = 5
_INT64_LIMIT: Final = 1 << 63
# How long a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_MILLISECONDS: Final = 60_000
# Chunk size for `IN (...)` lists; SQLite here allows far more variables, this bounds one query.
_IN_CHUNK: Final = 16_384

STATEMENTS_CACHED: Final = 512
WAL_CHECKPOINT_PAGES: Final = 16_384
WAL_SIZE_LIMIT_BYTES: Final = 64 * 1024 * 1024
# How many transfers wait in the statement tail before they are indexed together (the next
# batch of transfers indexes them all, so the tail holds up to this many plus two batches). A fill
# costs about the same per transfer at any size (it appends a sorted run), so this trades the
# tail a statement scans (a full one costs a newest-first page about 1.2 ms here) against the
# fills a statement seeks (one per this many transfers in its time range).
STATEMENT_INDEX_EVERY: Final = 32_768

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS ledger_meta (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    schema_version INTEGER NOT NULL,
    last_timestamp INTEGER NOT NULL,
    batch_number INTEGER NOT NULL,
    last_hash BLOB NOT NULL,
    statement_indexed_through INTEGER NOT NULL DEFAULT 0,
    statement_unindexed INTEGER NOT NULL DEFAULT 0,
    account_log_generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS accounts (
    id BLOB PRIMARY KEY,
    debits_pending BLOB NOT NULL,
    debits_posted BLOB NOT NULL,
    credits_pending BLOB NOT NULL,
    credits_posted BLOB NOT NULL,
    user_data_128 BLOB NOT NULL,
    user_data_64 BLOB NOT NULL,
    user_data_32 INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    ledger INTEGER NOT NULL,
    code INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    created_flags INTEGER NOT NULL,
    timestamp INTEGER NOT NULL UNIQUE,
    log_generation INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS account_log (
    seq INTEGER PRIMARY KEY,
    changes BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS accounts_by_user_data_128 ON accounts (user_data_128, timestamp);
CREATE INDEX IF NOT EXISTS accounts_by_ledger_code ON accounts (ledger, code, timestamp);
CREATE TABLE IF NOT EXISTS transfers (
    timestamp INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    debit_account_id BLOB NOT NULL,
    credit_account_id BLOB NOT NULL,
    amount BLOB NOT NULL,
    pending_id BLOB NOT NULL,
    user_data_128 BLOB NOT NULL,
    user_data_64 BLOB NOT NULL,
    user_data_32 INTEGER NOT NULL,
    timeout INTEGER NOT NULL,
    ledger INTEGER NOT NULL,
    code INTEGER NOT NULL,
    flags INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS statement_fills (
    fill INTEGER PRIMARY KEY,
    through INTEGER NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS statement_debits (
    fill INTEGER NOT NULL,
    account_id BLOB NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (fill, account_id, timestamp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS statement_credits (
    fill INTEGER NOT NULL,
    account_id BLOB NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (fill, account_id, timestamp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending_transfers (
    id BLOB PRIMARY KEY,
    status INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_transfers_due
    ON pending_transfers (expires_at) WHERE status = 1 AND expires_at > 0;
CREATE TABLE IF NOT EXISTS expiries (
    timestamp INTEGER PRIMARY KEY,
    pending_id BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS failed_transfers (
    id BLOB PRIMARY KEY,
    result TEXT NOT NULL,
    timestamp INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS failed_transfers_by_timestamp ON failed_transfers (timestamp);
CREATE TABLE IF NOT EXISTS account_history (
    account_id BLOB NOT NULL,
    timestamp INTEGER NOT NULL,
    debits_pending BLOB NOT NULL,
    debits_posted BLOB NOT NULL,
    credits_pending BLOB NOT NULL,
    credits_posted BLOB NOT NULL,
    PRIMARY KEY (account_id, timestamp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal (
    batch_number INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    timestamp_first INTEGER NOT NULL,
    timestamp_last INTEGER NOT NULL,
    event_count INTEGER NOT NULL,
    previous_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS transfers_are_append_only_update BEFORE UPDATE ON transfers
BEGIN SELECT RAISE(ABORT, 'transfers are append-only'); END;
CREATE TRIGGER IF NOT EXISTS transfers_are_append_only_delete BEFORE DELETE ON transfers
BEGIN SELECT RAISE(ABORT, 'transfers are append-only'); END;
CREATE TRIGGER IF NOT EXISTS statement_fills_are_append_only_update
BEFORE UPDATE ON statement_fills
BEGIN SELECT RAISE(ABORT, 'statement_fills is append-only'); END;
CREATE TRIGGER IF NOT EXISTS statement_fills_are_append_only_delete
BEFORE DELETE ON statement_fills
BEGIN SELECT RAISE(ABORT, 'statement_fills is append-only'); END;
CREATE TRIGGER IF NOT EXISTS statement_debits_are_append_only_update
BEFORE UPDATE ON statement_debits
BEGIN SELECT RAISE(ABORT, 'statement_debits is append-only'); END;
CREATE TRIGGER IF NOT EXISTS statement_debits_are_append_only_delete
BEFORE DELETE ON statement_debits
BEGIN SELECT RAISE(ABORT, 'statement_debits is append-only'); END;
CREATE TRIGGER IF NOT EXISTS statement_credits_are_append_only_update
BEFORE UPDATE ON statement_credits
BEGIN SELECT RAISE(ABORT, 'statement_credits is append-only'); END;
CREATE TRIGGER IF NOT EXISTS statement_credits_are_append_only_delete
BEFORE DELETE ON statement_credits
BEGIN SELECT RAISE(ABORT, 'statement_credits is append-only'); END;
CREATE TRIGGER IF NOT EXISTS accounts_change_through_the_log
BEFORE UPDATE OF debits_pending, debits_posted, credits_pending, credits_posted, flags
ON accounts WHEN NEW.log_generation = OLD.log_generation
BEGIN SELECT RAISE(ABORT, 'balances change through the account log (schema 3)'); END;
CREATE TRIGGER IF NOT EXISTS journal_is_append_only_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS journal_is_append_only_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
"""

_STATEMENT_SIDES: Final = ("debit", "credit")

_HIGHEST_TRANSFER_ID: Final = (
    "SELECT (SELECT max(id) FROM transfers), (SELECT max(id) FROM failed_transfers)"
)
# Spelled as a descending read of one row: the read stops at the first id below the bound.
_HIGHEST_TRANSFER_ID_BELOW: Final = (
    "SELECT (SELECT id FROM transfers WHERE id < ?1 ORDER BY id DESC LIMIT 1), "
    "(SELECT id FROM failed_transfers WHERE id < ?1 ORDER BY id DESC LIMIT 1)"
)

# Each fill's range of timestamps: after the watermark of the fill before it, up to its own.
_FILL_RANGES: Final = (
    "SELECT fill, through, coalesce(lag(through) OVER (ORDER BY fill), 0) AS after "
    "FROM statement_fills"
)

# Index the tail as fill number ?1, the transfers after ?2: each side's entries sorted by the
# key, so they append to the end of the table.
_INDEX_STATEMENT_TAIL: Final = tuple(
    f"INSERT INTO statement_{side}s (fill, account_id, timestamp) "
    f"SELECT ?1, {side}_account_id, timestamp FROM transfers WHERE timestamp > ?2 "
    f"ORDER BY {side}_account_id, timestamp"
    for side in _STATEMENT_SIDES
)

# Version 1 databases indexed transfers' accounts directly; version 2 indexes them in bulk
# (the tables are created by the schema above, in version 4's shape, and filled here).
_MIGRATE_1_TO_2: Final = (
    "ALTER TABLE ledger_meta ADD COLUMN statement_indexed_through INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE ledger_meta ADD COLUMN statement_unindexed INTEGER NOT NULL DEFAULT 0",
    "DROP INDEX IF EXISTS transfers_by_debit_account",
    "DROP INDEX IF EXISTS transfers_by_credit_account",
    "UPDATE ledger_meta SET schema_version = 2",
)

# Version 3 logs account changes; the table itself is in the schema above.
_MIGRATE_2_TO_3: Final = (
    "ALTER TABLE ledger_meta ADD COLUMN account_log_generation INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE accounts ADD COLUMN log_generation INTEGER NOT NULL DEFAULT 0",
    "UPDATE ledger_meta SET schema_version = 3",
)


class SchemaVersionError(PaycellError):
    """The database was written by a newer paycell: this one does not know its layout."""

    code = "schema_version_unsupported"


def encode(value: int) -> int | bytes:
    """An unsigned 128-bit integer as stored: INTEGER when it fits, else a 16-byte BLOB."""
    return value if value < _INT64_LIMIT else value.to_bytes(16, "big")


def _encode_account(a: Account) -> tuple[int | bytes, ...]:
    return (
        encode(a[0]),
        encode(a[1]),
        encode(a[2]),
        encode(a[3]),
        encode(a[4]),
        encode(a[5]),
        encode(a[6]),
        *a[7:],
    )


def _account_change_row(a: Account) -> tuple[int | bytes, ...]:
    """What changes of an account (id, the four balances, flags), as the account log binds it:
    a plain tuple, which sqlite3 binds by index, where any other sequence (a record) is bound
    item by item, twice as slow."""
    if (a[0] | a[1] | a[2] | a[3] | a[4]) < _INT64_LIMIT:
        return (a[0], a[1], a[2], a[3], a[4], a[11])
    return (encode(a[0]), encode(a[1]), encode(a[2]), encode(a[3]), encode(a[4]), a[11])


def _encode_transfer(t: Transfer) -> tuple[int | bytes, ...]:
    # Spelled out: a generator over the seven 128-bit fields cost 60% more, and the platform's
    # transfers, whose ids use the high bits, all take this path.
    return (
        encode(t[0]),
        encode(t[1]),
        encode(t[2]),
        encode(t[3]),
        encode(t[4]),
        encode(t[5]),
        encode(t[6]),
        *t[7:],
    )


# The fields `_account_change_row` takes, and all of a Transfer's, by position.
_CHANGE_FIELDS: Final = (0, 1, 2, 3, 4, 11)
_TRANSFER_FIELDS: Final = tuple(range(len(Transfer._fields)))


def _account_change_rows(accounts: list[Account]) -> list[tuple[int | bytes, ...]]:
    """`_account_change_row` of each account: in one C pass where the compiled path is on."""
    if compiled.int64_rows is not None:
        return compiled.int64_rows(accounts, _CHANGE_FIELDS, _account_change_row)
    return [_account_change_row(a) for a in accounts]


def _transfer_rows(transfers: list[Transfer]) -> list[tuple[int | bytes, ...]]:
    """The transfers as INSERT binds them. A Transfer's field order is the column order, so a
    record whose 128-bit fields all fit in an INTEGER (the common case) is bound as it is,
    unconverted, as a plain tuple (see `_account_change_row`)."""
    if compiled.int64_rows is not None:
        return compiled.int64_rows(transfers, _TRANSFER_FIELDS, _encode_transfer)
    return [
        tuple(t)
        if (t[0] | t[1] | t[2] | t[3] | t[4] | t[5] | t[6]) < _INT64_LIMIT
        else _encode_transfer(t)
        for t in transfers
    ]


def decode(value: int | bytes) -> int:
    return value if type(value) is int else int.from_bytes(value, "big")  # type: ignore[arg-type]


_new_tuple = tuple.__new__


def _decoded(row: Sequence[Any]) -> tuple[Any, ...]:
    """An account or transfer row's 13 columns with its 128-bit ones (the first seven, in both
    records) decoded. Spelled out: a loop over the seven measured about a third slower."""
    return (
        decode(row[0]),
        decode(row[1]),
        decode(row[2]),
        decode(row[3]),
        decode(row[4]),
        decode(row[5]),
        decode(row[6]),
        *row[7:13],
    )


def _account_from_row(row: Sequence[Any]) -> Account:
    return _new_tuple(Account, _decoded(row))


def _transfer_from_row(row: Sequence[Any]) -> Transfer:
    return _new_tuple(Transfer, _decoded(row))


# A trailing column that is true when any 128-bit column of the row is stored as a BLOB, so the
# common all-INTEGER row becomes a record with one C call instead of a decode per field.
_ACCOUNT_WIDE: Final = (
    "min(typeof(id), typeof(debits_pending), typeof(debits_posted), typeof(credits_pending), "
    "typeof(credits_posted), typeof(user_data_128), typeof(user_data_64)) = 'blob'"
)
_TRANSFER_WIDE: Final = (
    "min(typeof(id), typeof(debit_account_id), typeof(credit_account_id), typeof(amount), "
    "typeof(pending_id), typeof(user_data_128), typeof(user_data_64)) = 'blob'"
)


def _account_from_row_fast(row: Sequence[Any]) -> Account:
    return _account_from_row(row) if row[13] else _new_tuple(Account, row[:13])


def _transfer_from_row_fast(row: Sequence[Any]) -> Transfer:
    return _transfer_from_row(row) if row[13] else _new_tuple(Transfer, row[:13])


def _balance_from_row(row: Sequence[Any]) -> AccountBalance:
    return AccountBalance(decode(row[0]), decode(row[1]), decode(row[2]), decode(row[3]), row[4])


_SQLITE: Final = Dialect(
    placeholder="?",
    # 128-bit values are bound encoded; comparing encoded values keeps numeric order.
    wide_parameter="?",
    narrow_parameter="?",
    encode=encode,
    decode=decode,
    account_from_row=_account_from_row,
    transfer_from_row=_transfer_from_row,
    balance_from_row=_balance_from_row,
    limit_each_side=False,
)


def _encoded_ids(ids: Collection[int]) -> list[int | bytes]:
    """Ids as stored, to bind: as they are when all fit in an INTEGER (one C-level `max`
    instead of a call per id, which a batch of 8,190 makes twice)."""
    if not ids or max(ids) < _INT64_LIMIT:
        return list(ids)
    return [encode(i) for i in ids]


def _chunks(values: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


class _SqliteWriteUnit:
    def __init__(
        self,
        connection: sqlite3.Connection,
        statement_index_every: int,
        account_log: AccountChangeLog,
    ) -> None:
        self._connection = connection
        self._statement_index_every = statement_index_every
        self._account_log = account_log

    def meta(self) -> LedgerMeta:
        return _read_meta(self._connection)

    def accounts_by_id(self, ids: Collection[int]) -> dict[int, Account]:
        found, missing = self._account_log.split(ids)
        if missing:
            found.update(_accounts_by_id(self._connection, missing))
        return found

    def transfers_by_id(self, ids: Collection[int]) -> dict[int, Transfer]:
        return _transfers_by_id(self._connection, ids)

    def pending_states(self, ids: Collection[int]) -> dict[int, PendingState]:
        found: dict[int, PendingState] = {}
        for chunk in _chunks(_encoded_ids(ids)):
            for row in self._connection.execute(
                "SELECT id, status, expires_at FROM pending_transfers "
                f"WHERE id IN ({_placeholders(len(chunk))})",
                chunk,
            ):
                found[decode(row[0])] = PendingState(row[1], row[2])
        return found

    def failed_results(self, ids: Collection[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for chunk in _chunks(_encoded_ids(ids)):
            for row in self._connection.execute(
                "SELECT id, result FROM failed_transfers "
                f"WHERE id IN ({_placeholders(len(chunk))})",
                chunk,
            ):
                found[decode(row[0])] = row[1]
        return found

    @contextmanager
    def computing(self) -> Iterator[None]:
        # A fill that is due runs here, on a helper thread, while the caller's thread runs the
        # core: sqlite3 releases the GIL for the whole of a statement's step, so the fill's
        # sort and appends (tens of milliseconds at batches of 8,190) run on the other core.
        # It indexes the tail through the last transfer committed; `save` fills only where
        # no batch did this. The caller does not touch the connection until the helper is
        # joined, and a failure of the fill is raised here, in the batch.
        connection = self._connection
        unindexed, through = connection.execute(
            "SELECT statement_unindexed, last_timestamp FROM ledger_meta"
        ).fetchone()
        if unindexed < self._statement_index_every:
            yield
            return
        fill = _FillBesideTheCore(connection, through)
        failing = False
        try:
            fill.start()
            yield
        except BaseException:
            # The batch fails and rolls back: stop the fill's statement rather than wait for
            # it. A no-op when no statement runs.
            failing = True
            connection.interrupt()
            raise
        finally:
            interruption = fill.wait_until_done(abandon=failing)
            if interruption is not None:
                raise interruption
        fill.raise_its_failure()

    def highest_transfer_id(self, below: int | None = None) -> int:
        # Each max() is one seek into an index on id: the encoding keeps numeric order (every
        # INTEGER below every BLOB, BLOBs big-endian), so the largest is last, and the largest
        # below a bound is just before the bound's place.
        if below is None:
            highest = self._connection.execute(_HIGHEST_TRANSFER_ID).fetchone()
        else:
            highest = self._connection.execute(
                _HIGHEST_TRANSFER_ID_BELOW, (encode(below),)
            ).fetchone()
        return max((decode(value) for value in highest if value is not None), default=0)

    def due_pending_transfers(self, timestamp: int, limit: int) -> list[Transfer]:
        sql, parameters = ledger_queries.due_pending_transfers(_SQLITE, timestamp, limit)
        return [_transfer_from_row(row) for row in self._connection.execute(sql, parameters)]

    def save(self, batch: CommittedBatch) -> None:
        connection = self._connection
        if batch.accounts_created:
            insert_rows(
                connection,
                f"INSERT INTO accounts ({ACCOUNT_COLUMNS}, created_flags)",
                14,
                [(*_encode_account(a), a.flags) for a in batch.accounts_created],
            )
        if batch.transfers_created:
            insert_rows(
                connection,
                f"INSERT INTO transfers ({TRANSFER_COLUMNS})",
                13,
                _transfer_rows(batch.transfers_created),
            )
        if batch.accounts_updated:
            # Logged, not updated in place: see sqlite_account_log.py.
            self._account_log.append(connection, batch.accounts_updated)
        if batch.pending_created:
            insert_rows(
                connection,
                "INSERT INTO pending_transfers (id, status, expires_at)",
                3,
                [
                    (encode(pending_id), state.status, state.expires_at)
                    for pending_id, state in batch.pending_created.items()
                ],
            )
        if batch.pending_resolved:
            connection.executemany(
                "UPDATE pending_transfers SET status = ? WHERE id = ?",
                [
                    (status, encode(pending_id))
                    for pending_id, status in batch.pending_resolved.items()
                ],
            )
        if batch.history:
            insert_rows(
                connection,
                "INSERT INTO account_history (account_id, timestamp, debits_pending, "
                "debits_posted, credits_pending, credits_posted)",
                6,
                [
                    (
                        encode(row.account_id),
                        row.balance.timestamp,
                        encode(row.balance.debits_pending),
                        encode(row.balance.debits_posted),
                        encode(row.balance.credits_pending),
                        encode(row.balance.credits_posted),
                    )
                    for row in batch.history
                ],
            )
        if batch.expiries:
            insert_rows(
                connection,
                "INSERT INTO expiries (timestamp, pending_id)",
                2,
                [(e.timestamp, encode(e.pending_id)) for e in batch.expiries],
            )
        if batch.failures:
            insert_rows(
                connection,
                "INSERT INTO failed_transfers (id, result, timestamp)",
                3,
                [(encode(f.id), f.result, f.timestamp) for f in batch.failures],
            )
        entry = batch.journal
        connection.execute(
            "INSERT INTO journal (batch_number, kind, timestamp_first, timestamp_last, "
            "event_count, previous_hash, hash) VALUES (?,?,?,?,?,?,?)",
            (
                entry.batch_number,
                entry.kind,
                entry.timestamp_first,
                entry.timestamp_last,
                entry.event_count,
                entry.previous_hash,
                entry.hash,
            ),
        )
        unindexed = connection.execute(
            "UPDATE ledger_meta SET last_timestamp = ?, batch_number = ?, last_hash = ?, "
            "statement_unindexed = statement_unindexed + ? RETURNING statement_unindexed",
            (entry.timestamp_last, entry.batch_number, entry.hash, len(batch.transfers_created)),
        ).fetchone()[0]
        # Due fills run in `computing`, on the other core, at the start of the next batch of
        # transfers. Here, one batch of slack later, only when nothing did (writes that do not
        # go through `computing`: the platform's, accounts).
        if unindexed >= self._statement_index_every + BATCH_EVENTS_MAX:
            _index_statement_tail(connection, entry.timestamp_last)


class _FillAbandonedError(Exception):
    """The batch stopped waiting for its fill (Ctrl-C, a failure): run no more statements."""


class _FillBesideTheCore:
    """A statement fill on a helper thread, inside the caller's write transaction, while
    the caller runs the core (see `_SqliteWriteUnit.computing`).

    The transaction must not end while the helper can still run a statement in it. A statement
    run after the transaction's ROLLBACK would commit on its own, outside the writer's turn,
    and could move the watermark past transfers no fill holds, which would lose them from
    statements for good. Hence:
    - once the helper has begun, the caller waits for it to end, through Ctrl-C as well:
      `wait_until_done` keeps waiting, interrupts the fill's statement, and hands the
      interruption back to be raised once the helper is done;
    - a helper that had not begun by then does nothing;
    - the helper runs each statement only inside the transaction and while the batch still
      wants the fill, checked under a lock the caller takes to give up on it. Should the
      caller's own handling be cut short too (a second Ctrl-C at the wrong instant), the
      helper runs no further statement once the transaction is gone.
    """

    def __init__(self, connection: sqlite3.Connection, through: int) -> None:
        self._connection = connection
        self._through = through
        self._failure: BaseException | None = None
        # Set by the helper just before its long statements, whose step releases the GIL:
        # the caller waits for it, or its core (a long C call that holds the GIL) could keep
        # the helper from starting them until it is done.
        self._sorting = threading.Event()
        self._done = threading.Event()
        # Held by the helper while it checks and runs a statement; by the caller to call the
        # fill off (not begun: never begin) or to abandon it (begun: no further statement).
        self._gate = threading.Lock()
        self._began = False
        self._called_off = False
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="paycell-statement-fill")

    def start(self) -> None:
        self._thread.start()
        self._sorting.wait()

    def _run(self) -> None:
        with self._gate:
            if self._called_off:
                return
            self._began = True
        try:
            _index_statement_tail(self._connection, self._through, self._sorting.set, self._execute)
        except BaseException as error:  # raised in the caller's thread, once it has waited
            self._failure = error
        finally:
            self._sorting.set()
            self._done.set()

    def _execute(self, sql: str, parameters: Sequence[object] = ()) -> list[Any]:
        with self._gate:
            if self._abandoned or not self._connection.in_transaction:
                raise _FillAbandonedError
            return self._connection.execute(sql, parameters).fetchall()

    def wait_until_done(self, abandon: bool) -> BaseException | None:
        """Wait until the helper can run no more statements; an interruption of the wait
        (Ctrl-C), kept for the caller to raise. `abandon`: the batch is failing, so the
        helper should stop at its next statement."""
        interruption: BaseException | None = None
        while True:
            try:
                with self._gate:
                    self._called_off = True
                    self._abandoned = self._abandoned or abandon
                    began = self._began
                if began:
                    self._done.wait()
                    self._thread.join()
                # A helper that had not begun returns at once on its own.
                return interruption
            except BaseException as error:
                self._abandoned = True  # first: no lock, nothing that can be cut short
                interruption = interruption or error
                self._connection.interrupt()

    def raise_its_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


def _index_statement_tail(
    connection: sqlite3.Connection,
    through: int,
    sorting: Callable[[], None] | None = None,
    execute: Callable[[str, Sequence[object]], list[Any]] | None = None,
) -> None:
    """Index every transfer after the watermark as one fill, up to `through` (the last
    transfer's timestamp), in the caller's transaction. `sorting` is called just before the
    first of the two long statements; `execute` runs each statement and returns its rows
    (default: on `connection`)."""
    run = execute or (lambda sql, parameters: connection.execute(sql, parameters).fetchall())
    ((indexed_through,),) = run("SELECT statement_indexed_through FROM ledger_meta", ())
    if through <= indexed_through:
        return
    ((fill,),) = run("INSERT INTO statement_fills (through) VALUES (?) RETURNING fill", (through,))
    if sorting is not None:
        sorting()
    for statement in _INDEX_STATEMENT_TAIL:
        run(statement, (fill, indexed_through))
    run(
        "UPDATE ledger_meta SET statement_indexed_through = ?, statement_unindexed = 0",
        (through,),
    )


def _read_meta(connection: sqlite3.Connection) -> LedgerMeta:
    row = connection.execute(
        "SELECT last_timestamp, batch_number, last_hash FROM ledger_meta"
    ).fetchone()
    return LedgerMeta(row[0], row[1], bytes(row[2]))


def _accounts_by_id(connection: sqlite3.Connection, ids: Collection[int]) -> dict[int, Account]:
    found: dict[int, Account] = {}
    for chunk in _chunks(_encoded_ids(ids)):
        for row in connection.execute(
            f"SELECT {ACCOUNT_COLUMNS}, {_ACCOUNT_WIDE} FROM accounts "
            f"WHERE id IN ({_placeholders(len(chunk))})",
            chunk,
        ):
            account = _account_from_row_fast(row)
            found[account.id] = account
    return found


def _transfers_by_id(connection: sqlite3.Connection, ids: Collection[int]) -> dict[int, Transfer]:
    found: dict[int, Transfer] = {}
    for chunk in _chunks(_encoded_ids(ids)):
        for row in connection.execute(
            f"SELECT {TRANSFER_COLUMNS}, {_TRANSFER_WIDE} FROM transfers "
            f"WHERE id IN ({_placeholders(len(chunk))})",
            chunk,
        ):
            transfer = _transfer_from_row_fast(row)
            found[transfer.id] = transfer
    return found


class SqliteStore(SqlLedgerReads):
    """A ledger in one SQLite file. Open one per process; processes may share the file."""

    _dialect = _SQLITE

    def __init__(self, path: str | Path) -> None:
        # Read at open, not import, so a test can make the tail tiny and index every batch.
        self.statement_index_every: int = STATEMENT_INDEX_EVERY
        self.account_log = AccountChangeLog(
            ACCOUNT_CHANGES_MERGE_EVERY,
            _account_change_rows,
            _accounts_by_id,
            ACCOUNT_CHANGES_ACCOUNTS_MAX,
        )
        self.path = Path(path)
        self.url = str(self.path)
        # A statement cache larger than sqlite3's 128: each length of an `IN (...)` list is a
        # statement of its own, and they would push out the multi-row INSERTs, whose
        # preparation costs up to 0.7 ms (sqlite_inserts.py).
        self._connection = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=60.0,
            cached_statements=STATEMENTS_CACHED,
        )
        self._connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MILLISECONDS}")
        # Writers of the file take turns on a lock file rather than in SQLite's busy handler
        # (sqlite_writer_queue.py); a database in memory has no other writer.
        self._writer_queue = None if str(path) == ":memory:" else WriterQueue(self.path)
        try:
            self._configure_and_create_schema()
        except BaseException:
            self.close()  # neither the connection nor the lock file is left open
            raise

    def _configure_and_create_schema(self) -> None:
        self._connection.execute("PRAGMA journal_mode = WAL")
        self._connection.execute("PRAGMA synchronous = FULL")
        self._connection.execute("PRAGMA cache_size = -65536")
        # Checkpoint every 64 MB of WAL instead of SQLite's 4 MB: an account page that every
        # batch dirties is then copied into the database file once per checkpoint rather than
        # every few batches (sustained batches of 100 run about twice as fast). The limit
        # trims the WAL file back after a checkpoint so it does not stay at its peak size.
        self._connection.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        self._connection.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
        # Temporary structures (IN lists, sorts) in memory: on files, batches of 8,190 among
        # ten million accounts ran 25% slower. verify's snapshot switches to files while it
        # runs, so that its sorts of every transfer spill to disk rather than grow in memory.
        self._connection.execute("PRAGMA temp_store = MEMORY")
        # In turn like any write: several workers open the file at once when a server starts.
        with self._writer_turn():
            self._create_schema()

    def _create_schema(self) -> None:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            self._execute_schema()
            connection.execute(
                "INSERT OR IGNORE INTO ledger_meta "
                "(singleton, schema_version, last_timestamp, batch_number, last_hash) "
                "VALUES (1, ?, 0, 0, ?)",
                (SCHEMA_VERSION, GENESIS_HASH),
            )
            (version,) = connection.execute("SELECT schema_version FROM ledger_meta").fetchone()
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.path}: ledger schema version {version} is newer than this "
                    f"paycell's {SCHEMA_VERSION}; upgrade paycell to open it"
                )
            if version == 1:
                for statement in _MIGRATE_1_TO_2:
                    connection.execute(statement)
                (last,) = connection.execute(
                    "SELECT coalesce(max(timestamp), 0) FROM transfers"
                ).fetchone()
                _index_statement_tail(connection, last)
            if version <= 2:
                for statement in _MIGRATE_2_TO_3:
                    connection.execute(statement)
            if 2 <= version <= 3:
                # A version 1 file got its statement tables in version 4's shape above.
                self._key_statement_tables_by_fill()
            if 3 <= version <= 4:
                # Versions 1 and 2 had no log: balances were updated in place.
                fold_rows_logged_by_schema_4(connection)
            connection.execute("UPDATE ledger_meta SET schema_version = ?", (SCHEMA_VERSION,))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def _key_statement_tables_by_fill(self) -> None:
        """Version 3 to 4: the statement tables' rows, (account, timestamp), move into
        tables keyed (fill, account, timestamp), as fill 1, through the watermark."""
        connection = self._connection
        for side in _STATEMENT_SIDES:
            connection.execute(f"DROP TRIGGER statement_{side}s_are_append_only_update")
            connection.execute(f"DROP TRIGGER statement_{side}s_are_append_only_delete")
            connection.execute(f"ALTER TABLE statement_{side}s RENAME TO statement_{side}s_v3")
        self._execute_schema()  # The new tables, and their triggers.
        connection.execute(
            "INSERT INTO statement_fills (fill, through) SELECT 1, statement_indexed_through "
            "FROM ledger_meta WHERE statement_indexed_through > 0"
        )
        for side in _STATEMENT_SIDES:
            connection.execute(
                f"INSERT INTO statement_{side}s (fill, account_id, timestamp) "
                f"SELECT 1, account_id, timestamp FROM statement_{side}s_v3 "
                "ORDER BY account_id, timestamp"
            )
            connection.execute(f"DROP TABLE statement_{side}s_v3")

    def _execute_schema(self) -> None:
        """Create whatever of the schema is missing (every statement is IF NOT EXISTS)."""
        for statement in _SCHEMA.split(";\n"):
            if statement.strip():
                self._connection.execute(statement)

    _write_unit_type: type[_SqliteWriteUnit] = _SqliteWriteUnit

    @contextmanager
    def write(self) -> Iterator[_SqliteWriteUnit]:
        with self._writer_turn():
            connection = self._connection
            account_log = self.account_log
            connection.execute("BEGIN IMMEDIATE")
            try:
                account_log.synchronize(connection)
                yield self._write_unit_type(connection, self.statement_index_every, account_log)
                connection.execute("COMMIT")
            except BaseException:
                # First, so nothing below can skip it: the memory may hold what this
                # transaction logged. Then roll back, unless SQLite already has: it rolls the
                # whole transaction back itself on an interrupt, a full disk or an I/O error,
                # and a ROLLBACK then would fail and hide the error that caused it.
                account_log.forget()
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        if self._writer_queue is None:
            yield
            return
        with self._writer_queue.turn():
            yield

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """verify's snapshot: one read transaction, during which a sort larger than the page
        cache spills to a temporary file ($SQLITE_TMPDIR, else /var/tmp or /tmp) instead of
        memory. Inside a transaction already open, that transaction's."""
        connection = self._connection
        if connection.in_transaction:
            yield
            return
        # Switched outside any transaction: SQLite refuses to inside one once it has used
        # temporary storage.
        connection.execute("PRAGMA temp_store = FILE")
        try:
            with self._read_transaction():
                yield
        finally:
            # Refused while a statement of the verify is still open (it failed midway): the
            # setting then stays on files, which is slower at scale but as correct.
            with suppress(sqlite3.OperationalError):
                connection.execute("PRAGMA temp_store = MEMORY")

    @contextmanager
    def _read_transaction(self) -> Iterator[None]:
        """Reads that must see one state of the database: one read transaction (or the one
        already open). WAL keeps its pages for it while other processes commit; a checkpoint
        cannot move past it until it ends, so the WAL file may grow meanwhile."""
        connection = self._connection
        if connection.in_transaction:
            yield
            return
        connection.execute("BEGIN")
        try:
            yield
        finally:
            if connection.in_transaction:
                connection.execute("COMMIT")

    @contextmanager
    def _account_snapshot(self) -> Iterator[AccountChangeLog]:
        """Accounts read from `accounts` and the log's memory must come from one snapshot:
        another process may write the log back in between."""
        with self._read_transaction():
            self.account_log.synchronize(self._connection)
            yield self.account_log

    def meta(self) -> LedgerMeta:
        return _read_meta(self._connection)

    def lookup_accounts(self, ids: Collection[int]) -> dict[int, Account]:
        with self._account_snapshot() as account_log:
            found, missing = account_log.split(ids)
            if missing:
                found.update(_accounts_by_id(self._connection, missing))
            return found

    def query_accounts(self, query_filter: QueryFilter, limit: int) -> list[Account]:
        statement = query(_SQLITE, "accounts", ACCOUNT_COLUMNS, query_filter, limit)
        with self._account_snapshot() as account_log:
            rows = self._connection.execute(*statement).fetchall()
            return [account_log.patch(_account_from_row(row)) for row in rows]

    def all_accounts(self) -> Iterator[Account]:
        # For `paycell verify`: what the database holds, not what this process remembers,
        # read into a memory of verify's own (which reads past a row that does not unpack;
        # the store's memory never does). It reads in one snapshot, a read transaction held
        # until the iteration ends: no write on this store can start until then.
        account_log = self.account_log.fresh()
        with self._read_transaction():
            account_log.synchronize(self._connection, for_verify=True)
            for row in self._table_rows("accounts", ACCOUNT_COLUMNS, "id"):
                yield account_log.patch(_account_from_row(row))

    def _account_log_discrepancies(self) -> list[str]:
        with self._read_transaction():
            return self.account_log.discrepancies(self._connection)

    def lookup_transfers(self, ids: Collection[int]) -> dict[int, Transfer]:
        return _transfers_by_id(self._connection, ids)

    def account_transfers(self, account_filter: AccountFilter, limit: int) -> list[Transfer]:
        # The filled part holds every transfer before the tail's, so a page oldest first reads
        # it first, and newest first reads the tail first; the second read is skipped if the
        # first filled the page.
        if account_filter.flags & AccountFilterFlags.REVERSED:
            parts = (ledger_queries.statement_tail, ledger_queries.filled_statement)
        else:
            parts = (ledger_queries.filled_statement, ledger_queries.statement_tail)
        rows: list[Any] = []
        with self._read_transaction():
            for part in parts:
                rows += self._rows(*part(_SQLITE, account_filter, limit - len(rows)))
                if len(rows) >= limit:
                    break
        return [_transfer_from_row(row) for row in rows]

    def _rows(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        return self._connection.execute(sql, parameters).fetchall()

    def _table_rows(self, table: str, columns: str, key: str) -> Iterator[Sequence[Any]]:
        # One cursor, read as it is iterated; other statements may run on the connection meanwhile.
        return self._connection.execute(f"SELECT {columns} FROM {table} ORDER BY {key}")

    def _stream(self, sql: str, parameters: Sequence[Any]) -> Iterator[Sequence[Any]]:
        # A cursor is read as it is iterated; inside verify's snapshot, a sort larger than the
        # page cache spills to a temporary file.
        return self._connection.execute(sql, parameters)

    def storage_discrepancies(self) -> list[str]:
        with self.snapshot():
            return self._statement_index_discrepancies() + self._account_log_discrepancies()

    def _statement_index_discrepancies(self) -> list[str]:
        """The statement tables must hold exactly one row per side of every transfer up to
        the watermark, naming that side's account, in the fill that indexed it; a missing,
        stray or misfiled row would make statements lie while every balance still adds up."""
        connection = self._connection
        (watermark,) = connection.execute(
            "SELECT statement_indexed_through FROM ledger_meta"
        ).fetchone()
        (expected,) = connection.execute(
            "SELECT count(*) FROM transfers WHERE timestamp <= ?", (watermark,)
        ).fetchone()
        found: list[str] = []
        # Statements pick fills by their watermarks, so those must rise with the fill number,
        # and the last must be the ledger's: a fill slipped in would hide rows from them.
        (last_fill,) = connection.execute(
            "SELECT coalesce((SELECT through FROM statement_fills ORDER BY fill DESC LIMIT 1), 0)"
        ).fetchone()
        if last_fill != watermark:
            found.append(
                f"statement_fills: the last fill is through {last_fill}, the watermark is "
                f"{watermark}"
            )
        (out_of_order,) = connection.execute(
            f"SELECT count(*) FROM ({_FILL_RANGES}) WHERE through <= after"
        ).fetchone()
        if out_of_order:
            found.append(
                f"statement_fills: {out_of_order} fills do not reach past the fill before them"
            )
        for side in _STATEMENT_SIDES:
            # A row belongs to a recorded fill, after the fill before it and up to its own.
            (misfiled,) = connection.execute(
                f"WITH ranges AS ({_FILL_RANGES}) SELECT count(*) FROM statement_{side}s s "
                "LEFT JOIN ranges f ON f.fill = s.fill "
                "WHERE f.fill IS NULL OR s.timestamp > f.through OR s.timestamp <= f.after"
            ).fetchone()
            if misfiled:
                found.append(f"statement_{side}s: {misfiled} rows are outside the fill they name")
            # Each row must match a transfer's account on its side, at or before the
            # watermark. A timestamp lies in one fill's range and the key holds the fill, so
            # rows in their fills are unique: matching rows = transfers means all of them.
            (rows, matching) = connection.execute(
                f"SELECT count(*), count(t.timestamp) FROM statement_{side}s s "
                "LEFT JOIN transfers t ON t.timestamp = s.timestamp "
                f"AND t.{side}_account_id = s.account_id AND t.timestamp <= ?",
                (watermark,),
            ).fetchone()
            if rows != matching:
                found.append(
                    f"statement_{side}s: {rows - matching} rows name no transfer of that "
                    "account up to the watermark"
                )
            if matching != expected:
                found.append(
                    f"statement_{side}s: indexes {matching} of the {expected} transfers up to "
                    "the watermark"
                )
        return found

    def close(self) -> None:
        self._connection.close()
        if self._writer_queue is not None:
            self._writer_queue.close()


assert PendingStatus.PENDING == 1  # The partial index above hard-codes the pending status.
