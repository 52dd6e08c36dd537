"""The core's fast paths decide exactly what the general code decides.

`create_transfers` takes a plain transfer that is sure to succeed through an inlined fast path
and hands everything else to the general rules; `validate_transfers` accepts a well-formed
event with one chain of tests and diagnoses the rest field by field. Here random batches over
random ledger states run with the transfer fast path on and off, and must give the same
results, the same committed batch (down to the order of its rows and dicts) and the same
changes to the prefetched state; random events, well-formed or not, must validate exactly as
the field-by-field check says. The journal hash is pinned to its documented encoding.
"""

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycell.core import state_machine
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


# ---------------------------------------------------------------------- generated ledgers

# Mostly room for a batch of small transfers; sometimes none, sometimes next to the overflow.
balance = st.sampled_from(["room"] * 6 + ["none", "little", "full"]).flatmap(
    lambda kind: {
        "room": st.integers(1_000, 100_000),
        "none": st.just(0),
        "little": st.integers(0, 300),
        "full": st.integers(MAX - 50, MAX),
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


@st.composite
def accounts(draw: st.DrawFn) -> dict[int, Account]:
    count = draw(st.integers(2, 8))
    result = {}
    for account_id in range(1, count + 1):
        debits_posted, credits_posted = draw(balance), draw(balance)
        result[account_id] = Account(
            id=account_id,
            debits_posted=debits_posted,
            credits_posted=credits_posted,
            ledger=draw(st.sampled_from([1, 1, 1, 1, 1, 2])),
            code=1,
            flags=draw(account_flags),
            timestamp=account_id,
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
    draw: st.DrawFn, ledgers: dict[int, int], earlier_ids: list[int], oddness: int
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
            st.integers(1, 1 << 64),
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
        flags=int(field(plain_flags, other_flags)),
        timestamp=field(st.just(0), st.just(1)),
    )


@st.composite
def batches(draw: st.DrawFn) -> tuple[state_machine.Prefetched, list[Transfer], LedgerMeta]:
    prefetched = draw(prefetched_state())
    ledgers = {account.id: account.ledger for account in prefetched.accounts.values()}
    oddness = draw(st.sampled_from([10, 30, 100, 1000]))
    events: list[Transfer] = []
    for _ in range(draw(st.integers(1, 40))):
        events.append(draw(transfer_event(ledgers, [t.id for t in events], oddness)))
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
    prefetched: state_machine.Prefetched, events: list[Transfer], meta: LedgerMeta, *, fast: bool
) -> tuple[object, ...]:
    state = copy_state(prefetched)
    with fast_path(fast):
        outcome = state_machine.create_transfers(events, state, meta, NOW)
    return (
        outcome.results,
        everything(outcome.committed),
        list(state.pending_states.items()),
        list(state.failed_results.items()),
    )


@settings(max_examples=300, deadline=None)
@given(batches())
def test_fast_path_and_general_path_agree(
    batch: tuple[state_machine.Prefetched, list[Transfer], LedgerMeta],
) -> None:
    prefetched, events, meta = batch
    assert apply(prefetched, events, meta, fast=True) == apply(prefetched, events, meta, fast=False)


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


@settings(max_examples=300, deadline=None)
@given(st.lists(record, min_size=1, max_size=5))
def test_validate_transfers_agrees_with_the_field_by_field_check(events: list[Any]) -> None:
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


def test_batch_hash_is_the_documented_encoding() -> None:
    accounts = [Account(id=1, ledger=156, code=2, flags=8, timestamp=11), Account(id=MAX - 1)]
    transfers = [
        Transfer(
            id=MAX - 1,
            debit_account_id=1,
            credit_account_id=2,
            amount=MAX,
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
    assert batch_hash(previous, 9, "transfers", accounts, transfers, expiries, failures) == expected
