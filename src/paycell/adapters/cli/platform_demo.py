"""`paycell demo`: a small marketplace on the payment platform, from a fresh database.

About 1,000 buyers and 50 merchants trade for a simulated fortnight: buyers top up their
wallets through the (simulated) bank, pay orders directly or through escrow, confirm receipt
or let auto-confirm release the money when the clock moves on, ask for refunds; merchants
refund in part or in full, one withdrawal is declined by the bank and its money returns, and
daily settlement pays every merchant's balance out to its bank. The run ends with a summary
and `paycell verify`.

Time is simulated: the platform's clock is a counter the demo moves forward, so ten days of
auto-confirm pass in a moment and the run is the same every time for a given seed.
"""

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Final

from paycell.adapters.cli.progress import Progress
from paycell.core.currency import currency_for_code, format_amount
from paycell.core.payments import chart
from paycell.core.payments.outcomes import Decision, PaymentError
from paycell.core.payments.records import (
    ChannelRequestStatus,
    EscrowState,
    Merchant,
    Order,
    OrderStatus,
    PaymentMode,
    User,
)
from paycell.platform import Platform

CURRENCY: Final = "CNY"
SECOND: Final = 1_000_000_000
HOUR: Final = 3_600 * SECOND
DAY: Final = 24 * HOUR
# 2026-11-11 00:00:00 UTC, Singles' Day.
START: Final = 1_794_355_200 * SECOND


@dataclass(frozen=True, slots=True)
class DemoSize:
    buyers: int = 1_000
    merchants: int = 50
    orders: int = 3_000

    def __post_init__(self) -> None:
        if self.buyers < 5 or self.merchants < 1 or self.orders < 1:
            raise ValueError("the demo needs at least 5 buyers, 1 merchant and 1 order")


class DemoError(RuntimeError):
    """The demo met an outcome it did not expect: a bug to report, not a user error."""


@dataclass(slots=True)
class SimulatedClock:
    now: int = START

    def __call__(self) -> int:
        # Every reading moves a microsecond, so records made in one step keep their order.
        self.now += 1_000
        return self.now

    def advance(self, nanoseconds: int) -> None:
        self.now += nanoseconds


@dataclass(slots=True)
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    paid_volume: int = 0
    refunded_volume: int = 0
    topped_up: int = 0
    paid_out: int = 0
    withdrawn: int = 0


def _expect(decision: Decision, what: str, *allowed: PaymentError) -> bool:
    """True if the command succeeded; False if it failed with an allowed business error."""
    if decision.ok:
        return True
    if decision.error in allowed:
        return False
    raise DemoError(f"{what}: {decision.error} {decision.message}")


