"""The open-loop generator: each request goes out at its planned time whatever the answers
so far (a slow server does not slow the arrivals), over one keep-alive connection per sender
(`wire.py`, a minimal asyncio HTTP/1.1 client; httpx can be chosen to compare), at most
`concurrency` in flight per process. Several processes split the plan round-robin when one
core cannot keep up.

Every request becomes a `Record`; workers hand them to the parent in batches through a queue
(a thread's queue, or a multiprocessing queue), so the parent can show live progress.
"""

import asyncio
import importlib
import json
import multiprocessing
import queue
import re
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol
from urllib.parse import urlsplit

import httpx

from paycell.adapters.loadtest.wire import Connection, WireError, host_and_port, render_request

FLUSH_SECONDS: Final = 0.25
SLICE_SECONDS: Final = 0.001  # the scheduler releases everything due, at most this often
RAW: Final = "raw"
HTTPX: Final = "httpx"
CLIENTS: Final = (RAW, HTTPX)
# Headers a server may use to say which admission class a request was in; the route stands in
# for the class when none is present.
CLASS_HEADERS: Final = (
    "x-paycell-class",
    "x-priority-class",
    "x-request-class",
    "x-admission-class",
)

TIMEOUT: Final = "timeout"
TRANSPORT_ERROR: Final = "transport_error"
# Waited in the generator's queue longer than the request timeout: given up, never sent.
GAVE_UP: Final = "gave_up_unsent"


class Item(NamedTuple):
    seq: int
    kind: str
    route: str  # the route class: method and path template
    arrival: float
    send_at: float
    method: str
    path: str
    key: str  # the caller's API key
    idempotency_key: str


class Record(NamedTuple):
    seq: int
    kind: str
    route: str
    arrival: float
    send_at: float
    dispatched: float  # the generator's own lag: dispatched - send_at
    started: float  # a sender was free (started - dispatched: queued in the generator)
    done: float
    status: int  # 0: no HTTP answer (timeout or transport error)
    code: str  # "ok" for 2xx, else the error code (or timeout / transport_error)
    shed_class: str  # for 429/503: the server's class header, else the route


class Sink(Protocol):
    def put(self, item: Any) -> None: ...


@dataclass(frozen=True)
class WorkerSpec:
    worker: int
    url: str
    items: list[Item]
    start: float  # time.monotonic() of t = 0 (CLOCK_MONOTONIC: the same in every process)
    concurrency: int
    timeout_seconds: float
    client: str = "raw"  # RAW (wire.py) or HTTPX (the former path, to compare)
    event_loop: str = "auto"  # "auto": uvloop when importable; "asyncio": never uvloop


# paycell's own 503 says which class it shed: "...; queries are shed (...)".
SHED_MESSAGE: Final = re.compile(r";\s*(\w+) are shed")


def error_code(status: int, body: bytes) -> tuple[str, str]:
    """The error code ("ok" for 2xx) and the error message. The body is parsed only here, for
    an error answer; a body that is not paycell's JSON error gives `http_<status>`."""
    if 200 <= status < 300:
        return "ok", ""
    try:
        error = json.loads(body)["error"]
        return str(error["code"]), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError):
        return f"http_{status}", ""


def shed_class(headers: Mapping[str, str], message: str, route: str) -> str:
    """The class a 429/503 was shed from: a class header, paycell's message, else the route.
    `headers`: lower-case names (httpx's headers are case-insensitive)."""
    for header in CLASS_HEADERS:
        if header in headers:
            return headers[header]
    said = SHED_MESSAGE.search(message)
    return said.group(1) if said else route


# One exchange: an item out, (status, code, shed class) back; never raises for HTTP trouble.
Exchange = Callable[[Item], Awaitable[tuple[int, str, str]]]


