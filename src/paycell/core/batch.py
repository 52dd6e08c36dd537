"""What one committed batch changes: the value the state machine returns and storage writes.

The state machine never writes; it returns a `CommittedBatch` that lists every row to insert
or update. A storage adapter applies it in one transaction, so a batch is there in full or not
at all. Balance updates are aggregated: each touched account appears once, with its final
balances, however many transfers in the batch touched it.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import NamedTuple

from paycell.core.journal import Expiry, Failure, JournalEntry, batch_hash
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


def merge_batches(batches: Sequence[CommittedBatch]) -> CommittedBatch:
    """Consecutive committed batches as ONE batch with one journal entry: what group commit
    writes, so an account that many commands of a group touched (a hot merchant) is updated
    once and the journal gains one entry, not one per command.

    The batches must be a chain (each one's previous hash is the one before's hash), as the
    state machine produced them one after the other in a single unit of work. The merged
    batch takes the first one's number and previous hash and a hash recomputed over all
    their records, so saving it leaves the tables exactly as saving them one by one would,
    except for the journal, which `paycell verify` then checks as one entry."""
    assert batches, "nothing to merge"
    if len(batches) == 1:
        return batches[0]
    first = batches[0].journal
    for before, after in pairwise(batches):
        assert after.journal.batch_number == before.journal.batch_number + 1
        assert after.journal.previous_hash == before.journal.hash
        assert after.journal.timestamp_first > before.journal.timestamp_last
    kinds = list(dict.fromkeys(batch.kind for batch in batches))
    kind = "+".join(kinds)
    merged = CommittedBatch(kind=kind, journal=first)
    for batch in batches:
        merged.accounts_created += batch.accounts_created
        merged.transfers_created += batch.transfers_created
        merged.accounts_updated.update(batch.accounts_updated)
        merged.history += batch.history
        merged.expiries += batch.expiries
        merged.failures += batch.failures
        merged.pending_created.update(batch.pending_created)
        for pending_id, status in batch.pending_resolved.items():
            created = merged.pending_created.get(pending_id)
            if created is not None:
                # Created earlier in the group: insert it with its final status, as the
                # state machine does for one created and resolved within one batch.
                merged.pending_created[pending_id] = PendingState(status, created.expires_at)
            else:
                merged.pending_resolved[pending_id] = status
    merged.journal = JournalEntry(
        batch_number=first.batch_number,
        kind=kind,
        timestamp_first=first.timestamp_first,
        timestamp_last=batches[-1].journal.timestamp_last,
        event_count=sum(batch.journal.event_count for batch in batches),
        previous_hash=first.previous_hash,
        hash=batch_hash(
            first.previous_hash,
            first.batch_number,
            kind,
            merged.accounts_created,
            merged.transfers_created,
            merged.expiries,
            merged.failures,
        ),
    )
    return merged
