"""`paycell verify`: prove the books balance and the journal is untampered.

Three independent checks, each naming every discrepancy it finds:
1. **The hash chain.** Every journal entry links to the previous one, and recomputing each
   entry's hash from the rows it covers gives the stored hash. Every stored row is covered by
   exactly one entry (no row slipped in outside the journal).
2. **Balances equal the journal.** Each account's four stored balances and its closed flag
   equal what its transfers, their pending states and expiries sum to.
3. **Every ledger balances.** Per ledger (currency), total debits equal total credits, for
   posted and for pending amounts.

Where the store keeps its own statement index (SQLite's, filled in bulk), it must also list
every transfer on each side exactly once: statements must not lie even when balances add up.

Everything is read in one snapshot of the database, so verify can run while other processes
write: it checks the books as of the moment it started.
"""

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Final

from paycell.core.journal import GENESIS_HASH, batch_hash
from paycell.core.types import AccountFlags, PendingStatus, TransferFlags
from paycell.service.ports import LedgerStore

ProgressCallback = Callable[[str], None]
# (what is counted, how many done, how many in all), every few thousand records: for a live
# counter on a long verify (the CLI draws it in place on a terminal).
CounterCallback = Callable[[str, int, int], None]

# How often the counter is called.
_JOURNAL_ENTRIES_PER_COUNT: Final = 1_000
_ACCOUNTS_PER_COUNT: Final = 10_000


@dataclass(slots=True)
class LedgerTotals:
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    accounts: int = 0


@dataclass(slots=True)
class VerifyReport:
    discrepancies: list[str] = field(default_factory=list)
    journal_entries: int = 0
    accounts: int = 0
    transfers: int = 0
    ledgers: dict[int, LedgerTotals] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.discrepancies

    def render(self) -> str:
        lines = [
            f"journal entries: {self.journal_entries}",
            f"accounts: {self.accounts}",
            f"transfers: {self.transfers}",
        ]
        for ledger, totals in sorted(self.ledgers.items()):
            lines.append(
                f"ledger {ledger}: {totals.accounts} accounts, "
                f"posted debits {totals.debits_posted} = credits {totals.credits_posted}, "
                f"pending debits {totals.debits_pending} = credits {totals.credits_pending}"
            )
        if self.ok:
            lines.append("OK: every ledger balances, balances match the journal, chain intact")
        else:
            lines.append(f"FAILED: {len(self.discrepancies)} discrepancies")
            lines.extend(f"  - {d}" for d in self.discrepancies)
        return "\n".join(lines)


_PENDING = int(TransferFlags.PENDING)
_POST = int(TransferFlags.POST_PENDING_TRANSFER)
_VOID = int(TransferFlags.VOID_PENDING_TRANSFER)
_CLOSING_DEBIT = int(TransferFlags.CLOSING_DEBIT)
_CLOSING_CREDIT = int(TransferFlags.CLOSING_CREDIT)
_CLOSED = int(AccountFlags.CLOSED)


def verify(
    store: LedgerStore,
    progress: ProgressCallback | None = None,
    counter: CounterCallback | None = None,
) -> VerifyReport:
    report = VerifyReport()
    say = progress or (lambda _message: None)
    count = counter or (lambda _what, _done, _total: None)
    # One snapshot for every read: a batch that other processes commit meanwhile would
    # otherwise show in some reads and not in others, as discrepancies that are not there.
    with store.snapshot():
        say("checking the journal's hash chain")
        accounts = _check_chain(store, report, count)
        say("recomputing balances from the journal")
        _check_balances(store, report, count, accounts)
        say("checking the store's own indexes and logs against its records")
        report.discrepancies.extend(store.storage_discrepancies())
    return report


