"""Records as JSON: enums as their string values, amounts as integers with a `currency`
code, times as integer nanoseconds (`created_at`) plus an ISO-8601 UTC string
(`created_at_iso`, null when the time is not set)."""

import dataclasses
import json
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from paycell.core.currency import currency_for_ledger
from paycell.core.payments.records import WebhookEvent
from paycell.core.types import Account
from paycell.service.platform_ports import WebhookDelivery

NANOSECONDS_PER_MICROSECOND = 1_000
_HIDDEN = frozenset({"webhook_secret"})


def iso_time(nanoseconds: int) -> str | None:
    if nanoseconds <= 0:
        return None
    seconds, remainder = divmod(nanoseconds, 1_000_000_000)
    prefix = _ISO_SECONDS.get(seconds)
    if prefix is None:
        # A response carries several times from the same second or so; formatting a datetime
        # is the costly part, so each second is formatted once.
        if len(_ISO_SECONDS) >= _ISO_SECONDS_MAX:
            _ISO_SECONDS.clear()
        prefix = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _ISO_SECONDS[seconds] = prefix
    return f"{prefix}.{remainder:09d}Z"


_ISO_SECONDS: dict[int, str] = {}
_ISO_SECONDS_MAX = 4_096

# How each field of a record type is rendered, worked out once per type.
_PLAIN, _CURRENCY, _TIME = range(3)
_PLANS: dict[type, tuple[tuple[str, int], ...]] = {}


def _plan(kind: type) -> tuple[tuple[str, int], ...]:
    plan = _PLANS.get(kind)
    if plan is None:
        plan = tuple(
            (
                field.name,
                _CURRENCY
                if field.name == "ledger"
                else _TIME
                if field.name.endswith(("_at", "_until"))
                else _PLAIN,
            )
            for field in dataclasses.fields(kind)
            if field.name not in _HIDDEN
        )
        _PLANS[kind] = plan
    return plan


def record(value: Any, kind: str) -> dict[str, object]:
    """A platform record (a frozen dataclass) as a JSON object tagged with `object`."""
    result: dict[str, object] = {"object": kind}
    for name, how in _plan(type(value)):
        item = getattr(value, name)
        if how == _PLAIN:
            result[name] = item.value if isinstance(item, Enum) else item
        elif how == _TIME:
            result[name] = item
            result[f"{name}_iso"] = iso_time(item)
        else:
            result["currency"] = currency_for_ledger(item).code
    return result


def webhook_event(
    event: WebhookEvent, delivery: WebhookDelivery | None = None
) -> dict[str, object]:
    return {
        "object": "webhook_event",
        "id": event.id,
        "type": event.type,
        "data": json.loads(event.body),
        "created_at": event.created_at,
        "created_at_iso": iso_time(event.created_at),
        "delivery": webhook_delivery(delivery) if delivery else None,
    }


def webhook_delivery(delivery: WebhookDelivery) -> dict[str, object]:
    return {
        "object": "webhook_delivery",
        "event_id": delivery.event_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at,
        "last_error": delivery.last_error,
        "delivered_at": delivery.delivered_at,
    }


def balance(account: Account | None, currency: str) -> dict[str, object]:
    """A wallet's or merchant's balance: posted, and available (posted minus money reserved
    for withdrawals and payouts in flight)."""
    credits_posted = account.credits_posted if account else 0
    debits_posted = account.debits_posted if account else 0
    debits_pending = account.debits_pending if account else 0
    posted = credits_posted - debits_posted
    return {
        "object": "balance",
        "currency": currency,
        "balance": posted,
        "available": posted - debits_pending,
        "reserved": debits_pending,
    }


def page(items: list[dict[str, object]], limit: int) -> dict[str, object]:
    last = items[-1]["id"] if items and len(items) >= limit else None
    return {"object": "list", "data": items, "next_cursor": last}
