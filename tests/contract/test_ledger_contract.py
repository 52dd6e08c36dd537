"""The ledger's storage contract: what every backend must do, run on SQLite and PostgreSQL.

Each test is a specification of one behaviour, observed only through `paycell.Ledger`.
"""

import sqlite3
from typing import Any

from paycell import (
    Account,
    AccountBalance,
    AccountFilter,
    AccountFilterFlags,
    AccountFlags,
    CreateAccountResult,
    Ledger,
    QueryFilter,
    QueryFilterFlags,
    Transfer,
    TransferFlags,
)
from tests.contract.conftest import CNY, EUR, USD, FakeClock, open_accounts

DEBITS = int(AccountFilterFlags.DEBITS)
CREDITS = int(AccountFilterFlags.CREDITS)
REVERSED = int(AccountFilterFlags.REVERSED)
BOTH = DEBITS | CREDITS


def cny_transfer(transfer_id: int, debit: int, credit: int, amount: int, **fields: Any) -> Transfer:
    return Transfer(
        id=transfer_id,
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        ledger=CNY,
        code=fields.pop("code", 1),
        **fields,
    )


def apply(ledger: Ledger, *transfers: Transfer) -> list[str]:
    return [result.value for result in ledger.create_transfers(transfers)]


def statement_ids(ledger: Ledger, account_filter: AccountFilter) -> list[int]:
    return [t.id for t in ledger.get_account_transfers(account_filter)]


def three_accounts_with_traffic(ledger: Ledger) -> None:
    """Accounts 1, 2, 3; transfers 101..110 alternate 1->2 and 2->3, one batch each."""
    open_accounts(
        ledger,
        Account(id=1, ledger=CNY, code=1),
        Account(id=2, ledger=CNY, code=1, flags=AccountFlags.HISTORY),
        Account(id=3, ledger=CNY, code=1),
    )
    for n in range(10):
        debit, credit = (1, 2) if n % 2 == 0 else (2, 3)
        assert apply(ledger, cny_transfer(101 + n, debit, credit, 10 * (n + 1))) == ["ok"]


# Create and look up ---------------------------------------------------------------------------


def test_lookup_returns_found_records_in_the_order_asked_and_omits_missing_ids(
    ledger: Ledger,
) -> None:
    open_accounts(ledger, *(Account(id=i, ledger=CNY, code=1) for i in (7, 8, 9)))
    assert apply(ledger, cny_transfer(70, 7, 8, 5), cny_transfer(71, 8, 9, 6)) == ["ok", "ok"]

    assert [a.id for a in ledger.lookup_accounts([9, 404, 7, 8])] == [9, 7, 8]
    assert [t.id for t in ledger.lookup_transfers([71, 404, 70])] == [71, 70]
    assert ledger.lookup_accounts([404]) == []


def test_created_records_carry_ledger_timestamps_and_their_fields(
    ledger: Ledger, clock: FakeClock
) -> None:
    open_accounts(
        ledger,
        Account(id=1, ledger=CNY, code=10, user_data_128=5, user_data_64=6, user_data_32=7),
        Account(id=2, ledger=CNY, code=10),
    )
    assert apply(ledger, cny_transfer(1, 1, 2, 250, user_data_32=9)) == ["ok"]

    first, second = ledger.lookup_accounts([1, 2])
    assert (first.user_data_128, first.user_data_64, first.user_data_32) == (5, 6, 7)
    assert clock.now <= first.timestamp < second.timestamp
    (transfer,) = ledger.lookup_transfers([1])
    assert transfer.timestamp > second.timestamp
    assert (transfer.amount, transfer.user_data_32, transfer.code) == (250, 9, 1)
    assert (first.debits_posted, second.credits_posted) == (250, 250)


def test_creating_an_existing_account_again_reports_exists_and_changes_nothing(
    ledger: Ledger,
) -> None:
    open_accounts(ledger, Account(id=1, ledger=CNY, code=1))
    (before,) = ledger.lookup_accounts([1])

    assert ledger.create_accounts([Account(id=1, ledger=CNY, code=1)]) == [
        CreateAccountResult.EXISTS
    ]
    assert ledger.create_accounts([Account(id=1, ledger=CNY, code=2)]) == [
        CreateAccountResult.EXISTS_WITH_DIFFERENT_CODE
    ]
    assert ledger.lookup_accounts([1]) == [before]


