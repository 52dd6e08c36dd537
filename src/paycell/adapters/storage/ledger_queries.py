"""The ledger's read queries, written once for both SQL backends.

Both backends have the same tables and columns, so a statement (a time range, the direction
flags, the order, the limit, the pagination bounds) means the same thing on either; writing each
one here once keeps their results and their order the same by construction. What does differ is
described by a `Dialect`:

- the placeholder (`?` or `%s`);
- how an unsigned 128-bit value is bound and read back: SQLite stores one as an INTEGER below
  2**63 and as a 16-byte big-endian BLOB above (an encoding that keeps numeric order, so `=`
  and ranges work on the encoded value); PostgreSQL stores NUMERIC(39,0) and binds a plain int
  with a cast, so that the comparison is with the column's type and can use its index;
- how a row becomes an `Account`, a `Transfer` or an `AccountBalance`;
- how an account's transfers are found: PostgreSQL indexes the transfers' account columns
  (`account_transfers`); SQLite fills statement tables in bulk and scans the few transfers not
  yet in them (`filled_statement` and `statement_tail`, which its store runs in turn).

The functions build a statement's text and parameters from a filter and touch no database;
`SqlLedgerReads` runs them for a store. The hot paths (a write unit's prefetch by id, `save()`)
differ in shape between the backends for speed and stay in each backend's module.
"""

from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from paycell.adapters.storage.journal_rows import read_batch_records
from paycell.core.batch import PendingState
from paycell.core.journal import Expiry, Failure, JournalEntry
from paycell.core.types import (
    Account,
    AccountBalance,
    AccountFilter,
    AccountFilterFlags,
    QueryFilter,
    QueryFilterFlags,
    Transfer,
)

ACCOUNT_COLUMNS: Final = (
    "id, debits_pending, debits_posted, credits_pending, credits_posted, user_data_128, "
    "user_data_64, user_data_32, reserved, ledger, code, flags, timestamp"
)
TRANSFER_COLUMNS: Final = (
    "id, debit_account_id, credit_account_id, amount, pending_id, user_data_128, "
    "user_data_64, user_data_32, timeout, ledger, code, flags, timestamp"
)
JOURNAL_COLUMNS: Final = (
    "batch_number, kind, timestamp_first, timestamp_last, event_count, previous_hash, hash"
)
# A record's field order is its table's column order: rows convert to records positionally,
# and the backends bind whole records as rows.
assert Account._fields == tuple(ACCOUNT_COLUMNS.split(", "))
assert Transfer._fields == tuple(TRANSFER_COLUMNS.split(", "))
_JOINED_TRANSFER_COLUMNS: Final = ", ".join("t." + c for c in TRANSFER_COLUMNS.split(", "))
# The timestamp taken from the statement table, so that its key order is the result's order.
_STATEMENT_TRANSFER_COLUMNS: Final = _JOINED_TRANSFER_COLUMNS.replace(
    "t.timestamp", "s.timestamp AS timestamp"
)

# Ledger timestamps are signed 64-bit in both schemas and never reach 2**63, so a bound at or
# beyond it means "unbounded" and is capped to the largest value either database can bind.
TIMESTAMP_CEILING: Final = (1 << 63) - 1

# Filter fields that hold up to 128 bits (user_data_64 too: it exceeds a signed 64-bit
# integer), so they are bound encoded and compared as the backend's wide type.
_WIDE_FILTER_FIELDS: Final = frozenset({"user_data_128", "user_data_64"})
_ACCOUNT_FILTER_FIELDS: Final = ("user_data_128", "user_data_64", "user_data_32", "code")
_QUERY_FILTER_FIELDS: Final = ("user_data_128", "user_data_64", "user_data_32", "ledger", "code")

