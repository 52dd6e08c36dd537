"""`paycell serve`: the REST API under uvicorn, plus the background jobs.

One process holds one platform (one database connection); the HTTP handlers and the
background thread share it under one lock. The background thread runs the scheduler (unpaid
orders close, escrow auto-confirms, trades finish, pending transfers expire) and lets the
simulated bank answer its instructions, once a second; a second thread, on its own
connection, delivers webhooks (signed, retried on Alipay's schedule). Several servers on one
database are safe: every scheduled change is its own command and applies once.

`--workers N` runs N such processes behind one port, for a machine with more than one core:
one process's HTTP handling, platform and ledger work share one core's worth of GIL. A
supervisor process reserves the port, starts the workers (the `spawn` start method: nothing
of the supervisor's state is copied into them) and starts a worker again if it dies. Each
worker listens on the port with SO_REUSEPORT, so the kernel spreads new connections over them.
What the workers share lives in a run directory the supervisor makes and removes:
- the degradation switches (a mapped file: a switch set through any worker holds in all);
- the per-key rate limits (a mapped table, so N workers do not allow N times the rate);
- each worker's metrics, published every second, so a scrape of any worker counts them all.
Worker 0 alone runs the scheduler and the webhook and notify_url delivery; every worker takes
the answers of its own simulated bank (the bank lives in the process that instructed it).
Payments go through each worker's own group commit; SQLite writers take turns on the
database's lock file (adapters/storage/sqlite_writer_queue.py).
"""

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import IO, Final

import uvicorn

from paycell.adapters.alipay.gateway import AlipayGateway
from paycell.adapters.alipay.notify import AlipayNotifier, HttpNotifySender
from paycell.adapters.alipay.store import GatewayStore
from paycell.adapters.http import switches as sw
from paycell.adapters.http.admission import RateLimiter, create_rate_table
from paycell.adapters.http.app import create_app
from paycell.adapters.http.group_commit import DEFAULT_GROUP_COMMIT, GroupCommitConfig
from paycell.adapters.http.logging_setup import configure_json_logging
from paycell.adapters.http.metrics import Metrics, MetricsBoard
from paycell.adapters.storage.platform_factory import open_platform_store
from paycell.adapters.webhooks.dispatcher import DEFAULT_BATCH, WebhookDispatcher
from paycell.adapters.webhooks.sender import HttpWebhookSender
from paycell.platform import Platform
from paycell.service.ledger_service import LedgerService
from paycell.service.platform import PlatformConfig
from paycell.service.webhooks import WebhookService

BACKGROUND_INTERVAL_SECONDS: Final = 1.0
# Far more processes than any machine this runs on has cores; a typo is not a fork bomb.
WORKERS_MAX: Final = 64
# How often a worker publishes its metrics for the others' scrapes.
METRICS_PUBLISH_SECONDS: Final = 1.0
# A worker that dies this soon after it started, this many times in a row, is failing at
# startup; when every worker is, nothing serves, and the server stops (exit status 1) rather
# than start crashing workers forever.
WORKER_EARLY_DEATH_SECONDS: Final = 10.0
WORKER_EARLY_DEATHS_MAX: Final = 3
# How long stopping waits for the workers to finish their requests before it kills them.
WORKER_STOP_SECONDS: Final = 30.0
# How long a worker that died soon after it started waits before it is started again: the
# first time at once, then doubling (a database that cannot be opened is not retried in a
# tight loop).
WORKER_RESTART_DELAY_SECONDS_MAX: Final = 30.0
_PR_SET_PDEATHSIG: Final = 1
SWITCHES_FILE: Final = "switches"
RATE_TABLE_FILE: Final = "rate-limits"

_log = logging.getLogger(__name__)


