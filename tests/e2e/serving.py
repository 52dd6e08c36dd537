"""Helpers for the tests that run `paycell serve` as real processes."""

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

Headers = dict[str, str]


def free_port() -> int:
    """A loopback port free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll `condition` every 0.1 s; fail naming `what` if it is not true within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def buyer_and_shop(
    client: httpx.Client, admin: Headers, fee_rate_basis_points: int
) -> tuple[Headers, Headers]:
    """A new user and a new merchant through the admin API: their API keys as headers."""
    user = client.post("/v1/admin/users", json={"name": "Li"}, headers=admin).json()
    merchant = client.post(
        "/v1/admin/merchants",
        json={
            "name": "Tea",
            "fee_rate_basis_points": fee_rate_basis_points,
            "settlement_bank_account": "1",
        },
        headers=admin,
    ).json()
    return (
        {"Authorization": f"Bearer {user['api_key']}"},
        {"Authorization": f"Bearer {merchant['api_key']}"},
    )


class ServerProcess(subprocess.Popen[str]):
    """A server started for a test, its stdout and stderr written to files in `directory`.

    Not pipes: a pipe that nobody reads until the end holds 64 KB, about 250 access-log
    lines, and past that every worker blocks on its next log line, so requests time out for
    a reason that has nothing to do with what the test checks."""

    def __init__(self, arguments: Sequence[str], directory: Path, **options: Any) -> None:
        self.stdout_path = directory / f"server-{id(self)}.out"
        self.stderr_path = directory / f"server-{id(self)}.err"
        with open(self.stdout_path, "w") as stdout, open(self.stderr_path, "w") as stderr:
            super().__init__(arguments, stdout=stdout, stderr=stderr, text=True, **options)

    def logs(self) -> tuple[str, str]:
        """What it has written so far to stdout and to stderr."""
        return (
            self.stdout_path.read_text(encoding="utf-8"),
            self.stderr_path.read_text(encoding="utf-8"),
        )


def stop(server: ServerProcess, seconds: float) -> tuple[str, str]:
    """SIGTERM, then (stdout, stderr) once it ended; killed if it takes over `seconds` (the
    test's assertion on its exit status then fails)."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    return server.logs()