# SQL text and its parameters, in placeholder order.
Statement = tuple[str, list[Any]]


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the SQL backends for the statements below."""

    # A parameter compared with a timestamp or bound as a LIMIT.
    placeholder: str
    # A parameter compared with a 128-bit column (ids, user_data_128, user_data_64).
    wide_parameter: str
    # A parameter compared with a narrow filter column (user_data_32, ledger, code).
    narrow_parameter: str
    # A 128-bit value as bound to `wide_parameter`, and a stored one back as an int.
    encode: Callable[[int], Any]
    decode: Callable[[Any], int]
    account_from_row: Callable[[Sequence[Any]], Account]
    transfer_from_row: Callable[[Sequence[Any]], Transfer]
    balance_from_row: Callable[[Sequence[Any]], AccountBalance]
    # Whether each side of a statement (debits, credits) carries its own ORDER BY and LIMIT.
    # PostgreSQL then plans each side as a bounded range scan of its index; SQLite merges the
    # two ordered index scans of a compound SELECT by itself and stops at the outer LIMIT.
    limit_each_side: bool


def timestamp_bounds(timestamp_min: int, timestamp_max: int) -> tuple[int, int]:
    """A filter's inclusive timestamp range as bound: zero as the maximum means none."""
    high = timestamp_max if timestamp_max else TIMESTAMP_CEILING
    return min(timestamp_min, TIMESTAMP_CEILING), min(high, TIMESTAMP_CEILING)


def _field_conditions(
    dialect: Dialect,
    record_filter: AccountFilter | QueryFilter,
    fields: Sequence[str],
    table: str = "",
) -> tuple[list[str], list[Any]]:
    """`column = value` for each of `fields` set in the filter (zero means "any")."""
    conditions: list[str] = []
    values: list[Any] = []
    for field in fields:
        wanted = getattr(record_filter, field)
        if wanted:
            parameter = (
                dialect.wide_parameter if field in _WIDE_FILTER_FIELDS else dialect.narrow_parameter
            )
            conditions.append(f"{table}{field} = {parameter}")
            values.append(dialect.encode(wanted))
    return conditions, values


def _order(reversed_: bool) -> str:
    return "DESC" if reversed_ else "ASC"


def account_transfers(dialect: Dialect, account_filter: AccountFilter, limit: int) -> Statement:
    """An account's transfers (its statement) from indexes on the transfers' account columns:
    one indexed scan per side asked for, merged."""
    p = dialect.placeholder
    low, high = timestamp_bounds(account_filter.timestamp_min, account_filter.timestamp_max)
    conditions, values = _field_conditions(dialect, account_filter, _ACCOUNT_FILTER_FIELDS)
    where = " AND ".join([f"timestamp >= {p}", f"timestamp <= {p}", *conditions])
    values = [low, high, *values]
    order = _order(bool(account_filter.flags & AccountFilterFlags.REVERSED))
    account = dialect.encode(account_filter.account_id)
    selects: list[str] = []
    parameters: list[Any] = []
    for side in _statement_sides(account_filter):
        # An account is never both sides of one transfer, so UNION ALL has no duplicates.
        select = (
            f"SELECT {TRANSFER_COLUMNS} FROM transfers "
            f"WHERE {side}_account_id = {dialect.wide_parameter} AND {where}"
        )
        if dialect.limit_each_side:
            selects.append(f"({select} ORDER BY timestamp {order} LIMIT {p})")
            parameters.extend([account, *values, limit])
        else:
            selects.append(select)
            parameters.extend([account, *values])
    union = " UNION ALL ".join(selects)
    if dialect.limit_each_side:
        union = f"SELECT * FROM ({union}) AS statement"
    return f"{union} ORDER BY timestamp {order} LIMIT {p}", [*parameters, limit]


def _statement_sides(account_filter: AccountFilter) -> list[str]:
    return [
        side
        for side, flag in (
            ("debit", AccountFilterFlags.DEBITS),
            ("credit", AccountFilterFlags.CREDITS),
        )
        if account_filter.flags & flag
    ]