def _check_chain(store: LedgerStore, report: VerifyReport, count: CounterCallback) -> int:
    """Check the chain; returns how many accounts are stored."""
    entries = store.meta().batch_number
    previous_hash = GENESIS_HASH
    expected_number = 1
    covered = {"accounts": 0, "transfers": 0, "expiries": 0, "failures": 0}
    last_timestamp = 0
    for entry in store.journal_entries():
        report.journal_entries += 1
        if report.journal_entries % _JOURNAL_ENTRIES_PER_COUNT == 0:
            count("journal entries", report.journal_entries, entries)
        if entry.batch_number != expected_number:
            report.discrepancies.append(
                f"journal: expected batch {expected_number}, found batch {entry.batch_number}"
            )
        expected_number = entry.batch_number + 1
        if entry.previous_hash != previous_hash:
            report.discrepancies.append(
                f"journal batch {entry.batch_number}: previous_hash does not link to the "
                "batch before it"
            )
        if entry.timestamp_first <= last_timestamp:
            report.discrepancies.append(
                f"journal batch {entry.batch_number}: timestamps overlap the batch before it"
            )
        last_timestamp = entry.timestamp_last
        accounts, transfers, expiries, failures = store.batch_records(entry)
        covered["accounts"] += len(accounts)
        covered["transfers"] += len(transfers)
        covered["expiries"] += len(expiries)
        covered["failures"] += len(failures)
        if len(accounts) + len(transfers) + len(expiries) + len(failures) != entry.event_count:
            report.discrepancies.append(
                f"journal batch {entry.batch_number}: covers {entry.event_count} records, "
                f"found {len(accounts) + len(transfers) + len(expiries) + len(failures)}"
            )
        recomputed = batch_hash(
            entry.previous_hash,
            entry.batch_number,
            entry.kind,
            accounts,
            transfers,
            expiries,
            failures,
        )
        if recomputed != entry.hash:
            report.discrepancies.append(
                f"journal batch {entry.batch_number} ({entry.kind}): rows do not match the "
                "recorded hash (altered, inserted or deleted rows)"
            )
        previous_hash = entry.hash
    meta = store.meta()
    if meta.last_hash != previous_hash or meta.batch_number != expected_number - 1:
        report.discrepancies.append("journal: the ledger's chain head does not match the journal")
    stored_accounts = sum(1 for _ in store.all_accounts())
    if stored_accounts != covered["accounts"]:
        report.discrepancies.append(
            f"journal: {stored_accounts} accounts stored but {covered['accounts']} covered "
            "by the journal"
        )
    report.transfers = sum(1 for _ in store.all_transfers())
    if report.transfers != covered["transfers"]:
        report.discrepancies.append(
            f"journal: {report.transfers} transfers stored but {covered['transfers']} covered "
            "by the journal"
        )
    return stored_accounts


@dataclass(slots=True)
class _SideSums:
    """What one side (debits or credits) of an account's transfers adds up to."""

    pending: int = 0
    posted: int = 0
    # Pending or posted closing transfers on this side, each holding the account closed.
    closing_holds: int = 0


_NOTHING: Final = _SideSums()


def _side_sums(
    movements: Iterator[tuple[int, int, int, int, int | None]],
    closing_flag: int,
    report: VerifyReport | None,
) -> Iterator[tuple[int, _SideSums]]:
    """Each account's sums on one side, from its movements in account order. Transfers that
    lost their pending state are named in `report` (given for one side only: once each)."""
    account_id: int | None = None
    sums = _SideSums()
    for mover, transfer_id, amount, flags, status in movements:
        if mover != account_id:
            if account_id is not None:
                yield account_id, sums
            account_id, sums = mover, _SideSums()
        if flags & _PENDING:
            if status is None:
                if report is not None:
                    report.discrepancies.append(
                        f"transfer {transfer_id}: pending without a pending state"
                    )
                continue
            if status == PendingStatus.PENDING:
                sums.pending += amount
            if status in (PendingStatus.PENDING, PendingStatus.POSTED) and flags & closing_flag:
                sums.closing_holds += 1
        elif flags & _POST or not flags & _VOID:
            sums.posted += amount
    if account_id is not None:
        yield account_id, sums


