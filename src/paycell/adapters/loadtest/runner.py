"""`paycell loadtest`: the command. Set up through the API, drive the curve with live progress,
report, check the books, and (when it started the server) run `paycell verify`."""

import argparse
import asyncio
import bisect
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Final

import httpx

from paycell.adapters.loadtest import books as books_module
from paycell.adapters.loadtest.curve import PAY, Curve, Planned, plan
from paycell.adapters.loadtest.driver import CLIENTS, RAW, Item, Record, Workers, WorkerSpec
from paycell.adapters.loadtest.report import build_report, phase_at, progress_line, write_chart
from paycell.adapters.loadtest.server import ServerFailedError, StartedServer, start_server
from paycell.adapters.loadtest.setup import SetupFailedError, World, create_world

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2
PAY_ROUTE: Final = "POST /v1/orders/{order_id}/pay"
QUERY_ROUTE: Final = "GET /v1/wallet"
SETTLE_MARGIN_SECONDS: Final = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8080")
    target.add_argument(
        "--start-server",
        action="store_true",
        help="start `paycell serve` on a free 127.0.0.1 port and stop it afterwards",
    )
    parser.add_argument(
        "--database",
        dest="loadtest_database",
        default=None,
        help="with --start-server: an SQLite file or postgresql:// URL (default: a temp file)",
    )
    parser.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="with --start-server: the server's worker processes (`paycell serve --workers`)",
    )
    parser.add_argument(
        "--admin-key",
        default=os.environ.get("PAYCELL_ADMIN_KEY", ""),
        help="the server's admin key (default: $PAYCELL_ADMIN_KEY; generated with --start-server)",
    )
    parser.add_argument("--duration-seconds", type=float, default=60.0)
    parser.add_argument("--base-rate", type=float, default=100.0, help="arrivals/s in warm-up")
    parser.add_argument("--peak-multiple", type=float, default=5.0, help="the spike, x base")
    parser.add_argument("--buyers", type=int, default=200)
    parser.add_argument("--merchants", type=int, default=20)
    parser.add_argument("--hot-merchant-share", type=float, default=0.9)
    parser.add_argument("--query-share", type=float, default=0.1, help="wallet queries mixed in")
    parser.add_argument("--concurrency", type=int, default=64, help="in flight, all processes")
    parser.add_argument("--processes", type=int, default=1, help="generator processes")
    parser.add_argument("--request-timeout", type=float, default=10.0, help="seconds")
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default=RAW,
        help="the generator's HTTP client: raw (a minimal keep-alive client) or httpx (slower)",
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--report-json", default=None, metavar="FILE")
    parser.add_argument("--chart", default=None, metavar="FILE.png", help="needs matplotlib")
    parser.add_argument("--quiet", action="store_true", help="no live progress")


