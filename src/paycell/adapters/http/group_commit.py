"""Group commit in the server: concurrent single payments share one unit of work and one commit.

`POST /v1/orders/{order_id}/pay` requests do not each take the platform's lock in a worker
thread. The endpoint puts the request on a queue and awaits its answer; ONE worker thread
takes the platform's lock once per group, then drains whatever is waiting (at most
`size_max` requests) and hands the group to the app, which authenticates each request, answers
idempotent replays, and pays every remaining order with one platform command
(`PlatformService.run_order_commands`): one ledger batch, one balance update per account, one
commit for the group, each request's idempotency record in the same commit.

Bounded wait, natural batching: the worker never waits for company. With `linger_seconds` 0
(the default) a lone request is paid at once, in a group of one; under load, the requests that
arrive while a group is being committed (or while the lock is busy with other work) form the
next group, so groups grow with the load and a commit is shared by more payments.

Every answer is the one the request would have had alone. If a group fails with an unexpected
exception (it rolled back whole), its unanswered requests are run again one by one on the
ordinary path, so only the faulty one answers 500.

Bounded queue: admission control (admission.py) admits at most its payments in-flight limit
before a request reaches this queue, so the queue never holds more than that; `queue_depth_max`
is a second bound for an app without it, beyond which a request is answered 503 `overloaded`.
The worker thread ends after `IDLE_SECONDS` without work (the next request starts another), so
an app that is dropped without being closed leaves no thread behind for long; `close()` (the
app's lifespan shutdown) stops it and answers every request still queued.
"""

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from paycell.adapters.http.errors import OVERLOADED, error_body
from paycell.service.platform import GROUP_PAYMENTS_MAX

# 256 requests: a group's platform work (~0.1 ms a payment once batched) stays a few tens of
# milliseconds, well inside the 50 ms p99 target, while a commit is shared by hundreds.
GROUP_SIZE_MAX_DEFAULT: Final = 256
# No lingering by default: a lone request answers as fast as without group commit.
GROUP_LINGER_SECONDS_DEFAULT: Final = 0.0
# A linger beyond 50 ms would spend the whole latency target waiting for company.
GROUP_LINGER_SECONDS_MAX: Final = 0.05
# Far above admission's payments in-flight limit (32), which bounds the queue in practice.
QUEUE_DEPTH_MAX_DEFAULT: Final = 4_096
# The worker thread ends after this long without a request; the next request starts another.
IDLE_SECONDS: Final = 5.0
# How long `close()` lets the worker finish the requests already queued.
CLOSE_WAIT_SECONDS: Final = 10.0
# What a request refused because the queue is full or the server is stopping is told.
RETRY_AFTER_SECONDS: Final = 1

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GroupCommitConfig:
    # Requests paid in one group (one unit of work, one commit).
    size_max: int = GROUP_SIZE_MAX_DEFAULT
    # How long the worker may wait for more requests once one is queued; 0: never.
    linger_seconds: float = GROUP_LINGER_SECONDS_DEFAULT
    # Requests queued at once; one more is answered 503 overloaded.
    queue_depth_max: int = QUEUE_DEPTH_MAX_DEFAULT

    def __post_init__(self) -> None:
        if not 1 <= self.size_max <= GROUP_PAYMENTS_MAX:
            raise ValueError(f"the group size must be between 1 and {GROUP_PAYMENTS_MAX}")
        if not 0 <= self.linger_seconds <= GROUP_LINGER_SECONDS_MAX:
            raise ValueError(
                f"the group linger must be between 0 and {GROUP_LINGER_SECONDS_MAX * 1000:g} ms"
            )
        if self.queue_depth_max < 1:
            raise ValueError("the group queue depth must be at least 1")


DEFAULT_GROUP_COMMIT: Final = GroupCommitConfig()


class Pending:
    """One queued request, answered from the worker thread through its own event loop."""

    __slots__ = ("done", "future", "key", "loop", "raw", "request", "target")

    def __init__(self, request: Request, raw: bytes, key: str | None, target: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Response] = self.loop.create_future()
        self.request = request
        self.raw = raw
        self.key = key
        self.target = target
        self.done = False

    def answer(self, response: Response) -> None:
        self._deliver(response, None)

    def fail(self, error: BaseException) -> None:
        """Answer with an exception: the endpoint raises it, and the app's error handlers
        render it exactly as they would for the request run alone."""
        self._deliver(None, error)

    def _deliver(self, response: Response | None, error: BaseException | None) -> None:
        self.done = True
        # A RuntimeError means the request's event loop is closed: nobody is waiting for this
        # answer any more, and the other requests of the group must still get theirs.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._resolve, response, error)

    def _resolve(self, response: Response | None, error: BaseException | None) -> None:
        # A request whose client went away was cancelled: nobody is waiting for the answer.
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            assert response is not None
            self.future.set_result(response)