def test_a_retried_transfer_applies_once(ledger: Ledger) -> None:
    open_accounts(ledger, Account(id=1, ledger=CNY, code=1), Account(id=2, ledger=CNY, code=1))
    assert apply(ledger, cny_transfer(1, 1, 2, 100)) == ["ok"]

    assert apply(ledger, cny_transfer(1, 1, 2, 100)) == ["exists"]
    assert apply(ledger, cny_transfer(1, 1, 2, 999)) == ["exists_with_different_amount"]
    assert ledger.lookup_accounts([2])[0].credits_posted == 100


# Account statements --------------------------------------------------------------------------


def test_statement_lists_debits_credits_or_both_oldest_first(ledger: Ledger) -> None:
    three_accounts_with_traffic(ledger)

    assert statement_ids(ledger, AccountFilter(account_id=2, limit=100, flags=CREDITS)) == [
        101,
        103,
        105,
        107,
        109,
    ]
    assert statement_ids(ledger, AccountFilter(account_id=2, limit=100, flags=DEBITS)) == [
        102,
        104,
        106,
        108,
        110,
    ]
    assert statement_ids(ledger, AccountFilter(account_id=2, limit=100)) == list(range(101, 111))
    assert statement_ids(ledger, AccountFilter(account_id=1, limit=100, flags=DEBITS)) == [
        101,
        103,
        105,
        107,
        109,
    ]
    assert statement_ids(ledger, AccountFilter(account_id=1, limit=100, flags=CREDITS)) == []


def test_statement_time_range_is_inclusive_at_both_ends(ledger: Ledger) -> None:
    three_accounts_with_traffic(ledger)
    timestamps = [t.timestamp for t in ledger.lookup_transfers(list(range(101, 111)))]

    page = AccountFilter(
        account_id=2, timestamp_min=timestamps[2], timestamp_max=timestamps[5], limit=100
    )
    assert statement_ids(ledger, page) == [103, 104, 105, 106]
    after = AccountFilter(account_id=2, timestamp_min=timestamps[8], limit=100)
    assert statement_ids(ledger, after) == [109, 110]


def test_statement_filters_by_code_and_user_data(ledger: Ledger) -> None:
    open_accounts(ledger, Account(id=1, ledger=CNY, code=1), Account(id=2, ledger=CNY, code=1))
    assert (
        apply(
            ledger,
            cny_transfer(1, 1, 2, 1, code=7, user_data_128=50),
            cny_transfer(2, 1, 2, 1, code=8, user_data_64=60),
            cny_transfer(3, 2, 1, 1, code=7, user_data_32=70),
        )
        == ["ok"] * 3
    )

    assert statement_ids(ledger, AccountFilter(account_id=1, code=7, limit=10)) == [1, 3]
    assert statement_ids(ledger, AccountFilter(account_id=1, user_data_128=50, limit=10)) == [1]
    assert statement_ids(ledger, AccountFilter(account_id=2, user_data_64=60, limit=10)) == [2]
    assert statement_ids(ledger, AccountFilter(account_id=2, user_data_32=70, limit=10)) == [3]


def test_statement_pages_forwards_from_the_last_timestamp_seen(ledger: Ledger) -> None:
    three_accounts_with_traffic(ledger)

    pages: list[list[int]] = []
    timestamp_min = 0
    while True:
        page = ledger.get_account_transfers(
            AccountFilter(account_id=2, timestamp_min=timestamp_min, limit=4)
        )
        if not page:
            break
        pages.append([t.id for t in page])
        timestamp_min = page[-1].timestamp + 1
    assert pages == [[101, 102, 103, 104], [105, 106, 107, 108], [109, 110]]


def test_statement_pages_backwards_with_reversed_flag(ledger: Ledger) -> None:
    three_accounts_with_traffic(ledger)

    pages: list[list[int]] = []
    timestamp_max = 0
    while True:
        page = ledger.get_account_transfers(
            AccountFilter(account_id=2, timestamp_max=timestamp_max, limit=4, flags=BOTH | REVERSED)
        )
        if not page:
            break
        pages.append([t.id for t in page])
        timestamp_max = page[-1].timestamp - 1
    assert pages == [[110, 109, 108, 107], [106, 105, 104, 103], [102, 101]]


