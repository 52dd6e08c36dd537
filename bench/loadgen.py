"""The load generator's own capacity: its hot path against a trivial server.

A plain asyncio HTTP/1.1 server (keep-alive, 200 with a small JSON body, no work) runs in a
subprocess on 127.0.0.1; the generator (`paycell.adapters.loadtest.driver`, the same code as
`paycell loadtest`, in worker processes as with `--processes`) drives it open-loop at a rate
above what it can send, for a few seconds. One JSON line per run: requests/s achieved, the
generator's CPU per request (its worker processes' own CPU time), latency p50/p99, lag p99.

    .venv/bin/python bench/loadgen.py                       # raw client, 1 and 2 processes
    .venv/bin/python bench/loadgen.py --runs 3              # and a line of medians
    .venv/bin/python bench/loadgen.py --client httpx --rate 6000 --event-loop asyncio  # before
    .venv/bin/python bench/loadgen.py --rate 10000 --processes 1   # keeps up? see lag_p99_ms

On a 2-core machine the server, the generator's processes and the parent share the two cores,
as they do in `paycell loadtest`: requests/s is what the pair achieves, and the CPU per
request is the generator's cost, the figure that says how much of the machine it takes away.
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from paycell.adapters.loadtest.curve import PAY, QUERY, percentiles
from paycell.adapters.loadtest.driver import (
    CLIENTS,
    GAVE_UP,
    RAW,
    Item,
    Record,
    Workers,
    WorkerSpec,
    event_loop_name,
)

BODY = b'{"ok":true,"id":"0000000000000000"}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)
LEAD_SECONDS = 2.0  # spawned workers import paycell before t = 0


class _Trivial(asyncio.Protocol):
    """Answers every request (head, then Content-Length bytes of body) with ANSWER."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        answers = 0
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            head = buffer[:end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                length = int(head[at + 15 :].split(b"\r\n", 1)[0])
            if len(buffer) < end + 4 + length:
                break
            buffer = buffer[end + 4 + length :]
            answers += 1
        self.buffer = buffer
        if answers:
            self.transport.write(ANSWER * answers)


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Trivial, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


def _items(rate: float, seconds: float) -> list[Item]:
    """Arrivals evenly spaced; payments and wallet queries alternate, as in the loadtest."""
    items = []
    for n in range(int(rate * seconds)):
        t = n / rate
        key = f"key-{n % 200:04d}-abcdefghijklmnop"
        if n % 2:
            items.append(Item(n, QUERY, "GET /v1/wallet", t, t, "GET", "/v1/wallet", key, ""))
        else:
            path = f"/v1/orders/{1_000_000 + n}/pay"
            route = "POST /v1/orders/{order_id}/pay"
            items.append(Item(n, PAY, route, t, t, "POST", path, key, f"lt-pay-bench-{n}"))
    return items


def run_once(url: str, arguments: argparse.Namespace, processes: int) -> dict[str, Any]:
    items = _items(arguments.rate, arguments.seconds)
    start = time.monotonic() + LEAD_SECONDS
    per_worker = max(arguments.concurrency // processes, 1)
    specs = [
        WorkerSpec(w, url, items[w::processes], start, per_worker, arguments.timeout,
                   arguments.client, arguments.event_loop)
        for w in range(processes)
    ]  # fmt: skip
    workers = Workers(specs, processes=True)
    records: list[Record] = []
    while workers.pending:
        records.extend(workers.poll(0.5))
    workers.join()
    if workers.failures:
        raise SystemExit(f"the generator failed: {workers.failures}")
    sent = [r for r in records if r.code != GAVE_UP]
    answered = [r for r in sent if r.status]
    span = max(r.done for r in sent) - min(r.started for r in sent) if sent else 1.0
    cpu = sum(workers.cpu_seconds.values())
    latency = percentiles([r.done - r.started for r in answered])
    lag = percentiles([r.dispatched - r.send_at for r in records])
    return {
        "bench": "loadgen",
        "client": arguments.client,
        "event_loop": event_loop_name(arguments.event_loop),
        "processes": processes,
        "concurrency": arguments.concurrency,
        "offered_per_second": arguments.rate,
        "seconds": arguments.seconds,
        "planned": len(items),
        "sent": len(sent),
        "answered_ok": sum(1 for r in answered if r.code == "ok"),
        "errors": len(sent) - len(answered) + sum(1 for r in answered if r.code != "ok"),
        "gave_up_unsent": len(records) - len(sent),
        "requests_per_second": round(len(answered) / span, 1),
        "generator_cpu_seconds": round(cpu, 3),
        "generator_cpu_us_per_request": round(1e6 * cpu / max(len(sent), 1), 1),
        "p50_ms": round(latency["p50"] * 1000, 3),
        "p99_ms": round(latency["p99"] * 1000, 3),
        "lag_p99_ms": round(lag["p99"] * 1000, 3),
    }


FIGURES = (
    "requests_per_second", "generator_cpu_us_per_request", "p50_ms", "p99_ms", "lag_p99_ms",
    "sent", "answered_ok", "errors", "gave_up_unsent", "generator_cpu_seconds",
)  # fmt: skip


def _median_line(lines: list[dict[str, Any]]) -> dict[str, Any]:
    median = {k: v for k, v in lines[0].items() if k not in FIGURES}
    median["bench"] = "loadgen-median"
    median["runs"] = len(lines)
    for figure in FIGURES:
        median[figure] = statistics.median(line[figure] for line in lines)
    return median


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=CLIENTS, default=RAW)
    parser.add_argument("--rate", type=float, default=40_000, help="offered arrivals/s")
    parser.add_argument("--seconds", type=float, default=3.0, help="of arrivals")
    parser.add_argument("--processes", default="1,2", help="generator processes, e.g. 1,2")
    parser.add_argument("--concurrency", type=int, default=64, help="in flight, all processes")
    parser.add_argument("--timeout", type=float, default=10.0, help="request timeout, s")
    parser.add_argument(
        "--event-loop", choices=("auto", "asyncio"), default="auto", help="auto: uvloop if any"
    )
    parser.add_argument("--runs", type=int, default=1, help="runs per process count")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.serve:
        asyncio.run(_serve())
        return 0
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{int(server.stdout.readline())}"
        for processes in (int(p) for p in arguments.processes.split(",")):
            lines = []
            for _ in range(arguments.runs):
                lines.append(run_once(url, arguments, processes))
                print(json.dumps(lines[-1]), flush=True)
            if arguments.runs > 1:
                print(json.dumps(_median_line(lines)), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
