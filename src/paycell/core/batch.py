"""What one committed batch changes: the value the state machine returns and storage writes.

The state machine never writes; it returns a `CommittedBatch` that lists every row to insert
or update. A storage adapter applies it in one transaction, so a batch is there in full or not
at all. Balance updates are aggregated: each touched account appears once, with its final
balances, however many transfers in the batch touched it.
"""

from dataclasses import dataclass, field
from typing import NamedTuple

from paycell.core.journal import Expiry, Failure, JournalEntry
from paycell.core.types import Account, AccountBalance, Transfer


class PendingState(NamedTuple):
    """The fate of a pending transfer: status (`PendingStatus`) and when its timeout ends."""

    status: int
    # Nanosecond timestamp at which the pending transfer expires; 0 means it never does.
    expires_at: int


class LedgerMeta(NamedTuple):
    """The ledger's clock and chain head, read and advanced under the writer lock."""

    last_timestamp: int
    batch_number: int
    last_hash: bytes


class HistoryRow(NamedTuple):
    account_id: int
    balance: AccountBalance


@dataclass(slots=True)
class CommittedBatch:
    kind: str
    journal: JournalEntry
    accounts_created: list[Account] = field(default_factory=list)
    transfers_created: list[Transfer] = field(default_factory=list)
    # Final state (balances and flags) of every pre-existing account the batch changed.
    accounts_updated: dict[int, Account] = field(default_factory=dict)
    # New pending transfers: id -> state.
    pending_created: dict[int, PendingState] = field(default_factory=dict)
    # Pending transfers that were posted, voided or expired: id -> new status.
    pending_resolved: dict[int, int] = field(default_factory=dict)
    history: list[HistoryRow] = field(default_factory=list)
    expiries: list[Expiry] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def meta_after(self) -> LedgerMeta:
        return LedgerMeta(self.journal.timestamp_last, self.journal.batch_number, self.journal.hash)

    @property
    def changes_nothing(self) -> bool:
        return not (
            self.accounts_created or self.transfers_created or self.expiries or self.failures
        )
