"""Input that is not a well-formed event is rejected with an error naming the field, and the
ledger is left exactly as it was."""

from pathlib import Path

import pytest

from paycell import (
    BATCH_EVENTS_MAX,
    Account,
    AccountFilter,
    BatchEmptyError,
    BatchTooLargeError,
    InvalidFieldError,
    Ledger,
    QueryFilter,
    Transfer,
    TransferFlags,
)

U128_MAX = (1 << 128) - 1


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.create_accounts([Account(id=1, ledger=156, code=1), Account(id=2, ledger=156, code=1)])
    return ledger


def good_transfer(**changes: object) -> Transfer:
    # `changes` may be ill-typed on purpose (floats, strings, None): the tests check that
    # such fields are rejected.
    return Transfer(
        id=100, debit_account_id=1, credit_account_id=2, amount=500, ledger=156, code=1
    )._replace(**changes)  # type: ignore[arg-type]  # ill-typed fields on purpose


def snapshot(ledger: Ledger) -> tuple[object, ...]:
    return (
        ledger.lookup_accounts([1, 2]),
        ledger.lookup_transfers([99, 100]),
        ledger.store.meta(),
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("amount", -1, "must not be negative"),
        ("amount", U128_MAX + 1, "must fit in 128 unsigned bits"),
        ("amount", 5.0, "must be an integer, got float"),
        ("amount", "500", "must be an integer, got str"),
        ("amount", True, "must be an integer, got bool"),
        ("id", -5, "must not be negative"),
        ("id", None, "must be an integer, got NoneType"),
        ("debit_account_id", 1 << 129, "must fit in 128 unsigned bits"),
        ("user_data_64", 1 << 64, "must fit in 64 unsigned bits"),
        ("user_data_32", 1 << 32, "must fit in 32 unsigned bits"),
        ("timeout", 1 << 32, "must fit in 32 unsigned bits"),
        ("ledger", -156, "must not be negative"),
        ("code", 1 << 16, "must fit in 16 unsigned bits"),
        ("flags", 1 << 16, "must fit in 16 unsigned bits"),
    ],
)
def test_malformed_transfer_field_is_named_and_changes_nothing(
    ledger: Ledger, field: str, value: object, message: str
) -> None:
    before = snapshot(ledger)
    batch = [good_transfer(id=99), good_transfer(**{field: value})]
    with pytest.raises(InvalidFieldError) as raised:
        ledger.create_transfers(batch)
    assert raised.value.field == field
    assert raised.value.index == 1
    assert raised.value.code == "invalid_field"
    assert message in str(raised.value)
    assert snapshot(ledger) == before


def test_malformed_account_field_is_named_and_changes_nothing(ledger: Ledger) -> None:
    before = snapshot(ledger)
    with pytest.raises(InvalidFieldError) as raised:
        ledger.create_accounts([Account(id=3, ledger=156, code=1), Account(id=-4, ledger=156)])
    assert (raised.value.field, raised.value.index) == ("id", 1)
    assert snapshot(ledger) == before
    assert ledger.lookup_accounts([3]) == []


def test_oversize_batch_is_rejected_whole(ledger: Ledger) -> None:
    before = snapshot(ledger)
    batch = [good_transfer(id=1000 + i) for i in range(BATCH_EVENTS_MAX + 1)]
    with pytest.raises(BatchTooLargeError, match="8190"):
        ledger.create_transfers(batch)
    assert snapshot(ledger) == before


def test_largest_batch_is_accepted(ledger: Ledger) -> None:
    batch = [good_transfer(id=1000 + i, amount=1) for i in range(BATCH_EVENTS_MAX)]
    results = ledger.create_transfers(batch)
    assert len(results) == BATCH_EVENTS_MAX
    assert {result.value for result in results} == {"ok"}
    assert ledger.lookup_accounts([2])[0].credits_posted == BATCH_EVENTS_MAX


