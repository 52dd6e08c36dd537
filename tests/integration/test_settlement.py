"""Settlement: each merchant's day as the books show it, and daily payouts exactly once."""

from collections.abc import Iterator

import pytest

from paycell.core.errors import InvalidFieldError
from paycell.core.payments.records import (
    ChannelRequestKind,
    ChannelRequestStatus,
    PartyKind,
    PaymentMode,
)
from paycell.platform import Platform
from paycell.service.platform import LAST_DAY_START, PlatformConfig

SECOND = 1_000_000_000
DAY = 86_400 * SECOND
# 2026-11-11T00:00:00Z.
DAY_ONE = 1_794_355_200 * SECOND


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1_000
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(DAY_ONE + 9 * 3_600 * SECOND)


@pytest.fixture
def platform(database_url: str, clock: Clock) -> Iterator[Platform]:
    with Platform(database_url, clock=clock) as opened:
        yield opened
        assert opened.verify().ok


def trade_a_day(platform: Platform) -> tuple[int, int]:
    """A buyer with 1,000.00; a shop at 60 bp: a direct sale of 100.00 refunded 30.00, and an
    escrow sale of 50.00 confirmed."""
    buyer = platform.create_user("buyer")
    shop = platform.create_merchant("shop", fee_rate_basis_points=60, settlement_bank_account="x")
    assert platform.request_top_up(buyer.id, "t", 1_000_00).ok
    platform.deliver_bank_callbacks()
    direct = platform.create_order(shop.id, "o1", 100_00).orders[0]
    assert platform.pay_order(direct.id, buyer.id).ok
    escrow = platform.create_order(shop.id, "o2", 50_00, mode=PaymentMode.ESCROW).orders[0]
    assert platform.pay_order(escrow.id, buyer.id).ok
    assert platform.confirm_receipt(escrow.id, buyer.id).ok
    assert platform.refund(direct.id, shop.id, "r1", 30_00).ok
    return buyer.id, shop.id


def test_settlement_report_shows_the_merchants_day_from_the_books(
    platform: Platform, clock: Clock
) -> None:
    _, shop = trade_a_day(platform)
    report = platform.settlement_report(shop, DAY_ONE)
    assert report is not None
    # 100.00 - 0.60 fee, and 50.00 - 0.30 fee.
    assert (report.sales, report.fees, report.sales_count) == (99_40 + 49_70, 60 + 30, 2)
    # 30.00 refunded: 29.82 from the shop, 0.18 of fee from the platform.
    assert (report.refunds, report.refunds_count) == (29_82, 1)
    assert (report.opening_balance, report.closing_balance) == (0, 99_40 + 49_70 - 29_82)
    assert report.balanced


def test_settlement_pays_the_day_out_once_and_the_next_report_shows_it(
    platform: Platform, clock: Clock
) -> None:
    _, shop = trade_a_day(platform)
    clock.now = DAY_ONE + DAY + 3_600 * SECOND
    first = platform.settle_day(DAY_ONE)
    assert [d.ok for d in first] == [True]
    [payout] = first[0].channel_requests
    assert (payout.kind, payout.party_kind, payout.party_id, payout.amount, payout.status) == (
        ChannelRequestKind.PAYOUT,
        PartyKind.MERCHANT,
        shop,
        119_28,
        ChannelRequestStatus.PENDING,
    )
    again = platform.settle_day(DAY_ONE)
    assert [d.replayed for d in again] == [True]
    assert again[0].channel_requests == [payout]  # the same request, not a second one
    platform.deliver_bank_callbacks()
    request = platform.get_channel_request(payout.id)
    assert request is not None
    assert (request.kind, request.party_id, request.amount, request.status) == (
        ChannelRequestKind.PAYOUT,
        shop,
        119_28,
        ChannelRequestStatus.SUCCEEDED,
    )
    assert platform.list_channel_requests(PartyKind.MERCHANT, shop) == [request]

    day_two = platform.settlement_report(shop, DAY_ONE + DAY)
    assert day_two is not None
    assert (day_two.opening_balance, day_two.payouts, day_two.closing_balance) == (
        119_28,
        119_28,
        0,
    )
    assert day_two.balanced


