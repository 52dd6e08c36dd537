"""The payment platform against a simple model, on random sequences of operations (hypothesis).

Each step runs one platform operation through `Platform` (SQLite or PostgreSQL) with the
simulated bank and a clock the test moves: users and merchants, top-ups and their callbacks
(declined, delivered twice, late, out of order, forged, conflicting), direct and escrow orders,
payments, confirmations, refund requests, partial, full and over-refunds, cancellations,
withdrawals, payouts, daily settlement, clock moves with scheduler runs (also repeated, and from
a second `Platform` on the same database). The model, written here from the stated rules,
predicts each outcome (or its error code) and the balance of every user wallet, merchant
balance, escrow, fee revenue and channel account, and every order's state. After every step the
platform must agree with the model and the books must balance; at the end `verify()` passes.
"""

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Literal, TypedDict

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from paycell.adapters.channels.simulated_bank import Callback
from paycell.adapters.storage.throwaway_postgres import PostgresServer
from paycell.core.payments import chart
from paycell.core.payments.outcomes import Decision, PaymentError
from paycell.core.payments.records import ChannelRequestKind, PaymentMode
from paycell.platform import Platform
from paycell.service.platform import PlatformConfig

E = PaymentError
NS = 1_000_000_000
DAY_SECONDS = 86_400
DAY = DAY_SECONDS * NS
START = 19_676 * DAY  # 2023-11-15T00:00:00Z
CNY = 156
REFUND_PERIOD_SECONDS = 20 * DAY_SECONDS
CONFIG = PlatformConfig(currencies=("CNY",), refund_period_seconds=REFUND_PERIOD_SECONDS)
ORDER_TIMEOUT_SECONDS = CONFIG.order_timeout_seconds
AUTO_CONFIRM_SECONDS = CONFIG.auto_confirm_seconds

FEE_RATES = [0, 60, 100, 599, 10_000]
CLOCK_MOVES = [61, ORDER_TIMEOUT_SECONDS, 3600, DAY_SECONDS, 3 * DAY_SECONDS, 10 * DAY_SECONDS]
# Amounts ending in 13 are declined by the simulated bank.
BANK_AMOUNTS = st.one_of(
    st.integers(1, 300_00), st.integers(0, 300).map(lambda k: k * 100 + 13), st.just(1)
)
# Money out: small amounts, some declined, and "over" (one more than is available).
OUT_AMOUNTS: st.SearchStrategy[int | Literal["over"]] = st.one_of(
    st.integers(1, 30_00), st.integers(0, 30).map(lambda k: k * 100 + 13), st.just("over")
)


def half_even(numerator: int, denominator: int) -> int:
    exact = Decimal(numerator) / Decimal(denominator)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def fee_of(amount: int, basis_points: int) -> int:
    return half_even(amount * basis_points, 10_000)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        return self.now


@dataclass
class ModelOrder:
    id: int
    merchant: int
    out_trade_no: str
    amount: int
    mode: PaymentMode
    expires_at: int
    auto_confirm_seconds: int
    status: str = "WAIT_BUYER_PAY"
    buyer: int = 0
    fee: int = 0
    escrow: str = "none"
    auto_confirm_at: int = 0
    remaining: int = 0
    request_open: bool = False
    refundable_until: int = 0
    refunded: int = 0
    refunded_fee: int = 0
    # out_request_no -> amount
    refunds: dict[str, int] = field(default_factory=dict)


@dataclass
class ModelRequest:
    kind: ChannelRequestKind
    party: int
    amount: int
    final: bool = False

    @property
    def succeeds(self) -> bool:
        return self.amount % 100 != 13


