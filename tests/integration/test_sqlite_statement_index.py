"""SQLite's bulk statement index: what it stores, when it fills, and the schema it migrated from.

The statement contract itself (order, ranges, filters, paging) runs in tests/contract on SQLite
with the default tail and with a short one; these tests pin the layout underneath.
"""

import contextlib
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from paycell import Account, AccountFilter, AccountFilterFlags, Ledger, Transfer
from paycell.adapters.cli.main import main as cli_main
from paycell.adapters.storage import ledger_queries
from paycell.adapters.storage import sqlite as sqlite_storage
from paycell.adapters.storage.sqlite import SCHEMA_VERSION, SchemaVersionError
from paycell.core import state_machine
from paycell.core.limits import BATCH_EVENTS_MAX
from tests.integration.sqlite_files import rows

CNY = 156
TAIL = 4


def open_ledger_with_traffic(path: Path, transfers: int) -> Ledger:
    """Accounts 1 and 2; transfers 1..`transfers` alternate 1->2 and 2->1, one batch each."""
    ledger = Ledger(path)
    assert [
        r.value
        for r in ledger.create_accounts(
            [Account(id=1, ledger=CNY, code=1), Account(id=2, ledger=CNY, code=1)]
        )
    ] == ["ok", "ok"]
    for n in range(1, transfers + 1):
        debit, credit = (1, 2) if n % 2 else (2, 1)
        transfer = Transfer(
            id=n, debit_account_id=debit, credit_account_id=credit, amount=n, ledger=CNY, code=1
        )
        assert [r.value for r in ledger.create_transfers([transfer])] == ["ok"]
    return ledger


def rows_of(ledger: Ledger, sql: str, parameters: list[object]) -> list[tuple[object, ...]]:
    """What the ledger's own connection answers: EXPLAIN QUERY PLAN depends on its tables."""
    store = ledger.store
    assert isinstance(store, sqlite_storage.SqliteStore)
    return list(store._connection.execute(sql, parameters))


def statement(
    ledger: Ledger,
    account_id: int,
    *,
    limit: int = 100,
    newest_first: bool = False,
    timestamp_min: int = 0,
) -> list[int]:
    flags = AccountFilterFlags.DEBITS | AccountFilterFlags.CREDITS
    if newest_first:
        flags |= AccountFilterFlags.REVERSED
    found = ledger.get_account_transfers(
        AccountFilter(account_id=account_id, limit=limit, flags=flags, timestamp_min=timestamp_min)
    )
    return [t.id for t in found]


def test_a_full_tail_is_indexed_by_the_next_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_storage, "STATEMENT_INDEX_EVERY", TAIL)
    path = tmp_path / "ledger.db"
    with open_ledger_with_traffic(path, 10):
        pass
    # Batches 4 and 8 filled the tail, and batches 5 and 9 indexed it (on a helper thread,
    # while their own transfers were decided); transfers 9 and 10 wait in it.
    last_indexed = rows(path, "SELECT timestamp FROM transfers WHERE id = 8")[0][0]
    assert rows(path, "SELECT statement_indexed_through, statement_unindexed FROM ledger_meta") == [
        (last_indexed, 2)
    ]
    indexed_ids = "SELECT t.id FROM {} s JOIN transfers t USING (timestamp) ORDER BY t.id"
    assert rows(path, indexed_ids.format("statement_debits")) == [(n,) for n in range(1, 9)]
    assert rows(path, indexed_ids.format("statement_credits")) == [(n,) for n in range(1, 9)]
    debits_of_1 = "SELECT count(*) FROM statement_debits WHERE account_id = 1"
    assert rows(path, debits_of_1) == [(4,)]
    # Fills are numbered, each with its watermark: the last transfer timestamp it indexed.
    first_through = rows(path, "SELECT timestamp FROM transfers WHERE id = 4")[0][0]
    assert rows(path, "SELECT fill, through FROM statement_fills ORDER BY fill") == [
        (1, first_through),
        (2, last_indexed),
    ]
    fill_of_each = "SELECT t.id, s.fill FROM {} s JOIN transfers t USING (timestamp) ORDER BY t.id"
    for table in ("statement_debits", "statement_credits"):
        assert rows(path, fill_of_each.format(table)) == [
            (n, 1 if n <= 4 else 2) for n in range(1, 9)
        ]