def filled_statement(dialect: Dialect, account_filter: AccountFilter, limit: int) -> Statement:
    """The part of a statement in the bulk-filled statement tables (SQLite; see its module),
    one page: each side's run in every fill that can hold the time range, merged.

    Fills are numbered in order, and every timestamp a fill holds is above the one before's
    watermark and up to its own, so (fill, timestamp) orders rows as timestamp alone does, and
    that is the order of the tables' keys: SQLite reads each fill's run in index order, merges
    the sides and stops at the LIMIT, with no sort. The fills asked for are those from the
    first whose watermark reaches the range's low end to the first whose watermark reaches its
    high end.
    """
    p = dialect.placeholder
    wide = dialect.wide_parameter
    low, high = timestamp_bounds(account_filter.timestamp_min, account_filter.timestamp_max)
    account = dialect.encode(account_filter.account_id)
    conditions, values = _field_conditions(dialect, account_filter, _ACCOUNT_FILTER_FIELDS, "t.")
    fills = (
        f"SELECT fill FROM statement_fills WHERE through >= {p} AND through <= coalesce("
        f"(SELECT min(through) FROM statement_fills WHERE through >= {p}), {TIMESTAMP_CEILING})"
    )
    selects: list[str] = []
    parameters: list[Any] = []
    for side in _statement_sides(account_filter):
        where = " AND ".join(
            [
                f"s.fill IN ({fills})",
                f"s.account_id = {wide}",
                f"s.timestamp >= {p}",
                f"s.timestamp <= {p}",
                *conditions,
            ]
        )
        selects.append(
            f"SELECT {_STATEMENT_TRANSFER_COLUMNS}, s.fill AS fill FROM statement_{side}s s "
            f"JOIN transfers t ON t.timestamp = s.timestamp WHERE {where}"
        )
        parameters.extend([low, high, account, low, high, *values])
    order = _order(bool(account_filter.flags & AccountFilterFlags.REVERSED))
    return (
        f"{' UNION ALL '.join(selects)} ORDER BY fill {order}, timestamp {order} LIMIT {p}",
        [*parameters, limit],
    )


def statement_tail(dialect: Dialect, account_filter: AccountFilter, limit: int) -> Statement:
    """The part of a statement not yet in the statement tables, one page: a scan of the
    transfers after the watermark, which the transfers table holds in timestamp order.

    The lower bound is one expression: given two, SQLite may range-scan on the filter's bound
    and test the watermark row by row, reading the whole table.
    """
    p = dialect.placeholder
    wide = dialect.wide_parameter
    low, high = timestamp_bounds(account_filter.timestamp_min, account_filter.timestamp_max)
    account = dialect.encode(account_filter.account_id)
    conditions, values = _field_conditions(dialect, account_filter, _ACCOUNT_FILTER_FIELDS, "t.")
    sides = _statement_sides(account_filter)
    accounts = " OR ".join(f"t.{side}_account_id = {wide}" for side in sides)
    where = " AND ".join(
        [
            f"t.timestamp >= max({p}, (SELECT statement_indexed_through FROM ledger_meta) + 1)",
            f"t.timestamp <= {p}",
            f"({accounts})",
            *conditions,
        ]
    )
    order = _order(bool(account_filter.flags & AccountFilterFlags.REVERSED))
    return (
        f"SELECT {_JOINED_TRANSFER_COLUMNS} FROM transfers t WHERE {where} "
        f"ORDER BY t.timestamp {order} LIMIT {p}",
        [low, high, *[account] * len(sides), *values, limit],
    )


def account_movements(side: str) -> Statement:
    """(account id, transfer id, amount, flags, pending status) of every transfer on `side`
    ("debit" or "credit"), in account id order, for `paycell verify`. The status is looked up
    only for pending transfers (NULL for others, and for a pending transfer that lost it)."""
    assert side in ("debit", "credit")
    return (
        f"SELECT t.{side}_account_id, t.id, t.amount, t.flags, CASE WHEN t.flags & 2 <> 0 THEN "
        "(SELECT p.status FROM pending_transfers p WHERE p.id = t.id) END "
        f"FROM transfers t ORDER BY t.{side}_account_id",
        [],
    )


