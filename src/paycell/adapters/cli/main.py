"""`paycell`: the command line entry point (argparse, standard library only).

`main(argv)` returns the exit code instead of exiting, so tests call it in-process. Outcomes
map to exit codes here, at the edge, and nowhere else (see the package docstring): bad input
is a message with its stable code on stderr and exit 2, never a traceback.
"""

import argparse
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Final, TypeVar

from paycell.adapters.cli import codec, ledger_commands
from paycell.adapters.cli.progress import Progress
from paycell.adapters.storage.factory import is_postgres_url
from paycell.core.errors import InvalidInputError, PaycellError
from paycell.core.limits import (
    BATCH_EVENTS_MAX,
    QUERY_LIMIT_MAX,
    UINT32_MAX,
    UINT64_MAX,
    UINT128_MAX,
)
from paycell.core.types import Account, Transfer
from paycell.ledger import DEFAULT_DATABASE, Ledger

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_UNAVAILABLE: Final = 3

DATABASE_ENVIRONMENT_VARIABLE: Final = "PAYCELL_DATABASE_URL"
ADMIN_KEY_ENVIRONMENT_VARIABLE: Final = "PAYCELL_ADMIN_KEY"

_EVENT = TypeVar("_EVENT", Account, Transfer)


class DatabaseNotFoundError(InvalidInputError):
    """A command that only reads was pointed at an SQLite file that does not exist."""

    code = "database_not_found"


class UnreadableInputError(InvalidInputError):
    """The input file named on the command line cannot be read."""

    code = "unreadable_input"