def _background_jobs(
    platform: Platform,
    lock: threading.RLock,
    stop: threading.Event,
    switches: sw.Switches,
    scheduler: bool,
) -> None:
    """Once a second: the scheduler (if `scheduler`), then the simulated bank's answers to
    the instructions this process gave it. Every worker takes its own bank's answers: the
    bank lives in the process that instructed it (and signs with its own key)."""
    while not stop.wait(BACKGROUND_INTERVAL_SECONDS):
        try:
            with lock:
                # The `scheduler` switch pauses the scheduler; the bank's answers (money
                # already moving) are always taken.
                if scheduler and switches.on(sw.SCHEDULER):
                    platform.run_scheduler()
                platform.deliver_bank_callbacks()
        except Exception:  # a failed pass is logged and retried next second, never fatal
            _log.exception("background jobs failed; retrying in a second")
    # Stopping: the instructions of the last second still get their answers, so no top-up or
    # withdrawal is left pending by a restart (the bank lives in this process).
    try:
        with lock:
            platform.deliver_bank_callbacks()
    except Exception:
        _log.exception("the bank's last answers failed")


def _while_switched_on(
    switches: sw.Switches, name: str, step: Callable[[], object], what: str, stop: threading.Event
) -> None:
    """Run `step` once a second while the switch is on; skip (deferring the work) while off."""
    while not stop.wait(BACKGROUND_INTERVAL_SECONDS):
        if not switches.on(name):
            continue
        try:
            step()
        except Exception:  # a failed pass is logged and retried next second, never fatal
            _log.exception("%s failed; retrying in a second", what)


def _drain(
    dispatcher: WebhookDispatcher, switches: sw.Switches, stop: threading.Event
) -> Callable[[], None]:
    """One pass of the dispatcher: batches back to back while they come full."""

    def step() -> None:
        while (
            dispatcher.deliver_due(DEFAULT_BATCH).claimed >= DEFAULT_BATCH
            and switches.on(sw.WEBHOOKS)
            and not stop.is_set()
        ):
            pass

    return step


# The cyclic collector's thresholds while serving (Python's default: 700, 10, 10). See
# _tune_garbage_collection.
SERVING_GC_THRESHOLDS: Final = (20_000, 2, 4)


def _tune_garbage_collection() -> None:
    """Keep the cyclic collector off the hot path.

    - Move everything startup built (modules, the app, the platform) out of its reach: it
      lives as long as the server, yet every full collection walked it again, tens of
      milliseconds each with the GIL held, stalling the event loop and the group worker
      alike. Single payments ran about a fifth faster with it frozen.
    - Collect the young generation after 20,000 net allocations, not 700. Each connection and
      each request in flight keeps some 80 container objects alive (its protocol, transport,
      coroutine frames, futures). With 512 requests in flight that is some 40,000 objects, and
      every collection of the older generations walked them again. At 700, collections took
      14% of the server's time under a deep queue, and payments fell to 75 to 80% of their rate
      at 64 connections; at 20,000 they take under 1% (docs/performance.md). Reference
      counting still frees almost everything requests allocate.
    - Keep the older generations close behind: a middle collection every 2 young ones, an
      old one every 4 middle ones (Python's: 10 and 10). Garbage in reference cycles that
      outlives a young collection (uvicorn leaves one per closed connection) then waits about
      160,000 net allocations for the old collection, about twice Python's default, not the
      8 million that multipliers of 20 would allow. Payments ran as fast either way.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


def _interrupt(signal_number: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(
    database: str,
    host: str,
    port: int,
    admin_key: str,
    out: IO[str],
    group_commit: GroupCommitConfig | None = DEFAULT_GROUP_COMMIT,
    workers: int = 1,
) -> int:
    """Serve until SIGINT or SIGTERM. `group_commit` bounds the groups single payments are
    paid in (None: each on its own); `workers` server processes share the port (1: this
    process serves, with no supervisor)."""
    if not 1 <= workers <= WORKERS_MAX:
        raise ValueError(f"workers must be between 1 and {WORKERS_MAX}")
    plan = WorkerPlan(database, host, port, admin_key, group_commit)
    if workers > 1:
        return _supervise(plan, workers, out)
    configure_json_logging()
    return _run_worker(plan, out, background=True, shared=None)


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What a server process needs to start; picklable, for the spawned workers."""

    database: str
    host: str
    port: int
    admin_key: str
    group_commit: GroupCommitConfig | None
    # Set for the workers of a supervisor: their number, the run directory they share and
    # the supervisor's pid.
    index: int = 0
    run_directory: str | None = None
    supervisor_pid: int = 0


