"""Several currencies in one ledger database: each ledger (currency) balances on its own, money
never crosses ledgers in one transfer, and an exchange is two linked transfers through
per-currency liquidity accounts that apply together or not at all.
"""

from paycell import Account, AccountFlags, Ledger, Transfer, TransferFlags
from tests.contract.conftest import EUR, USD, open_accounts

NOT_OVERDRAWN = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS

USD_CHANNEL = 1  # where dollars enter from the bank
EUR_CHANNEL = 2
USD_LIQUIDITY = 10  # the platform's dollar float, bought in exchanges
EUR_LIQUIDITY = 20  # the platform's euro float, paid out in exchanges
ALICE_USD = 100
BOB_EUR = 200


def open_exchange_books(ledger: Ledger) -> None:
    open_accounts(
        ledger,
        Account(id=USD_CHANNEL, ledger=USD, code=1),
        Account(id=EUR_CHANNEL, ledger=EUR, code=1),
        Account(id=USD_LIQUIDITY, ledger=USD, code=2),
        Account(id=EUR_LIQUIDITY, ledger=EUR, code=2, flags=NOT_OVERDRAWN),
        Account(id=ALICE_USD, ledger=USD, code=3, flags=NOT_OVERDRAWN),
        Account(id=BOB_EUR, ledger=EUR, code=3, flags=NOT_OVERDRAWN),
    )
    funding = ledger.create_transfers(
        [
            Transfer(1, USD_CHANNEL, ALICE_USD, 10_000, ledger=USD, code=1),
            Transfer(2, EUR_CHANNEL, EUR_LIQUIDITY, 5_000, ledger=EUR, code=1),
        ]
    )
    assert [r.value for r in funding] == ["ok", "ok"]


def exchange(ledger: Ledger, first_id: int, dollars: int, euros: int) -> list[str]:
    """Alice pays `dollars` into the dollar float; the euro float pays Bob `euros`."""
    results = ledger.create_transfers(
        [
            Transfer(
                first_id,
                ALICE_USD,
                USD_LIQUIDITY,
                dollars,
                ledger=USD,
                code=9,
                flags=TransferFlags.LINKED,
            ),
            Transfer(first_id + 1, EUR_LIQUIDITY, BOB_EUR, euros, ledger=EUR, code=9),
        ]
    )
    return [r.value for r in results]


def posted(ledger: Ledger, *ids: int) -> list[tuple[int, int]]:
    return [(a.debits_posted, a.credits_posted) for a in ledger.lookup_accounts(ids)]


def test_transfer_between_accounts_on_different_ledgers_is_rejected_and_changes_nothing(
    ledger: Ledger,
) -> None:
    open_exchange_books(ledger)
    before = ledger.lookup_accounts([ALICE_USD, BOB_EUR])

    results = ledger.create_transfers([Transfer(50, ALICE_USD, BOB_EUR, 100, ledger=USD, code=1)])

    assert [r.value for r in results] == ["accounts_must_have_the_same_ledger"]
    assert ledger.lookup_accounts([ALICE_USD, BOB_EUR]) == before
    assert ledger.lookup_transfers([50]) == []
    assert ledger.verify().ok


def test_currency_exchange_moves_both_legs_through_liquidity_accounts(ledger: Ledger) -> None:
    open_exchange_books(ledger)

    assert exchange(ledger, 60, dollars=1_000, euros=920) == ["ok", "ok"]

    assert posted(ledger, ALICE_USD, USD_LIQUIDITY) == [(1_000, 10_000), (0, 1_000)]
    assert posted(ledger, EUR_LIQUIDITY, BOB_EUR) == [(920, 5_000), (0, 920)]
    report = ledger.verify()
    assert report.ok, report.render()
    assert report.ledgers[USD].debits_posted == report.ledgers[USD].credits_posted == 11_000
    assert report.ledgers[EUR].debits_posted == report.ledgers[EUR].credits_posted == 5_920


def test_currency_exchange_rolls_back_the_first_leg_when_the_second_fails(
    ledger: Ledger,
) -> None:
    open_exchange_books(ledger)
    before = ledger.lookup_accounts([ALICE_USD, USD_LIQUIDITY, EUR_LIQUIDITY, BOB_EUR])

    # The euro float holds 5,000; paying out 9,000 would overdraw it.
    results = exchange(ledger, 70, dollars=9_800, euros=9_000)

    assert results == ["linked_event_failed", "exceeds_credits"]
    assert ledger.lookup_accounts([ALICE_USD, USD_LIQUIDITY, EUR_LIQUIDITY, BOB_EUR]) == before
    assert ledger.lookup_transfers([70, 71]) == []
    assert ledger.verify().ok
    # The second leg's failure depended on balances, so its id stays failed: retrying the
    # same exchange cannot succeed later. A new exchange, with new ids, can.
    assert exchange(ledger, 70, dollars=1_000, euros=920) == [
        "linked_event_failed",
        "id_already_failed",
    ]
    assert exchange(ledger, 80, dollars=1_000, euros=920) == ["ok", "ok"]
