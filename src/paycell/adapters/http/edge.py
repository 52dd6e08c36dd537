"""The request edge, one ASGI middleware in front of every route: request id, route template
and priority class, degradation switches (503 degraded), the per-key rate limit (429),
admission control (503 overloaded), then metrics and one JSON log line per request.

Refusals here are cheap: they never reach the platform's lock or the database.
"""

import json
import logging
import re
import time
import uuid
from typing import Final

from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paycell.adapters.http import switches as sw
from paycell.adapters.http.admission import (
    CLASS_NAMES,
    CONSOLE,
    EXEMPT_PATHS,
    REPORTS,
    Admission,
    RateLimiter,
    ShedError,
    route_class,
)
from paycell.adapters.http.errors import DEGRADED, OVERLOADED, RATE_LIMITED
from paycell.adapters.http.logging_setup import ACCESS_LOGGER
from paycell.adapters.http.metrics import Metrics
from paycell.adapters.http.route_index import RouteIndex
from paycell.adapters.http.switches import Switches

REQUEST_ID_HEADER: Final = "x-request-id"
# A client's request id is kept when it is 1 to 128 of these characters; else one is made.
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
UNMATCHED_ROUTE: Final = "unmatched"
# What a request refused by a switch is told: the operator decides when it comes back.
DEGRADED_RETRY_AFTER_SECONDS: Final = 30

_access = logging.getLogger(ACCESS_LOGGER)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class Edge:
    def __init__(
        self,
        app: ASGIApp,
        *,
        index: RouteIndex,
        admission: Admission,
        limiter: RateLimiter,
        switches: Switches,
        metrics: Metrics,
    ) -> None:
        self.app = app
        self.index = index
        self.admission = admission
        self.limiter = limiter
        self.switches = switches
        self.metrics = metrics

    def _template(self, scope: Scope) -> str:
        _, route, _ = self.index.find(scope)
        return str(route.path) if isinstance(route, Route) else UNMATCHED_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        method = scope["method"]
        template = self._template(scope)
        priority = route_class(method, template)
        status = 500
        extra: dict[str, object] = {}
        id_header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        async def refuse(code: str, http_status: int, message: str, retry_after: int) -> None:
            body = json.dumps({"error": {"code": code, "message": message}}).encode()
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": http_status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", str(retry_after).encode()),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})

        try:
            if template in EXEMPT_PATHS:
                await self.app(scope, receive, send_with_id)
                return
            switch = (
                sw.REPORTS
                if priority == REPORTS
                else sw.CONSOLE
                if priority == CONSOLE and template != UNMATCHED_ROUTE
                else None
            )
            if switch is not None and not self.switches.on(switch):
                extra["degraded"] = switch
                self.metrics.degraded(switch)
                await refuse(
                    DEGRADED,
                    503,
                    f"{switch} are switched off for now (degraded mode); payments still work",
                    DEGRADED_RETRY_AFTER_SECONDS,
                )
                return
            token = _bearer(scope)
            if token is not None:
                wait = self.limiter.take(token)
                if wait:
                    extra["rate_limited"] = True
                    self.metrics.rate_limited()
                    await refuse(RATE_LIMITED, 429, "this API key is over its request rate", wait)
                    return
            try:
                await self.admission.acquire(priority)
            except ShedError as shed:
                extra["shed"] = shed.reason
                await refuse(
                    OVERLOADED,
                    503,
                    f"the server is saturated; {CLASS_NAMES[priority]} are shed "
                    f"({shed.reason}), retry after {shed.retry_after} s",
                    shed.retry_after,
                )
                return
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self.admission.release(priority)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe(template, method, status, elapsed)
            if _access.isEnabledFor(logging.INFO):
                _access.info(
                    "request",
                    extra={
                        "fields": {
                            "request_id": request_id,
                            "method": method,
                            "route": template,
                            "path": scope["path"],
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 3),
                            "class": CLASS_NAMES[priority],
                            **extra,
                        }
                    },
                )