def _refusal(message: str) -> Response:
    return Response(
        json.dumps(error_body(OVERLOADED, message)),
        503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        media_type="application/json",
    )


RunGroup = Callable[[Sequence[Pending]], None]
RunOne = Callable[[Pending], Response]
GroupObserver = Callable[[int], None]


class GroupCommitter:
    """The queue and its worker. `run_group(items)` is called with the platform's lock held
    and answers the items it can; `run_one(item)` is the ordinary, ungrouped path, used for
    the rest when `run_group` fails. `observe(size)` counts each group as it starts (before
    any of its answers, so a client that got one sees the group counted) and
    `observe_fallback()` each group that failed."""

    def __init__(
        self,
        lock: AbstractContextManager[Any],
        run_group: RunGroup,
        run_one: RunOne,
        config: GroupCommitConfig = DEFAULT_GROUP_COMMIT,
        observe: GroupObserver | None = None,
        observe_fallback: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._lock = lock
        self._run_group = run_group
        self._run_one = run_one
        self._observe = observe
        self._observe_fallback = observe_fallback
        self._queue: deque[Pending] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._worker: threading.Thread | None = None
        self._closed = False

    def depth(self) -> int:
        """Requests waiting for a group."""
        return len(self._queue)

    async def submit(self, request: Request, raw: bytes, key: str | None, target: str) -> Response:
        item = Pending(request, raw, key, target)
        with self._ready:
            if self._closed:
                return _refusal("the server is stopping; retry on another server or later")
            if len(self._queue) >= self.config.queue_depth_max:
                return _refusal("the server is saturated; payments are shed, retry in a second")
            self._queue.append(item)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="paycell-group-commit", daemon=True
                )
                self._worker.start()
            self._ready.notify()
        return await item.future

    def close(self, timeout_seconds: float = CLOSE_WAIT_SECONDS) -> None:
        """Stop taking requests, let the worker finish those queued, then answer any left (a
        worker stuck behind the lock past the timeout) with 503."""
        with self._ready:
            self._closed = True
            worker = self._worker
            self._ready.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout_seconds)
        with self._ready:
            left = list(self._queue)
            self._queue.clear()
        for item in left:
            item.answer(_refusal("the server stopped before this payment was made; retry"))

    def _next_group(self) -> bool:
        """Wait for work; False when the worker should end (closed and drained, or idle)."""
        with self._ready:
            while not self._queue:
                if self._closed or (not self._ready.wait(IDLE_SECONDS) and not self._queue):
                    self._worker = None
                    return False
            if self.config.linger_seconds <= 0:
                return True
            deadline = time.monotonic() + self.config.linger_seconds
            while len(self._queue) < self.config.size_max and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._ready.wait(remaining)
            return True

    def _work(self) -> None:
        try:
            while self._next_group():
                # The group is drained only once the lock is held: requests that arrive while
                # the lock is busy (the previous group's commit, background jobs) join it.
                with self._lock:
                    with self._ready:
                        count = min(len(self._queue), self.config.size_max)
                        group = [self._queue.popleft() for _ in range(count)]
                    if group:
                        self._commit(group)
        except BaseException:
            # A bug in the worker itself: refuse what is queued rather than leave it waiting;
            # the next request starts a new worker.
            _log.exception("the group commit worker failed")
            with self._ready:
                left = list(self._queue)
                self._queue.clear()
                self._worker = None
            for item in left:
                item.answer(_refusal("the server failed to take this payment; retry"))
            raise

    def _commit(self, group: list[Pending]) -> None:
        if self._observe is not None:
            self._observe(len(group))
        try:
            self._run_group(group)
        except Exception:
            # The group's unit of work rolled back whole: every request still unanswered runs
            # alone, so only the one at fault answers 500 and the others as they would alone.
            _log.exception("a payment group failed; running its requests one by one")
            if self._observe_fallback is not None:
                self._observe_fallback()
            for item in group:
                if not item.done:
                    self._answer_alone(item)
        finally:
            for item in group:
                if not item.done:  # never leave a request waiting, whatever happened
                    item.fail(RuntimeError("the payment group ended without an answer"))

    def _answer_alone(self, item: Pending) -> None:
        try:
            response = self._run_one(item)
        except Exception as error:
            item.fail(error)
        else:
            item.answer(response)

    def answer_alone(self, items: Sequence[Pending]) -> None:
        """Run requests on the ordinary path (for `run_group`: the ones a group cannot take)."""
        for item in items:
            self._answer_alone(item)
