"""Group commit in the ledger service: the batches that a group's commands produce one after
the other are written as ONE merged batch, with exactly the outcome of writing them one by one.

This is what makes a hot account cheap under load: however many payments of a group credit a
merchant, its balance row is updated once and the journal gains one entry.
"""

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from paycell.adapters.storage.factory import open_store
from paycell.adapters.storage.sqlite import SqliteStore
from paycell.core.batch import CommittedBatch, LedgerMeta, merge_batches
from paycell.core.results import CreateTransferResult as R
from paycell.core.types import Account, AccountFlags, Transfer, TransferFlags
from paycell.service.ledger_service import GroupExpiryError, LedgerService
from paycell.service.ports import LedgerStore, WriteUnit
from paycell.service.verify import verify
from tests.integration.sqlite_files import logged_changes

# A clock that stands still: ledger timestamps then advance by one per event, so two ledgers
# given the same commands get the same timestamps however often each reads the clock.
NOW = 1_800_000_000_000_000_000

BUYER, SHOP, HOT, BANK = 1, 2, 3, 4
POST = TransferFlags.POST_PENDING_TRANSFER

ACCOUNTS = [
    Account(BUYER, ledger=1, code=1, flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
    Account(SHOP, ledger=1, code=1),
    Account(HOT, ledger=1, code=1, flags=AccountFlags.HISTORY),
    Account(BANK, ledger=1, code=1),
]

# Each inner list is one command's batch; together they are one group.
GROUP: list[list[Transfer]] = [
    [
        Transfer(10, BUYER, HOT, 30, ledger=1, code=1),
        Transfer(11, BUYER, SHOP, 20, ledger=1, code=1, flags=TransferFlags.PENDING),
    ],
    [
        Transfer(12, BUYER, SHOP, 0, pending_id=11, ledger=1, code=1, flags=POST),
        Transfer(13, BUYER, HOT, 40, ledger=1, code=1),
    ],
    [
        Transfer(14, BUYER, HOT, 50, ledger=1, code=1),  # the buyer has 10 left
        Transfer(15, BUYER, HOT, 5, ledger=1, code=1, flags=TransferFlags.LINKED),
        Transfer(16, SHOP, HOT, 5, ledger=1, code=1),
    ],
    [
        Transfer(10, BUYER, HOT, 30, ledger=1, code=1),  # a replay of the group's first
        Transfer(14, BUYER, HOT, 5, ledger=1, code=1),  # its id failed earlier in the group
        Transfer(17, BUYER, SHOP, 5, ledger=1, code=1, flags=TransferFlags.PENDING),
    ],
]

EXPECTED = [
    [R.OK, R.OK],
    [R.OK, R.OK],
    [R.EXCEEDS_CREDITS, R.OK, R.OK],
    [R.EXISTS, R.ID_ALREADY_FAILED, R.OK],
]


def _open(url: str) -> tuple[LedgerStore, LedgerService]:
    store = open_store(url)
    service = LedgerService(store, lambda: NOW)
    service.create_accounts(ACCOUNTS)
    assert service.create_transfers([Transfer(1, BANK, BUYER, 100, ledger=1, code=1)]) == [R.OK]
    return store, service


def _apply(
    service: LedgerService,
    unit: WriteUnit,
    committed: list[CommittedBatch],
    transfers: Sequence[Transfer],
    meta_holder: list[LedgerMeta],
) -> list[R]:
    """What a platform command does inside a unit: run, save, let the next one see it."""
    meta = meta_holder[0]
    results, batch = service.apply_transfers_in_unit(unit, meta, transfers)
    if batch is not None:
        unit.save(batch)
        committed.append(batch)
        service.account_cache.remember_read(batch.accounts_updated.values())
        meta_holder[0] = batch.meta_after
    return results


def _run_grouped(service: LedgerService) -> tuple[list[list[R]], list[CommittedBatch]]:
    committed: list[CommittedBatch] = []
    with service.grouped_unit_of_work(committed) as (unit, meta):
        holder: list[LedgerMeta] = [meta]
        results = [_apply(service, unit, committed, batch, holder) for batch in GROUP]
    return results, committed


def _run_one_by_one(service: LedgerService) -> list[list[R]]:
    results = []
    for batch in GROUP:
        committed: list[CommittedBatch] = []
        with service.unit_of_work(committed) as (unit, meta):
            results.append(_apply(service, unit, committed, batch, [meta]))
    return results


@pytest.fixture
def grouped(database_url: str) -> Iterator[tuple[LedgerStore, LedgerService]]:
    store, service = _open(database_url)
    yield store, service
    store.close()


@pytest.fixture
def one_by_one(tmp_path: Path) -> Iterator[tuple[LedgerStore, LedgerService]]:
    store, service = _open(str(tmp_path / "reference.db"))
    yield store, service
    store.close()


def test_a_group_leaves_the_books_exactly_as_its_batches_one_by_one(
    grouped: tuple[LedgerStore, LedgerService], one_by_one: tuple[LedgerStore, LedgerService]
) -> None:
    store, service = grouped
    reference_store, reference = one_by_one

    results, _ = _run_grouped(service)

    assert results == EXPECTED
    assert _run_one_by_one(reference) == EXPECTED
    assert list(store.all_accounts()) == list(reference_store.all_accounts())
    assert list(store.all_transfers()) == list(reference_store.all_transfers())
    assert list(store.all_pending_states()) == list(reference_store.all_pending_states())
    for account_id in (HOT, BUYER):
        assert store.lookup_accounts({account_id}) == reference_store.lookup_accounts({account_id})
    assert verify(store).ok
    assert verify(reference_store).ok


def test_a_group_adds_one_journal_entry_however_many_commands_it_holds(
    grouped: tuple[LedgerStore, LedgerService],
) -> None:
    store, service = grouped
    entries_before = list(store.journal_entries())

    _, committed = _run_grouped(service)

    entries = list(store.journal_entries())
    assert len(entries) == len(entries_before) + 1
    assert committed[0].journal == entries[-1]
    assert entries[-1].batch_number == entries_before[-1].batch_number + 1
    assert store.meta().batch_number == entries[-1].batch_number
    # Seven transfers created and one failed id remembered, all covered by the one entry.
    assert entries[-1].event_count == 8
    assert verify(store).ok


def test_a_hot_account_is_updated_once_per_group(tmp_path: Path) -> None:
    store, service = _open(str(tmp_path / "hot.db"))
    assert isinstance(store, SqliteStore)
    updates: list[str] = []

    def count_account_log_rows(statement: str) -> None:
        # SQLite logs a batch's account changes (sqlite_account_log.py) rather than updating
        # the accounts: one row per batch.
        if statement.startswith("INSERT INTO account_log"):
            updates.append(statement)

    store._connection.set_trace_callback(count_account_log_rows)
    _, committed = _run_grouped(service)
    store._connection.set_trace_callback(None)

    # Four commands move money between three accounts, HOT credited in three of them; the
    # group logs each touched account's new state once: BUYER, SHOP and HOT, in one row.
    assert len(committed) == 1
    assert set(committed[0].accounts_updated) == {BUYER, SHOP, HOT}
    assert len(updates) == 1
    assert logged_changes(Path(store.path), HOT) == 1
    store.close()


@pytest.mark.parametrize(
    ("first", "again"),
    [
        (Transfer(2**100, BUYER, SHOP, 500, ledger=1, code=1), R.ID_ALREADY_FAILED),
        (Transfer(2**100, BUYER, SHOP, 5, ledger=1, code=1), R.EXISTS),
    ],
    ids=["failed", "created"],
)
def test_an_id_the_group_holds_as_its_highest_is_looked_up_again(
    grouped: tuple[LedgerStore, LedgerService], first: Transfer, again: R
) -> None:
    # The highest id the database holds is 1: the group's own ids must count, or the second
    # command would take its id for new and skip the lookups.
    _, service = grouped
    committed: list[CommittedBatch] = []
    with service.grouped_unit_of_work(committed) as (unit, meta):
        holder: list[LedgerMeta] = [meta]
        assert _apply(service, unit, committed, [first], holder) in ([R.OK], [R.EXCEEDS_CREDITS])
        replay = first._replace(amount=5)
        assert _apply(service, unit, committed, [replay], holder) == [again]


def test_a_group_that_fails_midway_writes_nothing(
    grouped: tuple[LedgerStore, LedgerService],
) -> None:
    store, service = grouped
    hot_before = store.lookup_accounts({HOT})
    meta_before = store.meta()

    committed: list[CommittedBatch] = []
    with (  # noqa: PT012 - the group is the statement under test
        pytest.raises(AbandonedError),
        service.grouped_unit_of_work(committed) as (unit, meta),
    ):
        _apply(service, unit, committed, GROUP[0], [meta])
        raise AbandonedError

    assert store.lookup_accounts({HOT}) == hot_before
    assert store.meta() == meta_before
    # The service's cache forgot what the failed group saw: the next group decides on the
    # committed balances and the books still verify.
    results, _ = _run_grouped(service)
    assert results == EXPECTED
    assert verify(store).ok


def test_merging_batches_that_are_not_a_chain_is_refused(
    grouped: tuple[LedgerStore, LedgerService],
) -> None:
    _, service = grouped
    first, second = _held_batches(service)
    assert merge_batches([first]) is first
    with pytest.raises(AssertionError):
        merge_batches([second, first])


def _held_batches(service: LedgerService) -> list[CommittedBatch]:
    """Two consecutive batches as the state machine made them, not written."""
    committed: list[CommittedBatch] = []
    with pytest.raises(AbandonedError), service.unit_of_work(committed) as (unit, meta):  # noqa: PT012
        holder: list[LedgerMeta] = [meta]
        _apply(service, unit, committed, GROUP[0], holder)
        _apply(service, unit, committed, GROUP[1], holder)
        raise AbandonedError
    return committed


class AbandonedError(Exception):
    """Rolls a unit of work back on purpose."""


def test_expiry_is_never_asked_of_a_grouped_unit(
    grouped: tuple[LedgerStore, LedgerService],
) -> None:
    # Held expiries are not in the database's due index: expiring through the grouped unit
    # would find and release the same reservations again.
    _, service = grouped
    committed: list[CommittedBatch] = []
    with (
        pytest.raises(GroupExpiryError),
        service.grouped_unit_of_work(committed) as (unit, meta),
    ):
        service.expire_due(unit, meta, committed)


def test_a_group_knows_its_held_ids_range_by_range(
    grouped: tuple[LedgerStore, LedgerService],
) -> None:
    # Ids in two ranges (top bytes 4 and 5), as the platform's payments and fees.
    _store, service = grouped
    payment, fee = (4 << 120) + 10, (5 << 120) + 10
    committed: list[CommittedBatch] = []
    with service.grouped_unit_of_work(committed) as (unit, meta):
        holder: list[LedgerMeta] = [meta]
        first = [Transfer(payment, BANK, SHOP, 1, ledger=1, code=1),
                 Transfer(fee, BANK, SHOP, 1, ledger=1, code=1)]  # fmt: skip
        assert _apply(service, unit, committed, first, holder) == [R.OK, R.OK]
        # Held, not yet written: the unit answers for them range by range.
        assert unit.highest_transfer_id() == fee
        assert unit.highest_transfer_id(below=5 << 120) == payment
        assert unit.highest_transfer_id(below=4 << 120) == 1  # the stored top-up
        second = [Transfer(payment + 1, BANK, SHOP, 1, ledger=1, code=1),
                  Transfer(fee, BANK, SHOP, 1, ledger=1, code=1)]  # fmt: skip
        assert _apply(service, unit, committed, second, holder) == [R.OK, R.EXISTS]
    assert verify(service.store).ok
