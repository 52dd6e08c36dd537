"""The rows the SQLite adapter binds are the same with the compiled path as without.

`int64_rows` (paycell.core._fastpath) builds them in one C pass: a plain tuple where every
value fits SQLite's signed 64-bit INTEGER, the adapter's own encoding (a 16-byte BLOB for a
wide value) where one does not. Values at each edge of the ranges must come out the same.
"""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycell.adapters.storage.sqlite import _account_change_rows, _transfer_rows
from paycell.adapters.storage.sqlite_account_log import pack_changes, unpack_changes
from paycell.core.types import Account, Transfer
from tests.compiled_path import COMPILED, WITH_COMPILED, use_compiled

MAX = (1 << 128) - 1
edges = st.sampled_from([0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 64, MAX - 1, MAX])
wide = st.one_of(st.integers(0, 1000), edges, st.integers(0, MAX))
narrow = st.one_of(st.integers(0, 1000), st.sampled_from([0, (1 << 16) - 1, (1 << 32) - 1]))

transfers = st.builds(
    Transfer,
    id=wide,
    debit_account_id=wide,
    credit_account_id=wide,
    amount=wide,
    pending_id=wide,
    user_data_128=wide,
    user_data_64=st.one_of(narrow, st.sampled_from([(1 << 63) - 1, 1 << 63, (1 << 64) - 1])),
    user_data_32=narrow,
    timeout=narrow,
    ledger=narrow,
    code=narrow,
    flags=narrow,
    timestamp=st.integers(0, (1 << 63) - 1),
)
accounts = st.builds(
    Account,
    id=wide,
    debits_pending=wide,
    debits_posted=wide,
    credits_pending=wide,
    credits_posted=wide,
    user_data_128=wide,
    ledger=narrow,
    code=narrow,
    flags=narrow,
    timestamp=st.integers(0, (1 << 63) - 1),
)


def rows_both_ways(build: Any, records: list[Any]) -> tuple[list[Any], list[Any]]:
    with use_compiled(True):
        compiled_rows = build(records)
    with use_compiled(False):
        python_rows = build(records)
    return compiled_rows, python_rows


requires_compiled = pytest.mark.skipif(
    not COMPILED, reason="PAYCELL_PURE_PYTHON=1 switched the compiled path off"
)


def changes_of(records: list[Account]) -> list[tuple[int, ...]]:
    return [(a.id, a[1], a[2], a[3], a[4], a.flags) for a in records]


@settings(max_examples=300, deadline=None)
@given(st.lists(accounts, max_size=8))
def test_packed_account_changes_unpack_to_the_accounts_changes(records: list[Account]) -> None:
    for compiled_path in WITH_COMPILED:
        with use_compiled(compiled_path):
            packed = pack_changes(records)
        assert [tuple(change) for change in unpack_changes(packed)] == changes_of(records)


@requires_compiled
@settings(max_examples=300, deadline=None)
@given(st.lists(accounts, max_size=8))
def test_compiled_packed_changes_are_the_adapters(records: list[Account]) -> None:
    compiled_packed, python_packed = rows_both_ways(pack_changes, records)
    assert compiled_packed == python_packed


@pytest.mark.parametrize(
    ("largest", "format_tag", "width"),
    [
        (0, b"I", 4),
        ((1 << 32) - 1, b"I", 4),
        (1 << 32, b"Q", 8),
        ((1 << 64) - 1, b"Q", 8),
        (1 << 64, b"W", 16),
        (MAX, b"W", 16),
    ],
)
def test_changes_are_packed_in_the_narrowest_width_that_holds_the_largest_value(
    largest: int, format_tag: bytes, width: int
) -> None:
    records = [
        Account(id=1, ledger=1, code=1),
        Account(id=2, credits_posted=largest, ledger=1, code=1),
    ]
    packed = pack_changes(records)
    assert packed[:1] == format_tag
    assert len(packed) == 5 + 2 * 6 * width  # the format, the checksum, two changes
    assert [tuple(change) for change in unpack_changes(packed)] == changes_of(records)


THREE = [Account(id=n, debits_posted=n * 10, ledger=1, code=1) for n in (1, 2, 3)]
GOOD = pack_changes(THREE)


@pytest.mark.parametrize(
    "damaged",
    [
        b"",
        b"I",
        GOOD[:-1],  # cut short
        GOOD[: 5 + 2 * 24],  # cut at a change's boundary
        b"Q" + GOOD[1:],  # the format swapped (the length fits both)
        GOOD[:10] + bytes([GOOD[10] ^ 1]) + GOOD[11:],  # one bit of a balance flipped
        GOOD[:1] + bytes(4) + GOOD[5:],  # the checksum zeroed
        b"X" + GOOD[1:],
    ],
)
def test_bytes_that_are_not_packed_changes_do_not_unpack(damaged: bytes) -> None:
    assert [tuple(change) for change in unpack_changes(GOOD)] == changes_of(THREE)
    with pytest.raises(ValueError, match=r"not packed|checksum|cut short"):
        list(unpack_changes(damaged))


@requires_compiled
def test_the_compiled_path_packs_accounts_of_64_bit_values_itself() -> None:
    from paycell.core import compiled

    assert compiled.pack_changes is not None
    assert compiled.pack_changes(THREE) is not None
    assert compiled.pack_changes([Account(id=1 << 64, ledger=1, code=1)]) is None


@requires_compiled
@settings(max_examples=200, deadline=None)
@given(st.lists(transfers, max_size=8))
def test_compiled_transfer_rows_are_the_adapters_rows(records: list[Transfer]) -> None:
    compiled_rows, python_rows = rows_both_ways(_transfer_rows, records)
    assert compiled_rows == python_rows
    assert [type(row) for row in compiled_rows] == [type(row) for row in python_rows]
    assert all(type(row) is tuple for row in compiled_rows)


@requires_compiled
@settings(max_examples=200, deadline=None)
@given(st.lists(accounts, max_size=8))
def test_compiled_account_change_rows_are_the_adapters_rows(records: list[Account]) -> None:
    compiled_rows, python_rows = rows_both_ways(_account_change_rows, records)
    assert compiled_rows == python_rows
    assert all(type(row) is tuple for row in compiled_rows)


@requires_compiled
def test_a_wide_value_goes_through_the_fallback() -> None:
    wide_transfer = Transfer(id=1 << 63, debit_account_id=1, credit_account_id=2, amount=3)
    with use_compiled(True):
        (row,) = _transfer_rows([wide_transfer])
    assert row[0] == (1 << 63).to_bytes(16, "big")
    assert row[1:4] == (1, 2, 3)
