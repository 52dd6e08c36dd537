"""The ledger's command handlers: prefetch, run the pure core, commit once.

Each write is one unit of work under the store's writer lock:
1. expire pending transfers whose timeout has passed (their own journal batch, same commit),
2. prefetch every account, transfer, pending state and failed id the batch can touch,
3. run the state machine once over the whole batch,
4. save the outcome and commit durably; only then are results returned.
"""

import gc
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from operator import attrgetter
from typing import Any, TypeVar

from paycell.core import state_machine
from paycell.core.batch import CommittedBatch, LedgerMeta, PendingState, merge_batches
from paycell.core.events import (
    validate_account_filter,
    validate_accounts,
    validate_ids,
    validate_query_filter,
    validate_transfers,
)
from paycell.core.limits import BATCH_EVENTS_MAX
from paycell.core.queries import account_filter_is_valid, page_limit, query_filter_is_valid
from paycell.core.results import CreateAccountResult, CreateTransferResult
from paycell.core.types import (
    Account,
    AccountBalance,
    AccountFilter,
    AccountFlags,
    QueryFilter,
    Transfer,
)
from paycell.service.account_cache import AccountCache
from paycell.service.ports import LedgerStore, WriteUnit

V = TypeVar("V")

_ID = attrgetter("id")
_DEBIT_ACCOUNT_ID = attrgetter("debit_account_id")
_CREDIT_ACCOUNT_ID = attrgetter("credit_account_id")
_PENDING_ID = attrgetter("pending_id")

# Ids are checked as new range by range, a range being the ids that share their top byte. The
# platform puts a transfer's kind there, each kind's ids growing on their own; ids that grow
# with time (TigerBeetle's recommendation) fall in one range.
_ID_RANGE_SHIFT = 120
_ID_RANGES = 256


def _id_range_end(transfer_id: int) -> int | None:
    """The first id above `transfer_id`'s range; None for the last range."""
    next_range = (transfer_id >> _ID_RANGE_SHIFT) + 1
    return next_range << _ID_RANGE_SHIFT if next_range < _ID_RANGES else None


def _all_ids_new(unit: WriteUnit, batch: Sequence[Transfer]) -> bool:
    """Whether no id of `batch` is stored or failed, known without looking ids up: in each
    range of ids the batch uses, its lowest id is above the highest stored or failed one
    (one index read a range)."""
    ids: list[int] = list(map(_ID, batch))
    lowest = min(ids)
    if lowest >> _ID_RANGE_SHIFT == max(ids) >> _ID_RANGE_SHIFT:
        return lowest > unit.highest_transfer_id(_id_range_end(lowest))
    lowest_by_range: dict[int, int] = {}
    for transfer_id in ids:
        id_range = transfer_id >> _ID_RANGE_SHIFT
        if transfer_id < lowest_by_range.get(id_range, transfer_id + 1):
            lowest_by_range[id_range] = transfer_id
    return all(
        low > unit.highest_transfer_id(_id_range_end(low)) for low in lowest_by_range.values()
    )


Clock = Callable[[], int]
"""Returns the current time in nanoseconds since the Unix epoch."""


@contextmanager
def _garbage_collection_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for one batch.

    A batch allocates tens of thousands of small acyclic records (freed by reference counting
    anyway); without the pause, generational collections walk the whole heap several times
    per batch, about a tenth of a large batch's time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class GroupExpiryError(RuntimeError):
    """Expiry was asked of a grouped unit: it must run before the group starts."""


