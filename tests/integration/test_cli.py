"""The `paycell` command line, run in-process through `main(argv)` and as the console script."""

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from paycell import Ledger, Transfer
from paycell.adapters.cli.main import main
from paycell.core.currency import currency_for_code, parse_amount
from paycell.core.payments import chart
from paycell.platform import Platform
from tests.integration.sqlite_files import alter_logged_changes

ROOT = Path(__file__).resolve().parents[2]
BIG = 2**64 + 7  # ids and amounts wider than 64 bits stay JSON integers

ACCOUNTS: list[dict[str, Any]] = [
    {"id": 1, "ledger": 156, "code": 1},
    {"id": 2, "ledger": 156, "code": 1, "flags": ["debits_must_not_exceed_credits", "history"]},
    {"id": BIG, "ledger": 156, "code": 2, "user_data_128": BIG},
]
TRANSFERS: list[dict[str, Any]] = [
    {"id": 10, "debit_account_id": 1, "credit_account_id": 2, "amount": BIG, "ledger": 156,
     "code": 1},
    {"id": 11, "debit_account_id": 2, "credit_account_id": BIG, "amount": 5, "ledger": 156,
     "code": 1, "flags": ["linked"]},
    {"id": 12, "debit_account_id": 2, "credit_account_id": 1, "amount": 7, "ledger": 156,
     "code": 1, "flags": ["pending"], "timeout": 3600},
]  # fmt: skip


def write_lines(path: Path, objects: Sequence[Mapping[str, Any]]) -> str:
    path.write_text("".join(json.dumps(o) + "\n" for o in objects))
    return str(path)


def run(
    capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None
) -> tuple[int, list[str], str]:
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = main(list(argv))
    finally:
        sys.stdin = sys.__stdin__
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def results(lines: list[str]) -> list[tuple[int, int, str]]:
    return [(r["index"], r["id"], r["result"]) for r in map(json.loads, lines)]


