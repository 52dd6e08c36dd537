"""The PostgreSQL backend: the same schema and contract as the SQLite backend, for a ledger that
several hosts share.

Durability: every connection sets `synchronous_commit = on`, so a commit that returned is on
disk (and on synchronous standbys, if the server has any) before a result is acknowledged.

Concurrency: every write transaction first locks the single `ledger_meta` row
(`SELECT ... FOR UPDATE`), before it reads anything else. That row is the ledger's writer lock:
writers from any number of processes queue on it, the prefetch sees the state the batch will
commit on top of (no lost update), and because every writer takes the same one lock first,
writers cannot deadlock. Readers are never blocked (MVCC).

Encoding: unsigned 128-bit values (ids, amounts, balances, user_data_128) and user_data_64 are
NUMERIC(39,0), which holds every such value exactly and orders numerically. u32 fields are
BIGINT and u16 fields INTEGER, because PostgreSQL's integer types are signed. NUMERIC is
decoded straight to `int` by psycopg's integer loader, never through `Decimal` or `float`.

Speed: a batch costs a fixed number of round trips whatever its size. Prefetches pass their
ids as one array (`= ANY(...)`), new rows go in with COPY, and the aggregated balance updates
are one `UPDATE ... FROM unnest(...)`. Rows for COPY are formatted with `bytes %`, one C call
per row, since every column of a transfer, an account or a balance row is an integer.
"""

import itertools
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Final

import psycopg
from psycopg.types.numeric import IntLoader

from paycell.adapters.storage import ledger_queries
from paycell.adapters.storage.ledger_queries import (
    ACCOUNT_COLUMNS,
    TRANSFER_COLUMNS,
    Dialect,
    SqlLedgerReads,
)
from paycell.core.batch import CommittedBatch, LedgerMeta, PendingState
from paycell.core.journal import GENESIS_HASH
from paycell.core.types import Account, AccountBalance, PendingStatus, Transfer

SCHEMA_VERSION: Final = 1
# Arbitrary constant naming the advisory lock that serializes schema creation across
# processes opening the same new database at once ("paycell" in ASCII).
_SCHEMA_LOCK_KEY: Final = 0x70617963656C6C
# Rows per round trip when streaming whole tables for `paycell verify`.
_STREAM_CHUNK: Final = 8_192
# Names for server-side cursors: verify reads two streams at once.
_STREAMS: Final = itertools.count()

