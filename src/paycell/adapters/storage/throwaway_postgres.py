"""A throwaway PostgreSQL server for tests: initdb in a temp dir, a free loopback port, stopped
and removed afterwards. Uses the pg_ctl on PATH or Debian's /usr/lib/postgresql/*/bin.

Usable from tests (fixture in conftest.py), from benchmarks and from the CLI's bench command.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


class PostgresUnavailableError(RuntimeError):
    pass


def find_postgres_bin() -> Path:
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(os.path.realpath(pg_ctl)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    raise PostgresUnavailableError(
        "no pg_ctl found: run `make postgres` (installs Debian's postgresql)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """`with PostgresServer() as server: server.url(...)`"""

    def __init__(self) -> None:
        self.bin = find_postgres_bin()
        self.directory = Path(tempfile.mkdtemp(prefix="paycell-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        self.user = "paycell"
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root; run it as an unprivileged system user.
            shutil.chown(self.directory, "nobody")
            self._run_as = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]

    def _command(self, *arguments: str) -> list[str]:
        return [*self._run_as, *arguments]

    def start(self) -> "PostgresServer":
        subprocess.run(
            self._command(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ),
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.directory} "
            "-c synchronous_commit=on -c fsync=on -c max_connections=100 "
            "-c shared_buffers=256MB"
        )
        subprocess.run(
            self._command(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.directory / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ),
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        return self

    def create_database(self, name: str) -> str:
        subprocess.run(
            [
                str(self.bin / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                name,
            ],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        return self.url(name)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            subprocess.run(
                self._command(
                    str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
                ),
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=60,
            )
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def wait_until_ready(url: str, timeout_seconds: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            psycopg.connect(url).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
