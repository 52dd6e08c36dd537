"""Webhooks, the pure part: when to try again, and how a notification is signed.

Retry schedule
--------------
A merchant's endpoint may be down for a while (a deploy, a night-time outage), so a
notification that fails is tried again with growing gaps, the way Alipay retries its
asynchronous notifications: the first try as soon as the event exists, then retries after
4 min, 10 min, 10 min, 1 h, 2 h, 6 h and 15 h. That is 8 tries spread over about 25 hours
(24 h 24 min of gaps, plus the time the tries themselves take); after the eighth failure the
delivery is given up ("failed") and only a replay asked for by the merchant sends it again.

Signature
---------
Every notification carries a `Paycell-Signature` header; for the body `{"order_id": 1}`
sent at 1700006400 with the secret `whsec_test`::

    t=1700006400,v1=16475538078476464dd85a698a3dc3409f8a7517fb2058cfb7c998b00309f9b4

`t` is the Unix time in seconds when the notification was sent, and `v1` the hex HMAC-SHA256,
keyed with the merchant's webhook secret, of the UTF-8 bytes of ``f"{t}.{body}"`` (the
timestamp, a dot, and the raw request body exactly as received). Signing the timestamp with
the body lets a receiver reject an old notification replayed by someone who captured it.

A merchant checks a notification with `verify_signature(secret, header, raw_body, now)`: it
recomputes the HMAC, compares in constant time, and rejects a timestamp more than
`tolerance_seconds` (default 5 minutes) away from its own clock. The header may carry several
`v1=` entries (while a secret is being rotated); one match is enough. Unknown keys are
ignored, so a later signature scheme (`v2=`) can be added without breaking receivers.

Times here are those of the platform: `now` for the schedule is nanoseconds since the epoch
(the ledger's unit), the signature's timestamp whole seconds (what goes on the wire).
"""

import hashlib
import hmac
from typing import Final

NANOSECONDS_PER_SECOND: Final = 1_000_000_000

# The gaps between tries, in seconds, after the first try: Alipay's notification schedule.
# Short gaps first (a blip, a restart), then long ones (an outage), so an endpoint that is
# back within a day still gets every event without being hammered while it is down.
RETRY_DELAYS_SECONDS: Final[tuple[int, ...]] = (
    4 * 60,
    10 * 60,
    10 * 60,
    60 * 60,
    2 * 60 * 60,
    6 * 60 * 60,
    15 * 60 * 60,
)
# The first try plus one per gap: 8.
MAX_ATTEMPTS: Final = 1 + len(RETRY_DELAYS_SECONDS)

SIGNATURE_HEADER: Final = "Paycell-Signature"
SIGNATURE_SCHEME: Final = "v1"
# How far a signature's timestamp may be from the receiver's clock, by default.
DEFAULT_TOLERANCE_SECONDS: Final = 300


def next_attempt_at(attempts_made: int, now: int) -> int | None:
    """When to make the next try after `attempts_made` tries, all failed (`now` and the
    answer in nanoseconds): `now` itself before the first try, then the schedule's gap after
    the latest one, and None once all `MAX_ATTEMPTS` tries are used."""
    if attempts_made < 0:
        raise ValueError("attempts_made cannot be negative")
    if attempts_made == 0:
        return now
    if attempts_made >= MAX_ATTEMPTS:
        return None
    return now + RETRY_DELAYS_SECONDS[attempts_made - 1] * NANOSECONDS_PER_SECOND


def _digest(secret: str, timestamp_seconds: int, body: str | bytes) -> str:
    raw = body.encode() if isinstance(body, str) else body
    message = str(timestamp_seconds).encode() + b"." + raw
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp_seconds: int, body: str | bytes) -> str:
    """The `Paycell-Signature` value for `body` sent at `timestamp_seconds` (Unix seconds):
    ``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``."""
    return f"t={timestamp_seconds},{SIGNATURE_SCHEME}={_digest(secret, timestamp_seconds, body)}"


def verify_signature(
    secret: str,
    header: str,
    body: str | bytes,
    now_seconds: int,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """True when `header` (a `Paycell-Signature` value) signs `body` with `secret` and its
    timestamp is within `tolerance_seconds` of `now_seconds` (the receiver's clock, Unix
    seconds). False for anything else: a malformed header, a stale or future timestamp, a
    changed body, another secret. Pass the raw body as received, before any JSON parsing."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, separator, value = part.strip().partition("=")
        if not separator:
            return False
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                return False
            timestamp = int(value)
        elif key == SIGNATURE_SCHEME:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs(now_seconds - timestamp) > tolerance_seconds:
        return False
    expected = _digest(secret, timestamp, body).encode()
    matched = False
    for candidate in candidates:
        # Compare every candidate, so the time taken does not reveal which one matched.
        matched |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    return matched


__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "MAX_ATTEMPTS",
    "RETRY_DELAYS_SECONDS",
    "SIGNATURE_HEADER",
    "next_attempt_at",
    "signature_header",
    "verify_signature",
]
