"""The payment platform's tables on the PostgreSQL ledger backend.

The same tables, mapping and queries as the SQLite backend (`sqlite_platform`), with BIGINT,
TEXT and BOOLEAN columns. `PostgresPlatformStore.write()` is the ledger's unit of work (the
same connection, the same transaction, begun by locking the ledger's writer row) with the
platform's tables added. The platform schema is created once per database, idempotently, under
the same advisory lock as the ledger's.
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

import psycopg

from paycell.adapters.storage.postgres import (
    _SCHEMA_LOCK_KEY,
    PostgresStore,
    _PostgresWriteUnit,
)
from paycell.adapters.storage.sqlite_platform import PlatformReads, PlatformWrites, platform_schema

_POSTGRES_TYPES: Final[Mapping[type, str]] = {int: "BIGINT", str: "TEXT", bool: "BOOLEAN"}


def _postgres_sql(sql: str) -> str:
    # The shared SQL uses `?` placeholders and contains no literal `?` or `%`.
    return sql.replace("?", "%s")


class _PostgresPlatformSql:
    _connection: psycopg.Connection[Any]

    def _fetch(self, sql: str, parameters: Sequence[Any]) -> list[Sequence[Any]]:
        return self._connection.execute(_postgres_sql(sql), parameters).fetchall()

    def _execute_many(self, sql: str, rows: list[list[Any]]) -> None:
        with self._connection.cursor() as cursor:
            cursor.executemany(_postgres_sql(sql), rows)


class _PostgresPlatformWriteUnit(_PostgresPlatformSql, PlatformWrites, _PostgresWriteUnit):
    """The ledger's write unit with the platform's tables: one connection, one transaction."""


class PostgresPlatformStore(_PostgresPlatformSql, PlatformReads, PostgresStore):
    """A ledger and its payment platform in one PostgreSQL database."""

    def _create_schema(self) -> None:
        super()._create_schema()
        connection = self._connection
        if self._platform_schema_exists():
            return
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            for statement in platform_schema(_POSTGRES_TYPES):
                connection.execute(statement)

    def _platform_schema_exists(self) -> bool:
        # The platform schema is created in one transaction, so one table stands for all.
        row = self._connection.execute("SELECT to_regclass('sequences') IS NOT NULL").fetchone()
        return bool(row and row[0])

    @contextmanager
    def write(self) -> Iterator[_PostgresPlatformWriteUnit]:
        with super().write() as unit:
            yield _PostgresPlatformWriteUnit(unit._connection, unit.meta())