def test_an_invalid_statement_filter_selects_nothing(ledger: Ledger) -> None:
    three_accounts_with_traffic(ledger)

    assert ledger.get_account_transfers(AccountFilter(account_id=2, limit=0)) == []
    assert ledger.get_account_transfers(AccountFilter(account_id=2, limit=5, flags=0)) == []
    assert ledger.get_account_transfers(AccountFilter(account_id=404, limit=5)) == []
    inverted = AccountFilter(account_id=2, timestamp_min=10, timestamp_max=5, limit=5)
    assert ledger.get_account_transfers(inverted) == []


# Point-in-time balances ----------------------------------------------------------------------


def test_account_with_history_flag_has_its_balance_after_every_transfer(ledger: Ledger) -> None:
    three_accounts_with_traffic(ledger)
    transfers = ledger.lookup_transfers(list(range(101, 111)))

    balances = ledger.get_account_balances(AccountFilter(account_id=2, limit=100))

    # Account 2 is credited 10, 30, 50, 70, 90 and debited 20, 40, 60, 80, 100, alternately.
    expected: list[AccountBalance] = []
    debited = credited = 0
    for transfer in transfers:
        if transfer.credit_account_id == 2:
            credited += transfer.amount
        else:
            debited += transfer.amount
        expected.append(AccountBalance(0, debited, 0, credited, transfer.timestamp))
    assert balances == expected


def test_point_in_time_balance_is_the_last_one_at_or_before_a_moment(ledger: Ledger) -> None:
    three_accounts_with_traffic(ledger)
    moment = ledger.lookup_transfers([104])[0].timestamp

    (balance,) = ledger.get_account_balances(
        AccountFilter(account_id=2, timestamp_max=moment, limit=1, flags=BOTH | REVERSED)
    )
    assert balance == AccountBalance(0, 20 + 40, 0, 10 + 30, moment)


def test_balance_history_follows_the_statement_filters(ledger: Ledger) -> None:
    three_accounts_with_traffic(ledger)

    credits_only = ledger.get_account_balances(
        AccountFilter(account_id=2, limit=100, flags=CREDITS)
    )
    assert [b.credits_posted for b in credits_only] == [10, 40, 90, 160, 250]
    newest_two = ledger.get_account_balances(
        AccountFilter(account_id=2, limit=2, flags=BOTH | REVERSED)
    )
    assert [(b.debits_posted, b.credits_posted) for b in newest_two] == [(300, 250), (200, 250)]


def test_account_without_history_flag_has_no_balance_history(ledger: Ledger) -> None:
    three_accounts_with_traffic(ledger)

    assert ledger.get_account_balances(AccountFilter(account_id=1, limit=100)) == []
    assert ledger.get_account_balances(AccountFilter(account_id=404, limit=100)) == []


# Queries -------------------------------------------------------------------------------------


def test_query_accounts_by_user_data_ledger_and_code(ledger: Ledger) -> None:
    open_accounts(
        ledger,
        Account(id=1, ledger=CNY, code=1, user_data_128=500, user_data_64=60, user_data_32=7),
        Account(id=2, ledger=CNY, code=2, user_data_128=500),
        Account(id=3, ledger=USD, code=1, user_data_64=60),
        Account(id=4, ledger=USD, code=2, user_data_32=7),
    )

    def ids(query_filter: QueryFilter) -> list[int]:
        return [a.id for a in ledger.query_accounts(query_filter)]

    assert ids(QueryFilter(user_data_128=500, limit=10)) == [1, 2]
    assert ids(QueryFilter(user_data_64=60, limit=10)) == [1, 3]
    assert ids(QueryFilter(user_data_32=7, limit=10)) == [1, 4]
    assert ids(QueryFilter(ledger=USD, limit=10)) == [3, 4]
    assert ids(QueryFilter(code=2, limit=10)) == [2, 4]
    assert ids(QueryFilter(ledger=USD, code=2, limit=10)) == [4]
    assert ids(QueryFilter(limit=10, flags=QueryFilterFlags.REVERSED)) == [4, 3, 2, 1]
    assert ids(QueryFilter(limit=2)) == [1, 2]
    assert ids(QueryFilter(ledger=EUR, limit=10)) == []


