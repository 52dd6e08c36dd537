"""Where the platform may send its own requests: merchants' webhook and notify URLs.

A URL a merchant (or any registered Alipay app) gives is an instruction to the server to make
a request. Without a check, that is a way into the server's own network: its loopback admin
ports, the cloud metadata address, other internal services (server-side request forgery).
So before each delivery the host is resolved and every address it resolves to must be a
public one: loopback, private, link-local, multicast, reserved and unspecified addresses are
refused.

A self-hosted platform whose merchants run on the same machine or network (a sandbox, the
tests, a single-tenant deployment) opts in with PAYCELL_ALLOW_PRIVATE_CALLBACK_URLS=1.

Known limit: the address is checked when the request is made, not pinned for the connection,
so a hostile DNS server that answers differently twice in a row (DNS rebinding) is not stopped.
"""

import ipaddress
import os
import socket
from typing import Final
from urllib.parse import urlsplit

ALLOW_PRIVATE_ENVIRONMENT_VARIABLE: Final = "PAYCELL_ALLOW_PRIVATE_CALLBACK_URLS"


def private_addresses_allowed() -> bool:
    return os.environ.get(ALLOW_PRIVATE_ENVIRONMENT_VARIABLE, "") in ("1", "true", "yes")


def refusal(url: str, *, allow_private: bool | None = None) -> str | None:
    """Why the platform must not send to `url`, or None when it may."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the URL must be http(s) with a host"
    if allow_private if allow_private is not None else private_addresses_allowed():
        return None
    try:
        resolved = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as problem:
        return f"the host does not resolve: {problem}"
    for *_family, sockaddr in resolved:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not address.is_global or address.is_multicast:
            return (
                f"the host resolves to {address}, which is not a public address "
                f"(set {ALLOW_PRIVATE_ENVIRONMENT_VARIABLE}=1 to allow it)"
            )
    return None
