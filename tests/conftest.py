"""Shared fixtures: every storage contract runs on SQLite and on a real PostgreSQL server.

The PostgreSQL server is started once per test process (per xdist worker) on a free loopback
port and removed afterwards; each test gets a fresh database on it.
"""

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from paycell.adapters.storage.throwaway_postgres import PostgresServer
from paycell.adapters.url_guard import ALLOW_PRIVATE_ENVIRONMENT_VARIABLE

# The tests' merchants (webhook and notification receivers) listen on 127.0.0.1, which a
# production server refuses as a callback address; tests/unit/test_url_guard.py covers that.
os.environ[ALLOW_PRIVATE_ENVIRONMENT_VARIABLE] = "1"

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return postgres_server.create_database(f"test_{worker}_{next(_database_numbers)}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.db")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty ledger database on each backend in turn."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))
