"""Asynchronous notifications to a trade's notify_url, as Alipay sends them.

Two steps, run by `AlipayNotifier.run_once()` (once a second in `paycell serve`):

1. sync: every trade created through the gateway with a notify_url is compared with its
   order on the platform, however the order changed (the gateway, the cashier page, the REST
   API, the scheduler). What happened since the last look is queued, once per event (a
   unique key per order and event): the payment (TRADE_SUCCESS), each refund (the trade's
   status with refund_fee, gmt_refund and out_biz_no), an unpaid close (TRADE_CLOSED) and the
   end of the refund period (TRADE_FINISHED).
2. deliver: each due notification is a form POST (application/x-www-form-urlencoded,
   UTF-8) of Alipay's fields, signed with RSA2 by the platform at the time it is sent
   (notify_time changes between tries; notify_id does not). Only an answer whose body is
   `success` counts; otherwise it is tried again on Alipay's schedule: 8 tries over about
   25 hours (`core.payments.webhook_schedule`), then given up (`failed`).
"""

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import httpx

from paycell.adapters.alipay import gateway as gw
from paycell.adapters.alipay.store import (
    DELIVERED,
    FAILED,
    PENDING,
    GatewayStore,
    Notification,
    Trade,
)
from paycell.adapters.url_guard import refusal
from paycell.core.payments.records import Order, OrderStatus, Refund
from paycell.core.payments.webhook_schedule import next_attempt_at

SEND_TIMEOUT_SECONDS: Final = 10.0
LEASE_SECONDS: Final = 60
BATCH: Final = 100

_log = logging.getLogger(__name__)


class NotifySender(Protocol):
    def __call__(self, url: str, params: Mapping[str, str]) -> tuple[bool, str]: ...


class HttpNotifySender:
    """POSTs the form; delivered only when the answer's body is `success`."""

    def __init__(self, timeout_seconds: float = SEND_TIMEOUT_SECONDS) -> None:
        self._client = httpx.Client(timeout=timeout_seconds, follow_redirects=False)

    def __call__(self, url: str, params: Mapping[str, str]) -> tuple[bool, str]:
        refused = refusal(url)
        if refused is not None:
            return False, f"not sent: {refused}"
        try:
            response = self._client.post(
                url,
                data=dict(params),
                headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            )
        except Exception as problem:  # any failure to get an answer is a failed try
            return False, f"{type(problem).__name__}: {problem}"
        body = response.text.strip()
        if response.status_code == 200 and body == "success":
            return True, ""
        return False, f"HTTP {response.status_code}: {body[:80]!r}"

    def close(self) -> None:
        self._client.close()


@dataclass(slots=True)
class NotifyReport:
    queued: int = 0
    delivered: int = 0
    retrying: int = 0
    given_up: int = 0


