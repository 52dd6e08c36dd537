"""Finding a request's route without trying every route in turn.

Starlette's router tries each route's regular expression in order until one matches: with the
API's 45 routes, a payment late in the list cost 44 failed matches, and the edge middleware
(which needs the route's template for admission and metrics) paid the same again. Together
that was about a third of the server's CPU per request.

`RouteIndex` remembers which route answered each request *shape*: the method and the path with
every all-digit segment replaced by `#` (`POST /v1/orders/#/pay`). Two paths of one shape differ
only in digit segments, which no route spells literally (checked when the index is built), so
the same routes match both and Starlette's first choice is the same. The remembered route is
still matched against the request, so a wrong guess can only cost time, never send a request
to the wrong handler. Shapes whose segments are not digits (an out_trade_no, say) are
remembered too, up to a bound; past it the memory starts afresh.
"""

from collections.abc import MutableMapping, Sequence
from typing import Any, Final, cast

from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Receive, Scope, Send

SHAPES_MAX: Final = 4_096
_KEPT: Final = "paycell.route_found"

Found = tuple[Match, BaseRoute | None, MutableMapping[str, Any]]


def _shape(method: str, path: str) -> tuple[str, str]:
    return method, "/".join("#" if part.isdigit() else part for part in path.split("/"))


class RouteIndex:
    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes = list(routes)
        for route in self.routes:
            if isinstance(route, Route):
                literal_digits = [
                    part for part in route.path.split("/") if part.isdigit() and "{" not in part
                ]
                assert not literal_digits, f"route {route.path} has an all-digit segment"
        self._chosen: dict[tuple[str, str], BaseRoute] = {}

    def find(self, scope: Scope) -> Found:
        """The route Starlette's router would choose for this request, how it matched, and
        the scope it adds (path parameters); (Match.NONE, None, {}) when none does.

        The answer is kept in the scope, so the router finds it again for free after the
        edge middleware asked (unless something changed the method or path in between)."""
        method, path = scope["method"], scope["path"]
        kept = scope.get(_KEPT)
        if kept is not None and kept[0] == method and kept[1] == path:
            return cast(Found, kept[2])
        found = self._find(scope)
        scope[_KEPT] = (method, path, found)
        return found

    def _find(self, scope: Scope) -> Found:
        shape = _shape(scope["method"], scope["path"])
        chosen = self._chosen.get(shape)
        if chosen is not None:
            match, child_scope = chosen.matches(scope)
            if match is not Match.NONE:
                return match, chosen, child_scope
        found = self._scan(scope)
        if found[1] is not None:
            if len(self._chosen) >= SHAPES_MAX:
                self._chosen.clear()
            self._chosen[shape] = found[1]
        return found

    def allowed_methods(self, path: str) -> list[str]:
        """Every method some route serves at `path`, for a 405's Allow header: Starlette's
        own names only the first route that matched the path, and the API serves GET and
        POST on one path through two routes."""
        methods: set[str] = set()
        for route in self.routes:
            if isinstance(route, Route) and route.methods and route.path_regex.match(path):
                methods |= route.methods
        return sorted(methods)

    def _scan(self, scope: Scope) -> Found:
        partial: Found | None = None
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return match, route, child_scope
            if match is Match.PARTIAL and partial is None:
                partial = (match, route, child_scope)
        return partial or (Match.NONE, None, {})


class IndexedRouter(Router):
    """Starlette's router, finding full matches through a `RouteIndex`, and answering a
    partial match (the path is served, the method is not) with a 405 that names every method
    the path takes; everything else (404, slash redirects, lifespan) is Starlette's own code."""

    def __init__(self, index: RouteIndex, **keywords: Any) -> None:
        super().__init__(routes=index.routes, **keywords)
        self.index = index

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match, route, child_scope = self.index.find(scope)
            if match is Match.FULL and route is not None:
                scope.setdefault("router", self)
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
            if match is Match.PARTIAL:
                allowed = ", ".join(self.index.allowed_methods(scope["path"]))
                raise HTTPException(status_code=405, headers={"Allow": allowed})
        await super().app(scope, receive, send)
