"""The load generator's HTTP client (`loadtest/wire.py`) and its hot path (`driver`), against a
real asyncio server started by the test on 127.0.0.1 that answers each path its own way:
keep-alive, chunked, `Connection: close`, a body up to EOF, cut off mid-answer, never, and
error answers with and without paycell's JSON."""

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from paycell.adapters.loadtest.driver import (
    GAVE_UP,
    HTTPX,
    RAW,
    TIMEOUT,
    TRANSPORT_ERROR,
    Item,
    Record,
    WorkerSpec,
    run_worker,
    shed_class,
)
from paycell.adapters.loadtest.wire import (
    Connection,
    Response,
    WireError,
    host_and_port,
    render_request,
)

JSON_OK = b'{"ok":true}'
Writer = asyncio.StreamWriter


def _answer(status: str, headers: list[str], body: bytes) -> bytes:
    head = [f"HTTP/1.1 {status}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _json(status: str, body: bytes, *extra: str) -> bytes:
    return _answer(
        status, ["content-type: application/json", f"content-length: {len(body)}", *extra], body
    )


async def _ok(reader: asyncio.StreamReader, writer: Writer) -> bool:
    writer.write(_json("200 OK", JSON_OK))
    return True


async def _chunked(reader: asyncio.StreamReader, writer: Writer) -> bool:
    writer.write(_answer("200 OK", ["Transfer-Encoding: chunked"], b""))
    for piece in (b'6\r\n{"ok":\r\n', b"5;note=x\r\ntrue}\r\n", b"0\r\nx-trailer: 1\r\n\r\n"):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.01)  # separate segments: the client must read across them
    return True


async def _close(reader: asyncio.StreamReader, writer: Writer) -> bool:
    writer.write(_json("200 OK", JSON_OK, "connection: close"))
    return False


async def _until_eof(reader: asyncio.StreamReader, writer: Writer) -> bool:
    writer.write(_answer("200 OK", ["content-type: application/json"], JSON_OK))
    return False


async def _drop_when_idle(reader: asyncio.StreamReader, writer: Writer) -> bool:
    writer.write(_json("200 OK", JSON_OK))  # keep-alive, but the server then drops it
    return False


async def _cut(reader: asyncio.StreamReader, writer: Writer) -> bool:
    writer.write(_answer("200 OK", ["content-length: 100"], b'{"ok":'))
    return False


async def _never(reader: asyncio.StreamReader, writer: Writer) -> bool:
    await reader.read()  # until the client gives up and closes
    return False


async def _text_503(reader: asyncio.StreamReader, writer: Writer) -> bool:
    writer.write(_answer("503 Service Unavailable", ["content-length: 10"], b"overloaded"))
    return True


async def _shed_by_header(reader: asyncio.StreamReader, writer: Writer) -> bool:
    body = json.dumps({"error": {"code": "rate_limited", "message": "slow down"}}).encode()
    writer.write(_json("429 Too Many Requests", body, "X-Paycell-Class: payments"))
    return True


async def _shed_by_message(reader: asyncio.StreamReader, writer: Writer) -> bool:
    message = "the server is overloaded; queries are shed (try again)"
    body = json.dumps({"error": {"code": "overloaded", "message": message}}).encode()
    writer.write(_json("503 Service Unavailable", body))
    return True


async def _refused(reader: asyncio.StreamReader, writer: Writer) -> bool:
    body = json.dumps({"error": {"code": "insufficient_balance", "message": "no"}}).encode()
    writer.write(_json("409 Conflict", body))
    return True


ROUTES: dict[str, Callable[[asyncio.StreamReader, Writer], Awaitable[bool]]] = {
    "/ok": _ok,
    "/chunked": _chunked,
    "/close": _close,
    "/until-eof": _until_eof,
    "/drop-when-idle": _drop_when_idle,
    "/cut": _cut,
    "/never": _never,
    "/text-503": _text_503,
    "/shed-by-header": _shed_by_header,
    "/shed-by-message": _shed_by_message,
    "/refused": _refused,
}


@dataclass
class Served:
    port: int
    connections: int = 0
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _handle(served: Served, reader: asyncio.StreamReader, writer: Writer) -> None:
    served.connections += 1
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
            method, path, _ = request_line.split(" ")
            headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            served.requests.append((method, path, headers, body))
            keep = await ROUTES[path](reader, writer)
            await writer.drain()
            if not keep:
                return
    finally:
        writer.close()


