"""SQLite writers take turns on `<database>-lock` (sqlite_writer_queue.py).

Another process holds the turn in these tests: a `python -c` child that takes it, says so on
stdout, and holds it until its stdin closes (or it is killed).
"""

import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from paycell import Account, Ledger
from paycell.adapters.storage.sqlite_writer_queue import LOCK_SUFFIX, WriterQueue

ROOT = Path(__file__).resolve().parents[2]
_HOLDER = """
import sys
from pathlib import Path
from paycell.adapters.storage.sqlite_writer_queue import WriterQueue
queue = WriterQueue(Path(sys.argv[1]))
with queue.turn(wait_seconds_max=30) as taken:
    print("taken" if taken else "not taken", flush=True)
    sys.stdin.read()
    # Written while the turn is still held: whoever gets the turn next must see it.
    Path(sys.argv[1] + ".released").write_text("yes")
"""


def _hold_the_turn(database: Path) -> "subprocess.Popen[str]":
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "taken"
    return holder


def _let_go(holder: "subprocess.Popen[str]") -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.wait(timeout=30) == 0


def test_a_writer_waits_until_the_other_process_ends_its_turn(tmp_path: Path) -> None:
    database = tmp_path / "books.db"
    holder = _hold_the_turn(database)
    queue = WriterQueue(database)
    waited: list[bool] = []

    def wait_for_turn() -> None:
        with queue.turn(wait_seconds_max=30) as taken:
            waited.append(taken)
            # Only after the holder wrote this, just before it let go.
            waited.append((tmp_path / "books.db.released").exists())

    waiter = threading.Thread(target=wait_for_turn)
    waiter.start()
    waiter.join(timeout=0.3)
    assert waiter.is_alive(), "the turn was taken while another process held it"
    _let_go(holder)
    waiter.join(timeout=30)
    assert waited == [True, True]
    queue.close()


def test_a_killed_writer_gives_up_its_turn(tmp_path: Path) -> None:
    database = tmp_path / "books.db"
    holder = _hold_the_turn(database)
    holder.kill()
    holder.wait(timeout=30)
    queue = WriterQueue(database)
    with queue.turn(wait_seconds_max=30) as taken:
        assert taken
    queue.close()


def test_a_writer_that_waited_too_long_goes_on_to_sqlites_own_lock(tmp_path: Path) -> None:
    database = tmp_path / "books.db"
    holder = _hold_the_turn(database)
    queue = WriterQueue(database)
    try:
        with queue.turn(wait_seconds_max=0.05) as taken:
            assert not taken
    finally:
        _let_go(holder)
    # Not held by the turn given up: once the wait that was left behind has ended (it takes
    # the lock when the holder lets go, and lets it go at once), the next turn is free.
    deadline = time.monotonic() + 30
    while True:
        with queue.turn(wait_seconds_max=1) as taken:
            if taken:
                break
        assert time.monotonic() < deadline, "the turn given up was never let go"
    queue.close()


def test_ledger_writes_queue_behind_another_process_and_then_commit(tmp_path: Path) -> None:
    database = tmp_path / "books.db"
    with Ledger(str(database)) as ledger:
        holder = _hold_the_turn(database)
        results: list[str] = []

        def write() -> None:
            created = ledger.create_accounts([Account(id=1, ledger=1, code=1)])
            results.extend(result.value for result in created)

        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=0.3)
        assert writer.is_alive(), "the write did not wait for its turn"
        assert results == []
        _let_go(holder)
        writer.join(timeout=30)
        assert results == ["ok"]
        assert [account.id for account in ledger.lookup_accounts([1])] == [1]


def test_the_lock_file_sits_beside_the_database_and_a_memory_one_has_none(
    tmp_path: Path,
) -> None:
    database = tmp_path / "books.db"
    with Ledger(str(database)) as ledger:
        ledger.create_accounts([Account(id=1, ledger=1, code=1)])
    assert (tmp_path / ("books.db" + LOCK_SUFFIX)).exists()
    with Ledger(":memory:") as ledger:
        ledger.create_accounts([Account(id=1, ledger=1, code=1)])
    assert not (Path.cwd() / (":memory:" + LOCK_SUFFIX)).exists()


def test_the_lock_file_takes_the_databases_mode_so_its_users_can_all_queue(
    tmp_path: Path,
) -> None:
    database = tmp_path / "books.db"
    sqlite3.connect(database).close()
    database.chmod(0o660)
    with Ledger(str(database)) as ledger:
        ledger.create_accounts([Account(id=1, ledger=1, code=1)])
    lock_file = tmp_path / ("books.db" + LOCK_SUFFIX)
    assert stat.S_IMODE(lock_file.stat().st_mode) == 0o660
    assert lock_file.stat().st_uid == database.stat().st_uid


def test_a_turn_inside_a_turn_is_refused_rather_than_ending_the_outer_one(tmp_path: Path) -> None:
    queue = WriterQueue(tmp_path / "books.db")
    with queue.turn() as taken:
        assert taken
        with pytest.raises(RuntimeError, match="already held"), queue.turn():
            pass
        # Still held: another open file of the lock cannot take it.
        other = WriterQueue(tmp_path / "books.db")
        with other.turn(wait_seconds_max=0.05) as other_taken:
            assert not other_taken
        other.close()
    queue.close()