class _Say:
    def __init__(self, stream: IO[str], quiet: bool) -> None:
        self.stream = stream
        self.quiet = quiet

    def __call__(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(text + "\n")
            self.stream.flush()


def _check_arguments(arguments: argparse.Namespace) -> str | None:
    if arguments.duration_seconds <= 0 or arguments.base_rate <= 0:
        return "--duration-seconds and --base-rate must be positive"
    if arguments.peak_multiple < 1:
        return "--peak-multiple must be at least 1"
    if min(arguments.buyers, arguments.merchants, arguments.concurrency, arguments.processes) < 1:
        return "--buyers, --merchants, --concurrency and --processes must be at least 1"
    if not 0 <= arguments.hot_merchant_share <= 1 or not 0 <= arguments.query_share < 1:
        return "--hot-merchant-share must be in [0, 1] and --query-share in [0, 1)"
    if arguments.loadtest_database and not arguments.start_server:
        return "--database goes with --start-server (with --url the server has its own)"
    if arguments.server_workers != 1 and not arguments.start_server:
        return "--server-workers goes with --start-server (with --url the server is running)"
    if arguments.server_workers < 1:
        return "--server-workers must be at least 1"
    if arguments.url and not arguments.admin_key:
        return "--url needs --admin-key (or $PAYCELL_ADMIN_KEY)"
    return None


def _items(planned: list[Planned], world: World) -> list[Item]:
    items = []
    for p in planned:
        key = world.buyers[p.buyer].key
        if p.kind == PAY:
            order_id = world.order_ids[p.order]
            items.append(
                Item(p.index, p.kind, PAY_ROUTE, p.arrival, p.send_at, "POST",
                     f"/v1/orders/{order_id}/pay", key, f"lt-pay-{world.run_id}-{p.order}")
            )  # fmt: skip
        else:
            items.append(
                Item(p.index, p.kind, QUERY_ROUTE, p.arrival, p.send_at, "GET", "/v1/wallet",
                     key, "")
            )  # fmt: skip
    return items


def _drive(
    arguments: argparse.Namespace, url: str, curve: Curve, items: list[Item], say: _Say
) -> tuple[list[Record], list[str], float]:
    processes = arguments.processes
    per_worker = max(arguments.concurrency // processes, 1)
    lead = 2.0 if processes > 1 else 0.3
    start = time.monotonic() + lead
    timeout, client = arguments.request_timeout, arguments.client
    specs = [
        WorkerSpec(w, url, items[w::processes], start, per_worker, timeout, client)
        for w in range(processes)
    ]
    cpu_before = _cpu_seconds()
    workers = Workers(specs, processes=processes > 1)
    records: list[Record] = []
    pending_second: list[Record] = []
    shown = 0
    send_times = sorted(i.send_at for i in items)  # the plan's order already
    deadline = start + curve.duration + arguments.request_timeout + SETTLE_MARGIN_SECONDS
    failures: list[str] = []
    while workers.pending:
        fresh = workers.poll(0.2)
        records.extend(fresh)
        pending_second.extend(fresh)
        now = time.monotonic() - start
        while shown + 1 <= now:
            this = [r for r in pending_second if int(r.done) <= shown]
            pending_second = [r for r in pending_second if int(r.done) > shown]
            due = bisect.bisect_right(send_times, shown + 1)
            say(progress_line(shown, this, max(due - len(records), 0), phase_at(curve, shown)))
            shown += 1
        if time.monotonic() > deadline:
            failures.append("the generator did not finish in time; stopped waiting")
            break
    workers.join()
    last = max((int(r.done) for r in records), default=-1)
    while shown <= last:
        this = [r for r in pending_second if int(r.done) <= shown]
        pending_second = [r for r in pending_second if int(r.done) > shown]
        say(progress_line(shown, this, 0, phase_at(curve, shown)))
        shown += 1
    return records, failures + workers.failures, _cpu_seconds() - cpu_before


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _verify(database: str) -> tuple[bool, str]:
    done = subprocess.run(
        [sys.executable, "-m", "paycell.adapters.cli.main", "verify", "--database", database],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def run(arguments: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    problem = _check_arguments(arguments)
    if problem:
        print(f"paycell: error: invalid_input: {problem}", file=err)
        return EXIT_BAD_INPUT
    say = _Say(err, arguments.quiet)
    curve = Curve(arguments.duration_seconds, arguments.base_rate, arguments.peak_multiple)
    planned = plan(curve, arguments.buyers, arguments.query_share, arguments.seed)
    payment_buyers = [p.buyer for p in sorted(planned, key=lambda p: p.order) if p.kind == PAY]
    run_id = secrets.token_hex(4)
    admin_key = arguments.admin_key or secrets.token_urlsafe(24)
    workdir = tempfile.mkdtemp(prefix="paycell-loadtest-")
    server: StartedServer | None = None
    database = arguments.loadtest_database or str(Path(workdir) / "loadtest.db")
    say(
        f"paycell loadtest {run_id}: {len(planned)} requests over {curve.duration:g} s "
        f"(base {curve.base_rate:g}/s, spike x{curve.peak_multiple:g}, "
        f"{len(payment_buyers)} payments)"
    )
    try:
        if arguments.start_server:
            server = start_server(
                database, admin_key, str(Path(workdir) / "server.log"), arguments.server_workers
            )
            url = server.url
            say(f"  server started on {url} with {database} (log {server.log_path})")
        else:
            url = arguments.url.rstrip("/")
        say("setup through the API:")
        world = asyncio.run(
            _with_client(
                url,
                lambda client: create_world(
                    client,
                    admin_key,
                    run_id=run_id,
                    merchants=arguments.merchants,
                    buyers=arguments.buyers,
                    payment_buyers=payment_buyers,
                    hot_merchant_share=arguments.hot_merchant_share,
                    seed=arguments.seed,
                    say=say,
                ),
            )
        )
        items = _items(planned, world)
        say(
            f"the curve: warm-up, spike at {curve.spike_start:g} s, outage "
            f"{curve.outage_start:g}-{curve.outage_end:g} s, backlog released at "
            f"{curve.outage_end:g} s, decay to {curve.duration:g} s"
        )
        records, failures, cpu = _drive(arguments, url, curve, items, say)
        report = build_report(curve, records, len(planned))
        orders_of = {p.index: p.order for p in planned if p.kind == PAY}
        outcomes = {
            orders_of[r.seq]: bool(r.status and 200 <= r.status < 300)
            for r in records
            if r.kind == PAY
        }
        say("checking the books through the API ...")
        books = asyncio.run(
            _with_client(
                url,
                lambda client: books_module.check_books(client, world, payment_buyers, outcomes),
            )
        )
    except (ServerFailedError, SetupFailedError, httpx.HTTPError) as error:
        print(f"paycell: error: loadtest_failed: {error}", file=err)
        if server is not None:
            server.stop()
            print(f"  server log: {server.log_path}", file=err)
        return EXIT_FAILED
    verify: dict[str, Any]
    if server is not None:
        status = server.stop()
        say(f"server stopped (exit status {status}); running paycell verify ...")
        passed, text = _verify(database)
        verify = {"run": True, "passed": passed, "output": text[-2000:]}
    else:
        verify = {
            "run": False,
            "passed": None,
            "note": "the server was not started by the load test: the operator must run "
            "`paycell verify --database ...` on its database",
        }
    report["config"] = {
        "url": url,
        "started_server": server is not None,
        "database": database if server is not None else None,
        "duration_seconds": curve.duration,
        "base_rate": curve.base_rate,
        "peak_multiple": curve.peak_multiple,
        "buyers": arguments.buyers,
        "merchants": arguments.merchants,
        "hot_merchant_share": arguments.hot_merchant_share,
        "query_share": arguments.query_share,
        "concurrency": arguments.concurrency,
        "processes": arguments.processes,
        "request_timeout": arguments.request_timeout,
        "client": arguments.client,
        "seed": arguments.seed,
        "run_id": run_id,
    }
    report["generator"]["cpu_seconds"] = round(cpu, 2)
    report["generator"]["cpu_ms_per_request"] = round(1000 * cpu / max(len(records), 1), 3)
    report["generator"]["failures"] = failures
    report["books"] = books.as_json()
    report["verify"] = verify
    report["ok"] = books.ok and verify["passed"] is not False and not failures
    if arguments.report_json:
        Path(arguments.report_json).write_text(json.dumps(report, indent=2) + "\n")
    if arguments.chart:
        say(write_chart(report, arguments.chart))
    _summary(report, out)
    return EXIT_OK if report["ok"] else EXIT_FAILED


async def _with_client(url: str, work: Any) -> Any:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return await work(client)


def _summary(report: dict[str, Any], out: IO[str]) -> None:
    pay = report["payments"]
    lat = pay["latency_ms"]
    books = report["books"]
    gen = report["generator"]
    lines = [
        "paycell loadtest report",
        f"  payments ok {pay['ok']} of {pay['sent']} sent ({pay['planned']} planned, "
        f"{report['gave_up_unsent']} requests given up unsent); peak {pay['peak_per_second']}/s, "
        f"sustained {pay['sustained_per_second']}/s (best {pay['sustained_window_seconds']} s)",
        f"  payment latency p50 {lat['p50']} ms, p99 {lat['p99']} ms, p999 {lat['p999']} ms, "
        f"max {lat['max']} ms (from schedule: p99 {pay['latency_from_schedule_ms']['p99']} ms)",
        f"  by status {report['by_status']}; by code {report['by_code']}",
        f"  shed {report['shed']['total']} {report['shed']['by_class']}; "
        f"5xx other than 503: {report['server_errors']['5xx_other_than_503']}",
        "  phases: "
        + "; ".join(f"{name} {p['ok']}/{p['requests']} ok" for name, p in report["phases"].items()),
        f"  generator: lag p99 {gen['lag_ms']['p99']} ms, queued in the generator p99 "
        f"{gen['queued_in_generator_ms']['p99']} ms, CPU {gen['cpu_seconds']} s "
        f"({gen['cpu_ms_per_request']} ms a request)",
        f"  books: {'ok' if books['ok'] else 'FAILED'}: {books['acknowledged_in_books']} of "
        f"{books['acknowledged_payments']} acknowledged payments in the books, "
        f"{books['paid_but_unacknowledged']} paid but unacknowledged, "
        f"{books['balances_checked']} balances checked, {books['problem_count']} problems",
    ]
    lines += [f"    {p}" for p in books["problems"]]
    verify = report["verify"]
    if verify["run"]:
        lines.append(f"  verify: {'passed' if verify['passed'] else 'FAILED'}")
    else:
        lines.append(f"  verify: not run: {verify['note']}")
    lines.append(f"  result: {'ok' if report['ok'] else 'FAILED'}")
    out.write("\n".join(lines) + "\n")
    out.flush()