def test_create_and_lookup_round_trip(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts_file = write_lines(tmp_path / "accounts.jsonl", ACCOUNTS)
    code, out, _ = run(capsys, "--database", database_url, "ledger", "create-accounts",
                       accounts_file)  # fmt: skip
    assert code == 0
    assert results(out) == [(0, 1, "ok"), (1, 2, "ok"), (2, BIG, "ok")]

    # Transfers from stdin, the --database option after the subcommand.
    stdin = "".join(json.dumps(t) + "\n" for t in TRANSFERS)
    code, out, _ = run(capsys, "ledger", "create-transfers", "--database", database_url,
                       stdin=stdin)  # fmt: skip
    assert code == 0
    assert results(out) == [(0, 10, "ok"), (1, 11, "ok"), (2, 12, "ok")]

    code, out, _ = run(capsys, "--database", database_url, "ledger", "lookup-accounts",
                       "1", "2", str(BIG))  # fmt: skip
    assert code == 0
    found = [json.loads(line) for line in out]
    assert [a["id"] for a in found] == [1, 2, BIG]
    assert found[1]["credits_posted"] == BIG
    assert found[1]["debits_posted"] == 5
    assert found[1]["debits_pending"] == 7
    assert found[1]["flags"] == 2 | 8
    assert found[2]["user_data_128"] == BIG
    assert all(a["timestamp"] > 0 for a in found)

    code, out, _ = run(capsys, "--database", database_url, "ledger", "lookup-transfers",
                       "12", "10")  # fmt: skip
    assert code == 0
    looked_up = [json.loads(line) for line in out]
    assert [t["id"] for t in looked_up] == [12, 10]
    assert {**looked_up[1], "timestamp": 0} == Transfer(**TRANSFERS[0])._asdict()
    assert looked_up[0]["flags"] == 2
    assert looked_up[0]["timeout"] == 3600

    # A replay of the same input returns exists and exit 0: nothing applies twice.
    code, out, _ = run(capsys, "--database", database_url, "ledger", "create-transfers",
                       stdin=stdin)  # fmt: skip
    assert code == 0
    assert {r for _, _, r in results(out)} <= {"exists", "linked_event_failed"}
    with Ledger(database_url) as ledger:
        assert ledger.lookup_accounts([2])[0].credits_posted == BIG

    # A chain that links an existing transfer to a new one is not a replay: the new one is
    # rejected (linked_event_failed) and the exit code says so.
    chain = [{**TRANSFERS[1]}, {**TRANSFERS[2], "id": 13}]
    code, out, _ = run(capsys, "--database", database_url, "ledger", "create-transfers",
                       stdin="".join(json.dumps(t) + "\n" for t in chain))  # fmt: skip
    assert code == 1
    assert results(out) == [(0, 11, "exists"), (1, 13, "linked_event_failed")]


def test_statements_and_queries(sqlite_url: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    run(capsys, "--database", sqlite_url, "ledger", "create-accounts",
        write_lines(tmp_path / "a.jsonl", ACCOUNTS))  # fmt: skip
    run(capsys, "--database", sqlite_url, "ledger", "create-transfers",
        write_lines(tmp_path / "t.jsonl", TRANSFERS))  # fmt: skip
    database = ["--database", sqlite_url, "ledger"]

    code, out, _ = run(capsys, *database, "account-transfers", "2")
    assert code == 0
    assert [json.loads(line)["id"] for line in out] == [10, 11, 12]
    _, out, _ = run(capsys, *database, "account-transfers", "2", "--reversed", "--limit", "2")
    assert [json.loads(line)["id"] for line in out] == [12, 11]
    _, out, _ = run(capsys, *database, "account-transfers", "2", "--credits")
    assert [json.loads(line)["id"] for line in out] == [10]
    _, out, _ = run(capsys, *database, "account-transfers", "2", "--debits")
    assert [json.loads(line)["id"] for line in out] == [11, 12]

    _, out, _ = run(capsys, *database, "account-balances", "2")
    balances = [json.loads(line) for line in out]
    assert [b["credits_posted"] for b in balances] == [BIG, BIG, BIG]
    assert [b["debits_posted"] for b in balances] == [0, 5, 5]
    assert [b["debits_pending"] for b in balances] == [0, 0, 7]

    _, out, _ = run(capsys, *database, "query-accounts", "--code", "2")
    assert [json.loads(line)["id"] for line in out] == [BIG]
    _, out, _ = run(capsys, *database, "query-accounts", "--user-data-128", str(BIG))
    assert [json.loads(line)["id"] for line in out] == [BIG]
    _, out, _ = run(capsys, *database, "query-transfers", "--ledger", "156", "--reversed")
    assert [json.loads(line)["id"] for line in out] == [12, 11, 10]

    code, out, _ = run(capsys, *database, "expire")
    assert code == 0
    assert json.loads(out[0]) == {"expired": 0}


def test_rejected_events_exit_1_and_missing_ids_exit_1(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "--database", sqlite_url, "ledger", "create-accounts",
        write_lines(tmp_path / "a.jsonl", ACCOUNTS[:2]))  # fmt: skip
    transfers = [
        {"id": 20, "debit_account_id": 2, "credit_account_id": 1, "amount": 1, "ledger": 156,
         "code": 1},  # the guarded account 2 has nothing
        {"id": 21, "debit_account_id": 1, "credit_account_id": 99, "amount": 1, "ledger": 156,
         "code": 1},
        {"id": 22, "debit_account_id": 1, "credit_account_id": 2, "amount": 3, "ledger": 156,
         "code": 1},
    ]  # fmt: skip
    code, out, _ = run(capsys, "--database", sqlite_url, "ledger", "create-transfers",
                       write_lines(tmp_path / "t.jsonl", transfers))  # fmt: skip
    assert code == 1
    assert results(out) == [
        (0, 20, "exceeds_credits"),
        (1, 21, "credit_account_not_found"),
        (2, 22, "ok"),
    ]
    code, out, err = run(capsys, "--database", sqlite_url, "ledger", "lookup-transfers",
                         "22", "21")  # fmt: skip
    assert code == 1
    assert [json.loads(line)["id"] for line in out] == [22]
    assert "transfer 21: not found" in err


def test_flags_as_names_or_integers_mean_the_same(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts: list[dict[str, Any]] = [
        {"id": 1, "ledger": 840, "code": 1, "flags": ["linked", "History"]},
        {"id": 2, "ledger": 840, "code": 1, "flags": "history"},
        {"id": 3, "ledger": 840, "code": 1, "flags": 8},
    ]
    code, _, _ = run(capsys, "--database", sqlite_url, "ledger", "create-accounts",
                     write_lines(tmp_path / "a.jsonl", accounts))  # fmt: skip
    assert code == 0
    with Ledger(sqlite_url) as ledger:
        assert [a.flags for a in ledger.lookup_accounts([1, 2, 3])] == [9, 8, 8]


BAD_TRANSFER_LINES = [
    pytest.param('{"id": 30, "amount": -5}', "invalid_field", "amount", id="negative-amount"),
    pytest.param('{"id": 30, "amont": 5}', "unknown_field", "amont", id="unknown-field"),
    pytest.param('{"id": 30, "flags": ["pendng"]}', "unknown_flag", "pendng", id="unknown-flag"),
    pytest.param('{"id": 30, "flags": [2]}', "unknown_flag", "flags", id="flag-not-a-name"),
    pytest.param('{"id": 30, "amount": 1.5}', "invalid_field", "amount", id="float-amount"),
    pytest.param('{"id": 30, "amount": "100"}', "invalid_field", "amount", id="string-amount"),
    pytest.param('{"id": 30, "amount": true}', "invalid_field", "amount", id="bool-amount"),
    pytest.param(f'{{"id": {2**128}}}', "invalid_field", "128", id="id-too-wide"),
    pytest.param('{"id": 30, "code": 65536}', "invalid_field", "code", id="code-too-wide"),
    pytest.param('{"amount": 5}', "invalid_field", "id", id="missing-id"),
    pytest.param('{"id": 30,', "invalid_json", "line 3", id="truncated-json"),
    pytest.param("[30]", "invalid_json", "object", id="not-an-object"),
    pytest.param("\ufeffnonsense", "invalid_json", "line 3", id="not-json"),
]


@pytest.mark.parametrize(("bad_line", "code", "mention"), BAD_TRANSFER_LINES)
def test_bad_input_exits_2_with_its_code_and_changes_nothing(
    sqlite_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    bad_line: str,
    code: str,
    mention: str,
) -> None:
    run(capsys, "--database", sqlite_url, "ledger", "create-accounts",
        write_lines(tmp_path / "a.jsonl", ACCOUNTS[:2]))  # fmt: skip
    good = [
        json.dumps({"id": n, "debit_account_id": 1, "credit_account_id": 2, "amount": 1,
                    "ledger": 156, "code": 1})
        for n in (40, 41)
    ]  # fmt: skip
    (tmp_path / "t.jsonl").write_text("\n".join([*good, bad_line]) + "\n")
    exit_code, out, err = run(capsys, "--database", sqlite_url, "ledger", "create-transfers",
                              str(tmp_path / "t.jsonl"))  # fmt: skip
    assert exit_code == 2
    assert out == []
    assert err.startswith(f"paycell: error: {code}: ")
    assert mention in err
    assert "Traceback" not in err
    with Ledger(sqlite_url) as ledger:
        assert ledger.lookup_transfers([40, 41]) == []


def test_bad_input_after_a_full_batch_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = str(tmp_path / "fresh.db")
    lines = [
        json.dumps({"id": n, "debit_account_id": 1, "credit_account_id": 2, "amount": 1,
                    "ledger": 156, "code": 1})
        for n in range(1, 8_200)
    ]  # fmt: skip
    lines.append('{"id": 9000, "amount": -1}')
    code, out, err = run(capsys, "--database", database, "ledger", "create-transfers",
                         stdin="\n".join(lines))  # fmt: skip
    assert code == 2
    assert "event 8199: amount: must not be negative" in err
    assert out == []
    # The input is checked before the database is opened: not even an empty file appears.
    assert not Path(database).exists()


def test_more_than_one_batch_of_input_is_written_in_batches(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts = [{"id": n, "ledger": 156, "code": 1} for n in range(1, 8_192 + 1)]
    code, out, _ = run(capsys, "--database", sqlite_url, "ledger", "create-accounts",
                       stdin="\n".join(map(json.dumps, accounts)))  # fmt: skip
    assert code == 0
    assert len(out) == 8_192
    assert json.loads(out[-1]) == {"index": 8_191, "id": 8_192, "result": "ok"}
    with Ledger(sqlite_url) as ledger:
        report = ledger.verify()
    assert report.journal_entries == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["ledger", "lookup-accounts", "--", "-1"],
        ["ledger", "lookup-accounts", "abc"],
        ["ledger", "lookup-accounts", str(2**128)],
        ["ledger", "account-transfers", "1", "--limit", "9000"],
        ["ledger", "nonsense"],
        ["bench", "ledger", "--batch-sizes", "0"],
        ["bench", "ledger", "--batch-sizes", "8191"],
        [],
    ],
)
def test_bad_arguments_exit_2(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = run(capsys, "--database", sqlite_url, *argv)
    assert code == 2
    assert "usage:" in err
    assert "Traceback" not in err


def test_reading_a_missing_database_or_input_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.db")
    code, _, err = run(capsys, "--database", missing, "verify")
    assert code == 2
    assert "database_not_found" in err
    code, _, err = run(capsys, "--database", missing, "ledger", "lookup-accounts", "1")
    assert code == 2
    code, _, err = run(capsys, "--database", missing, "ledger", "create-accounts",
                       str(tmp_path / "nope.jsonl"))  # fmt: skip
    assert code == 2
    assert "unreadable_input" in err
    assert not Path(missing).exists()


def test_an_unreachable_postgres_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--database", "postgresql://nobody@127.0.0.1:1/none", "verify")
    assert code == 3
    assert err.startswith("paycell: error: unavailable: ")


def test_database_defaults_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "from-env.db"
    monkeypatch.setenv("PAYCELL_DATABASE_URL", str(database))
    code, _, _ = run(capsys, "ledger", "create-accounts", stdin=json.dumps(ACCOUNTS[0]))
    assert code == 0
    assert database.exists()


def test_verify_passes_then_fails_on_a_tampered_database(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "--database", sqlite_url, "ledger", "create-accounts",
        write_lines(tmp_path / "a.jsonl", ACCOUNTS))  # fmt: skip
    run(capsys, "--database", sqlite_url, "ledger", "create-transfers",
        write_lines(tmp_path / "t.jsonl", TRANSFERS))  # fmt: skip
    code, out, err = run(capsys, "--database", sqlite_url, "verify")
    assert code == 0
    assert out[-1].startswith("OK: every ledger balances")
    assert "checking the journal's hash chain" in err  # progress goes to stderr

    # Someone edits a balance behind the ledger's back.
    connection = sqlite3.connect(sqlite_url)
    with connection:
        connection.execute("DROP TRIGGER accounts_change_through_the_log")
        connection.execute("UPDATE accounts SET debits_posted = 6 WHERE id = 2")
        alter_logged_changes(
            lambda sql, parameters: connection.execute(sql, parameters).fetchall(),
            2,
            debits_posted=6,
        )
    connection.close()
    code, out, _ = run(capsys, "--database", sqlite_url, "verify")
    assert code == 1
    assert any(line.startswith("FAILED") for line in out)
    assert any("account 2" in line for line in out)


def test_demo_runs_a_marketplace_and_verifies(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    small = ["--buyers", "40", "--merchants", "4", "--orders", "120"]
    code, out, err = run(capsys, "demo", "--database", database_url, *small)
    assert code == 0, err
    text = "\n".join(out)
    assert "marketplace summary (CNY)" in text
    assert "buyers 40, merchants 4, orders 120" in text
    assert "OK: every ledger balances, balances match the journal, chain intact" in text
    assert "verifying the books" in err
    cny = currency_for_code("CNY")
    figures = {
        match[1]: parse_amount(match[2], cny)
        for match in map(re.compile(r"^  (\S.*?) +(\d+\.\d\d) CNY$").match, out)
        if match
    }
    assert set(figures) == {
        "topped up",
        "paid by buyers",
        "refunded",
        "fees earned",
        "escrow still held",
        "settled to merchants",
        "withdrawn by buyers",
    }
    assert figures["paid by buyers"] > figures["refunded"] > 0
    # Whatever was paid and not refunded is either a fee, still in escrow, settled, or left in
    # a merchant's balance (daily settlement pays balances out; only a declined payout leaves
    # money there). What came in through the bank and was neither spent nor withdrawn is in
    # the buyers' wallets.
    with Platform(database_url) as platform:
        accounts = list(platform.store.all_accounts())
        stored = (accounts, list(platform.store.all_transfers()), list(platform.store.all_orders()))

    def held_in(code: chart.AccountCode) -> int:
        return sum(a.credits_posted - a.debits_posted for a in accounts if a.code == code)

    kept = figures["paid by buyers"] - figures["refunded"]
    assert kept == (
        figures["fees earned"]
        + figures["escrow still held"]
        + figures["settled to merchants"]
        + held_in(chart.AccountCode.MERCHANT_BALANCE)
    )
    assert figures["topped up"] - kept - figures["withdrawn by buyers"] == held_in(
        chart.AccountCode.USER_WALLET
    )

    # A second run needs a fresh database: it says so and changes nothing.
    code, out, err = run(capsys, "demo", "--database", database_url, *small)
    assert code == 2
    assert "already holds a marketplace" in err
    with Platform(database_url) as platform:
        assert stored == (
            list(platform.store.all_accounts()),
            list(platform.store.all_transfers()),
            list(platform.store.all_orders()),
        )


def test_bench_prints_one_json_line_per_configuration(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(
        capsys, "bench", "ledger", "--backend", "sqlite", "--batch-sizes", "1,25",
        "--transfers", "50", "--runs", "2", "--accounts", "100",
    )  # fmt: skip
    assert code == 0, err
    figures = [json.loads(line) for line in out]
    assert [(f["batch_size"], f["pattern"]) for f in figures] == [
        (1, "random"), (1, "hot"), (25, "random"), (25, "hot"),
    ]  # fmt: skip
    for f in figures:
        assert f["bench"] == "ledger"
        assert f["backend"] == "sqlite"
        assert f["transfers"] == 100
        assert f["runs"] == 2
        assert len(f["transfers_per_second_runs"]) == 2
        assert f["transfers_per_second_median"] > 0
        assert 0 < f["batch_latency_ms_p50"] <= f["batch_latency_ms_p99"]
        assert f["peak_rss_mb"] > 0
    assert "sqlite batch_size=1 pattern=random" in err


def test_bench_machine_line_says_how_fast_the_machine_is_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(
        capsys, "bench", "ledger", "--backend", "sqlite", "--batch-sizes", "5",
        "--transfers", "10", "--runs", "1", "--accounts", "10", "--patterns", "hot", "--machine",
    )  # fmt: skip
    assert code == 0, err
    machine, ledger = (json.loads(line) for line in out)
    assert machine["bench"] == "machine"
    assert machine["cpus"] >= 1
    assert machine["python_loop_seconds"] > 0
    assert len(machine["sqlite_inserts_per_second_runs"]) == 3
    assert min(machine["sqlite_inserts_per_second_runs"]) > 0
    assert (
        machine["sqlite_inserts_per_second"] == sorted(machine["sqlite_inserts_per_second_runs"])[1]
    )
    assert machine["sqlite_commit_ms_median"] > 0
    assert (ledger["bench"], ledger["pattern"]) == ("ledger", "hot")
    assert "how fast this machine is" in err


def _subprocess_environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}


def test_console_script_and_bench_script(tmp_path: Path) -> None:
    # `python -m paycell.adapters.cli.main` is what the `paycell` console script runs.
    bad = subprocess.run(
        [sys.executable, "-m", "paycell.adapters.cli.main", "--database",
         str(tmp_path / "x.db"), "ledger", "create-transfers", "-"],
        input='{"id": 1, "amount": -1}\n', capture_output=True, text=True,
        env=_subprocess_environment(), check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "invalid_field" in bad.stderr
    assert "Traceback" not in bad.stderr

    bench = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ledger.py"), "--backend", "sqlite",
         "--batch-sizes", "10", "--transfers", "20", "--runs", "1", "--accounts", "10",
         "--patterns", "hot"],
        capture_output=True, text=True, env=_subprocess_environment(), check=False,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    (line,) = bench.stdout.splitlines()
    assert json.loads(line)["pattern"] == "hot"
