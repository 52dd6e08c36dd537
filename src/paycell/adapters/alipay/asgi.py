"""Accept requests in absolute form (`POST http://host:port/gateway.do?... HTTP/1.1`).

RFC 9112 (3.2.2) requires servers to accept an absolute-form request target, and Alipay's
official Python SDK sends one; uvicorn's h11 protocol passes it through as the path. This
middleware moves such a path back to its origin form before routing.
"""

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send


class AbsoluteFormPaths:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if isinstance(path, str) and path.startswith(("http://", "https://")):
            rest = path.split("://", 1)[1]
            origin = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
            changed: dict[str, Any] = {**scope, "path": origin, "raw_path": origin.encode()}
            await self.app(changed, receive, send)
            return
        await self.app(scope, receive, send)
