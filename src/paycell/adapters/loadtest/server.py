"""`paycell serve` started by the load test on a free loopback port, and stopped after it."""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Final

import httpx

STARTUP_SECONDS: Final = 30.0
STOP_SECONDS: Final = 30.0


class ServerFailedError(Exception):
    """The server did not come up, or exited on its own."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class StartedServer:
    process: "subprocess.Popen[str]"
    url: str
    database: str
    log_path: str

    def stop(self) -> int:
        """SIGTERM, a graceful stop; the exit status (killed after STOP_SECONDS)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(database: str, admin_key: str, log_path: str, workers: int = 1) -> StartedServer:
    """`paycell serve --workers N` on a free loopback port, up and answering."""
    port = free_port()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "paycell.adapters.cli.main", "serve",
             "--database", database, "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            env={**os.environ, "PAYCELL_ADMIN_KEY": admin_key},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
    server = StartedServer(process, f"http://127.0.0.1:{port}", database, log_path)
    try:
        wait_until_up(server.url, process)
        # With several workers the banner comes once all of them listen; the generator's
        # connections must be spread over every worker, not made to the first one up.
        _wait_for_banner(log_path, process)
    except BaseException:
        server.stop()
        raise
    return server


def wait_until_up(url: str, process: "subprocess.Popen[str] | None" = None) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    with httpx.Client(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise ServerFailedError(f"the server exited with status {process.returncode}")
            try:
                if client.get("/openapi.json").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise ServerFailedError(f"no answer from {url} within {STARTUP_SECONDS:.0f} s")


def _wait_for_banner(log_path: str, process: "subprocess.Popen[str]") -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        with open(log_path, encoding="utf-8") as log:
            if "stop with Ctrl-C" in log.read():
                return
        if process.poll() is not None:
            raise ServerFailedError(f"the server exited with status {process.returncode}")
        time.sleep(0.1)
    raise ServerFailedError(f"no banner in {log_path} within {STARTUP_SECONDS:.0f} s")
