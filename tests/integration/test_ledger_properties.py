"""The ledger against the reference model, in lockstep, on random batches (hypothesis).

Each step sends the same batch to `paycell.Ledger` (SQLite or PostgreSQL) and to the reference
model in tests/model, at the same clock. After every step both must agree on every result,
every account (balances, flags, timestamps), every transfer as stored and every history row;
every ledger must balance. Exact replays must change nothing. At the end `verify()` must pass.

Batches mix plain, pending, post (full, partial, MAX), void, balancing and closing transfers,
linked chains (also broken and left open), replays (exact and changed), invalid references and
timeouts, with the clock moved past, and exactly onto, pending expiries.
"""

import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from paycell import (
    AMOUNT_MAX,
    Account,
    AccountFilter,
    AccountFilterFlags,
    AccountFlags,
    Ledger,
    Transfer,
    TransferFlags,
)
from paycell.adapters.storage import sqlite as sqlite_storage
from paycell.adapters.storage.throwaway_postgres import PostgresServer
from tests.model.reference_ledger import NS, ReferenceLedger

F = TransferFlags
AF = AccountFlags
AFF = AccountFilterFlags
# SQLite indexes statements in bulk; a short tail makes runs cross that boundary often.
SHORT_STATEMENT_TAIL = 5
# SQLite logs account changes and writes them back in bulk; a short log makes runs write back
# often, so accounts are read from both places.
SHORT_ACCOUNT_LOG = 6

START_NS = 1_700_000_000 * NS
ACCOUNT_IDS = list(range(1, 11))
UNKNOWN_ACCOUNT = 99
UNKNOWN_TRANSFER = 999_999
BIG_AMOUNTS = [AMOUNT_MAX, AMOUNT_MAX - 1, 1 << 127, (1 << 127) + 1]
TRANSFER_KINDS = [
    "plain",
    "plain",
    "pending",
    "pending",
    "post",
    "post",
    "void",
    "balancing",
    "closing",
    "replay",
    "replay_changed",
    "invalid",
]
CHANGEABLE_FIELDS = [
    "amount",
    "user_data_128",
    "user_data_64",
    "user_data_32",
    "ledger",
    "code",
    "flags",
    "timeout",
    "pending_id",
    "debit_account_id",
    "credit_account_id",
]

# The accounts every run starts with: both limits, history, two ledgers.
INITIAL_ACCOUNTS = [
    Account(id=1, ledger=1, code=1, flags=AF.HISTORY),
    Account(id=2, ledger=1, code=1),
    Account(id=3, ledger=1, code=2, user_data_64=7),
    Account(id=4, ledger=1, code=1, flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.HISTORY),
    Account(id=5, ledger=1, code=1, flags=AF.CREDITS_MUST_NOT_EXCEED_DEBITS),
    Account(id=6, ledger=2, code=1),
    Account(id=7, ledger=2, code=1, flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS),
]


