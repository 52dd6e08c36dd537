"""The core's fast paths decide exactly what the general code decides.

`create_transfers` takes a plain transfer that is sure to succeed through an inlined fast path
and hands everything else to the general rules; `validate_transfers` accepts a well-formed
event with one chain of tests and diagnoses the rest field by field. Both have a compiled
version too (`paycell.core._fastpath`, loaded by `paycell.core.compiled`). Here random batches
over random ledger states run with the compiled path, the Python fast path and the general
rules alone, and must give the same results, the same committed batch (down to the order of
its rows and dicts and the journal hash) and the same changes to the prefetched state; random
events, well-formed or not, must validate exactly as the field-by-field check says, compiled
or not. The journal hash is pinned to its documented encoding, compiled or not.
"""

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycell.core import compiled, state_machine
from paycell.core.batch import CommittedBatch, LedgerMeta, PendingState
from paycell.core.errors import InvalidFieldError
from paycell.core.events import TRANSFER_FIELD_MAXIMUMS, _normalize_record, validate_transfers
from paycell.core.journal import Expiry, Failure, batch_hash
from paycell.core.results import CreateTransferResult
from paycell.core.types import (
    Account,
    AccountFlags,
    PendingStatus,
    Transfer,
    TransferFlags,
)
from tests.compiled_path import COMPILED, WITH_COMPILED, WITH_COMPILED_IDS, use_compiled

MAX = (1 << 128) - 1
F = TransferFlags
AF = AccountFlags
NOW = 1_700_000_000 * 1_000_000_000
# Ids of the transfers a generated ledger already holds, and of those remembered as failed.
EXISTING_IDS = range(1000, 1006)
FAILED_IDS = range(2000, 2003)
UNKNOWN_ACCOUNT = 99


@contextmanager
def fast_path(enabled: bool) -> Iterator[None]:
    saved = state_machine._FAST_PATH
    state_machine._FAST_PATH = enabled
    try:
        yield
    finally:
        state_machine._FAST_PATH = saved


# The ways through the core the tests below compare: the compiled fast path (with the Python
# one for what it hands back), the Python fast path alone, and the general rules alone.
# PAYCELL_PURE_PYTHON=1 runs the suite without the first.
PATHS = {"compiled": (True, True), "python": (True, False), "general": (False, False)}


@contextmanager
def path(name: str) -> Iterator[None]:
    fast, with_compiled = PATHS[name]
    with fast_path(fast), use_compiled(with_compiled):
        yield


def test_the_compiled_fast_path_is_built_and_on_unless_switched_off() -> None:
    """The suite must not pass on the pure-Python path alone because the build failed."""
    switched_off = os.environ.get("PAYCELL_PURE_PYTHON") == "1"
    assert compiled.BUILT, (
        "paycell.core._fastpath was not built: `.venv/bin/python -m pip install -v -e .` "
        "shows the compiler's error (it needs a C compiler and Python's headers)"
    )
    assert compiled.enabled() is not switched_off


def test_the_compiled_module_is_built_from_this_source() -> None:
    """A module left from an older _fastpath.c would test the wrong code: `make` (or
    `pip install -e .`) builds it again when the source changes."""
    source = Path(compiled.__file__).with_name("_fastpath.c").read_bytes()
    assert compiled.source_sha256() == hashlib.sha256(source).hexdigest(), (
        "paycell.core._fastpath is out of date: run make (or pip install -e .)"
    )


# ---------------------------------------------------------------------- generated ledgers

