"""The payment platform's tables on the SQLite ledger backend, and the SQL both backends share.

Platform records live in the ledger's database file. `SqlitePlatformStore.write()` is the
ledger's unit of work (the same connection, the same `BEGIN IMMEDIATE` transaction) with the
platform's tables added, so a command's records and its ledger batch commit together or not at
all.

Mapping: every record type is one table with one column per field, in field order. Enums are
stored as their string values, bools as 0/1 (BOOLEAN on PostgreSQL), times as integer
nanoseconds and amounts as signed 64-bit integers: platform amounts fit in 63 bits, and a
larger value is rejected before it reaches the database. The mapping and every query are
written once here (`?` placeholders) and shared with the PostgreSQL backend, which only
supplies its column types and its way of running a statement.
"""

import sqlite3
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import Enum
from typing import Any, Final, Generic, TypeVar, get_type_hints

from paycell.adapters.storage.sqlite import SqliteStore, _SqliteWriteUnit
from paycell.adapters.storage.sqlite_inserts import insert_rows
from paycell.core.payments.outcomes import Decision
from paycell.core.payments.records import (
    ChannelRequest,
    ChannelRequestKind,
    EscrowState,
    Merchant,
    Order,
    OrderStatus,
    PartyKind,
    Refund,
    User,
    WebhookEvent,
)
from paycell.service.platform_ports import (
    ApiKey,
    IdempotencyKey,
    IdempotencyRecord,
    WebhookDelivery,
)
from paycell.service.webhooks import NO_WEBHOOK_URL, PENDING, SKIPPED

R = TypeVar("R")

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
# Rows per query when a whole table is streamed (`all_orders`).
STREAM_CHUNK: Final = 1_024
# Bound parameters per `IN (...)` list of a batched read: within SQLite's historical limit of
# 999 whatever the build, and a bounded statement on either backend.
IN_PARAMETERS_MAX: Final = 500

DELIVERY_PENDING: Final = PENDING


def _identity(value: Any) -> Any:
    return value


class RecordCodec(Generic[R]):
    """One record type as one table: a column per field, named and ordered as the fields."""

    def __init__(self, table: str, record: Callable[..., R], primary_key: Sequence[str]) -> None:
        hints = get_type_hints(record)
        self.table = table
        self.record = record
        self.primary_key = tuple(primary_key)
        self.columns: tuple[str, ...] = tuple(hints)
        self.types: tuple[type, ...] = tuple(hints.values())
        self.column_list = ", ".join(self.columns)
        self.select = f"SELECT {self.column_list} FROM {table}"
        # An INSERT up to its VALUES, and an upsert's clause after them: SQLite's write unit
        # puts many rows between the two (sqlite_inserts.py).
        self.insert_head = f"INSERT INTO {table} ({self.column_list})"
        self.insert = f"{self.insert_head} VALUES ({', '.join('?' * len(self.columns))})"
        updates = ", ".join(f"{c} = excluded.{c}" for c in self.columns if c not in primary_key)
        self.upsert_clause = f"ON CONFLICT ({', '.join(self.primary_key)}) DO UPDATE SET {updates}"
        self.upsert = f"{self.insert} {self.upsert_clause}"
        self._decoders: tuple[Callable[[Any], Any], ...] = tuple(
            _decoder(kind) for kind in self.types
        )
        self._int_columns = tuple(index for index, kind in enumerate(self.types) if kind is int)
        self._enum_columns = tuple(
            index for index, kind in enumerate(self.types) if issubclass(kind, Enum)
        )

    def encode(self, record: R) -> list[Any]:
        values = [getattr(record, column) for column in self.columns]
        for index in self._int_columns:
            value = values[index]
            assert _INT64_MIN <= value <= _INT64_MAX, (
                f"{self.table}.{self.columns[index]} = {value} does not fit in a signed "
                "64-bit column: platform amounts, ids and times must be below 2**63"
            )
        for index in self._enum_columns:
            values[index] = values[index].value
        return values

    def decode(self, row: Sequence[Any]) -> R:
        return self.record(
            *[decode(value) for decode, value in zip(self._decoders, row, strict=True)]
        )

    def column_definitions(self, sql_types: Mapping[type, str]) -> str:
        return ",\n    ".join(
            f"{column} {_sql_type(kind, sql_types)} NOT NULL"
            for column, kind in zip(self.columns, self.types, strict=True)
        )