def test_query_transfers_by_user_data_ledger_code_and_time(ledger: Ledger) -> None:
    open_accounts(ledger, Account(id=1, ledger=CNY, code=1), Account(id=2, ledger=CNY, code=1))
    assert (
        apply(
            ledger,
            cny_transfer(1, 1, 2, 1, user_data_128=500, code=3),
            cny_transfer(2, 1, 2, 1, user_data_64=60),
            cny_transfer(3, 2, 1, 1, user_data_32=7, code=3),
            cny_transfer(4, 2, 1, 1, user_data_128=500),
        )
        == ["ok"] * 4
    )
    timestamps = [t.timestamp for t in ledger.lookup_transfers([1, 2, 3, 4])]

    def ids(query_filter: QueryFilter) -> list[int]:
        return [t.id for t in ledger.query_transfers(query_filter)]

    assert ids(QueryFilter(user_data_128=500, limit=10)) == [1, 4]
    assert ids(QueryFilter(user_data_64=60, limit=10)) == [2]
    assert ids(QueryFilter(user_data_32=7, limit=10)) == [3]
    assert ids(QueryFilter(code=3, limit=10)) == [1, 3]
    assert ids(QueryFilter(ledger=CNY, limit=10)) == [1, 2, 3, 4]
    assert ids(QueryFilter(ledger=USD, limit=10)) == []
    window = QueryFilter(timestamp_min=timestamps[1], timestamp_max=timestamps[2], limit=10)
    assert ids(window) == [2, 3]
    assert ids(QueryFilter(limit=3, flags=QueryFilterFlags.REVERSED)) == [4, 3, 2]
    assert ids(QueryFilter(timestamp_min=timestamps[3] + 1, limit=10)) == []


# Pending transfers and their expiry ----------------------------------------------------------


def test_pending_transfer_expires_without_anyone_calling(ledger: Ledger, clock: FakeClock) -> None:
    open_accounts(ledger, Account(id=1, ledger=CNY, code=1), Account(id=2, ledger=CNY, code=1))
    pending = cny_transfer(10, 1, 2, 300, flags=TransferFlags.PENDING, timeout=60)
    assert apply(ledger, pending) == ["ok"]
    assert ledger.lookup_accounts([1])[0].debits_pending == 300

    clock.advance(59)
    assert ledger.lookup_accounts([1])[0].debits_pending == 300
    clock.advance(2)
    payer, payee = ledger.lookup_accounts([1, 2])
    assert (payer.debits_pending, payee.credits_pending) == (0, 0)
    assert (payer.debits_posted, payee.credits_posted) == (0, 0)

    post = cny_transfer(11, 1, 2, 300, pending_id=10, flags=TransferFlags.POST_PENDING_TRANSFER)
    assert apply(ledger, post) == ["pending_transfer_expired"]
    assert ledger.lookup_accounts([2])[0].credits_posted == 0
    assert ledger.verify().ok


def test_pending_transfer_is_posted_or_voided_once(ledger: Ledger) -> None:
    open_accounts(ledger, Account(id=1, ledger=CNY, code=1), Account(id=2, ledger=CNY, code=1))
    assert apply(
        ledger,
        cny_transfer(10, 1, 2, 300, flags=TransferFlags.PENDING),
        cny_transfer(20, 1, 2, 50, flags=TransferFlags.PENDING),
    ) == ["ok", "ok"]

    post = TransferFlags.POST_PENDING_TRANSFER
    void = TransferFlags.VOID_PENDING_TRANSFER
    assert apply(ledger, cny_transfer(11, 1, 2, 200, pending_id=10, flags=post)) == ["ok"]
    assert apply(ledger, cny_transfer(21, 1, 2, 0, pending_id=20, flags=void)) == ["ok"]
    payer, payee = ledger.lookup_accounts([1, 2])
    assert (payer.debits_pending, payer.debits_posted) == (0, 200)
    assert (payee.credits_pending, payee.credits_posted) == (0, 200)

    # Once posted or voided, a pending transfer is settled: neither can follow, in either order.
    assert apply(
        ledger,
        cny_transfer(12, 1, 2, 100, pending_id=10, flags=post),
        cny_transfer(13, 1, 2, 0, pending_id=10, flags=void),
        cny_transfer(22, 1, 2, 0, pending_id=20, flags=void),
        cny_transfer(23, 1, 2, 50, pending_id=20, flags=post),
    ) == [
        "pending_transfer_already_posted",
        "pending_transfer_already_posted",
        "pending_transfer_already_voided",
        "pending_transfer_already_voided",
    ]
    assert ledger.lookup_accounts([1, 2]) == [payer, payee]
    assert ledger.lookup_transfers([12, 13, 22, 23]) == []


