"""A process-local cache of accounts, valid exactly while no other writer has committed.

Every committed batch advances the ledger's batch number under the writer lock. The cache
remembers the batch number its contents correspond to; when a write transaction reads a
different number, another process (or a rolled-back attempt) intervened and the cache is
dropped. While this process is the only writer, a batch's accounts come from memory instead
of the database: the prefetch of a large batch of random accounts is most of its reads.

The cache is bounded (`ACCOUNT_CACHE_CAPACITY`); beyond it, it starts over rather than track
recency, which keeps the hot path to plain dict operations.
"""

from collections.abc import Collection, Iterable, Mapping
from typing import Final

from paycell.core.batch import CommittedBatch, LedgerMeta
from paycell.core.types import Account

# About 250 bytes an account: 200,000 accounts is some 50 MB, a bounded price for keeping a
# large working set of wallets and merchants out of the per-batch reads.
ACCOUNT_CACHE_CAPACITY: Final = 200_000


class AccountCache:
    def __init__(self, capacity: int = ACCOUNT_CACHE_CAPACITY) -> None:
        self.capacity = capacity
        self._accounts: dict[int, Account] = {}
        self._batch_number: int | None = None

    def synchronize(self, meta: LedgerMeta) -> None:
        """Call under the writer lock, before reading: drops everything if anyone else wrote."""
        if meta.batch_number != self._batch_number:
            self._accounts.clear()
            self._batch_number = meta.batch_number

    def split(self, ids: Collection[int]) -> tuple[dict[int, Account], list[int]]:
        """The cached accounts among `ids`, and the ids to read from the database."""
        accounts = self._accounts
        found: dict[int, Account] = {}
        missing: list[int] = []
        for account_id in ids:
            account = accounts.get(account_id)
            if account is None:
                missing.append(account_id)
            else:
                found[account_id] = account
        return found, missing

    def remember_read(self, accounts: Iterable[Account]) -> None:
        self.remember({account.id: account for account in accounts})

    def remember(self, accounts_by_id: Mapping[int, Account]) -> None:
        """Accounts as read or committed, by id (one C-level dict update: a batch of 8,190
        updates some 8,000 accounts)."""
        if len(self._accounts) >= self.capacity:
            self._accounts.clear()
        self._accounts.update(accounts_by_id)

    def remember_committed(self, batches: Iterable[CommittedBatch], meta: LedgerMeta) -> None:
        """After a commit: the batches' final account states, as of the new batch number."""
        for batch in batches:
            self.remember_read(batch.accounts_created)
            self.remember(batch.accounts_updated)
        self._batch_number = meta.batch_number

    def forget(self) -> None:
        self._accounts.clear()
        self._batch_number = None
