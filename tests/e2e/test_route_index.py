"""The route index finds, for every request, the route Starlette's router would have chosen by
trying each in turn, however often a request shape repeats."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import BaseRoute, Match, Route

from paycell.adapters.http import create_app
from paycell.adapters.http.route_index import SHAPES_MAX, IndexedRouter, RouteIndex
from paycell.platform import Platform

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
PARAMETER = re.compile(r"\{[^}]+\}")


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": ""}


def _one_by_one(routes: list[BaseRoute], method: str, path: str) -> tuple[Match, BaseRoute | None]:
    """Starlette's own rule: the first full match, else the first partial one."""
    partial: BaseRoute | None = None
    for route in routes:
        match, _ = route.matches(_scope(method, path))
        if match is Match.FULL:
            return match, route
        if match is Match.PARTIAL and partial is None:
            partial = route
    return (Match.PARTIAL, partial) if partial is not None else (Match.NONE, None)


@pytest.fixture
def routes(tmp_path: Path) -> Iterator[list[BaseRoute]]:
    with Platform(str(tmp_path / "routes.db")) as platform:
        application = create_app(platform, admin_key="admin")
        assert isinstance(application.router, IndexedRouter)
        yield list(application.router.routes)


def _paths(routes: list[BaseRoute]) -> list[str]:
    """Every route's path with numbers, then words, in its parameters, and some near misses."""
    paths = []
    for route in routes:
        if isinstance(route, Route):
            for value in ("7", "123456", "abc", "out-trade-9"):
                paths.append(PARAMETER.sub(value, route.path))
    return [*paths, "/v1/orders/1/pay/extra", "/v1/nothing/here", "/", "/v1/orders/"]


def test_the_index_chooses_the_route_the_router_would_for_every_request(
    routes: list[BaseRoute],
) -> None:
    index = RouteIndex(routes)
    # Twice over: first the index scans and remembers each shape, then it answers from memory.
    for _ in range(2):
        for path in _paths(routes):
            for method in METHODS:
                match, route, _ = index.find(_scope(method, path))
                assert (match, route) == _one_by_one(routes, method, path), (method, path)


def test_a_remembered_route_still_yields_this_requests_path_parameters(
    routes: list[BaseRoute],
) -> None:
    index = RouteIndex(routes)
    index.find(_scope("POST", "/v1/orders/11/pay"))
    match, route, child_scope = index.find(_scope("POST", "/v1/orders/42/pay"))
    assert match is Match.FULL
    assert isinstance(route, Route)
    assert route.path == "/v1/orders/{order_id}/pay"
    assert child_scope["path_params"] == {"order_id": "42"}


def test_a_route_spelling_a_number_literally_is_refused() -> None:
    async def endpoint(_request: object) -> None:
        raise AssertionError

    with pytest.raises(AssertionError, match="all-digit segment"):
        RouteIndex([Route("/v1/orders/2024/report", endpoint)])


def test_the_memory_of_request_shapes_is_bounded(routes: list[BaseRoute]) -> None:
    index = RouteIndex(routes)
    # Words in a path parameter make a new shape each time.
    for n in range(SHAPES_MAX + 10):
        match, _, _ = index.find(_scope("GET", f"/v1/orders/x{n}"))
        assert match is Match.FULL
        assert 0 < len(index._chosen) <= SHAPES_MAX
