"""A long verify reports how far it has got: each step, and a counter every few thousand
records that the CLI draws in place on a terminal."""

from pathlib import Path

from paycell import Account, Ledger, Transfer

CNY = 156


def test_verify_counts_journal_entries_and_accounts_as_it_goes(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        for start in (1, 5_001):
            results = ledger.create_accounts(
                [Account(id=i, ledger=CNY, code=1) for i in range(start, start + 5_000)]
            )
            assert {r.value for r in results} == {"ok"}
        for n in range(1, 1_200):
            transfer = Transfer(
                id=n, debit_account_id=1 + n % 7, credit_account_id=9, amount=n, ledger=CNY, code=1
            )
            assert [r.value for r in ledger.create_transfers([transfer])] == ["ok"]
        steps: list[str] = []
        counts: list[tuple[str, int, int]] = []
        report = ledger.verify(
            steps.append, lambda what, done, total: counts.append((what, done, total))
        )
    assert report.ok, report.render()
    assert report.journal_entries == 1_201
    assert steps[:2] == [
        "checking the journal's hash chain",
        "recomputing balances from the journal",
    ]
    assert counts == [("journal entries", 1_000, 1_201), ("accounts", 10_000, 10_000)]