def test_a_due_fill_runs_on_a_helper_thread_and_its_failure_fails_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_storage, "STATEMENT_INDEX_EVERY", TAIL)
    index_tail = sqlite_storage._index_statement_tail
    threads: list[str] = []
    failing: list[OSError] = []

    def recorded(*arguments: Any) -> None:
        threads.append(threading.current_thread().name)
        if failing:
            raise failing.pop()
        index_tail(*arguments)

    monkeypatch.setattr(sqlite_storage, "_index_statement_tail", recorded)
    path = tmp_path / "ledger.db"
    with open_ledger_with_traffic(path, TAIL) as ledger:
        failing.append(OSError("disk full"))
        fifth = Transfer(5, 1, 2, 5, ledger=CNY, code=1)
        with pytest.raises(OSError, match="disk full"):
            ledger.create_transfers([fifth])  # the batch after the tail filled
        assert threads == ["paycell-statement-fill"]
        assert ledger.lookup_transfers([5]) == []  # the batch rolled back with its fill
        assert rows(path, "SELECT count(*) FROM statement_fills") == [(0,)]
        assert [r.value for r in ledger.create_transfers([fifth])] == ["ok"]
        assert threads == ["paycell-statement-fill"] * 2
        assert rows(path, "SELECT count(*) FROM statement_fills") == [(1,)]
        assert statement(ledger, 1) == [1, 2, 3, 4, 5]
        assert ledger.verify().ok
    assert "paycell-statement-fill" not in {t.name for t in threading.enumerate()}


@pytest.mark.parametrize(
    "when",
    ["while the helper starts", "while the core runs", "while the batch waits for the fill"],
)
def test_ctrl_c_during_a_fill_beside_the_core_rolls_the_batch_back_and_leaves_the_index_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    monkeypatch.setattr(sqlite_storage, "STATEMENT_INDEX_EVERY", TAIL)
    index_tail = sqlite_storage._index_statement_tail
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    assert threading.current_thread().ident == main_thread  # signals reach the main thread

    def interrupted_fill(connection: sqlite3.Connection, through: int, *rest: Any) -> None:
        sorting = rest[0]
        if when == "while the helper starts":
            # Before the helper lets the core start: the batch is still starting the helper.
            signal.pthread_kill(main_thread, signal.SIGINT)
        elif when == "while the core runs":
            sorting()  # the core starts, and takes 0.5 s (below)
            time.sleep(0.1)
            signal.pthread_kill(main_thread, signal.SIGINT)
        else:
            sorting()  # the core runs (one transfer: at once) and the batch waits here
            time.sleep(0.2)
            signal.pthread_kill(main_thread, signal.SIGINT)
            time.sleep(0.2)  # the interrupted wait must go on waiting for these statements
        index_tail(connection, through, *rest)

    path = tmp_path / "ledger.db"
    with open_ledger_with_traffic(path, TAIL) as ledger:
        meta_before = rows(
            path, "SELECT statement_indexed_through, statement_unindexed FROM ledger_meta"
        )
        monkeypatch.setattr(sqlite_storage, "_index_statement_tail", interrupted_fill)
        if when == "while the core runs":
            decide = state_machine.create_transfers

            def slow_core(*arguments: Any) -> Any:
                time.sleep(0.5)  # Ctrl-C lands here
                return decide(*arguments)

            monkeypatch.setattr(state_machine, "create_transfers", slow_core)
        fifth = Transfer(5, 1, 2, 5, ledger=CNY, code=1)
        with pytest.raises(KeyboardInterrupt):
            ledger.create_transfers([fifth])
        assert "paycell-statement-fill" not in {t.name for t in threading.enumerate()}
        # Nothing of the batch or of its fill is there, in the index or out of it.
        assert ledger.lookup_transfers([5]) == []
        assert (
            rows(path, "SELECT statement_indexed_through, statement_unindexed FROM ledger_meta")
            == meta_before
        )
        assert rows(path, "SELECT count(*) FROM statement_fills") == [(0,)]
        assert rows(path, "SELECT count(*) FROM statement_debits") == [(0,)]
        assert ledger.verify().ok
        monkeypatch.undo()
        assert [r.value for r in ledger.create_transfers([fifth])] == ["ok"]
        assert statement(ledger, 1) == [1, 2, 3, 4, 5]
        assert ledger.verify().ok


