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
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{remainder:09d}Z"


def record(value: Any, kind: str) -> dict[str, object]:
    """A platform record (a frozen dataclass) as a JSON object tagged with `object`."""
    result: dict[str, object] = {"object": kind}
    for field in dataclasses.fields(value):
        name = field.name
        item = getattr(value, name)
        if name in _HIDDEN:
            continue
        if name == "ledger":
            result["currency"] = currency_for_ledger(item).code
        elif name.endswith(("_at", "_until")):
            result[name] = item
            result[f"{name}_iso"] = iso_time(item)
        elif isinstance(item, Enum):
            result[name] = item.value
        else:
            result[name] = item
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