def _decoder(kind: type) -> Callable[[Any], Any]:
    if kind is bool:
        return bool
    if issubclass(kind, Enum):
        return kind
    assert kind in (int, str), f"no column mapping for {kind}"
    return _identity


def _sql_type(kind: type, sql_types: Mapping[type, str]) -> str:
    return sql_types[str] if issubclass(kind, Enum) else sql_types[kind]


USERS: Final = RecordCodec("users", User, ["id"])
MERCHANTS: Final = RecordCodec("merchants", Merchant, ["id"])
ORDERS: Final = RecordCodec("orders", Order, ["id"])
REFUNDS: Final = RecordCodec("refunds", Refund, ["id"])
CHANNEL_REQUESTS: Final = RecordCodec("channel_requests", ChannelRequest, ["id"])
WEBHOOK_EVENTS: Final = RecordCodec("webhook_events", WebhookEvent, ["id"])
WEBHOOK_DELIVERIES: Final = RecordCodec("webhook_deliveries", WebhookDelivery, ["event_id"])
API_KEYS: Final = RecordCodec("api_keys", ApiKey, ["key_hash"])
IDEMPOTENCY_RECORDS: Final = RecordCodec(
    "idempotency_records", IdempotencyRecord, ["party_kind", "party_id", "key"]
)

# Constraints beyond the primary key, per table.
_UNIQUES: Final[Mapping[str, Sequence[str]]] = {
    "orders": ["UNIQUE (merchant_id, out_trade_no)"],
    "refunds": ["UNIQUE (order_id, out_request_no)"],
    "channel_requests": ["UNIQUE (party_kind, party_id, kind, request_no)"],
}

_INDEXES: Final = """
CREATE INDEX IF NOT EXISTS orders_unpaid_due ON orders (status, expires_at);
CREATE INDEX IF NOT EXISTS orders_escrow_due ON orders (escrow_state, auto_confirm_at);
CREATE INDEX IF NOT EXISTS orders_to_finish ON orders (status, refundable_until);
CREATE INDEX IF NOT EXISTS orders_of_merchant ON orders (merchant_id, id);
CREATE INDEX IF NOT EXISTS refunds_of_order ON refunds (order_id, id);
CREATE INDEX IF NOT EXISTS channel_requests_of_party
    ON channel_requests (party_kind, party_id, id);
CREATE UNIQUE INDEX IF NOT EXISTS channel_requests_by_reference
    ON channel_requests (channel_reference) WHERE channel_reference <> '';
CREATE INDEX IF NOT EXISTS webhook_events_of_merchant ON webhook_events (merchant_id, id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at)
"""


def platform_schema(sql_types: Mapping[type, str]) -> list[str]:
    """The platform's DDL statements, each idempotent (IF NOT EXISTS), for a backend whose
    column types for int, str and bool are `sql_types`."""
    statements = []
    for codec in (
        USERS,
        MERCHANTS,
        ORDERS,
        REFUNDS,
        CHANNEL_REQUESTS,
        WEBHOOK_EVENTS,
        WEBHOOK_DELIVERIES,
        API_KEYS,
        IDEMPOTENCY_RECORDS,
    ):
        constraints = [f"PRIMARY KEY ({', '.join(codec.primary_key)})"]
        constraints.extend(_UNIQUES.get(codec.table, []))
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {codec.table} (\n    "
            f"{codec.column_definitions(sql_types)},\n    " + ",\n    ".join(constraints) + "\n)"
        )
    statements.append(
        "CREATE TABLE IF NOT EXISTS sequences (\n"
        f"    name {sql_types[str]} PRIMARY KEY,\n"
        f"    last_id {sql_types[int]} NOT NULL\n)"
    )
    statements.extend(s.strip() for s in _INDEXES.split(";\n") if s.strip())
    return statements