def test_empty_batch_is_an_error_not_a_silent_success(ledger: Ledger) -> None:
    before = snapshot(ledger)
    with pytest.raises(BatchEmptyError) as transfers:
        ledger.create_transfers([])
    with pytest.raises(BatchEmptyError) as accounts:
        ledger.create_accounts([])
    assert transfers.value.code == accounts.value.code == "batch_empty"
    assert snapshot(ledger) == before


def test_something_that_is_not_a_transfer_is_rejected(ledger: Ledger) -> None:
    with pytest.raises(InvalidFieldError, match="must be a Transfer"):
        ledger.create_transfers([{"id": 1}])  # type: ignore[list-item]


def test_flag_enums_are_accepted_as_their_integer_values(ledger: Ledger) -> None:
    pending = good_transfer(flags=TransferFlags.PENDING)
    assert [r.value for r in ledger.create_transfers([pending])] == ["ok"]
    assert ledger.lookup_transfers([100])[0].flags == int(TransferFlags.PENDING)


def test_unknown_flag_bits_get_reserved_flag_and_change_nothing(ledger: Ledger) -> None:
    before = snapshot(ledger)
    results = ledger.create_transfers([good_transfer(flags=1 << 12)])
    assert [r.value for r in results] == ["reserved_flag"]
    assert snapshot(ledger) == before


def test_lookups_reject_malformed_ids_by_name(ledger: Ledger) -> None:
    with pytest.raises(InvalidFieldError, match="id: must not be negative"):
        ledger.lookup_accounts([1, -1])
    with pytest.raises(BatchTooLargeError):
        ledger.lookup_transfers(list(range(1, BATCH_EVENTS_MAX + 2)))


@pytest.mark.parametrize(
    ("read", "field", "value", "message"),
    [
        ("get_account_transfers", "limit", -1, "must not be negative"),
        ("get_account_transfers", "timestamp_max", 1 << 64, "must fit in 64 unsigned bits"),
        ("get_account_balances", "account_id", -2, "must not be negative"),
        ("get_account_transfers", "code", 1 << 16, "must fit in 16 unsigned bits"),
        ("query_accounts", "limit", 1 << 32, "must fit in 32 unsigned bits"),
        ("query_transfers", "ledger", "156", "must be an integer, got str"),
        ("query_transfers", "timestamp_min", -1, "must not be negative"),
    ],
)
def test_query_filters_reject_malformed_fields_by_name(
    ledger: Ledger, read: str, field: str, value: object, message: str
) -> None:
    # A negative limit once reached SQLite as "no limit" and returned a wrong page.
    if read.startswith("get_account"):
        malformed: object = AccountFilter(account_id=1, limit=10)._replace(
            **{field: value}  # type: ignore[arg-type]  # ill-typed field on purpose
        )
    else:
        malformed = QueryFilter(limit=10)._replace(
            **{field: value}  # type: ignore[arg-type]  # ill-typed field on purpose
        )
    with pytest.raises(InvalidFieldError, match=f"{field}: {message}") as raised:
        getattr(ledger, read)(malformed)
    assert raised.value.code == "invalid_field"
    assert raised.value.field == field


def test_well_formed_filters_that_match_nothing_select_nothing(ledger: Ledger) -> None:
    # TigerBeetle's rule: a zero limit or no direction is not an error, it selects nothing,
    # even with transfers there to select.
    assert [r.value for r in ledger.create_transfers([good_transfer()])] == ["ok"]
    assert len(ledger.get_account_transfers(AccountFilter(account_id=1, limit=5))) == 1
    assert len(ledger.query_transfers(QueryFilter(limit=5))) == 1
    assert ledger.get_account_transfers(AccountFilter(account_id=1, limit=0)) == []
    assert ledger.get_account_transfers(AccountFilter(account_id=1, limit=5, flags=0)) == []
    assert ledger.query_transfers(QueryFilter(limit=0)) == []
