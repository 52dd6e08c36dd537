"""Bulk INSERTs on SQLite: many rows per statement step, not one.

`executemany` steps its statement once per row, and each step costs about as much as the row's
insert itself: the GIL released and taken back around it, the connection's mutex, the
statement's halt and reset. At batches of 8,190 transfers that was some 40% of the transfers'
INSERT. A multi-row `VALUES` list steps once for `ROWS_PER_INSERT` rows; the binding of each
value is the same either way.
"""

import sqlite3
from collections.abc import Sequence
from functools import cache
from itertools import chain
from typing import Any, Final

from paycell.core import compiled

# Rows in one multi-row INSERT. Past a few dozen rows the per-step costs are spread thin (32,
# 128 and 512 rows measured the same); 128 rows of the widest table (transfers, 13 columns)
# bind 1,664 values, far below SQLite's limit of 32,766 variables a statement.
ROWS_PER_INSERT: Final = 128
_VARIABLES_MAX: Final = 32_766


@cache
def _statements(insert: str, width: int, clause: str) -> tuple[str, str]:
    """(one row, `ROWS_PER_INSERT` rows) statements for `insert`, which ends before VALUES,
    and `clause`, which follows them."""
    assert ROWS_PER_INSERT * width <= _VARIABLES_MAX, "too many variables for one statement"
    row = "(" + ",".join("?" * width) + ")"
    rows = ",".join([row] * ROWS_PER_INSERT)
    return f"{insert} VALUES {row} {clause}", f"{insert} VALUES {rows} {clause}"


def insert_rows(
    connection: sqlite3.Connection,
    insert: str,
    width: int,
    rows: Sequence[Sequence[Any]],
    clause: str = "",
) -> None:
    """Insert `rows` (each of `width` values) with `insert`, an INSERT up to its VALUES, and
    `clause` after them (an upsert's ON CONFLICT): whole chunks of `ROWS_PER_INSERT` rows as
    one statement each, the rest one by one. Rows are inserted in order, one after the other
    as with a statement each, so rowids follow the rows' order and an upsert of a row given
    twice updates the first."""
    one_row, many_rows = _statements(insert, width, clause)
    whole = len(rows) - len(rows) % ROWS_PER_INSERT
    for values in flat_chunks(rows, width):
        connection.execute(many_rows, values)
    if whole < len(rows):
        connection.executemany(one_row, rows[whole:])


def flat_chunks(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """The values of each whole chunk of `ROWS_PER_INSERT` rows, flattened in order (the rest
    of the rows left out): in one C pass where the compiled path is on. Every row of a whole
    chunk must have `width` values: flattened, a row of another width would shift the rest
    into the wrong columns, where one row a statement fails (sqlite3.ProgrammingError)."""
    if compiled.flat_chunks is not None and type(rows) is list:
        flat = compiled.flat_chunks(rows, ROWS_PER_INSERT, width)
        if flat is not None:
            return flat
    whole = len(rows) - len(rows) % ROWS_PER_INSERT
    for index in range(whole):
        if len(rows[index]) != width:
            raise sqlite3.ProgrammingError(
                f"row {index} has {len(rows[index])} values, not {width}"
            )
    flatten = chain.from_iterable
    return [
        list(flatten(rows[start : start + ROWS_PER_INSERT]))
        for start in range(0, whole, ROWS_PER_INSERT)
    ]