def test_scheduler_settles_each_finished_day_once_when_enabled(
    database_url: str, clock: Clock
) -> None:
    config = PlatformConfig(daily_settlement=True)
    with Platform(database_url, clock=clock, config=config) as first:
        _, shop = trade_a_day(first)
        assert first.run_scheduler().payouts_started == 0  # day one is not over yet
        clock.now = DAY_ONE + DAY + 60 * SECOND
        with Platform(database_url, clock=clock, config=config) as second:
            reports = [first.run_scheduler(), second.run_scheduler(), first.run_scheduler()]
        assert [r.payouts_started for r in reports] == [1, 0, 0]
        balance = first.balance_of_merchant(shop)
        assert balance is not None
        assert balance.debits_pending == 119_28
        assert first.verify().ok


def test_report_for_unknown_merchant_or_currency_is_none(platform: Platform) -> None:
    _, shop = trade_a_day(platform)
    assert platform.settlement_report(shop + 100, DAY_ONE) is None
    assert platform.settlement_report(shop, DAY_ONE, "USD") is None


def test_each_currency_is_settled_on_its_own(database_url: str, clock: Clock) -> None:
    config = PlatformConfig(currencies=("CNY", "USD"))
    with Platform(database_url, clock=clock, config=config) as platform:
        buyer = platform.create_user("buyer")
        shop = platform.create_merchant(
            "shop", fee_rate_basis_points=0, settlement_bank_account="x"
        )
        for currency in ("CNY", "USD"):
            assert platform.request_top_up(buyer.id, f"t-{currency}", 10_00, currency).ok
        platform.deliver_bank_callbacks()
        for currency in ("CNY", "USD"):
            order = platform.create_order(shop.id, f"o-{currency}", 5_00, currency=currency)
            assert platform.pay_order(order.orders[0].id, buyer.id).ok
        clock.now = DAY_ONE + DAY + 60 * SECOND
        paid_out = {
            currency: [d.channel_requests[0].amount for d in platform.settle_day(DAY_ONE, currency)]
            for currency in ("CNY", "USD")
        }
        assert paid_out == {"CNY": [5_00], "USD": [5_00]}
        assert platform.verify().ok


def test_settlement_never_pays_out_money_that_arrived_after_the_day(
    platform: Platform, clock: Clock
) -> None:
    buyer = platform.create_user("buyer")
    shop = platform.create_merchant("shop", fee_rate_basis_points=0, settlement_bank_account="x")
    assert platform.request_top_up(buyer.id, "t", 100_00).ok
    platform.deliver_bank_callbacks()
    first = platform.create_order(shop.id, "day-one", 10_00).orders[0]
    assert platform.pay_order(first.id, buyer.id).ok
    # Day two: the merchant pays its day-one money out by hand, then sells again.
    clock.now = DAY_ONE + DAY + 600 * SECOND
    assert platform.request_payout(shop.id, "manual", 10_00).ok
    platform.deliver_bank_callbacks()
    clock.now = DAY_ONE + DAY + 3_600 * SECOND
    second = platform.create_order(shop.id, "day-two", 5_00).orders[0]
    assert platform.pay_order(second.id, buyer.id).ok
    decisions = platform.settle_day(DAY_ONE)
    assert decisions == []  # nothing left of day one: the 5.00 belongs to day two
    balance = platform.balance_of_merchant(shop.id)
    assert balance is not None
    assert balance.credits_posted - balance.debits_posted == 5_00


@pytest.mark.parametrize("day_start", [LAST_DAY_START + DAY, -DAY, DAY + 1, 10**30])
def test_a_day_the_ledger_cannot_hold_is_an_invalid_field(
    platform: Platform, day_start: int
) -> None:
    # Beyond the last day whose nanoseconds fit a ledger timestamp, before the epoch, or not a
    # midnight: named, not passed on to the ledger as a query it would refuse.
    merchant = platform.create_merchant(
        "shop", fee_rate_basis_points=60, settlement_bank_account="6222"
    )
    with pytest.raises(InvalidFieldError, match="day_start: must be a UTC midnight"):
        platform.settlement_report(merchant.id, day_start)
    with pytest.raises(InvalidFieldError, match="day_start"):
        platform.settle_day(day_start)
    assert platform.settlement_report(merchant.id, LAST_DAY_START) is not None