@dataclass(slots=True)
class _Shared:
    """A worker's view of the run directory."""

    switches: sw.Switches
    limiter: RateLimiter
    board: MetricsBoard
    metrics: Metrics

    def close(self) -> None:
        self.switches.close()
        self.limiter.close()


def _open_shared(plan: WorkerPlan) -> _Shared:
    assert plan.run_directory is not None
    run = Path(plan.run_directory)
    _recreate_if_missing(run)
    board = MetricsBoard(run, plan.index)
    metrics = Metrics()
    predecessor = board.last_published()
    if predecessor is not None:
        # A worker started again continues its predecessor's counters: the sums a scrape
        # shows never go backwards.
        metrics.resume(predecessor)
    return _Shared(
        sw.Switches.attach(run / SWITCHES_FILE),
        RateLimiter(table=run / RATE_TABLE_FILE),
        board,
        metrics,
    )


def _recreate_if_missing(run: Path) -> None:
    """A temporary-file cleaner may have removed the run directory's files while the server
    ran (mapped files' times do not change when read): a worker started again makes them
    afresh rather than die at every start."""
    run.mkdir(mode=0o700, exist_ok=True)
    if not (run / SWITCHES_FILE).exists():
        _log.warning("the switches file is gone from %s; every switch starts normal", run)
        sw.Switches.create_shared(run / SWITCHES_FILE).close()
    if not (run / RATE_TABLE_FILE).exists():
        _log.warning("the rate limit table is gone from %s; every key starts afresh", run)
        create_rate_table(run / RATE_TABLE_FILE)


def _run_worker(
    plan: WorkerPlan,
    out: IO[str] | None,
    *,
    background: bool,
    shared: _Shared | None,
    listen: Callable[[], socket.socket] | None = None,
) -> int:
    """One server process: the app, its threads and uvicorn, until SIGINT or SIGTERM.
    `background`: this process also runs the scheduler and the deliveries (webhooks, Alipay
    notifications); every process takes its own simulated bank's answers. `listen` makes
    the listening socket (None: uvicorn binds host:port), just before serving: a worker
    gets no connection before it can answer it."""
    database, host, port = plan.database, plan.host, plan.port
    platform = Platform(database, config=PlatformConfig(daily_settlement=True))
    lock = threading.RLock()
    gateway = AlipayGateway(platform, lock=lock)
    switches = shared.switches if shared is not None else sw.Switches()
    app = create_app(
        platform,
        admin_key=plan.admin_key,
        lock=lock,
        alipay=gateway,
        switches=switches,
        group_commit=plan.group_commit,
        metrics=shared.metrics if shared is not None else None,
        rate_limiter=shared.limiter if shared is not None else None,
        metrics_peers=shared.board.peers if shared is not None else None,
    )
    stop = threading.Event()
    threads: list[threading.Thread] = []
    closers: list[Callable[[], None]] = []
    jobs = threading.Thread(
        target=_background_jobs,
        args=(platform, lock, stop, switches, background),
        name="paycell-jobs",
        daemon=True,
    )
    jobs.start()
    threads.append(jobs)
    if background:
        threads += _start_deliveries(platform, database, gateway, switches, stop, closers)
    if shared is not None:
        threads.append(_start_publisher(app, shared, stop))
    # loop="auto" and http="auto" take uvloop and httptools when they are installed (they are
    # dependencies): a faster event loop and HTTP parser than asyncio's and h11, the same
    # behaviour; without them uvicorn falls back to asyncio and h11.
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", loop="auto", http="auto")
    )
    if out is not None:
        _print_banner(out, database, f"http://{host}:{port}", "")
    _tune_garbage_collection()
    # uvicorn shuts down gracefully on SIGINT and SIGTERM, then raises the signal again; both
    # end here as a clean exit (status 0) after the background thread and database close.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run(sockets=[listen()] if listen is not None else None)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        for close in closers:
            close()
        # Normally done by the app's lifespan shutdown; again here (it is idempotent) so no
        # queued payment can outlive the platform's connection.
        groups = app.state.group_commit
        if groups is not None:
            groups.close()
        if shared is not None:
            _publish(app, shared)  # the last figures, for a successor to continue from
            shared.close()
        gateway.close()
        with lock:
            platform.close()
    return 0 if server.started else 1


