"""Posting one signed notification to a merchant's endpoint over HTTP.

The request is a POST of the event's JSON body with these headers:

- `Content-Type: application/json`
- `Paycell-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, keyed with
  the merchant's webhook secret (see `core.payments.webhook_schedule.verify_signature`);
- `Paycell-Event-Id`: the event's id, the same on every try and replay (receivers
  deduplicate on it);
- `Paycell-Event-Type`: e.g. `payment.succeeded`, `refund.succeeded`, `payout.succeeded`.

Any 2xx answer within the timeout (10 s) is a delivery. Anything else is a failure with its
reason: another status (redirects are not followed), a timeout, a refused connection, a bad
URL. The response body is never read.
"""

from collections.abc import Mapping
from typing import Final, NamedTuple, Protocol

import httpx

from paycell.adapters.url_guard import refusal
from paycell.core.payments.records import WebhookEvent
from paycell.core.payments.webhook_schedule import SIGNATURE_HEADER, signature_header

SEND_TIMEOUT_SECONDS: Final = 10.0
USER_AGENT: Final = "paycell-webhooks/1"


class SendOutcome(NamedTuple):
    delivered: bool
    # Why it failed ("" when delivered): "HTTP 500", "timeout: ...", "ConnectError: ...".
    error: str = ""


class WebhookSender(Protocol):
    def post(self, url: str, body: str, headers: Mapping[str, str]) -> SendOutcome: ...


def webhook_headers(event: WebhookEvent, secret: str, timestamp_seconds: int) -> dict[str, str]:
    """The headers of one try of `event`, signed at `timestamp_seconds` (Unix seconds)."""
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature_header(secret, timestamp_seconds, event.body),
        "Paycell-Event-Id": str(event.id),
        "Paycell-Event-Type": event.type,
        "User-Agent": USER_AGENT,
    }


class HttpWebhookSender:
    """Posts with one pooled httpx client (safe to share between the dispatcher's threads)."""

    def __init__(self, timeout_seconds: float = SEND_TIMEOUT_SECONDS) -> None:
        self.timeout_seconds = timeout_seconds
        self._client = httpx.Client(timeout=timeout_seconds, follow_redirects=False)

    def post(self, url: str, body: str, headers: Mapping[str, str]) -> SendOutcome:
        refused = refusal(url)
        if refused is not None:
            return SendOutcome(False, f"not sent: {refused}")
        try:
            with self._client.stream(
                "POST", url, content=body.encode(), headers=dict(headers)
            ) as response:
                status = response.status_code
        except httpx.TimeoutException as problem:
            return SendOutcome(False, f"timeout after {self.timeout_seconds:g} s: {problem}")
        except Exception as problem:  # any failure to get an answer is a failed try
            return SendOutcome(False, f"{type(problem).__name__}: {problem}")
        if 200 <= status < 300:
            return SendOutcome(True)
        return SendOutcome(False, f"HTTP {status}")

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "HttpWebhookSender":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