# Mostly room for a batch of small transfers; sometimes none, sometimes next to the overflow.
U64 = (1 << 64) - 1
balance = st.sampled_from(["room"] * 6 + ["none", "little", "full", "edge64"]).flatmap(
    lambda kind: {
        "room": st.integers(1_000, 100_000),
        "none": st.just(0),
        "little": st.integers(0, 300),
        "full": st.integers(MAX - 50, MAX),
        # Where the compiled path's 64-bit arithmetic ends: it must hand these over.
        "edge64": st.integers(U64 - 600, U64 + 10),
    }[kind]
)
account_flags = st.sampled_from(
    [
        0,
        0,
        AF.HISTORY,
        AF.DEBITS_MUST_NOT_EXCEED_CREDITS,
        AF.DEBITS_MUST_NOT_EXCEED_CREDITS | AF.HISTORY,
        AF.CREDITS_MUST_NOT_EXCEED_DEBITS,
        *[0] * 5,
        AF.CLOSED,
    ]
).map(int)
# Books where most transfers can take a fast path: no history, nothing closed.
plain_account_flags = st.sampled_from(
    [0, 0, 0, 0, AF.DEBITS_MUST_NOT_EXCEED_CREDITS, AF.CREDITS_MUST_NOT_EXCEED_DEBITS]
).map(int)


@st.composite
def accounts(draw: st.DrawFn) -> dict[int, Account]:
    count = draw(st.integers(2, 8))
    # Mostly small ids; sometimes ids that need all 128 bits (the platform's do).
    first_id = draw(st.sampled_from([1] * 4 + [1 << 64, 1 << 127, MAX - 8]))
    flags = draw(st.sampled_from([account_flags, plain_account_flags]))
    result: dict[int, Account] = {}
    for account_id in range(first_id, first_id + count):
        debits_posted, credits_posted = draw(balance), draw(balance)
        result[account_id] = Account(
            id=account_id,
            debits_posted=debits_posted,
            credits_posted=credits_posted,
            ledger=draw(st.sampled_from([1, 1, 1, 1, 1, 2])),
            code=1,
            flags=draw(flags),
            timestamp=len(result) + 1,
        )
    return result


@st.composite
def prefetched_state(draw: st.DrawFn) -> state_machine.Prefetched:
    """Accounts, some committed plain and pending transfers, and some failed ids. The pending
    balances of the accounts hold exactly the amounts of their still-pending transfers."""
    books = draw(accounts())
    account_ids = list(books)
    transfers: dict[int, Transfer] = {}
    pending_states: dict[int, PendingState] = {}
    for transfer_id in EXISTING_IDS[: draw(st.integers(0, len(EXISTING_IDS)))]:
        debit_id = draw(st.sampled_from(account_ids))
        credit_id = draw(st.sampled_from([i for i in account_ids if i != debit_id]))
        flags = draw(
            st.sampled_from([0, F.PENDING, F.PENDING | F.CLOSING_DEBIT, F.BALANCING_DEBIT])
        )
        transfer = Transfer(
            id=transfer_id,
            debit_account_id=debit_id,
            credit_account_id=credit_id,
            amount=draw(st.integers(1, 20)),
            user_data_128=draw(st.sampled_from([0, 5])),
            ledger=books[debit_id].ledger,
            code=draw(st.sampled_from([1, 2])),
            flags=int(flags),
            timestamp=100 + transfer_id,
        )
        transfers[transfer_id] = transfer
        if not flags & F.PENDING:
            continue
        status = draw(st.sampled_from([PendingStatus.PENDING] * 3 + [PendingStatus.POSTED]))
        expires_at = draw(st.sampled_from([0, 0, NOW - 1, NOW * 2]))
        dr, cr = books[debit_id], books[credit_id]
        if status == PendingStatus.PENDING and (
            dr.debits_pending + dr.debits_posted + transfer.amount > MAX
            or cr.credits_pending + cr.credits_posted + transfer.amount > MAX
        ):
            status = PendingStatus.VOIDED
        pending_states[transfer_id] = PendingState(status, expires_at)
        if status == PendingStatus.PENDING:
            closes = AF.CLOSED if flags & F.CLOSING_DEBIT else 0
            books[debit_id] = dr._replace(
                debits_pending=dr.debits_pending + transfer.amount, flags=dr.flags | closes
            )
            cr = books[credit_id]
            books[credit_id] = cr._replace(credits_pending=cr.credits_pending + transfer.amount)
    failed = dict.fromkeys(FAILED_IDS[: draw(st.integers(0, len(FAILED_IDS)))], "exceeds_credits")
    return state_machine.Prefetched(books, transfers, pending_states, failed)


