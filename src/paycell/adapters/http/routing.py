"""The shape of an API operation, shared by the app (which serves it) and the OpenAPI
document (which describes it), so the document cannot miss a route."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from paycell.adapters.http.auth import Caller, Role
from paycell.adapters.http.validation import Field
from paycell.platform import Platform


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a handler sees it, after authentication and body validation."""

    platform: Platform
    caller: Caller
    path_parameters: Mapping[str, str]
    query: Mapping[str, str]
    body: dict[str, object]
    raw_body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    payload: dict[str, object]
    # What an idempotent replay answers instead, when the first answer holds a secret that
    # must not be stored (a new API key is shown once).
    stored_payload: dict[str, object] | None = None


Handler = Callable[[Call], Reply]


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    roles: frozenset[Role]
    handler: Handler
    summary: str
    # The schema name of the response (a list of them when `is_list`).
    response: str
    success_status: int = 200
    body: tuple[Field, ...] = ()
    query: tuple[Field, ...] = ()
    # The error codes this operation can answer besides the common ones.
    errors: tuple[str, ...] = ()
    is_list: bool = False
    # The body is passed through unparsed (the bank's signed callback).
    raw_body: bool = False
    description: str = ""
    tags: tuple[str, ...] = field(default=())
