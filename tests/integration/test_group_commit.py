"""Group commit: many payments in one unit of work, one commit, each wholly or not at all."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from paycell.core.payments.outcomes import Decision, PaymentError
from paycell.core.payments.records import OrderStatus, PartyKind
from paycell.core.results import CreateTransferResult
from paycell.core.types import Account, PendingStatus, Transfer, TransferFlags
from paycell.platform import Platform
from paycell.service.platform import (
    GROUP_PAYMENTS_MAX,
    OrderAction,
    OrderCommand,
    OrderPayment,
)
from paycell.service.platform_ports import IdempotencyRecord

SECOND = 1_000_000_000


@pytest.fixture
def platform(database_url: str) -> Iterator[Platform]:
    with Platform(database_url) as opened:
        yield opened
        assert opened.verify().ok


def stored(platform: Platform) -> tuple[object, ...]:
    """What the platform has written: its ledger batches, accounts, transfers and orders."""
    return (
        platform.store.meta().batch_number,
        list(platform.store.all_accounts()),
        list(platform.store.all_transfers()),
        list(platform.store.all_orders()),
    )


def test_a_group_of_payments_commits_once_and_each_gets_its_own_result(
    platform: Platform,
) -> None:
    rich = platform.create_user("rich")
    poor = platform.create_user("poor")
    shop = platform.create_merchant("shop", fee_rate_basis_points=100, settlement_bank_account="x")
    assert platform.request_top_up(rich.id, "t", 100_00).ok
    assert platform.request_top_up(poor.id, "t", 3_00).ok
    platform.deliver_bank_callbacks()
    batches_before = platform.store.meta().batch_number

    results = platform.create_and_pay_orders(
        shop.id,
        [
            OrderPayment("G-1", 10_00, rich.id),
            OrderPayment("G-2", 2_00, poor.id),
            OrderPayment("G-3", 2_00, poor.id),  # the poor buyer has 1.00 left: refused
            OrderPayment("G-4", 5_00, rich.id, currency="USD"),  # not enabled: refused
            OrderPayment("G-5", 20_00, rich.id),
        ],
    )

    assert [r.ok for r in results] == [True, True, False, False, True]
    assert results[2].error is PaymentError.INSUFFICIENT_FUNDS
    assert results[3].error is PaymentError.UNSUPPORTED_CURRENCY
    refused = platform.get_order_by_out_trade_no(shop.id, "G-3")
    assert refused is not None
    assert (refused.status, refused.close_reason) == (OrderStatus.TRADE_CLOSED, "payment_failed")
    assert platform.get_order_by_out_trade_no(shop.id, "G-4") is None
    wallet = platform.balance_of_user(poor.id)
    assert wallet is not None
    assert wallet.credits_posted - wallet.debits_posted == 1_00
    merchant = platform.balance_of_merchant(shop.id)
    assert merchant is not None
    # 10.00 + 2.00 + 20.00 less a 1% fee on each: 9.90 + 1.98 + 19.80.
    assert merchant.credits_posted == 9_90 + 1_98 + 19_80
    # Three payments, written as one ledger batch (one journal entry) in one commit.
    assert platform.store.meta().batch_number == batches_before + 1


def test_the_same_group_again_is_a_replay_that_moves_nothing(platform: Platform) -> None:
    buyer = platform.create_user("buyer")
    shop = platform.create_merchant("shop", fee_rate_basis_points=0, settlement_bank_account="x")
    assert platform.request_top_up(buyer.id, "t", 10_00).ok
    platform.deliver_bank_callbacks()
    group = [OrderPayment("R-1", 4_00, buyer.id), OrderPayment("R-2", 4_00, buyer.id)]
    first = platform.create_and_pay_orders(shop.id, group)
    again = platform.create_and_pay_orders(shop.id, group)
    assert [d.ok for d in first] == [True, True]
    assert [d.replayed for d in again] == [True, True]
    wallet = platform.balance_of_user(buyer.id)
    assert wallet is not None
    assert wallet.debits_posted == 8_00


def test_groups_are_bounded(platform: Platform) -> None:
    shop = platform.create_merchant("shop", fee_rate_basis_points=0, settlement_bank_account="x")
    [buyer] = _funded_buyers(platform, [10_00])
    before = stored(platform)
    too_many = [OrderPayment(f"X-{i}", 1, buyer) for i in range(GROUP_PAYMENTS_MAX + 1)]
    with pytest.raises(ValueError, match=f"at most {GROUP_PAYMENTS_MAX} payments per group"):
        platform.create_and_pay_orders(shop.id, too_many)
    assert stored(platform) == before  # not even the first payment was made
    assert platform.list_orders(shop.id) == []
    # One payment fewer is a group like any other.
    paid = platform.create_and_pay_orders(shop.id, too_many[:GROUP_PAYMENTS_MAX])
    assert all(d.ok for d in paid)


def _funded_buyers(platform: Platform, amounts: list[int]) -> list[int]:
    buyers = []
    for number, amount in enumerate(amounts):
        buyer = platform.create_user(f"buyer {number}")
        assert platform.request_top_up(buyer.id, f"t-{number}", amount).ok
        buyers.append(buyer.id)
    platform.deliver_bank_callbacks()
    return buyers


def test_order_commands_pay_in_one_ledger_batch_each_as_alone(platform: Platform) -> None:
    shop = platform.create_merchant("shop", fee_rate_basis_points=0, settlement_bank_account="x")
    buyers = _funded_buyers(platform, [10_00, 1_00, 10_00])
    orders = [platform.create_order(shop.id, f"O-{n}", 5_00).orders[0].id for n in range(3)]
    batches_before = platform.store.meta().batch_number

    outcomes = platform.run_order_commands(
        [
            OrderCommand(OrderAction.PAY, orders[0], buyers[0]),
            OrderCommand(OrderAction.PAY, orders[1], buyers[1]),  # 1.00 for 5.00: refused
            OrderCommand(OrderAction.PAY, orders[2], buyers[2]),
            OrderCommand(OrderAction.PAY, orders[0], buyers[0]),  # again: a replay
            OrderCommand(OrderAction.PAY, orders[2], buyers[0]),  # paid just before
            OrderCommand(OrderAction.PAY, 999_999, buyers[0]),
        ]
    )

    assert [o.decision.error for o in outcomes] == [
        None,
        PaymentError.INSUFFICIENT_FUNDS,
        None,
        None,
        PaymentError.ORDER_ALREADY_PAID,
        PaymentError.ORDER_NOT_FOUND,
    ]
    assert outcomes[3].decision.replayed
    # Two successful payments, one ledger batch: the refused one left nothing in it.
    assert platform.store.meta().batch_number == batches_before + 1
    merchant = platform.balance_of_merchant(shop.id)
    assert merchant is not None
    assert merchant.credits_posted == 10_00
    refused = platform.get_order(orders[1])
    assert refused is not None
    assert refused.status is OrderStatus.WAIT_BUYER_PAY
    # The refused payment goes through alone once the buyer has the money.
    assert platform.request_top_up(buyers[1], "more", 10_00).ok
    platform.deliver_bank_callbacks()
    assert platform.pay_order(orders[1], buyers[1]).ok


def test_order_commands_keep_idempotency_records_in_the_same_commit(platform: Platform) -> None:
    shop = platform.create_merchant("shop", fee_rate_basis_points=0, settlement_bank_account="x")
    [buyer] = _funded_buyers(platform, [10_00])
    orders = [platform.create_order(shop.id, f"I-{n}", 1_00).orders[0].id for n in range(2)]
    earlier = IdempotencyRecord(PartyKind.USER, buyer, "taken", "h0", 200, "{}", 1)
    platform.save_idempotency_record(earlier)

    def remember(key: str) -> Callable[[Decision], IdempotencyRecord]:
        def record(decision: Decision) -> IdempotencyRecord:
            body = decision.orders[0].status.value if decision.ok else str(decision.error)
            return IdempotencyRecord(PartyKind.USER, buyer, key, "h1", 200, body, 2)

        return record

    outcomes = platform.run_order_commands(
        [
            OrderCommand(OrderAction.PAY, orders[0], buyer, remember("fresh")),
            OrderCommand(OrderAction.PAY, orders[1], buyer, remember("taken")),
        ]
    )

    fresh = platform.idempotency_record(PartyKind.USER, buyer, "fresh")
    assert fresh is not None
    assert fresh.body == "TRADE_SUCCESS"
    assert outcomes[0].idempotency_record == fresh
    # A record stored first for the same key wins; the caller answers with it.
    assert outcomes[1].idempotency_record == earlier
    assert platform.idempotency_record(PartyKind.USER, buyer, "taken") == earlier


def test_order_command_groups_are_bounded(platform: Platform) -> None:
    shop = platform.create_merchant("shop", fee_rate_basis_points=0, settlement_bank_account="x")
    [buyer] = _funded_buyers(platform, [10_00])
    order = platform.create_order(shop.id, "B-1", 1_00).orders[0]
    before = stored(platform)
    too_many = [OrderCommand(OrderAction.PAY, order.id, buyer)] * (GROUP_PAYMENTS_MAX + 1)
    with pytest.raises(ValueError, match=f"at most {GROUP_PAYMENTS_MAX} commands per group"):
        platform.run_order_commands(too_many)
    assert stored(platform) == before  # the order was not paid, not even once
    assert platform.get_order(order.id) == order


def test_a_command_on_an_order_already_in_the_group_runs_after_it_and_before_the_rest(
    platform: Platform,
) -> None:
    shop = platform.create_merchant("shop", fee_rate_basis_points=0, settlement_bank_account="x")
    broke = platform.create_user("broke")
    payer = platform.create_user("payer")
    assert platform.request_top_up(payer.id, "t", 5_00).ok
    platform.deliver_bank_callbacks()
    first = platform.create_order(shop.id, "O-1", 5_00).orders[0].id
    second = platform.create_order(shop.id, "O-2", 5_00).orders[0].id

    outcomes = platform.run_order_commands(
        [
            OrderCommand(OrderAction.PAY, first, broke.id),  # refused: no money
            OrderCommand(OrderAction.PAY, first, payer.id),  # pays, as one after the other
            OrderCommand(OrderAction.PAY, second, payer.id),  # then the payer has nothing left
        ]
    )

    assert [o.decision.ok for o in outcomes] == [False, True, False]
    assert outcomes[0].decision.error is PaymentError.INSUFFICIENT_FUNDS
    assert outcomes[2].decision.error is PaymentError.INSUFFICIENT_FUNDS


def test_a_group_expires_due_reservations_before_it_decides(tmp_path: Path) -> None:
    now = [1_800_000_000 * SECOND]
    with Platform(tmp_path / "expiry.db", clock=lambda: now[0]) as platform:
        shop = platform.create_merchant(
            "shop", fee_rate_basis_points=0, settlement_bank_account="x"
        )
        buyer = platform.create_user("buyer")
        assert platform.request_top_up(buyer.id, "t", 10_00).ok
        platform.deliver_bank_callbacks()
        order = platform.create_order(shop.id, "O-1", 5_00).orders[0]
        # The embedding application's own use of the ledger: a one-second hold.
        platform.ledger.create_accounts(
            [Account(9_000_001, ledger=1, code=1), Account(9_000_002, ledger=1, code=1)]
        )
        hold = Transfer(
            9_000_010,
            9_000_001,
            9_000_002,
            7,
            ledger=1,
            code=1,
            timeout=1,
            flags=TransferFlags.PENDING,
        )
        assert platform.ledger.create_transfers([hold]) == [CreateTransferResult.OK]
        now[0] += 5 * SECOND
        batches_before = platform.store.meta().batch_number

        outcomes = platform.run_order_commands([OrderCommand(OrderAction.PAY, order.id, buyer.id)])

        assert outcomes[0].decision.ok
        # The expiry is its own journal entry, ahead of the group's one merged batch.
        assert platform.store.meta().batch_number == batches_before + 2
        state = platform.store.pending_state(hold.id)
        assert state is not None
        assert state.status == PendingStatus.EXPIRED
        (released,) = platform.ledger.lookup_accounts([9_000_001])
        assert released.debits_pending == 0
        assert platform.verify().ok
