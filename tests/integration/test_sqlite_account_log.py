"""SQLite's account change log: what it stores, when it is written back, and who sees what.

The ledger contract (balances after every kind of transfer) runs in tests/contract on SQLite
with the default log and with one written back every few rows, and the property test compares
every balance with its model; these tests pin the layout underneath and the cases a single
process does not reach: other processes writing, a batch that rolls back, an old file.
"""

import random
import sqlite3
from pathlib import Path

import pytest

from paycell import Account, AccountFlags, Ledger, Transfer
from paycell.adapters.storage import sqlite as sqlite_storage
from paycell.adapters.storage import sqlite_account_log
from paycell.adapters.storage.sqlite import SCHEMA_VERSION, encode
from paycell.adapters.storage.sqlite_account_log import AccountChangeLog, AccountLogDamagedError
from tests.integration.sqlite_files import (
    alter_logged_changes,
    log_change_of_no_account,
    rows,
)

CNY = 156
LOG = 5


def transfer(transfer_id: int, debit: int, credit: int, amount: int) -> Transfer:
    return Transfer(
        id=transfer_id,
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        ledger=CNY,
        code=1,
    )


def open_accounts(path: Path, *ids: int) -> Ledger:
    ledger = Ledger(path)
    results = ledger.create_accounts([Account(id=i, ledger=CNY, code=1) for i in ids])
    assert [r.value for r in results] == ["ok"] * len(ids)
    return ledger


def pay(ledger: Ledger, transfer_id: int, debit: int, credit: int, amount: int) -> None:
    results = ledger.create_transfers([transfer(transfer_id, debit, credit, amount)])
    assert [r.value for r in results] == ["ok"]


def posted(ledger: Ledger, account_id: int) -> tuple[int, int]:
    (account,) = ledger.lookup_accounts([account_id])
    return account.debits_posted, account.credits_posted


def logged(path: Path) -> list[list[int]]:
    """The ids of the changes each row of the account log holds, row by row."""
    return [
        [change[0] for change in sqlite_account_log.unpack_changes(packed)]  # type: ignore[arg-type]
        for (packed,) in rows(path, "SELECT changes FROM account_log ORDER BY seq")
    ]


def test_changes_are_logged_until_the_log_fills_then_written_back_in_one_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_storage, "ACCOUNT_CHANGES_MERGE_EVERY", LOG)
    path = tmp_path / "ledger.db"
    with open_accounts(path, 1, 2) as ledger:
        pay(ledger, 1, 1, 2, 10)
        pay(ledger, 2, 1, 2, 20)
        # Two batches, two accounts each: four changes logged in two rows, `accounts` still
        # as created.
        assert logged(path) == [[1, 2], [1, 2]]
        assert rows(path, "SELECT debits_posted FROM accounts WHERE id = 1") == [(0,)]
        assert posted(ledger, 1) == (30, 0)
        assert posted(ledger, 2) == (0, 30)

        pay(ledger, 3, 2, 1, 5)  # The sixth change crosses the threshold of five.
        assert logged(path) == []
        assert rows(path, "SELECT debits_posted, credits_posted FROM accounts ORDER BY id") == [
            (30, 5),
            (5, 30),
        ]
        assert rows(path, "SELECT account_log_generation FROM ledger_meta") == [(1,)]
        assert posted(ledger, 1) == (30, 5)

        pay(ledger, 4, 1, 2, 1)  # The next generation of the log starts over at row 1.
        assert rows(path, "SELECT seq FROM account_log") == [(1,)]
        assert logged(path) == [[1, 2]]
        assert posted(ledger, 2) == (5, 31)
        assert ledger.verify().ok


