"""A minimal HTTP/1.1 keep-alive client for the generator's hot path.

httpx costs a few hundred microseconds of CPU a request (its models, header objects, the
httpcore pool and its state machine); at 10,000 requests/s that would be more than the whole
machine. The load test only talks to its own server on loopback, over one persistent
connection per sender, and needs little of HTTP: this client writes request bytes rendered once
per item and reads back the status line, the headers and a `Content-Length` or chunked body.

- `render_request`: the bytes of one request (method, path, Host, Authorization,
  Idempotency-Key, and Content-Length with a body when there is one).
- `Connection.request`: send them and read the answer within a timeout. The connection is
  (re)opened when needed: first use, after `Connection: close`, a body read to EOF, a timeout,
  a broken connection, or a peer that closed the idle connection (uvicorn closes idle
  keep-alive connections after 5 s). A timeout raises `TimeoutError`; anything else that
  breaks the exchange raises `WireError`. Requests are never retried here.

It uses asyncio's streams (about 25 to 30 us of CPU a request in all, most of it the kernel's
loopback send); a hand-written `asyncio.Protocol` would save a little more.
"""

import asyncio
from typing import Final, NamedTuple
from urllib.parse import urlsplit

HEAD_END: Final = b"\r\n\r\n"
CRLF: Final = b"\r\n"
# Answers that never have a body (RFC 9110 6.4.1); we never send HEAD.
NO_BODY: Final = frozenset((204, 304))
READ_LIMIT: Final = 1 << 20  # the longest head or chunk-size line we accept


class WireError(Exception):
    """The exchange broke: refused or reset connection, closed mid-answer, or an answer that
    is not HTTP/1.x."""


class Response(NamedTuple):
    status: int
    headers: dict[str, str]  # names lower-case; a repeated header keeps its last value
    body: bytes


def host_and_port(url: str) -> tuple[str, int]:
    """`http://127.0.0.1:8080` -> ("127.0.0.1", 8080). Only plain http."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http://host:port URLs are supported, not {url!r}")
    return parts.hostname, parts.port or 80


def render_request(
    method: str,
    path: str,
    host: str,
    *,
    key: str = "",
    idempotency_key: str = "",
    body: bytes = b"",
    content_type: str = "application/json",
) -> bytes:
    """The bytes of one request. Content-Length goes with any method that may carry a body."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    if idempotency_key:
        lines.append(f"Idempotency-Key: {idempotency_key}")
    if body:
        lines.append(f"Content-Type: {content_type}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _parse_head(head: bytes) -> tuple[int, bool, dict[str, str]]:
    """Status, whether the server speaks HTTP/1.0, and the headers of an answer's head."""
    lines = head[: -len(HEAD_END)].split(CRLF)
    version, _, rest = lines[0].partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(rest) < 3 or not rest[:3].isdigit():
        raise WireError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise WireError(f"malformed header line: {line[:80]!r}")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return int(rest[:3]), version == b"HTTP/1.0", headers


class Connection:
    """One keep-alive connection to host:port, used by one sender at a time (requests on it
    are sequential: no pipelining).

    The timeout costs next to nothing per request: instead of a timer per request
    (`asyncio.timeout` is about a third of this client's CPU), each request only sets its
    deadline, and one timer per connection, armed at the deadline it saw, re-arms itself at the
    current deadline or, once a request is past it, aborts the connection (its read then fails
    and `request` raises TimeoutError). With requests much shorter than the timeout, the
    timer fires about once per timeout, not once per request."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.connects = 0  # how many times a connection was opened (tests, diagnostics)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadline = 0.0  # of the request in progress (loop time); 0: none
        self._timer: asyncio.TimerHandle | None = None
        self._timed_out = False

    async def request(self, data: bytes, timeout: float) -> Response:
        """Send one rendered request and read its answer, within `timeout` seconds (connect
        included). Raises TimeoutError or WireError; the connection is then dropped."""
        try:
            reader, writer, loop = self._reader, self._writer, self._loop
            if reader is None or writer is None or loop is None or self._stale(reader, writer):
                reader, writer, loop = await self._connect(timeout)
            self._deadline = loop.time() + timeout
            if self._timer is None:
                self._timer = loop.call_at(self._deadline, self._check_deadline)
            writer.write(data)
            return await self._read_response(reader)
        except WireError:
            self.close()
            raise
        except TimeoutError:  # before OSError, its base class
            self.close()
            raise
        except (OSError, EOFError, asyncio.LimitOverrunError, ValueError) as error:
            timed_out = self._timed_out
            self.close()
            if timed_out:
                raise TimeoutError(f"no answer within {timeout:g} s") from None
            raise WireError(f"{type(error).__name__}: {error}") from error
        except BaseException:  # cancelled mid-exchange: the connection's state is unknown
            self.close()
            raise
        finally:
            self._deadline = 0.0

    def _stale(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """The server closed the connection while it sat idle (uvicorn does after 5 s), or a
        timeout aborted it."""
        if reader.at_eof() or writer.is_closing():
            self.close()
            return True
        return False

    async def _connect(
        self, timeout: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.AbstractEventLoop]:
        async with asyncio.timeout(timeout):  # rare: a timer of its own is fine here
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=READ_LIMIT)
        self.connects += 1
        loop = asyncio.get_running_loop()
        self._reader, self._writer, self._loop = reader, writer, loop
        return reader, writer, loop

    def _check_deadline(self) -> None:
        self._timer = None
        if not self._deadline or self._loop is None or self._writer is None:
            return  # idle: the next request arms the timer again
        if self._loop.time() >= self._deadline:
            self._timed_out = True
            self._writer.transport.abort()  # the pending read fails at once
        else:
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)

    async def _read_response(self, reader: asyncio.StreamReader) -> Response:
        while True:
            status, http10, headers = _parse_head(await reader.readuntil(HEAD_END))
            if status >= 200 or status == 101:
                break  # an interim 1xx answer (100 Continue, 103) is followed by the real one
        connection = headers.get("connection", "").lower()
        close = "close" in connection or (http10 and "keep-alive" not in connection)
        if status < 200 or status in NO_BODY:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            body = await reader.readexactly(length) if length else b""
        else:
            body = await reader.read()  # delimited by the end of the connection
            close = True
        if close:
            self.close()
        return Response(status, headers, body)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._timer is not None:
            self._timer.cancel()
        self._reader = self._writer = self._timer = None
        self._timed_out = False


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(CRLF)
        size = int(size_line.split(b";", 1)[0].strip(), 16)  # chunk extensions ignored
        if size == 0:
            while await reader.readuntil(CRLF) != CRLF:  # trailers, up to the empty line
                pass
            return b"".join(parts)
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != CRLF:
            raise WireError("a chunk does not end with CRLF")
        parts.append(chunk[:-2])