def _start_deliveries(
    platform: Platform,
    database: str,
    gateway: AlipayGateway,
    switches: sw.Switches,
    stop: threading.Event,
    closers: list[Callable[[], None]],
) -> list[threading.Thread]:
    """Webhook delivery and Alipay notifications, started; what they opened is appended to
    `closers`, to close once the threads are joined."""
    # Webhooks go out from their own connection, outside the platform's lock: a slow merchant
    # endpoint never holds up payments. Leases make several servers on one database safe.
    webhook_store = open_platform_store(database)
    webhook_service = WebhookService(
        webhook_store, LedgerService(webhook_store, platform.clock), platform.clock
    )
    sender = HttpWebhookSender()
    # The `webhooks` switch defers delivery: passes are skipped, deliveries stay due.
    webhooks = threading.Thread(
        target=_while_switched_on,
        args=(
            switches,
            sw.WEBHOOKS,
            _drain(WebhookDispatcher(webhook_service, sender), switches, stop),
            "webhook dispatch",
            stop,
        ),
        name="paycell-webhooks",
        daemon=True,
    )
    # Alipay notifications to notify_url: their own connections, like webhooks.
    notify_store = GatewayStore(database)
    notify_orders = open_platform_store(database)
    notify_sender = HttpNotifySender()
    notifier = AlipayNotifier(
        notify_store,
        notify_orders.order,
        notify_orders.refunds_of_order,
        lambda params: gateway.sign_params(params),
        platform.clock,
        notify_sender,
    )
    notifications = threading.Thread(
        target=_while_switched_on,
        args=(switches, sw.WEBHOOKS, notifier.run_once, "alipay notifications", stop),
        name="paycell-alipay-notify",
        daemon=True,
    )
    closers += [
        notify_sender.close,
        notify_store.close,
        notify_orders.close,
        sender.close,
        webhook_store.close,
    ]
    threads = [webhooks, notifications]
    for thread in threads:
        thread.start()
    return threads


def _publish(app: object, shared: _Shared) -> None:
    state = app.state  # type: ignore[attr-defined]
    groups = state.group_commit
    shared.board.publish(
        shared.metrics.snapshot(state.admission, groups.depth() if groups is not None else None)
    )


def _start_publisher(app: object, shared: _Shared, stop: threading.Event) -> threading.Thread:
    """Publish this worker's metrics every second, for the scrapes other workers answer."""

    def publish() -> None:
        _publish(app, shared)

    thread = threading.Thread(
        target=_every_second,
        args=(publish, "publishing metrics", stop),
        name="paycell-metrics-publisher",
        daemon=True,
    )
    thread.start()
    return thread


def _every_second(step: Callable[[], object], what: str, stop: threading.Event) -> None:
    supervisor = os.getppid()
    while not stop.wait(METRICS_PUBLISH_SECONDS):
        if os.getppid() != supervisor:
            _log.error("the supervisor is gone; this worker stops")
            os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
            return
        try:
            step()
        except Exception:  # a failed pass is logged and retried next second, never fatal
            _log.exception("%s failed; retrying in a second", what)


def _print_banner(out: IO[str], database: str, url: str, workers: str) -> None:
    print(f"paycell serve: {database} on {url}{workers}", file=out)
    print(f"  REST API under {url}/v1, interactive docs at {url}/docs,", file=out)
    print(
        f"  OpenAPI document at {url}/openapi.json; Alipay gateway at {url}/gateway.do;", file=out
    )
    print("  stop with Ctrl-C", file=out, flush=True)


# -------------------------------------------------------------------------- workers