class _Merged:
    """One side's sums, taken in step with the accounts (both in id order)."""

    def __init__(self, sides: Iterator[tuple[int, _SideSums]], missing: list[int]) -> None:
        self._sides = sides
        self._missing = missing
        self._next = next(sides, None)

    def take(self, account_id: int) -> _SideSums:
        """The sums of `account_id`; the sums of accounts before it name missing accounts."""
        while self._next is not None and self._next[0] < account_id:
            self._missing.append(self._next[0])
            self._next = next(self._sides, None)
        if self._next is not None and self._next[0] == account_id:
            sums = self._next[1]
            self._next = next(self._sides, None)
            return sums
        return _NOTHING

    def rest(self) -> None:
        while self._next is not None:
            self._missing.append(self._next[0])
            self._next = next(self._sides, None)


def _check_balances(
    store: LedgerStore, report: VerifyReport, count: CounterCallback, accounts: int
) -> None:
    # Accounts and each side's movements stream in account id order and are merged, so memory
    # does not grow with the number of accounts or transfers (the database sorts).
    missing: list[int] = []
    debit_movements = store.account_movements("debit")
    credit_movements = store.account_movements("credit")
    try:
        _merge_balances(store, report, debit_movements, credit_movements, missing, count, accounts)
    finally:
        # Now, inside the snapshot, not whenever the generators are collected: on PostgreSQL
        # each holds a server-side cursor of this transaction.
        debit_movements.close()
        credit_movements.close()
    for account_id in sorted(set(missing)):
        report.discrepancies.append(f"account {account_id}: transfers name it but it is missing")
    _check_ledger_totals(report)


Movements = Generator[tuple[int, int, int, int, int | None], None, None]


def _merge_balances(
    store: LedgerStore,
    report: VerifyReport,
    debit_movements: Movements,
    credit_movements: Movements,
    missing: list[int],
    count: CounterCallback,
    accounts: int,
) -> None:
    debits = _Merged(_side_sums(debit_movements, _CLOSING_DEBIT, report), missing)
    credits = _Merged(_side_sums(credit_movements, _CLOSING_CREDIT, None), missing)
    for account in store.all_accounts():
        report.accounts += 1
        if report.accounts % _ACCOUNTS_PER_COUNT == 0:
            count("accounts", report.accounts, accounts)
        totals = report.ledgers.setdefault(account.ledger, LedgerTotals())
        totals.accounts += 1
        totals.debits_pending += account.debits_pending
        totals.debits_posted += account.debits_posted
        totals.credits_pending += account.credits_pending
        totals.credits_posted += account.credits_posted
        stored = [
            account.debits_pending,
            account.debits_posted,
            account.credits_pending,
            account.credits_posted,
        ]
        debited = debits.take(account.id)
        credited = credits.take(account.id)
        want = [debited.pending, debited.posted, credited.pending, credited.posted]
        if stored != want:
            report.discrepancies.append(
                f"account {account.id}: stored balances (debits pending/posted, credits "
                f"pending/posted) {stored} but the journal sums to {want}"
            )
        if debited.closing_holds + credited.closing_holds and not account.flags & _CLOSED:
            report.discrepancies.append(
                f"account {account.id}: a closing transfer holds it closed but it is open"
            )
    debits.rest()
    credits.rest()


def _check_ledger_totals(report: VerifyReport) -> None:
    for ledger, totals in sorted(report.ledgers.items()):
        if totals.debits_posted != totals.credits_posted:
            report.discrepancies.append(
                f"ledger {ledger}: posted debits {totals.debits_posted} != posted credits "
                f"{totals.credits_posted}"
            )
        if totals.debits_pending != totals.credits_pending:
            report.discrepancies.append(
                f"ledger {ledger}: pending debits {totals.debits_pending} != pending credits "
                f"{totals.credits_pending}"
            )
