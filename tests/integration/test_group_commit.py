"""Group commit: many payments in one unit of work, one commit, each wholly or not at all."""

from collections.abc import Iterator

import pytest

from paycell.core.payments.outcomes import PaymentError
from paycell.core.payments.records import OrderStatus
from paycell.platform import Platform
from paycell.service.platform import GROUP_PAYMENTS_MAX, OrderPayment


@pytest.fixture
def platform(database_url: str) -> Iterator[Platform]:
    with Platform(database_url) as opened:
        yield opened
        assert opened.verify().ok


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
    # Three payments, one ledger batch each, all in the same commit.
    assert platform.store.meta().batch_number == batches_before + 3


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
    too_many = [OrderPayment(f"X-{i}", 1, 1) for i in range(GROUP_PAYMENTS_MAX + 1)]
    with pytest.raises(ValueError, match="at most"):
        platform.create_and_pay_orders(shop.id, too_many)
