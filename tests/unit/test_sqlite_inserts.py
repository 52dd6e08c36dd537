"""`insert_rows`: many rows per INSERT statement, with the outcome of one INSERT per row."""

import sqlite3
from collections.abc import Iterator

import pytest

from paycell.adapters.storage.sqlite_inserts import ROWS_PER_INSERT, flat_chunks, insert_rows
from tests.compiled_path import WITH_COMPILED, WITH_COMPILED_IDS, use_compiled


@pytest.fixture
def connection() -> Iterator[sqlite3.Connection]:
    opened = sqlite3.connect(":memory:", isolation_level=None)
    opened.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, a INTEGER UNIQUE, b BLOB)")
    yield opened
    opened.close()


@pytest.mark.parametrize("compiled_path", WITH_COMPILED, ids=WITH_COMPILED_IDS)
@pytest.mark.parametrize(
    "count",
    [0, 1, ROWS_PER_INSERT - 1, ROWS_PER_INSERT, ROWS_PER_INSERT + 1, 3 * ROWS_PER_INSERT + 5],
)
def test_every_row_is_inserted_once_in_order_at_each_chunk_boundary(
    connection: sqlite3.Connection, count: int, compiled_path: bool
) -> None:
    rows = [(n * 7, n.to_bytes(16, "big")) for n in range(count)]
    with use_compiled(compiled_path):
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


@pytest.mark.parametrize("compiled_path", WITH_COMPILED, ids=WITH_COMPILED_IDS)
def test_whole_chunks_are_flattened_in_order_and_the_rest_left_out(compiled_path: bool) -> None:
    rows = [(n, str(n), None) for n in range(2 * ROWS_PER_INSERT + 1)]
    with use_compiled(compiled_path):
        flat = flat_chunks(rows, 3)
    assert flat == [
        [value for row in rows[:ROWS_PER_INSERT] for value in row],
        [value for row in rows[ROWS_PER_INSERT : 2 * ROWS_PER_INSERT] for value in row],
    ]
    with use_compiled(compiled_path):
        assert flat_chunks(rows[: ROWS_PER_INSERT - 1], 3) == []
        # Rows that are not tuples are flattened too (in Python), one or all of them.
        assert flat_chunks([list(row) for row in rows], 3) == flat
        one_list = [*rows[:5], list(rows[5]), *rows[6:]]
        assert flat_chunks(one_list, 3) == flat


@pytest.mark.parametrize("compiled_path", WITH_COMPILED, ids=WITH_COMPILED_IDS)
@pytest.mark.parametrize("at", [0, 7, ROWS_PER_INSERT + 3, 2 * ROWS_PER_INSERT + 1])
def test_a_row_of_another_width_fails_the_insert_as_one_row_a_statement_would(
    connection: sqlite3.Connection, compiled_path: bool, at: int
) -> None:
    # Flattened, a short row would shift every later value into the wrong column.
    rows: list[tuple[object, ...]] = [(n, b"") for n in range(2 * ROWS_PER_INSERT + 5)]
    rows[at] = (at,)
    connection.execute("BEGIN")
    with use_compiled(compiled_path), pytest.raises(sqlite3.ProgrammingError):
        insert_rows(connection, "INSERT INTO t (a, b)", 2, rows)
    connection.execute("ROLLBACK")
    assert connection.execute("SELECT count(*) FROM t").fetchone() == (0,)


@pytest.mark.parametrize("compiled_path", WITH_COMPILED, ids=WITH_COMPILED_IDS)
def test_an_upsert_of_rows_given_twice_keeps_the_last_as_one_statement_each_would(
    connection: sqlite3.Connection, compiled_path: bool
) -> None:
    # Keys repeat within a chunk, across chunks and in the rest: each later row updates.
    rows = [(n % 50, f"v{n}".encode()) for n in range(2 * ROWS_PER_INSERT + 30)]
    with use_compiled(compiled_path):
        insert_rows(
            connection,
            "INSERT INTO t (a, b)",
            2,
            rows,
            "ON CONFLICT (a) DO UPDATE SET b = excluded.b",
        )
    last = dict(rows)
    assert connection.execute("SELECT a, b FROM t ORDER BY a").fetchall() == sorted(last.items())
