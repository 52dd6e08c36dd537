"""The request target hashed with an Idempotency-Key is exactly what `request.url` spells."""

from starlette.requests import Request

from paycell.adapters.http.app import _target


def test_the_request_target_matches_starlettes_url_for_awkward_paths_and_queries() -> None:
    cases = [
        ("/v1/orders/7/pay", b""),
        ("/v1/orders", b"limit=10&after=3"),
        ("/v1/odd?path#with\\marks", b"q=%E4%BD%A0%E5%A5%BD&x=1"),
        ("/v1/ünïcode", "名=值".encode()),
    ]
    for path, query in cases:
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "query_string": query,
            "headers": [(b"host", b"127.0.0.1:8080")],
            "scheme": "http",
            "server": ("127.0.0.1", 8080),
        }
        url = Request(scope).url
        assert _target(scope) == url.path + (f"?{url.query}" if url.query else "")