# Exactly once across batches and restarts ----------------------------------------------------


def test_id_already_failed_persists_across_batches_and_reopen(
    database_url: str, clock: FakeClock
) -> None:
    with Ledger(database_url, clock=clock) as ledger:
        open_accounts(ledger, Account(id=1, ledger=CNY, code=1))
        assert apply(ledger, cny_transfer(5, 1, 2, 10)) == ["credit_account_not_found"]
        open_accounts(ledger, Account(id=2, ledger=CNY, code=1))
        assert apply(ledger, cny_transfer(5, 1, 2, 10)) == ["id_already_failed"]
        assert apply(ledger, cny_transfer(6, 1, 2, 10)) == ["ok"]

    with Ledger(database_url, clock=clock) as reopened:
        assert apply(reopened, cny_transfer(5, 1, 2, 10)) == ["id_already_failed"]
        assert reopened.lookup_transfers([5]) == []
        assert reopened.lookup_accounts([2])[0].credits_posted == 10
        assert reopened.verify().ok


def test_ids_at_or_below_the_highest_seen_are_still_looked_up(ledger: Ledger) -> None:
    # A batch whose ids are all above the highest id stored or failed skips both lookups;
    # at or below it, each id is looked up, on either side of the 64-bit encoding boundary.
    open_accounts(ledger, Account(id=1, ledger=CNY, code=1), Account(id=2, ledger=CNY, code=1))
    big = 2**100
    assert apply(ledger, cny_transfer(10, 1, 2, 1), cny_transfer(big, 1, 2, 1)) == ["ok", "ok"]
    assert apply(ledger, cny_transfer(big + 1, 1, 3, 1)) == ["credit_account_not_found"]
    with ledger.service.store.write() as unit:
        assert unit.highest_transfer_id() == big + 1  # a failed id counts
    assert apply(ledger, cny_transfer(big + 1, 1, 2, 1)) == ["id_already_failed"]
    assert apply(ledger, cny_transfer(big, 1, 2, 1), cny_transfer(big + 2, 1, 2, 1)) == [
        "exists",
        "ok",
    ]
    assert apply(ledger, cny_transfer(10, 1, 2, 2)) == ["exists_with_different_amount"]
    assert apply(ledger, cny_transfer(9, 1, 2, 1)) == ["ok"]  # below the highest, yet new
    assert apply(ledger, cny_transfer(big + 3, 1, 2, 1), cny_transfer(big + 3, 1, 2, 1)) == [
        "ok",
        "exists",
    ]
    assert ledger.lookup_accounts([2])[0].credits_posted == 5  # 10, big, big + 2, 9, big + 3
    assert ledger.verify().ok


def test_ids_are_known_new_range_by_range(ledger: Ledger) -> None:
    # A range is the ids sharing their top byte: the platform puts a transfer's kind there,
    # so a payment's id (kind 4) lies below every fee already stored (kind 5), and is still
    # known new, because it is above every id stored in its own range.
    open_accounts(ledger, Account(id=1, ledger=CNY, code=1), Account(id=2, ledger=CNY, code=1))
    payment, fee = (4 << 120) + 10, (5 << 120) + 10
    assert apply(ledger, cny_transfer(payment, 1, 2, 1), cny_transfer(fee, 1, 2, 1)) == ["ok", "ok"]
    assert apply(ledger, cny_transfer((6 << 120) + 1, 1, 3, 1)) == ["credit_account_not_found"]
    with ledger.service.store.write() as unit:
        assert unit.highest_transfer_id() == (6 << 120) + 1  # a failed id counts
        assert unit.highest_transfer_id(below=6 << 120) == fee
        assert unit.highest_transfer_id(below=5 << 120) == payment
        assert unit.highest_transfer_id(below=payment + 1) == payment
        assert unit.highest_transfer_id(below=payment) == 0
    # New in both ranges; then a replay in either range, beside a new id in the other.
    assert apply(ledger, cny_transfer(payment + 1, 1, 2, 1), cny_transfer(fee + 1, 1, 2, 1)) == [
        "ok",
        "ok",
    ]
    assert apply(ledger, cny_transfer(payment + 2, 1, 2, 1), cny_transfer(fee, 1, 2, 1)) == [
        "ok",
        "exists",
    ]
    assert apply(ledger, cny_transfer(payment, 1, 2, 2), cny_transfer(fee + 2, 1, 2, 1)) == [
        "exists_with_different_amount",
        "ok",
    ]
    assert apply(ledger, cny_transfer((6 << 120) + 1, 1, 2, 1)) == ["id_already_failed"]
    assert apply(ledger, cny_transfer((2**128) - 2, 1, 2, 1)) == ["ok"]  # the last range
    assert apply(ledger, cny_transfer((2**128) - 2, 1, 2, 1)) == ["exists"]
    assert ledger.verify().ok