class PlatformMachine(RuleBasedStateMachine):
    def __init__(self, new_database_url: Callable[[], str]) -> None:
        super().__init__()
        self.clock = Clock()
        self.database_url: str = new_database_url()
        self.platform = Platform(self.database_url, clock=self.clock, config=CONFIG)
        self.other: Platform | None = None
        self.numbers = itertools.count(1)
        # The model.
        self.users: list[int] = []
        self.merchants: list[int] = []
        self.fee_rate: dict[int, int] = {}
        self.daily_payout: dict[int, bool] = {}
        self.wallet: dict[int, int] = {}
        self.wallet_pending: dict[int, int] = {}
        self.balance: dict[int, int] = {}
        self.balance_pending: dict[int, int] = {}
        self.escrow = 0
        self.fees = 0
        self.channel = 0
        self.channel_pending = 0
        self.orders: dict[int, ModelOrder] = {}
        self.requests: dict[str, ModelRequest] = {}
        self.held: list[tuple[str, Callback]] = []
        self.delivered: list[tuple[str, Callback]] = []
        self.settled: set[tuple[int, int]] = set()

    # ---------------------------------------------------------------------------- helpers

    def expect(self, decision: Decision, *errors: PaymentError) -> bool:
        """Assert the outcome: ok when no errors are given, else one of them. True if ok."""
        if not errors:
            assert decision.error is None, f"{decision.error}: {decision.message}"
            return True
        assert decision.error in errors, (decision.error, decision.message, errors)
        assert decision.message
        return False

    def collect_callbacks(self) -> None:
        for message in self.platform.bank.callbacks(self.clock.now):
            reference = message.body.split('"channel_reference": "')[1].split('"')[0]
            self.held.append((reference, message))

    def release(self, order: ModelOrder) -> None:
        fee_kept = order.fee - order.refunded_fee
        to_merchant = order.amount - order.refunded - fee_kept
        assert to_merchant >= 0
        assert fee_kept >= 0
        self.escrow -= order.amount - order.refunded
        self.balance[order.merchant] += to_merchant
        self.fees += fee_kept
        order.escrow = "released"
        order.auto_confirm_at = 0
        order.remaining = 0
        order.request_open = False

    def resume(self, order: ModelOrder) -> None:
        if order.request_open:
            order.request_open = False
            order.auto_confirm_at = self.clock.now + order.remaining
            order.remaining = 0

    def new_request(self, decision: Decision, kind: ChannelRequestKind, party: int) -> None:
        [request] = decision.channel_requests
        self.requests[request.channel_reference] = ModelRequest(kind, party, request.amount)

    # ---------------------------------------------------------------------------- parties

    @initialize()
    def start(self) -> None:
        for _ in range(2):
            self.create_user()
            self.create_merchant(fee=60, daily=True)
        for user in self.users:
            self.top_up(user, 2_000_00)
        self.deliver_all()

    @rule()
    def create_user(self) -> None:
        user = self.platform.create_user(f"user {len(self.users)}")
        self.users.append(user.id)
        self.wallet[user.id] = 0
        self.wallet_pending[user.id] = 0

    @rule(fee=st.sampled_from(FEE_RATES), daily=st.booleans())
    def create_merchant(self, fee: int, daily: bool) -> None:
        merchant = self.platform.create_merchant(
            f"shop {len(self.merchants)}",
            fee_rate_basis_points=fee,
            settlement_bank_account="6222",
            daily_payout=daily,
        )
        self.merchants.append(merchant.id)
        self.fee_rate[merchant.id] = fee
        self.daily_payout[merchant.id] = daily
        self.balance[merchant.id] = 0
        self.balance_pending[merchant.id] = 0

    # ------------------------------------------------------------------------ bank channel

    def top_up(self, user: int, amount: int) -> None:
        decision = self.platform.request_top_up(user, f"top-up-{next(self.numbers)}", amount)
        self.expect(decision)
        self.new_request(decision, ChannelRequestKind.TOP_UP, user)
        self.collect_callbacks()

    @rule(data=st.data(), amount=BANK_AMOUNTS)
    def request_top_up(self, data: st.DataObject, amount: int) -> None:
        self.top_up(data.draw(st.sampled_from(self.users)), amount)

    @rule(data=st.data(), wanted=OUT_AMOUNTS)
    def request_withdrawal(self, data: st.DataObject, wanted: int | Literal["over"]) -> None:
        user = data.draw(st.sampled_from(self.users))
        available = self.wallet[user] - self.wallet_pending[user]
        amount = available + 1 if wanted == "over" else int(wanted)
        decision = self.platform.request_withdrawal(user, f"w-{next(self.numbers)}", amount)
        if amount > self.wallet[user] - self.wallet_pending[user]:
            self.expect(decision, E.INSUFFICIENT_FUNDS)
            return
        self.expect(decision)
        self.wallet_pending[user] += amount
        self.channel_pending += amount
        self.new_request(decision, ChannelRequestKind.WITHDRAWAL, user)
        self.collect_callbacks()

    @rule(data=st.data(), wanted=st.one_of(st.none(), OUT_AMOUNTS))
    def request_payout(self, data: st.DataObject, wanted: int | Literal["over"] | None) -> None:
        merchant = data.draw(st.sampled_from(self.merchants))
        available = self.balance[merchant] - self.balance_pending[merchant]
        amount = available + 1 if wanted == "over" else wanted
        decision = self.platform.request_payout(merchant, f"p-{next(self.numbers)}", amount)
        if amount is None and available <= 0:
            self.expect(decision, E.NOTHING_TO_PAY_OUT)
            return
        wanted = available if amount is None else amount
        if wanted > available:
            self.expect(decision, E.INSUFFICIENT_FUNDS)
            return
        self.expect(decision)
        assert decision.channel_requests[0].amount == wanted
        self.balance_pending[merchant] += wanted
        self.channel_pending += wanted
        self.new_request(decision, ChannelRequestKind.PAYOUT, merchant)
        self.collect_callbacks()

    @rule()
    def settle_day(self) -> None:
        day = self.clock.now // DAY
        decisions = self.platform.settle_day(day * DAY)
        expected: list[tuple[int, int, bool]] = []
        for merchant in self.merchants:
            if not self.daily_payout[merchant]:
                continue
            available = self.balance[merchant] - self.balance_pending[merchant]
            if (merchant, day) in self.settled:
                expected.append((merchant, -1, True))
            elif available > 0:
                expected.append((merchant, available, False))
                self.settled.add((merchant, day))
                self.balance_pending[merchant] += available
                self.channel_pending += available
        got = []
        for decision in decisions:
            self.expect(decision)
            [request] = decision.channel_requests
            got.append(
                (request.party_id, -1 if decision.replayed else request.amount, decision.replayed)
            )
            if not decision.replayed:
                self.requests[request.channel_reference] = ModelRequest(
                    ChannelRequestKind.PAYOUT, request.party_id, request.amount
                )
        assert got == expected
        self.collect_callbacks()

    def apply_callback(self, reference: str) -> None:
        request = self.requests[reference]
        assert not request.final
        request.final = True
        amount = request.amount
        if request.kind is ChannelRequestKind.TOP_UP:
            if request.succeeds:
                self.wallet[request.party] += amount
                self.channel += amount
            return
        if request.kind is ChannelRequestKind.WITHDRAWAL:
            self.wallet_pending[request.party] -= amount
            if request.succeeds:
                self.wallet[request.party] -= amount
        else:
            self.balance_pending[request.party] -= amount
            if request.succeeds:
                self.balance[request.party] -= amount
        self.channel_pending -= amount
        if request.succeeds:
            self.channel -= amount

    def deliver_all(self) -> None:
        while self.held:
            self.deliver(0, twice=False)

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 20), twice=st.booleans())
    def deliver(self, index: int, twice: bool) -> None:
        """The bank answers one instruction, in any order, possibly twice."""
        reference, message = self.held.pop(index % len(self.held))
        decision = self.platform.channel_callback_message(message.body, message.signature)
        self.expect(decision)
        assert not decision.replayed
        self.apply_callback(reference)
        self.delivered.append((reference, message))
        if twice:
            again = self.platform.channel_callback_message(message.body, message.signature)
            self.expect(again)
            assert again.replayed

    @precondition(lambda self: self.held or self.delivered)
    @rule(index=st.integers(0, 50), how=st.sampled_from(["late_again", "conflicting", "forged"]))
    def replayed_or_bad_callback(self, index: int, how: str) -> None:
        """A delivered answer again (a replay), its opposite signed by the bank (a conflict),
        or a body the bank did not sign (forged): none changes anything."""
        if how == "forged" or not self.delivered:
            pool = self.held + self.delivered
            _reference, message = pool[index % len(pool)]
            body = message.body.replace('"amount": ', '"amount": 9')
            forged = self.platform.channel_callback_message(body, message.signature)
            self.expect(forged, E.INVALID_CHANNEL_SIGNATURE)
            return
        _reference, message = self.delivered[index % len(self.delivered)]
        if how == "late_again":
            decision = self.platform.channel_callback_message(message.body, message.signature)
            self.expect(decision)
            assert decision.replayed
            return
        success, failure = '"status": "SUCCESS"', '"status": "FAILED"'
        if success in message.body:
            body = message.body.replace(success, failure)
        else:
            body = message.body.replace(failure, success)
        conflicting = self.platform.channel_callback_message(body, self.platform.bank.sign(body))
        self.expect(conflicting, E.CHANNEL_CALLBACK_CONFLICT)

    # ----------------------------------------------------------------------------- orders

    def order(
        self, data: st.DataObject, preferred: Callable[[ModelOrder], bool] | None = None
    ) -> ModelOrder:
        """Any order; mostly (when `preferred` is given and matches some) one it matches."""
        candidates = sorted(self.orders)
        if preferred is not None:
            matching = [i for i in candidates if preferred(self.orders[i])]
            if matching and data.draw(st.integers(0, 9)) < 8:
                candidates = matching
        return self.orders[data.draw(st.sampled_from(candidates))]

    @rule(
        data=st.data(),
        amount=st.integers(1, 200_00),
        escrow=st.booleans(),
        timeout=st.sampled_from([None, 60, 7 * DAY_SECONDS]),
        auto_confirm=st.sampled_from([None, 3600, 2 * DAY_SECONDS, 30 * DAY_SECONDS]),
    )
    def create_order(
        self,
        data: st.DataObject,
        amount: int,
        escrow: bool,
        timeout: int | None,
        auto_confirm: int | None,
    ) -> None:
        merchant = data.draw(st.sampled_from(self.merchants))
        mode = PaymentMode.ESCROW if escrow else PaymentMode.DIRECT
        number = f"T-{next(self.numbers)}"
        decision = self.platform.create_order(
            merchant,
            number,
            amount,
            subject="goods",
            mode=mode,
            timeout_seconds=timeout,
            auto_confirm_seconds=auto_confirm,
        )
        self.expect(decision)
        assert not decision.replayed
        [order] = decision.orders
        assert order.id not in self.orders
        self.orders[order.id] = ModelOrder(
            id=order.id,
            merchant=merchant,
            out_trade_no=number,
            amount=amount,
            mode=mode,
            expires_at=self.clock.now + (timeout or ORDER_TIMEOUT_SECONDS) * NS,
            auto_confirm_seconds=auto_confirm or AUTO_CONFIRM_SECONDS,
        )

    @rule(data=st.data(), amount=st.integers(1, 150_00), escrow=st.booleans())
    def create_and_pay_order(self, data: st.DataObject, amount: int, escrow: bool) -> None:
        auto_confirm = data.draw(st.sampled_from([None, 3600, 2 * DAY_SECONDS]))
        self.create_order(data, amount, escrow, None, auto_confirm)
        order_id = max(self.orders)
        buyer = data.draw(st.sampled_from(self.users))
        self.pay_by(self.orders[order_id], buyer)

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), same=st.booleans())
    def create_order_again(self, data: st.DataObject, same: bool) -> None:
        order = self.order(data)
        decision = self.platform.create_order(
            order.merchant,
            order.out_trade_no,
            order.amount if same else order.amount + 1,
            subject="goods",
            mode=order.mode,
        )
        if not same:
            self.expect(decision, E.ORDER_EXISTS_WITH_DIFFERENT_CONTENT)
            return
        self.expect(decision)
        assert decision.replayed
        assert decision.orders[0].id == order.id

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def pay(self, data: st.DataObject) -> None:
        order = self.order(data, lambda o: o.status == "WAIT_BUYER_PAY")
        if order.buyer and data.draw(st.booleans()):
            buyer = order.buyer
        else:
            buyer = data.draw(st.sampled_from(self.users))
        self.pay_by(order, buyer)

    def pay_by(self, order: ModelOrder, buyer: int) -> None:
        decision = self.platform.pay_order(order.id, buyer)
        now = self.clock.now
        if order.buyer == buyer and order.status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
            self.expect(decision)
            assert decision.replayed
            return
        if order.status == "TRADE_CLOSED":
            self.expect(decision, E.ORDER_ALREADY_CLOSED)
            return
        if order.status != "WAIT_BUYER_PAY":
            self.expect(decision, E.ORDER_ALREADY_PAID)
            return
        if now >= order.expires_at:
            self.expect(decision, E.ORDER_EXPIRED)
            return
        if order.amount > self.wallet[buyer] - self.wallet_pending[buyer]:
            self.expect(decision, E.INSUFFICIENT_FUNDS)
            return
        self.expect(decision)
        assert not decision.replayed
        fee = fee_of(order.amount, self.fee_rate[order.merchant])
        self.wallet[buyer] -= order.amount
        order.status = "TRADE_SUCCESS"
        order.buyer = buyer
        order.fee = fee
        order.refundable_until = now + REFUND_PERIOD_SECONDS * NS
        if order.mode is PaymentMode.DIRECT:
            self.balance[order.merchant] += order.amount - fee
            self.fees += fee
        else:
            self.escrow += order.amount
            order.escrow = "held"
            order.auto_confirm_at = now + order.auto_confirm_seconds * NS

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), by_buyer=st.booleans())
    def confirm_receipt(self, data: st.DataObject, by_buyer: bool) -> None:
        order = self.order(data, lambda o: o.escrow == "held")
        buyer = order.buyer if by_buyer and order.buyer else data.draw(st.sampled_from(self.users))
        decision = self.platform.confirm_receipt(order.id, buyer)
        if order.mode is PaymentMode.DIRECT:
            self.expect(decision, E.ORDER_NOT_ESCROW)
        elif order.status == "TRADE_CLOSED":  # cancelled or expired unpaid, or fully refunded
            self.expect(decision, E.ORDER_ALREADY_CLOSED)
        elif order.status == "WAIT_BUYER_PAY":
            self.expect(decision, E.ORDER_NOT_PAID)
        elif buyer != order.buyer:
            self.expect(decision, E.NOT_THE_BUYER)
        elif order.escrow != "held":
            self.expect(decision, E.ESCROW_ALREADY_RELEASED)
        else:
            self.expect(decision)
            self.release(order)

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), by_buyer=st.booleans())
    def open_refund_request(self, data: st.DataObject, by_buyer: bool) -> None:
        order = self.order(data, lambda o: o.escrow == "held")
        buyer = order.buyer if by_buyer and order.buyer else data.draw(st.sampled_from(self.users))
        decision = self.platform.open_refund_request(order.id, buyer)
        if order.mode is not PaymentMode.ESCROW or order.escrow != "held":
            self.expect(decision, E.ORDER_NOT_ESCROW)
        elif buyer != order.buyer:
            self.expect(decision, E.NOT_THE_BUYER)
        elif order.request_open:
            self.expect(decision, E.REFUND_REQUEST_ALREADY_OPEN)
        else:
            self.expect(decision)
            order.request_open = True
            order.remaining = max(order.auto_confirm_at - self.clock.now, 0)
            order.auto_confirm_at = 0

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def reject_refund_request(self, data: st.DataObject) -> None:
        order = self.order(data, lambda o: o.request_open)
        decision = self.platform.reject_refund_request(order.id, order.merchant)
        if not order.request_open:
            self.expect(decision, E.NO_REFUND_REQUEST_OPEN)
            return
        self.expect(decision)
        self.resume(order)

    @precondition(lambda self: self.orders)
    @rule(
        data=st.data(),
        how=st.sampled_from(["some", "some", "all", "rest", "rest", "over", "again", "changed"]),
    )
    def refund(self, data: st.DataObject, how: str) -> None:
        order = self.order(data, lambda o: o.status == "TRADE_SUCCESS")
        rest = order.amount - order.refunded
        if how in ("again", "changed") and order.refunds:
            number = data.draw(st.sampled_from(sorted(order.refunds)))
            amount = order.refunds[number] + (how == "changed")
        else:
            number = f"R-{next(self.numbers)}"
            amount = {
                "all": order.amount,
                "rest": max(rest, 1),
                "over": rest + 1,
            }.get(how) or data.draw(st.integers(1, max(order.amount // 2, 1)))
        decision = self.platform.refund(order.id, order.merchant, number, amount)
        if number in order.refunds:
            if amount == order.refunds[number]:
                self.expect(decision)
                assert decision.replayed
            else:
                self.expect(decision, E.REFUND_EXISTS_WITH_DIFFERENT_CONTENT)
            return
        now = self.clock.now
        if order.status == "WAIT_BUYER_PAY":
            self.expect(decision, E.ORDER_NOT_PAID)
            return
        if order.status == "TRADE_CLOSED":
            self.expect(decision, E.ORDER_ALREADY_CLOSED)
            return
        if order.status == "TRADE_FINISHED" or (
            order.escrow != "held" and order.refundable_until <= now
        ):
            self.expect(decision, E.ORDER_ALREADY_FINISHED)
            return
        if amount > rest:
            self.expect(decision, E.REFUND_EXCEEDS_AMOUNT_PAID)
            return
        refunded = order.refunded + amount
        refunded_fee = half_even(order.fee * refunded, order.amount)
        fee_back = refunded_fee - order.refunded_fee
        if order.escrow == "held":
            self.escrow -= amount
        else:
            merchant = order.merchant
            from_merchant = amount - fee_back
            if from_merchant > self.balance[merchant] - self.balance_pending[merchant]:
                self.expect(decision, E.INSUFFICIENT_FUNDS)
                return
            self.balance[merchant] -= from_merchant
            self.fees -= fee_back
        self.expect(decision)
        assert decision.refunds[0].fee_refunded == fee_back
        assert decision.refunds[0].source == ("escrow" if order.escrow == "held" else "merchant")
        self.wallet[order.buyer] += amount
        order.refunds[number] = amount
        self.resume(order)
        order.refunded = refunded
        order.refunded_fee = refunded_fee
        if refunded == order.amount:
            order.status = "TRADE_CLOSED"
            order.auto_confirm_at = 0
            order.remaining = 0
            order.request_open = False
            if order.escrow == "held":
                order.escrow = "refunded"

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), own=st.booleans())
    def cancel(self, data: st.DataObject, own: bool) -> None:
        order = self.order(data, lambda o: o.status == "WAIT_BUYER_PAY")
        others = [m for m in self.merchants if m != order.merchant]
        merchant = order.merchant if own or not others else data.draw(st.sampled_from(others))
        decision = self.platform.cancel_order(order.id, merchant)
        if merchant != order.merchant:
            self.expect(decision, E.ORDER_NOT_FOUND)
        elif order.status == "TRADE_CLOSED":
            self.expect(decision)
            assert decision.replayed
        elif order.status != "WAIT_BUYER_PAY":
            self.expect(decision, E.ORDER_ALREADY_PAID)
        else:
            self.expect(decision)
            order.status = "TRADE_CLOSED"

    # -------------------------------------------------------------------------- scheduler

    def model_scheduler(self) -> tuple[int, int, int]:
        now = self.clock.now
        closed = released = finished = 0
        for order in self.orders.values():
            if order.status == "WAIT_BUYER_PAY" and order.expires_at <= now:
                order.status = "TRADE_CLOSED"
                closed += 1
        for order in self.orders.values():
            if order.escrow == "held" and 0 < order.auto_confirm_at <= now:
                self.release(order)
                released += 1
        for order in self.orders.values():
            if (
                order.status == "TRADE_SUCCESS"
                and order.escrow != "held"
                and 0 < order.refundable_until <= now
            ):
                order.status = "TRADE_FINISHED"
                finished += 1
        return closed, released, finished

    @rule(seconds=st.sampled_from(CLOCK_MOVES), again=st.sampled_from(["no", "same", "other"]))
    def move_clock_and_run_scheduler(self, seconds: int, again: str) -> None:
        self.clock.now += seconds * NS
        report = self.platform.run_scheduler()
        assert report.errors == []
        expected = self.model_scheduler()
        assert (report.closed_orders, report.auto_confirmed, report.finished_trades) == expected
        if again == "no":
            return
        if again == "other":
            if self.other is None:
                self.other = Platform(self.database_url, clock=self.clock, config=CONFIG)
            runner = self.other
        else:
            runner = self.platform
        second = runner.run_scheduler()
        assert (second.closed_orders, second.auto_confirmed, second.finished_trades) == (0, 0, 0)

    # ------------------------------------------------------------------------- invariants

    @invariant()
    def balances_match_the_model(self) -> None:
        ids = [chart.user_wallet(u, CNY) for u in self.users]
        ids += [chart.merchant_balance(m, CNY) for m in self.merchants]
        ids += [
            chart.escrow(CNY),
            chart.fee_revenue(CNY),
            chart.channel_settlement(1, CNY),
            chart.suspense(CNY),
        ]
        accounts = self.platform.ledger.lookup_accounts(ids)
        assert len(accounts) == len(ids)
        by_id = {a.id: a for a in accounts}
        for user in self.users:
            a = by_id[chart.user_wallet(user, CNY)]
            assert (a.credits_posted - a.debits_posted, a.debits_pending) == (
                self.wallet[user],
                self.wallet_pending[user],
            ), f"wallet of user {user}"
        for merchant in self.merchants:
            a = by_id[chart.merchant_balance(merchant, CNY)]
            assert (a.credits_posted - a.debits_posted, a.debits_pending) == (
                self.balance[merchant],
                self.balance_pending[merchant],
            ), f"balance of merchant {merchant}"
        escrow = by_id[chart.escrow(CNY)]
        assert escrow.credits_posted - escrow.debits_posted == self.escrow
        fees = by_id[chart.fee_revenue(CNY)]
        assert fees.credits_posted - fees.debits_posted == self.fees
        channel = by_id[chart.channel_settlement(1, CNY)]
        assert channel.debits_posted - channel.credits_posted == self.channel
        assert channel.credits_pending == self.channel_pending
        # The books balance: every account of the ledger is one of these.
        assert sum(a.debits_posted for a in accounts) == sum(a.credits_posted for a in accounts)
        assert sum(a.debits_pending for a in accounts) == sum(a.credits_pending for a in accounts)
        # Money is conserved: what came in through the bank is somewhere.
        held = sum(self.wallet.values()) + sum(self.balance.values()) + self.escrow + self.fees
        assert held == self.channel

    @invariant()
    def orders_match_the_model(self) -> None:
        stored = {o.id: o for o in self.platform.store.all_orders()}
        assert sorted(stored) == sorted(self.orders)
        for order_id, model in self.orders.items():
            o = stored[order_id]
            got = (
                o.status.value,
                o.buyer_id,
                o.fee,
                o.escrow_state.value,
                o.refunded_amount,
                o.refunded_fee,
                o.auto_confirm_at,
                o.auto_confirm_remaining,
                o.refund_request_open,
            )
            want = (
                model.status,
                model.buyer,
                model.fee,
                model.escrow,
                model.refunded,
                model.refunded_fee,
                model.auto_confirm_at,
                model.remaining,
                model.request_open,
            )
            assert got == want, f"order {order_id}"

    def teardown(self) -> None:
        try:
            report = self.platform.verify()
            assert report.ok, report.render()
        finally:
            self.platform.close()
            if self.other is not None:
                self.other.close()


class MachineSettings(TypedDict):
    """The `hypothesis.settings` both tests share (each adds its own `max_examples`)."""

    stateful_step_count: int
    deadline: None
    suppress_health_check: list[HealthCheck]


SETTINGS: MachineSettings = {
    "stateful_step_count": 100,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


def platform_machine(new_database_url: Callable[[], str]) -> type[PlatformMachine]:
    """`PlatformMachine` on databases from `new_database_url`, as a class hypothesis can run."""

    class BoundPlatformMachine(PlatformMachine):
        def __init__(self) -> None:
            super().__init__(new_database_url)

    return BoundPlatformMachine


def test_platform_matches_the_model_on_sqlite(tmp_path: Path) -> None:
    numbers = itertools.count()

    def new_database_url() -> str:
        return str(tmp_path / f"platform_{next(numbers)}.db")

    run_state_machine_as_test(
        platform_machine(new_database_url), settings=settings(max_examples=30, **SETTINGS)
    )


@pytest.mark.postgres
def test_platform_matches_the_model_on_postgres(postgres_server: PostgresServer) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    numbers = itertools.count()

    def new_database_url() -> str:
        return postgres_server.create_database(f"platform_properties_{worker}_{next(numbers)}")

    run_state_machine_as_test(
        platform_machine(new_database_url), settings=settings(max_examples=10, **SETTINGS)
    )
