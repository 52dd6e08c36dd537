"""Reading a ledger's SQLite file directly, beside paycell, as the layout tests do."""

import sqlite3
from pathlib import Path


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """All rows of one query, on a connection of its own (so it sees only what committed)."""
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()
