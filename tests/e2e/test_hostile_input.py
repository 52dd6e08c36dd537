"""Every operation of the API, fed hostile input, answers as documented: a success or a client
error in the error shape, never a 5xx but a deliberate 503 with Retry-After.

Found this way first, by running schemathesis against the served OpenAPI document: a
settlement day past what a ledger timestamp holds answered 500. This keeps the same net in the
suite without its dependency: each operation, as each kind of caller it serves and as nobody,
gets every path segment of a hostile list, then drawn path segments, query strings and bodies
(the right field names with values of any JSON type, any JSON value at all, or bytes that are
not JSON), and every answer is checked.
"""

import json
import re
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from paycell.adapters.http import create_app
from paycell.adapters.http.app import OPERATIONS
from paycell.adapters.http.auth import Role
from paycell.adapters.http.errors import ALL_ERROR_STATUS
from paycell.adapters.http.routing import Operation
from paycell.platform import Platform
from tests.e2e.conftest import ADMIN_KEY, Clock, World

# Path segments a client may send where an id or a day belongs.
SEGMENTS = (
    "1",
    "2",
    "0",
    "-1",
    "x",
    "1.5",
    "1e3",
    "99999999999999999999",
    "18446744073709551616",
    "%00",
    "%F0%9F%92%B0",
    "bulk-pay",
    "2024-11-11",
    "9999-12-31",
    "2024-02-30",
)

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**130), max_value=2**130)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


def _body(operation: Operation) -> st.SearchStrategy[bytes]:
    names = [field.name for field in operation.body] or ["amount", "items", "day"]
    fields = st.dictionaries(st.sampled_from(names), JSON_VALUES, max_size=len(names))
    return st.one_of(
        fields.map(lambda value: json.dumps(value).encode()),
        JSON_VALUES.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=24),
    )


def _query(operation: Operation) -> st.SearchStrategy[list[tuple[str, str]]]:
    names = [field.name for field in operation.query] + ["limit", "after", "unknown"]
    return st.lists(st.tuples(st.sampled_from(names), st.text(max_size=8)), max_size=3)


# (operation, caller) pairs: each operation as each role it serves (the channel's callback is
# signed, not keyed: it is fed as an anonymous caller), and as nobody.
CASES = [
    (operation, role)
    for operation in OPERATIONS
    for role in sorted({str(r) for r in operation.roles if r is not Role.CHANNEL} | {"nobody"})
]


def _check(operation: Operation, response: Any, where: object) -> None:
    if response.status_code == 503:
        assert "Retry-After" in response.headers, where
    assert response.status_code < 500 or response.status_code == 503, where
    if response.status_code >= 400:
        error: Any = response.json()["error"]
        assert set(error) == {"code", "message"}, where
        assert ALL_ERROR_STATUS.get(error["code"]) == response.status_code, where
        assert error["message"], where
    else:
        assert response.status_code in (operation.success_status, 200), where


@pytest.fixture(scope="module")
def hostile() -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    """One platform for every case: a user with money, a merchant with an order."""
    with tempfile.TemporaryDirectory(prefix="paycell-hostile-") as directory:
        platform = Platform(f"{directory}/hostile.db", clock=Clock())
        # Server exceptions come back as the 500 a client would get, for the checks.
        client = TestClient(
            create_app(platform, admin_key=ADMIN_KEY), raise_server_exceptions=False
        )
        world = World(platform, client, Clock())
        buyer, shop = world.new_user(), world.new_merchant()
        world.top_up(buyer, 1_000_00)
        world.create_order(shop, "H-1", 10_00)
        headers = {
            "admin": {"Authorization": f"Bearer {ADMIN_KEY}"},
            "merchant": shop.headers,
            "user": buyer.headers,
            "nobody": {},
        }
        yield client, headers
        report = platform.verify()
        client.close()
        platform.close()
        assert report.ok, report.render()


@pytest.mark.parametrize(
    ("operation", "caller"),
    CASES,
    ids=[f"{o.method} {o.path} as {caller}" for o, caller in CASES],
)
def test_hostile_input_gets_a_documented_answer(
    hostile: tuple[TestClient, dict[str, dict[str, str]]], operation: Operation, caller: str
) -> None:
    client, headers = hostile
    sent = {**headers[caller], "Content-Type": "application/json"}
    content = b"{}" if operation.method in ("POST", "PUT") else None
    # Every path segment, one by one, with an empty body.
    if "{" in operation.path:
        for segment in SEGMENTS:
            path = re.sub(r"{\w+}", segment, operation.path)
            response = client.request(operation.method, path, content=content, headers=sent)
            _check(operation, response, (operation.method, path, caller, response.text[:200]))

    # Then drawn queries and bodies (and segments).
    @settings(
        max_examples=25,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        segment=st.sampled_from(SEGMENTS),
        query=_query(operation),
        body=_body(operation),
    )
    def drawn(segment: str, query: list[tuple[str, str]], body: bytes) -> None:
        path = re.sub(r"{\w+}", segment, operation.path)
        response = client.request(
            operation.method,
            path,
            params=query,
            content=body if operation.method in ("POST", "PUT") else None,
            headers=sent,
        )
        where = (operation.method, path, query, body, caller, response.text[:200])
        _check(operation, response, where)

    drawn()
