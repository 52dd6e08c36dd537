"""A reference ledger: TigerBeetle 0.16 semantics, written from the spec, simple over fast.

This model is deliberately independent of `paycell.core.state_machine`: it shares only the
record types (`Account`, `Transfer`, `AccountBalance`) and reports results as their names
(plain strings, the `.value` of paycell's result enums). Every rule is a literal transcription
of the TigerBeetle 0.16 semantics spec (tb_spec.md, sections 3-6), in the spec's order, so
that a reader can check it line by line. Linked chains roll back by restoring a deep copy of
the whole state.

paycell's deliberate differences from TigerBeetle 0.16, which the model follows:
- `amount_must_not_be_zero`: a plain or pending (non post/void) transfer with amount 0 that is
  not balancing is rejected, after `closing_transfer_must_be_pending` and before
  `ledger_must_not_be_zero`.
- Imported events are not supported: the `imported` flag bit is reserved (`reserved_flag`), so
  none of the `imported_*` results exist.
- Timestamps: a batch's first event gets `max(last + 1, now)` and event i gets that plus i;
  `last` is the newest timestamp the ledger committed (an account, a transfer, a remembered
  failed id or an expiry). Expiries happen before each write (and before account reads), one
  at a time, each at `max(last + 1, now)`, while some pending transfer's expiry is at or
  before that instant.
"""

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from paycell.core.types import Account, AccountBalance, Transfer

# An event of a create batch: `_run_batch` runs accounts and transfers alike.
Event = TypeVar("Event", Account, Transfer)

MAX = (1 << 128) - 1
TIMESTAMP_LIMIT = (1 << 63) - 1
NS = 1_000_000_000

# Account flags.
A_LINKED = 0x0001
A_DEBITS_MUST_NOT_EXCEED_CREDITS = 0x0002
A_CREDITS_MUST_NOT_EXCEED_DEBITS = 0x0004
A_HISTORY = 0x0008
A_IMPORTED = 0x0010
A_CLOSED = 0x0020
# Bits 6-15, and (paycell) the imported bit.
A_RESERVED = 0xFFC0 | A_IMPORTED

# Transfer flags.
T_LINKED = 0x0001
T_PENDING = 0x0002
T_POST = 0x0004
T_VOID = 0x0008
T_BALANCING_DEBIT = 0x0010
T_BALANCING_CREDIT = 0x0020
T_CLOSING_DEBIT = 0x0040
T_CLOSING_CREDIT = 0x0080
T_IMPORTED = 0x0100
T_RESERVED = 0xFE00 | T_IMPORTED  # bits 9-15 and (paycell) the imported bit

TRANSIENT = frozenset(
    {
        "debit_account_not_found",
        "credit_account_not_found",
        "pending_transfer_not_found",
        "exceeds_credits",
        "exceeds_debits",
        "debit_account_already_closed",
        "credit_account_already_closed",
    }
)


@dataclass
class ModelAccount:
    id: int
    user_data_128: int
    user_data_64: int
    user_data_32: int
    ledger: int
    code: int
    flags: int
    timestamp: int
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0

    def as_account(self) -> Account:
        return Account(
            id=self.id,
            debits_pending=self.debits_pending,
            debits_posted=self.debits_posted,
            credits_pending=self.credits_pending,
            credits_posted=self.credits_posted,
            user_data_128=self.user_data_128,
            user_data_64=self.user_data_64,
            user_data_32=self.user_data_32,
            reserved=0,
            ledger=self.ledger,
            code=self.code,
            flags=self.flags,
            timestamp=self.timestamp,
        )


@dataclass
class ModelState:
    accounts: dict[int, ModelAccount] = field(default_factory=dict)
    transfers: dict[int, Transfer] = field(default_factory=dict)
    # Pending transfer id -> "pending" | "posted" | "voided" | "expired".
    status: dict[int, str] = field(default_factory=dict)
    failed_ids: set[int] = field(default_factory=set)
    # Account id -> balances after each transfer that touched it (history accounts only).
    history: dict[int, list[AccountBalance]] = field(default_factory=dict)
    last_timestamp: int = 0