def _unsigned(maximum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if not 0 <= value <= maximum:
            raise argparse.ArgumentTypeError(
                f"{what} must be between 0 and {maximum}, got {text!r}"
            )
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


_id = _unsigned(UINT128_MAX, "id")
_u128 = _unsigned(UINT128_MAX, "128-bit integer")
_u64 = _unsigned(UINT64_MAX, "64-bit integer")
_u32 = _unsigned(UINT32_MAX, "32-bit integer")


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be milliseconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    value = _unsigned(UINT64_MAX, "count")(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _batch_sizes(text: str) -> tuple[int, ...]:
    sizes = []
    for part in text.split(","):
        size = _positive(part.strip())
        if size > BATCH_EVENTS_MAX:
            raise argparse.ArgumentTypeError(
                f"a batch holds at most {BATCH_EVENTS_MAX} transfers, got {size}"
            )
        sizes.append(size)
    return tuple(sizes)


def _add_database_option(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # The option is accepted before and after the subcommand; only the top level has a default,
    # so that a subcommand's unset option does not overwrite one given before it.
    parser.add_argument(
        "--database",
        default=(
            os.environ.get(DATABASE_ENVIRONMENT_VARIABLE, DEFAULT_DATABASE)
            if top_level
            else argparse.SUPPRESS
        ),
        help=(
            "an SQLite file path or a postgresql:// URL "
            f"(default: ${DATABASE_ENVIRONMENT_VARIABLE}, else {DEFAULT_DATABASE})"
        ),
    )


def _add_query_options(parser: argparse.ArgumentParser, *, ledger: bool) -> None:
    parser.add_argument("--user-data-128", type=_u128, default=0, metavar="N")
    parser.add_argument("--user-data-64", type=_u64, default=0, metavar="N")
    parser.add_argument("--user-data-32", type=_u32, default=0, metavar="N")
    if ledger:
        parser.add_argument("--ledger", type=_u32, default=0, metavar="N")
    parser.add_argument("--code", type=_unsigned(0xFFFF, "code"), default=0, metavar="N")
    parser.add_argument("--timestamp-min", type=_u64, default=0, metavar="NS")
    parser.add_argument("--timestamp-max", type=_u64, default=0, metavar="NS")
    parser.add_argument(
        "--limit",
        type=_unsigned(QUERY_LIMIT_MAX, "limit"),
        default=QUERY_LIMIT_MAX,
        help=f"rows per page, at most {QUERY_LIMIT_MAX} (default)",
    )
    parser.add_argument("--reversed", action="store_true", help="newest first")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paycell",
        description="paycell: a self-hosted payment platform core with a double-entry ledger.",
        epilog="exit codes: 0 ok, 1 rejected or failed, 2 bad input, 3 database unavailable",
    )
    _add_database_option(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]", name: str, text: str
    ) -> argparse.ArgumentParser:
        sub = subparsers.add_parser(name, help=text, description=text)
        _add_database_option(sub, top_level=False)
        return sub

    ledger = commands.add_parser("ledger", help="ledger commands (JSON lines in and out)")
    ledger_commands_parsers = ledger.add_subparsers(
        dest="ledger_command", required=True, metavar="LEDGER_COMMAND"
    )
    for name, kind in (("create-accounts", "accounts"), ("create-transfers", "transfers")):
        sub = command(
            ledger_commands_parsers,
            name,
            f"create {kind} from JSON lines (one object per line; flags as an integer or a "
            'list of names such as ["pending", "linked"]); prints one result line per event; '
            "exit 0 if every event is now in the ledger as given (ok, exists, or a replayed "
            "linked chain), 1 if any event was rejected",
        )
        sub.add_argument("file", nargs="?", default="-", help="input file, or - for stdin")
    for name, kind in (("lookup-accounts", "accounts"), ("lookup-transfers", "transfers")):
        sub = command(
            ledger_commands_parsers,
            name,
            f"print {kind} by id as JSON lines; exit 1 if any is not found",
        )
        sub.add_argument("ids", nargs="+", type=_id, metavar="ID")
    for name, text in (
        ("account-transfers", "an account's transfers (its statement), one page"),
        ("account-balances", "an account's balance history (history flag), one page"),
    ):
        sub = command(ledger_commands_parsers, name, text)
        sub.add_argument("account_id", type=_id, metavar="ACCOUNT_ID")
        sub.add_argument("--debits", action="store_true", help="transfers debiting the account")
        sub.add_argument("--credits", action="store_true", help="transfers crediting it")
        _add_query_options(sub, ledger=False)
    for name, text in (
        ("query-accounts", "accounts matching user data, ledger and code (0 = any)"),
        ("query-transfers", "transfers matching user data, ledger and code (0 = any)"),
    ):
        sub = command(ledger_commands_parsers, name, text)
        _add_query_options(sub, ledger=True)
    command(ledger_commands_parsers, "expire", "expire pending transfers whose timeout passed")

    command(commands, "verify", "prove every ledger balances and the journal is untampered")

    bench = commands.add_parser("bench", help="benchmarks; each prints JSON lines of figures")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    bench_ledger = bench_commands.add_parser(
        "ledger", help="create_transfers throughput and latency per backend and batch size"
    )
    bench_ledger.add_argument(
        "--backend",
        choices=("sqlite", "postgres", "all"),
        default="all",
        help="default: all (PostgreSQL is skipped with a note when unavailable)",
    )
    bench_ledger.add_argument(
        "--batch-sizes", type=_batch_sizes, default=(1, 100, BATCH_EVENTS_MAX)
    )
    bench_ledger.add_argument(
        "--transfers", type=_positive, default=None, help="per run (default: fill --min-seconds)"
    )
    bench_ledger.add_argument("--runs", type=_positive, default=3)
    bench_ledger.add_argument("--accounts", type=_positive, default=10_000)
    bench_ledger.add_argument("--min-seconds", type=float, default=2.0)
    bench_ledger.add_argument("--patterns", default="random,hot", help="random,hot")
    bench_ledger.add_argument(
        "--machine",
        action="store_true",
        help="first print how fast this machine is right now (a Python loop, raw SQLite "
        "inserts, a commit's fsync), to compare runs across days",
    )

    demo = command(
        commands,
        "demo",
        "a marketplace on the payment platform (1,000 buyers, 50 merchants, 3,000 orders) "
        "on a fresh database, ending with a summary and verify",
    )
    demo.add_argument("--seed", type=_u64, default=2024)
    demo.add_argument("--buyers", type=int, default=1_000, help="default: 1000")
    demo.add_argument("--merchants", type=int, default=50, help="default: 50")
    demo.add_argument("--orders", type=int, default=3_000, help="default: 3000")

    serve = command(commands, "serve", "run the REST API (docs at /docs) and background jobs")
    serve.add_argument("--database-url", dest="database", default=argparse.SUPPRESS)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_unsigned(65535, "port"), default=8080)
    serve.add_argument(
        "--admin-key",
        default=os.environ.get(ADMIN_KEY_ENVIRONMENT_VARIABLE, ""),
        help=f"the admin API key (default: ${ADMIN_KEY_ENVIRONMENT_VARIABLE}, else generated)",
    )
    # The group commit's defaults and bounds live with it (adapters/http/group_commit.py),
    # which is imported only when the server starts.
    serve.add_argument(
        "--group-max",
        type=_positive,
        default=None,
        help="single payments paid in one group commit, at most (default: 256; 1 turns "
        "grouping off)",
    )
    serve.add_argument(
        "--group-linger-ms",
        type=_milliseconds,
        default=None,
        help="how long a payment may wait for others to join its group, in milliseconds "
        "(default: 0, never wait; at most 50)",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="server processes sharing the port and the database (default: 1; about one a "
        "core on a busy server; docs/operations.md)",
    )
    switches = commands.add_parser(
        "switches",
        help="show or set a running server's degradation switches",
        description="Show the switches of a running `paycell serve`, or set one: "
        "paycell switches reports off",
    )
    switches.add_argument("--url", default="http://127.0.0.1:8080", help="the server's URL")
    switches.add_argument(
        "--admin-key",
        default=os.environ.get(ADMIN_KEY_ENVIRONMENT_VARIABLE, ""),
        help=f"the admin API key (default: ${ADMIN_KEY_ENVIRONMENT_VARIABLE})",
    )
    switches.add_argument("name", nargs="?", help="a switch: reports, console, webhooks, ...")
    switches.add_argument("value", nargs="?", help="on/off (risk_mode: full/cheap)")
    alipay = command(
        commands,
        "alipay",
        "the Alipay gateway: register apps, the platform key, buyers' payment codes and scans",
    )
    from paycell.adapters.alipay.cli import add_commands

    add_commands(alipay)
    loadtest = commands.add_parser(
        "loadtest",
        help="drive the REST API with a Singles' Day curve, report, then check the books",
        description="drive the REST API with a Singles' Day curve (warm-up, spike, outage, "
        "backlog, decay), report, then check the books and run verify",
    )
    from paycell.adapters.loadtest.runner import add_arguments

    add_arguments(loadtest)
    return parser