def test_reopening_a_database_shows_the_same_state_and_continues_it(
    database_url: str, clock: FakeClock
) -> None:
    with Ledger(database_url, clock=clock) as ledger:
        three_accounts_with_traffic(ledger)
        accounts = ledger.lookup_accounts([1, 2, 3])
        transfers = ledger.lookup_transfers(list(range(101, 111)))
        balances = ledger.get_account_balances(AccountFilter(account_id=2, limit=100))

    clock.advance(-3600)  # The wall clock stepped back while the ledger was closed.
    with Ledger(database_url, clock=clock) as reopened:
        assert reopened.lookup_accounts([1, 2, 3]) == accounts
        assert reopened.lookup_transfers(list(range(101, 111))) == transfers
        assert reopened.get_account_balances(AccountFilter(account_id=2, limit=100)) == balances
        assert apply(reopened, cny_transfer(111, 1, 3, 1)) == ["ok"]
        assert reopened.lookup_transfers([111])[0].timestamp > transfers[-1].timestamp
        assert reopened.verify().ok


def test_two_handles_on_one_database_see_each_others_writes(
    database_url: str, clock: FakeClock
) -> None:
    with Ledger(database_url, clock=clock) as first, Ledger(database_url, clock=clock) as second:
        open_accounts(first, Account(id=1, ledger=CNY, code=1))
        open_accounts(second, Account(id=2, ledger=CNY, code=1))
        for n in range(6):
            writer = first if n % 2 == 0 else second
            assert apply(writer, cny_transfer(n + 1, 1, 2, 10)) == ["ok"]
        assert first.lookup_accounts([2])[0].credits_posted == 60
        assert second.lookup_accounts([1])[0].debits_posted == 60
        timestamps = [t.timestamp for t in second.lookup_transfers(list(range(1, 7)))]
        assert timestamps == sorted(set(timestamps))
        assert first.verify().ok


# Exact 128-bit values ------------------------------------------------------------------------


def test_values_above_two_to_the_63_round_trip_exactly(ledger: Ledger) -> None:
    big_debit = 2**127 + 3
    big_credit = 2**64 + 5
    big_transfer = 2**128 - 2
    amount = 2**100 + 7
    user_data_64 = 2**64 - 1
    user_data_128 = 2**128 - 1
    open_accounts(
        ledger,
        Account(id=big_debit, ledger=CNY, code=1, user_data_64=user_data_64, flags=8),
        Account(id=big_credit, ledger=CNY, code=1, user_data_128=user_data_128),
    )
    transfer = Transfer(
        id=big_transfer,
        debit_account_id=big_debit,
        credit_account_id=big_credit,
        amount=amount,
        user_data_128=user_data_128,
        user_data_64=user_data_64,
        user_data_32=2**32 - 1,
        ledger=CNY,
        code=2**16 - 1,
    )
    assert apply(ledger, transfer) == ["ok"]

    debit, credit = ledger.lookup_accounts([big_debit, big_credit])
    assert (debit.id, debit.debits_posted, debit.user_data_64) == (big_debit, amount, user_data_64)
    assert (credit.id, credit.credits_posted, credit.user_data_128) == (
        big_credit,
        amount,
        user_data_128,
    )
    (stored,) = ledger.lookup_transfers([big_transfer])
    assert stored == transfer._replace(timestamp=stored.timestamp)
    assert ledger.query_transfers(QueryFilter(user_data_64=user_data_64, limit=5)) == [stored]
    assert ledger.query_accounts(QueryFilter(user_data_128=user_data_128, limit=5)) == [credit]
    assert statement_ids(ledger, AccountFilter(account_id=big_credit, limit=5)) == [big_transfer]
    (balance,) = ledger.get_account_balances(AccountFilter(account_id=big_debit, limit=5))
    assert balance.debits_posted == amount
    assert ledger.verify().ok


