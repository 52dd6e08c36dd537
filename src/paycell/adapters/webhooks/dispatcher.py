"""The webhook dispatcher: claim due deliveries, send them, record the outcomes.

One pass (`deliver_due`):
1. claim up to `limit` due deliveries in one short transaction (each attempt counted and
   leased, so no other process sends the same attempt; see `service.webhooks`);
2. send them outside any transaction, a few at a time in threads, each signed with the
   time it is sent; a delivery whose lease has run out before its turn is left alone (it is
   due again, and another pass may already own it);
3. record each outcome in its own short transaction, only while the attempt holds its lease.

`run(stop)` repeats passes until `stop` is set: at once while a pass found a full batch,
otherwise every `interval_seconds`. A failed pass (the database unreachable) is logged and
retried on the next tick, never fatal.

The dispatcher needs its own database connection when it runs beside other users of one
(`paycell serve`): give it a `WebhookService` on its own store, so sending never waits for
the HTTP handlers and they never wait for a slow merchant.
"""

import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from paycell.adapters.webhooks.sender import SEND_TIMEOUT_SECONDS, WebhookSender, webhook_headers
from paycell.core.payments.webhook_schedule import NANOSECONDS_PER_SECOND
from paycell.service.webhooks import (
    FAILED,
    LEASE_SECONDS,
    AttemptResult,
    Claimed,
    WebhookService,
)

DEFAULT_BATCH: Final = 100
DEFAULT_CONCURRENCY: Final = 8

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class DispatchReport:
    claimed: int = 0
    delivered: int = 0
    # Failed tries that will be retried on the schedule.
    retrying: int = 0
    # Failed tries that used the last attempt: the delivery is now "failed".
    given_up: int = 0
    # Claimed but not sent: the lease ran out first, or the result came after it had.
    lease_expired: int = 0
    errors: list[str] = field(default_factory=list)


class WebhookDispatcher:
    def __init__(
        self,
        service: WebhookService,
        sender: WebhookSender,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        send_timeout_seconds: float = SEND_TIMEOUT_SECONDS,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.service = service
        self.sender = sender
        self.concurrency = concurrency
        self.send_timeout_seconds = send_timeout_seconds

    def lease_seconds(self, limit: int) -> int:
        """A lease long enough for a whole batch: every round of `concurrency` sends taking
        the full timeout, plus the usual margin."""
        rounds = math.ceil(limit / self.concurrency)
        return LEASE_SECONDS + math.ceil(rounds * self.send_timeout_seconds)

    def deliver_due(self, limit: int = DEFAULT_BATCH) -> DispatchReport:
        report = DispatchReport()
        claimed = self.service.claim_due(limit, self.lease_seconds(limit))
        report.claimed = len(claimed)
        if not claimed:
            return report
        if self.concurrency == 1 or len(claimed) == 1:
            sent = [self._send(item) for item in claimed]
        else:
            # Only the sends run in threads; results are recorded here, on the caller's
            # thread (and database connection), once every send of the pass is done.
            with ThreadPoolExecutor(
                max_workers=min(self.concurrency, len(claimed)),
                thread_name_prefix="paycell-webhook",
            ) as pool:
                sent = list(pool.map(self._send, claimed))
        self._record(sent, report)
        return report

    def _send(self, item: Claimed) -> tuple[Claimed, tuple[bool, str] | None]:
        delivery, event, merchant = item
        now = self.service.clock()
        if now >= delivery.next_attempt_at:
            return item, None
        headers = webhook_headers(event, merchant.webhook_secret, now // NANOSECONDS_PER_SECOND)
        outcome = self.sender.post(merchant.webhook_url, event.body, headers)
        return item, (outcome.delivered, outcome.error)

    def _record(
        self, sent: list[tuple[Claimed, tuple[bool, str] | None]], report: DispatchReport
    ) -> None:
        """Record the pass's results in one commit; a send whose lease ran out first is not
        recorded (its delivery is due again as the next attempt)."""
        answered = [(item[0], outcome) for item, outcome in sent if outcome is not None]
        report.lease_expired += len(sent) - len(answered)
        try:
            updates = self.service.record_results(
                [
                    AttemptResult(delivery.event_id, delivered, error, delivery.attempts)
                    for delivery, (delivered, error) in answered
                ]
            )
        except Exception as problem:  # the leases run out and the attempts are made again
            _log.exception("recording %d webhook results failed", len(answered))
            report.errors.extend(
                f"event {delivery.event_id}: {problem}" for delivery, _ in answered
            )
            return
        for (_delivery, (delivered, _error)), updated in zip(answered, updates, strict=True):
            if updated is None:
                report.lease_expired += 1
            elif delivered:
                report.delivered += 1
            elif updated.status == FAILED:
                report.given_up += 1
            else:
                report.retrying += 1

    def run(
        self,
        stop: threading.Event,
        interval_seconds: float = 1.0,
        limit: int = DEFAULT_BATCH,
        on_report: Callable[[DispatchReport], None] | None = None,
    ) -> None:
        """Dispatch until `stop` is set (call from a thread of its own)."""
        while not stop.is_set():
            full = False
            try:
                report = self.deliver_due(limit)
                full = report.claimed >= limit
                if on_report is not None:
                    on_report(report)
            except Exception:  # a failed pass is logged and retried, never fatal
                _log.exception("webhook dispatch failed; retrying in %s s", interval_seconds)
            if not full:
                stop.wait(interval_seconds)