class AlipayNotifier:
    """`read_order` and `read_refunds` read the platform (in `paycell serve`, on a connection
    of their own); `sign` signs a parameter dict with the platform's private key."""

    def __init__(
        self,
        store: GatewayStore,
        read_order: Callable[[int], Order | None],
        read_refunds: Callable[[int], list[Refund]],
        sign: Callable[[Mapping[str, str]], str],
        clock: Callable[[], int],
        sender: NotifySender,
    ) -> None:
        self.store = store
        self.read_order = read_order
        self.read_refunds = read_refunds
        self.sign = sign
        self.clock = clock
        self.sender = sender

    def run_once(self) -> NotifyReport:
        report = NotifyReport()
        report.queued = self.sync()
        self.deliver_due(report)
        return report

    def run(self, stop: threading.Event, interval_seconds: float = 1.0) -> None:
        while not stop.wait(interval_seconds):
            try:
                self.run_once()
            except Exception:  # a failed pass is logged and retried, never fatal
                _log.exception("alipay notifications failed; retrying")

    # --------------------------------------------------------------------------- sync

    def sync(self) -> int:
        queued = 0
        after = 0
        while True:
            trades = self.store.trades_to_sync(after, BATCH)
            for trade in trades:
                queued += self._sync_trade(trade)
            if len(trades) < BATCH:
                return queued
            after = trades[-1].order_id

    def _sync_trade(self, trade: Trade) -> int:
        order = self.read_order(trade.order_id)
        if order is None:
            return 0
        refunds = sorted(self.read_refunds(order.id), key=lambda r: r.id) if order.paid_at else []
        if order.status.value == trade.notified_status and len(refunds) == trade.notified_refunds:
            return 0
        now = self.clock()
        events: list[tuple[str, dict[str, str]]] = []
        base = self._base(trade, order)
        if order.paid_at and trade.notified_status == OrderStatus.WAIT_BUYER_PAY.value:
            events.append(("paid", {**base, "trade_status": "TRADE_SUCCESS"}))
        refunded = 0
        for index, refund in enumerate(refunds):
            refunded += refund.amount
            if index < trade.notified_refunds:
                continue
            status = "TRADE_CLOSED" if refunded == order.amount else "TRADE_SUCCESS"
            events.append(
                (
                    f"refund:{refund.id}",
                    {
                        **base,
                        "trade_status": status,
                        "refund_fee": gw.yuan(refunded),
                        "gmt_refund": gw.beijing_time(refund.created_at),
                        "out_biz_no": refund.out_request_no,
                        **(
                            {"gmt_close": gw.beijing_time(refund.created_at)}
                            if status == "TRADE_CLOSED"
                            else {}
                        ),
                    },
                )
            )
        if order.status is OrderStatus.TRADE_CLOSED and not order.paid_at:
            events.append(
                (
                    "closed",
                    {
                        **base,
                        "trade_status": "TRADE_CLOSED",
                        "gmt_close": gw.beijing_time(order.closed_at),
                    },
                )
            )
        if order.status is OrderStatus.TRADE_FINISHED:
            events.append(("finished", {**base, "trade_status": "TRADE_FINISHED"}))
        queued = 0
        with self.store.transaction():
            for key, params in events:
                notification = Notification(
                    notify_id=uuid.uuid4().hex,
                    order_id=order.id,
                    event_key=key,
                    notify_url=trade.notify_url,
                    params={k: v for k, v in params.items() if v != ""},
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    last_error="",
                    created_at=now,
                )
                queued += int(self.store.add_notification(notification))
            self.store.mark_synced(order.id, order.status.value, len(refunds))
        return queued

    @staticmethod
    def _base(trade: Trade, order: Order) -> dict[str, str]:
        amount = gw.yuan(order.amount)
        return {
            "notify_type": "trade_status_sync",
            "app_id": trade.app_id,
            "auth_app_id": trade.app_id,
            "charset": "utf-8",
            "version": "1.0",
            "trade_no": gw.trade_no(order),
            "out_trade_no": order.out_trade_no,
            "subject": order.subject,
            "total_amount": amount,
            "receipt_amount": amount if order.paid_at else "",
            "buyer_pay_amount": amount if order.paid_at else "",
            "invoice_amount": amount if order.paid_at else "",
            "buyer_id": gw.alipay_user_id(order.buyer_id) if order.buyer_id else "",
            "seller_id": gw.alipay_user_id(order.merchant_id),
            "gmt_create": gw.beijing_time(order.created_at),
            "gmt_payment": gw.beijing_time(order.paid_at),
        }

    # ------------------------------------------------------------------------ deliver

    def signed_params(self, notification: Notification, now: int) -> dict[str, str]:
        params = {
            **notification.params,
            "notify_id": notification.notify_id,
            "notify_time": gw.beijing_time(now),
        }
        params["sign"] = self.sign(params)
        params["sign_type"] = "RSA2"
        return params

    def deliver_due(self, report: NotifyReport | None = None) -> NotifyReport:
        report = report or NotifyReport()
        now = self.clock()
        for notification in self.store.due_notifications(now, BATCH):
            lease = now + LEASE_SECONDS * gw.NANOSECONDS_PER_SECOND
            if not self.store.claim_notification(notification, lease):
                continue
            attempt = notification.attempts + 1
            delivered, error = self.sender(
                notification.notify_url, self.signed_params(notification, self.clock())
            )
            done_at = self.clock()
            if delivered:
                self.store.record_attempt(notification.notify_id, attempt, DELIVERED, 0, "")
                report.delivered += 1
                continue
            following = next_attempt_at(attempt, done_at)
            if following is None:
                self.store.record_attempt(notification.notify_id, attempt, FAILED, 0, error)
                report.given_up += 1
            else:
                self.store.record_attempt(
                    notification.notify_id, attempt, PENDING, following, error
                )
                report.retrying += 1
        return report