def test_statement_orders_big_and_small_ids_by_time_not_by_encoding(ledger: Ledger) -> None:
    open_accounts(ledger, Account(id=1, ledger=CNY, code=1), Account(id=2, ledger=CNY, code=1))
    ids = [2**100, 5, 2**63, 2**63 - 1]
    for transfer_id in ids:
        assert apply(ledger, cny_transfer(transfer_id, 1, 2, 1)) == ["ok"]

    assert statement_ids(ledger, AccountFilter(account_id=1, limit=10)) == ids
    assert [t.id for t in ledger.lookup_transfers(sorted(ids))] == sorted(ids)


# Durability ----------------------------------------------------------------------------------


def test_database_is_opened_with_durable_commit_settings(ledger: Ledger) -> None:
    # The settings belong to the store's own connection, so read them through it.
    connection = ledger.store._connection  # type: ignore[attr-defined]
    if isinstance(connection, sqlite3.Connection):
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    else:
        assert connection.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        assert connection.execute("SHOW fsync").fetchone()[0] == "on"


# Whole-ledger invariants ---------------------------------------------------------------------


def test_verify_passes_after_a_mixed_workload(ledger: Ledger, clock: FakeClock) -> None:
    must_not_overdraw = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    open_accounts(
        ledger,
        Account(id=1, ledger=CNY, code=1),  # bank channel: money enters from outside here
        Account(id=2, ledger=CNY, code=2, flags=must_not_overdraw | AccountFlags.HISTORY),
        Account(id=3, ledger=CNY, code=2, flags=must_not_overdraw),
        Account(id=4, ledger=USD, code=1),
        Account(id=5, ledger=USD, code=2, flags=AccountFlags.HISTORY),
    )
    pending = TransferFlags.PENDING
    linked = TransferFlags.LINKED
    results = apply(
        ledger,
        cny_transfer(1, 1, 2, 1_000),
        cny_transfer(2, 2, 3, 5_000),  # exceeds_credits: remembered as failed
        cny_transfer(3, 2, 3, 400, flags=pending, timeout=30),
        cny_transfer(4, 2, 3, 100, flags=pending),
        cny_transfer(5, 2, 3, 150, flags=linked),
        cny_transfer(6, 3, 2, 10),  # closes the chain 5-6
        cny_transfer(7, 2, 404, 1),  # credit_account_not_found
        Transfer(id=8, debit_account_id=4, credit_account_id=5, amount=77, ledger=USD, code=1),
    )
    assert results == [
        "ok",
        "exceeds_credits",
        "ok",
        "ok",
        "ok",
        "ok",
        "credit_account_not_found",
        "ok",
    ]
    assert apply(
        ledger,
        cny_transfer(9, 2, 3, 0, pending_id=4, flags=TransferFlags.VOID_PENDING_TRANSFER),
        cny_transfer(10, 2, 3, 10_000, flags=TransferFlags.BALANCING_DEBIT),
        cny_transfer(11, 3, 2, 1, flags=linked),
        cny_transfer(12, 3, 2, 1, flags=linked),  # chain left open: both fail
    ) == ["ok", "ok", "linked_event_failed", "linked_event_chain_open"]
    clock.advance(31)
    assert ledger.expire_pending_transfers() == 1

    report = ledger.verify()
    assert report.ok, report.render()
    assert report.accounts == 5
    assert report.transfers == 8
    assert set(report.ledgers) == {CNY, USD}
    totals = report.ledgers[CNY]
    assert totals.debits_posted == totals.credits_posted == 1_000 + 150 + 10 + 460
    assert totals.debits_pending == totals.credits_pending == 0


def test_time_bounds_beyond_the_largest_timestamp_act_as_unbounded(ledger: Ledger) -> None:
    open_accounts(ledger, Account(id=1, ledger=CNY, code=1), Account(id=2, ledger=CNY, code=1))
    assert apply(ledger, cny_transfer(1, 1, 2, 5)) == ["ok"]
    far_future = 2**64 - 2  # The largest valid bound: only 2**64 - 1 is reserved.

    up_to_far_future = QueryFilter(timestamp_max=far_future, limit=5)
    assert [t.id for t in ledger.query_transfers(up_to_far_future)] == [1]
    statement = AccountFilter(account_id=1, timestamp_max=far_future, limit=5)
    assert statement_ids(ledger, statement) == [1]
    assert ledger.query_accounts(QueryFilter(timestamp_min=far_future, limit=5)) == []
