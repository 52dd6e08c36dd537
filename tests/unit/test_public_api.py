"""The public API is pinned: a change to it is a deliberate, reviewed change to this test."""

import inspect
import re

import paycell

EXPECTED_EXPORTS = [
    "AMOUNT_MAX",
    "BATCH_EVENTS_MAX",
    "QUERY_LIMIT_MAX",
    "Account",
    "AccountBalance",
    "AccountFilter",
    "AccountFilterFlags",
    "AccountFlags",
    "BatchEmptyError",
    "BatchTooLargeError",
    "CreateAccountResult",
    "CreateTransferResult",
    "Currency",
    "InvalidAmountError",
    "InvalidFieldError",
    "InvalidInputError",
    "Ledger",
    "PaycellError",
    "Platform",
    "QueryFilter",
    "QueryFilterFlags",
    "Transfer",
    "TransferFlags",
    "UnknownCurrencyError",
    "VerifyReport",
    "__version__",
    "currency_for_code",
    "currency_for_ledger",
    "format_amount",
    "parse_amount",
]

EXPECTED_LEDGER_METHODS = {
    "create_accounts": "(self, accounts: Iterable[Account]) -> list[CreateAccountResult]",
    "create_transfers": "(self, transfers: Iterable[Transfer]) -> list[CreateTransferResult]",
    "expire_pending_transfers": "(self) -> int",
    "lookup_accounts": "(self, ids: Sequence[int]) -> list[Account]",
    "lookup_transfers": "(self, ids: Sequence[int]) -> list[Transfer]",
    "get_account_transfers": "(self, account_filter: AccountFilter) -> list[Transfer]",
    "get_account_balances": "(self, account_filter: AccountFilter) -> list[AccountBalance]",
    "query_accounts": "(self, query_filter: QueryFilter) -> list[Account]",
    "query_transfers": "(self, query_filter: QueryFilter) -> list[Transfer]",
    "verify": "(self, progress: Callable[[str], None] | None = None, "
    "counter: Callable[[str, int, int], None] | None = None) -> VerifyReport",
    "close": "(self) -> None",
}


def test_package_exports_exactly_the_public_names() -> None:
    assert sorted(paycell.__all__) == sorted(EXPECTED_EXPORTS)
    for name in EXPECTED_EXPORTS:
        assert hasattr(paycell, name), name


def test_ledger_methods_keep_their_signatures() -> None:
    public = {
        # Module prefixes are dropped so the pin reads like the documentation.
        name: re.sub(r"\b(?:[a-z_]+\.)+(?=[A-Za-z_])", "", str(inspect.signature(member)))
        for name, member in inspect.getmembers(paycell.Ledger, inspect.isfunction)
        if not name.startswith("_")
    }
    assert public == EXPECTED_LEDGER_METHODS


def test_records_keep_tigerbeetles_field_order() -> None:
    assert paycell.Account._fields == (
        "id",
        "debits_pending",
        "debits_posted",
        "credits_pending",
        "credits_posted",
        "user_data_128",
        "user_data_64",
        "user_data_32",
        "reserved",
        "ledger",
        "code",
        "flags",
        "timestamp",
    )
    assert paycell.Transfer._fields == (
        "id",
        "debit_account_id",
        "credit_account_id",
        "amount",
        "pending_id",
        "user_data_128",
        "user_data_64",
        "user_data_32",
        "timeout",
        "ledger",
        "code",
        "flags",
        "timestamp",
    )


def test_flag_bits_match_tigerbeetle() -> None:
    assert [int(flag) for flag in paycell.AccountFlags if flag] == [1, 2, 4, 8, 16, 32]
    assert [int(flag) for flag in paycell.TransferFlags if flag] == [
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
    ]
