"""Who is calling: `Authorization: Bearer <key>`.

The admin key is given at startup and compared in constant time; user and merchant keys are
issued by the platform (`issue_api_key`) and stored only as their SHA-256, so the lookup is by
hash. The bank's callbacks carry no API key: their HMAC signature is their authentication
(checked by the callback endpoint), so that endpoint's caller is the channel.
"""

import hmac
from dataclasses import dataclass
from enum import StrEnum

from paycell.adapters.http.errors import FORBIDDEN, UNAUTHORIZED, ApiError
from paycell.core.payments.records import PartyKind
from paycell.platform import Platform

API_KEY_LENGTH_MAX = 255


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"
    MERCHANT = "merchant"
    CHANNEL = "channel"


@dataclass(frozen=True, slots=True)
class Caller:
    role: Role
    # The user's or merchant's id; 0 for the admin and the channel.
    party_id: int = 0


_ROLE_OF_PARTY = {PartyKind.USER: Role.USER, PartyKind.MERCHANT: Role.MERCHANT}


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > API_KEY_LENGTH_MAX:
        return None
    return token


def authenticate(
    platform: Platform, admin_key: str, authorization: str | None, roles: frozenset[Role]
) -> Caller:
    """The caller, if its key is valid and its role may use the endpoint; else 401 or 403."""
    if roles == {Role.CHANNEL}:
        return Caller(Role.CHANNEL)
    token = bearer_token(authorization)
    if token is None:
        raise ApiError(UNAUTHORIZED, "send an API key as 'Authorization: Bearer <key>'")
    caller: Caller | None = None
    if hmac.compare_digest(token.encode(), admin_key.encode()):
        caller = Caller(Role.ADMIN)
    else:
        party = platform.authenticate(token)
        if party is not None:
            caller = Caller(_ROLE_OF_PARTY[party[0]], party[1])
    if caller is None:
        raise ApiError(UNAUTHORIZED, "unknown API key")
    if caller.role not in roles:
        allowed = " or ".join(sorted(role.value for role in roles))
        raise ApiError(FORBIDDEN, f"this endpoint is for {allowed} keys, not {caller.role.value}")
    return caller
