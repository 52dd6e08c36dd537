"""`paycell.Ledger`: the ledger as a library, on an SQLite file or a PostgreSQL database.

    >>> from paycell import Ledger, Account, Transfer
    >>> with Ledger(":memory:") as ledger:
    ...     ledger.create_accounts([Account(id=1, ledger=156, code=1),
    ...                             Account(id=2, ledger=156, code=1)])
    ...     ledger.create_transfers([Transfer(id=10, debit_account_id=1, credit_account_id=2,
    ...                                       amount=12_34, ledger=156, code=1)])
    ...     [a.credits_posted for a in ledger.lookup_accounts([2])]
    [<CreateAccountResult.OK: 'ok'>, <CreateAccountResult.OK: 'ok'>]
    [<CreateTransferResult.OK: 'ok'>]
    [1234]

Every write returns one result per event, in order, after the batch has committed durably.
"""

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

from paycell.adapters.storage.factory import open_store
from paycell.core.results import CreateAccountResult, CreateTransferResult
from paycell.core.types import (
    Account,
    AccountBalance,
    AccountFilter,
    QueryFilter,
    Transfer,
)
from paycell.service.ledger_service import LedgerService
from paycell.service.verify import CounterCallback, ProgressCallback, VerifyReport, verify

DEFAULT_DATABASE = "paycell.db"


class Ledger:
    """A double-entry ledger with TigerBeetle's semantics, stored in SQLite or PostgreSQL.

    `database` is a file path (SQLite, created if missing; ":memory:" for a throwaway one) or
    a `postgresql://` URL. `clock` returns nanoseconds since the epoch; tests and simulations
    pass their own to move time.
    """

    def __init__(
        self,
        database: str | Path = DEFAULT_DATABASE,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store = open_store(str(database))
        self.service = LedgerService(self.store, clock)

    @property
    def url(self) -> str:
        return self.store.url

    def create_accounts(self, accounts: Iterable[Account]) -> list[CreateAccountResult]:
        """Create up to 8,190 accounts in one durable batch; one result per account."""
        return self.service.create_accounts(accounts)

    def create_transfers(self, transfers: Iterable[Transfer]) -> list[CreateTransferResult]:
        """Apply up to 8,190 transfers in one durable batch; one result per transfer."""
        return self.service.create_transfers(transfers)

    def expire_pending_transfers(self) -> int:
        """Release pending transfers whose timeout has passed now; returns how many.

        Writes and account reads do this on their own; call it to expire eagerly.
        """
        return self.service.expire_pending_transfers()

    def lookup_accounts(self, ids: Sequence[int]) -> list[Account]:
        """The accounts that exist among `ids`, in the order asked; missing ids are omitted."""
        return self.service.lookup_accounts(ids)

    def lookup_transfers(self, ids: Sequence[int]) -> list[Transfer]:
        """The transfers that exist among `ids`, in the order asked; missing ids are omitted."""
        return self.service.lookup_transfers(ids)

    def get_account_transfers(self, account_filter: AccountFilter) -> list[Transfer]:
        """An account's statement: its transfers matching the filter, one page."""
        return self.service.get_account_transfers(account_filter)

    def get_account_balances(self, account_filter: AccountFilter) -> list[AccountBalance]:
        """Point-in-time balances of an account with the history flag, one page."""
        return self.service.get_account_balances(account_filter)

    def query_accounts(self, query_filter: QueryFilter) -> list[Account]:
        return self.service.query_accounts(query_filter)

    def query_transfers(self, query_filter: QueryFilter) -> list[Transfer]:
        return self.service.query_transfers(query_filter)

    def verify(
        self, progress: ProgressCallback | None = None, counter: CounterCallback | None = None
    ) -> VerifyReport:
        """Check that every ledger balances, balances match the journal, the chain is intact.

        `progress` hears each step; `counter`, if given, hears (what, done, total) every few
        thousand records, for a live counter on a large ledger."""
        return verify(self.store, progress, counter)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
