"""The boundary check for incoming events: types and widths, before the state machine runs.

The state machine assumes every field is a plain `int` within its unsigned width. This module
establishes that, naming the first offending field, or raises and nothing is changed. Business
rules (zero ids, unknown accounts, flag combinations) are *not* checked here: those are
per-event results in TigerBeetle's precedence, decided by the state machine.

The fast path validates a well-formed event with one chain of type tests and width checks;
only an event that fails it pays for the field-by-field diagnosis.
"""

from collections.abc import Iterable, Sequence
from typing import Final

from paycell.core import compiled
from paycell.core.errors import BatchEmptyError, BatchTooLargeError, InvalidFieldError
from paycell.core.limits import (
    BATCH_EVENTS_MAX,
    UINT16_MAX,
    UINT32_MAX,
    UINT64_MAX,
    UINT128_MAX,
)
from paycell.core.types import Account, AccountFilter, QueryFilter, Transfer

ACCOUNT_FIELD_MAXIMUMS: Final[tuple[tuple[str, int], ...]] = (
    ("id", UINT128_MAX),
    ("debits_pending", UINT128_MAX),
    ("debits_posted", UINT128_MAX),
    ("credits_pending", UINT128_MAX),
    ("credits_posted", UINT128_MAX),
    ("user_data_128", UINT128_MAX),
    ("user_data_64", UINT64_MAX),
    ("user_data_32", UINT32_MAX),
    ("reserved", UINT32_MAX),
    ("ledger", UINT32_MAX),
    ("code", UINT16_MAX),
    ("flags", UINT16_MAX),
    ("timestamp", UINT64_MAX),
)

TRANSFER_FIELD_MAXIMUMS: Final[tuple[tuple[str, int], ...]] = (
    ("id", UINT128_MAX),
    ("debit_account_id", UINT128_MAX),
    ("credit_account_id", UINT128_MAX),
    ("amount", UINT128_MAX),
    ("pending_id", UINT128_MAX),
    ("user_data_128", UINT128_MAX),
    ("user_data_64", UINT64_MAX),
    ("user_data_32", UINT32_MAX),
    ("timeout", UINT32_MAX),
    ("ledger", UINT32_MAX),
    ("code", UINT16_MAX),
    ("flags", UINT16_MAX),
    ("timestamp", UINT64_MAX),
)

# TigerBeetle's widths for its query filters.
ACCOUNT_FILTER_FIELD_MAXIMUMS: Final[tuple[tuple[str, int], ...]] = (
    ("account_id", UINT128_MAX),
    ("user_data_128", UINT128_MAX),
    ("user_data_64", UINT64_MAX),
    ("user_data_32", UINT32_MAX),
    ("code", UINT16_MAX),
    ("timestamp_min", UINT64_MAX),
    ("timestamp_max", UINT64_MAX),
    ("limit", UINT32_MAX),
    ("flags", UINT32_MAX),
)

QUERY_FILTER_FIELD_MAXIMUMS: Final[tuple[tuple[str, int], ...]] = (
    ("user_data_128", UINT128_MAX),
    ("user_data_64", UINT64_MAX),
    ("user_data_32", UINT32_MAX),
    ("ledger", UINT32_MAX),
    ("code", UINT16_MAX),
    ("timestamp_min", UINT64_MAX),
    ("timestamp_max", UINT64_MAX),
    ("limit", UINT32_MAX),
    ("flags", UINT32_MAX),
)

assert tuple(name for name, _ in ACCOUNT_FIELD_MAXIMUMS) == Account._fields
assert tuple(name for name, _ in TRANSFER_FIELD_MAXIMUMS) == Transfer._fields
assert tuple(name for name, _ in ACCOUNT_FILTER_FIELD_MAXIMUMS) == AccountFilter._fields
assert tuple(name for name, _ in QUERY_FILTER_FIELD_MAXIMUMS) == QueryFilter._fields


def check_batch_size(count: int) -> None:
    if count == 0:
        raise BatchEmptyError("a batch must hold at least one event")
    if count > BATCH_EVENTS_MAX:
        raise BatchTooLargeError(
            f"a batch holds at most {BATCH_EVENTS_MAX} events; this one has {count}"
        )


def _normalize_field(name: str, value: object, maximum: int, index: int | None) -> int:
    # bool is an int subclass, and a float or Decimal amount must never be silently truncated.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidFieldError(
            f"must be an integer, got {type(value).__name__} {value!r}", field=name, index=index
        )
    if value < 0:
        raise InvalidFieldError(f"must not be negative, got {value}", field=name, index=index)
    if value > maximum:
        raise InvalidFieldError(
            f"must fit in {maximum.bit_length()} unsigned bits, got {value}",
            field=name,
            index=index,
        )
    return int(value)  # An IntFlag or IntEnum becomes a plain int.