def test_a_fill_runs_no_statement_outside_its_batch_or_once_the_batch_gave_up_on_it(
    tmp_path: Path,
) -> None:
    # What guards the index should the batch's wait be cut short after all (a second Ctrl-C
    # at the wrong instant): the helper checks before each statement.
    path = tmp_path / "ledger.db"
    with open_ledger_with_traffic(path, 2) as ledger:
        store = ledger.store
        assert isinstance(store, sqlite_storage.SqliteStore)
        connection = store._connection
        meta = "SELECT statement_indexed_through, statement_unindexed FROM ledger_meta"
        before = rows(path, meta)
        update = "UPDATE ledger_meta SET statement_unindexed = 0"
        connection.execute("BEGIN IMMEDIATE")
        fill = sqlite_storage._FillBesideTheCore(connection, through=1)
        assert fill._execute("SELECT 1", ()) == [(1,)]
        connection.execute("ROLLBACK")
        with pytest.raises(sqlite_storage._FillAbandonedError):
            fill._execute(update, ())  # no transaction: it would commit on its own
        connection.execute("BEGIN IMMEDIATE")
        given_up = sqlite_storage._FillBesideTheCore(connection, through=1)
        assert given_up.wait_until_done(abandon=True) is None  # never begun: nothing to wait
        with pytest.raises(sqlite_storage._FillAbandonedError):
            given_up._execute(update, ())
        connection.execute("ROLLBACK")
        assert rows(path, meta) == before
        assert ledger.verify().ok


def test_writes_that_do_not_fill_beside_the_core_fill_one_batch_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The platform's writes do not call `computing`: their batch fills the tail itself, once
    # it holds a batch more than the threshold.
    monkeypatch.setattr(sqlite_storage, "STATEMENT_INDEX_EVERY", TAIL)
    monkeypatch.setattr(
        sqlite_storage._SqliteWriteUnit, "computing", lambda self: contextlib.nullcontext()
    )
    path = tmp_path / "ledger.db"
    with open_ledger_with_traffic(path, 0) as ledger:
        full = [Transfer(n, 1, 2, 1, ledger=CNY, code=1) for n in range(1, BATCH_EVENTS_MAX + 1)]
        assert {r.value for r in ledger.create_transfers(full)} == {"ok"}
        assert rows(path, "SELECT count(*) FROM statement_fills") == [(0,)]
        more = [Transfer(n, 2, 1, 1, ledger=CNY, code=1) for n in range(10_001, 10_005)]
        assert {r.value for r in ledger.create_transfers(more)} == {"ok"}
        assert rows(path, "SELECT count(*), sum(through > 0) FROM statement_fills") == [(1, 1)]
        assert rows(path, "SELECT statement_unindexed FROM ledger_meta") == [(0,)]
        assert ledger.verify().ok


@pytest.mark.parametrize("newest_first", [False, True])
def test_a_statement_reads_the_fills_in_key_order_without_sorting(
    tmp_path: Path, newest_first: bool
) -> None:
    # However many fills and transfers an account has, a page reads them in index order and
    # stops at its limit: a sort would read every row of the account first.
    with Ledger(tmp_path / "ledger.db") as ledger:
        flags = AccountFilterFlags.DEBITS | AccountFilterFlags.CREDITS
        if newest_first:
            flags |= AccountFilterFlags.REVERSED
        account_filter = AccountFilter(
            account_id=1, code=1, timestamp_min=5, timestamp_max=10**18, limit=10, flags=flags
        )
        for part in (ledger_queries.filled_statement, ledger_queries.statement_tail):
            sql, parameters = part(sqlite_storage._SQLITE, account_filter, 10)
            plan = rows_of(ledger, "EXPLAIN QUERY PLAN " + sql, parameters)
            details = " | ".join(str(row[-1]) for row in plan)
            assert "TEMP B-TREE" not in details, details
            assert "SCAN" not in details.replace("SCAN ledger_meta", ""), details