# Mostly what the fast path takes (plain, or linked into a chain), with every kind of odd value
# each rule looks at mixed in.
plain_flags = st.sampled_from([0, 0, 0, F.LINKED, F.LINKED])
# Batches without chains, where the compiled path applies long runs of plain transfers.
unlinked_flags = st.just(0)
other_flags = st.sampled_from(
    [
        F.PENDING,
        F.PENDING | F.LINKED,
        F.PENDING | F.CLOSING_CREDIT,
        F.BALANCING_DEBIT,
        F.BALANCING_CREDIT | F.LINKED,
        F.CLOSING_DEBIT,
        F.POST_PENDING_TRANSFER,
        F.VOID_PENDING_TRANSFER | F.LINKED,
        F.POST_PENDING_TRANSFER | F.VOID_PENDING_TRANSFER,
        F.IMPORTED,
        1 << 12,
    ]
)


@st.composite
def transfer_event(
    draw: st.DrawFn,
    ledgers: dict[int, int],
    earlier_ids: list[int],
    oddness: int,
    usual_flags: st.SearchStrategy[int] = plain_flags,
) -> Transfer:
    """Each field is odd (a value some rule rejects or treats apart) with odds 1 in `oddness`,
    so an event is often wrong in exactly one way."""

    def field(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
        return draw(odd if draw(st.integers(1, oddness)) == 1 else usual)

    account_ids = list(ledgers)
    debit_account_id = field(
        st.sampled_from(account_ids), st.sampled_from([0, MAX, UNKNOWN_ACCOUNT])
    )
    return Transfer(
        id=field(
            st.one_of(st.integers(1, 1 << 64), st.integers(1 << 64, MAX - 1)),
            st.one_of(
                st.sampled_from([0, MAX]),
                st.sampled_from(EXISTING_IDS),
                st.sampled_from(FAILED_IDS),
                st.sampled_from(earlier_ids or [0]),
            ),
        ),
        debit_account_id=debit_account_id,
        credit_account_id=field(
            st.sampled_from([i for i in account_ids if i != debit_account_id]),
            st.sampled_from([debit_account_id, 0, MAX, UNKNOWN_ACCOUNT]),
        ),
        amount=field(st.integers(1, 500), st.sampled_from([0, MAX, MAX - 1])),
        pending_id=field(st.just(0), st.sampled_from([MAX, *EXISTING_IDS, *earlier_ids])),
        user_data_128=draw(st.sampled_from([0, 5])),
        user_data_64=draw(st.sampled_from([0, 6])),
        user_data_32=draw(st.sampled_from([0, 7])),
        timeout=field(st.just(0), st.sampled_from([1, (1 << 32) - 1])),
        ledger=field(st.just(ledgers.get(debit_account_id, 1)), st.sampled_from([0, 1, 2])),
        code=field(st.just(1), st.just(0)),
        flags=int(field(usual_flags, other_flags)),
        timestamp=field(st.just(0), st.just(1)),
    )


@st.composite
def batches(draw: st.DrawFn) -> tuple[state_machine.Prefetched, list[Transfer], LedgerMeta]:
    prefetched = draw(prefetched_state())
    ledgers = {account.id: account.ledger for account in prefetched.accounts.values()}
    oddness = draw(st.sampled_from([10, 30, 100, 1000]))
    usual_flags = draw(st.sampled_from([plain_flags, unlinked_flags]))
    events: list[Transfer] = []
    for _ in range(draw(st.integers(1, 40))):
        events.append(draw(transfer_event(ledgers, [t.id for t in events], oddness, usual_flags)))
    # Near the end of the timestamp range the fast path must step aside for overflows_timeout.
    last_timestamp = draw(st.sampled_from([NOW] * 8 + [(1 << 63) - 10]))
    return prefetched, events, LedgerMeta(last_timestamp, 7, bytes(32))


def copy_state(prefetched: state_machine.Prefetched) -> state_machine.Prefetched:
    return state_machine.Prefetched(
        dict(prefetched.accounts),
        dict(prefetched.transfers),
        dict(prefetched.pending_states),
        dict(prefetched.failed_results),
    )


def everything(committed: CommittedBatch | None) -> dict[str, Any] | None:
    """Every field of a committed batch, with dicts as item lists so that order counts too."""
    if committed is None:
        return None
    return {
        f.name: list(value.items())
        if isinstance(value := getattr(committed, f.name), dict)
        else value
        for f in fields(committed)
    }


def apply(
    prefetched: state_machine.Prefetched, events: list[Transfer], meta: LedgerMeta, *, way: str
) -> tuple[object, ...]:
    state = copy_state(prefetched)
    with path(way):
        outcome = state_machine.create_transfers(events, state, meta, NOW)
    return (
        outcome.results,
        everything(outcome.committed),
        list(state.pending_states.items()),
        list(state.failed_results.items()),
    )


def assert_all_ways_agree(
    prefetched: state_machine.Prefetched, events: list[Transfer], meta: LedgerMeta
) -> None:
    general = apply(prefetched, events, meta, way="general")
    assert apply(prefetched, events, meta, way="python") == general
    if COMPILED:
        assert apply(prefetched, events, meta, way="compiled") == general


@settings(max_examples=400, deadline=None)
@given(batches())
def test_compiled_python_and_general_paths_agree(
    batch: tuple[state_machine.Prefetched, list[Transfer], LedgerMeta],
) -> None:
    assert_all_ways_agree(*batch)


# Balances, amounts and ids around the 64-bit edge, where the compiled path's arithmetic ends
# and its overflow guards work: a limit whose pending + posted just wraps, a balance one short
# of the edge. Failed and committed ids come up often.
edge_value = st.one_of(
    st.integers(0, 50),
    st.integers(U64 - 60, U64 + 3),
    st.integers(1000, 2000),
    st.sampled_from([U64 // 2, 1 << 63, (1 << 63) - 1]),
)
edge_flags = st.sampled_from(
    [
        0,
        0,
        int(AF.DEBITS_MUST_NOT_EXCEED_CREDITS),
        int(AF.DEBITS_MUST_NOT_EXCEED_CREDITS),
        int(AF.CREDITS_MUST_NOT_EXCEED_DEBITS),
        int(AF.HISTORY),
        int(AF.CLOSED),
    ]
)
COMMITTED_ID, FAILED_ID = 77, 78


@st.composite
def edge_batches(draw: st.DrawFn) -> tuple[state_machine.Prefetched, list[Transfer], LedgerMeta]:
    first_id = draw(st.sampled_from([1, 1, U64 - 1, MAX - 5, (1 << 63) - 1]))
    books = {
        account_id: Account(
            id=account_id,
            debits_pending=draw(edge_value),
            debits_posted=draw(edge_value),
            credits_pending=draw(edge_value),
            credits_posted=draw(edge_value),
            ledger=draw(st.sampled_from([1, 1, 1, 2])),
            code=1,
            flags=draw(edge_flags),
            timestamp=1,
        )
        for account_id in range(first_id, first_id + draw(st.integers(2, 4)))
    }
    ids = list(books)
    committed = {}
    if draw(st.booleans()):
        committed[COMMITTED_ID] = Transfer(
            id=COMMITTED_ID,
            debit_account_id=ids[0],
            credit_account_id=ids[1],
            amount=5,
            ledger=1,
            code=1,
            timestamp=5,
        )
    failed = {FAILED_ID: "exceeds_credits"} if draw(st.booleans()) else {}
    events = []
    for _ in range(draw(st.integers(1, 12))):
        debit = draw(st.sampled_from([*ids, 0, MAX]))
        events.append(
            Transfer(
                id=draw(
                    st.one_of(
                        st.integers(1, 30),
                        st.sampled_from([0, MAX, MAX - 1, COMMITTED_ID, FAILED_ID, 1 << 64, U64]),
                    )
                ),
                debit_account_id=debit,
                credit_account_id=draw(st.sampled_from([*ids, debit])),
                amount=draw(st.one_of(st.integers(1, 100), edge_value, st.sampled_from([MAX, 0]))),
                pending_id=draw(st.sampled_from([0] * 10 + [COMMITTED_ID])),
                user_data_128=draw(st.sampled_from([0, MAX])),
                timeout=draw(st.sampled_from([0] * 10 + [1])),
                ledger=draw(st.sampled_from([1, 1, 1, 2, 0])),
                code=draw(st.sampled_from([1] * 10 + [0])),
                flags=draw(
                    st.sampled_from(
                        [0] * 8 + [int(F.LINKED), int(F.PENDING), int(F.BALANCING_DEBIT)]
                    )
                ),
                timestamp=draw(st.sampled_from([0] * 15 + [1])),
            )
        )
    last_timestamp = draw(st.sampled_from([NOW] * 6 + [(1 << 63) - 5, (1 << 63) - 20]))
    prefetched = state_machine.Prefetched(books, committed, {}, failed)
    return prefetched, events, LedgerMeta(last_timestamp, 1, bytes(32))


@settings(max_examples=400, deadline=None)
@given(edge_batches())
def test_compiled_python_and_general_paths_agree_at_the_64_bit_edges(
    batch: tuple[state_machine.Prefetched, list[Transfer], LedgerMeta],
) -> None:
    assert_all_ways_agree(*batch)


def plain(transfer_id: int, debit: int, credit: int, amount: int) -> Transfer:
    return Transfer(
        id=transfer_id,
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        ledger=1,
        code=1,
    )


LIMITED = int(AF.DEBITS_MUST_NOT_EXCEED_CREDITS)
LIMITED_CREDITS = int(AF.CREDITS_MUST_NOT_EXCEED_DEBITS)


@pytest.mark.parametrize(
    ("books", "events", "committed", "failed"),
    [
        pytest.param(  # pending + posted is exactly 2**64: past any 64-bit credits
            {
                1: Account(
                    id=1,
                    debits_pending=1,
                    debits_posted=U64 - 54,
                    credits_posted=U64,
                    ledger=1,
                    code=1,
                    flags=LIMITED,
                ),
                2: Account(id=2, ledger=1, code=1),
            },
            [plain(10, 1, 2, 54)],
            {},
            {},
            id="debit-limit-wraps-64-bits",
        ),
        pytest.param(
            {
                1: Account(id=1, ledger=1, code=1),
                2: Account(
                    id=2,
                    credits_pending=3,
                    credits_posted=U64 - 10,
                    debits_posted=U64,
                    ledger=1,
                    code=1,
                    flags=LIMITED_CREDITS,
                ),
            },
            [plain(10, 1, 2, 8)],
            {},
            {},
            id="credit-limit-wraps-64-bits",
        ),
        pytest.param(  # debits_posted + amount needs 65 bits: Python's 128-bit rules take it
            {
                1: Account(id=1, debits_posted=U64 - 1, ledger=1, code=1),
                2: Account(id=2, ledger=1, code=1),
            },
            [plain(10, 1, 2, 5), plain(11, 2, 1, 5)],
            {},
            {},
            id="balance-past-64-bits",
        ),
        pytest.param(  # a replay of a committed transfer, then one that differs
            {1: Account(id=1, ledger=1, code=1), 2: Account(id=2, ledger=1, code=1)},
            [plain(10, 1, 2, 5), plain(10, 1, 2, 6), plain(11, 1, 2, 1)],
            {10: plain(10, 1, 2, 5)._replace(timestamp=3)},
            {},
            id="committed-ids",
        ),
        pytest.param(
            {1: Account(id=1, ledger=1, code=1), 2: Account(id=2, ledger=1, code=1)},
            [plain(10, 1, 2, 5), plain(11, 1, 2, 5)],
            {},
            {10: "exceeds_credits"},
            id="failed-id",
        ),
        pytest.param(
            {1: Account(id=1, ledger=1, code=1), 2: Account(id=2, ledger=1, code=1)},
            [plain(MAX, 1, 2, 5), plain(MAX - 1, 1, 2, 5), plain(1 << 127, 2, 1, 1)],
            {},
            {},
            id="ids-at-128-bits",
        ),
    ],
)
def test_compiled_path_hands_over_each_case_it_is_not_sure_of(
    books: dict[int, Account],
    events: list[Transfer],
    committed: dict[int, Transfer],
    failed: dict[int, str],
) -> None:
    """The cases a random search reaches rarely, one by one."""
    prefetched = state_machine.Prefetched(books, committed, {}, failed)
    assert_all_ways_agree(prefetched, events, LedgerMeta(NOW, 1, bytes(32)))


def test_plain_transfers_never_reach_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shows the comparison above compares two different code paths."""
    books = {
        1: Account(id=1, ledger=1, code=1, flags=int(AF.HISTORY), timestamp=1),
        2: Account(id=2, credits_posted=100, ledger=1, code=1, timestamp=2),
        3: Account(
            id=3, ledger=1, code=1, flags=int(AF.DEBITS_MUST_NOT_EXCEED_CREDITS), timestamp=3
        ),
    }
    events = [
        Transfer(id=10, debit_account_id=2, credit_account_id=3, amount=60, ledger=1, code=1),
        Transfer(
            id=11,
            debit_account_id=3,
            credit_account_id=1,
            amount=50,
            ledger=1,
            code=1,
            flags=int(F.LINKED),
        ),
        Transfer(id=12, debit_account_id=1, credit_account_id=2, amount=7, ledger=1, code=1),
    ]

    def general_path(*args: object) -> CreateTransferResult:
        raise AssertionError("the fast path should have taken this transfer")

    monkeypatch.setattr(state_machine, "_create_transfer", general_path)
    outcome = state_machine.create_transfers(
        events, state_machine.Prefetched(accounts=books), LedgerMeta(NOW, 1, bytes(32)), NOW
    )
    assert outcome.results == [CreateTransferResult.OK] * 3
    assert outcome.committed is not None
    updated = outcome.committed.accounts_updated
    assert [(a.id, a.debits_posted, a.credits_posted) for a in updated.values()] == [
        (2, 60, 107),
        (3, 50, 60),
        (1, 7, 50),
    ]
    assert [row.account_id for row in outcome.committed.history] == [1, 1]


def test_a_transfer_beyond_a_limit_leaves_the_fast_path_with_its_result() -> None:
    books = {
        1: Account(
            id=1, ledger=1, code=1, flags=int(AF.DEBITS_MUST_NOT_EXCEED_CREDITS), timestamp=1
        ),
        2: Account(id=2, ledger=1, code=1, timestamp=2),
    }
    event = Transfer(id=10, debit_account_id=1, credit_account_id=2, amount=1, ledger=1, code=1)
    state = state_machine.Prefetched(accounts=books)
    outcome = state_machine.create_transfers([event], state, LedgerMeta(NOW, 1, bytes(32)), NOW)
    assert outcome.results == [CreateTransferResult.EXCEEDS_CREDITS]
    assert outcome.committed is not None
    assert outcome.committed.accounts_updated == {}
    assert state.failed_results == {10: "exceeds_credits"}


# ----------------------------------------------------------------------- validate_transfers

field_value = st.one_of(
    st.integers(0, 1000),
    st.sampled_from([0, (1 << 16) - 1, 1 << 16, (1 << 32) - 1, 1 << 32, (1 << 64) - 1, 1 << 64]),
    st.sampled_from([MAX, MAX + 1, -1, -MAX - 1, 1 << 200]),
    st.sampled_from([True, False, F.LINKED, AF.HISTORY, 1.0, "1", None]),
)
# Records whose fields are deliberately of any type (floats, strings, None, out of range):
# the point is to check that validation rejects what the annotations forbid.
record = st.one_of(
    st.lists(st.integers(0, 1000), min_size=13, max_size=13).map(lambda v: Transfer(*v)),
    st.lists(field_value, min_size=13, max_size=13).map(
        lambda v: Transfer(*v)  # type: ignore[arg-type]  # ill-typed fields on purpose
    ),
    st.lists(field_value, min_size=12, max_size=14).map(tuple),
    st.lists(field_value, min_size=13, max_size=13).map(
        lambda v: Account(*v)  # type: ignore[arg-type]  # ill-typed fields on purpose
    ),
)


def field_by_field(events: list[Any]) -> list[Transfer] | InvalidFieldError:
    try:
        return [
            Transfer(*_normalize_record(event, index, TRANSFER_FIELD_MAXIMUMS, "Transfer"))
            for index, event in enumerate(events)
        ]
    except InvalidFieldError as error:
        return error


@pytest.mark.parametrize("with_compiled", WITH_COMPILED, ids=WITH_COMPILED_IDS)
@settings(max_examples=300, deadline=None)
@given(events=st.lists(record, min_size=1, max_size=5))
def test_validate_transfers_agrees_with_the_field_by_field_check(
    with_compiled: bool, events: list[Any]
) -> None:
    with use_compiled(with_compiled):
        check_validation(events)


@pytest.mark.parametrize("with_compiled", WITH_COMPILED, ids=WITH_COMPILED_IDS)
@pytest.mark.parametrize(
    ("position", "maximum"),
    [(position, maximum) for position, (_, maximum) in enumerate(TRANSFER_FIELD_MAXIMUMS)],
    ids=[name for name, _ in TRANSFER_FIELD_MAXIMUMS],
)
def test_each_field_validates_up_to_its_width_and_not_one_past(
    with_compiled: bool, position: int, maximum: int
) -> None:
    """Every field at its maximum, one past it, and at the other widths' edges, after a
    well-formed event: accepted or refused exactly as the field-by-field check says."""
    edges = [maximum, maximum + 1, 0, -1, True, 1 << 200, U64, U64 + 1, 1 << 32, 1 << 16]
    for value in edges:
        values: list[Any] = [1] * 13
        values[position] = value
        with use_compiled(with_compiled):
            check_validation([Transfer(*[1] * 13), Transfer(*values)])


def check_validation(events: list[Any]) -> None:
    expected = field_by_field(events)
    if isinstance(expected, InvalidFieldError):
        with pytest.raises(InvalidFieldError) as raised:
            validate_transfers(events)
        assert (raised.value.field, raised.value.index, str(raised.value)) == (
            expected.field,
            expected.index,
            str(expected),
        )
        return
    validated = validate_transfers(events)
    assert validated == expected
    assert all(type(t) is Transfer for t in validated)
    assert all(type(value) is int for t in validated for value in t)
    # Well-formed events are passed through as they are, not rebuilt.
    for event, t in zip(events, validated, strict=True):
        if type(event) is Transfer and all(type(value) is int for value in event):
            assert t is event


# ------------------------------------------------------------------------------ journal hash


@pytest.mark.parametrize("with_compiled", WITH_COMPILED, ids=WITH_COMPILED_IDS)
@pytest.mark.parametrize("widths", ["64-bit", "128-bit"])
def test_batch_hash_is_the_documented_encoding(with_compiled: bool, widths: str) -> None:
    accounts = [Account(id=1, ledger=156, code=2, flags=8, timestamp=11), Account(id=MAX - 1)]
    # The compiled encoder formats transfers whose fields fit in 64 bits and hands the
    # others to Python: both kinds of batch must hash as documented.
    wide = MAX if widths == "128-bit" else (1 << 64) - 1
    transfers = [
        Transfer(
            id=wide - 1,
            debit_account_id=1,
            credit_account_id=2,
            amount=wide,
            pending_id=3,
            user_data_128=4,
            user_data_64=5,
            user_data_32=6,
            timeout=7,
            ledger=8,
            code=9,
            flags=10,
            timestamp=12,
        ),
        Transfer(id=2, timestamp=13),
    ]
    expiries = [Expiry(3, 14), Expiry(4, 15)]
    failures = [Failure(5, "exceeds_credits", 16)]
    previous = bytes(range(32))

    def line(kind: str, record: tuple[object, ...]) -> str:
        return " ".join([kind, *(str(value) for value in record)]) + "\n"

    text = "batch 9 transfers\n"
    text += "".join(line("A", a) for a in accounts)
    text += "".join(line("T", t) for t in transfers)
    text += "".join(line("E", e) for e in expiries)
    text += "".join(line("F", f) for f in failures)
    expected = hashlib.sha256(previous + text.encode()).digest()
    with use_compiled(with_compiled):
        hashed = batch_hash(previous, 9, "transfers", accounts, transfers, expiries, failures)
    assert hashed == expected


needs_compiled = pytest.mark.skipif(
    not COMPILED, reason="PAYCELL_PURE_PYTHON=1 switched the compiled path off"
)


@needs_compiled
def test_compiled_transfer_lines_hand_wide_values_to_python() -> None:
    assert compiled.transfer_lines is not None
    small = [Transfer(id=1, amount=(1 << 64) - 1, timestamp=3)]
    assert compiled.transfer_lines(small) == b"T 1 0 0 18446744073709551615 0 0 0 0 0 0 0 0 3\n"
    assert compiled.transfer_lines([*small, Transfer(id=1 << 64)]) is None
    assert compiled.transfer_lines([]) == b""


@needs_compiled
def test_compiled_apply_plain_stops_at_the_first_transfer_it_is_not_sure_of() -> None:
    """It applies a run of plain transfers and hands back, untouched but for the working
    rows, the first that needs a rule it does not have (here, a history account's)."""
    assert compiled.apply_plain is not None
    books = {
        1: Account(id=1, credits_posted=100, ledger=1, code=1, timestamp=1),
        2: Account(id=2, ledger=1, code=1, timestamp=2),
        3: Account(id=3, ledger=1, code=1, flags=int(AF.HISTORY), timestamp=3),
    }
    events = [
        Transfer(id=10, debit_account_id=1, credit_account_id=2, amount=60, ledger=1, code=1),
        Transfer(id=11, debit_account_id=2, credit_account_id=1, amount=5, ledger=1, code=1),
        Transfer(id=12, debit_account_id=1, credit_account_id=3, amount=7, ledger=1, code=1),
        Transfer(id=13, debit_account_id=1, credit_account_id=2, amount=1, ledger=1, code=1),
    ]
    balances: dict[int, list[int]] = {}
    created: list[Transfer] = []
    created_by_id: dict[int, Transfer] = {}
    stopped_at = compiled.apply_plain(
        events, 0, NOW, books, balances, {}, {}, created, created_by_id, Transfer
    )
    assert stopped_at == 2
    assert created == [events[0]._replace(timestamp=NOW), events[1]._replace(timestamp=NOW + 1)]
    assert all(type(t) is Transfer for t in created)
    assert created_by_id == {10: created[0], 11: created[1]}
    assert balances == {
        1: list(books[1]._replace(debits_posted=60, credits_posted=105)),
        2: list(books[2]._replace(debits_posted=5, credits_posted=60)),
        3: list(books[3]),  # made before it stopped, as the Python path makes it
    }
    assert books[1].debits_posted == 0, "the prefetched accounts are not changed"
    # A start past the stop: it goes on from there.
    assert (
        compiled.apply_plain(
            events, 3, NOW, books, balances, {}, {}, created, created_by_id, Transfer
        )
        == 4
    )
    assert balances[1][2] == 61