def test_repeated_changes_fold_until_the_log_holds_enough_distinct_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write-back costs one update per distinct account: rows that change the same accounts
    again wait for the row limit, new accounts for the (lower) account limit."""
    monkeypatch.setattr(sqlite_storage, "ACCOUNT_CHANGES_MERGE_EVERY", 1000)
    monkeypatch.setattr(sqlite_storage, "ACCOUNT_CHANGES_ACCOUNTS_MAX", 3)
    path = tmp_path / "ledger.db"
    with open_accounts(path, 1, 2, 3, 4) as ledger:
        for transfer_id in range(1, 6):
            pay(ledger, transfer_id, 1, 2, 1)
        # Ten changes, two accounts: folded in the log, nothing written back yet.
        assert sum(map(len, logged(path))) == 10
        assert rows(path, "SELECT account_log_generation FROM ledger_meta") == [(0,)]

        pay(ledger, 6, 3, 4, 1)  # Four distinct accounts cross the limit of three.
        assert logged(path) == []
        assert rows(path, "SELECT id, debits_posted, credits_posted FROM accounts") == [
            (1, 5, 0),
            (2, 0, 5),
            (3, 1, 0),
            (4, 0, 1),
        ]
        assert ledger.verify().ok


def test_other_processes_see_each_others_logged_and_written_back_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_storage, "ACCOUNT_CHANGES_MERGE_EVERY", LOG)
    path = tmp_path / "ledger.db"
    # Two stores on one file stand for two processes: each has its own connection and memory.
    with open_accounts(path, 1, 2) as first, Ledger(path) as second:
        pay(first, 1, 1, 2, 10)
        assert posted(second, 1) == (10, 0)
        pay(second, 2, 1, 2, 20)  # Decided on the first's logged balance, not on `accounts`.
        assert posted(first, 1) == (30, 0)
        pay(first, 3, 2, 1, 1)  # Crosses the threshold: the first writes the log back.
        assert logged(path) == []
        # The second remembers rows that are gone now; it must notice the write-back.
        assert posted(second, 1) == (30, 1)
        pay(second, 4, 1, 2, 2)
        assert posted(first, 2) == (1, 32)
        assert posted(second, 2) == (1, 32)
        assert first.verify().ok


def test_a_balance_limit_holds_against_a_balance_another_process_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_storage, "ACCOUNT_CHANGES_MERGE_EVERY", LOG)
    path = tmp_path / "ledger.db"
    with Ledger(path) as first, Ledger(path) as second:
        limited = Account(
            id=1, ledger=CNY, code=1, flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
        )
        assert [
            r.value for r in first.create_accounts([limited, Account(id=2, ledger=CNY, code=1)])
        ] == ["ok", "ok"]
        pay(first, 1, 2, 1, 50)  # Account 1 now holds 50, in the first's log.
        pay(second, 2, 1, 2, 50)  # The second spends all of it...
        results = first.create_transfers([transfer(3, 1, 2, 1)])  # ...so the first cannot.
        assert [r.value for r in results] == ["exceeds_credits"]


def test_a_rolled_back_batch_leaves_neither_rows_nor_memory_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_storage, "ACCOUNT_CHANGES_MERGE_EVERY", LOG)
    path = tmp_path / "ledger.db"
    with open_accounts(path, 1, 2, 3) as ledger:
        pay(ledger, 1, 1, 2, 10)
        pay(ledger, 2, 1, 2, 10)

        def write_back_fails(*_: object) -> None:
            raise OSError("disk full")

        # The third batch logs its accounts (memory included), then fails writing the log
        # back: all of it must roll back.
        with monkeypatch.context() as patch:
            patch.setattr(AccountChangeLog, "_write_back", write_back_fails)
            with pytest.raises(OSError, match="disk full"):
                ledger.create_transfers([transfer(3, 1, 2, 1000)])

        assert logged(path) == [[1, 2], [1, 2]]
        assert ledger.lookup_transfers([3]) == []
        # The next batch leaves account 1 alone and writes the log back: nothing of the
        # failed batch may resurface, in memory or in `accounts`.
        pay(ledger, 3, 2, 3, 1)
        assert posted(ledger, 1) == (20, 0)
        assert posted(ledger, 2) == (1, 20)
        pay(ledger, 4, 1, 3, 1)
        assert posted(ledger, 1) == (21, 0)
        assert ledger.verify().ok


def test_the_write_back_seeks_each_account_by_its_key(tmp_path: Path) -> None:
    # With millions of accounts, a write-back that scanned `accounts` would stall every batch
    # that crosses the threshold.
    path = tmp_path / "ledger.db"
    with open_accounts(path, 1):
        pass
    connection = sqlite3.connect(path)
    plan = " | ".join(
        str(row[3])
        for row in connection.execute(
            "EXPLAIN QUERY PLAN " + sqlite_account_log._WRITE_BACK, [0] * 6
        )
    )
    connection.close()
    assert "SEARCH accounts USING PRIMARY KEY (id=?)" in plan
    assert "SCAN accounts" not in plan


def test_a_version_2_database_is_migrated_when_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.db"
    monkeypatch.setattr(sqlite_storage, "ACCOUNT_CHANGES_MERGE_EVERY", 1)
    with open_accounts(path, 1, 2) as ledger:
        pay(ledger, 1, 1, 2, 7)
    monkeypatch.undo()
    # Version 2's layout: balances updated in place, no log, no write-back mark.
    connection = sqlite3.connect(path, isolation_level=None)
    for sql in (
        "DROP TABLE account_log",
        "DROP TRIGGER accounts_change_through_the_log",
        "ALTER TABLE accounts DROP COLUMN log_generation",
        "ALTER TABLE ledger_meta DROP COLUMN account_log_generation",
        "UPDATE ledger_meta SET schema_version = 2",
    ):
        connection.execute(sql)
    connection.close()

    with Ledger(path) as ledger:
        assert posted(ledger, 1) == (7, 0)
        pay(ledger, 2, 2, 1, 3)
        assert posted(ledger, 1) == (7, 3)
        assert ledger.verify().ok
    assert rows(path, "SELECT schema_version, account_log_generation FROM ledger_meta") == [
        (SCHEMA_VERSION, 0)
    ]
    assert logged(path) == [[2, 1]]
    assert_old_in_place_updates_are_refused(path)


# Schema 4's log: a row per change.
ACCOUNT_CHANGES_V4 = """CREATE TABLE account_changes (
    seq INTEGER PRIMARY KEY,
    id BLOB NOT NULL,
    debits_pending BLOB NOT NULL,
    debits_posted BLOB NOT NULL,
    credits_pending BLOB NOT NULL,
    credits_posted BLOB NOT NULL,
    flags INTEGER NOT NULL
)"""


def back_to_rows_per_change(path: Path, version: int) -> None:
    """Put the file's account log back into version 3's and 4's layout: the same changes, a
    row each, in `account_changes`."""
    connection = sqlite3.connect(path, isolation_level=None)
    changes = [
        change
        for (packed,) in connection.execute("SELECT changes FROM account_log ORDER BY seq")
        for change in sqlite_account_log.unpack_changes(packed)
    ]
    connection.execute("DROP TABLE account_log")
    connection.execute(ACCOUNT_CHANGES_V4)
    connection.executemany(
        "INSERT INTO account_changes (id, debits_pending, debits_posted, credits_pending, "
        "credits_posted, flags) VALUES (?,?,?,?,?,?)",
        [(*map(encode, change[:5]), change[5]) for change in changes],
    )
    connection.execute("UPDATE ledger_meta SET schema_version = ?", (version,))
    connection.close()


def test_a_version_4_database_has_its_logged_rows_written_back_when_opened(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    with open_accounts(path, 1, 2, 3) as ledger:
        pay(ledger, 1, 1, 2, 10)
        pay(ledger, 2, 2, 3, 4)
        pay(ledger, 3, 3, 1, 1)
        before = ledger.lookup_accounts([1, 2, 3])
    # Back to version 4's layout: the same changes, a row each, in `account_changes`.
    connection = sqlite3.connect(path, isolation_level=None)
    changes = [
        change
        for (packed,) in connection.execute("SELECT changes FROM account_log ORDER BY seq")
        for change in sqlite_account_log.unpack_changes(packed)
    ]
    assert len(changes) == 6
    connection.execute("DROP TABLE account_log")
    connection.execute(ACCOUNT_CHANGES_V4)
    connection.executemany(
        "INSERT INTO account_changes (id, debits_pending, debits_posted, credits_pending, "
        "credits_posted, flags) VALUES (?,?,?,?,?,?)",
        changes,
    )
    connection.execute("UPDATE ledger_meta SET schema_version = 4")
    connection.close()
    assert rows(path, "SELECT debits_posted, credits_posted FROM accounts") == [(0, 0)] * 3

    with Ledger(path) as ledger:
        assert ledger.lookup_accounts([1, 2, 3]) == before
        # Written back into `accounts`, the old table gone, the new log empty.
        assert rows(path, "SELECT id, debits_posted, credits_posted FROM accounts") == [
            (1, 10, 1),
            (2, 4, 10),
            (3, 1, 4),
        ]
        assert rows(path, "SELECT name FROM sqlite_master WHERE name = 'account_changes'") == []
        assert logged(path) == []
        assert rows(path, "SELECT schema_version, account_log_generation FROM ledger_meta") == [
            (SCHEMA_VERSION, 1)
        ]
        pay(ledger, 4, 1, 2, 2)
        assert posted(ledger, 1) == (12, 1)
        assert ledger.verify().ok


# What paycell 2 ran for every batch; a process of it still open on a migrated file must have
# its batches refused, or its updates would sit under the log and be lost.
IN_PLACE_UPDATE = (
    "UPDATE accounts SET debits_pending = ?, debits_posted = ?, credits_pending = ?, "
    "credits_posted = ?, flags = ? WHERE id = ?"
)


def assert_old_in_place_updates_are_refused(path: Path) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="balances change through the account log"):
            connection.execute(IN_PLACE_UPDATE, (0, 99, 0, 0, 0, 1))
    finally:
        connection.close()


def test_a_process_updating_balances_in_place_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_storage, "ACCOUNT_CHANGES_MERGE_EVERY", 3)
    path = tmp_path / "ledger.db"
    with open_accounts(path, 1, 2) as ledger:
        pay(ledger, 1, 1, 2, 10)
        pay(ledger, 2, 1, 2, 10)  # Written back: the write-back itself passes the trigger.
        assert rows(path, "SELECT account_log_generation FROM ledger_meta") == [(1,)]
        assert_old_in_place_updates_are_refused(path)
        assert posted(ledger, 1) == (20, 0)
        assert ledger.verify().ok


@pytest.mark.parametrize(
    ("tampering", "named"),
    [
        ("alter", "account 2: stored balances"),
        ("no account", "account_log: 1 accounts changed are not in accounts"),
        ("garbage", "account_log: row 3 does not unpack"),
        ("cut short", "account_log: row 2 does not unpack"),
    ],
)
def test_verify_names_a_tampered_account_log(tmp_path: Path, tampering: str, named: str) -> None:
    path = tmp_path / "ledger.db"
    with open_accounts(path, 1, 2) as ledger:
        pay(ledger, 1, 1, 2, 10)
        pay(ledger, 2, 2, 1, 4)
        assert ledger.verify().ok
        connection = sqlite3.connect(path, isolation_level=None)

        def execute(sql: str, parameters: object) -> list[tuple[object, ...]]:
            return connection.execute(sql, parameters).fetchall()  # type: ignore[arg-type]

        if tampering == "alter":
            assert alter_logged_changes(execute, 2, credits_posted=999) == 2
        elif tampering == "no account":
            log_change_of_no_account(execute, 77)
        elif tampering == "garbage":
            execute("INSERT INTO account_log (changes) VALUES (?)", (b"not packed",))
        else:
            execute("UPDATE account_log SET changes = substr(changes, 1, 30) WHERE seq = 2", ())
        connection.close()
        # The same process: verify reads the database, not what the process remembers.
        report = ledger.verify()
    assert not report.ok
    assert any(named in discrepancy for discrepancy in report.discrepancies), report.render()


@pytest.mark.parametrize(
    "damage",
    [
        "x'00'",
        "substr(changes, 1, length(changes) - 1)",
        "substr(changes, 1, 5 + 24)",  # cut at a change's boundary: one of its two changes
        "x'51' || substr(changes, 2)",  # its format (I) swapped for Q
    ],
)
def test_a_log_row_that_does_not_unpack_stops_reads_and_writes(tmp_path: Path, damage: str) -> None:
    # Balances read past a lost row of changes would be wrong: nothing proceeds on them.
    # (A process that logged the row itself, or read it before the damage, knows its
    # changes and goes on with the right balances.)
    path = tmp_path / "ledger.db"
    with open_accounts(path, 1, 2) as ledger:
        pay(ledger, 1, 1, 2, 10)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(f"UPDATE account_log SET changes = {damage} WHERE seq = 1")
    connection.close()
    with Ledger(path) as ledger:
        report = ledger.verify()
        assert "account_log: row 1 does not unpack" in report.render()
        with pytest.raises(AccountLogDamagedError, match="account_log row 1 does not unpack") as e:
            ledger.create_transfers([transfer(2, 1, 2, 5)])
        assert e.value.code == "account_log_damaged"
        with pytest.raises(AccountLogDamagedError):
            ledger.lookup_accounts([1])
    assert rows(path, "SELECT count(*) FROM transfers") == [(1,)]


def test_a_batch_sqlite_rolled_back_by_itself_leaves_no_memory_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An interrupt, a full disk or an I/O error makes SQLite roll the whole transaction back
    # itself; the store's own ROLLBACK then has nothing to do and must not hide the error.
    path = tmp_path / "ledger.db"
    with open_accounts(path, 1, 2) as ledger:
        connection = ledger.store._connection  # type: ignore[attr-defined]
        save = sqlite_storage._SqliteWriteUnit.save

        def save_then_interrupted(unit: sqlite_storage._SqliteWriteUnit, batch: object) -> None:
            save(unit, batch)  # type: ignore[arg-type]  # The log and its memory have the batch.
            connection.set_progress_handler(lambda: 1, 1)
            try:
                connection.execute("UPDATE ledger_meta SET batch_number = batch_number")
            finally:
                connection.set_progress_handler(None, 1)

        with monkeypatch.context() as patch:
            patch.setattr(sqlite_storage._SqliteWriteUnit, "save", save_then_interrupted)
            with pytest.raises(sqlite3.OperationalError, match="interrupted"):
                ledger.create_transfers([transfer(1, 1, 2, 10)])

        assert logged(path) == []
        assert posted(ledger, 1) == (0, 0)  # Before any verify, which would forget anyway.
        pay(ledger, 2, 1, 2, 1)
        assert posted(ledger, 1) == (1, 0)
        assert ledger.verify().ok


def test_verify_reads_past_a_damaged_row_in_a_memory_of_its_own(tmp_path: Path) -> None:
    # Another process logged a change; its row is then damaged. Verify, even left half-read,
    # must not leave the store believing the balances without it.
    path = tmp_path / "ledger.db"
    with open_accounts(path, 1, 2) as ledger, Ledger(path) as other:
        pay(ledger, 1, 1, 2, 10)
        pay(other, 2, 1, 2, 7)
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("UPDATE account_log SET changes = x'00' WHERE seq = 2")
        connection.close()
        store = ledger.store
        with store.snapshot():
            accounts = store.all_accounts()
            next(accounts)  # verify's read, suspended
        with pytest.raises(AccountLogDamagedError):
            ledger.create_transfers([transfer(3, 1, 2, 1)])
        del accounts
    assert rows(path, "SELECT count(*) FROM transfers") == [(2,)]


def test_a_read_that_fails_midway_counts_no_change_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The log's count of changes decides its write-back: a read that fails and is retried
    # must count each change once.
    monkeypatch.setattr(sqlite_storage, "ACCOUNT_CHANGES_MERGE_EVERY", 100)
    path = tmp_path / "ledger.db"
    with open_accounts(path, 1, 2) as first, Ledger(path) as second:
        for transfer_id in range(1, 11):
            pay(first, transfer_id, 1, 2, 1)
        log = second.store.account_log  # type: ignore[attr-defined]
        read_accounts = log._read_accounts
        failures = [sqlite3.OperationalError("disk I/O error")]

        def fails_once(connection: sqlite3.Connection, ids: object) -> object:
            if failures:
                raise failures.pop()
            return read_accounts(connection, ids)

        log._read_accounts = fails_once
        with pytest.raises(sqlite3.OperationalError):
            second.lookup_accounts([1])
        assert posted(second, 1) == (10, 0)
        assert log._changes == sum(map(len, logged(path))) == 20


@pytest.mark.parametrize("version", [3, 4])
def test_wide_values_and_flags_survive_the_migration(tmp_path: Path, version: int) -> None:
    path = tmp_path / "ledger.db"
    big = (1 << 100) + 5
    wide_id = (1 << 127) + 3
    with Ledger(path) as ledger:
        ledger.create_accounts(
            [
                Account(id=wide_id, ledger=CNY, code=1, flags=AccountFlags.HISTORY),
                Account(id=2, ledger=CNY, code=1),
            ]
        )
        ledger.create_transfers([transfer(1, wide_id, 2, big)])
        ledger.create_transfers([transfer(2, 2, wide_id, 3)])
        before = ledger.lookup_accounts([wide_id, 2])
    back_to_rows_per_change(path, version)
    with Ledger(path) as ledger:
        assert ledger.lookup_accounts([wide_id, 2]) == before
        assert ledger.verify().ok
        ledger.create_transfers([transfer(3, 2, wide_id, 1)])
        assert ledger.lookup_accounts([wide_id])[0].credits_posted == 4
        assert ledger.verify().ok


def test_the_migration_keeps_logged_rows_naming_no_account_for_verify(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with open_accounts(path, 1, 2) as ledger:
        pay(ledger, 1, 1, 2, 10)
    back_to_rows_per_change(path, 4)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(
        "INSERT INTO account_changes (id, debits_pending, debits_posted, credits_pending, "
        "credits_posted, flags) VALUES (77, 0, 5, 0, 0, 0)"
    )
    connection.close()
    with Ledger(path) as ledger:
        assert posted(ledger, 1) == (10, 0)
        report = ledger.verify()
    assert not report.ok
    assert "account_log: 1 accounts changed are not in accounts" in report.discrepancies


@pytest.mark.parametrize("seed", range(3))
def test_several_stores_interleaved_agree_with_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Three stores on one file (three processes): writes, rolled-back writes, verifies and
    lookups in a random order, with write-backs every few changes. Every store sees the
    model's balances, and counts exactly the changes the log holds."""
    monkeypatch.setattr(sqlite_storage, "ACCOUNT_CHANGES_MERGE_EVERY", 9)
    monkeypatch.setattr(sqlite_storage, "ACCOUNT_CHANGES_ACCOUNTS_MAX", 5)
    choose = random.Random(seed)
    path = tmp_path / "ledger.db"
    ids = list(range(1, 8))
    with open_accounts(path, *ids) as a, Ledger(path) as b, Ledger(path) as c:
        ledgers = [a, b, c]
        model = {i: [0, 0] for i in ids}
        transfer_id = 0
        save = sqlite_storage._SqliteWriteUnit.save

        def save_then_fail(unit: sqlite_storage._SqliteWriteUnit, batch: object) -> None:
            save(unit, batch)  # type: ignore[arg-type]
            raise OSError("disk full")

        for _ in range(120):
            ledger = choose.choice(ledgers)
            action = choose.random()
            if action < 0.6:
                batch = []
                for _ in range(choose.randint(1, 4)):
                    transfer_id += 1
                    debit, credit = choose.sample(ids, 2)
                    amount = choose.randint(1, 9)
                    batch.append(transfer(transfer_id, debit, credit, amount))
                    model[debit][0] += amount
                    model[credit][1] += amount
                assert {r.value for r in ledger.create_transfers(batch)} == {"ok"}
            elif action < 0.7:
                transfer_id += 1
                debit, credit = choose.sample(ids, 2)
                with monkeypatch.context() as patch:
                    patch.setattr(sqlite_storage._SqliteWriteUnit, "save", save_then_fail)
                    with pytest.raises(OSError, match="disk full"):
                        ledger.create_transfers([transfer(transfer_id, debit, credit, 1)])
            elif action < 0.8:
                assert ledger.verify().ok
            for each in ledgers:
                assert [posted(each, i) for i in ids] == [tuple(model[i]) for i in ids]
                log = each.store.account_log  # type: ignore[attr-defined]
                assert log._changes == sum(map(len, logged(path)))
