"""Stripe's `Idempotency-Key` semantics for every POST.

After a POST that reached the platform (whatever its outcome, success or business
rejection), the server keeps (caller, key, SHA-256 of method + path + body, status, body). A
retry with the same key and the same request gets that first response again, with the header
`Idempotent-Replayed: true`, and changes nothing; the same key with a different request is
422 `idempotency_key_reused`. Requests rejected before they reach the platform (bad JSON,
invalid fields, bad key) keep nothing, so a corrected retry may reuse the key.

Keys are scoped per caller. The storage port scopes records by (party kind, party id); the
admin and the bank channel are not parties, so they use party id 0, which no user or merchant
ever has (ids start at 1): admin records live under (user, 0), channel records under
(merchant, 0).
"""

import hashlib

from paycell.adapters.http.auth import Caller, Role
from paycell.adapters.http.errors import IDEMPOTENCY_KEY_REUSED, INVALID_FIELD, ApiError
from paycell.core.payments.records import PartyKind
from paycell.platform import Platform
from paycell.service.platform_ports import IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_LENGTH_MAX = 255

_SCOPE = {
    Role.USER: PartyKind.USER,
    Role.MERCHANT: PartyKind.MERCHANT,
    Role.ADMIN: PartyKind.USER,
    Role.CHANNEL: PartyKind.MERCHANT,
}


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 0 < len(key) <= KEY_LENGTH_MAX or not key.isprintable():
        raise ApiError(
            INVALID_FIELD, f"{HEADER}: must be 1 to {KEY_LENGTH_MAX} printable characters"
        )
    return key


def request_hash(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        # Length-prefixed, so no two different requests hash the same parts.
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def scope(caller: Caller) -> tuple[PartyKind, int]:
    return _SCOPE[caller.role], caller.party_id


def previous_response(
    platform: Platform, caller: Caller, key: str, hashed: str
) -> IdempotencyRecord | None:
    """The first response to this key, or None; 422 if the key was used for another request."""
    party_kind, party_id = scope(caller)
    record = platform.idempotency_record(party_kind, party_id, key)
    if record is None:
        return None
    if record.request_hash != hashed:
        raise ApiError(
            IDEMPOTENCY_KEY_REUSED,
            f"{HEADER} {key!r} was already used with a different request",
        )
    return record


def remember(
    platform: Platform, caller: Caller, key: str, hashed: str, status: int, body: str
) -> IdempotencyRecord:
    """Keep the response; if a concurrent request with the key won, its response is returned."""
    party_kind, party_id = scope(caller)
    return platform.save_idempotency_record(
        IdempotencyRecord(party_kind, party_id, key, hashed, status, body, platform.clock())
    )
