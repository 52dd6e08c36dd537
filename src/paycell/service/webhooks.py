"""Webhook deliveries: which notification to send now, what came of it, and replays.

Every platform event (a payment, a refund, a payout) is written with its delivery in the same
commit as what it reports (`PlatformWriteUnit.save_records`): pending, or skipped at once when
the merchant has no webhook URL. This service moves those
deliveries along; the HTTP sending itself lives in `adapters.webhooks`, outside any
transaction, so a slow merchant endpoint never holds the database's writer lock.

Exactly once across processes
-----------------------------
`claim_due` runs in one unit of work under the ledger's single writer lock. It reads the
deliveries that are due, counts the attempt it is about to make, and *leases* each one by
moving its `next_attempt_at` to `now + lease`. Another process claiming at the same moment
waits for the lock, then finds those deliveries not due, so it cannot claim the same attempt.
The result of the attempt (`record_result`, or `record_results` for a whole pass in one
commit) replaces the lease with the delivered state, the
schedule's next time or the given-up state. If the sender dies between the two, the lease
runs out and the delivery is due again as its next attempt (counted: a crashed attempt may
have reached the merchant, which is why receivers deduplicate on `Paycell-Event-Id`).

A result is applied only while the attempt still holds its lease (`attempt` and status match),
so a late answer from an attempt whose lease expired (and was claimed again) changes nothing.

States of a delivery
--------------------
- "pending": due at `next_attempt_at` (or leased until then);
- "delivered": the merchant's endpoint answered 2xx (`delivered_at` set);
- "failed": all `MAX_ATTEMPTS` tries failed; no more tries unless the merchant asks a replay;
- "skipped": the merchant has no webhook URL (when the event was written, or when the delivery
  came due), so nothing is sent and no attempt is counted.
  The event stays readable through the event list (`/v1/webhook-events`), which is how such a
  merchant learns of it; a replay after a URL is set sends it.

Replay
------
`replay` makes one of the merchant's events pending and due now, whatever its state, with its
attempts kept: it is sent on the dispatcher's next pass. A replay that fails continues the
retry schedule from where the delivery was; if all tries were already used it ends "failed"
again after that one try (each replay is one more try, never a new 25-hour series).
"""

from collections.abc import Sequence
from typing import Final, NamedTuple, Protocol, cast

from paycell.core.payments.records import Merchant, WebhookEvent
from paycell.core.payments.webhook_schedule import NANOSECONDS_PER_SECOND, next_attempt_at
from paycell.service.ledger_service import Clock, LedgerService
from paycell.service.platform_ports import PlatformStore, PlatformWriteUnit, WebhookDelivery

PENDING: Final = "pending"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
SKIPPED: Final = "skipped"
NO_WEBHOOK_URL: Final = "no webhook URL"
STATUSES: Final = (PENDING, DELIVERED, FAILED, SKIPPED)

# How long a claimed attempt is reserved for the process that claimed it. Longer than one
# send can take (the sender's 10 s timeout) with a wide margin; the dispatcher asks for more
# when its batch needs it and never starts a send whose lease has run out.
LEASE_SECONDS: Final = 60
# At most this many deliveries per claim.
CLAIM_LIMIT_MAX: Final = 500
# How much of an error message is kept on the delivery.
ERROR_CHARS_MAX: Final = 500


class WebhookEventNotFoundError(LookupError):
    """The event does not exist, or belongs to another merchant (the same answer for both, so
    a merchant learns nothing about others' events). At the HTTP edge: 404
    `webhook_event_not_found`."""

    code: Final = "webhook_event_not_found"

    def __init__(self, merchant_id: int, event_id: int) -> None:
        super().__init__(f"merchant {merchant_id} has no webhook event {event_id}")
        self.merchant_id = merchant_id
        self.event_id = event_id


class _WebhookUnit(PlatformWriteUnit, Protocol):
    # Both platform backends' write units also offer the store's reads, under the lock.
    def webhook_delivery(self, event_id: int) -> WebhookDelivery | None: ...


Claimed = tuple[WebhookDelivery, WebhookEvent, Merchant]


class AttemptResult(NamedTuple):
    """What came of one claimed attempt; `attempt` is the claimed delivery's `attempts`
    (None: whatever attempt holds the delivery)."""

    event_id: int
    delivered: bool
    error: str = ""
    attempt: int | None = None


def _apply_result(unit: "_WebhookUnit", result: AttemptResult, now: int) -> WebhookDelivery | None:
    delivery = unit.webhook_delivery(result.event_id)
    if delivery is None or delivery.status != PENDING:
        return None
    if result.attempt is not None and delivery.attempts != result.attempt:
        return None
    if result.delivered:
        updated = delivery._replace(
            status=DELIVERED, next_attempt_at=0, last_error="", delivered_at=now
        )
    else:
        due = next_attempt_at(delivery.attempts, now)
        updated = delivery._replace(
            status=PENDING if due is not None else FAILED,
            next_attempt_at=due or 0,
            last_error=result.error[:ERROR_CHARS_MAX] or "failed",
        )
    unit.save_webhook_delivery(updated)
    return updated