def _chunks(values: Sequence[R], size: int) -> Iterator[Sequence[R]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def idempotency_records_query(count: int) -> str:
    """The idempotency records for `count` (party kind, party id, key) parameter triples.

    A join with the wanted keys, not `(party_kind, party_id, key) IN (VALUES ...)`: SQLite
    answers a row-value IN list by scanning the whole table, which made every payment with an
    Idempotency-Key dearer as records piled up (CPU per payment doubled by 60,000). Both
    databases name the columns of a VALUES list column1, column2, column3.
    """
    columns = ", ".join(f"r.{column}" for column in IDEMPOTENCY_RECORDS.columns)
    return (
        f"SELECT {columns} FROM (VALUES {_placeholders(count, 3)}) AS wanted "
        "JOIN idempotency_records r ON r.party_kind = wanted.column1 "
        "AND r.party_id = wanted.column2 AND r.key = wanted.column3"
    )


def _placeholders(count: int, width: int = 1) -> str:
    """`?, ?, ?` for a list of `count` values, or `(?, ?), (?, ?)` for `count` row values of
    `width` columns each."""
    if width == 1:
        return ", ".join("?" * count)
    row = f"({', '.join('?' * width)})"
    return ", ".join([row] * count)


def _check_limit(limit: int) -> int:
    # A negative LIMIT is "no limit" in SQLite: nothing reads without bound.
    assert limit >= 0, f"limit must be at least 0, not {limit}"
    return limit


class PlatformReads:
    """The platform's reads, for a write unit and a store alike. A backend supplies `_fetch`."""

    def _fetch(self, sql: str, parameters: Sequence[Any]) -> list[Sequence[Any]]:
        raise NotImplementedError

    def _one(self, codec: RecordCodec[R], where: str, parameters: Sequence[Any]) -> R | None:
        rows = self._fetch(f"{codec.select} WHERE {where} LIMIT 1", parameters)
        return codec.decode(rows[0]) if rows else None

    def _many(
        self,
        codec: RecordCodec[R],
        where: str,
        parameters: Sequence[Any],
        order: str,
        limit: int | None,
    ) -> list[R]:
        sql = f"{codec.select} WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += " LIMIT ?"
            parameters = [*parameters, _check_limit(limit)]
        return [codec.decode(row) for row in self._fetch(sql, parameters)]

    def _in(
        self, codec: RecordCodec[R], where: str, prefix: Sequence[Any], values: Collection[Any]
    ) -> list[R]:
        """The records with `where` (ending in `IN`) matching any of `values`, after the
        `prefix` parameters; one query per `IN_PARAMETERS_MAX` values, no row twice."""
        distinct = list(dict.fromkeys(values))
        found: list[R] = []
        for chunk in _chunks(distinct, IN_PARAMETERS_MAX):
            rows = self._fetch(
                f"{codec.select} WHERE {where} ({_placeholders(len(chunk))})", [*prefix, *chunk]
            )
            found.extend(codec.decode(row) for row in rows)
        return found

    def users_by_id(self, ids: Collection[int]) -> dict[int, User]:
        return {user.id: user for user in self._in(USERS, "id IN", [], ids)}

    def merchants_by_id(self, ids: Collection[int]) -> dict[int, Merchant]:
        return {merchant.id: merchant for merchant in self._in(MERCHANTS, "id IN", [], ids)}

    def orders_by_id(self, ids: Collection[int]) -> dict[int, Order]:
        return {order.id: order for order in self._in(ORDERS, "id IN", [], ids)}

    def orders_by_out_trade_no(
        self, merchant_id: int, out_trade_nos: Collection[str]
    ) -> dict[str, Order]:
        return {
            order.out_trade_no: order
            for order in self._in(
                ORDERS, "merchant_id = ? AND out_trade_no IN", [merchant_id], out_trade_nos
            )
        }

    def idempotency_records(
        self, keys: Collection[IdempotencyKey]
    ) -> dict[IdempotencyKey, IdempotencyRecord]:
        """The records kept for any of `keys` (party kind, party id, key), by key."""
        distinct = list(dict.fromkeys(keys))
        found: dict[IdempotencyKey, IdempotencyRecord] = {}
        for chunk in _chunks(distinct, IN_PARAMETERS_MAX // 3):
            rows = self._fetch(
                idempotency_records_query(len(chunk)),
                [value for kind, party, key in chunk for value in (kind.value, party, key)],
            )
            for row in rows:
                record = IDEMPOTENCY_RECORDS.decode(row)
                found[(record.party_kind, record.party_id, record.key)] = record
        return found

    def user(self, user_id: int) -> User | None:
        return self._one(USERS, "id = ?", [user_id])

    def merchant(self, merchant_id: int) -> Merchant | None:
        return self._one(MERCHANTS, "id = ?", [merchant_id])

    def order(self, order_id: int) -> Order | None:
        return self._one(ORDERS, "id = ?", [order_id])

    def order_by_out_trade_no(self, merchant_id: int, out_trade_no: str) -> Order | None:
        return self._one(
            ORDERS, "merchant_id = ? AND out_trade_no = ?", [merchant_id, out_trade_no]
        )

    def orders_of_merchant(self, merchant_id: int, after_id: int, limit: int) -> list[Order]:
        return self._many(
            ORDERS, "merchant_id = ? AND id > ?", [merchant_id, after_id], "id", limit
        )

    def refunds_of_order(self, order_id: int) -> list[Refund]:
        # Unbounded by the port; an order has at most one refund per minor unit of its amount.
        return self._many(REFUNDS, "order_id = ?", [order_id], "id", None)

    def channel_request(self, request_id: int) -> ChannelRequest | None:
        return self._one(CHANNEL_REQUESTS, "id = ?", [request_id])

    def channel_request_by_request_no(
        self, party_kind: PartyKind, party_id: int, kind: ChannelRequestKind, request_no: str
    ) -> ChannelRequest | None:
        return self._one(
            CHANNEL_REQUESTS,
            "party_kind = ? AND party_id = ? AND kind = ? AND request_no = ?",
            [party_kind.value, party_id, kind.value, request_no],
        )

    def channel_request_by_reference(self, channel_reference: str) -> ChannelRequest | None:
        if not channel_reference:
            return None
        return self._one(
            CHANNEL_REQUESTS,
            "channel_reference = ? AND channel_reference <> ''",
            [channel_reference],
        )

    def channel_requests_of_party(
        self, party_kind: PartyKind, party_id: int, after_id: int, limit: int
    ) -> list[ChannelRequest]:
        return self._many(
            CHANNEL_REQUESTS,
            "party_kind = ? AND party_id = ? AND id > ?",
            [party_kind.value, party_id, after_id],
            "id",
            limit,
        )

    def party_for_api_key(self, key_hash: str) -> tuple[PartyKind, int] | None:
        api_key = self._one(API_KEYS, "key_hash = ?", [key_hash])
        return (api_key.party_kind, api_key.party_id) if api_key else None

    def idempotency_record(
        self, party_kind: PartyKind, party_id: int, key: str
    ) -> IdempotencyRecord | None:
        return self._one(
            IDEMPOTENCY_RECORDS,
            "party_kind = ? AND party_id = ? AND key = ?",
            [party_kind.value, party_id, key],
        )

    def webhook_event(self, event_id: int) -> WebhookEvent | None:
        return self._one(WEBHOOK_EVENTS, "id = ?", [event_id])

    def webhook_events_by_id(self, ids: Collection[int]) -> dict[int, WebhookEvent]:
        return {event.id: event for event in self._in(WEBHOOK_EVENTS, "id IN", [], ids)}

    def webhook_events_of_merchant(
        self, merchant_id: int, after_id: int, limit: int
    ) -> list[WebhookEvent]:
        return self._many(
            WEBHOOK_EVENTS, "merchant_id = ? AND id > ?", [merchant_id, after_id], "id", limit
        )

    def webhook_delivery(self, event_id: int) -> WebhookDelivery | None:
        return self._one(WEBHOOK_DELIVERIES, "event_id = ?", [event_id])

    def all_orders(self) -> Iterator[Order]:
        """Every order by id, fetched in chunks so other queries can run in between."""
        after = 0
        while True:
            page = self._many(ORDERS, "id > ?", [after], "id", STREAM_CHUNK)
            yield from page
            if len(page) < STREAM_CHUNK:
                return
            after = page[-1].id


class PlatformWrites(PlatformReads):
    """What only a write unit does: sequences, the due-queries, and writes. A backend supplies
    `_fetch` and `_execute_many`, both inside the unit's transaction."""

    def _execute_many(self, sql: str, rows: list[list[Any]]) -> None:
        raise NotImplementedError

    def next_id(self, sequence: str) -> int:
        return self.next_ids(sequence, 1)[0]

    def next_ids(self, sequence: str, count: int) -> range:
        """The next `count` numbers of a sequence, reserved in one statement."""
        assert sequence, "a sequence has a name"
        assert count >= 0, f"cannot reserve {count} ids"
        if count == 0:
            return range(0)
        rows = self._fetch(
            "INSERT INTO sequences (name, last_id) VALUES (?, ?) ON CONFLICT (name) "
            "DO UPDATE SET last_id = sequences.last_id + excluded.last_id RETURNING last_id",
            [sequence, count],
        )
        last = int(rows[0][0])
        return range(last - count + 1, last + 1)

    def unpaid_orders_due(self, now: int, limit: int) -> list[Order]:
        return self._many(
            ORDERS,
            "status = ? AND expires_at <= ?",
            [OrderStatus.WAIT_BUYER_PAY.value, now],
            "expires_at, id",
            limit,
        )

    def escrow_releases_due(self, now: int, limit: int) -> list[Order]:
        return self._many(
            ORDERS,
            "escrow_state = ? AND auto_confirm_at > 0 AND auto_confirm_at <= ?",
            [EscrowState.HELD.value, now],
            "auto_confirm_at, id",
            limit,
        )

    def trades_to_finish(self, now: int, limit: int) -> list[Order]:
        return self._many(
            ORDERS,
            "status = ? AND escrow_state <> ? AND refundable_until > 0 AND refundable_until <= ?",
            [OrderStatus.TRADE_SUCCESS.value, EscrowState.HELD.value, now],
            "refundable_until, id",
            limit,
        )

    def merchants_page(self, after_id: int, limit: int) -> list[Merchant]:
        return self._many(MERCHANTS, "id > ?", [after_id], "id", limit)

    def webhook_deliveries_due(self, now: int, limit: int) -> list[WebhookDelivery]:
        return self._many(
            WEBHOOK_DELIVERIES,
            "status = ? AND next_attempt_at <= ?",
            [DELIVERY_PENDING, now],
            "next_attempt_at, event_id",
            limit,
        )

    def _write(self, sql: str, codec: RecordCodec[R], records: Sequence[R]) -> None:
        if records:
            self._execute_many(sql, [codec.encode(record) for record in records])

    def save_records(self, decision: Decision) -> None:
        """The decision's records; its transfers are the ledger's (`save` of its batch)."""
        self._write(USERS.upsert, USERS, decision.users)
        self._write(MERCHANTS.upsert, MERCHANTS, decision.merchants)
        self._write(ORDERS.upsert, ORDERS, decision.orders)
        self._write(REFUNDS.insert, REFUNDS, decision.refunds)
        self._write(CHANNEL_REQUESTS.upsert, CHANNEL_REQUESTS, decision.channel_requests)
        self._write(WEBHOOK_EVENTS.insert, WEBHOOK_EVENTS, decision.events)
        if decision.events:
            self._write(
                WEBHOOK_DELIVERIES.insert, WEBHOOK_DELIVERIES, self._deliveries(decision.events)
            )

    def _deliveries(self, events: Sequence[WebhookEvent]) -> list[WebhookDelivery]:
        """Each event's delivery: due now, or skipped at once for a merchant without a
        webhook URL, which saves the dispatcher a pass over it (and a write) per event."""
        merchants = self.merchants_by_id({event.merchant_id for event in events})
        deliveries = []
        for event in events:
            merchant = merchants.get(event.merchant_id)
            if merchant is not None and merchant.webhook_url:
                status, due, error = DELIVERY_PENDING, event.created_at, ""
            else:
                status, due, error = SKIPPED, 0, NO_WEBHOOK_URL
            deliveries.append(
                WebhookDelivery(
                    event_id=event.id,
                    merchant_id=event.merchant_id,
                    attempts=0,
                    next_attempt_at=due,
                    status=status,
                    last_error=error,
                    delivered_at=0,
                )
            )
        return deliveries

    def save_api_key(self, api_key: ApiKey) -> None:
        self._write(API_KEYS.insert, API_KEYS, [api_key])

    def save_idempotency_record(self, record: IdempotencyRecord) -> None:
        self._write(IDEMPOTENCY_RECORDS.insert, IDEMPOTENCY_RECORDS, [record])

    def save_idempotency_records(self, records: Sequence[IdempotencyRecord]) -> None:
        self._write(IDEMPOTENCY_RECORDS.insert, IDEMPOTENCY_RECORDS, records)

    def save_webhook_delivery(self, delivery: WebhookDelivery) -> None:
        self._write(WEBHOOK_DELIVERIES.upsert, WEBHOOK_DELIVERIES, [delivery])

    def save_webhook_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> None:
        self._write(WEBHOOK_DELIVERIES.upsert, WEBHOOK_DELIVERIES, deliveries)


# --------------------------------------------------------------------------------- SQLite

_SQLITE_TYPES: Final[Mapping[type, str]] = {int: "INTEGER", str: "TEXT", bool: "INTEGER"}


class _SqlitePlatformSql:
    _connection: sqlite3.Connection

    def _fetch(self, sql: str, parameters: Sequence[Any]) -> list[Sequence[Any]]:
        return self._connection.execute(sql, parameters).fetchall()

    def _execute_many(self, sql: str, rows: list[list[Any]]) -> None:
        self._connection.executemany(sql, rows)


class _SqlitePlatformWriteUnit(_SqlitePlatformSql, PlatformWrites, _SqliteWriteUnit):
    """The ledger's write unit with the platform's tables: one connection, one transaction."""

    def _write(self, sql: str, codec: RecordCodec[R], records: Sequence[R]) -> None:
        # Many rows a statement (sqlite_inserts.py): a bulk payment writes an order, an event
        # and a delivery for each of up to 1,000 payments.
        if not records:
            return
        if sql == codec.insert:
            clause = ""
        elif sql == codec.upsert:
            clause = codec.upsert_clause
        else:
            raise ValueError(f"not {codec.table}'s insert or upsert: {sql}")
        rows = [codec.encode(record) for record in records]
        insert_rows(self._connection, codec.insert_head, len(codec.columns), rows, clause)


class SqlitePlatformStore(_SqlitePlatformSql, PlatformReads, SqliteStore):
    """A ledger and its payment platform in one SQLite file."""

    def _create_schema(self) -> None:
        super()._create_schema()
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in platform_schema(_SQLITE_TYPES):
                connection.execute(statement)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    _write_unit_type = _SqlitePlatformWriteUnit

    @contextmanager
    def write(self) -> Iterator[_SqlitePlatformWriteUnit]:
        with super().write() as unit:
            assert isinstance(unit, _SqlitePlatformWriteUnit)
            yield unit