def _require_existing(database: str) -> None:
    if is_postgres_url(database) or database == ":memory:":
        return
    path = database.removeprefix("sqlite:///")
    if not Path(path).exists():
        raise DatabaseNotFoundError(f"no database at {path!r} (create one with a write first)")


def _read_input(path: str, read: Callable[[IO[str]], list[_EVENT]]) -> list[_EVENT]:
    if path == "-":
        return read(sys.stdin)
    try:
        with open(path, encoding="utf-8") as stream:
            return read(stream)
    except OSError as error:
        raise UnreadableInputError(f"cannot read {path!r}: {error.strerror}") from None


def _run_ledger_command(arguments: argparse.Namespace) -> int:
    name = arguments.ledger_command
    database = arguments.database
    out = sys.stdout
    # The whole input is checked before the database is even opened: bad input changes
    # nothing, not even by creating an empty database file.
    if name == "create-accounts":
        accounts = _read_input(arguments.file, codec.read_accounts)
        with Ledger(database) as ledger:
            return ledger_commands.write_accounts(ledger, accounts, out)
    if name == "create-transfers":
        transfers = _read_input(arguments.file, codec.read_transfers)
        with Ledger(database) as ledger:
            return ledger_commands.write_transfers(ledger, transfers, out)
    _require_existing(database)
    with Ledger(database) as ledger:
        if name == "lookup-accounts":
            return ledger_commands.lookup_accounts(ledger, arguments.ids, out)
        if name == "lookup-transfers":
            return ledger_commands.lookup_transfers(ledger, arguments.ids, out)
        if name == "account-transfers":
            return ledger_commands.account_transfers(ledger, arguments, out)
        if name == "account-balances":
            return ledger_commands.account_balances(ledger, arguments, out)
        if name == "query-accounts":
            return ledger_commands.query_accounts(ledger, arguments, out)
        if name == "query-transfers":
            return ledger_commands.query_transfers(ledger, arguments, out)
        assert name == "expire", name
        return ledger_commands.expire(ledger, out)


def _run_verify(arguments: argparse.Namespace) -> int:
    _require_existing(arguments.database)
    progress = Progress()
    with Ledger(arguments.database) as ledger:
        report = ledger.verify(progress.say, progress.update)
    progress.finish()
    print(report.render())
    return EXIT_OK if report.ok else EXIT_FAILED


