"""`paycell serve`: the REST API under uvicorn, plus the background jobs.

One process holds one platform (one database connection); the HTTP handlers and the
background thread share it under one lock. The background thread runs the scheduler (unpaid
orders close, escrow auto-confirms, trades finish, pending transfers expire) and lets the
simulated bank answer its instructions, once a second; a second thread, on its own
connection, delivers webhooks (signed, retried on Alipay's schedule). Several servers on one
database are safe: every scheduled change is its own command and applies once.
"""

import gc
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import IO, Final

import uvicorn

from paycell.adapters.alipay.gateway import AlipayGateway
from paycell.adapters.alipay.notify import AlipayNotifier, HttpNotifySender
from paycell.adapters.alipay.store import GatewayStore
from paycell.adapters.http import switches as sw
from paycell.adapters.http.app import create_app
from paycell.adapters.http.group_commit import DEFAULT_GROUP_COMMIT, GroupCommitConfig
from paycell.adapters.http.logging_setup import configure_json_logging
from paycell.adapters.storage.platform_factory import open_platform_store
from paycell.adapters.webhooks.dispatcher import DEFAULT_BATCH, WebhookDispatcher
from paycell.adapters.webhooks.sender import HttpWebhookSender
from paycell.platform import Platform
from paycell.service.ledger_service import LedgerService
from paycell.service.platform import PlatformConfig
from paycell.service.webhooks import WebhookService

BACKGROUND_INTERVAL_SECONDS: Final = 1.0

_log = logging.getLogger(__name__)


def _background_jobs(
    platform: Platform, lock: threading.RLock, stop: threading.Event, switches: sw.Switches
) -> None:
    while not stop.wait(BACKGROUND_INTERVAL_SECONDS):
        try:
            with lock:
                # The `scheduler` switch pauses the scheduler; the bank's answers (money
                # already moving) are always taken.
                if switches.on(sw.SCHEDULER):
                    platform.run_scheduler()
                platform.deliver_bank_callbacks()
        except Exception:  # a failed pass is logged and retried next second, never fatal
            _log.exception("background jobs failed; retrying in a second")


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


def _freeze_startup_heap() -> None:
    """Move everything startup built (modules, the app, the platform) out of the cyclic
    collector's reach: it lives as long as the server, yet every full collection walked it
    again, tens of milliseconds each with the GIL held, stalling the event loop and the group
    worker alike. Single payments ran about a fifth faster with it frozen
    (docs/performance.md). Reference counting still frees what requests allocate; only cycle
    detection skips these objects."""
    gc.collect()
    gc.freeze()


def _interrupt(signal_number: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(
    database: str,
    host: str,
    port: int,
    admin_key: str,
    out: IO[str],
    group_commit: GroupCommitConfig | None = DEFAULT_GROUP_COMMIT,
) -> int:
    """Serve until SIGINT or SIGTERM. `group_commit` bounds the groups single payments are
    paid in (None: each on its own)."""
    configure_json_logging()
    platform = Platform(database, config=PlatformConfig(daily_settlement=True))
    lock = threading.RLock()
    gateway = AlipayGateway(platform, lock=lock)
    switches = sw.Switches()
    app = create_app(
        platform,
        admin_key=admin_key,
        lock=lock,
        alipay=gateway,
        switches=switches,
        group_commit=group_commit,
    )
    stop = threading.Event()
    jobs = threading.Thread(
        target=_background_jobs,
        args=(platform, lock, stop, switches),
        name="paycell-jobs",
        daemon=True,
    )
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
    # loop="auto" and http="auto" take uvloop and httptools when they are installed (they are
    # dependencies): a faster event loop and HTTP parser than asyncio's and h11, the same
    # behaviour; without them uvicorn falls back to asyncio and h11.
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", loop="auto", http="auto")
    )
    url = f"http://{host}:{port}"
    print(f"paycell serve: {database} on {url}", file=out)
    print(f"  REST API under {url}/v1, interactive docs at {url}/docs,", file=out)
    print(
        f"  OpenAPI document at {url}/openapi.json; Alipay gateway at {url}/gateway.do;", file=out
    )
    print("  stop with Ctrl-C", file=out, flush=True)
    jobs.start()
    webhooks.start()
    notifications.start()
    _freeze_startup_heap()
    # uvicorn shuts down gracefully on SIGINT and SIGTERM, then raises the signal again; both
    # end here as a clean exit (status 0) after the background thread and database close.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop.set()
        jobs.join(timeout=10)
        webhooks.join(timeout=15)
        notifications.join(timeout=15)
        notify_sender.close()
        notify_store.close()
        notify_orders.close()
        # Normally done by the app's lifespan shutdown; again here (it is idempotent) so no
        # queued payment can outlive the platform's connection.
        groups = app.state.group_commit
        if groups is not None:
            groups.close()
        gateway.close()
        sender.close()
        webhook_store.close()
        with lock:
            platform.close()
    return 0 if server.started else 1
