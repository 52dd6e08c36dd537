"""The ledger's data model: accounts, transfers and their flags, after TigerBeetle's.

Fields, their order, their widths and the flag bits follow TigerBeetle's documented data model
(reference/account, reference/transfer), so a batch means the same thing in both. Records are
immutable named tuples: cheap to build in bulk, hashable, and impossible to change behind the
ledger's back; the ledger returns new records rather than mutating the caller's.

Every integer field is unsigned. Widths are checked at the boundary (`validate_*` in
`paycell.core.events`) before anything reaches the state machine.
"""

from enum import IntFlag
from typing import NamedTuple


class AccountFlags(IntFlag):
    NONE = 0
    # The outcome of this event is tied to the next one: a chain succeeds or fails as a whole.
    LINKED = 1 << 0
    # debits_pending + debits_posted may never exceed credits_posted (an asset-like guard:
    # a wallet cannot go below zero).
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1
    # credits_pending + credits_posted may never exceed debits_posted.
    CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2
    # Keep the balances after every transfer, for point-in-time balances.
    HISTORY = 1 << 3
    # TigerBeetle's flag for importing historical events with their own timestamps. paycell
    # does not support imports; the bit is reserved so it keeps its meaning.
    IMPORTED = 1 << 4
    # Set by a closing transfer; a closed account accepts no new transfers.
    CLOSED = 1 << 5


class TransferFlags(IntFlag):
    NONE = 0
    LINKED = 1 << 0
    # Reserve the amount (debits_pending, credits_pending) until posted, voided or expired.
    PENDING = 1 << 1
    POST_PENDING_TRANSFER = 1 << 2
    VOID_PENDING_TRANSFER = 1 << 3
    # Move at most `amount`, clamped to what the debit (credit) account can give.
    BALANCING_DEBIT = 1 << 4
    BALANCING_CREDIT = 1 << 5
    # A pending transfer that closes its debit (credit) account; voiding it reopens.
    CLOSING_DEBIT = 1 << 6
    CLOSING_CREDIT = 1 << 7
    # Reserved, as AccountFlags.IMPORTED.
    IMPORTED = 1 << 8


ACCOUNT_FLAGS_KNOWN = int(
    AccountFlags.LINKED
    | AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
    | AccountFlags.HISTORY
    | AccountFlags.IMPORTED
    | AccountFlags.CLOSED
)
TRANSFER_FLAGS_KNOWN = int(
    TransferFlags.LINKED
    | TransferFlags.PENDING
    | TransferFlags.POST_PENDING_TRANSFER
    | TransferFlags.VOID_PENDING_TRANSFER
    | TransferFlags.BALANCING_DEBIT
    | TransferFlags.BALANCING_CREDIT
    | TransferFlags.CLOSING_DEBIT
    | TransferFlags.CLOSING_CREDIT
    | TransferFlags.IMPORTED
)


class Account(NamedTuple):
    """A ledger account. Balances and timestamp are the ledger's; create with them at zero."""

    id: int
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    reserved: int = 0
    ledger: int = 0
    code: int = 0
    flags: int = 0
    timestamp: int = 0


class Transfer(NamedTuple):
    """A movement of `amount` from the debit account to the credit account, on one ledger.

    `timeout` is in seconds and only meaningful for pending transfers; `timestamp` is assigned
    by the ledger (nanoseconds, strictly increasing) and must be zero when creating.
    """

    id: int
    debit_account_id: int = 0
    credit_account_id: int = 0
    amount: int = 0
    pending_id: int = 0
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    timeout: int = 0
    ledger: int = 0
    code: int = 0
    flags: int = 0
    timestamp: int = 0


class AccountBalance(NamedTuple):
    """An account's balances right after the transfer committed at `timestamp`."""

    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    timestamp: int


class AccountFilterFlags(IntFlag):
    NONE = 0
    # Include transfers where the account is debited.
    DEBITS = 1 << 0
    # Include transfers where the account is credited.
    CREDITS = 1 << 1
    # Newest first instead of oldest first.
    REVERSED = 1 << 2


class QueryFilterFlags(IntFlag):
    NONE = 0
    REVERSED = 1 << 0


class AccountFilter(NamedTuple):
    """Selects an account's transfers (a statement) or its balance history.

    Zero in a user_data or code field means "any". timestamp_min/max are inclusive; zero means
    unbounded. At least one of DEBITS and CREDITS must be set. Pagination: pass the last
    timestamp seen plus one (or minus one when reversed) as the next timestamp_min (max).
    """

    account_id: int
    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    code: int = 0
    timestamp_min: int = 0
    timestamp_max: int = 0
    limit: int = 0
    flags: int = int(AccountFilterFlags.DEBITS | AccountFilterFlags.CREDITS)


class QueryFilter(NamedTuple):
    """Selects accounts or transfers by their user data, ledger and code (zero means any)."""

    user_data_128: int = 0
    user_data_64: int = 0
    user_data_32: int = 0
    ledger: int = 0
    code: int = 0
    timestamp_min: int = 0
    timestamp_max: int = 0
    limit: int = 0
    flags: int = 0


class PendingStatus:
    """What became of a pending transfer. Plain integers: they are stored and compared hot."""

    PENDING = 1
    POSTED = 2
    VOIDED = 3
    EXPIRED = 4

    NAMES = {PENDING: "pending", POSTED: "posted", VOIDED: "voided", EXPIRED: "expired"}