def _run_bench(arguments: argparse.Namespace) -> int:
    from paycell.adapters.cli import bench

    patterns = tuple(p.strip() for p in arguments.patterns.split(",") if p.strip())
    unknown = [p for p in patterns if p not in bench.PATTERNS]
    if unknown or not patterns:
        raise InvalidInputError(f"--patterns: unknown pattern(s) {unknown}; use random,hot")
    progress = Progress()
    backends: tuple[str, ...]
    if arguments.backend == "all":
        backends = ("sqlite", "postgres") if bench.postgres_available() else ("sqlite",)
        if "postgres" not in backends:
            progress.say("bench ledger: PostgreSQL unavailable here, skipping it")
    else:
        backends = (arguments.backend,)
    settings = bench.BenchSettings(
        backends=backends,
        batch_sizes=arguments.batch_sizes,
        patterns=patterns,
        transfers=arguments.transfers,
        runs=arguments.runs,
        accounts=max(arguments.accounts, 2),
        min_seconds=arguments.min_seconds,
        machine=arguments.machine,
    )
    try:
        return bench.run_bench(settings, sys.stdout, progress)
    except bench.BenchUnavailableError as error:
        print(f"paycell: error: unavailable: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _run_demo(arguments: argparse.Namespace) -> int:
    from paycell.adapters.cli import platform_demo as demo

    size = demo.DemoSize(arguments.buyers, arguments.merchants, arguments.orders)
    return demo.run_demo(arguments.database, arguments.seed, sys.stdout, Progress(), size)


def _run_serve(arguments: argparse.Namespace) -> int:
    import secrets

    from paycell.adapters.http.group_commit import DEFAULT_GROUP_COMMIT, GroupCommitConfig
    from paycell.adapters.http.serve import WORKERS_MAX, serve

    if arguments.workers > WORKERS_MAX:
        print(f"paycell serve: --workers must be at most {WORKERS_MAX}", file=sys.stderr)
        return 2
    size_max = arguments.group_max or DEFAULT_GROUP_COMMIT.size_max
    linger_ms = arguments.group_linger_ms
    try:
        group_commit = GroupCommitConfig(
            size_max=size_max,
            linger_seconds=(
                DEFAULT_GROUP_COMMIT.linger_seconds if linger_ms is None else linger_ms / 1000
            ),
        )
    except ValueError as problem:
        print(f"paycell serve: {problem}", file=sys.stderr)
        return 2
    admin_key = arguments.admin_key
    if not admin_key:
        admin_key = secrets.token_urlsafe(24)
        print(f"paycell serve: generated admin key {admin_key}", file=sys.stdout)
    return serve(
        arguments.database,
        arguments.host,
        arguments.port,
        admin_key,
        sys.stdout,
        # A group of one is no group: each payment takes the ordinary path.
        group_commit=group_commit if size_max > 1 else None,
        workers=arguments.workers,
    )


def _run_switches(arguments: argparse.Namespace) -> int:
    """GET or PUT /v1/admin/switches on a running server; prints the state as JSON."""
    import json
    import urllib.error
    import urllib.request

    if not arguments.admin_key:
        raise InvalidInputError(f"give --admin-key or ${ADMIN_KEY_ENVIRONMENT_VARIABLE}")
    if arguments.name is not None and arguments.value is None:
        raise InvalidInputError("give a switch and its value, e.g. `paycell switches reports off`")
    url = arguments.url.rstrip("/") + "/v1/admin/switches"
    headers = {"Authorization": f"Bearer {arguments.admin_key}"}
    data = None
    if arguments.name is not None:
        data = json.dumps({arguments.name: arguments.value}).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(
        url, data=data, headers=headers, method="GET" if data is None else "PUT"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            state = json.loads(response.read())
    except urllib.error.HTTPError as refused:
        try:
            error = json.loads(refused.read())["error"]
            print(f"paycell: error: {error['code']}: {error['message']}", file=sys.stderr)
        except (ValueError, KeyError, TypeError):
            print(f"paycell: error: HTTP {refused.code}", file=sys.stderr)
        return EXIT_BAD_INPUT if refused.code in (400, 404, 422) else EXIT_FAILED
    except (urllib.error.URLError, OSError) as unreachable:
        print(f"paycell: error: unavailable: {url}: {unreachable}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    state.pop("object", None)
    for name, value in state.items():
        print(f"{name} {value}")
    return EXIT_OK


def _infrastructure_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, sqlite3.Error]
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    return tuple(errors)


def run(arguments: argparse.Namespace) -> int:
    if arguments.command == "ledger":
        return _run_ledger_command(arguments)
    if arguments.command == "verify":
        return _run_verify(arguments)
    if arguments.command == "bench":
        return _run_bench(arguments)
    if arguments.command == "serve":
        return _run_serve(arguments)
    if arguments.command == "switches":
        return _run_switches(arguments)
    if arguments.command == "alipay":
        from paycell.adapters.alipay import cli as alipay_cli

        return alipay_cli.run(arguments, sys.stdout, sys.stderr)
    if arguments.command == "loadtest":
        from paycell.adapters.loadtest import runner

        return runner.run(arguments, sys.stdout, sys.stderr)
    assert arguments.command == "demo", arguments.command
    return _run_demo(arguments)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        arguments = parser.parse_args(argv)
    except SystemExit as exit_request:
        # argparse has printed its usage message; --help exits 0, a usage error 2.
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_BAD_INPUT
    try:
        return run(arguments)
    except InvalidInputError as error:
        print(f"paycell: error: {error.code}: {error.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except PaycellError as error:
        # Not the input's fault (a database from a newer paycell): said, not a traceback.
        print(f"paycell: error: {error.code}: {error.message}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        # `paycell ... | head`: the reader went away; nothing more to say.
        sys.stderr.close()
        return EXIT_FAILED
    except ModuleNotFoundError as error:
        if error.name != "paycell.adapters.storage.postgres":
            raise
        print(
            "paycell: error: unavailable: the PostgreSQL backend is not installed", file=sys.stderr
        )
        return EXIT_UNAVAILABLE
    except _infrastructure_errors() as error:
        print(f"paycell: error: unavailable: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