def _outcome(
    status: int, body: bytes, headers: Mapping[str, str], route: str
) -> tuple[int, str, str]:
    if 200 <= status < 300:
        return status, "ok", ""
    code, message = error_code(status, body)
    return status, code, shed_class(headers, message, route) if status in (429, 503) else ""


class _Raw:
    """The hot path: one `wire.Connection` a sender, request bytes rendered per item."""

    def __init__(self, spec: "WorkerSpec") -> None:
        self.host, self.port = host_and_port(spec.url)
        self.host_header = urlsplit(spec.url).netloc
        self.timeout = spec.timeout_seconds
        self.connections = [Connection(self.host, self.port) for _ in range(spec.concurrency)]

    def exchanges(self) -> list[Exchange]:
        return [self._exchange_on(connection) for connection in self.connections]

    def _exchange_on(self, connection: Connection) -> Exchange:
        host, timeout = self.host_header, self.timeout

        async def exchange(item: Item) -> tuple[int, str, str]:
            data = render_request(
                item.method, item.path, host, key=item.key, idempotency_key=item.idempotency_key
            )
            try:
                response = await connection.request(data, timeout)
            except TimeoutError:
                return 0, TIMEOUT, ""
            except WireError:
                return 0, TRANSPORT_ERROR, ""
            return _outcome(response.status, response.body, response.headers, item.route)

        return exchange

    async def aclose(self) -> None:
        for connection in self.connections:
            connection.close()


class _Httpx:
    """The former path, kept to compare against: one httpx.AsyncClient a sender (httpcore's
    pool scans all its connections on every request, which costs more CPU than the request
    itself at 64 connections in one client)."""

    def __init__(self, spec: "WorkerSpec") -> None:
        one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self.clients = [
            httpx.AsyncClient(base_url=spec.url, limits=one, timeout=spec.timeout_seconds)
            for _ in range(spec.concurrency)
        ]

    def exchanges(self) -> list[Exchange]:
        return [self._exchange_on(client) for client in self.clients]

    @staticmethod
    def _exchange_on(client: httpx.AsyncClient) -> Exchange:
        async def exchange(item: Item) -> tuple[int, str, str]:
            headers = {"Authorization": f"Bearer {item.key}"}
            if item.idempotency_key:
                headers["Idempotency-Key"] = item.idempotency_key
            try:
                response = await client.request(item.method, item.path, headers=headers)
            except httpx.TimeoutException:
                return 0, TIMEOUT, ""
            except httpx.TransportError:
                return 0, TRANSPORT_ERROR, ""
            return _outcome(response.status_code, response.content, response.headers, item.route)

        return exchange

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


async def _drive(spec: WorkerSpec, sink: Sink) -> None:
    """The scheduler puts the items that are due on a queue, a time slice at a time;
    `concurrency` senders take them off (asyncio.Queue is O(1); thousands of tasks parked on a
    Semaphore are not: its `locked()` scans every waiter). A request that waited in the queue
    longer than the request timeout is given up unsent, as a real client would, so a run ends
    in bounded time however slow the server."""
    waiting: asyncio.Queue[tuple[Item, float] | None] = asyncio.Queue()
    batch: list[Record] = []
    base, timeout = spec.start, spec.timeout_seconds
    clients = _Raw(spec) if spec.client == RAW else _Httpx(spec)
    try:

        async def sender(exchange: Exchange) -> None:
            monotonic, append = time.monotonic, batch.append
            while (job := await waiting.get()) is not None:
                item, dispatched = job
                started = monotonic()
                if started - dispatched > timeout:
                    status, code, shed = 0, GAVE_UP, ""
                else:
                    status, code, shed = await exchange(item)
                append(
                    Record(
                        item.seq, item.kind, item.route, item.arrival, item.send_at,
                        dispatched - base, started - base, monotonic() - base,
                        status, code, shed,
                    )
                )  # fmt: skip

        async def flusher() -> None:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                if batch:
                    sink.put(("records", spec.worker, batch[:]))
                    batch.clear()

        flushing = asyncio.create_task(flusher())
        senders = [asyncio.create_task(sender(exchange)) for exchange in clients.exchanges()]
        await _schedule(spec.items, base, waiting)
        for _ in senders:
            waiting.put_nowait(None)
        await asyncio.gather(*senders)
        flushing.cancel()
    finally:
        await clients.aclose()
    if batch:
        sink.put(("records", spec.worker, batch[:]))


