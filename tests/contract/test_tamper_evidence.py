"""Tamper evidence: every way of changing committed rows behind the ledger's back is named by
`verify()`, on every backend.

The attacker here has full database access: plain SQL, able to drop the append-only triggers.
"""

import sqlite3

import psycopg
import pytest

from paycell import Account, Ledger, Transfer
from tests.contract.conftest import CNY, RawDatabase, open_accounts
from tests.integration.sqlite_files import alter_logged_changes

# The fixture's journal: batch 1 creates accounts 1-3, batch 2 transfers 11-13, batch 3 transfer
# 14.
ACCOUNTS_BATCH = 1
FIRST_TRANSFERS_BATCH = 2
LAST_TRANSFERS_BATCH = 3


@pytest.fixture
def books(ledger: Ledger) -> Ledger:
    open_accounts(ledger, *(Account(id=i, ledger=CNY, code=1) for i in (1, 2, 3)))

    def transfer(transfer_id: int, debit: int, credit: int, amount: int) -> Transfer:
        return Transfer(
            id=transfer_id,
            debit_account_id=debit,
            credit_account_id=credit,
            amount=amount,
            ledger=CNY,
            code=1,
        )

    first = ledger.create_transfers(
        [transfer(11, 1, 2, 100), transfer(12, 2, 3, 40), transfer(13, 1, 3, 7)]
    )
    assert [r.value for r in first] == ["ok"] * 3
    assert [r.value for r in ledger.create_transfers([transfer(14, 3, 1, 5)])] == ["ok"]
    report = ledger.verify()
    assert report.ok, report.render()
    assert report.journal_entries == LAST_TRANSFERS_BATCH
    return ledger


def discrepancies(ledger: Ledger) -> str:
    report = ledger.verify()
    assert not report.ok
    return "\n".join(report.discrepancies)


def test_append_only_triggers_reject_updating_or_deleting_transfers_and_journal(
    books: Ledger, raw_database: RawDatabase
) -> None:
    rejected = (sqlite3.DatabaseError, psycopg.Error)
    with pytest.raises(rejected, match="transfers are append-only"):
        raw_database.execute("UPDATE transfers SET amount = 1000000 WHERE id = 11")
    with pytest.raises(rejected, match="transfers are append-only"):
        raw_database.execute("DELETE FROM transfers WHERE id = 14")
    with pytest.raises(rejected, match="the journal is append-only"):
        raw_database.execute("UPDATE journal SET hash = previous_hash")
    with pytest.raises(rejected, match="the journal is append-only"):
        raw_database.execute("DELETE FROM journal")

    assert [t.amount for t in books.lookup_transfers([11, 14])] == [100, 5]
    assert books.verify().ok


def test_verify_names_a_transfer_whose_amount_was_altered(
    books: Ledger, raw_database: RawDatabase
) -> None:
    raw_database.drop_trigger("transfers_are_append_only_update", "transfers")
    raw_database.execute("UPDATE transfers SET amount = 1000000 WHERE id = 12")

    found = discrepancies(books)
    assert f"journal batch {FIRST_TRANSFERS_BATCH} (transfers): rows do not match" in found
    assert "account 2: stored balances" in found
    assert "account 3: stored balances" in found
    assert f"journal batch {LAST_TRANSFERS_BATCH}" not in found


def test_verify_names_the_batch_a_transfer_was_deleted_from(
    books: Ledger, raw_database: RawDatabase
) -> None:
    raw_database.drop_trigger("transfers_are_append_only_delete", "transfers")
    raw_database.execute("DELETE FROM transfers WHERE id = 14")

    found = discrepancies(books)
    assert f"journal batch {LAST_TRANSFERS_BATCH}: covers 1 records, found 0" in found
    assert f"journal batch {LAST_TRANSFERS_BATCH} (transfers): rows do not match" in found
    assert "account 1: stored balances" in found
    assert "account 3: stored balances" in found


def test_verify_names_a_transfer_inserted_outside_the_journal(
    books: Ledger, raw_database: RawDatabase
) -> None:
    (last,) = books.lookup_transfers([14])
    raw_database.execute(
        "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, pending_id, "
        "user_data_128, user_data_64, user_data_32, timeout, ledger, code, flags, timestamp) "
        "VALUES (99, 2, 1, 500, 0, 0, 0, 0, 0, ?, 1, 0, ?)",
        (CNY, last.timestamp + 1_000),
    )

    found = discrepancies(books)
    assert "5 transfers stored but 4 covered by the journal" in found
    assert "account 1: stored balances" in found
    assert "account 2: stored balances" in found


def test_verify_names_an_account_whose_balance_was_altered(
    books: Ledger, raw_database: RawDatabase
) -> None:
    if not raw_database.is_postgres:
        # SQLite refuses balance updates outside its change log's write-back, and may hold the
        # account's current state in the log instead.
        raw_database.drop_trigger("accounts_change_through_the_log", "accounts")
        alter_logged_changes(raw_database.execute, 2, credits_posted=1000000)
    raw_database.execute("UPDATE accounts SET credits_posted = 1000000 WHERE id = 2")

    found = discrepancies(books)
    assert "account 2: stored balances" in found
    assert f"ledger {CNY}: posted debits" in found
    assert "journal batch" not in found  # The chain itself is intact; the balance is not.


def test_verify_names_a_broken_chain_head(books: Ledger, raw_database: RawDatabase) -> None:
    raw_database.execute("UPDATE ledger_meta SET last_hash = ?", (b"\xff" * 32,))

    assert "the ledger's chain head does not match the journal" in discrepancies(books)


def test_verify_names_a_journal_entry_whose_hash_was_rewritten(
    books: Ledger, raw_database: RawDatabase
) -> None:
    raw_database.drop_trigger("journal_is_append_only_update", "journal")
    raw_database.execute(
        "UPDATE journal SET hash = ? WHERE batch_number = ?", (b"\x01" * 32, ACCOUNTS_BATCH)
    )

    found = discrepancies(books)
    assert f"journal batch {ACCOUNTS_BATCH} (accounts): rows do not match" in found
    assert f"journal batch {FIRST_TRANSFERS_BATCH}: previous_hash does not link" in found


def test_a_verify_that_fails_midway_leaves_the_store_usable(
    books: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify reads accounts and both sides' movements side by side (on PostgreSQL, server-side
    # cursors of its snapshot). Failing midway, it leaves no transaction or cursor behind: the
    # next write and the next verify run as if nothing happened.
    store = books.store
    read_accounts = store.all_accounts

    def first_account_then_failure():  # type: ignore[no-untyped-def]
        accounts = read_accounts()
        yield next(accounts)
        raise OSError("the disk went away")

    monkeypatch.setattr(store, "all_accounts", first_account_then_failure)
    with pytest.raises(OSError, match="the disk went away"):
        books.verify()
    monkeypatch.undo()
    transfer = Transfer(
        id=15, debit_account_id=2, credit_account_id=1, amount=3, ledger=CNY, code=1
    )
    assert [r.value for r in books.create_transfers([transfer])] == ["ok"]
    report = books.verify()
    assert report.ok, report.render()
    assert report.transfers == 5
