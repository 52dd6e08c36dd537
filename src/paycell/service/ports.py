"""The storage port: what the ledger service needs from a database, and nothing more.

Every backend (SQLite, PostgreSQL) implements this contract and is tested by one shared
contract suite. Writes happen inside `LedgerStore.write()`, a unit of work that holds the
database's single writer lock from the first read to the commit: the prefetch sees the state
the batch will commit on top of, several processes never interleave inside a batch (no lost
update), and one lock taken in one order cannot deadlock.

Nothing is acknowledged before the unit of work's `commit` returns, and a backend's commit
returns only once the transaction is durable (SQLite WAL with synchronous=FULL, PostgreSQL with
synchronous_commit on).
"""

from collections.abc import Collection, Generator, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from paycell.core.batch import CommittedBatch, LedgerMeta, PendingState
from paycell.core.journal import Expiry, Failure, JournalEntry
from paycell.core.types import (
    Account,
    AccountBalance,
    AccountFilter,
    QueryFilter,
    Transfer,
)


class WriteUnit(Protocol):
    """One write transaction under the writer lock. Reads here see the locked state."""

    def meta(self) -> LedgerMeta: ...

    def accounts_by_id(self, ids: Collection[int]) -> dict[int, Account]: ...

    def transfers_by_id(self, ids: Collection[int]) -> dict[int, Transfer]: ...

    def pending_states(self, ids: Collection[int]) -> dict[int, PendingState]: ...

    def failed_results(self, ids: Collection[int]) -> dict[int, str]:
        """Ids remembered as failed with a transient result, mapped to that result's name."""
        ...

    def highest_transfer_id(self, below: int | None = None) -> int:
        """The highest id of a stored transfer or of one remembered as failed, among those
        below `below` (all when None); 0 if none. A batch whose ids are all higher needs
        neither lookup: ids that grow over time (as TigerBeetle recommends, and as most id
        schemes do) are known new from one index read instead of a lookup per id. `below`
        lets ids that grow in several ranges at once (the platform's, one range per kind of
        transfer) be checked range by range."""
        ...

    def due_pending_transfers(self, timestamp: int, limit: int) -> list[Transfer]:
        """Still-pending transfers whose expiry is at or before `timestamp`, oldest first."""
        ...

    def save(self, batch: CommittedBatch) -> None:
        """Write every row of the batch and advance the ledger meta; not yet committed."""
        ...

    def computing(self) -> AbstractContextManager[None]:
        """Wraps the pure core's run over a batch, after its reads and before its writes: the
        store may meanwhile do work of its own in this transaction, on another core (SQLite
        fills its statement index). Call nothing else of the unit inside."""
        ...


class LedgerStore(Protocol):
    """A ledger database. One instance per process; safe to share across processes."""

    url: str

    def write(self) -> AbstractContextManager[WriteUnit]:
        """Begin a write transaction holding the writer lock; commit on a clean exit, durably,
        and roll back on an exception."""
        ...

    def has_due_pending_transfers(self, timestamp: int) -> bool: ...

    def lookup_accounts(self, ids: Collection[int]) -> dict[int, Account]: ...

    def lookup_transfers(self, ids: Collection[int]) -> dict[int, Transfer]: ...

    def account_transfers(self, account_filter: AccountFilter, limit: int) -> list[Transfer]: ...

    def account_balances(
        self, account_filter: AccountFilter, limit: int
    ) -> list[AccountBalance]: ...

    def query_accounts(self, query_filter: QueryFilter, limit: int) -> list[Account]: ...

    def query_transfers(self, query_filter: QueryFilter, limit: int) -> list[Transfer]: ...

    def pending_state(self, transfer_id: int) -> PendingState | None: ...

    # What `paycell verify` reads: everything, streamed, in one snapshot.
    def snapshot(self) -> AbstractContextManager[None]:
        """Reads made inside see one committed state of the database, whatever other
        processes commit meanwhile. Not inside a write, and writes wait on this store (not on
        others) until it ends."""
        ...

    def meta(self) -> LedgerMeta: ...

    def journal_entries(self) -> Iterator[JournalEntry]: ...

    def batch_records(
        self, entry: JournalEntry
    ) -> tuple[list[Account], list[Transfer], list[Expiry], list[Failure]]:
        """The rows a journal entry covers, as created, in timestamp order."""
        ...

    def all_accounts(self) -> Iterator[Account]:
        """Every account, in id order."""
        ...

    def account_movements(
        self, side: str
    ) -> Generator[tuple[int, int, int, int, int | None], None, None]:
        """(account id, transfer id, amount, transfer flags, pending status or None) of every
        transfer on `side` ("debit" or "credit"), in account id order, streamed: verify sums
        each account's movements alongside `all_accounts` without holding them all. Read both
        sides inside one `snapshot()`, and close what is left unread before it ends."""
        ...

    def all_transfers(self) -> Iterator[Transfer]: ...

    def all_pending_states(self) -> Iterator[tuple[int, PendingState]]: ...

    def storage_discrepancies(self) -> list[str]:
        """Where what the store derives itself (SQLite's statement index and account change
        log) disagrees with its records; none when the database maintains it (PostgreSQL)."""
        ...

    def close(self) -> None: ...
