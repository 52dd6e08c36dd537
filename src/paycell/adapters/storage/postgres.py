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

from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import psycopg
from psycopg.types.numeric import IntLoader

from paycell.adapters.storage.journal_rows import read_batch_records
from paycell.core.batch import CommittedBatch, LedgerMeta, PendingState
from paycell.core.journal import GENESIS_HASH, Expiry, Failure, JournalEntry
from paycell.core.types import (
    Account,
    AccountBalance,
    AccountFilter,
    AccountFilterFlags,
    PendingStatus,
    QueryFilter,
    QueryFilterFlags,
    Transfer,
)

SCHEMA_VERSION: Final = 1
# Timestamps are BIGINT; a filter bound above the largest one selects the same rows.
_TIMESTAMP_CEILING: Final = (1 << 63) - 1
# Arbitrary constant naming the advisory lock that serializes schema creation across
# processes opening the same new database at once ("paycell" in ASCII).
_SCHEMA_LOCK_KEY: Final = 0x70617963656C6C
# Rows per round trip when streaming whole tables for `paycell verify`.
_STREAM_CHUNK: Final = 8_192

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

_ACCOUNT_COLUMNS: Final = (
    "id, debits_pending, debits_posted, credits_pending, credits_posted, user_data_128, "
    "user_data_64, user_data_32, reserved, ledger, code, flags, timestamp"
)
_TRANSFER_COLUMNS: Final = (
    "id, debit_account_id, credit_account_id, amount, pending_id, user_data_128, "
    "user_data_64, user_data_32, timeout, ledger, code, flags, timestamp"
)
_PREFIXED_TRANSFER_COLUMNS: Final = ", ".join("t." + c for c in _TRANSFER_COLUMNS.split(", "))

# COPY text-format rows. Column order is the record's field order (plus created_flags for a
# new account), so a whole record formats in one `%`.
_ACCOUNT_COPY_ROW: Final = b"\t".join([b"%d"] * 14) + b"\n"
_TRANSFER_COPY_ROW: Final = b"\t".join([b"%d"] * 13) + b"\n"
_HISTORY_COPY_ROW: Final = b"\t".join([b"%d"] * 6) + b"\n"
_PENDING_COPY_ROW: Final = b"%d\t%d\t%d\n"
_EXPIRY_COPY_ROW: Final = b"%d\t%d\n"

assert Account._fields == tuple(_ACCOUNT_COLUMNS.split(", "))
assert Transfer._fields == tuple(_TRANSFER_COLUMNS.split(", "))


