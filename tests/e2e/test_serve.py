"""`paycell serve` as a real process on a loopback port: a payment through it, end to end."""

import os
import sys
from pathlib import Path

import httpx

from paycell.platform import Platform
from tests.e2e.serving import ServerProcess, buyer_and_shop, free_port, stop, wait_until

ADMIN_KEY = "serve-test-admin-key"
STARTUP_SECONDS = 30


def test_paycell_serve_takes_a_payment(tmp_path: Path) -> None:
    database = tmp_path / "served.db"
    port = free_port()
    server = ServerProcess(
        [sys.executable, "-m", "paycell.adapters.cli.main", "serve", "--database", str(database),
         "--host", "127.0.0.1", "--port", str(port)],
        tmp_path,
        env={**os.environ, "PAYCELL_ADMIN_KEY": ADMIN_KEY},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as client:

            def up() -> bool:
                assert server.poll() is None, server.logs()
                try:
                    return client.get("/openapi.json").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(up, STARTUP_SECONDS, "the server")
            assert "<html" in client.get("/docs").text
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            buyer, shop = buyer_and_shop(client, admin, fee_rate_basis_points=60)
            top_up = client.post(
                "/v1/wallet/top-ups", json={"request_no": "T-1", "amount": 100_00}, headers=buyer
            )
            assert top_up.status_code == 201
            # The server's background thread lets the bank answer within about a second.
            wait_until(
                lambda: client.get("/v1/wallet", headers=buyer).json()["available"] == 100_00,
                15,
                "the top-up",
            )
            order = client.post(
                "/v1/orders", json={"out_trade_no": "T-1", "amount": 25_00}, headers=shop
            ).json()
            paid = client.post(
                f"/v1/orders/{order['id']}/pay", headers={**buyer, "Idempotency-Key": "p1"}
            )
            assert paid.json()["status"] == "TRADE_SUCCESS"
            assert client.get("/v1/balance", headers=shop).json()["available"] == 24_85
    finally:
        output, errors = stop(server, 20)
    assert server.returncode == 0, errors
    assert f"http://127.0.0.1:{port}/docs" in output
    with Platform(database) as platform:
        assert platform.verify().ok