class WebhookService:
    def __init__(self, store: PlatformStore, ledger: LedgerService, clock: Clock) -> None:
        self.store = store
        self.ledger = ledger
        self.clock = clock

    def claim_due(self, limit: int, lease_seconds: int = LEASE_SECONDS) -> list[Claimed]:
        """Claim up to `limit` due deliveries for one attempt each: the attempt is counted and
        the delivery leased for `lease_seconds`, in one commit under the writer lock. Returns
        the leased deliveries (their `attempts` is the number of the attempt to make) with the
        event to send and the merchant to send it to. Deliveries of merchants without a
        webhook URL are marked "skipped" on the way and not returned."""
        if limit <= 0:
            return []
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        claimed: list[Claimed] = []
        with self.ledger.unit_of_work([]) as (ledger_unit, _meta):
            unit = cast(_WebhookUnit, ledger_unit)
            now = self.clock()
            due = unit.webhook_deliveries_due(now, min(limit, CLAIM_LIMIT_MAX))
            # The pass's events and merchants in two queries, its deliveries in one write.
            events = unit.webhook_events_by_id({delivery.event_id for delivery in due})
            merchants = unit.merchants_by_id({delivery.merchant_id for delivery in due})
            saved: list[WebhookDelivery] = []
            for delivery in due:
                event = events.get(delivery.event_id)
                merchant = merchants.get(delivery.merchant_id)
                if event is None or merchant is None or not merchant.webhook_url:
                    saved.append(
                        delivery._replace(
                            status=SKIPPED,
                            next_attempt_at=0,
                            last_error=NO_WEBHOOK_URL if event and merchant else "no event",
                        )
                    )
                    continue
                leased = delivery._replace(
                    attempts=delivery.attempts + 1,
                    next_attempt_at=now + lease_seconds * NANOSECONDS_PER_SECOND,
                )
                saved.append(leased)
                claimed.append((leased, event, merchant))
            unit.save_webhook_deliveries(saved)
        return claimed

    def record_result(
        self, event_id: int, delivered: bool, error: str = "", *, attempt: int | None = None
    ) -> WebhookDelivery | None:
        """What came of the latest attempt: delivered (status "delivered"), or failed (due
        again per the retry schedule, or "failed" once every try is used). With `attempt`
        (the claimed delivery's `attempts`), the result is applied only if that attempt
        still holds the delivery; otherwise nothing changes and None is returned."""
        return self.record_results([AttemptResult(event_id, delivered, error, attempt)])[0]

    def record_results(self, results: Sequence[AttemptResult]) -> list[WebhookDelivery | None]:
        """`record_result` for many attempts in ONE unit of work and one commit: what the
        dispatcher does after a pass, so a busy server pays one fsync per pass rather than one
        per webhook. If the commit fails, none is recorded; their leases run out and the
        attempts are made again (at least once, as after a crash)."""
        if not results:
            return []
        with self.ledger.unit_of_work([]) as (ledger_unit, _meta):
            unit = cast(_WebhookUnit, ledger_unit)
            now = self.clock()
            return [_apply_result(unit, result, now) for result in results]

    def replay(self, merchant_id: int, event_id: int) -> WebhookDelivery:
        """Send one of the merchant's events again: pending and due now, attempts kept.
        Raises `WebhookEventNotFoundError` for an unknown event or another merchant's."""
        with self.ledger.unit_of_work([]) as (ledger_unit, _meta):
            unit = cast(_WebhookUnit, ledger_unit)
            event = unit.webhook_event(event_id)
            if event is None or event.merchant_id != merchant_id:
                raise WebhookEventNotFoundError(merchant_id, event_id)
            now = self.clock()
            delivery = unit.webhook_delivery(event_id) or WebhookDelivery(
                event_id=event.id,
                merchant_id=event.merchant_id,
                attempts=0,
                next_attempt_at=now,
                status=PENDING,
                last_error="",
                delivered_at=0,
            )
            replayed = delivery._replace(status=PENDING, next_attempt_at=now)
            unit.save_webhook_delivery(replayed)
        return replayed

    def delivery(self, event_id: int) -> WebhookDelivery | None:
        return self.store.webhook_delivery(event_id)


__all__ = [
    "CLAIM_LIMIT_MAX",
    "DELIVERED",
    "FAILED",
    "LEASE_SECONDS",
    "PENDING",
    "SKIPPED",
    "AttemptResult",
    "Claimed",
    "WebhookEventNotFoundError",
    "WebhookService",
]