def test_a_statement_pages_across_the_indexed_part_and_the_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_storage, "STATEMENT_INDEX_EVERY", TAIL)
    with open_ledger_with_traffic(tmp_path / "ledger.db", 10) as ledger:
        assert statement(ledger, 1) == list(range(1, 11))
        assert statement(ledger, 1, newest_first=True, limit=3) == [10, 9, 8]
        # Paging oldest first, three at a time, from just after the last timestamp seen.
        seen: list[int] = []
        after = 0
        while page := ledger.get_account_transfers(
            AccountFilter(account_id=2, limit=3, timestamp_min=after)
        ):
            seen += [t.id for t in page]
            after = page[-1].timestamp + 1
        assert seen == list(range(1, 11))


def test_a_version_1_database_is_migrated_when_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.db"
    # Every batch writes its account changes back, so `accounts` is current and the log empty.
    monkeypatch.setattr(sqlite_storage, "ACCOUNT_CHANGES_MERGE_EVERY", 1)
    with open_ledger_with_traffic(path, 6):
        pass
    monkeypatch.undo()
    # Put the file back into version 1's layout: account indexes on transfers, no statement
    # tables, no watermark, no account log.
    connection = sqlite3.connect(path, isolation_level=None)
    assert connection.execute("SELECT count(*) FROM account_log").fetchone() == (0,)
    for sql in (
        "DROP TABLE account_log",
        "DROP TRIGGER accounts_change_through_the_log",
        "ALTER TABLE accounts DROP COLUMN log_generation",
        "ALTER TABLE ledger_meta DROP COLUMN account_log_generation",
        "DROP TABLE statement_debits",
        "DROP TABLE statement_credits",
        "ALTER TABLE ledger_meta DROP COLUMN statement_indexed_through",
        "ALTER TABLE ledger_meta DROP COLUMN statement_unindexed",
        "CREATE INDEX transfers_by_debit_account ON transfers (debit_account_id, timestamp)",
        "CREATE INDEX transfers_by_credit_account ON transfers (credit_account_id, timestamp)",
        "UPDATE ledger_meta SET schema_version = 1",
    ):
        connection.execute(sql)
    connection.close()

    with Ledger(path) as ledger:
        assert statement(ledger, 1) == list(range(1, 7))
        # Transfers 1, 3, 5 went 1 -> 2; 2, 4, 6 came back.
        assert ledger.lookup_accounts([1])[0].debits_posted == 9
        assert ledger.verify().ok
    assert rows(path, "SELECT schema_version, statement_unindexed FROM ledger_meta") == [
        (SCHEMA_VERSION, 0)
    ]
    assert rows(path, "SELECT count(*) FROM statement_debits") == [(6,)]
    indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'transfers_by_%'"
    assert rows(path, indexes) == []


def test_a_version_3_database_gets_its_statement_tables_keyed_by_fill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_storage, "STATEMENT_INDEX_EVERY", TAIL)
    path = tmp_path / "ledger.db"
    with open_ledger_with_traffic(path, 10):
        pass
    monkeypatch.undo()
    # Put the statement tables back into version 3's layout: (account, timestamp), no fills.
    connection = sqlite3.connect(path, isolation_level=None)
    for side in ("debit", "credit"):
        for sql in (
            f"DROP TRIGGER statement_{side}s_are_append_only_update",
            f"DROP TRIGGER statement_{side}s_are_append_only_delete",
            f"CREATE TABLE old_{side}s (account_id BLOB NOT NULL, timestamp INTEGER NOT NULL, "
            "PRIMARY KEY (account_id, timestamp)) WITHOUT ROWID",
            f"INSERT INTO old_{side}s SELECT account_id, timestamp FROM statement_{side}s",
            f"DROP TABLE statement_{side}s",
            f"ALTER TABLE old_{side}s RENAME TO statement_{side}s",
            f"CREATE TRIGGER statement_{side}s_are_append_only_update BEFORE UPDATE ON "
            f"statement_{side}s BEGIN SELECT RAISE(ABORT, 'append-only'); END",
            f"CREATE TRIGGER statement_{side}s_are_append_only_delete BEFORE DELETE ON "
            f"statement_{side}s BEGIN SELECT RAISE(ABORT, 'append-only'); END",
        ):
            connection.execute(sql)
    connection.execute("DROP TABLE statement_fills")
    connection.execute("UPDATE ledger_meta SET schema_version = 3")
    connection.close()

    with Ledger(path) as ledger:
        assert statement(ledger, 1) == list(range(1, 11))
        assert statement(ledger, 2, newest_first=True, limit=4) == [10, 9, 8, 7]
        assert ledger.verify().ok
    # Version 3's rows are one fill, through the watermark they were indexed to.
    ((watermark, version),) = rows(
        path, "SELECT statement_indexed_through, schema_version FROM ledger_meta"
    )
    assert version == SCHEMA_VERSION
    assert rows(path, "SELECT fill, through FROM statement_fills") == [(1, watermark)]
    assert rows(path, "SELECT DISTINCT fill FROM statement_debits") == [(1,)]
    assert rows(path, "SELECT count(*) FROM statement_credits") == [(8,)]
    # And the tables are append-only again.
    connection = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        connection.execute("DELETE FROM statement_debits")
    connection.close()