def account_balances(dialect: Dialect, account_filter: AccountFilter, limit: int) -> Statement:
    """An account's balances after each of its transfers that the filter selects."""
    p = dialect.placeholder
    low, high = timestamp_bounds(account_filter.timestamp_min, account_filter.timestamp_max)
    conditions = [
        f"h.account_id = {dialect.wide_parameter}",
        f"h.timestamp >= {p}",
        f"h.timestamp <= {p}",
    ]
    values: list[Any] = [dialect.encode(account_filter.account_id), low, high]
    field_conditions, field_values = _field_conditions(
        dialect, account_filter, _ACCOUNT_FILTER_FIELDS, "t."
    )
    conditions += field_conditions
    values += field_values
    sides = []
    if account_filter.flags & AccountFilterFlags.DEBITS:
        sides.append("t.debit_account_id = h.account_id")
    if account_filter.flags & AccountFilterFlags.CREDITS:
        sides.append("t.credit_account_id = h.account_id")
    conditions.append("(" + " OR ".join(sides) + ")")
    order = _order(bool(account_filter.flags & AccountFilterFlags.REVERSED))
    return (
        "SELECT h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted, "
        "h.timestamp FROM account_history h JOIN transfers t ON t.timestamp = h.timestamp "
        f"WHERE {' AND '.join(conditions)} ORDER BY h.timestamp {order} LIMIT {p}",
        [*values, limit],
    )


def query(
    dialect: Dialect, table: str, columns: str, query_filter: QueryFilter, limit: int
) -> Statement:
    """Accounts or transfers by user data, ledger, code and time range."""
    p = dialect.placeholder
    low, high = timestamp_bounds(query_filter.timestamp_min, query_filter.timestamp_max)
    conditions, values = _field_conditions(dialect, query_filter, _QUERY_FILTER_FIELDS)
    where = " AND ".join([f"timestamp >= {p}", f"timestamp <= {p}", *conditions])
    order = _order(bool(query_filter.flags & QueryFilterFlags.REVERSED))
    return (
        f"SELECT {columns} FROM {table} WHERE {where} ORDER BY timestamp {order} LIMIT {p}",
        [low, high, *values, limit],
    )


def pending_state(dialect: Dialect, transfer_id: int) -> Statement:
    return (
        f"SELECT status, expires_at FROM pending_transfers WHERE id = {dialect.wide_parameter}",
        [dialect.encode(transfer_id)],
    )


def has_due_pending_transfers(dialect: Dialect, timestamp: int) -> Statement:
    return (
        "SELECT 1 FROM pending_transfers WHERE status = 1 AND expires_at > 0 "
        f"AND expires_at <= {dialect.placeholder} LIMIT 1",
        [min(timestamp, TIMESTAMP_CEILING)],
    )


def due_pending_transfers(dialect: Dialect, timestamp: int, limit: int) -> Statement:
    """The pending transfers expired at `timestamp`, the earliest expiry first."""
    p = dialect.placeholder
    return (
        f"SELECT {_JOINED_TRANSFER_COLUMNS} "
        "FROM pending_transfers p JOIN transfers t ON t.id = p.id "
        f"WHERE p.status = 1 AND p.expires_at > 0 AND p.expires_at <= {p} "
        f"ORDER BY p.expires_at, t.timestamp LIMIT {p}",
        [min(timestamp, TIMESTAMP_CEILING), limit],
    )