class PlatformDemo:
    def __init__(
        self,
        platform: Platform,
        clock: SimulatedClock,
        seed: int,
        progress: Progress,
        size: DemoSize,
    ) -> None:
        self.size = size
        self.platform = platform
        self.clock = clock
        self.random = random.Random(seed)
        self.progress = progress
        self.tally = Tally()
        self.buyers: list[User] = []
        self.merchants: list[Merchant] = []
        self.orders: list[Order] = []

    def run(self) -> None:
        self.onboard()
        self.top_up()
        self.trade()
        self.settle_disputes()
        self.move_time_and_auto_confirm()
        self.withdraw()
        self.settle()

    def onboard(self) -> None:
        size = self.size
        self.progress.say(f"onboarding {size.buyers} buyers and {size.merchants} merchants")
        for number in range(size.buyers):
            self.buyers.append(self.platform.create_user(f"buyer {number + 1}"))
            self.progress.update("buyers", number + 1, size.buyers)
        for number in range(size.merchants):
            self.merchants.append(
                self.platform.create_merchant(
                    f"shop {number + 1}",
                    fee_rate_basis_points=self.random.choice((30, 55, 60, 100)),
                    settlement_bank_account=f"6222 0200 {number + 1:04d}",
                )
            )
            self.progress.update("merchants", number + 1, size.merchants)

    def top_up(self) -> None:
        self.progress.say("buyers top up their wallets through the bank")
        for number, buyer in enumerate(self.buyers):
            amount = self.random.randrange(50_00, 2_000_00, 100)
            decision = self.platform.request_top_up(buyer.id, f"topup-{buyer.id}", amount)
            _expect(decision, "top-up")
            self.progress.update("top-ups", number + 1, len(self.buyers))
        for decision in self.platform.deliver_bank_callbacks():
            _expect(decision, "bank callback")
            request = decision.channel_requests[0]
            if request.status is ChannelRequestStatus.SUCCEEDED:
                self.tally.topped_up += request.amount
            self.tally.outcomes[f"top-up {request.status.value.lower()}"] += 1

    def trade(self) -> None:
        self.progress.say(f"{self.size.orders} orders: direct and escrow payments")
        for number in range(self.size.orders):
            merchant = self.random.choice(self.merchants)
            buyer = self.random.choice(self.buyers)
            mode = PaymentMode.ESCROW if self.random.random() < 0.4 else PaymentMode.DIRECT
            amount = self.random.randrange(5_00, 300_00)
            created = self.platform.create_order(
                merchant.id, f"order-{number + 1}", amount, subject="goods", mode=mode
            )
            _expect(created, "create order")
            order = created.orders[0]
            if self.random.random() < 0.05:
                # Some carts are abandoned: the order closes when its time limit passes.
                self.orders.append(order)
                continue
            paid = self.platform.pay_order(order.id, buyer.id)
            if _expect(paid, "pay", PaymentError.INSUFFICIENT_FUNDS):
                self.tally.paid_volume += amount
                self.tally.outcomes[f"paid {mode.value}"] += 1
                order = paid.orders[0]
            else:
                self.tally.outcomes["declined: insufficient funds"] += 1
            self.orders.append(order)
            self.clock.advance(self.random.randrange(1, 60) * SECOND)
            self.progress.update("orders", number + 1, self.size.orders)

    def settle_disputes(self) -> None:
        self.progress.say("buyers confirm receipt, ask for refunds; merchants refund")
        for order in self.orders:
            if order.status is not OrderStatus.TRADE_SUCCESS:
                continue
            roll = self.random.random()
            if order.mode is PaymentMode.ESCROW and order.escrow_state is EscrowState.HELD:
                if roll < 0.45:
                    _expect(self.platform.confirm_receipt(order.id, order.buyer_id), "confirm")
                    self.tally.outcomes["escrow confirmed by buyer"] += 1
                elif roll < 0.55:
                    _expect(self.platform.open_refund_request(order.id, order.buyer_id), "dispute")
                    self._refund(order, order.amount, "full refund from escrow")
                elif roll < 0.60:
                    _expect(self.platform.open_refund_request(order.id, order.buyer_id), "dispute")
                    _expect(
                        self.platform.reject_refund_request(order.id, order.merchant_id), "reject"
                    )
                    self.tally.outcomes["refund request rejected"] += 1
                # The rest wait for auto-confirm.
            elif roll < 0.08:
                self._refund(order, order.amount // 3, "partial refund from merchant")
            elif roll < 0.10:
                self._refund(order, order.amount, "full refund from merchant")

    def _refund(self, order: Order, amount: int, label: str) -> None:
        decision = self.platform.refund(
            order.id, order.merchant_id, f"refund-{order.id}-1", amount, reason=label
        )
        if _expect(decision, "refund", PaymentError.INSUFFICIENT_FUNDS):
            self.tally.refunded_volume += amount
            self.tally.outcomes[label] += 1
        else:
            self.tally.outcomes["refund declined: merchant balance too low"] += 1

    def move_time_and_auto_confirm(self) -> None:
        self.progress.say("eleven days pass: unpaid orders close, escrow auto-confirms")
        self.clock.advance(11 * DAY)
        report = self.platform.run_scheduler()
        if report.errors:
            raise DemoError("; ".join(report.errors))
        self.tally.outcomes["unpaid orders closed"] += report.closed_orders
        self.tally.outcomes["escrow auto-confirmed"] += report.auto_confirmed

    def withdraw(self) -> None:
        self.progress.say("a few buyers withdraw to their bank; one is declined and refunded")
        for number, buyer in enumerate(self.buyers[:5]):
            # The simulated bank declines amounts whose minor units end in 13.
            amount = 10_13 if number == 0 else 10_00
            decision = self.platform.request_withdrawal(buyer.id, f"withdraw-{buyer.id}", amount)
            _expect(decision, "withdrawal", PaymentError.INSUFFICIENT_FUNDS)
        for decision in self.platform.deliver_bank_callbacks():
            _expect(decision, "bank callback")
            request = decision.channel_requests[0]
            self.tally.outcomes[f"withdrawal {request.status.value.lower()}"] += 1
            if request.status is ChannelRequestStatus.SUCCEEDED:
                self.tally.withdrawn += request.amount

    def settle(self) -> None:
        self.progress.say("daily settlement: every merchant's balance is paid out")
        day_start = self.clock.now - self.clock.now % DAY
        for decision in self.platform.settle_day(day_start, CURRENCY):
            _expect(decision, "settlement payout")
        for decision in self.platform.deliver_bank_callbacks():
            _expect(decision, "bank callback")
            request = decision.channel_requests[0]
            if request.status is ChannelRequestStatus.SUCCEEDED:
                self.tally.paid_out += request.amount
                self.tally.outcomes["payout succeeded"] += 1
            else:
                self.tally.outcomes["payout declined and returned"] += 1

    def summary(self) -> list[str]:
        currency = currency_for_code(CURRENCY)
        ledger = currency.ledger

        def money(amount: int) -> str:
            return f"{format_amount(amount, currency)} {CURRENCY}"

        accounts = {
            account.id: account
            for account in self.platform.ledger.lookup_accounts(
                [chart.fee_revenue(ledger), chart.escrow(ledger)]
            )
        }
        fees = accounts[chart.fee_revenue(ledger)]
        escrow = accounts[chart.escrow(ledger)]
        lines = [
            "",
            f"marketplace summary ({CURRENCY})",
            f"  buyers {len(self.buyers)}, merchants {len(self.merchants)}, "
            f"orders {len(self.orders)}",
            f"  topped up            {money(self.tally.topped_up)}",
            f"  paid by buyers       {money(self.tally.paid_volume)}",
            f"  refunded             {money(self.tally.refunded_volume)}",
            f"  fees earned          {money(fees.credits_posted - fees.debits_posted)}",
            f"  escrow still held    {money(escrow.credits_posted - escrow.debits_posted)}",
            f"  settled to merchants {money(self.tally.paid_out)}",
            f"  withdrawn by buyers  {money(self.tally.withdrawn)}",
            "  outcomes",
        ]
        lines.extend(
            f"    {count:6d}  {name}" for name, count in sorted(self.tally.outcomes.items())
        )
        return lines


def run_demo(
    database: str,
    seed: int,
    out: IO[str],
    progress: Progress,
    size: DemoSize | None = None,
) -> int:
    """Run the marketplace on `database` (which must be new); 0 when verify passes."""
    clock = SimulatedClock()
    with Platform(database, clock=clock) as platform:
        if platform.get_user(1) is not None:
            progress.say(f"{database} already holds a marketplace: use a new database file")
            return 2
        demo = PlatformDemo(platform, clock, seed, progress, size or DemoSize())
        demo.run()
        progress.finish()
        for line in demo.summary():
            out.write(line + "\n")
        progress.say("verifying the books")
        report = platform.verify(progress.say, progress.update)
        progress.finish()
        out.write("\n" + report.render() + "\n")
        return 0 if report.ok else 1