def _normalize_record(
    record: object, index: int | None, fields: tuple[tuple[str, int], ...], kind: str
) -> tuple[int, ...]:
    if not isinstance(record, tuple) or len(record) != len(fields):
        raise InvalidFieldError(
            f"must be a {kind} with {len(fields)} fields, got {type(record).__name__}",
            field=kind.lower(),
            index=index,
        )
    return tuple(
        _normalize_field(name, value, maximum, index)
        for (name, maximum), value in zip(fields, record, strict=True)
    )


# The fast path below checks widths by shifting: for an int x, `x >> n == 0` exactly when
# 0 <= x < 2**n, and or-ing fields of one width keeps the widest (and a negative stays
# negative, so its shift is -1). These are the widths it assumes, in field order.
assert [maximum for _, maximum in TRANSFER_FIELD_MAXIMUMS] == [UINT128_MAX] * 6 + [
    UINT64_MAX,
    UINT32_MAX,
    UINT32_MAX,
    UINT32_MAX,
    UINT16_MAX,
    UINT16_MAX,
    UINT64_MAX,
]


def validate_transfers(events: Iterable[Transfer]) -> list[Transfer]:
    """Return the batch as plain-int `Transfer`s, or raise naming the first bad field."""
    batch = list(events)
    check_batch_size(len(batch))
    # The compiled check passes the well-formed prefix of the batch at once; the loop below
    # checks (and diagnoses) from the first event it was not sure of.
    start = (
        compiled.well_formed_prefix(batch, Transfer)
        if compiled.well_formed_prefix is not None
        else 0
    )
    if start == len(batch):
        return batch
    # Locals, not globals, in the loop's hottest tests.
    transfer_type, int_type = Transfer, int
    bits128, bits64, bits32, bits16 = (
        UINT128_MAX.bit_length(),
        UINT64_MAX.bit_length(),
        UINT32_MAX.bit_length(),
        UINT16_MAX.bit_length(),
    )
    for index in range(start, len(batch)):
        t = batch[index]
        if type(t) is transfer_type:
            (
                id_,
                debit_account_id,
                credit_account_id,
                amount,
                pending_id,
                user_data_128,
                user_data_64,
                user_data_32,
                timeout,
                ledger,
                code,
                flags,
                timestamp,
            ) = t
            # Exact ints only (not bool, not an IntFlag to convert), each within its width.
            if (
                type(id_) is int_type
                and type(debit_account_id) is int_type
                and type(credit_account_id) is int_type
                and type(amount) is int_type
                and type(pending_id) is int_type
                and type(user_data_128) is int_type
                and type(user_data_64) is int_type
                and type(user_data_32) is int_type
                and type(timeout) is int_type
                and type(ledger) is int_type
                and type(code) is int_type
                and type(flags) is int_type
                and type(timestamp) is int_type
                and not (id_ | debit_account_id | credit_account_id) >> bits128
                and not (amount | pending_id | user_data_128) >> bits128
                and not (user_data_64 | timestamp) >> bits64
                and not (user_data_32 | timeout | ledger) >> bits32
                and not (code | flags) >> bits16
            ):
                continue
        batch[index] = Transfer(*_normalize_record(t, index, TRANSFER_FIELD_MAXIMUMS, "Transfer"))
    return batch


def validate_accounts(events: Iterable[Account]) -> list[Account]:
    """Return the batch as plain-int `Account`s, or raise naming the first bad field."""
    batch = list(events)
    check_batch_size(len(batch))
    for index, a in enumerate(batch):
        batch[index] = Account(*_normalize_record(a, index, ACCOUNT_FIELD_MAXIMUMS, "Account"))
    return batch


def validate_ids(ids: Sequence[object], field: str = "id") -> list[int]:
    """Ids for lookups: plain unsigned 128-bit integers, at most one batch of them."""
    if len(ids) > BATCH_EVENTS_MAX:
        raise BatchTooLargeError(
            f"a lookup takes at most {BATCH_EVENTS_MAX} ids; this one has {len(ids)}"
        )
    return [_normalize_field(field, value, UINT128_MAX, index) for index, value in enumerate(ids)]


def validate_account_filter(account_filter: AccountFilter) -> AccountFilter:
    """The filter with plain-int fields, or raise naming the first field outside its width.

    A filter that is well-formed but can match nothing (a zero limit, no direction) is not an
    error: it selects nothing (`paycell.core.queries`). A negative or too wide value is.
    """
    return AccountFilter(
        *_normalize_record(account_filter, None, ACCOUNT_FILTER_FIELD_MAXIMUMS, "AccountFilter")
    )


def validate_query_filter(query_filter: QueryFilter) -> QueryFilter:
    """As `validate_account_filter`, for `query_accounts` and `query_transfers`."""
    return QueryFilter(
        *_normalize_record(query_filter, None, QUERY_FILTER_FIELD_MAXIMUMS, "QueryFilter")
    )