class ReferenceLedger:
    def __init__(self) -> None:
        self.state = ModelState()
        # How many pending transfers the last operation expired (for "replays change nothing").
        self.expired_in_last_operation = 0

    # ----------------------------------------------------------------------- time / expiry

    def _commit_timestamp(self, timestamp: int) -> None:
        self.state.last_timestamp = max(self.state.last_timestamp, timestamp)

    def expire(self, now: int) -> int:
        """Expire due pending transfers, one at a time, in (expires_at, timestamp) order."""
        s = self.state
        count = 0
        while True:
            instant = max(s.last_timestamp + 1, now)
            due = [
                p
                for p in s.transfers.values()
                if p.flags & T_PENDING
                and s.status[p.id] == "pending"
                and p.timeout > 0
                and p.timestamp + p.timeout * NS <= instant
            ]
            if not due:
                self.expired_in_last_operation = count
                return count
            p = min(due, key=lambda p: (p.timestamp + p.timeout * NS, p.timestamp))
            dr = s.accounts[p.debit_account_id]
            cr = s.accounts[p.credit_account_id]
            dr.debits_pending -= p.amount
            cr.credits_pending -= p.amount
            if p.flags & T_CLOSING_DEBIT:
                dr.flags &= ~A_CLOSED
            if p.flags & T_CLOSING_CREDIT:
                cr.flags &= ~A_CLOSED
            s.status[p.id] = "expired"
            self._commit_timestamp(instant)
            count += 1

    # ------------------------------------------------------------------------ batch driver

    def _run_batch(
        self,
        events: Sequence[Event],
        now: int,
        create: Callable[[Event, int], str],
        is_transfer: bool,
    ) -> list[str]:
        n = len(events)
        base = max(self.state.last_timestamp + 1, now)
        results: list[str] = []
        chain_start: int | None = None
        chain_broken = False
        snapshot: ModelState | None = None
        for i, ev in enumerate(events):
            res: str | None = None
            linked = bool(ev.flags & 0x0001)
            if linked:
                if chain_start is None:
                    chain_start = i
                    snapshot = copy.deepcopy(self.state)
                if i == n - 1:
                    res = "linked_event_chain_open"
            if res is None and chain_broken:
                res = "linked_event_failed"
            if res is None and ev.timestamp != 0:
                res = "timestamp_must_be_zero"
            if res is None:
                res = create(ev, base + i)
            if res != "ok":
                if chain_start is not None and not chain_broken:
                    chain_broken = True
                    assert snapshot is not None
                    self.state = snapshot
                    snapshot = None
                    for j in range(chain_start, i):
                        results[j] = "linked_event_failed"
                if is_transfer and res in TRANSIENT:
                    self.state.failed_ids.add(ev.id)
                    self._commit_timestamp(base + i)
            results.append(res)
            if chain_start is not None and (not linked or res == "linked_event_chain_open"):
                chain_start = None
                chain_broken = False
                snapshot = None
        return results

    # ---------------------------------------------------------------------------- accounts

    def create_accounts(self, events: Sequence[Account], now: int) -> list[str]:
        self.expire(now)
        return self._run_batch(events, now, self._create_account, is_transfer=False)

    def _create_account(self, a: Account, timestamp: int) -> str:
        s = self.state
        if a.reserved != 0:
            return "reserved_field"
        if a.flags & A_RESERVED:
            return "reserved_flag"
        if a.id == 0:
            return "id_must_not_be_zero"
        if a.id == MAX:
            return "id_must_not_be_int_max"
        e = s.accounts.get(a.id)
        if e is not None:
            if a.flags != e.flags:
                return "exists_with_different_flags"
            if a.user_data_128 != e.user_data_128:
                return "exists_with_different_user_data_128"
            if a.user_data_64 != e.user_data_64:
                return "exists_with_different_user_data_64"
            if a.user_data_32 != e.user_data_32:
                return "exists_with_different_user_data_32"
            if a.ledger != e.ledger:
                return "exists_with_different_ledger"
            if a.code != e.code:
                return "exists_with_different_code"
            return "exists"
        both_limits = A_DEBITS_MUST_NOT_EXCEED_CREDITS | A_CREDITS_MUST_NOT_EXCEED_DEBITS
        if a.flags & both_limits == both_limits:
            return "flags_are_mutually_exclusive"
        if a.debits_pending != 0:
            return "debits_pending_must_be_zero"
        if a.debits_posted != 0:
            return "debits_posted_must_be_zero"
        if a.credits_pending != 0:
            return "credits_pending_must_be_zero"
        if a.credits_posted != 0:
            return "credits_posted_must_be_zero"
        if a.ledger == 0:
            return "ledger_must_not_be_zero"
        if a.code == 0:
            return "code_must_not_be_zero"
        s.accounts[a.id] = ModelAccount(
            id=a.id,
            user_data_128=a.user_data_128,
            user_data_64=a.user_data_64,
            user_data_32=a.user_data_32,
            ledger=a.ledger,
            code=a.code,
            flags=a.flags,
            timestamp=timestamp,
        )
        self._commit_timestamp(timestamp)
        return "ok"

    # --------------------------------------------------------------------------- transfers

    def create_transfers(self, events: Sequence[Transfer], now: int) -> list[str]:
        self.expire(now)
        return self._run_batch(events, now, self._create_transfer, is_transfer=True)

    def _record_history(self, timestamp: int, *accounts: ModelAccount) -> None:
        for acc in accounts:
            if acc.flags & A_HISTORY:
                self.state.history.setdefault(acc.id, []).append(
                    AccountBalance(
                        debits_pending=acc.debits_pending,
                        debits_posted=acc.debits_posted,
                        credits_pending=acc.credits_pending,
                        credits_posted=acc.credits_posted,
                        timestamp=timestamp,
                    )
                )

    def _create_transfer(self, t: Transfer, timestamp: int) -> str:
        s = self.state
        t = t._replace(timestamp=timestamp)
        if t.flags & T_RESERVED:
            return "reserved_flag"
        if t.id == 0:
            return "id_must_not_be_zero"
        if t.id == MAX:
            return "id_must_not_be_int_max"
        e = s.transfers.get(t.id)
        if e is not None:
            return self._transfer_exists(t, e)
        if t.id in s.failed_ids:
            return "id_already_failed"
        if t.flags & (T_POST | T_VOID):
            return self._post_or_void(t)

        if t.debit_account_id == 0:
            return "debit_account_id_must_not_be_zero"
        if t.debit_account_id == MAX:
            return "debit_account_id_must_not_be_int_max"
        if t.credit_account_id == 0:
            return "credit_account_id_must_not_be_zero"
        if t.credit_account_id == MAX:
            return "credit_account_id_must_not_be_int_max"
        if t.credit_account_id == t.debit_account_id:
            return "accounts_must_be_different"
        if t.pending_id != 0:
            return "pending_id_must_be_zero"
        if not t.flags & T_PENDING:
            if t.timeout != 0:
                return "timeout_reserved_for_pending_transfer"
            if t.flags & (T_CLOSING_DEBIT | T_CLOSING_CREDIT):
                return "closing_transfer_must_be_pending"
        # paycell: a plain or pending transfer of nothing is a client bug.
        if t.amount == 0 and not t.flags & (T_BALANCING_DEBIT | T_BALANCING_CREDIT):
            return "amount_must_not_be_zero"
        if t.ledger == 0:
            return "ledger_must_not_be_zero"
        if t.code == 0:
            return "code_must_not_be_zero"

        dr = s.accounts.get(t.debit_account_id)
        if dr is None:
            return "debit_account_not_found"
        cr = s.accounts.get(t.credit_account_id)
        if cr is None:
            return "credit_account_not_found"
        if dr.ledger != cr.ledger:
            return "accounts_must_have_the_same_ledger"
        if t.ledger != dr.ledger:
            return "transfer_must_have_the_same_ledger_as_accounts"
        if dr.flags & A_CLOSED:
            return "debit_account_already_closed"
        if cr.flags & A_CLOSED:
            return "credit_account_already_closed"

        amount = t.amount
        if t.flags & T_BALANCING_DEBIT:
            available = dr.credits_posted - (dr.debits_posted + dr.debits_pending)
            amount = min(amount, max(available, 0))
        if t.flags & T_BALANCING_CREDIT:
            available = cr.debits_posted - (cr.credits_posted + cr.credits_pending)
            amount = min(amount, max(available, 0))

        if t.flags & T_PENDING:
            if amount + dr.debits_pending > MAX:
                return "overflows_debits_pending"
            if amount + cr.credits_pending > MAX:
                return "overflows_credits_pending"
        if amount + dr.debits_posted > MAX:
            return "overflows_debits_posted"
        if amount + cr.credits_posted > MAX:
            return "overflows_credits_posted"
        if amount + dr.debits_pending + dr.debits_posted > MAX:
            return "overflows_debits"
        if amount + cr.credits_pending + cr.credits_posted > MAX:
            return "overflows_credits"
        if t.timestamp + t.timeout * NS > TIMESTAMP_LIMIT:
            return "overflows_timeout"

        if (
            dr.flags & A_DEBITS_MUST_NOT_EXCEED_CREDITS
            and dr.debits_pending + dr.debits_posted + amount > dr.credits_posted
        ):
            return "exceeds_credits"
        if (
            cr.flags & A_CREDITS_MUST_NOT_EXCEED_DEBITS
            and cr.credits_pending + cr.credits_posted + amount > cr.debits_posted
        ):
            return "exceeds_debits"

        stored = t._replace(amount=amount)
        s.transfers[t.id] = stored
        if t.flags & T_PENDING:
            dr.debits_pending += amount
            cr.credits_pending += amount
            s.status[t.id] = "pending"
        else:
            dr.debits_posted += amount
            cr.credits_posted += amount
        if t.flags & T_CLOSING_DEBIT:
            dr.flags |= A_CLOSED
        if t.flags & T_CLOSING_CREDIT:
            cr.flags |= A_CLOSED
        self._record_history(t.timestamp, dr, cr)
        self._commit_timestamp(t.timestamp)
        return "ok"

    def _post_or_void(self, t: Transfer) -> str:
        s = self.state
        post = bool(t.flags & T_POST)
        void = bool(t.flags & T_VOID)
        if post and void:
            return "flags_are_mutually_exclusive"
        if t.flags & (T_PENDING | T_BALANCING_DEBIT | T_BALANCING_CREDIT):
            return "flags_are_mutually_exclusive"
        if t.flags & (T_CLOSING_DEBIT | T_CLOSING_CREDIT):
            return "flags_are_mutually_exclusive"
        if t.pending_id == 0:
            return "pending_id_must_not_be_zero"
        if t.pending_id == MAX:
            return "pending_id_must_not_be_int_max"
        if t.pending_id == t.id:
            return "pending_id_must_be_different"
        if t.timeout != 0:
            return "timeout_reserved_for_pending_transfer"

        p = s.transfers.get(t.pending_id)
        if p is None:
            return "pending_transfer_not_found"
        if not p.flags & T_PENDING:
            return "pending_transfer_not_pending"
        dr = s.accounts[p.debit_account_id]
        cr = s.accounts[p.credit_account_id]
        if t.debit_account_id != 0 and t.debit_account_id != p.debit_account_id:
            return "pending_transfer_has_different_debit_account_id"
        if t.credit_account_id != 0 and t.credit_account_id != p.credit_account_id:
            return "pending_transfer_has_different_credit_account_id"
        if t.ledger != 0 and t.ledger != p.ledger:
            return "pending_transfer_has_different_ledger"
        if t.code != 0 and t.code != p.code:
            return "pending_transfer_has_different_code"

        if void:
            amount = t.amount if t.amount > 0 else p.amount
        else:
            amount = p.amount if t.amount == MAX else t.amount
        if amount > p.amount:
            return "exceeds_pending_transfer_amount"
        if void and amount < p.amount:
            return "pending_transfer_has_different_amount"

        status = s.status[p.id]
        if status == "posted":
            return "pending_transfer_already_posted"
        if status == "voided":
            return "pending_transfer_already_voided"
        if status == "expired":
            return "pending_transfer_expired"
        if p.timeout > 0 and p.timestamp + p.timeout * NS <= t.timestamp:
            return "pending_transfer_expired"

        if dr.flags & A_CLOSED and not void:
            return "debit_account_already_closed"
        if cr.flags & A_CLOSED and not void:
            return "credit_account_already_closed"

        stored = Transfer(
            id=t.id,
            debit_account_id=p.debit_account_id,
            credit_account_id=p.credit_account_id,
            amount=amount,
            pending_id=t.pending_id,
            user_data_128=t.user_data_128 or p.user_data_128,
            user_data_64=t.user_data_64 or p.user_data_64,
            user_data_32=t.user_data_32 or p.user_data_32,
            timeout=0,
            ledger=p.ledger,
            code=p.code,
            flags=t.flags,
            timestamp=t.timestamp,
        )
        s.transfers[t.id] = stored
        s.status[p.id] = "posted" if post else "voided"
        dr.debits_pending -= p.amount
        cr.credits_pending -= p.amount
        if post:
            dr.debits_posted += amount
            cr.credits_posted += amount
        if void:
            if p.flags & T_CLOSING_DEBIT:
                dr.flags &= ~A_CLOSED
            if p.flags & T_CLOSING_CREDIT:
                cr.flags &= ~A_CLOSED
        self._record_history(t.timestamp, dr, cr)
        self._commit_timestamp(t.timestamp)
        return "ok"

    def _transfer_exists(self, t: Transfer, e: Transfer) -> str:
        if t.flags != e.flags:
            return "exists_with_different_flags"
        if t.pending_id != e.pending_id:
            return "exists_with_different_pending_id"
        if t.timeout != e.timeout:
            return "exists_with_different_timeout"
        if t.flags & (T_POST | T_VOID):
            p = self.state.transfers[t.pending_id]
            if t.debit_account_id != 0 and t.debit_account_id != e.debit_account_id:
                return "exists_with_different_debit_account_id"
            if t.credit_account_id != 0 and t.credit_account_id != e.credit_account_id:
                return "exists_with_different_credit_account_id"
            if t.flags & T_VOID:
                if t.amount == 0:
                    if e.amount != p.amount:
                        return "exists_with_different_amount"
                elif t.amount != e.amount:
                    return "exists_with_different_amount"
            if t.flags & T_POST:
                if t.amount == MAX:
                    if e.amount != p.amount:
                        return "exists_with_different_amount"
                elif t.amount != e.amount:
                    return "exists_with_different_amount"
            for name in ("user_data_128", "user_data_64", "user_data_32"):
                sent, stored, inherited = getattr(t, name), getattr(e, name), getattr(p, name)
                if sent == 0:
                    if stored != inherited:
                        return f"exists_with_different_{name}"
                elif sent != stored:
                    return f"exists_with_different_{name}"
            if t.ledger != 0 and t.ledger != e.ledger:
                return "exists_with_different_ledger"
            if t.code != 0 and t.code != e.code:
                return "exists_with_different_code"
            return "exists"
        if t.debit_account_id != e.debit_account_id:
            return "exists_with_different_debit_account_id"
        if t.credit_account_id != e.credit_account_id:
            return "exists_with_different_credit_account_id"
        if t.flags & (T_BALANCING_DEBIT | T_BALANCING_CREDIT):
            if t.amount < e.amount:
                return "exists_with_different_amount"
        elif t.amount != e.amount:
            return "exists_with_different_amount"
        if t.user_data_128 != e.user_data_128:
            return "exists_with_different_user_data_128"
        if t.user_data_64 != e.user_data_64:
            return "exists_with_different_user_data_64"
        if t.user_data_32 != e.user_data_32:
            return "exists_with_different_user_data_32"
        if t.ledger != e.ledger:
            return "exists_with_different_ledger"
        if t.code != e.code:
            return "exists_with_different_code"
        return "exists"

    # ------------------------------------------------------------------------------- reads

    def lookup_accounts(self, ids: Sequence[int], now: int) -> list[Account]:
        self.expire(now)
        return [self.state.accounts[i].as_account() for i in ids if i in self.state.accounts]

    def lookup_transfers(self, ids: Sequence[int]) -> list[Transfer]:
        return [self.state.transfers[i] for i in ids if i in self.state.transfers]

    def account_balances(self, account_id: int) -> list[AccountBalance]:
        """The history rows of a history account, oldest first (the whole history)."""
        acc = self.state.accounts.get(account_id)
        if acc is None or not acc.flags & A_HISTORY:
            return []
        return list(self.state.history.get(account_id, []))
