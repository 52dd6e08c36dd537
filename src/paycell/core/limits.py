"""Every limit paycell enforces, in one place, each with the reason it exists.

A limit is checked at the boundary where input enters; past it the core asserts instead.
"""

from typing import Final

# A batch is one database transaction. TigerBeetle's message size fits 8,190 transfers of 128
# bytes; we keep the same ceiling so that the same batch means the same thing in both, and so
# that one commit's memory stays at a few tens of megabytes.
BATCH_EVENTS_MAX: Final = 8_190

# Identifiers, amounts and balances are unsigned 128-bit integers, as in TigerBeetle.
UINT128_MAX: Final = (1 << 128) - 1
UINT64_MAX: Final = (1 << 64) - 1
UINT32_MAX: Final = (1 << 32) - 1
UINT16_MAX: Final = (1 << 16) - 1

# The largest amount: used to ask for "everything available" in balancing transfers and for
# "the full pending amount" when posting.
AMOUNT_MAX: Final = UINT128_MAX

# Queries return at most this many rows per page; callers paginate with timestamps.
QUERY_LIMIT_MAX: Final = 8_190

# Ledger timestamps are nanoseconds since the Unix epoch in an unsigned 64-bit integer; the
# values 0 and 2**64-1 are reserved (0 means "not assigned").
TIMESTAMP_MIN: Final = 1
TIMESTAMP_MAX: Final = UINT64_MAX - 1

NANOSECONDS_PER_SECOND: Final = 1_000_000_000