def _socket_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _reserve_port(host: str, port: int) -> socket.socket:
    """Hold `host:port` for the workers: bound with SO_REUSEPORT, never listening, so the
    kernel hands it no connection. First bound without SO_REUSEPORT, so that a port another
    server already serves is refused here (address in use) instead of shared with it."""
    family = _socket_family(host)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    reserved = socket.socket(family, socket.SOCK_STREAM)
    # SO_REUSEPORT without SO_REUSEADDR: another server's probe (which has SO_REUSEADDR)
    # is then refused while this one holds the port, even before its workers listen.
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind((host, port))
    return reserved


def _listen(host: str, port: int) -> socket.socket:
    listening = socket.socket(_socket_family(host), socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listening.bind((host, port))
    listening.listen(2048)
    return listening


def worker_main(plan: WorkerPlan, ready: "multiprocessing.SimpleQueue[int] | None" = None) -> None:
    """A spawned worker's entry point (module level, so the spawn start method can find it).
    Puts its index on `ready` once it listens."""
    # The supervisor held these back while it started this process, and a signal mask is
    # inherited: without this, the worker would never hear SIGTERM.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    _end_with_the_supervisor(plan.supervisor_pid)
    configure_json_logging(worker=plan.index)
    shared = _open_shared(plan)
    status = _run_worker(
        plan,
        None,
        background=plan.index == 0,
        shared=shared,
        listen=lambda: _listen_and_say(plan, ready),
    )
    raise SystemExit(status)


def _listen_and_say(
    plan: WorkerPlan, ready: "multiprocessing.SimpleQueue[int] | None"
) -> socket.socket:
    listening = _listen(plan.host, plan.port)
    if ready is not None:
        ready.put(plan.index)
    return listening


def _end_with_the_supervisor(supervisor: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies (killed, crashed), so a worker
    never serves on, orphaned, holding the port a new server needs. Linux's prctl; the
    metrics publisher also checks the parent every second, for the race at startup and for
    systems without it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:
        raise SystemExit(0)  # it died before the request was made


@dataclass(slots=True)
class _Worker:
    process: multiprocessing.process.BaseProcess | None
    started: float
    early_deaths: int = 0
    # When a worker waiting to be started again is due (monotonic seconds).
    due: float = 0.0


_STOP_SIGNALS: Final = {signal.SIGINT, signal.SIGTERM}


def _supervise(plan: WorkerPlan, workers: int, out: IO[str]) -> int:
    configure_json_logging()
    try:
        reserved = _reserve_port(plan.host, plan.port)
    except OSError as problem:
        print(
            f"paycell serve: cannot listen on {plan.host}:{plan.port}: {problem}", file=sys.stderr
        )
        return 1
    run = Path(tempfile.mkdtemp(prefix="paycell-serve-"))
    port = reserved.getsockname()[1]
    base = replace(plan, port=port, run_directory=str(run), supervisor_pid=os.getpid())
    context = multiprocessing.get_context("spawn")
    ready: multiprocessing.SimpleQueue[int] = context.SimpleQueue()

    def start(index: int) -> multiprocessing.process.BaseProcess:
        process = context.Process(
            target=worker_main,
            args=(replace(base, index=index), ready),
            name=f"paycell-worker-{index}",
        )
        process.start()
        return process

    running: dict[int, _Worker] = {}
    # SIGINT too: a supervisor started with SIGINT ignored (`&` in a script) would otherwise
    # watch its workers stop on Ctrl-C and start them again.
    previous = {number: signal.signal(number, _interrupt) for number in _STOP_SIGNALS}
    try:
        # The schema is created (or migrated) once, here, before the workers open it.
        Platform(plan.database).close()
        sw.Switches.create_shared(run / SWITCHES_FILE).close()
        create_rate_table(run / RATE_TABLE_FILE)
        for index in range(workers):
            running[index] = _Worker(_started(start, index), time.monotonic())
        # The banner once every worker listens: a client that waits for it (a benchmark, a
        # deploy script) is spread over all of them, not over the first to be ready.
        # (If one died first, it is started again, and the log says so.)
        _all_listening(ready, running)
        _print_banner(out, plan.database, f"http://{plan.host}:{port}", f" ({workers} workers)")
        return _watch(running, start, ready)
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C or SIGTERM must not cut the stop short: it is bounded by itself.
        for number in _STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)
        _stop_workers(multiprocessing.active_children())
        reserved.close()
        shutil.rmtree(run, ignore_errors=True)
        for number, handler in previous.items():
            signal.signal(number, handler)


def _started(
    start: Callable[[int], multiprocessing.process.BaseProcess], index: int
) -> multiprocessing.process.BaseProcess:
    """Start worker `index` with SIGINT and SIGTERM held back until the supervisor knows of
    it, so a stop that arrives meanwhile still stops it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        return start(index)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def _all_listening(ready: "multiprocessing.SimpleQueue[int]", running: dict[int, _Worker]) -> bool:
    """Wait until every worker said it listens; False if one died first (the watch then
    starts it again, and the banner is not printed)."""
    listening: set[int] = set()
    while len(listening) < len(running):
        sentinels = [worker.process.sentinel for worker in running.values() if worker.process]
        for event in multiprocessing.connection.wait([ready._reader, *sentinels]):  # type: ignore[attr-defined]
            if event is not ready._reader:  # type: ignore[attr-defined]
                return False
            listening.add(ready.get())
    return True


def _watch(
    running: dict[int, _Worker],
    start: Callable[[int], multiprocessing.process.BaseProcess],
    ready: "multiprocessing.SimpleQueue[int]",
) -> int:
    """Start a worker again whenever one dies, until SIGINT/SIGTERM (KeyboardInterrupt).
    One that dies within WORKER_EARLY_DEATH_SECONDS of starting waits longer each time before
    it is started again; if every worker keeps dying so, nothing serves, and the server
    stops (exit status 1)."""
    while True:
        now = time.monotonic()
        for index, worker in running.items():
            if worker.process is None and worker.due <= now:
                worker.process, worker.started = _started(start, index), now
        sentinels = {
            worker.process.sentinel: index
            for index, worker in running.items()
            if worker.process is not None
        }
        waiting = [worker.due for worker in running.values() if worker.process is None]
        timeout = max(0.0, min(waiting) - now) if waiting else None
        # The ready pipe too, drained as workers started again say they listen, so it never
        # fills up however often they restart.
        reader = ready._reader  # type: ignore[attr-defined]
        for ended in multiprocessing.connection.wait([reader, *sentinels], timeout):
            if ended is reader:
                ready.get()
                continue
            index = sentinels[ended]  # type: ignore[index]
            worker = running[index]
            assert worker.process is not None
            worker.process.join()
            lived = time.monotonic() - worker.started
            early = worker.early_deaths + 1 if lived < WORKER_EARLY_DEATH_SECONDS else 0
            delay = 0.0 if early <= 1 else min(2.0 ** (early - 1), WORKER_RESTART_DELAY_SECONDS_MAX)
            _log.error(
                "worker %d (pid %s) exited with status %s after %.1f s; starting it again%s",
                *(index, worker.process.pid, worker.process.exitcode, lived),
                f" in {delay:.0f} s" if delay else "",
            )
            running[index] = _Worker(None, worker.started, early, time.monotonic() + delay)
        now = time.monotonic()
        if all(
            worker.early_deaths >= WORKER_EARLY_DEATHS_MAX
            and not (
                worker.process is not None and now - worker.started >= WORKER_EARLY_DEATH_SECONDS
            )
            for worker in running.values()
        ):
            _log.error("every worker keeps dying at startup; stopping the server")
            return 1


def _stop_workers(processes: list[multiprocessing.process.BaseProcess]) -> None:
    """SIGTERM to every worker (each finishes its requests and closes its database), then
    SIGKILL to any still running after WORKER_STOP_SECONDS."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + WORKER_STOP_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            _log.error("worker pid %s did not stop in time; killing it", process.pid)
            process.kill()
            process.join()