class GroupedWriteUnit:
    """A write unit for group commit: the ledger batches that a group's commands save are
    held in memory and written at the end as ONE merged batch (`merge_batches`), so a hot
    account is updated once per group and the journal gains one entry.

    Reads see the held batches over the database's state, so each command of the group
    decides on the balances, transfers and pending states its predecessors left. Everything
    else (the platform's records) goes straight to the underlying unit.
    """

    def __init__(self, unit: WriteUnit) -> None:
        self._unit = unit
        self.held: list[CommittedBatch] = []
        self._accounts: dict[int, Account] = {}
        self._transfers: dict[int, Transfer] = {}
        self._pending: dict[int, PendingState] = {}
        self._failed: dict[int, str] = {}
        self._highest_held_id = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._unit, name)

    def meta(self) -> LedgerMeta:
        # The held batches have advanced the chain past what the database says.
        assert not self.held, "read the meta before the group holds batches"
        return self._unit.meta()

    def save(self, batch: CommittedBatch) -> None:
        self.held.append(batch)
        for account in batch.accounts_created:
            self._accounts[account.id] = account
        self._accounts.update(batch.accounts_updated)
        for transfer in batch.transfers_created:
            self._transfers[transfer.id] = transfer
        self._pending.update(batch.pending_created)
        for pending_id, status in batch.pending_resolved.items():
            before = (
                self._pending.get(pending_id) or self._unit.pending_states([pending_id])[pending_id]
            )
            self._pending[pending_id] = PendingState(status, before.expires_at)
        for failure in batch.failures:
            self._failed[failure.id] = failure.result
        self._highest_held_id = max(
            self._highest_held_id,
            max((t.id for t in batch.transfers_created), default=0),
            max((f.id for f in batch.failures), default=0),
        )

    def accounts_by_id(self, ids: Collection[int]) -> dict[int, Account]:
        return self._overlaid(ids, self._accounts, self._unit.accounts_by_id)

    def transfers_by_id(self, ids: Collection[int]) -> dict[int, Transfer]:
        return self._overlaid(ids, self._transfers, self._unit.transfers_by_id)

    def pending_states(self, ids: Collection[int]) -> dict[int, PendingState]:
        return self._overlaid(ids, self._pending, self._unit.pending_states)

    def failed_results(self, ids: Collection[int]) -> dict[int, str]:
        return self._overlaid(ids, self._failed, self._unit.failed_results)

    def highest_transfer_id(self, below: int | None = None) -> int:
        if below is None:
            held = self._highest_held_id
        else:
            # The held ids are a group's: some thousands at most.
            held = max((i for i in (*self._transfers, *self._failed) if i < below), default=0)
        return max(held, self._unit.highest_transfer_id(below))

    def due_pending_transfers(self, timestamp: int, limit: int) -> list[Transfer]:
        # Held expiries are not in the database's due index yet, so expiring through this
        # unit would find the same transfers again and expire them twice.
        raise GroupExpiryError(
            "a group expires due transfers before it starts (grouped_unit_of_work does), "
            "never through the grouped unit"
        )

    def write_held(self) -> CommittedBatch | None:
        """Write the held batches as one and return it (None when nothing was held)."""
        if not self.held:
            return None
        merged = merge_batches(self.held)
        self._unit.save(merged)
        return merged

    @staticmethod
    def _overlaid(
        ids: Collection[int], held: dict[int, V], read: Callable[[Collection[int]], dict[int, V]]
    ) -> dict[int, V]:
        found = {i: held[i] for i in ids if i in held}
        if len(found) < len(ids):
            found.update(read([i for i in ids if i not in found]))
        return found