def _id_array(ids: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers, passed as one text parameter: far cheaper than
    adapting thousands of Python ints one by one."""
    return "{" + ",".join(map(str, ids)) + "}"


def _account_from_row(row: Sequence[Any]) -> Account:
    return Account._make(row[:13])


def _transfer_from_row(row: Sequence[Any]) -> Transfer:
    return Transfer._make(row)


def _timestamp_bounds(timestamp_min: int, timestamp_max: int) -> tuple[int, int]:
    high = timestamp_max if timestamp_max else _TIMESTAMP_CEILING
    return min(timestamp_min, _TIMESTAMP_CEILING), min(high, _TIMESTAMP_CEILING)


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
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY(%s::numeric[])",
        (_id_array(ids),),
    ).fetchall()
    return {row[0]: Account._make(row) for row in rows}


def _transfers_by_id(
    connection: psycopg.Connection[Any], ids: Collection[int]
) -> dict[int, Transfer]:
    if not ids:
        return {}
    rows = connection.execute(
        f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE id = ANY(%s::numeric[])",
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

    def due_pending_transfers(self, timestamp: int, limit: int) -> list[Transfer]:
        rows = self._connection.execute(
            f"SELECT {_PREFIXED_TRANSFER_COLUMNS} "
            "FROM pending_transfers p JOIN transfers t ON t.id = p.id "
            "WHERE p.status = 1 AND p.expires_at > 0 AND p.expires_at <= %s "
            "ORDER BY p.expires_at, t.timestamp LIMIT %s",
            (min(timestamp, _TIMESTAMP_CEILING), limit),
        ).fetchall()
        return [_transfer_from_row(row) for row in rows]

    def save(self, batch: CommittedBatch) -> None:
        cursor = self._connection.cursor()
        if batch.accounts_created:
            with cursor.copy(
                f"COPY accounts ({_ACCOUNT_COLUMNS}, created_flags) FROM STDIN"
            ) as copy:
                row = _ACCOUNT_COPY_ROW
                copy.write(b"".join([row % (*a, a.flags) for a in batch.accounts_created]))
        if batch.transfers_created:
            with cursor.copy(f"COPY transfers ({_TRANSFER_COLUMNS}) FROM STDIN") as copy:
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


class PostgresStore:
    """A ledger in one PostgreSQL database. Open one per process; processes may share it."""

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

    def meta(self) -> LedgerMeta:
        return _read_meta(self._connection, lock=False)

    def has_due_pending_transfers(self, timestamp: int) -> bool:
        row = self._connection.execute(
            "SELECT 1 FROM pending_transfers WHERE status = 1 AND expires_at > 0 "
            "AND expires_at <= %s LIMIT 1",
            (min(timestamp, _TIMESTAMP_CEILING),),
        ).fetchone()
        return row is not None

    def lookup_accounts(self, ids: Collection[int]) -> dict[int, Account]:
        return _accounts_by_id(self._connection, ids)

    def lookup_transfers(self, ids: Collection[int]) -> dict[int, Transfer]:
        return _transfers_by_id(self._connection, ids)

    def pending_state(self, transfer_id: int) -> PendingState | None:
        row = self._connection.execute(
            "SELECT status, expires_at FROM pending_transfers WHERE id = %s::numeric",
            (transfer_id,),
        ).fetchone()
        return PendingState(row[0], row[1]) if row else None

    def account_transfers(self, account_filter: AccountFilter, limit: int) -> list[Transfer]:
        low, high = _timestamp_bounds(account_filter.timestamp_min, account_filter.timestamp_max)
        conditions = ["timestamp >= %s", "timestamp <= %s"]
        values: list[Any] = [low, high]
        for column in ("user_data_128", "user_data_64", "user_data_32", "code"):
            wanted = getattr(account_filter, column)
            if wanted:
                conditions.append(f"{column} = %s::{_column_type(column)}")
                values.append(wanted)
        where = " AND ".join(conditions)
        order = "DESC" if account_filter.flags & AccountFilterFlags.REVERSED else "ASC"
        selects: list[str] = []
        parameters: list[Any] = []
        for side, flag in (
            ("debit_account_id", AccountFilterFlags.DEBITS),
            ("credit_account_id", AccountFilterFlags.CREDITS),
        ):
            if account_filter.flags & flag:
                # Each side is its own indexed range scan; an account is never both sides of
                # one transfer, so UNION ALL has no duplicates.
                selects.append(
                    f"(SELECT {_TRANSFER_COLUMNS} FROM transfers "
                    f"WHERE {side} = %s::numeric AND {where} ORDER BY timestamp {order} LIMIT %s)"
                )
                parameters.extend([account_filter.account_id, *values, limit])
        sql = (
            f"SELECT * FROM ({' UNION ALL '.join(selects)}) AS statement "
            f"ORDER BY timestamp {order} LIMIT %s"
        )
        rows = self._connection.execute(sql, [*parameters, limit]).fetchall()
        return [_transfer_from_row(row) for row in rows]

    def account_balances(self, account_filter: AccountFilter, limit: int) -> list[AccountBalance]:
        low, high = _timestamp_bounds(account_filter.timestamp_min, account_filter.timestamp_max)
        conditions = ["h.account_id = %s::numeric", "h.timestamp >= %s", "h.timestamp <= %s"]
        values: list[Any] = [account_filter.account_id, low, high]
        for column in ("user_data_128", "user_data_64", "user_data_32", "code"):
            wanted = getattr(account_filter, column)
            if wanted:
                conditions.append(f"t.{column} = %s::{_column_type(column)}")
                values.append(wanted)
        sides = []
        if account_filter.flags & AccountFilterFlags.DEBITS:
            sides.append("t.debit_account_id = h.account_id")
        if account_filter.flags & AccountFilterFlags.CREDITS:
            sides.append("t.credit_account_id = h.account_id")
        conditions.append("(" + " OR ".join(sides) + ")")
        order = "DESC" if account_filter.flags & AccountFilterFlags.REVERSED else "ASC"
        rows = self._connection.execute(
            "SELECT h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted, "
            "h.timestamp FROM account_history h JOIN transfers t ON t.timestamp = h.timestamp "
            f"WHERE {' AND '.join(conditions)} ORDER BY h.timestamp {order} LIMIT %s",
            [*values, limit],
        ).fetchall()
        return [AccountBalance._make(row) for row in rows]

    def _query(self, table: str, columns: str, query_filter: QueryFilter, limit: int) -> list[Any]:
        low, high = _timestamp_bounds(query_filter.timestamp_min, query_filter.timestamp_max)
        conditions = ["timestamp >= %s", "timestamp <= %s"]
        values: list[Any] = [low, high]
        for column in ("user_data_128", "user_data_64", "user_data_32", "ledger", "code"):
            wanted = getattr(query_filter, column)
            if wanted:
                conditions.append(f"{column} = %s::{_column_type(column)}")
                values.append(wanted)
        order = "DESC" if query_filter.flags & QueryFilterFlags.REVERSED else "ASC"
        return self._connection.execute(
            f"SELECT {columns} FROM {table} WHERE {' AND '.join(conditions)} "
            f"ORDER BY timestamp {order} LIMIT %s",
            [*values, limit],
        ).fetchall()

    def query_accounts(self, query_filter: QueryFilter, limit: int) -> list[Account]:
        rows = self._query("accounts", _ACCOUNT_COLUMNS, query_filter, limit)
        return [_account_from_row(row) for row in rows]

    def query_transfers(self, query_filter: QueryFilter, limit: int) -> list[Transfer]:
        rows = self._query("transfers", _TRANSFER_COLUMNS, query_filter, limit)
        return [_transfer_from_row(row) for row in rows]

    # What `paycell verify` reads. Whole tables are streamed in keyset-paginated chunks rather
    # than through one open cursor, so that other queries on this connection (verify reads a
    # batch's rows while it walks the journal) can run in between.

    def _stream(self, sql: str, key: int, first_key: Any) -> Iterator[tuple[Any, ...]]:
        """Rows of `sql`, which must select rows whose key (column `key` of the row) is above a
        parameter, ordered by that key, with a LIMIT parameter; fetched in chunks."""
        after = first_key
        while True:
            rows = self._connection.execute(sql, (after, _STREAM_CHUNK)).fetchall()
            yield from rows
            if len(rows) < _STREAM_CHUNK:
                return
            after = rows[-1][key]

    def journal_entries(self) -> Iterator[JournalEntry]:
        for row in self._stream(
            "SELECT batch_number, kind, timestamp_first, timestamp_last, event_count, "
            "previous_hash, hash FROM journal WHERE batch_number > %s "
            "ORDER BY batch_number LIMIT %s",
            0,
            -1,
        ):
            yield JournalEntry(row[0], row[1], row[2], row[3], row[4], bytes(row[5]), bytes(row[6]))

    def batch_records(
        self, entry: JournalEntry
    ) -> tuple[list[Account], list[Transfer], list[Expiry], list[Failure]]:
        return read_batch_records(
            entry,
            self._connection.execute,
            "%s",
            _ACCOUNT_COLUMNS,
            _TRANSFER_COLUMNS,
            _account_from_row,
            _transfer_from_row,
            int,
        )

    def all_accounts(self) -> Iterator[Account]:
        for row in self._stream(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE timestamp > %s "
            "ORDER BY timestamp LIMIT %s",
            12,
            -1,
        ):
            yield _account_from_row(row)

    def all_transfers(self) -> Iterator[Transfer]:
        for row in self._stream(
            f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE timestamp > %s "
            "ORDER BY timestamp LIMIT %s",
            12,
            -1,
        ):
            yield _transfer_from_row(row)

    def all_pending_states(self) -> Iterator[tuple[int, PendingState]]:
        for row in self._stream(
            "SELECT id, status, expires_at FROM pending_transfers WHERE id > %s::numeric "
            "ORDER BY id LIMIT %s",
            0,
            -1,
        ):
            yield row[0], PendingState(row[1], row[2])

    def close(self) -> None:
        self._connection.close()


def _column_type(column: str) -> str:
    """The SQL type a filter value is cast to, so the comparison uses the column's index."""
    return "numeric" if column in ("user_data_128", "user_data_64") else "bigint"


assert PendingStatus.PENDING == 1  # The partial index above hard-codes the pending status.
