"""Reading a ledger's SQLite file directly, beside paycell, as the layout tests do."""

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from paycell.adapters.storage.sqlite_account_log import pack_change_tuples, unpack_changes

# Where the account log's packed changes hold each field.
_CHANGE_FIELDS = (
    "id", "debits_pending", "debits_posted", "credits_pending", "credits_posted", "flags",
)  # fmt: skip


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """All rows of one query, on a connection of its own (so it sees only what committed)."""
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def logged_changes(path: Path, account_id: int) -> int:
    """How many changes of the account the account log holds."""
    return sum(
        change[0] == account_id
        for (packed,) in rows(path, "SELECT changes FROM account_log")
        for change in unpack_changes(packed)  # type: ignore[arg-type]
    )


def alter_logged_changes(
    execute: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]], account_id: int, **fields: int
) -> int:
    """Rewrite every change of the account in SQLite's account log, as someone with write
    access to the file could (`execute` runs SQL on it); returns how many changes it altered.
    The packed format is the store's own (sqlite_account_log.py)."""
    altered = 0
    for seq, packed in execute("SELECT seq, changes FROM account_log", ()):
        changes = [list(change) for change in unpack_changes(packed)]
        for change in changes:
            if change[0] == account_id:
                for name, value in fields.items():
                    change[_CHANGE_FIELDS.index(name)] = value
                altered += 1
        repacked = pack_change_tuples([tuple(change) for change in changes])  # type: ignore[misc]
        execute("UPDATE account_log SET changes = ? WHERE seq = ?", (repacked, seq))
    return altered


def log_change_of_no_account(execute: Callable[[str, Sequence[Any]], Any], account_id: int) -> None:
    """Append a change of an account that does not exist to SQLite's account log."""
    execute(
        "INSERT INTO account_log (changes) VALUES (?)",
        (pack_change_tuples([(account_id, 0, 0, 0, 0, 0)]),),
    )