class LedgerService:
    def __init__(self, store: LedgerStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.account_cache = AccountCache()

    # Writes -----------------------------------------------------------------------------------

    def create_accounts(self, events: Iterable[Account]) -> list[CreateAccountResult]:
        batch = validate_accounts(events)
        committed: list[CommittedBatch] = []
        with self.unit_of_work(committed) as (unit, meta):
            meta = self.expire_due(unit, meta, committed)
            existing = self.accounts_in_unit(unit, {a.id for a in batch})
            outcome = state_machine.create_accounts(batch, existing, meta, self.clock())
            if outcome.committed is not None:
                unit.save(outcome.committed)
                committed.append(outcome.committed)
        return outcome.results

    def create_transfers(self, events: Iterable[Transfer]) -> list[CreateTransferResult]:
        # The batch's records are freed (with the frame below) before the collector runs
        # again: its first collection would otherwise walk every live container of a large
        # batch (the dicts and lists of some 8,000 accounts and 8,190 transfers, about 1 ms).
        with _garbage_collection_paused():
            return self._create_transfers(events)

    def _create_transfers(self, events: Iterable[Transfer]) -> list[CreateTransferResult]:
        batch = validate_transfers(events)
        committed: list[CommittedBatch] = []
        with self.unit_of_work(committed) as (unit, meta):
            meta = self.expire_due(unit, meta, committed)
            prefetched = self._prefetch(unit, batch)
            now = self.clock()
            with unit.computing():
                outcome = state_machine.create_transfers(batch, prefetched, meta, now)
            if outcome.committed is not None:
                unit.save(outcome.committed)
                committed.append(outcome.committed)
        return outcome.results

    def apply_transfers_in_unit(
        self, unit: WriteUnit, meta: LedgerMeta, events: Sequence[Transfer]
    ) -> tuple[list[CreateTransferResult], CommittedBatch | None]:
        """Run a batch inside a caller's unit of work without saving it: the caller saves the
        outcome with its own records, or drops it, and commits once."""
        batch = validate_transfers(events)
        prefetched = self._prefetch(unit, batch)
        outcome = state_machine.create_transfers(batch, prefetched, meta, self.clock())
        return outcome.results, outcome.committed

    def apply_accounts_in_unit(
        self, unit: WriteUnit, meta: LedgerMeta, events: Sequence[Account]
    ) -> tuple[list[CreateAccountResult], CommittedBatch | None]:
        batch = validate_accounts(events)
        existing = self.accounts_in_unit(unit, {a.id for a in batch})
        outcome = state_machine.create_accounts(batch, existing, meta, self.clock())
        return outcome.results, outcome.committed

    def expire_pending_transfers(self) -> int:
        """Expire every pending transfer whose timeout has passed; return how many."""
        committed: list[CommittedBatch] = []
        with self.unit_of_work(committed) as (unit, meta):
            self.expire_due(unit, meta, committed)
        return sum(len(batch.expiries) for batch in committed)

    @contextmanager
    def unit_of_work(
        self, committed: list[CommittedBatch]
    ) -> Iterator[tuple[WriteUnit, LedgerMeta]]:
        """One write transaction; the account cache learns its outcome only once committed."""
        try:
            with self.store.write() as unit:
                meta = unit.meta()
                self.account_cache.synchronize(meta)
                yield unit, meta
        except BaseException:
            self.account_cache.forget()
            raise
        if committed:
            self.account_cache.remember_committed(committed, committed[-1].meta_after)

    @contextmanager
    def grouped_unit_of_work(
        self, committed: list[CommittedBatch]
    ) -> Iterator[tuple[GroupedWriteUnit, LedgerMeta]]:
        """One write transaction for a group of commands whose ledger batches are written as
        one (see `GroupedWriteUnit`). Save batches through the yielded unit and append them to
        `committed`, as in `unit_of_work`; at the end `committed` holds the expiries that ran
        first and the merged batch, the ones the database and the account cache agree on.
        The yielded meta is the one after those expiries. Like a large batch, a group
        allocates many small records: the cyclic collector is paused while it runs."""
        with _garbage_collection_paused(), self.unit_of_work(committed) as (unit, meta):
            # Expiry first, straight to the database, as its own journal entries: the group's
            # commands then decide on released reservations, and expiry never sees held state.
            meta = self.expire_due(unit, meta, committed)
            expired = len(committed)
            grouped = GroupedWriteUnit(unit)
            yield grouped, meta
            # Every batch the group committed must have gone through the grouped unit, or the
            # cache would learn of batch numbers the database never had.
            saved = committed[expired:]
            if len(saved) != len(grouped.held) or any(
                mine is not held for mine, held in zip(saved, grouped.held, strict=True)
            ):
                raise RuntimeError("a group's batches must be saved through the grouped unit")
            merged = grouped.write_held()
            committed[expired:] = [merged] if merged is not None else []

    def accounts_in_unit(self, unit: WriteUnit, ids: Collection[int]) -> dict[int, Account]:
        found, missing = self.account_cache.split(ids)
        if missing:
            read = unit.accounts_by_id(missing)
            self.account_cache.remember(read)
            found.update(read)
        return found

    def expire_due(
        self, unit: WriteUnit, meta: LedgerMeta, committed: list[CommittedBatch]
    ) -> LedgerMeta:
        while True:
            now = self.clock()
            due = unit.due_pending_transfers(
                state_machine.first_timestamp(meta, now), BATCH_EVENTS_MAX
            )
            if not due:
                return meta
            account_ids = {t.debit_account_id for t in due} | {t.credit_account_id for t in due}
            accounts = self.accounts_in_unit(unit, account_ids)
            expiry = state_machine.expire_pending_transfers(due, accounts, meta, now)
            assert expiry is not None
            unit.save(expiry)
            committed.append(expiry)
            # The batch that follows must see the balances the expiry released.
            self.account_cache.remember(expiry.accounts_updated)
            meta = expiry.meta_after

    def _prefetch(self, unit: WriteUnit, batch: Sequence[Transfer]) -> state_machine.Prefetched:
        pending_ids = set(map(_PENDING_ID, batch))
        pending_ids.discard(0)
        if batch and _all_ids_new(unit, batch):
            # Every id is new: none is stored and none failed before (the common case, and
            # no set of the batch's ids to build).
            transfers = unit.transfers_by_id(pending_ids) if pending_ids else {}
            failed: dict[int, str] = {}
        else:
            transfer_ids = set(map(_ID, batch))
            transfers = unit.transfers_by_id(transfer_ids | pending_ids)
            failed = unit.failed_results(transfer_ids)
        # Pending transfers created earlier in this same batch are not in the database yet;
        # the state machine finds them in its own working state.
        referenced = [transfers[i] for i in pending_ids if i in transfers]
        # A replayed post/void needs its pending transfer to compare against.
        referenced_by_replays = {
            t.pending_id
            for t in transfers.values()
            if t.pending_id and t.pending_id not in transfers
        }
        if referenced_by_replays:
            transfers.update(unit.transfers_by_id(referenced_by_replays))
        account_ids = set(map(_DEBIT_ACCOUNT_ID, batch))
        account_ids.update(map(_CREDIT_ACCOUNT_ID, batch))
        account_ids.update(t.debit_account_id for t in referenced)
        account_ids.update(t.credit_account_id for t in referenced)
        return state_machine.Prefetched(
            accounts=self.accounts_in_unit(unit, account_ids),
            transfers=transfers,
            pending_states=unit.pending_states(pending_ids) if pending_ids else {},
            failed_results=failed,
        )

    # Reads ------------------------------------------------------------------------------------

    def _expire_before_reading(self) -> None:
        # Pending transfers expire "without anyone calling": a read never shows a reservation
        # whose timeout has passed.
        meta = self.store.meta()
        if self.store.has_due_pending_transfers(state_machine.first_timestamp(meta, self.clock())):
            self.expire_pending_transfers()

    def lookup_accounts(self, ids: Sequence[int]) -> list[Account]:
        wanted = validate_ids(ids)
        self._expire_before_reading()
        found = self.store.lookup_accounts(set(wanted))
        return [found[i] for i in wanted if i in found]

    def lookup_transfers(self, ids: Sequence[int]) -> list[Transfer]:
        wanted = validate_ids(ids)
        found = self.store.lookup_transfers(set(wanted))
        return [found[i] for i in wanted if i in found]

    def get_account_transfers(self, account_filter: AccountFilter) -> list[Transfer]:
        account_filter = validate_account_filter(account_filter)
        if not account_filter_is_valid(account_filter):
            return []
        return self.store.account_transfers(account_filter, page_limit(account_filter.limit))

    def get_account_balances(self, account_filter: AccountFilter) -> list[AccountBalance]:
        account_filter = validate_account_filter(account_filter)
        if not account_filter_is_valid(account_filter):
            return []
        found = self.store.lookup_accounts({account_filter.account_id})
        account = found.get(account_filter.account_id)
        if account is None or not account.flags & AccountFlags.HISTORY:
            return []
        return self.store.account_balances(account_filter, page_limit(account_filter.limit))

    def query_accounts(self, query_filter: QueryFilter) -> list[Account]:
        query_filter = validate_query_filter(query_filter)
        if not query_filter_is_valid(query_filter):
            return []
        self._expire_before_reading()
        return self.store.query_accounts(query_filter, page_limit(query_filter.limit))

    def query_transfers(self, query_filter: QueryFilter) -> list[Transfer]:
        query_filter = validate_query_filter(query_filter)
        if not query_filter_is_valid(query_filter):
            return []
        return self.store.query_transfers(query_filter, page_limit(query_filter.limit))
