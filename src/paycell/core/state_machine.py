"""The ledger state machine: a pure function from (prefetched state, batch, time) to outcome.

Design, after TigerBeetle's state machine:
- **Prefetch, then commit.** The service loads every account, transfer and pending state a
  batch can touch (`Prefetched`), then calls `create_transfers` once. Nothing here reads a
  database or a clock; the batch's first timestamp is an argument.
- **Outcomes are values.** Each event gets a `CreateTransferResult`; the whole batch yields a
  `CommittedBatch` listing every row to write. Broken contracts (a missing prefetch, a balance
  going negative) are assertions: they are bugs, not outcomes.
- **Linked chains** are applied tentatively with an undo scope: the first failure rolls the
  chain's earlier events back and marks them `linked_event_failed`.
- **Aggregated writes.** Balances live in one working row per account for the whole batch, so a
  hot account receiving thousands of transfers in a batch is written once.
- **A compiled fast path** (`_fastpath.c`, through `paycell.core.compiled`) applies runs of
  plain transfers sure to succeed; it hands every other event back to the Python loop here,
  which stays the definition of every rule. Property tests hold the two to the same outcome.

The rules, their order and the result names follow TigerBeetle 0.16 (docs/ledger.md lists the
deliberate differences). Amounts and balances are Python ints checked against the unsigned
128-bit range, so overflow results are reported exactly where TigerBeetle reports them.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from paycell.core import compiled
from paycell.core.batch import CommittedBatch, HistoryRow, LedgerMeta, PendingState
from paycell.core.journal import Expiry, Failure, JournalEntry, batch_hash
from paycell.core.limits import NANOSECONDS_PER_SECOND, UINT128_MAX
from paycell.core.results import (
    TRANSIENT_TRANSFER_RESULTS,
    CreateAccountResult,
    CreateTransferResult,
)
from paycell.core.types import (
    ACCOUNT_FLAGS_KNOWN,
    Account,
    AccountBalance,
    AccountFlags,
    PendingStatus,
    Transfer,
    TransferFlags,
)

_R = CreateTransferResult
_A = CreateAccountResult

# Flag bits as plain ints: IntFlag arithmetic costs microseconds on the hot path.
_LINKED = int(TransferFlags.LINKED)
_PENDING = int(TransferFlags.PENDING)
_POST = int(TransferFlags.POST_PENDING_TRANSFER)
_VOID = int(TransferFlags.VOID_PENDING_TRANSFER)
_BALANCING_DEBIT = int(TransferFlags.BALANCING_DEBIT)
_BALANCING_CREDIT = int(TransferFlags.BALANCING_CREDIT)
_CLOSING_DEBIT = int(TransferFlags.CLOSING_DEBIT)
_CLOSING_CREDIT = int(TransferFlags.CLOSING_CREDIT)
# paycell does not support imported events, so the imported bit is reserved like the padding.
_TRANSFER_FLAGS_SUPPORTED = (
    _LINKED
    | _PENDING
    | _POST
    | _VOID
    | _BALANCING_DEBIT
    | _BALANCING_CREDIT
    | _CLOSING_DEBIT
    | _CLOSING_CREDIT
)
_ACCOUNT_FLAGS_SUPPORTED = ACCOUNT_FLAGS_KNOWN & ~int(AccountFlags.IMPORTED)
_DEBITS_MUST_NOT_EXCEED_CREDITS = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_CREDITS_MUST_NOT_EXCEED_DEBITS = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
_HISTORY = int(AccountFlags.HISTORY)
_CLOSED = int(AccountFlags.CLOSED)
_ACCOUNT_LINKED = int(AccountFlags.LINKED)
_MAX = UINT128_MAX
# Expiry timestamps must stay within the signed 64-bit range every backend can store.
_TIMESTAMP_LIMIT = (1 << 63) - 1

# A working balance row is the account's fields as a mutable list, in `Account` field order:
# `list(account)` builds it and `tuple.__new__(Account, row)` turns it back into the updated
# account, each in one C call. A list, not an object, because it is touched once per transfer
# side. Only the balances and the flags ever change.
_DP, _DPO, _CP, _CPO = 1, 2, 3, 4
_LEDGER = 9
_FLAGS = 11
assert Account._fields[_DP : _CPO + 1] == (
    "debits_pending",
    "debits_posted",
    "credits_pending",
    "credits_posted",
)
assert Account._fields[_LEDGER] == "ledger"
assert Account._fields[_FLAGS] == "flags"

# Whether create_transfers may take the plain-transfer fast path. Tests switch it off to check
# that the fast path and the general path agree; nothing else should.
_FAST_PATH = True

_new_tuple = tuple.__new__


@dataclass(slots=True)
class Prefetched:
    """Everything a transfer batch may read, loaded by the service before calling the core.

    `accounts` holds every debit and credit account named by the batch and by the pending
    transfers it references; `transfers` every existing transfer whose id is the id or the
    pending_id of an event; `pending_states` the state of each of those that is pending;
    `failed_results` the ids remembered as failed.
    """

    accounts: dict[int, Account] = field(default_factory=dict)
    transfers: dict[int, Transfer] = field(default_factory=dict)
    pending_states: dict[int, PendingState] = field(default_factory=dict)
    failed_results: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class TransferBatchOutcome:
    results: list[CreateTransferResult]
    committed: CommittedBatch | None


@dataclass(slots=True)
class AccountBatchOutcome:
    results: list[CreateAccountResult]
    committed: CommittedBatch | None


def first_timestamp(meta: LedgerMeta, now: int) -> int:
    """The timestamp of a batch's first event: after everything committed, and not before now.

    Ledger timestamps are strictly increasing even if the wall clock steps back.
    """
    return max(meta.last_timestamp + 1, now)


def _journal_entry(
    meta: LedgerMeta,
    kind: str,
    timestamp_first: int,
    timestamp_last: int,
    accounts: Sequence[Account],
    transfers: Sequence[Transfer],
    expiries: Sequence[Expiry],
    failures: Sequence[Failure],
) -> JournalEntry:
    batch_number = meta.batch_number + 1
    return JournalEntry(
        batch_number=batch_number,
        kind=kind,
        timestamp_first=timestamp_first,
        timestamp_last=timestamp_last,
        event_count=len(accounts) + len(transfers) + len(expiries) + len(failures),
        previous_hash=meta.last_hash,
        hash=batch_hash(
            meta.last_hash, batch_number, kind, accounts, transfers, expiries, failures
        ),
    )


# --------------------------------------------------------------------------------- accounts


def create_accounts(
    events: Sequence[Account],
    existing: dict[int, Account],
    meta: LedgerMeta,
    now: int,
) -> AccountBatchOutcome:
    """Apply a batch of account creations. `existing` holds every prefetched account by id."""
    count = len(events)
    timestamp_base = first_timestamp(meta, now)
    results: list[CreateAccountResult] = []
    created: dict[int, Account] = {}
    chain_start: int | None = None
    chain_broken = False
    chain_created: list[int] = []

    for index, event in enumerate(events):
        linked = bool(event.flags & _ACCOUNT_LINKED)
        result: CreateAccountResult | None = None
        if linked:
            if chain_start is None:
                chain_start = index
                chain_broken = False
                chain_created = []
            if index == count - 1:
                result = _A.LINKED_EVENT_CHAIN_OPEN
        if result is None and chain_broken:
            result = _A.LINKED_EVENT_FAILED
        if result is None and event.timestamp != 0:
            result = _A.TIMESTAMP_MUST_BE_ZERO
        if result is None:
            result = _create_account(event, existing, created, timestamp_base + index)
            if result is _A.OK and chain_start is not None:
                chain_created.append(event.id)
        if result is not _A.OK and chain_start is not None and not chain_broken:
            chain_broken = True
            for account_id in chain_created:
                del created[account_id]
            for earlier in range(chain_start, index):
                results[earlier] = _A.LINKED_EVENT_FAILED
        results.append(result)
        if chain_start is not None and (not linked or result is _A.LINKED_EVENT_CHAIN_OPEN):
            chain_start = None
            chain_broken = False

    accounts = sorted(created.values(), key=lambda account: account.timestamp)
    if not accounts:
        return AccountBatchOutcome(results, None)
    journal = _journal_entry(
        meta, "accounts", accounts[0].timestamp, accounts[-1].timestamp, accounts, [], [], []
    )
    return AccountBatchOutcome(
        results, CommittedBatch(kind="accounts", journal=journal, accounts_created=accounts)
    )


def _create_account(
    a: Account, existing: dict[int, Account], created: dict[int, Account], timestamp: int
) -> CreateAccountResult:
    if a.reserved != 0:
        return _A.RESERVED_FIELD
    if a.flags & ~_ACCOUNT_FLAGS_SUPPORTED:
        return _A.RESERVED_FLAG
    if a.id == 0:
        return _A.ID_MUST_NOT_BE_ZERO
    if a.id == _MAX:
        return _A.ID_MUST_NOT_BE_INT_MAX
    found = created.get(a.id) or existing.get(a.id)
    if found is not None:
        return _account_exists(a, found)
    if a.flags & _DEBITS_MUST_NOT_EXCEED_CREDITS and a.flags & _CREDITS_MUST_NOT_EXCEED_DEBITS:
        return _A.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if a.debits_pending != 0:
        return _A.DEBITS_PENDING_MUST_BE_ZERO
    if a.debits_posted != 0:
        return _A.DEBITS_POSTED_MUST_BE_ZERO
    if a.credits_pending != 0:
        return _A.CREDITS_PENDING_MUST_BE_ZERO
    if a.credits_posted != 0:
        return _A.CREDITS_POSTED_MUST_BE_ZERO
    if a.ledger == 0:
        return _A.LEDGER_MUST_NOT_BE_ZERO
    if a.code == 0:
        return _A.CODE_MUST_NOT_BE_ZERO
    created[a.id] = a._replace(timestamp=timestamp)
    return _A.OK


def _account_exists(a: Account, e: Account) -> CreateAccountResult:
    if a.flags != e.flags:
        return _A.EXISTS_WITH_DIFFERENT_FLAGS
    if a.user_data_128 != e.user_data_128:
        return _A.EXISTS_WITH_DIFFERENT_USER_DATA_128
    if a.user_data_64 != e.user_data_64:
        return _A.EXISTS_WITH_DIFFERENT_USER_DATA_64
    if a.user_data_32 != e.user_data_32:
        return _A.EXISTS_WITH_DIFFERENT_USER_DATA_32
    if a.ledger != e.ledger:
        return _A.EXISTS_WITH_DIFFERENT_LEDGER
    if a.code != e.code:
        return _A.EXISTS_WITH_DIFFERENT_CODE
    return _A.EXISTS


# -------------------------------------------------------------------------------- transfers


def _history_row(account_id: int, row: list[int], timestamp: int) -> HistoryRow:
    # Built with tuple.__new__: the named tuples' own constructors cost a Python call each.
    balance = _new_tuple(AccountBalance, (row[_DP], row[_DPO], row[_CP], row[_CPO], timestamp))
    return _new_tuple(HistoryRow, (account_id, balance))


class _TransferBatch:
    """Working state of one transfer batch, with an undo scope for the open linked chain."""

    __slots__ = (
        "accounts",
        "balances",
        "chain_balances",
        "chain_created_count",
        "chain_history_count",
        "chain_pending",
        "created",
        "created_by_id",
        "failed",
        "history",
        "in_chain",
        "pending_created",
        "pending_resolved",
        "pending_states",
        "transfers",
    )

    def __init__(self, prefetched: Prefetched) -> None:
        self.accounts = prefetched.accounts
        self.transfers = prefetched.transfers
        self.pending_states = prefetched.pending_states
        self.failed = prefetched.failed_results
        self.balances: dict[int, list[int]] = {}
        self.created: list[Transfer] = []
        self.created_by_id: dict[int, Transfer] = {}
        self.history: list[HistoryRow] = []
        self.pending_created: dict[int, PendingState] = {}
        self.pending_resolved: dict[int, int] = {}
        self.in_chain = False
        self.chain_balances: dict[int, list[int]] = {}
        self.chain_pending: dict[int, tuple[PendingState | None, bool, int | None]] = {}
        self.chain_created_count = 0
        self.chain_history_count = 0

    # Chain scope ---------------------------------------------------------------------------

    def open_chain(self) -> None:
        # The chain's undo records are empty here: close_chain leaves them so.
        assert not self.chain_balances
        assert not self.chain_pending
        self.in_chain = True
        self.chain_created_count = len(self.created)
        self.chain_history_count = len(self.history)

    def close_chain(self) -> None:
        self.in_chain = False
        self.chain_balances.clear()
        self.chain_pending.clear()

    def roll_back_chain(self) -> None:
        for account_id, saved in self.chain_balances.items():
            self.balances[account_id] = saved
        for transfer in self.created[self.chain_created_count :]:
            del self.created_by_id[transfer.id]
        del self.created[self.chain_created_count :]
        del self.history[self.chain_history_count :]
        for pending_id, (state, was_created, resolved) in self.chain_pending.items():
            if state is None:
                self.pending_states.pop(pending_id, None)
            else:
                self.pending_states[pending_id] = state
            if was_created and state is not None:
                self.pending_created[pending_id] = state
            else:
                self.pending_created.pop(pending_id, None)
            if resolved is None:
                self.pending_resolved.pop(pending_id, None)
            else:
                self.pending_resolved[pending_id] = resolved
        self.close_chain()

    # State access ----------------------------------------------------------------------------

    def balance(self, account_id: int) -> list[int]:
        """The working balance row of an account, saved for rollback on first touch in a chain."""
        row = self.balances.get(account_id)
        if row is None:
            row = self.balances[account_id] = list(self.accounts[account_id])
        if self.in_chain and account_id not in self.chain_balances:
            self.chain_balances[account_id] = row.copy()
        return row

    def transfer(self, transfer_id: int) -> Transfer | None:
        found = self.created_by_id.get(transfer_id)
        return found if found is not None else self.transfers.get(transfer_id)

    def set_pending_state(self, pending_id: int, state: PendingState, *, created: bool) -> None:
        if self.in_chain and pending_id not in self.chain_pending:
            self.chain_pending[pending_id] = (
                self.pending_states.get(pending_id),
                pending_id in self.pending_created,
                self.pending_resolved.get(pending_id),
            )
        self.pending_states[pending_id] = state
        if created:
            self.pending_created[pending_id] = state
        else:
            self.pending_resolved[pending_id] = state.status
            if pending_id in self.pending_created:
                # Created and resolved in the same batch: insert it with its final status.
                self.pending_created[pending_id] = state

    def record(self, transfer: Transfer, dr: list[int], cr: list[int]) -> None:
        self.created.append(transfer)
        self.created_by_id[transfer.id] = transfer
        if (dr[_FLAGS] | cr[_FLAGS]) & _HISTORY:
            self.record_history(transfer, dr, cr)

    def record_history(self, transfer: Transfer, dr: list[int], cr: list[int]) -> None:
        """The balances after `transfer` of each of its accounts that keeps a history."""
        if dr[_FLAGS] & _HISTORY:
            self.history.append(_history_row(transfer.debit_account_id, dr, transfer.timestamp))
        if cr[_FLAGS] & _HISTORY:
            self.history.append(_history_row(transfer.credit_account_id, cr, transfer.timestamp))

    def updated_accounts(self) -> dict[int, Account]:
        if compiled.updated_accounts is not None:
            found = compiled.updated_accounts(self.balances, self.accounts, Account)
            if found is not None:
                return found
        updated: dict[int, Account] = {}
        accounts = self.accounts
        for account_id, row in self.balances.items():
            after = _new_tuple(Account, row)
            # A row is made when an account is touched, even by a transfer that then fails.
            if after == accounts[account_id]:
                continue
            assert 0 <= row[_DP] <= _MAX, "debits pending out of range"
            assert 0 <= row[_CP] <= _MAX, "credits pending out of range"
            updated[account_id] = after
        return updated


def create_transfers(
    events: Sequence[Transfer],
    prefetched: Prefetched,
    meta: LedgerMeta,
    now: int,
) -> TransferBatchOutcome:
    """Apply a batch of transfers on top of the prefetched state at time `now` (nanoseconds)."""
    count = len(events)
    timestamp_base = first_timestamp(meta, now)
    batch = _TransferBatch(prefetched)
    # Enum members as locals: looking one up on its class costs as much as a dict lookup.
    ok = _R.OK
    chain_open = _R.LINKED_EVENT_CHAIN_OPEN
    last_index = count - 1
    # Filled in as events fail; most succeed, so an append per event is saved.
    results: list[CreateTransferResult] = [ok] * count
    failures: list[Failure] = []
    chain_start: int | None = None
    chain_broken = False

    # The plain-transfer fast path below works on these locals rather than through `batch`'s
    # methods. A plain transfer has no timeout, so its timeout can only overflow if its
    # timestamp does: checked here once for the whole batch instead of once per event.
    fast = _FAST_PATH and timestamp_base + count - 1 <= _TIMESTAMP_LIMIT
    accounts = batch.accounts
    balances = batch.balances
    transfers = batch.transfers
    failed = batch.failed
    created = batch.created
    created_by_id = batch.created_by_id
    history = batch.history

    # The compiled fast path (paycell.core._fastpath) applies runs of flagless plain transfers
    # outside any chain, and hands back the first event it is not sure of to the loop below.
    apply_plain = compiled.apply_plain if fast and type(events) is list else None
    index = 0
    while index < count:
        if apply_plain is not None and chain_start is None:
            index = apply_plain(
                events,
                index,
                timestamp_base,
                accounts,
                balances,
                transfers,
                failed,
                created,
                created_by_id,
                Transfer,
            )
            if index == count:
                break
        event = events[index]
        (
            transfer_id,
            debit_account_id,
            credit_account_id,
            amount,
            pending_id,
            _user_data_128,
            _user_data_64,
            _user_data_32,
            timeout,
            ledger,
            code,
            flags,
            event_timestamp,
        ) = event
        linked = flags & _LINKED
        result: CreateTransferResult | None = None
        if linked:
            if chain_start is None:
                chain_start = index
                chain_broken = False
                batch.open_chain()
            if index == last_index:
                result = chain_open
        if result is None:
            if chain_broken:
                result = _R.LINKED_EVENT_FAILED
            elif event_timestamp != 0:
                result = _R.TIMESTAMP_MUST_BE_ZERO
            else:
                timestamp = timestamp_base + index
                # Fast path: a plain transfer (no flag but linked) that is sure to succeed
                # takes the rules of _create_transfer's plain branch in one go. Whatever it
                # is not sure of (an id seen before, a zero field, a missing account, a
                # closed account, an overflow or a limit) goes to _create_transfer, which
                # decides it from the start with TigerBeetle's precedence. Nothing is changed
                # before that decision but the working rows, which _create_transfer would
                # make in the same order at the same point.
                if (
                    fast
                    and flags <= _LINKED
                    and 0 < transfer_id < _MAX
                    and transfer_id not in created_by_id
                    and transfer_id not in transfers
                    and transfer_id not in failed
                    and 0 < debit_account_id < _MAX
                    and 0 < credit_account_id < _MAX
                    and debit_account_id != credit_account_id
                    and pending_id == 0
                    and timeout == 0
                    and amount != 0
                    and ledger != 0
                    and code != 0
                    and (dr_account := accounts.get(debit_account_id)) is not None
                    and (cr_account := accounts.get(credit_account_id)) is not None
                    and dr_account[_LEDGER] == ledger == cr_account[_LEDGER]
                ):
                    dr = balances.get(debit_account_id)
                    if dr is None:
                        dr = balances[debit_account_id] = list(dr_account)
                    cr = balances.get(credit_account_id)
                    if cr is None:
                        cr = balances[credit_account_id] = list(cr_account)
                    if chain_start is not None:
                        # In an open chain (not broken, or this event would not be here):
                        # save each row before its first change, as batch.balance() does.
                        chain_balances = batch.chain_balances
                        if debit_account_id not in chain_balances:
                            chain_balances[debit_account_id] = dr.copy()
                        if credit_account_id not in chain_balances:
                            chain_balances[credit_account_id] = cr.copy()
                    dr_flags = dr[_FLAGS]
                    cr_flags = cr[_FLAGS]
                    debits_posted = dr[_DPO] + amount
                    credits_posted = cr[_CPO] + amount
                    # Pending balances are never negative (updated_accounts asserts it), so
                    # bounding posted + pending also bounds posted alone.
                    if (
                        not (dr_flags | cr_flags) & _CLOSED
                        and debits_posted + dr[_DP] <= _MAX
                        and credits_posted + cr[_CP] <= _MAX
                        and not (
                            dr_flags & _DEBITS_MUST_NOT_EXCEED_CREDITS
                            and dr[_DP] + debits_posted > dr[_CPO]
                        )
                        and not (
                            cr_flags & _CREDITS_MUST_NOT_EXCEED_DEBITS
                            and cr[_CP] + credits_posted > cr[_DPO]
                        )
                    ):
                        dr[_DPO] = debits_posted
                        cr[_CPO] = credits_posted
                        # As sent, with the ledger's timestamp (the last field).
                        stored = _new_tuple(Transfer, (*event[:12], timestamp))
                        created.append(stored)
                        created_by_id[transfer_id] = stored
                        if dr_flags & _HISTORY:
                            history.append(_history_row(debit_account_id, dr, timestamp))
                        if cr_flags & _HISTORY:
                            history.append(_history_row(credit_account_id, cr, timestamp))
                        result = ok
                if result is None:
                    result = _create_transfer(batch, event, timestamp)
        if result is not ok:
            if chain_start is not None and not chain_broken:
                chain_broken = True
                batch.roll_back_chain()
                for earlier in range(chain_start, index):
                    results[earlier] = _R.LINKED_EVENT_FAILED
            if result in TRANSIENT_TRANSFER_RESULTS:
                # Remembered after the rollback, so it persists even if its chain failed.
                failed[transfer_id] = result.value
                failures.append(Failure(transfer_id, result.value, timestamp_base + index))
            results[index] = result
        if chain_start is not None and (not linked or result is chain_open):
            if not chain_broken:
                batch.close_chain()
            chain_start = None
            chain_broken = False
        index += 1

    if not created and not failures:
        return TransferBatchOutcome(results, None)
    # Both lists are in timestamp order (events are applied in order, and a rollback only
    # truncates them), so their first and last records bound the batch's timestamps.
    ends = [t.timestamp for t in created[:1] + created[-1:]]
    ends += [f.timestamp for f in failures[:1] + failures[-1:]]
    journal = _journal_entry(meta, "transfers", min(ends), max(ends), [], created, [], failures)
    committed = CommittedBatch(
        kind="transfers",
        journal=journal,
        transfers_created=created,
        accounts_updated=batch.updated_accounts(),
        pending_created=batch.pending_created,
        pending_resolved={
            pending_id: status
            for pending_id, status in batch.pending_resolved.items()
            if pending_id not in batch.pending_created
        },
        history=batch.history,
        failures=failures,
    )
    return TransferBatchOutcome(results, committed)


def _create_transfer(batch: _TransferBatch, t: Transfer, timestamp: int) -> CreateTransferResult:
    flags = t.flags
    if flags & ~_TRANSFER_FLAGS_SUPPORTED:
        return _R.RESERVED_FLAG
    transfer_id = t.id
    if transfer_id == 0:
        return _R.ID_MUST_NOT_BE_ZERO
    if transfer_id == _MAX:
        return _R.ID_MUST_NOT_BE_INT_MAX
    existing = batch.transfer(transfer_id)
    if existing is not None:
        return _transfer_exists(batch, t, existing)
    if transfer_id in batch.failed:
        return _R.ID_ALREADY_FAILED
    if flags & (_POST | _VOID):
        return _post_or_void_pending_transfer(batch, t, timestamp)

    debit_account_id = t.debit_account_id
    credit_account_id = t.credit_account_id
    if debit_account_id == 0:
        return _R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
    if debit_account_id == _MAX:
        return _R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
    if credit_account_id == 0:
        return _R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
    if credit_account_id == _MAX:
        return _R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX
    if credit_account_id == debit_account_id:
        return _R.ACCOUNTS_MUST_BE_DIFFERENT
    if t.pending_id != 0:
        return _R.PENDING_ID_MUST_BE_ZERO
    pending = flags & _PENDING
    if not pending:
        if t.timeout != 0:
            return _R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
        if flags & (_CLOSING_DEBIT | _CLOSING_CREDIT):
            return _R.CLOSING_TRANSFER_MUST_BE_PENDING
    balancing = flags & (_BALANCING_DEBIT | _BALANCING_CREDIT)
    if t.amount == 0 and not balancing:
        return _R.AMOUNT_MUST_NOT_BE_ZERO
    if t.ledger == 0:
        return _R.LEDGER_MUST_NOT_BE_ZERO
    if t.code == 0:
        return _R.CODE_MUST_NOT_BE_ZERO

    dr_account = batch.accounts.get(debit_account_id)
    if dr_account is None:
        return _R.DEBIT_ACCOUNT_NOT_FOUND
    cr_account = batch.accounts.get(credit_account_id)
    if cr_account is None:
        return _R.CREDIT_ACCOUNT_NOT_FOUND
    if dr_account.ledger != cr_account.ledger:
        return _R.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
    if t.ledger != dr_account.ledger:
        return _R.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS

    dr = batch.balance(debit_account_id)
    cr = batch.balance(credit_account_id)
    if dr[_FLAGS] & _CLOSED:
        return _R.DEBIT_ACCOUNT_ALREADY_CLOSED
    if cr[_FLAGS] & _CLOSED:
        return _R.CREDIT_ACCOUNT_ALREADY_CLOSED

    amount = t.amount
    if balancing:
        # The amount is an upper bound, clamped to what the account can give without
        # breaching its limit; a clamp to zero still succeeds, moving nothing.
        if flags & _BALANCING_DEBIT:
            amount = min(amount, max(dr[_CPO] - (dr[_DPO] + dr[_DP]), 0))
        if flags & _BALANCING_CREDIT:
            amount = min(amount, max(cr[_DPO] - (cr[_CPO] + cr[_CP]), 0))

    if pending:
        if amount + dr[_DP] > _MAX:
            return _R.OVERFLOWS_DEBITS_PENDING
        if amount + cr[_CP] > _MAX:
            return _R.OVERFLOWS_CREDITS_PENDING
    if amount + dr[_DPO] > _MAX:
        return _R.OVERFLOWS_DEBITS_POSTED
    if amount + cr[_CPO] > _MAX:
        return _R.OVERFLOWS_CREDITS_POSTED
    if amount + dr[_DP] + dr[_DPO] > _MAX:
        return _R.OVERFLOWS_DEBITS
    if amount + cr[_CP] + cr[_CPO] > _MAX:
        return _R.OVERFLOWS_CREDITS
    if timestamp + t.timeout * NANOSECONDS_PER_SECOND > _TIMESTAMP_LIMIT:
        return _R.OVERFLOWS_TIMEOUT
    if dr[_FLAGS] & _DEBITS_MUST_NOT_EXCEED_CREDITS and dr[_DP] + dr[_DPO] + amount > dr[_CPO]:
        return _R.EXCEEDS_CREDITS
    if cr[_FLAGS] & _CREDITS_MUST_NOT_EXCEED_DEBITS and cr[_CP] + cr[_CPO] + amount > cr[_DPO]:
        return _R.EXCEEDS_DEBITS

    # Every check passed: from here the transfer must succeed.
    if pending:
        dr[_DP] += amount
        cr[_CP] += amount
        expires_at = timestamp + t.timeout * NANOSECONDS_PER_SECOND if t.timeout else 0
        state = _new_tuple(PendingState, (PendingStatus.PENDING, expires_at))
        batch.set_pending_state(transfer_id, state, created=True)
        if flags & _CLOSING_DEBIT:
            dr[_FLAGS] |= _CLOSED
        if flags & _CLOSING_CREDIT:
            cr[_FLAGS] |= _CLOSED
    else:
        dr[_DPO] += amount
        cr[_CPO] += amount
    # Built with tuple.__new__ rather than _replace: a third of the cost, on the hottest line.
    if amount == t.amount:
        stored = _new_tuple(Transfer, t[:12] + (timestamp,))  # noqa: RUF005 (faster)
    else:
        stored = _new_tuple(Transfer, (*t[:3], amount, *t[4:12], timestamp))
    batch.record(stored, dr, cr)
    return _R.OK


def _post_or_void_pending_transfer(
    batch: _TransferBatch, t: Transfer, timestamp: int
) -> CreateTransferResult:
    flags = t.flags
    post = flags & _POST
    void = flags & _VOID
    if post and void:
        return _R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if flags & (_PENDING | _BALANCING_DEBIT | _BALANCING_CREDIT | _CLOSING_DEBIT | _CLOSING_CREDIT):
        return _R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if t.pending_id == 0:
        return _R.PENDING_ID_MUST_NOT_BE_ZERO
    if t.pending_id == _MAX:
        return _R.PENDING_ID_MUST_NOT_BE_INT_MAX
    if t.pending_id == t.id:
        return _R.PENDING_ID_MUST_BE_DIFFERENT
    if t.timeout != 0:
        return _R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER

    p = batch.transfer(t.pending_id)
    if p is None:
        return _R.PENDING_TRANSFER_NOT_FOUND
    if not p.flags & _PENDING:
        return _R.PENDING_TRANSFER_NOT_PENDING
    if t.debit_account_id != 0 and t.debit_account_id != p.debit_account_id:
        return _R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
    if t.credit_account_id != 0 and t.credit_account_id != p.credit_account_id:
        return _R.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
    if t.ledger != 0 and t.ledger != p.ledger:
        return _R.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER
    if t.code != 0 and t.code != p.code:
        return _R.PENDING_TRANSFER_HAS_DIFFERENT_CODE

    if void:
        amount = t.amount if t.amount > 0 else p.amount
    else:
        amount = p.amount if t.amount == _MAX else t.amount
    if amount > p.amount:
        return _R.EXCEEDS_PENDING_TRANSFER_AMOUNT
    if void and amount < p.amount:
        return _R.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT

    state = batch.pending_states[p.id]
    if state.status == PendingStatus.POSTED:
        return _R.PENDING_TRANSFER_ALREADY_POSTED
    if state.status == PendingStatus.VOIDED:
        return _R.PENDING_TRANSFER_ALREADY_VOIDED
    if state.status == PendingStatus.EXPIRED:
        return _R.PENDING_TRANSFER_EXPIRED
    if state.expires_at and state.expires_at <= timestamp:
        return _R.PENDING_TRANSFER_EXPIRED

    dr = batch.balance(p.debit_account_id)
    cr = batch.balance(p.credit_account_id)
    # Only a void may touch a closed account: it is how a closing transfer is undone.
    if not void:
        if dr[_FLAGS] & _CLOSED:
            return _R.DEBIT_ACCOUNT_ALREADY_CLOSED
        if cr[_FLAGS] & _CLOSED:
            return _R.CREDIT_ACCOUNT_ALREADY_CLOSED

    dr[_DP] -= p.amount
    cr[_CP] -= p.amount
    if post:
        dr[_DPO] += amount
        cr[_CPO] += amount
        status = PendingStatus.POSTED
    else:
        if p.flags & _CLOSING_DEBIT:
            dr[_FLAGS] &= ~_CLOSED
        if p.flags & _CLOSING_CREDIT:
            cr[_FLAGS] &= ~_CLOSED
        status = PendingStatus.VOIDED
    resolved = _new_tuple(PendingState, (status, state.expires_at))
    batch.set_pending_state(p.id, resolved, created=False)
    # Positional, in field order, through tuple.__new__: keywords cost a microsecond here.
    stored = _new_tuple(
        Transfer,
        (
            t.id,  # id
            p.debit_account_id,  # debit_account_id
            p.credit_account_id,  # credit_account_id
            amount,  # amount
            t.pending_id,  # pending_id
            t.user_data_128 or p.user_data_128,  # user_data_128
            t.user_data_64 or p.user_data_64,  # user_data_64
            t.user_data_32 or p.user_data_32,  # user_data_32
            0,  # timeout
            p.ledger,  # ledger
            p.code,  # code
            flags,  # flags
            timestamp,  # timestamp
        ),
    )
    batch.record(stored, dr, cr)
    return _R.OK


def _transfer_exists(batch: _TransferBatch, t: Transfer, e: Transfer) -> CreateTransferResult:
    if t.flags != e.flags:
        return _R.EXISTS_WITH_DIFFERENT_FLAGS
    if t.pending_id != e.pending_id:
        return _R.EXISTS_WITH_DIFFERENT_PENDING_ID
    if t.timeout != e.timeout:
        return _R.EXISTS_WITH_DIFFERENT_TIMEOUT
    if t.flags & (_POST | _VOID):
        p = batch.transfer(t.pending_id)
        assert p is not None, "a committed post or void always has its pending transfer"
        return _post_or_void_exists(t, e, p)
    if t.debit_account_id != e.debit_account_id:
        return _R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    if t.credit_account_id != e.credit_account_id:
        return _R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    if t.flags & (_BALANCING_DEBIT | _BALANCING_CREDIT):
        # The retry's upper bound must still cover what was actually moved.
        if t.amount < e.amount:
            return _R.EXISTS_WITH_DIFFERENT_AMOUNT
    elif t.amount != e.amount:
        return _R.EXISTS_WITH_DIFFERENT_AMOUNT
    if t.user_data_128 != e.user_data_128:
        return _R.EXISTS_WITH_DIFFERENT_USER_DATA_128
    if t.user_data_64 != e.user_data_64:
        return _R.EXISTS_WITH_DIFFERENT_USER_DATA_64
    if t.user_data_32 != e.user_data_32:
        return _R.EXISTS_WITH_DIFFERENT_USER_DATA_32
    if t.ledger != e.ledger:
        return _R.EXISTS_WITH_DIFFERENT_LEDGER
    if t.code != e.code:
        return _R.EXISTS_WITH_DIFFERENT_CODE
    return _R.EXISTS


def _post_or_void_exists(t: Transfer, e: Transfer, p: Transfer) -> CreateTransferResult:
    if t.debit_account_id != 0 and t.debit_account_id != e.debit_account_id:
        return _R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    if t.credit_account_id != 0 and t.credit_account_id != e.credit_account_id:
        return _R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    full_amount_requested = t.amount == 0 if t.flags & _VOID else t.amount == _MAX
    if full_amount_requested:
        if e.amount != p.amount:
            return _R.EXISTS_WITH_DIFFERENT_AMOUNT
    elif t.amount != e.amount:
        return _R.EXISTS_WITH_DIFFERENT_AMOUNT
    # Zero user data means "inherited from the pending transfer".
    if (t.user_data_128 or p.user_data_128) != e.user_data_128:
        return _R.EXISTS_WITH_DIFFERENT_USER_DATA_128
    if (t.user_data_64 or p.user_data_64) != e.user_data_64:
        return _R.EXISTS_WITH_DIFFERENT_USER_DATA_64
    if (t.user_data_32 or p.user_data_32) != e.user_data_32:
        return _R.EXISTS_WITH_DIFFERENT_USER_DATA_32
    if t.ledger != 0 and t.ledger != e.ledger:
        return _R.EXISTS_WITH_DIFFERENT_LEDGER
    if t.code != 0 and t.code != e.code:
        return _R.EXISTS_WITH_DIFFERENT_CODE
    return _R.EXISTS


# --------------------------------------------------------------------------------- expiry


def expire_pending_transfers(
    due: Sequence[Transfer],
    accounts: dict[int, Account],
    meta: LedgerMeta,
    now: int,
) -> CommittedBatch | None:
    """Release the reservations of pending transfers whose timeout has passed.

    `due` are still-pending transfers with expiry at or before `now`, in (expires_at,
    timestamp) order; `accounts` their debit and credit accounts. No transfer is created: the
    pending balances drop, a closing transfer's account reopens, and the pending transfer's
    status becomes expired, each expiry consuming one ledger timestamp.
    """
    if not due:
        return None
    timestamp_base = first_timestamp(meta, now)
    balances: dict[int, Account] = {}
    expiries: list[Expiry] = []
    for index, p in enumerate(due):
        assert p.flags & _PENDING
        dr = balances.get(p.debit_account_id) or accounts[p.debit_account_id]
        cr = balances.get(p.credit_account_id) or accounts[p.credit_account_id]
        dr_flags = dr.flags & ~_CLOSED if p.flags & _CLOSING_DEBIT else dr.flags
        cr_flags = cr.flags & ~_CLOSED if p.flags & _CLOSING_CREDIT else cr.flags
        balances[dr.id] = dr._replace(debits_pending=dr.debits_pending - p.amount, flags=dr_flags)
        balances[cr.id] = cr._replace(credits_pending=cr.credits_pending - p.amount, flags=cr_flags)
        assert balances[dr.id].debits_pending >= 0
        assert balances[cr.id].credits_pending >= 0
        expiries.append(Expiry(p.id, timestamp_base + index))
    journal = _journal_entry(
        meta, "expiry", expiries[0].timestamp, expiries[-1].timestamp, [], [], expiries, []
    )
    return CommittedBatch(
        kind="expiry",
        journal=journal,
        accounts_updated=balances,
        pending_resolved={expiry.pending_id: PendingStatus.EXPIRED for expiry in expiries},
        expiries=expiries,
    )
