"""The Singles' Day peak: `paycell loadtest --start-server` with sensible defaults, then one
JSON line of figures on stdout (the full report goes to --report-json, default a temp file).

    .venv/bin/python bench/peak.py                       # 60 s, base 200/s, spike x5, SQLite
    .venv/bin/python bench/peak.py --duration-seconds 30 --base-rate 400 --processes 2

    .venv/bin/python bench/peak.py --backend postgres    # on a throwaway PostgreSQL server

`--backend postgres` starts a PostgreSQL server of its own on a free loopback port (as the
tests do), runs the loadtest's server on a fresh database there, and stops it at the end.
Any `paycell loadtest` option may be given; these are only the defaults. The loadtest's own
progress and summary go to stderr; the exit status is the loadtest's (1 if a books check or
verify failed).
"""

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

from paycell.adapters.cli.main import main as paycell

DEFAULTS = {
    "--duration-seconds": "60",
    "--base-rate": "200",
    "--peak-multiple": "5",
    "--buyers": "200",
    "--merchants": "20",
    "--hot-merchant-share": "0.9",
    "--concurrency": "64",
    "--processes": "1",
}


def main(argv: list[str]) -> int:
    arguments = list(argv)
    if "--backend" in arguments:
        at = arguments.index("--backend")
        backend = arguments[at + 1] if at + 1 < len(arguments) else ""
        del arguments[at : at + 2]
        if backend == "postgres":
            return _on_postgres(arguments)
        if backend != "sqlite":
            print(f"peak: --backend is sqlite or postgres, not {backend!r}", file=sys.stderr)
            return 2
    return _run(arguments, "sqlite")


def _on_postgres(arguments: list[str]) -> int:
    from paycell.adapters.storage.throwaway_postgres import PostgresServer

    print("peak: starting a throwaway PostgreSQL server", file=sys.stderr)
    with PostgresServer() as server:
        return _run([*arguments, "--database", server.create_database("peak")], "postgres")


def _run(arguments: list[str], backend: str) -> int:
    for option, value in DEFAULTS.items():
        if option not in arguments:
            arguments += [option, value]
    if "--url" not in arguments and "--start-server" not in arguments:
        arguments.append("--start-server")
    if "--report-json" not in arguments:
        with tempfile.NamedTemporaryFile(
            prefix="paycell-peak-", suffix=".json", delete=False
        ) as handle:
            arguments += ["--report-json", handle.name]
    report_path = Path(arguments[arguments.index("--report-json") + 1])
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        code = paycell(["loadtest", *arguments])
    sys.stderr.write(summary.getvalue())
    if not report_path.exists() or not report_path.stat().st_size:
        return code or 1
    report = json.loads(report_path.read_text())
    payments = report["payments"]
    figures = {
        "bench": "peak",
        "backend": backend,
        "duration_seconds": report["config"]["duration_seconds"],
        "base_rate": report["config"]["base_rate"],
        "peak_multiple": report["config"]["peak_multiple"],
        "processes": report["config"]["processes"],
        "concurrency": report["config"]["concurrency"],
        "client": report["config"].get("client", "httpx"),
        "payments_ok": payments["ok"],
        "payments_sent": payments["sent"],
        "payments_per_second_sustained": payments["sustained_per_second"],
        "payments_per_second_peak": payments["peak_per_second"],
        "p50_ms": payments["latency_ms"]["p50"],
        "p99_ms": payments["latency_ms"]["p99"],
        "p999_ms": payments["latency_ms"]["p999"],
        "p99_from_schedule_ms": payments["latency_from_schedule_ms"]["p99"],
        "shed": report["shed"]["total"],
        "shed_by_class": report["shed"]["by_class"],
        "5xx": report["server_errors"]["5xx"],
        "5xx_other_than_503": report["server_errors"]["5xx_other_than_503"],
        "generator_lag_p99_ms": report["generator"]["lag_ms"]["p99"],
        "generator_cpu_ms_per_request": report["generator"]["cpu_ms_per_request"],
        "books_ok": report["books"]["ok"],
        "verify_passed": report["verify"]["passed"],
        "report": str(report_path),
    }
    print(json.dumps(figures), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
