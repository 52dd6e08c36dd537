"""`insert_rows`: many rows per INSERT statement, with the outcome of one INSERT per row."""

import sqlite3
from collections.abc import Iterator

import pytest

from paycell.adapters.storage.sqlite_inserts import ROWS_PER_INSERT, insert_rows


@pytest.fixture
def connection() -> Iterator[sqlite3.Connection]:
    opened = sqlite3.connect(":memory:", isolation_level=None)
    opened.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, a INTEGER UNIQUE, b BLOB)")
    yield opened
    opened.close()


@pytest.mark.parametrize(
    "count",
    [0, 1, ROWS_PER_INSERT - 1, ROWS_PER_INSERT, ROWS_PER_INSERT + 1, 3 * ROWS_PER_INSERT + 5],
)
def test_every_row_is_inserted_once_in_order_at_each_chunk_boundary(
    connection: sqlite3.Connection, count: int
) -> None:
    rows = [(n * 7, n.to_bytes(16, "big")) for n in range(count)]
    insert_rows(connection, "INSERT INTO t (a, b)", 2, rows)
    # Rowids follow the rows' order: the account log relies on it.
    assert connection.execute("SELECT seq, a, b FROM t ORDER BY seq").fetchall() == [
        (n + 1, a, b) for n, (a, b) in enumerate(rows)
    ]


@pytest.mark.parametrize("duplicate_at", [5, ROWS_PER_INSERT + 3])
def test_a_row_that_breaks_a_constraint_fails_the_insert(
    connection: sqlite3.Connection, duplicate_at: int
) -> None:
    rows = [(n, b"") for n in range(ROWS_PER_INSERT + 10)]
    rows[duplicate_at] = (0, b"")  # in a whole chunk, then in the rest
    connection.execute("BEGIN")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        insert_rows(connection, "INSERT INTO t (a, b)", 2, rows)
    connection.execute("ROLLBACK")
    assert connection.execute("SELECT count(*) FROM t").fetchone() == (0,)