class Clock:
    def __init__(self) -> None:
        self.now = START_NS

    def __call__(self) -> int:
        return self.now


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, new_database_url: Callable[[], str]) -> None:
        super().__init__()
        self.clock = Clock()
        self.ledger = Ledger(new_database_url(), clock=self.clock)
        self.model = ReferenceLedger()
        self.sent: list[Transfer] = []  # every transfer event ever sent, for replays
        self.sent_ids: set[int] = set()
        self.committed_events: dict[int, Transfer] = {}  # as sent, by id
        self.next_id = 100

    # --------------------------------------------------------------------------- helpers

    def fresh_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def send_accounts(self, events: list[Account]) -> list[str]:
        results = [r.value for r in self.ledger.create_accounts(events)]
        expected = self.model.create_accounts(events, self.clock.now)
        assert results == expected, f"create_accounts {events}"
        return results

    def send_transfers(self, events: list[Transfer]) -> list[str]:
        self.sent.extend(events)
        self.sent_ids.update(t.id for t in events)
        results = [r.value for r in self.ledger.create_transfers(events)]
        expected = self.model.create_transfers(events, self.clock.now)
        assert results == expected, f"create_transfers {events}"
        for event, result in zip(events, results, strict=True):
            if result == "ok":
                self.committed_events[event.id] = event
        return results

    def snapshot(self) -> tuple[list[Account], list[Transfer]]:
        ids = sorted(self.sent_ids)
        return self.ledger.lookup_accounts([*ACCOUNT_IDS, UNKNOWN_ACCOUNT]), (
            self.ledger.lookup_transfers(ids)
        )

    def draw_account_pair(self, data: st.DataObject, ledger: int) -> tuple[int, int]:
        """Mostly two different accounts of `ledger`; sometimes any id, unknown or invalid."""
        same_ledger = sorted(i for i, a in self.model.state.accounts.items() if a.ledger == ledger)
        pair = []
        for _ in range(2):
            if len(same_ledger) >= 2 and data.draw(st.integers(0, 9)) != 0:
                pair.append(data.draw(st.sampled_from(same_ledger)))
            else:
                choices = [*ACCOUNT_IDS, UNKNOWN_ACCOUNT, 0, AMOUNT_MAX]
                pair.append(data.draw(st.sampled_from(choices)))
        return pair[0], pair[1]

    def draw_amount(self, data: st.DataObject) -> int:
        which = data.draw(st.integers(0, 19))
        if which == 0:
            return data.draw(st.sampled_from(BIG_AMOUNTS))
        if which == 1:
            return 0
        return data.draw(st.integers(1, 30))

    def pending_candidates(self, batch: list[Transfer]) -> list[Transfer]:
        committed = [t for t in self.model.state.transfers.values() if t.flags & F.PENDING]
        in_batch = [t for t in batch if t.flags & F.PENDING]
        return committed + in_batch

    def draw_transfer(self, data: st.DataObject, batch: list[Transfer]) -> Transfer:
        kind = data.draw(st.sampled_from(TRANSFER_KINDS))
        earlier = self.sent + batch  # also events earlier in this same batch
        if kind in ("replay", "replay_changed") and not earlier:
            kind = "plain"
        if kind in ("post", "void") and not self.pending_candidates(batch):
            kind = "pending"

        if kind == "replay":
            return data.draw(st.sampled_from(earlier))
        if kind == "replay_changed":
            original = data.draw(st.sampled_from(earlier))
            name = data.draw(st.sampled_from(CHANGEABLE_FIELDS))
            if name == "flags":
                value = original.flags ^ data.draw(
                    st.sampled_from([F.PENDING, F.BALANCING_DEBIT, F.LINKED, F.CLOSING_CREDIT])
                )
            else:
                value = getattr(original, name) + data.draw(st.sampled_from([1, 2, 100]))
                value %= 1 << 32 if name in ("timeout", "ledger", "user_data_32") else 1 << 64
                if name == "code":
                    value %= 1 << 16
            return original._replace(**{name: int(value)})

        flags = 0
        if data.draw(st.integers(0, 7)) == 0:
            flags |= F.LINKED

        if kind in ("post", "void"):
            own_id = self.fresh_id()
            candidates = self.pending_candidates(batch)
            choice = data.draw(st.integers(0, len(candidates) + 1))
            if choice < len(candidates):
                p = candidates[choice]
                pending_id, p_amount = p.id, p.amount
            elif choice == len(candidates):
                # Unknown, itself, or the id of a pending transfer later in this batch.
                pending_id = data.draw(st.sampled_from([UNKNOWN_TRANSFER, own_id, own_id + 1]))
                p_amount = 10
            else:
                # Maybe a plain transfer, a failed id, or anything ever sent.
                pending_id = data.draw(st.sampled_from(sorted(self.sent_ids) or [1]))
                p_amount = 10
            more = min(p_amount + 1, AMOUNT_MAX)
            if kind == "post":
                flags |= F.POST_PENDING_TRANSFER
                amount = data.draw(
                    st.sampled_from(
                        [AMOUNT_MAX, AMOUNT_MAX, p_amount, max(p_amount - 1, 0), 0, more]
                    )
                )
            else:
                flags |= F.VOID_PENDING_TRANSFER
                amount = data.draw(st.sampled_from([0, 0, p_amount, more, 1]))
            mismatch = data.draw(st.sampled_from([None] * 6 + ["dr", "cr", "ledger", "code"]))
            return Transfer(
                id=own_id,
                debit_account_id=data.draw(st.sampled_from([0, 1])) if mismatch == "dr" else 0,
                credit_account_id=data.draw(st.sampled_from([0, 2])) if mismatch == "cr" else 0,
                amount=amount,
                pending_id=pending_id,
                user_data_128=data.draw(st.sampled_from([0, 0, 5])),
                user_data_64=data.draw(st.sampled_from([0, 6])),
                ledger=data.draw(st.sampled_from([1, 2])) if mismatch == "ledger" else 0,
                code=data.draw(st.sampled_from([1, 2])) if mismatch == "code" else 0,
                flags=flags,
            )

        ledger = data.draw(st.sampled_from([1, 1, 1, 2]))
        dr, cr = self.draw_account_pair(data, ledger)
        if data.draw(st.integers(0, 19)) == 0:
            ledger = data.draw(st.sampled_from([0, 1, 2]))
        timeout = 0
        if kind == "pending":
            flags |= F.PENDING
            timeout = data.draw(st.sampled_from([0, 0, 1, 1, 2, 5, 0xFFFF_FFFF]))
        elif kind == "balancing":
            flags |= data.draw(
                st.sampled_from(
                    [F.BALANCING_DEBIT, F.BALANCING_CREDIT, F.BALANCING_DEBIT | F.BALANCING_CREDIT]
                )
            )
            if data.draw(st.booleans()):
                flags |= F.PENDING
                timeout = data.draw(st.sampled_from([0, 1]))
        elif kind == "closing":
            flags |= data.draw(st.sampled_from([F.CLOSING_DEBIT, F.CLOSING_CREDIT]))
            if data.draw(st.integers(0, 4)) != 0:
                flags |= F.PENDING
                timeout = data.draw(st.sampled_from([0, 1, 3]))
        elif kind == "invalid":
            flags |= data.draw(
                st.sampled_from(
                    [F.IMPORTED, 1 << 11, F.PENDING | F.POST_PENDING_TRANSFER, F.PENDING]
                )
            )
            timeout = data.draw(st.sampled_from([0, 1]))
        timestamp = 0
        if kind == "invalid" and data.draw(st.integers(0, 3)) == 0:
            timestamp = data.draw(st.sampled_from([1, self.clock.now]))
        return Transfer(
            id=data.draw(st.sampled_from([self.fresh_id()] * 18 + [0, AMOUNT_MAX])),
            debit_account_id=dr,
            credit_account_id=cr,
            amount=self.draw_amount(data),
            pending_id=UNKNOWN_TRANSFER if kind == "invalid" and data.draw(st.booleans()) else 0,
            user_data_128=data.draw(st.sampled_from([0, 1, 2])),
            user_data_64=data.draw(st.sampled_from([0, 3])),
            user_data_32=data.draw(st.sampled_from([0, 4])),
            timeout=timeout,
            ledger=ledger,
            code=data.draw(st.sampled_from([1] * 18 + [2, 0])),
            flags=int(flags),
            timestamp=timestamp,
        )

    # ----------------------------------------------------------------------------- rules

    @initialize(start=st.sampled_from([START_NS, START_NS, 5 * 10**18]))
    def create_initial_accounts(self, start: int) -> None:
        # Late in the timestamp range, a long timeout overflows it (overflows_timeout).
        self.clock.now = start
        assert self.send_accounts(INITIAL_ACCOUNTS) == ["ok"] * len(INITIAL_ACCOUNTS)
        # Room under the limits: 4 and 7 may spend 100, 5 may receive 100.
        funding = [
            Transfer(id=1, debit_account_id=2, credit_account_id=4, amount=100, ledger=1, code=1),
            Transfer(id=2, debit_account_id=5, credit_account_id=1, amount=100, ledger=1, code=1),
            Transfer(id=3, debit_account_id=6, credit_account_id=7, amount=100, ledger=2, code=1),
        ]
        assert self.send_transfers(funding) == ["ok"] * len(funding)

    @rule(data=st.data())
    def create_accounts(self, data: st.DataObject) -> None:
        events = []
        for _ in range(data.draw(st.integers(1, 3))):
            events.append(
                Account(
                    id=data.draw(st.sampled_from([*ACCOUNT_IDS, 0])),
                    user_data_64=data.draw(st.sampled_from([0, 7])),
                    ledger=data.draw(st.sampled_from([1, 1, 2, 0])),
                    code=data.draw(st.sampled_from([1, 1, 2, 0])),
                    flags=int(
                        data.draw(
                            st.sampled_from(
                                [
                                    AF.NONE,
                                    AF.NONE,
                                    AF.LINKED,
                                    AF.HISTORY,
                                    AF.DEBITS_MUST_NOT_EXCEED_CREDITS,
                                    AF.CREDITS_MUST_NOT_EXCEED_DEBITS | AF.HISTORY,
                                    AF.DEBITS_MUST_NOT_EXCEED_CREDITS
                                    | AF.CREDITS_MUST_NOT_EXCEED_DEBITS,
                                    AF.IMPORTED,
                                    AF.CLOSED,
                                ]
                            )
                        )
                    ),
                )
            )
        self.send_accounts(events)

    @rule(data=st.data())
    def create_transfers(self, data: st.DataObject) -> None:
        batch: list[Transfer] = []
        for _ in range(data.draw(st.integers(1, 8))):
            batch.append(self.draw_transfer(data, batch))
        self.send_transfers(batch)

    @rule(data=st.data())
    def create_transfers_later(self, data: st.DataObject) -> None:
        """Time passes (often past a pending transfer's timeout), then a batch."""
        self.clock.now += data.draw(st.sampled_from([1, 1_000, NS // 2, NS, 2 * NS]))
        self.create_transfers(data)

    @rule(data=st.data())
    def replay_committed_transfers_changes_nothing(self, data: st.DataObject) -> None:
        if not self.committed_events:
            return
        # The original events exactly as sent (the stored record may differ: clamped amount,
        # inherited fields), in a random order.
        chosen = data.draw(
            st.lists(
                st.sampled_from(sorted(self.committed_events)), min_size=1, max_size=4, unique=True
            )
        )
        events = [self.committed_events[i] for i in chosen]
        before = self.snapshot()
        self.model.lookup_accounts([], self.clock.now)  # the ledger expired in snapshot()
        results = self.send_transfers(events)
        assert set(results) <= {"exists", "linked_event_failed", "linked_event_chain_open"}
        if self.model.expired_in_last_operation == 0:
            assert self.snapshot() == before, "a replay changed the ledger"

    @rule(data=st.data())
    def advance_clock(self, data: st.DataObject) -> None:
        how = data.draw(st.sampled_from(["ns", "ms", "seconds", "to_expiry"]))
        if how == "ns":
            self.clock.now += data.draw(st.integers(1, 20))
        elif how == "ms":
            self.clock.now += 1_000_000
        elif how == "seconds":
            self.clock.now += data.draw(st.integers(1, 3)) * NS
        else:
            state = self.model.state
            expiring = [
                p
                for p in state.transfers.values()
                if p.flags & F.PENDING and p.timeout and state.status[p.id] == "pending"
            ]
            if not expiring:
                return
            p = data.draw(st.sampled_from(sorted(expiring, key=lambda p: p.id)))
            target = p.timestamp + p.timeout * NS + data.draw(st.integers(-4, 2))
            self.clock.now = max(self.clock.now, target)

    # ------------------------------------------------------------------------ invariants

    @invariant()
    def ledger_matches_model(self) -> None:
        ids = [*ACCOUNT_IDS, UNKNOWN_ACCOUNT]
        accounts = self.ledger.lookup_accounts(ids)
        assert accounts == self.model.lookup_accounts(ids, self.clock.now)
        transfer_ids = sorted(self.sent_ids | {UNKNOWN_TRANSFER})
        assert self.ledger.lookup_transfers(transfer_ids) == self.model.lookup_transfers(
            transfer_ids
        )
        for account in accounts:
            if account.flags & AF.HISTORY:
                rows = self.ledger.get_account_balances(
                    AccountFilter(account_id=account.id, limit=8_190)
                )
                assert rows == self.model.account_balances(account.id), f"history {account.id}"

    @invariant()
    def statements_match_model(self) -> None:
        stored = self.model.lookup_transfers(sorted(self.sent_ids))
        by_time = sorted(stored, key=lambda t: t.timestamp)
        for account_id in ACCOUNT_IDS:
            expected = [
                t for t in by_time if account_id in (t.debit_account_id, t.credit_account_id)
            ]
            everything = AccountFilter(account_id=account_id, limit=8_190)
            assert self.ledger.get_account_transfers(everything) == expected, account_id
            newest_three = AccountFilter(
                account_id=account_id, limit=3, flags=everything.flags | AFF.REVERSED
            )
            assert self.ledger.get_account_transfers(newest_three) == expected[::-1][:3]

    @invariant()
    def every_ledger_balances(self) -> None:
        totals: dict[int, list[int]] = {}
        for a in self.ledger.lookup_accounts(ACCOUNT_IDS):
            t = totals.setdefault(a.ledger, [0, 0, 0, 0])
            t[0] += a.debits_pending
            t[1] += a.credits_pending
            t[2] += a.debits_posted
            t[3] += a.credits_posted
        for ledger, (dp, cp, dpo, cpo) in totals.items():
            assert dp == cp, f"ledger {ledger}: pending debits {dp} != credits {cp}"
            assert dpo == cpo, f"ledger {ledger}: posted debits {dpo} != credits {cpo}"

    def teardown(self) -> None:
        try:
            report = self.ledger.verify()
            assert report.ok, report.render()
        finally:
            self.ledger.close()


class MachineSettings(TypedDict):
    """The `hypothesis.settings` both tests share (each adds its own `max_examples`)."""

    stateful_step_count: int
    deadline: None
    derandomize: bool
    suppress_health_check: list[HealthCheck]


SETTINGS: MachineSettings = {
    "stateful_step_count": 20,
    "deadline": None,
    "derandomize": False,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


def ledger_machine(new_database_url: Callable[[], str]) -> type[LedgerMachine]:
    """`LedgerMachine` on databases from `new_database_url`, as a class hypothesis can run."""

    class BoundLedgerMachine(LedgerMachine):
        def __init__(self) -> None:
            super().__init__(new_database_url)

    return BoundLedgerMachine


def test_ledger_matches_reference_model_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_storage, "STATEMENT_INDEX_EVERY", SHORT_STATEMENT_TAIL)
    monkeypatch.setattr(sqlite_storage, "ACCOUNT_CHANGES_MERGE_EVERY", SHORT_ACCOUNT_LOG)
    numbers = itertools.count()

    def new_database_url() -> str:
        return str(tmp_path / f"ledger_{next(numbers)}.db")

    run_state_machine_as_test(
        ledger_machine(new_database_url), settings=settings(max_examples=100, **SETTINGS)
    )


@pytest.mark.postgres
def test_ledger_matches_reference_model_on_postgres(postgres_server: PostgresServer) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    numbers = itertools.count()

    def new_database_url() -> str:
        return postgres_server.create_database(f"properties_{worker}_{next(numbers)}")

    run_state_machine_as_test(
        ledger_machine(new_database_url), settings=settings(max_examples=30, **SETTINGS)
    )