_NUMERIC: Final = "NUMERIC(39,0)"

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS ledger_meta (
    singleton SMALLINT PRIMARY KEY CHECK (singleton = 1),
    schema_version INTEGER NOT NULL,
    last_timestamp BIGINT NOT NULL,
    batch_number BIGINT NOT NULL,
    last_hash BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    id {_NUMERIC} PRIMARY KEY,
    debits_pending {_NUMERIC} NOT NULL,
    debits_posted {_NUMERIC} NOT NULL,
    credits_pending {_NUMERIC} NOT NULL,
    credits_posted {_NUMERIC} NOT NULL,
    user_data_128 {_NUMERIC} NOT NULL,
    user_data_64 {_NUMERIC} NOT NULL,
    user_data_32 BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    ledger BIGINT NOT NULL,
    code INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    created_flags INTEGER NOT NULL,
    timestamp BIGINT NOT NULL UNIQUE
) WITH (fillfactor = 50);
CREATE INDEX IF NOT EXISTS accounts_by_user_data_128 ON accounts (user_data_128, timestamp);
CREATE INDEX IF NOT EXISTS accounts_by_ledger_code ON accounts (ledger, code, timestamp);
CREATE TABLE IF NOT EXISTS transfers (
    timestamp BIGINT PRIMARY KEY,
    id {_NUMERIC} NOT NULL UNIQUE,
    debit_account_id {_NUMERIC} NOT NULL,
    credit_account_id {_NUMERIC} NOT NULL,
    amount {_NUMERIC} NOT NULL,
    pending_id {_NUMERIC} NOT NULL,
    user_data_128 {_NUMERIC} NOT NULL,
    user_data_64 {_NUMERIC} NOT NULL,
    user_data_32 BIGINT NOT NULL,
    timeout BIGINT NOT NULL,
    ledger BIGINT NOT NULL,
    code INTEGER NOT NULL,
    flags INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_by_debit_account
    ON transfers (debit_account_id, timestamp);
CREATE INDEX IF NOT EXISTS transfers_by_credit_account
    ON transfers (credit_account_id, timestamp);
CREATE TABLE IF NOT EXISTS pending_transfers (
    id {_NUMERIC} PRIMARY KEY,
    status SMALLINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_transfers_due
    ON pending_transfers (expires_at) WHERE status = 1 AND expires_at > 0;
CREATE TABLE IF NOT EXISTS expiries (
    timestamp BIGINT PRIMARY KEY,
    pending_id {_NUMERIC} NOT NULL
);
CREATE TABLE IF NOT EXISTS failed_transfers (
    id {_NUMERIC} PRIMARY KEY,
    result TEXT NOT NULL,
    timestamp BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS failed_transfers_by_timestamp ON failed_transfers (timestamp);
CREATE TABLE IF NOT EXISTS account_history (
    account_id {_NUMERIC} NOT NULL,
    timestamp BIGINT NOT NULL,
    debits_pending {_NUMERIC} NOT NULL,
    debits_posted {_NUMERIC} NOT NULL,
    credits_pending {_NUMERIC} NOT NULL,
    credits_posted {_NUMERIC} NOT NULL,
    PRIMARY KEY (account_id, timestamp)
);
CREATE TABLE IF NOT EXISTS journal (
    batch_number BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    timestamp_first BIGINT NOT NULL,
    timestamp_last BIGINT NOT NULL,
    event_count INTEGER NOT NULL,
    previous_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL
);
CREATE OR REPLACE FUNCTION paycell_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE OR REPLACE TRIGGER transfers_are_append_only_update
    BEFORE UPDATE ON transfers
    FOR EACH STATEMENT EXECUTE FUNCTION paycell_reject_change('transfers are append-only');
CREATE OR REPLACE TRIGGER transfers_are_append_only_delete
    BEFORE DELETE OR TRUNCATE ON transfers
    FOR EACH STATEMENT EXECUTE FUNCTION paycell_reject_change('transfers are append-only');
CREATE OR REPLACE TRIGGER journal_is_append_only_update
    BEFORE UPDATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION paycell_reject_change('the journal is append-only');
CREATE OR REPLACE TRIGGER journal_is_append_only_delete
    BEFORE DELETE OR TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION paycell_reject_change('the journal is append-only')
"""

# COPY text-format rows. Column order is the record's field order (plus created_flags for a
# new account), so a whole record formats in one `%`.
_ACCOUNT_COPY_ROW: Final = b"\t".join([b"%d"] * 14) + b"\n"
_TRANSFER_COPY_ROW: Final = b"\t".join([b"%d"] * 13) + b"\n"
_HISTORY_COPY_ROW: Final = b"\t".join([b"%d"] * 6) + b"\n"
_PENDING_COPY_ROW: Final = b"%d\t%d\t%d\n"
_EXPIRY_COPY_ROW: Final = b"%d\t%d\n"


def _id_array(ids: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers, passed as one text parameter: far cheaper than
    adapting thousands of Python ints one by one."""
    return "{" + ",".join(map(str, ids)) + "}"


def _account_from_row(row: Sequence[Any]) -> Account:
    return Account._make(row[:13])


def _transfer_from_row(row: Sequence[Any]) -> Transfer:
    return Transfer._make(row)


_POSTGRES: Final = Dialect(
    placeholder="%s",
    # The casts make each comparison one of the column's own type, which its index serves.
    wide_parameter="%s::numeric",
    narrow_parameter="%s::bigint",
    # NUMERIC is bound from, and loaded as, a plain int (see IntLoader below).
    encode=int,
    decode=int,
    account_from_row=_account_from_row,
    transfer_from_row=_transfer_from_row,
    balance_from_row=AccountBalance._make,
    limit_each_side=True,
)


def _read_meta(connection: psycopg.Connection[Any], *, lock: bool) -> LedgerMeta:
    row = connection.execute(
        "SELECT last_timestamp, batch_number, last_hash FROM ledger_meta WHERE singleton = 1"
        + (" FOR UPDATE" if lock else "")
    ).fetchone()
    assert row is not None, "ledger_meta has its row from schema creation on"
    return LedgerMeta(row[0], row[1], bytes(row[2]))


def _accounts_by_id(
    connection: psycopg.Connection[Any], ids: Collection[int]
) -> dict[int, Account]:
    if not ids:
        return {}
    rows = connection.execute(
        f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY(%s::numeric[])",
        (_id_array(ids),),
    ).fetchall()
    return {row[0]: Account._make(row) for row in rows}


def _transfers_by_id(
    connection: psycopg.Connection[Any], ids: Collection[int]
) -> dict[int, Transfer]:
    if not ids:
        return {}
    rows = connection.execute(
        f"SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ANY(%s::numeric[])",
        (_id_array(ids),),
    ).fetchall()
    return {row[0]: Transfer._make(row) for row in rows}


class _PostgresWriteUnit:
    def __init__(self, connection: psycopg.Connection[Any], meta: LedgerMeta) -> None:
        self._connection = connection
        self._meta = meta

    def meta(self) -> LedgerMeta:
        return self._meta

    def accounts_by_id(self, ids: Collection[int]) -> dict[int, Account]:
        return _accounts_by_id(self._connection, ids)

    def transfers_by_id(self, ids: Collection[int]) -> dict[int, Transfer]:
        return _transfers_by_id(self._connection, ids)

    def pending_states(self, ids: Collection[int]) -> dict[int, PendingState]:
        if not ids:
            return {}
        rows = self._connection.execute(
            "SELECT id, status, expires_at FROM pending_transfers WHERE id = ANY(%s::numeric[])",
            (_id_array(ids),),
        ).fetchall()
        return {row[0]: PendingState(row[1], row[2]) for row in rows}

    def failed_results(self, ids: Collection[int]) -> dict[int, str]:
        if not ids:
            return {}
        rows = self._connection.execute(
            "SELECT id, result FROM failed_transfers WHERE id = ANY(%s::numeric[])",
            (_id_array(ids),),
        ).fetchall()
        return {row[0]: row[1] for row in rows}

    def computing(self) -> AbstractContextManager[None]:
        return nullcontext()  # PostgreSQL indexes statements as it writes.

    def highest_transfer_id(self, below: int | None = None) -> int:
        # Each max() reads one end of a primary key index, or the place of `below` in it.
        if below is None:
            highest = self._connection.execute(
                "SELECT (SELECT max(id) FROM transfers), (SELECT max(id) FROM failed_transfers)"
            ).fetchone()
        else:
            highest = self._connection.execute(
                "SELECT (SELECT max(id) FROM transfers WHERE id < %(below)s::numeric), "
                "(SELECT max(id) FROM failed_transfers WHERE id < %(below)s::numeric)",
                {"below": below},
            ).fetchone()
        assert highest is not None
        return max((int(value) for value in highest if value is not None), default=0)

    def due_pending_transfers(self, timestamp: int, limit: int) -> list[Transfer]:
        sql, parameters = ledger_queries.due_pending_transfers(_POSTGRES, timestamp, limit)
        rows = self._connection.execute(sql, parameters).fetchall()
        return [_transfer_from_row(row) for row in rows]

    def save(self, batch: CommittedBatch) -> None:
        cursor = self._connection.cursor()
        if batch.accounts_created:
            with cursor.copy(
                f"COPY accounts ({ACCOUNT_COLUMNS}, created_flags) FROM STDIN"
            ) as copy:
                row = _ACCOUNT_COPY_ROW
                copy.write(b"".join([row % (*a, a.flags) for a in batch.accounts_created]))
        if batch.transfers_created:
            with cursor.copy(f"COPY transfers ({TRANSFER_COLUMNS}) FROM STDIN") as copy:
                row = _TRANSFER_COPY_ROW
                copy.write(b"".join([row % t for t in batch.transfers_created]))
        if batch.accounts_updated:
            updated = batch.accounts_updated.values()
            cursor.execute(
                "UPDATE accounts AS a SET debits_pending = u.debits_pending, "
                "debits_posted = u.debits_posted, credits_pending = u.credits_pending, "
                "credits_posted = u.credits_posted, flags = u.flags "
                "FROM unnest(%s::numeric[], %s::numeric[], %s::numeric[], %s::numeric[], "
                "%s::numeric[], %s::integer[]) "
                "AS u(id, debits_pending, debits_posted, credits_pending, credits_posted, flags) "
                "WHERE a.id = u.id",
                (
                    _id_array([a.id for a in updated]),
                    _id_array([a.debits_pending for a in updated]),
                    _id_array([a.debits_posted for a in updated]),
                    _id_array([a.credits_pending for a in updated]),
                    _id_array([a.credits_posted for a in updated]),
                    _id_array([a.flags for a in updated]),
                ),
            )
            assert cursor.rowcount == len(batch.accounts_updated), "an updated account vanished"
        if batch.pending_created:
            with cursor.copy("COPY pending_transfers (id, status, expires_at) FROM STDIN") as copy:
                row = _PENDING_COPY_ROW
                copy.write(
                    b"".join(
                        [
                            row % (pending_id, state.status, state.expires_at)
                            for pending_id, state in batch.pending_created.items()
                        ]
                    )
                )
        if batch.pending_resolved:
            resolved = batch.pending_resolved
            cursor.execute(
                "UPDATE pending_transfers AS p SET status = u.status "
                "FROM unnest(%s::numeric[], %s::smallint[]) AS u(id, status) WHERE p.id = u.id",
                (_id_array(resolved.keys()), _id_array(resolved.values())),
            )
        if batch.history:
            with cursor.copy(
                "COPY account_history (account_id, timestamp, debits_pending, debits_posted, "
                "credits_pending, credits_posted) FROM STDIN"
            ) as copy:
                row = _HISTORY_COPY_ROW
                copy.write(
                    b"".join(
                        [
                            row
                            % (
                                h.account_id,
                                h.balance.timestamp,
                                h.balance.debits_pending,
                                h.balance.debits_posted,
                                h.balance.credits_pending,
                                h.balance.credits_posted,
                            )
                            for h in batch.history
                        ]
                    )
                )
        if batch.expiries:
            with cursor.copy("COPY expiries (timestamp, pending_id) FROM STDIN") as copy:
                row = _EXPIRY_COPY_ROW
                copy.write(b"".join([row % (e.timestamp, e.pending_id) for e in batch.expiries]))
        if batch.failures:
            with cursor.copy("COPY failed_transfers (id, result, timestamp) FROM STDIN") as copy:
                for failure in batch.failures:
                    copy.write_row((failure.id, failure.result, failure.timestamp))
        entry = batch.journal
        cursor.execute(
            "INSERT INTO journal (batch_number, kind, timestamp_first, timestamp_last, "
            "event_count, previous_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s)",
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
        cursor.execute(
            "UPDATE ledger_meta SET last_timestamp = %s, batch_number = %s, last_hash = %s "
            "WHERE singleton = 1",
            (entry.timestamp_last, entry.batch_number, entry.hash),
        )
        self._meta = batch.meta_after


class PostgresStore(SqlLedgerReads):
    """A ledger in one PostgreSQL database. Open one per process; processes may share it."""

    _dialect = _POSTGRES

    def __init__(self, url: str) -> None:
        self.url = url
        # No server-side prepared statements: a generic plan cached while the tables were small
        # (a sequential scan) outlives their growth and slowed batches of 100 tenfold within a
        # minute; planning each query with its real parameters costs a fraction of that.
        self._connection: psycopg.Connection[Any] = psycopg.connect(
            url, autocommit=True, prepare_threshold=None
        )
        try:
            # NUMERIC comes back as an exact int (the loader parses its decimal text).
            self._connection.adapters.register_loader("numeric", IntLoader)
            # Durability does not depend on the server's or the role's defaults.
            self._connection.execute("SET synchronous_commit = on")
            self._create_schema()
        except BaseException:
            self._connection.close()
            raise

    def _create_schema(self) -> None:
        connection = self._connection
        if self._schema_exists():
            return
        with connection.transaction():
            # Several processes may open a new database at once; DDL under IF NOT EXISTS still
            # races in PostgreSQL's catalogs, so creation is serialized by an advisory lock.
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            # One multi-statement query (no parameters, so the simple query protocol).
            connection.execute(_SCHEMA)
            connection.execute(
                "INSERT INTO ledger_meta "
                "(singleton, schema_version, last_timestamp, batch_number, last_hash) "
                "VALUES (1, %s, 0, 0, %s) ON CONFLICT (singleton) DO NOTHING",
                (SCHEMA_VERSION, GENESIS_HASH),
            )

    def _schema_exists(self) -> bool:
        # Schema creation is one transaction, so the meta row exists only with every table.
        row = self._connection.execute("SELECT to_regclass('ledger_meta') IS NOT NULL").fetchone()
        if row is None or not row[0]:
            return False
        return self._connection.execute("SELECT 1 FROM ledger_meta").fetchone() is not None

    @contextmanager
    def write(self) -> Iterator[_PostgresWriteUnit]:
        connection = self._connection
        # `transaction()` commits on a clean exit and rolls back on an exception; the commit
        # returns once durable (synchronous_commit = on).
        with connection.transaction():
            # The writer lock, taken before any other read of this unit of work.
            yield _PostgresWriteUnit(connection, _read_meta(connection, lock=True))

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        # REPEATABLE READ: every statement of the transaction reads the snapshot its first one
        # took (READ COMMITTED, the default, takes a new one per statement). Inside one already
        # open, its snapshot is the one.
        if self._connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            yield
            return
        with self._connection.transaction():
            self._connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield

    def meta(self) -> LedgerMeta:
        return _read_meta(self._connection, lock=False)

    def lookup_accounts(self, ids: Collection[int]) -> dict[int, Account]:
        return _accounts_by_id(self._connection, ids)

    def lookup_transfers(self, ids: Collection[int]) -> dict[int, Transfer]:
        return _transfers_by_id(self._connection, ids)

    def _rows(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        return self._connection.execute(sql, parameters).fetchall()

    def _table_rows(self, table: str, columns: str, key: str) -> Iterator[Sequence[Any]]:
        # Keyset-paginated chunks rather than one open cursor, so that other queries on this
        # connection (verify reads a batch's rows while it walks the journal) can run between.
        key_parameter = "%s::numeric" if key == "id" else "%s"
        sql = f"SELECT {columns} FROM {table} WHERE {key} > {key_parameter} ORDER BY {key} LIMIT %s"
        key_index = columns.split(", ").index(key)
        after = -1
        while True:
            rows = self._connection.execute(sql, (after, _STREAM_CHUNK)).fetchall()
            yield from rows
            if len(rows) < _STREAM_CHUNK:
                return
            after = rows[-1][key_index]

    def _stream(self, sql: str, parameters: Sequence[Any]) -> Iterator[Sequence[Any]]:
        # A server-side cursor, fetched in chunks, so a result of any size streams; it lives
        # in a transaction (verify's snapshot, or its own).
        name = f"paycell_stream_{next(_STREAMS)}"
        with self.snapshot(), self._connection.cursor(name=name) as cursor:
            cursor.itersize = _STREAM_CHUNK
            cursor.execute(sql, parameters)
            yield from cursor

    def close(self) -> None:
        self._connection.close()


assert PendingStatus.PENDING == 1  # The partial index above hard-codes the pending status.
