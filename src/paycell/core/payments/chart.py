"""The chart of accounts: which ledger account holds whose money, and how its id is formed.

Every party's money is a ledger account per currency. Ids are derived, not stored: the top
byte is the account's code (its type), the next two bytes the ledger (the currency's ISO 4217
numeric code), and the low 64 bits the owner's number (a user's or merchant's id; 0 for the
platform's own accounts; the channel's number for a bank channel). So an id says what it is,
and an account can be found without a lookup table.

- 1 user wallet (per user and currency; debits may not exceed credits): spendable balance.
- 2 merchant balance (per merchant and currency; debits may not exceed credits): sales
  released to the merchant, minus refunds and payouts.
- 3 platform fee revenue (per currency): fees earned.
- 4 platform escrow (per currency; debits may not exceed credits): guaranteed-transaction
  funds not yet released.
- 5 platform suspense (per currency): money whose owner is not yet known.
- 6 channel settlement (per bank channel and currency): money held at the bank for the
  platform's customers, as a debit balance.

A withdrawal or payout is a pending transfer from the wallet or merchant balance to the
channel account while the bank works on it: posted when the bank confirms, voided (the money
returns) when it fails.
"""

from enum import IntEnum
from typing import Final

from paycell.core.types import Account, AccountFlags

_OWNER_BITS: Final = 64
_LEDGER_SHIFT: Final = 104
_CODE_SHIFT: Final = 120
_OWNER_MAX: Final = (1 << _OWNER_BITS) - 1


class AccountCode(IntEnum):
    USER_WALLET = 1
    MERCHANT_BALANCE = 2
    PLATFORM_FEE_REVENUE = 3
    PLATFORM_ESCROW = 4
    PLATFORM_SUSPENSE = 5
    CHANNEL_SETTLEMENT = 6


_GUARDED: Final = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_FLAGS_BY_CODE: Final[dict[AccountCode, int]] = {
    AccountCode.USER_WALLET: _GUARDED | int(AccountFlags.HISTORY),
    AccountCode.MERCHANT_BALANCE: _GUARDED | int(AccountFlags.HISTORY),
    AccountCode.PLATFORM_FEE_REVENUE: 0,
    AccountCode.PLATFORM_ESCROW: _GUARDED,
    AccountCode.PLATFORM_SUSPENSE: 0,
    AccountCode.CHANNEL_SETTLEMENT: 0,
}


def account_id(code: AccountCode, ledger: int, owner: int = 0) -> int:
    """The ledger account id of `code` for `owner` in the currency `ledger`."""
    assert 0 <= owner <= _OWNER_MAX, "owner numbers are unsigned 64-bit"
    assert 0 < ledger < (1 << 16), "ledgers are ISO 4217 numeric codes"
    return (int(code) << _CODE_SHIFT) | (ledger << _LEDGER_SHIFT) | owner


def describe_account_id(identifier: int) -> tuple[AccountCode, int, int]:
    """(code, ledger, owner) of a chart-of-accounts id."""
    return (
        AccountCode(identifier >> _CODE_SHIFT),
        (identifier >> _LEDGER_SHIFT) & 0xFFFF,
        identifier & _OWNER_MAX,
    )


def chart_account(code: AccountCode, ledger: int, owner: int = 0) -> Account:
    """The Account to create for `code`/`owner` in `ledger`, with the flags its type needs."""
    return Account(
        id=account_id(code, ledger, owner),
        ledger=ledger,
        code=int(code),
        flags=_FLAGS_BY_CODE[code],
        user_data_64=owner,
    )


def user_wallet(user_id: int, ledger: int) -> int:
    return account_id(AccountCode.USER_WALLET, ledger, user_id)


def merchant_balance(merchant_id: int, ledger: int) -> int:
    return account_id(AccountCode.MERCHANT_BALANCE, ledger, merchant_id)


def fee_revenue(ledger: int) -> int:
    return account_id(AccountCode.PLATFORM_FEE_REVENUE, ledger)


def escrow(ledger: int) -> int:
    return account_id(AccountCode.PLATFORM_ESCROW, ledger)


def suspense(ledger: int) -> int:
    return account_id(AccountCode.PLATFORM_SUSPENSE, ledger)


def channel_settlement(channel_number: int, ledger: int) -> int:
    return account_id(AccountCode.CHANNEL_SETTLEMENT, ledger, channel_number)


def platform_accounts(ledger: int, channel_numbers: tuple[int, ...] = (1,)) -> list[Account]:
    """The platform's own accounts for one currency: created once, idempotently."""
    accounts = [
        chart_account(code, ledger)
        for code in (
            AccountCode.PLATFORM_FEE_REVENUE,
            AccountCode.PLATFORM_ESCROW,
            AccountCode.PLATFORM_SUSPENSE,
        )
    ]
    accounts.extend(
        chart_account(AccountCode.CHANNEL_SETTLEMENT, ledger, number) for number in channel_numbers
    )
    return accounts
