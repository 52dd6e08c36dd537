"""Bulk payments through the HTTP API: `POST /v1/orders/bulk-pay` with 1,000 items a request.

Starts the REST API under uvicorn on a free 127.0.0.1 port over a fresh SQLite file (or
`--database`), creates buyers with money and one merchant, issues each payment's one-time
payment code in-process (what buyers' phones would do), then times the bulk requests alone
and prints one JSON line. Each request is one group commit: every payment in it shares one
database transaction.

    .venv/bin/python bench/bulk.py --requests 10
    .venv/bin/python bench/bulk.py --backend postgres     # a throwaway PostgreSQL server
    .venv/bin/python bench/bulk.py --workers 2 --concurrency 2 --requests 20

With `--workers N` the server is `paycell serve --workers N` in processes of its own (the
payment codes are issued beforehand on the same database), and `--concurrency` clients send
the requests at once; the figure is then every payment over the wall time of all requests.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import uvicorn

from paycell.adapters.alipay.gateway import AlipayGateway
from paycell.adapters.http import create_app
from paycell.adapters.http.logging_setup import ACCESS_LOG_ENVIRONMENT_VARIABLE
from paycell.core.payments.records import PartyKind, User
from paycell.platform import Platform

ADMIN_KEY = "bench-admin-key"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--items", type=int, default=1_000)
    parser.add_argument("--buyers", type=int, default=200)
    parser.add_argument("--database", help="default: a temporary SQLite file")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="postgres: start a throwaway PostgreSQL server on a loopback port and use it",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="serve with `paycell serve --workers N` (default: in this process)",
    )
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    arguments = parser.parse_args()
    if arguments.backend == "postgres" and not arguments.database:
        from paycell.adapters.storage.throwaway_postgres import PostgresServer

        print("starting a throwaway PostgreSQL server", file=sys.stderr)
        with PostgresServer() as server:
            arguments.database = server.create_database("bulk")
            return _bench(arguments)
    return _bench(arguments)


def _open_the_shop(platform: Platform, buyer_count: int) -> tuple[list[User], str]:
    """Buyers with money, and the merchant's API key."""
    buyers = [platform.create_user(f"buyer {n}") for n in range(buyer_count)]
    for buyer in buyers:
        assert platform.request_top_up(buyer.id, "bench", 10_000_000_00).ok
    platform.deliver_bank_callbacks()
    merchant = platform.create_merchant(
        "shop", fee_rate_basis_points=60, settlement_bank_account="1"
    )
    return buyers, platform.issue_api_key(PartyKind.MERCHANT, merchant.id)


def _items(
    gateway: AlipayGateway, buyers: list[User], number: int, count: int
) -> list[dict[str, object]]:
    """Request `number`'s items, each with a fresh payment code of its buyer."""
    return [
        {
            "out_trade_no": f"B{number}-{i}",
            "amount": 100 + i,
            "payment_code": gateway.issue_payment_code(buyers[i % len(buyers)].id).code,
        }
        for i in range(count)
    ]


def _bench(arguments: argparse.Namespace) -> int:
    os.environ.setdefault(ACCESS_LOG_ENVIRONMENT_VARIABLE, "off")
    if arguments.workers:
        return _bench_workers(arguments)

    directory = tempfile.TemporaryDirectory(prefix="paycell-bulk-")
    database = arguments.database or os.path.join(directory.name, "bulk.db")
    platform = Platform(database)
    lock = threading.RLock()
    gateway = AlipayGateway(platform, lock=lock)
    app = create_app(platform, admin_key=ADMIN_KEY, lock=lock, alipay=gateway)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)

    print("setting up buyers and a merchant", file=sys.stderr)
    buyers, key = _open_the_shop(platform, arguments.buyers)

    seconds: list[float] = []
    paid = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        for number in range(arguments.requests):
            items = _items(gateway, buyers, number, arguments.items)
            started = time.perf_counter()
            response = client.post(
                "/v1/orders/bulk-pay",
                json={"items": items},
                headers={"Authorization": f"Bearer {key}"},
            )
            seconds.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            paid += response.json()["paid"]
            print(f"\rrequest {number + 1}/{arguments.requests}", end="", file=sys.stderr)
    print(file=sys.stderr)
    server.should_exit = True
    thread.join(timeout=10)
    gateway.close()
    report = platform.verify()
    platform.close()
    median = statistics.median(seconds)
    print(
        json.dumps(
            {
                "bench": "bulk_pay_http",
                "backend": "postgres" if database.startswith("postgres") else "sqlite",
                "requests": arguments.requests,
                "items_per_request": arguments.items,
                "paid": paid,
                "payments_per_second_median": round(arguments.items / median),
                "request_seconds_median": round(median, 3),
                "verify_ok": report.ok,
            }
        )
    )
    directory.cleanup()
    return 0 if report.ok and paid == arguments.requests * arguments.items else 1


def _bench_workers(arguments: argparse.Namespace) -> int:
    directory = tempfile.TemporaryDirectory(prefix="paycell-bulk-")
    database = arguments.database or os.path.join(directory.name, "bulk.db")
    platform = Platform(database)
    gateway = AlipayGateway(platform)
    print("setting up buyers, a merchant and the payment codes", file=sys.stderr)
    buyers, key = _open_the_shop(platform, arguments.buyers)
    bodies = [
        {"items": _items(gateway, buyers, number, arguments.items)}
        for number in range(arguments.requests)
    ]
    gateway.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "paycell.adapters.cli.main", "serve", "--database", database,
         "--port", str(port), "--workers", str(arguments.workers)],
        env={**os.environ, "PAYCELL_ADMIN_KEY": ADMIN_KEY}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    # The banner comes once every worker listens: requests are then spread over all of them.
    assert server.stdout is not None
    if not any("stop with Ctrl-C" in line for line in server.stdout):
        raise SystemExit("the server did not start")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.1)

        def send(body: dict[str, object]) -> int:
            with httpx.Client(base_url=base, timeout=120) as client:
                response = client.post(
                    "/v1/orders/bulk-pay", json=body, headers={"Authorization": f"Bearer {key}"}
                )
            assert response.status_code == 200, response.text
            return int(response.json()["paid"])

        started = time.perf_counter()
        with ThreadPoolExecutor(arguments.concurrency) as pool:
            paid = sum(pool.map(send, bodies))
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=60)
    report = platform.verify()
    platform.close()
    print(
        json.dumps(
            {
                "bench": "bulk_pay_http_workers",
                "backend": "postgres" if database.startswith("postgres") else "sqlite",
                "workers": arguments.workers,
                "concurrency": arguments.concurrency,
                "requests": arguments.requests,
                "items_per_request": arguments.items,
                "paid": paid,
                "payments_per_second": round(paid / elapsed),
                "verify_ok": report.ok,
            }
        )
    )
    directory.cleanup()
    return 0 if report.ok and paid == arguments.requests * arguments.items else 1


if __name__ == "__main__":
    sys.exit(main())
