"""The open-loop generator: each request goes out at its planned time whatever the answers
so far (a slow server does not slow the arrivals), over keep-alive connections
(httpx, asyncio), at most `concurrency` in flight per process. Several processes split the
plan round-robin when one core cannot keep up.

Every request becomes a `Record`; workers hand them to the parent in batches through a queue
(a thread's queue, or a multiprocessing queue), so the parent can show live progress.
"""

import asyncio
import json
import multiprocessing
import queue
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol

import httpx

FLUSH_SECONDS: Final = 0.25
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


# paycell's own 503 says which class it shed: "...; queries are shed (...)".
SHED_MESSAGE: Final = re.compile(r";\s*(\w+) are shed")


def _code(response: httpx.Response) -> tuple[str, str]:
    """The error code ("ok" for 2xx) and the error message."""
    if 200 <= response.status_code < 300:
        return "ok", ""
    try:
        error = json.loads(response.content)["error"]
        return str(error["code"]), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError):
        return f"http_{response.status_code}", ""


def shed_class(response: httpx.Response, message: str, route: str) -> str:
    """The class a 429/503 was shed from: a class header, paycell's message, else the route."""
    for header in CLASS_HEADERS:
        if header in response.headers:
            return response.headers[header]
    said = SHED_MESSAGE.search(message)
    return said.group(1) if said else route


async def _drive(spec: WorkerSpec, sink: Sink) -> None:
    """The scheduler puts each item on a queue at its time; `concurrency` senders take them
    off (asyncio.Queue is O(1); thousands of tasks parked on a Semaphore are not: its
    `locked()` scans every waiter). A request that waited in the queue longer than the
    request timeout is given up unsent, as a real client would, so a run ends in bounded
    time however slow the server."""
    waiting: asyncio.Queue[tuple[Item, float] | None] = asyncio.Queue()
    batch: list[Record] = []
    # One keep-alive connection per sender, each its own client: httpcore's pool scans all its
    # connections on every request, which costs more CPU than the request itself at 64.
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [
        httpx.AsyncClient(base_url=spec.url, limits=one, timeout=spec.timeout_seconds)
        for _ in range(spec.concurrency)
    ]
    try:

        async def send(client: httpx.AsyncClient, item: Item, dispatched: float) -> None:
            started = time.monotonic()
            shed = ""
            if started - dispatched > spec.timeout_seconds:
                status, code = 0, GAVE_UP
            else:
                headers = {"Authorization": f"Bearer {item.key}"}
                if item.idempotency_key:
                    headers["Idempotency-Key"] = item.idempotency_key
                try:
                    response = await client.request(item.method, item.path, headers=headers)
                    status = response.status_code
                    code, message = _code(response)
                    if status in (429, 503):
                        shed = shed_class(response, message, item.route)
                except httpx.TimeoutException:
                    status, code = 0, TIMEOUT
                except httpx.TransportError:
                    status, code = 0, TRANSPORT_ERROR
            done = time.monotonic()
            batch.append(
                Record(
                    item.seq, item.kind, item.route, item.arrival, item.send_at,
                    dispatched - spec.start, started - spec.start, done - spec.start,
                    status, code, shed,
                )
            )  # fmt: skip

        async def sender(client: httpx.AsyncClient) -> None:
            while (job := await waiting.get()) is not None:
                await send(client, *job)

        async def flusher() -> None:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                if batch:
                    sink.put(("records", spec.worker, batch[:]))
                    batch.clear()

        flushing = asyncio.create_task(flusher())
        senders = [asyncio.create_task(sender(client)) for client in clients]
        for item in spec.items:
            delay = spec.start + item.send_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            waiting.put_nowait((item, time.monotonic()))
        for _ in senders:
            waiting.put_nowait(None)
        await asyncio.gather(*senders)
        flushing.cancel()
    finally:
        for client in clients:
            await client.aclose()
    if batch:
        sink.put(("records", spec.worker, batch[:]))
    sink.put(("done", spec.worker, None))


def run_worker(spec: WorkerSpec, sink: Sink) -> None:
    try:
        asyncio.run(_drive(spec, sink))
    except BaseException as error:  # reported to the parent, which fails the run
        sink.put(("failed", spec.worker, repr(error)))


class Workers:
    """The running workers: threads for one (no start-up cost), processes for several."""

    def __init__(self, specs: list[WorkerSpec], processes: bool) -> None:
        self.pending = len(specs)
        self.failures: list[str] = []
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
        return records

    def join(self) -> None:
        for handle in self._handles:
            handle.join(timeout=30)