def database_from_a_newer_paycell(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    with open_ledger_with_traffic(path, 1):
        pass
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("UPDATE ledger_meta SET schema_version = ?", (SCHEMA_VERSION + 1,))
    connection.close()
    return path


def test_a_database_from_a_newer_paycell_is_refused_unchanged(tmp_path: Path) -> None:
    path = database_from_a_newer_paycell(tmp_path)
    with pytest.raises(SchemaVersionError, match="newer than this paycell"):
        Ledger(path)
    assert rows(path, "SELECT schema_version FROM ledger_meta") == [(SCHEMA_VERSION + 1,)]


def test_the_cli_names_a_database_from_a_newer_paycell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = database_from_a_newer_paycell(tmp_path)
    assert cli_main(["verify", "--database", str(path)]) == 1
    assert "schema_version_unsupported" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("tampering", "named"),
    [
        (
            [
                "DROP TRIGGER statement_debits_are_append_only_delete",
                "DELETE FROM statement_debits WHERE timestamp = "
                "(SELECT timestamp FROM transfers WHERE id = 2)",
            ],
            "statement_debits: indexes 7 of the 8 transfers",
        ),
        (
            [
                "INSERT INTO statement_credits (fill, account_id, timestamp) "
                "SELECT 1, 1, timestamp "
                "FROM transfers WHERE id = 1",
            ],
            "statement_credits: 1 rows name no transfer",
        ),
        (
            # Moved to the second fill: a statement would find it in the wrong time range.
            [
                "DROP TRIGGER statement_debits_are_append_only_update",
                "UPDATE statement_debits SET fill = 2 "
                "WHERE timestamp = (SELECT timestamp FROM transfers WHERE id = 2)",
            ],
            "statement_debits: 1 rows are outside the fill they name",
        ),
        (
            [
                "DROP TRIGGER statement_fills_are_append_only_delete",
                "DELETE FROM statement_fills WHERE fill = 2",
            ],
            "statement_fills: the last fill is through",
        ),
        (
            # A fill slipped in between with a lower watermark: a statement up to transfer 5
            # would stop at it and miss transfer 5.
            [
                "INSERT INTO statement_fills (fill, through) "
                "SELECT 99, timestamp FROM transfers WHERE id = 5",
            ],
            "statement_fills: 1 fills do not reach past the fill before them",
        ),
    ],
)
def test_verify_names_a_statement_index_that_lost_or_gained_a_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tampering: list[str], named: str
) -> None:
    monkeypatch.setattr(sqlite_storage, "STATEMENT_INDEX_EVERY", TAIL)
    path = tmp_path / "ledger.db"
    with open_ledger_with_traffic(path, 10) as ledger:
        assert ledger.verify().ok
    connection = sqlite3.connect(path, isolation_level=None)
    for sql in tampering:
        connection.execute(sql)
    connection.close()
    with Ledger(path) as ledger:
        report = ledger.verify()
    assert not report.ok
    assert any(named in discrepancy for discrepancy in report.discrepancies), report.render()
