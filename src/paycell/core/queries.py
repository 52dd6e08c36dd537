"""Query filter rules, after TigerBeetle: an invalid filter selects nothing, it is not an error.

A filter that can match nothing (a zero account id, an inverted time range, a zero limit, no
direction) returns an empty page. Limits are capped so one page is bounded in memory.
"""

from paycell.core.limits import QUERY_LIMIT_MAX, UINT64_MAX, UINT128_MAX
from paycell.core.types import AccountFilter, AccountFilterFlags, QueryFilter, QueryFilterFlags

_ACCOUNT_FILTER_FLAGS_KNOWN = int(
    AccountFilterFlags.DEBITS | AccountFilterFlags.CREDITS | AccountFilterFlags.REVERSED
)
_QUERY_FILTER_FLAGS_KNOWN = int(QueryFilterFlags.REVERSED)


def _time_range_is_valid(timestamp_min: int, timestamp_max: int) -> bool:
    if timestamp_min == UINT64_MAX or timestamp_max == UINT64_MAX:
        return False
    return timestamp_max == 0 or timestamp_min <= timestamp_max


def account_filter_is_valid(account_filter: AccountFilter) -> bool:
    return (
        account_filter.account_id not in (0, UINT128_MAX)
        and _time_range_is_valid(account_filter.timestamp_min, account_filter.timestamp_max)
        and account_filter.limit != 0
        and bool(account_filter.flags & (AccountFilterFlags.DEBITS | AccountFilterFlags.CREDITS))
        and not account_filter.flags & ~_ACCOUNT_FILTER_FLAGS_KNOWN
    )


def query_filter_is_valid(query_filter: QueryFilter) -> bool:
    return (
        _time_range_is_valid(query_filter.timestamp_min, query_filter.timestamp_max)
        and query_filter.limit != 0
        and not query_filter.flags & ~_QUERY_FILTER_FLAGS_KNOWN
    )


def page_limit(requested: int) -> int:
    return min(requested, QUERY_LIMIT_MAX)
