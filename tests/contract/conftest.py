"""Helpers for the storage contract suite: a clock the tests move, and raw database access.

Every contract test takes the `database_url` fixture (tests/conftest.py), so it runs once on
SQLite and once on a real PostgreSQL server. Tests speak only through `paycell.Ledger`, except
where the contract is about the database itself (durability settings, tamper evidence): there
they use `RawDatabase`, the access an operator or an attacker with database credentials has.
"""

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest

from paycell import Account, Ledger
from paycell.adapters.storage import sqlite as sqlite_storage
from paycell.adapters.storage.factory import is_postgres_url

# 2023-11-14T22:13:20Z in nanoseconds: a realistic "now", well inside the ledger's range.
START_NANOSECONDS = 1_700_000_000 * 1_000_000_000
NANOSECONDS_PER_SECOND = 1_000_000_000

# Ledgers (currencies) as ISO 4217 numeric codes.
CNY = 156
EUR = 978
USD = 840


class FakeClock:
    """A clock that moves only when told: `Ledger(url, clock=clock)`."""

    def __init__(self, now: int = START_NANOSECONDS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * NANOSECONDS_PER_SECOND)


class RawDatabase:
    """Plain SQL on a ledger's database, bypassing paycell. Write SQL with `?` placeholders."""

    def __init__(self, url: str) -> None:
        self.is_postgres = is_postgres_url(url)
        self._connection: Any
        if self.is_postgres:
            self._connection = psycopg.connect(url, autocommit=True)
        else:
            self._connection = sqlite3.connect(url, isolation_level=None)

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.is_postgres:
            sql = sql.replace("?", "%s")
        cursor = self._connection.execute(sql, parameters)
        return list(cursor.fetchall()) if cursor.description else []

    def drop_trigger(self, name: str, table: str) -> None:
        if self.is_postgres:
            self.execute(f"DROP TRIGGER {name} ON {table}")
        else:
            self.execute(f"DROP TRIGGER {name}")

    def close(self) -> None:
        self._connection.close()


# A statement tail this short is indexed every few batches, so statements read from the
# statement tables and the tail scan together; the default leaves small tests in the tail.
SHORT_STATEMENT_TAIL = 3
# Likewise, an account log this short is written back every batch or two, so accounts are read
# both from `accounts` and from the log; the default leaves small tests' changes in the log.
SHORT_ACCOUNT_LOG = 4


@pytest.fixture(
    params=[
        "sqlite",
        "sqlite-short-tails",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty ledger database on each backend in turn, SQLite in two shapes."""
    if request.param == "sqlite-short-tails":
        monkeypatch.setattr(sqlite_storage, "STATEMENT_INDEX_EVERY", SHORT_STATEMENT_TAIL)
        monkeypatch.setattr(sqlite_storage, "ACCOUNT_CHANGES_MERGE_EVERY", SHORT_ACCOUNT_LOG)
    if request.param.startswith("sqlite"):
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(database_url: str, clock: FakeClock) -> Iterator[Ledger]:
    with Ledger(database_url, clock=clock) as opened:
        yield opened


@pytest.fixture
def raw_database(database_url: str) -> Iterator[RawDatabase]:
    raw = RawDatabase(database_url)
    yield raw
    raw.close()


def open_accounts(ledger: Ledger, *accounts: Account) -> None:
    """Create accounts that must all be created."""
    results = ledger.create_accounts(accounts)
    assert [r.value for r in results] == ["ok"] * len(accounts)