async def _schedule(
    items: list[Item], base: float, waiting: "asyncio.Queue[tuple[Item, float] | None]"
) -> None:
    """Put each item on the queue once it is due (never early), every item due at a wake-up
    at once: at 10,000 arrivals/s one sleep per item would cost more than the requests. The
    scheduler wakes at most once per SLICE_SECONDS; an item's lag is at most about that, plus
    however late the event loop wakes it."""
    monotonic, put = time.monotonic, waiting.put_nowait
    i, count = 0, len(items)
    while i < count:
        now = monotonic()
        due = now - base
        wait = items[i].send_at - due
        if wait > 0:
            await asyncio.sleep(max(wait, SLICE_SECONDS))
            continue
        while i < count and items[i].send_at <= due:
            put((items[i], now))
            i += 1
        await asyncio.sleep(0)  # let the senders start on this slice


def _event_loop_runner(choice: str = "auto") -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop.run when uvloop is importable (not on Windows) and not declined, else
    asyncio.run."""
    if choice == "asyncio":
        return asyncio.run
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.run
    runner: Callable[[Coroutine[Any, Any, None]], None] | None = getattr(uvloop, "run", None)
    return runner or asyncio.run


def event_loop_name(choice: str = "auto") -> str:
    return "asyncio" if _event_loop_runner(choice) is asyncio.run else "uvloop"


def run_worker(spec: WorkerSpec, sink: Sink) -> None:
    # In a process of its own the worker is the process (its CPU includes the thread that
    # pickles records into the queue); as a thread it shares the process with the parent.
    in_process = threading.current_thread() is threading.main_thread()
    clock = time.process_time if in_process else time.thread_time
    cpu = clock()
    try:
        _event_loop_runner(spec.event_loop)(_drive(spec, sink))
    except BaseException as error:  # reported to the parent, which fails the run
        sink.put(("failed", spec.worker, repr(error)))
        return
    sink.put(("done", spec.worker, clock() - cpu))


class Workers:
    """The running workers: threads for one (no start-up cost), processes for several."""

    def __init__(self, specs: list[WorkerSpec], processes: bool) -> None:
        self.pending = len(specs)
        self.failures: list[str] = []
        self.cpu_seconds: dict[int, float] = {}  # each finished worker's own CPU time
        self._handles: list[threading.Thread | multiprocessing.process.BaseProcess] = []
        self.inbox: Any
        if processes:
            context = multiprocessing.get_context("spawn")
            self.inbox = context.Queue()
            for spec in specs:
                process = context.Process(target=run_worker, args=(spec, self.inbox), daemon=True)
                self._handles.append(process)
        else:
            self.inbox = queue.Queue()
            for spec in specs:
                thread = threading.Thread(target=run_worker, args=(spec, self.inbox), daemon=True)
                self._handles.append(thread)
        for handle in self._handles:
            handle.start()

    def poll(self, timeout: float) -> list[Record]:
        """Records that arrived within `timeout` seconds (fewer if all workers are done)."""
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                kind, worker, payload = self.inbox.get(timeout=remaining)
            except queue.Empty:
                break
            if kind == "records":
                records.extend(Record(*r) for r in payload)
            else:
                self.pending -= 1
                if kind == "failed":
                    self.failures.append(f"worker {worker}: {payload}")
                else:
                    self.cpu_seconds[worker] = payload
        return records

    def join(self) -> None:
        for handle in self._handles:
            handle.join(timeout=30)