@pytest.fixture
def served() -> Iterator[Served]:
    """The scripted server in a thread with its own event loop."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        served = Served(port=0)
        handlers: set[asyncio.Task[None]] = set()

        async def handle(reader: asyncio.StreamReader, writer: Writer) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await _handle(served, reader, writer)
            finally:
                handlers.discard(task)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        served.port = server.sockets[0].getsockname()[1]
        box["served"], box["stop"] = served, asyncio.Event()
        ready.set()
        async with server:
            await box["stop"].wait()
        for task in list(handlers):  # connections the client left open
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield box["served"]
    loop.call_soon_threadsafe(box["stop"].set)
    thread.join(10)
    loop.close()


def _request(served: Served, path: str, method: str = "GET", **options: Any) -> bytes:
    return render_request(method, path, f"127.0.0.1:{served.port}", **options)


def _exchanges(served: Served, *requests: bytes, timeout: float = 5.0) -> tuple[Any, int]:
    """The answers (or the exception) of requests sent one after another on one connection,
    and how many times that connection was opened."""

    async def scenario() -> tuple[list[Any], int]:
        connection = Connection(*host_and_port(served.url))
        answers: list[Any] = []
        for data in requests:
            try:
                answers.append(await connection.request(data, timeout))
            except (WireError, TimeoutError) as error:
                answers.append(error)
        connection.close()
        return answers, connection.connects

    return asyncio.run(scenario())


def test_raw_client_reuses_one_connection_for_many_requests(served: Served) -> None:
    answers, connects = _exchanges(served, *[_request(served, "/ok")] * 5)
    assert [(a.status, a.body) for a in answers] == [(200, JSON_OK)] * 5
    assert answers[0].headers["content-type"] == "application/json"  # names lower-case
    assert connects == 1
    assert served.connections == 1
    assert len(served.requests) == 5


def test_raw_client_sends_the_rendered_method_path_and_headers(served: Served) -> None:
    pay = _request(served, "/ok", "POST", key="k-1", idempotency_key="lt-pay-1")
    query = _request(served, "/ok", key="k-2")
    answers, _ = _exchanges(served, pay, query)
    assert [a.status for a in answers] == [200, 200]
    (m1, p1, h1, b1), (m2, p2, h2, b2) = served.requests
    assert (m1, p1, b1, m2, p2, b2) == ("POST", "/ok", b"", "GET", "/ok", b"")
    assert h1["authorization"] == "Bearer k-1"
    assert h1["idempotency-key"] == "lt-pay-1"
    assert h1["content-length"] == "0"
    assert h1["host"] == f"127.0.0.1:{served.port}"
    assert h2["authorization"] == "Bearer k-2"
    assert "idempotency-key" not in h2
    assert "content-length" not in h2


def test_raw_client_sends_a_body_with_its_length(served: Served) -> None:
    body = b'{"amount": 100}'
    _exchanges(served, _request(served, "/ok", "POST", key="k", body=body))
    (_, _, headers, received) = served.requests[0]
    assert received == body
    assert headers["content-length"] == str(len(body))
    assert headers["content-type"] == "application/json"


def test_raw_client_reads_a_chunked_answer_and_keeps_the_connection(served: Served) -> None:
    answers, connects = _exchanges(
        served, _request(served, "/chunked"), _request(served, "/ok"), _request(served, "/chunked")
    )
    assert [(a.status, a.body) for a in answers] == [(200, JSON_OK)] * 3
    assert connects == served.connections == 1


def test_raw_client_reconnects_after_connection_close(served: Served) -> None:
    answers, connects = _exchanges(
        served, _request(served, "/close"), _request(served, "/ok"), _request(served, "/close")
    )
    assert [(a.status, a.body) for a in answers] == [(200, JSON_OK)] * 3
    assert connects == served.connections == 2


def test_raw_client_reads_a_body_that_ends_with_the_connection(served: Served) -> None:
    answers, connects = _exchanges(served, _request(served, "/until-eof"), _request(served, "/ok"))
    assert [(a.status, a.body) for a in answers] == [(200, JSON_OK)] * 2
    assert connects == 2


def test_raw_client_reconnects_when_the_server_dropped_the_idle_connection(
    served: Served,
) -> None:
    async def scenario() -> tuple[list[int], int]:
        connection = Connection(*host_and_port(served.url))
        first = await connection.request(_request(served, "/drop-when-idle"), 5)
        await asyncio.sleep(0.2)  # the server's FIN arrives while the connection is idle
        second = await connection.request(_request(served, "/ok"), 5)
        connection.close()
        return [first.status, second.status], connection.connects

    statuses, connects = asyncio.run(scenario())
    assert statuses == [200, 200]
    assert connects == 2


def test_server_closing_mid_answer_is_a_wire_error_and_the_next_request_reconnects(
    served: Served,
) -> None:
    answers, connects = _exchanges(served, _request(served, "/cut"), _request(served, "/ok"))
    assert isinstance(answers[0], WireError)
    assert answers[1].status == 200
    assert connects == 2


def test_an_answer_slower_than_the_timeout_raises_timeout_and_drops_the_connection(
    served: Served,
) -> None:
    ok, never = _request(served, "/ok"), _request(served, "/never")
    answers, connects = _exchanges(served, ok, ok, never, ok, never, timeout=0.3)
    assert [type(a) for a in answers[:2]] == [Response, Response]
    assert isinstance(answers[2], TimeoutError)  # a deadline later than the timer's first
    assert answers[3].status == 200
    assert isinstance(answers[4], TimeoutError)  # on the new connection too
    assert connects == 2


def test_a_refused_connection_is_a_wire_error(served: Served) -> None:
    async def scenario() -> Any:
        # A port that was free a moment ago: nothing listens on it.
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        try:
            return await Connection("127.0.0.1", port).request(_request(served, "/ok"), 5)
        except WireError as error:
            return error

    assert isinstance(asyncio.run(scenario()), WireError)


def test_only_plain_http_urls_are_accepted() -> None:
    assert host_and_port("http://127.0.0.1:8080") == ("127.0.0.1", 8080)
    with pytest.raises(ValueError, match="only http"):
        host_and_port("https://127.0.0.1:8443")


class _ListSink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, int, Any]] = []

    def put(self, item: Any) -> None:
        self.messages.append(item)


def _drive(served: Served, client: str, paths: list[str], timeout: float = 5.0) -> list[Record]:
    """The driver's hot path, one sender (so the requests share one connection in order), all
    items due at once: the records it hands to the parent."""
    items = [
        Item(n, "pay", f"route {path}", 0.0, 0.0, "POST", path, "key", f"idem-{n}")
        for n, path in enumerate(paths)
    ]
    sink = _ListSink()
    spec = WorkerSpec(0, served.url, items, time.monotonic(), 1, timeout, client)
    run_worker(spec, sink)
    kinds = [m[0] for m in sink.messages]
    assert kinds[-1] == "done", sink.messages
    assert isinstance(sink.messages[-1][2], float)  # the worker's own CPU seconds
    return sorted(
        (Record(*r) for m in sink.messages if m[0] == "records" for r in m[2]),
        key=lambda r: r.seq,
    )


@pytest.mark.parametrize("client", [RAW, HTTPX])
def test_the_hot_path_records_codes_and_shed_classes_with_either_client(
    served: Served, client: str
) -> None:
    paths = [
        "/ok", "/chunked", "/close", "/ok", "/refused", "/text-503", "/shed-by-header",
        "/shed-by-message", "/cut", "/ok",
    ]  # fmt: skip
    records = _drive(served, client, paths)
    assert [(r.status, r.code, r.shed_class) for r in records] == [
        (200, "ok", ""),
        (200, "ok", ""),
        (200, "ok", ""),
        (200, "ok", ""),
        (409, "insufficient_balance", ""),
        (503, "http_503", "route /text-503"),  # not JSON: the status, the route as the class
        (429, "rate_limited", "payments"),  # the class header
        (503, "overloaded", "queries"),  # paycell's message
        (0, TRANSPORT_ERROR, ""),  # closed mid-answer
        (200, "ok", ""),  # reconnected
    ]
    for r in records:
        assert r.send_at <= r.dispatched <= r.started <= r.done  # never sent early
    assert served.requests[0][2]["idempotency-key"] == "idem-0"


@pytest.mark.parametrize("client", [RAW, HTTPX])
def test_the_hot_path_records_a_timeout_and_gives_up_what_waited_too_long(
    served: Served, client: str
) -> None:
    records = _drive(served, client, ["/ok", "/never", "/ok"], timeout=0.5)
    assert [(r.status, r.code) for r in records] == [
        (200, "ok"),
        (0, TIMEOUT),
        (0, GAVE_UP),  # queued behind the timeout for longer than the timeout: never sent
    ]
    assert len(served.requests) == 2


def test_shed_class_prefers_a_class_header_then_the_message_then_the_route() -> None:
    assert shed_class({"x-priority-class": "reports"}, "; queries are shed", "r") == "reports"
    assert shed_class({}, "busy; queries are shed (retry)", "r") == "queries"
    assert shed_class({}, "busy", "GET /v1/wallet") == "GET /v1/wallet"