class SqlLedgerReads:
    """A ledger store's reads outside a write unit, for both SQL backends.

    A backend sets `_dialect` and supplies `_rows` (run one statement, all its rows) and
    `_table_rows` (a whole table in key order, for `paycell verify`, streamed however suits the
    backend). Lookups by id are the backend's own: they are the write path's prefetch too.
    """

    _dialect: ClassVar[Dialect]

    def _rows(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def _table_rows(self, table: str, columns: str, key: str) -> Iterator[Sequence[Any]]:
        """Every row of `table` as `columns`, in ascending order of the column `key`."""
        raise NotImplementedError

    def _stream(self, sql: str, parameters: Sequence[Any]) -> Iterator[Sequence[Any]]:
        """The rows of one statement, read as they are iterated, in one snapshot (`verify`
        holds one open), however many there are."""
        raise NotImplementedError

    def has_due_pending_transfers(self, timestamp: int) -> bool:
        return bool(self._rows(*has_due_pending_transfers(self._dialect, timestamp)))

    def pending_state(self, transfer_id: int) -> PendingState | None:
        rows = self._rows(*pending_state(self._dialect, transfer_id))
        return PendingState(rows[0][0], rows[0][1]) if rows else None

    def account_transfers(self, account_filter: AccountFilter, limit: int) -> list[Transfer]:
        rows = self._rows(*account_transfers(self._dialect, account_filter, limit))
        return [self._dialect.transfer_from_row(row) for row in rows]

    def account_balances(self, account_filter: AccountFilter, limit: int) -> list[AccountBalance]:
        rows = self._rows(*account_balances(self._dialect, account_filter, limit))
        return [self._dialect.balance_from_row(row) for row in rows]

    def query_accounts(self, query_filter: QueryFilter, limit: int) -> list[Account]:
        rows = self._rows(*query(self._dialect, "accounts", ACCOUNT_COLUMNS, query_filter, limit))
        return [self._dialect.account_from_row(row) for row in rows]

    def query_transfers(self, query_filter: QueryFilter, limit: int) -> list[Transfer]:
        statement = query(self._dialect, "transfers", TRANSFER_COLUMNS, query_filter, limit)
        return [self._dialect.transfer_from_row(row) for row in self._rows(*statement)]

    # What `paycell verify` reads. These are generators, so nothing is read before the first
    # record is asked for.

    def journal_entries(self) -> Iterator[JournalEntry]:
        for row in self._table_rows("journal", JOURNAL_COLUMNS, "batch_number"):
            yield JournalEntry(row[0], row[1], row[2], row[3], row[4], bytes(row[5]), bytes(row[6]))

    def batch_records(
        self, entry: JournalEntry
    ) -> tuple[list[Account], list[Transfer], list[Expiry], list[Failure]]:
        dialect = self._dialect
        return read_batch_records(
            entry,
            self._rows,
            dialect.placeholder,
            ACCOUNT_COLUMNS,
            TRANSFER_COLUMNS,
            dialect.account_from_row,
            dialect.transfer_from_row,
            dialect.decode,
        )

    def all_accounts(self) -> Iterator[Account]:
        for row in self._table_rows("accounts", ACCOUNT_COLUMNS, "id"):
            yield self._dialect.account_from_row(row)

    def account_movements(
        self, side: str
    ) -> Generator[tuple[int, int, int, int, int | None], None, None]:
        decode = self._dialect.decode
        for account_id, transfer_id, amount, flags, status in self._stream(
            *account_movements(side)
        ):
            yield decode(account_id), decode(transfer_id), decode(amount), flags, status

    def all_transfers(self) -> Iterator[Transfer]:
        for row in self._table_rows("transfers", TRANSFER_COLUMNS, "timestamp"):
            yield self._dialect.transfer_from_row(row)

    def storage_discrepancies(self) -> list[str]:
        # None by default: PostgreSQL's indexes are the database's own and its balances are
        # updated in place. SQLite fills its statement tables and account log itself and
        # overrides this.
        return []

    def all_pending_states(self) -> Iterator[tuple[int, PendingState]]:
        for row in self._table_rows("pending_transfers", "id, status, expires_at", "id"):
            yield self._dialect.decode(row[0]), PendingState(row[1], row[2])
