"""The gateway's own tables, on the platform's database through a connection of its own.

The platform's orders, refunds and ledger are never touched here: this store keeps what
only the Alipay adapter needs: the platform's RSA2 key pair, registered apps (app_id ->
merchant and the app's public key), the notify/return URLs of each trade, buyers' one-time
payment codes, bill download tokens, and the outbox of asynchronous notifications.

SQLite (a file path, `sqlite:///path` or `:memory:`) or PostgreSQL (`postgresql://...`);
statements are written with `?` placeholders and translated for psycopg. Every statement
runs in autocommit mode, or inside `transaction()`.
"""

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, cast

from paycell.adapters.storage.factory import is_postgres_url

BUSY_TIMEOUT_MILLISECONDS: Final = 10_000
# Values per `IN (...)` list: well under SQLite's 32,766 variables and PostgreSQL's 65,535.
_IN_LIST_CHUNK: Final = 500

PENDING: Final = "pending"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS alipay_platform_key (
        id INTEGER PRIMARY KEY,
        private_key TEXT NOT NULL,
        public_key TEXT NOT NULL,
        created_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alipay_apps (
        app_id TEXT PRIMARY KEY,
        merchant_id BIGINT NOT NULL,
        public_key TEXT NOT NULL,
        created_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alipay_trades (
        order_id BIGINT PRIMARY KEY,
        app_id TEXT NOT NULL,
        method TEXT NOT NULL,
        notify_url TEXT NOT NULL,
        return_url TEXT NOT NULL,
        notified_status TEXT NOT NULL,
        notified_refunds INTEGER NOT NULL,
        created_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alipay_payment_codes (
        code TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT NOT NULL,
        order_id BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alipay_bills (
        token TEXT PRIMARY KEY,
        merchant_id BIGINT NOT NULL,
        bill_type TEXT NOT NULL,
        bill_date TEXT NOT NULL,
        expires_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alipay_notifications (
        notify_id TEXT PRIMARY KEY,
        order_id BIGINT NOT NULL,
        event_key TEXT NOT NULL,
        notify_url TEXT NOT NULL,
        params TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        last_error TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE (order_id, event_key))""",
    """CREATE INDEX IF NOT EXISTS alipay_notifications_due
        ON alipay_notifications (status, next_attempt_at)""",
)


@dataclass(frozen=True, slots=True)
class App:
    app_id: str
    merchant_id: int
    public_key: str
    created_at: int


@dataclass(frozen=True, slots=True)
class Trade:
    order_id: int
    app_id: str
    method: str
    notify_url: str
    return_url: str
    notified_status: str
    notified_refunds: int
    created_at: int


@dataclass(frozen=True, slots=True)
class PaymentCode:
    code: str
    user_id: int
    expires_at: int
    used_at: int
    order_id: int


@dataclass(frozen=True, slots=True)
class Bill:
    token: str
    merchant_id: int
    bill_type: str
    bill_date: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class Notification:
    notify_id: str
    order_id: int
    event_key: str
    notify_url: str
    params: dict[str, str]
    status: str
    attempts: int
    next_attempt_at: int
    last_error: str
    created_at: int


_NOTIFICATION_COLUMNS: Final = (
    "notify_id, order_id, event_key, notify_url, params, status, attempts, next_attempt_at, "
    "last_error, created_at"
)


def _notification(row: Sequence[Any]) -> Notification:
    return Notification(
        row[0],
        int(row[1]),
        row[2],
        row[3],
        cast(dict[str, str], json.loads(row[4])),
        row[5],
        int(row[6]),
        int(row[7]),
        row[8],
        int(row[9]),
    )


class GatewayStore:
    """One connection, used by one thread at a time (an internal lock makes sure)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.RLock()
        self._postgres = is_postgres_url(url)
        self._in_transaction = False
        if self._postgres:
            import psycopg

            self._pg = psycopg.connect(url, autocommit=True)
        else:
            path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
            self._sqlite = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._sqlite.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MILLISECONDS}")
        with self.transaction():
            for statement in _SCHEMA:
                self._execute(statement)

    # ------------------------------------------------------------------------- plumbing

    def _execute(self, sql: str, params: Sequence[object] = ()) -> tuple[list[Any], int]:
        with self._lock:
            if self._postgres:
                cursor = self._pg.execute(sql.replace("?", "%s"), tuple(params))
                rows = list(cursor.fetchall()) if cursor.description else []
                return rows, cursor.rowcount
            sqlite_cursor = self._sqlite.execute(sql, tuple(params))
            return list(sqlite_cursor.fetchall()), sqlite_cursor.rowcount

    def _execute_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if not rows:
            return
        with self._lock:
            if self._postgres:
                with self._pg.cursor() as cursor:
                    cursor.executemany(sql.replace("?", "%s"), rows)
            else:
                self._sqlite.executemany(sql, rows)

    def _execute_chunked(
        self,
        sql_with_list: str,
        values: Sequence[object],
        before: Sequence[object] = (),
        after: Sequence[object] = (),
    ) -> list[Any]:
        """The rows of `sql_with_list` run for `values` in chunks: its `{list}` becomes each
        chunk's placeholders, bound between the parameters `before` and `after` it."""
        rows: list[Any] = []
        for start in range(0, len(values), _IN_LIST_CHUNK):
            chunk = values[start : start + _IN_LIST_CHUNK]
            found, _ = self._execute(
                sql_with_list.format(list=", ".join("?" * len(chunk))), (*before, *chunk, *after)
            )
            rows.extend(found)
        return rows

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Statements inside run in one transaction (nested calls join the outer one)."""
        with self._lock:
            if self._in_transaction:
                yield
                return
            self._execute("BEGIN" if self._postgres else "BEGIN IMMEDIATE")
            self._in_transaction = True
            try:
                yield
            except BaseException:
                self._in_transaction = False
                self._execute("ROLLBACK")
                raise
            self._in_transaction = False
            self._execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._postgres:
                self._pg.close()
            else:
                self._sqlite.close()

    # ---------------------------------------------------------------------- platform key

    def platform_key(self) -> tuple[str, str] | None:
        rows, _ = self._execute("SELECT private_key, public_key FROM alipay_platform_key")
        return (rows[0][0], rows[0][1]) if rows else None

    def save_platform_key(self, private_key: str, public_key: str, now: int) -> tuple[str, str]:
        """Keep the first key pair ever saved (another process may have won the race)."""
        self._execute(
            "INSERT INTO alipay_platform_key (id, private_key, public_key, created_at) "
            "VALUES (1, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (private_key, public_key, now),
        )
        saved = self.platform_key()
        assert saved is not None
        return saved

    # ----------------------------------------------------------------------------- apps

    def add_app(self, app: App) -> None:
        self._execute(
            "INSERT INTO alipay_apps (app_id, merchant_id, public_key, created_at) "
            "VALUES (?, ?, ?, ?)",
            (app.app_id, app.merchant_id, app.public_key, app.created_at),
        )

    def app(self, app_id: str) -> App | None:
        rows, _ = self._execute(
            "SELECT app_id, merchant_id, public_key, created_at FROM alipay_apps WHERE app_id = ?",
            (app_id,),
        )
        return App(rows[0][0], int(rows[0][1]), rows[0][2], int(rows[0][3])) if rows else None

    # --------------------------------------------------------------------------- trades

    def add_trade(self, trade: Trade) -> Trade:
        """Remember a trade's URLs; the first registration of an order wins."""
        self._execute(
            "INSERT INTO alipay_trades (order_id, app_id, method, notify_url, return_url, "
            "notified_status, notified_refunds, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (order_id) DO NOTHING",
            (
                trade.order_id,
                trade.app_id,
                trade.method,
                trade.notify_url,
                trade.return_url,
                trade.notified_status,
                trade.notified_refunds,
                trade.created_at,
            ),
        )
        found = self.trade(trade.order_id)
        assert found is not None
        return found

    _TRADE_COLUMNS: Final = (
        "order_id, app_id, method, notify_url, return_url, notified_status, notified_refunds, "
        "created_at"
    )

    def trade(self, order_id: int) -> Trade | None:
        rows, _ = self._execute(
            f"SELECT {self._TRADE_COLUMNS} FROM alipay_trades WHERE order_id = ?", (order_id,)
        )
        return self._trade(rows[0]) if rows else None

    @staticmethod
    def _trade(row: Sequence[Any]) -> Trade:
        return Trade(int(row[0]), row[1], row[2], row[3], row[4], row[5], int(row[6]), int(row[7]))

    def trades_to_sync(self, after_order_id: int, limit: int) -> list[Trade]:
        """Trades with a notify_url whose status may still change, by order id."""
        rows, _ = self._execute(
            f"SELECT {self._TRADE_COLUMNS} FROM alipay_trades WHERE notify_url <> '' "
            "AND notified_status NOT IN ('TRADE_CLOSED', 'TRADE_FINISHED') AND order_id > ? "
            "ORDER BY order_id LIMIT ?",
            (after_order_id, limit),
        )
        return [self._trade(row) for row in rows]

    def mark_synced(self, order_id: int, status: str, refunds: int) -> None:
        self._execute(
            "UPDATE alipay_trades SET notified_status = ?, notified_refunds = ? WHERE order_id = ?",
            (status, refunds, order_id),
        )

    # -------------------------------------------------------------------- payment codes

    def add_payment_code(self, code: PaymentCode) -> None:
        self._execute(
            "INSERT INTO alipay_payment_codes (code, user_id, expires_at, used_at, order_id) "
            "VALUES (?, ?, ?, ?, ?)",
            (code.code, code.user_id, code.expires_at, code.used_at, code.order_id),
        )

    def payment_code(self, code: str) -> PaymentCode | None:
        return self.payment_codes([code]).get(code)

    def payment_codes(self, codes: Sequence[str]) -> dict[str, PaymentCode]:
        """The known codes among `codes`, by code (a bulk request looks its codes up at once)."""
        rows = self._execute_chunked(
            "SELECT code, user_id, expires_at, used_at, order_id FROM alipay_payment_codes "
            "WHERE code IN ({list})",
            codes,
        )
        return {
            row[0]: PaymentCode(row[0], int(row[1]), int(row[2]), int(row[3]), int(row[4]))
            for row in rows
        }

    def use_payment_code(self, code: str, now: int) -> bool:
        """Take an unused, unexpired code; False if it was taken or has expired."""
        return code in self.use_payment_codes([code], now)

    def use_payment_codes(self, codes: Sequence[str], now: int) -> set[str]:
        """Take each unused, unexpired code among `codes`; the set of codes taken. A code
        another transaction took first (PostgreSQL re-checks it after that one's commit) is
        not in the set."""
        rows = self._execute_chunked(
            "UPDATE alipay_payment_codes SET used_at = ? "
            "WHERE code IN ({list}) AND used_at = 0 AND expires_at > ? RETURNING code",
            # In one order everywhere: PostgreSQL holds each chunk's row locks to the end of
            # the transaction, and two requests taking shared codes chunk by chunk in
            # different orders could deadlock.
            sorted(set(codes)),
            before=(now,),
            after=(now,),
        )
        return {row[0] for row in rows}

    def release_payment_code(self, code: str) -> None:
        """Give back a code whose payment was refused (a rejected call changes nothing)."""
        self.release_payment_codes([code])

    def release_payment_codes(self, codes: Sequence[str]) -> None:
        self._execute_many(
            "UPDATE alipay_payment_codes SET used_at = 0 WHERE code = ?", [(c,) for c in codes]
        )

    def payment_code_paid(self, code: str, order_id: int) -> None:
        self.payment_codes_paid([(code, order_id)])

    def payment_codes_paid(self, paid: Sequence[tuple[str, int]]) -> None:
        """Record which order each (code, order id) paid."""
        self._execute_many(
            "UPDATE alipay_payment_codes SET order_id = ? WHERE code = ?",
            [(order_id, code) for code, order_id in paid],
        )

    # ---------------------------------------------------------------------------- bills

    def add_bill(self, bill: Bill) -> None:
        self._execute(
            "INSERT INTO alipay_bills (token, merchant_id, bill_type, bill_date, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (bill.token, bill.merchant_id, bill.bill_type, bill.bill_date, bill.expires_at),
        )

    def bill(self, token: str) -> Bill | None:
        rows, _ = self._execute(
            "SELECT token, merchant_id, bill_type, bill_date, expires_at FROM alipay_bills "
            "WHERE token = ?",
            (token,),
        )
        if not rows:
            return None
        row = rows[0]
        return Bill(row[0], int(row[1]), row[2], row[3], int(row[4]))

    # -------------------------------------------------------------------- notifications

    def add_notification(self, notification: Notification) -> bool:
        """Queue a notification; False when the same event of the order is already queued."""
        _, count = self._execute(
            f"INSERT INTO alipay_notifications ({_NOTIFICATION_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id, event_key) DO NOTHING",
            (
                notification.notify_id,
                notification.order_id,
                notification.event_key,
                notification.notify_url,
                json.dumps(notification.params, sort_keys=True, ensure_ascii=False),
                notification.status,
                notification.attempts,
                notification.next_attempt_at,
                notification.last_error,
                notification.created_at,
            ),
        )
        return count == 1

    def notification(self, notify_id: str) -> Notification | None:
        rows, _ = self._execute(
            f"SELECT {_NOTIFICATION_COLUMNS} FROM alipay_notifications WHERE notify_id = ?",
            (notify_id,),
        )
        return _notification(rows[0]) if rows else None

    def notifications_of_order(self, order_id: int) -> list[Notification]:
        rows, _ = self._execute(
            f"SELECT {_NOTIFICATION_COLUMNS} FROM alipay_notifications WHERE order_id = ? "
            "ORDER BY created_at, notify_id",
            (order_id,),
        )
        return [_notification(row) for row in rows]

    def due_notifications(self, now: int, limit: int) -> list[Notification]:
        rows, _ = self._execute(
            f"SELECT {_NOTIFICATION_COLUMNS} FROM alipay_notifications "
            "WHERE status = ? AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
            (PENDING, now, limit),
        )
        return [_notification(row) for row in rows]

    def claim_notification(self, notification: Notification, lease_until: int) -> bool:
        """Count an attempt and lease it, unless another process claimed it first."""
        _, count = self._execute(
            "UPDATE alipay_notifications SET attempts = attempts + 1, next_attempt_at = ? "
            "WHERE notify_id = ? AND status = ? AND attempts = ?",
            (lease_until, notification.notify_id, PENDING, notification.attempts),
        )
        return count == 1

    def record_attempt(
        self, notify_id: str, attempt: int, status: str, next_attempt_at: int, error: str
    ) -> None:
        self._execute(
            "UPDATE alipay_notifications SET status = ?, next_attempt_at = ?, last_error = ? "
            "WHERE notify_id = ? AND attempts = ?",
            (status, next_attempt_at, error, notify_id, attempt),
        )
