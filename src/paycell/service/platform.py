"""The payment platform's command handlers: prefetch, decide (pure), apply, commit once.

Each command runs in one unit of work under the ledger's writer lock:
1. expire due pending transfers (the ledger's own housekeeping);
2. read the records the command needs and call the pure flow (`core.payments.flows`);
3. run the flow's transfers through the ledger state machine in the same unit;
4. if the ledger accepts every transfer, save its outcome and the flow's records together and
   commit; if it rejects one (a wallet short of funds), save nothing of the command.

So an order is paid in the same commit that moves the money, or not at all, and a retried
command finds the records it already wrote and answers as before (`Decision.replayed`).
"""

import dataclasses
import hashlib
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, NamedTuple, Protocol, cast

from paycell.core.batch import CommittedBatch, LedgerMeta
from paycell.core.currency import Currency, currency_for_code, currency_for_ledger
from paycell.core.errors import InvalidFieldError
from paycell.core.limits import QUERY_LIMIT_MAX, TIMESTAMP_MAX
from paycell.core.payments import chart, flows
from paycell.core.payments.outcomes import Decision, PaymentError, rejected
from paycell.core.payments.records import (
    ChannelRequest,
    ChannelRequestKind,
    Merchant,
    Order,
    PartyKind,
    PaymentMode,
    Refund,
    User,
    WebhookEvent,
)
from paycell.core.results import CreateAccountResult, CreateTransferResult
from paycell.core.types import (
    Account,
    AccountBalance,
    AccountFilter,
    AccountFilterFlags,
    Transfer,
    TransferFlags,
)
from paycell.service.ledger_service import Clock, LedgerService
from paycell.service.platform_ports import (
    ApiKey,
    IdempotencyKey,
    IdempotencyRecord,
    PlatformStore,
    PlatformWriteUnit,
    WebhookDelivery,
)
from paycell.service.webhooks import WebhookService

# How many due records one scheduler pass handles per job; the next pass takes the rest.
SCHEDULER_BATCH_MAX: Final = 500
# Payments per group commit: one transaction holds the writer lock for all of them, so the
# group is bounded to keep other writers' wait short (about a second at ~1,000 payments/s).
GROUP_PAYMENTS_MAX: Final = 1_000
# A page of a list endpoint holds at most this many records.
PAGE_LIMIT_MAX: Final = 500
DEFAULT_CHANNEL_NUMBER: Final = 1
NANOSECONDS_PER_DAY: Final = 86_400 * 1_000_000_000


class BankChannel(Protocol):
    """What the platform needs from a bank: take an instruction; answer later, by callback."""

    number: int

    def initiate(self, request: ChannelRequest) -> None: ...


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    currencies: tuple[str, ...] = ("CNY",)
    order_timeout_seconds: int = flows.DEFAULT_ORDER_TIMEOUT_SECONDS
    auto_confirm_seconds: int = flows.DEFAULT_AUTO_CONFIRM_SECONDS
    refund_period_seconds: int = flows.DEFAULT_REFUND_PERIOD_SECONDS
    channel_number: int = DEFAULT_CHANNEL_NUMBER
    # Let the scheduler settle each finished UTC day (pay out every merchant's balance).
    # Off for the library by default, so a program moving its clock decides when money
    # leaves; `paycell serve` turns it on.
    daily_settlement: bool = False

    @property
    def ledgers(self) -> tuple[int, ...]:
        return tuple(currency_for_code(code).ledger for code in self.currencies)


@dataclass(slots=True)
class SettlementReport:
    """One merchant's day in one currency, in minor units, as the books show it."""

    merchant_id: int
    day_start: int
    currency: str
    opening_balance: int
    closing_balance: int
    # Credited to the merchant: direct payments and escrow releases, net of the fee.
    sales: int = 0
    # The platform's fee on those sales (the sale's gross is sales + fees).
    fees: int = 0
    # Refunds paid from the merchant's balance (net of the fee the platform returned).
    refunds: int = 0
    # Payouts the bank confirmed that day.
    payouts: int = 0
    sales_count: int = 0
    refunds_count: int = 0
    payouts_count: int = 0

    @property
    def balanced(self) -> bool:
        """Opening balance plus the day's movements equals the closing balance."""
        movement = self.sales - self.refunds - self.payouts
        return self.opening_balance + movement == self.closing_balance

    def add(
        self, transfer: Transfer, account_id: int, fee_of_sale: Callable[[Transfer], int]
    ) -> None:
        code = transfer.code
        if transfer.credit_account_id == account_id and code in (
            flows.TransferCode.PAYMENT,
            flows.TransferCode.ESCROW_RELEASE,
        ):
            self.sales += transfer.amount
            self.sales_count += 1
            self.fees += fee_of_sale(transfer)
        elif transfer.debit_account_id == account_id and code == flows.TransferCode.REFUND:
            self.refunds += transfer.amount
            self.refunds_count += 1
        elif (
            transfer.debit_account_id == account_id
            and code == flows.TransferCode.PAYOUT
            and transfer.flags & TransferFlags.POST_PENDING_TRANSFER
        ):
            self.payouts += transfer.amount
            self.payouts_count += 1


class OrderPayment(NamedTuple):
    """One payment of a group: the merchant's order number, amount and the paying buyer."""

    out_trade_no: str
    amount: int
    buyer_id: int
    currency: str = "CNY"
    subject: str = ""


class OrderAction(StrEnum):
    """A money-moving command on an existing order that can join a group
    (`run_order_commands`). Only paying does for now; confirming receipt and refunding fit the
    same shape (an order, a party, a decision) and can join when they need to."""

    PAY = "pay"


@dataclass(frozen=True, slots=True)
class OrderCommand:
    """One command of a group: `action` on order `order_id` by `party_id` (the buyer, to pay).

    `remember`, when given, turns the command's decision into the idempotency record to keep
    for it (its response, rendered by the caller) and is called inside the group's unit of
    work, so the outcome and its remembered response commit together."""

    action: OrderAction
    order_id: int
    party_id: int
    remember: Callable[[Decision], IdempotencyRecord] | None = None


class CommandOutcome(NamedTuple):
    decision: Decision
    # The record kept for the command's idempotency key: its own, or the one a concurrent
    # request with the same key stored first (the caller answers with that one); None when the
    # command had nothing to remember.
    idempotency_record: IdempotencyRecord | None


Decider = Callable[["PlatformWriteUnit", int], Decision]


class PlatformInvariantError(Exception):
    """A broken contract between the platform and its ledger: a bug, never a business outcome."""


@dataclass(slots=True)
class SchedulerReport:
    closed_orders: int = 0
    auto_confirmed: int = 0
    finished_trades: int = 0
    expired_pending_transfers: int = 0
    payouts_started: int = 0
    errors: list[str] = field(default_factory=list)


_LEDGER_REJECTIONS: Final = {
    CreateTransferResult.EXCEEDS_CREDITS: PaymentError.INSUFFICIENT_FUNDS,
}


class PlatformService:
    def __init__(
        self,
        store: PlatformStore,
        clock: Clock,
        channel: BankChannel,
        config: PlatformConfig | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.channel = channel
        self.config = config or PlatformConfig()
        self.ledger = LedgerService(store, clock)
        self.webhooks = WebhookService(store, self.ledger, clock)
        # The last UTC day this process settled; settlement itself is idempotent per day, so
        # this only saves rescanning merchants on every scheduler pass.
        self._settled_through_day: int | None = None
        self._initialize_platform_accounts()

    # -------------------------------------------------------------------------- machinery

    def _run(self, decide: Decider) -> Decision:
        """One command, one unit of work, one commit."""
        committed: list[CommittedBatch] = []
        with self.ledger.unit_of_work(committed) as (ledger_unit, meta):
            unit = cast(PlatformWriteUnit, ledger_unit)
            meta = self.ledger.expire_due(unit, meta, committed)
            decision, _ = self._apply(unit, meta, committed, decide)
        return decision

    def _apply(
        self,
        unit: PlatformWriteUnit,
        meta: LedgerMeta,
        committed: list[CommittedBatch],
        decide: Decider,
    ) -> tuple[Decision, LedgerMeta]:
        """Decide, run the decision's transfers through the ledger and, if it accepts them
        all, write the ledger batch and the records, inside the caller's unit of work.

        A rejected decision writes nothing, so several commands can share one unit (group
        commit) and each still applies wholly or not at all."""
        decision = decide(unit, self.clock())
        if not decision.ok or decision.replayed:
            return decision, meta
        if decision.transfers:
            results, batch = self.ledger.apply_transfers_in_unit(unit, meta, decision.transfers)
            problem = self._ledger_problem(decision.transfers, results)
            if problem is not None:
                return problem, meta
            if batch is not None:
                unit.save(batch)
                committed.append(batch)
                # The next command in this unit must see these balances, not the cache's.
                self.ledger.account_cache.remember(batch.accounts_updated)
                meta = batch.meta_after
        unit.save_records(decision)
        return decision, meta

    @staticmethod
    def _ledger_problem(
        transfers: Sequence[Transfer], results: Sequence[CreateTransferResult]
    ) -> Decision | None:
        for transfer, result in zip(transfers, results, strict=True):
            if result in (
                CreateTransferResult.OK,
                CreateTransferResult.EXISTS,
                CreateTransferResult.LINKED_EVENT_FAILED,
            ):
                continue
            error = _LEDGER_REJECTIONS.get(result)
            if error is None:
                raise PlatformInvariantError(
                    f"the ledger rejected platform transfer {transfer.id} with {result.value}"
                )
            code, ledger, owner = chart.describe_account_id(transfer.debit_account_id)
            return rejected(
                error,
                f"{code.name.lower().replace('_', ' ')} {owner} has too little "
                f"{_currency_code(ledger)} for this",
            )
        return None

    def _create_accounts(self, accounts: list[Account]) -> None:
        committed: list[CommittedBatch] = []
        with self.ledger.unit_of_work(committed) as (unit, meta):
            results, batch = self.ledger.apply_accounts_in_unit(unit, meta, accounts)
            for account, result in zip(accounts, results, strict=True):
                if result not in (CreateAccountResult.OK, CreateAccountResult.EXISTS):
                    raise PlatformInvariantError(f"account {account.id}: {result.value}")
            if batch is not None:
                unit.save(batch)
                committed.append(batch)

    def _initialize_platform_accounts(self) -> None:
        accounts: list[Account] = []
        for ledger in self.config.ledgers:
            accounts.extend(chart.platform_accounts(ledger, (self.config.channel_number,)))
        self._create_accounts(accounts)

    def _event(
        self, unit: PlatformWriteUnit, merchant_id: int, kind: str, body: str, now: int
    ) -> WebhookEvent:
        return WebhookEvent(unit.next_id("event"), merchant_id, kind, body, now)

    # ---------------------------------------------------------------------------- parties

    def create_user(self, name: str) -> User:
        """A new user with a wallet in every configured currency."""
        with self.ledger.unit_of_work([]) as (ledger_unit, _meta):
            unit = cast(PlatformWriteUnit, ledger_unit)
            user = User(unit.next_id("user"), name, self.clock())
            unit.save_records(Decision(users=[user]))
        self._create_accounts(
            [
                chart.chart_account(chart.AccountCode.USER_WALLET, ledger, user.id)
                for ledger in self.config.ledgers
            ]
        )
        return user

    def create_merchant(
        self,
        name: str,
        *,
        fee_rate_basis_points: int,
        settlement_bank_account: str,
        webhook_url: str = "",
        webhook_secret: str = "",
        daily_payout: bool = True,
    ) -> Merchant:
        if not 0 <= fee_rate_basis_points <= 10_000:
            raise ValueError("fee_rate_basis_points must be between 0 and 10000")
        with self.ledger.unit_of_work([]) as (ledger_unit, _meta):
            unit = cast(PlatformWriteUnit, ledger_unit)
            merchant = Merchant(
                id=unit.next_id("merchant"),
                name=name,
                fee_rate_basis_points=fee_rate_basis_points,
                settlement_bank_account=settlement_bank_account,
                webhook_url=webhook_url,
                webhook_secret=webhook_secret,
                created_at=self.clock(),
                daily_payout=daily_payout,
            )
            unit.save_records(Decision(merchants=[merchant]))
        self._create_accounts(
            [
                chart.chart_account(chart.AccountCode.MERCHANT_BALANCE, ledger, merchant.id)
                for ledger in self.config.ledgers
            ]
        )
        return merchant

    # ----------------------------------------------------------------------------- orders

    def create_order(
        self,
        merchant_id: int,
        out_trade_no: str,
        amount: int,
        *,
        currency: str = "CNY",
        subject: str = "",
        mode: PaymentMode = PaymentMode.DIRECT,
        timeout_seconds: int | None = None,
        auto_confirm_seconds: int | None = None,
    ) -> Decision:
        currency_record = self._currency(currency)
        if currency_record is None:
            return rejected(
                PaymentError.UNSUPPORTED_CURRENCY,
                f"currency {currency!r} is not enabled "
                f"(enabled: {', '.join(self.config.currencies)})",
            )

        return self._run(
            self._create_order_decider(
                merchant_id,
                out_trade_no,
                amount,
                currency_record.ledger,
                subject,
                mode,
                timeout_seconds,
                auto_confirm_seconds,
            )
        )

    def _create_order_decider(
        self,
        merchant_id: int,
        out_trade_no: str,
        amount: int,
        ledger: int,
        subject: str,
        mode: PaymentMode,
        timeout_seconds: int | None,
        auto_confirm_seconds: int | None,
    ) -> Decider:
        def decide(unit: PlatformWriteUnit, now: int) -> Decision:
            existing = unit.order_by_out_trade_no(merchant_id, out_trade_no)
            return flows.create_order(
                merchant=unit.merchant(merchant_id),
                existing=existing,
                new_order_id=0 if existing else unit.next_id("order"),
                out_trade_no=out_trade_no,
                ledger=ledger,
                amount=amount,
                subject=subject,
                mode=mode,
                timeout_seconds=(
                    self.config.order_timeout_seconds
                    if timeout_seconds is None
                    else timeout_seconds
                ),
                auto_confirm_seconds=(
                    self.config.auto_confirm_seconds
                    if auto_confirm_seconds is None
                    else auto_confirm_seconds
                ),
                refund_period_seconds=self.config.refund_period_seconds,
                now=now,
            )

        return decide

    def _order_command(
        self,
        order_id: int,
        merchant_id: int | None,
        act: Callable[[PlatformWriteUnit, Order, int], Decision],
    ) -> Decision:
        return self._run(self._order_decider(order_id, merchant_id, act))

    def _order_decider(
        self,
        order_id: int,
        merchant_id: int | None,
        act: Callable[[PlatformWriteUnit, Order, int], Decision],
    ) -> Decider:
        def decide(unit: PlatformWriteUnit, now: int) -> Decision:
            order = unit.order(order_id)
            if order is None or (merchant_id is not None and order.merchant_id != merchant_id):
                return rejected(PaymentError.ORDER_NOT_FOUND, f"no order {order_id}")
            decision = act(unit, order, now)
            if decision.ok and not decision.replayed:
                decision.events.extend(
                    self._event(unit, o.merchant_id, _event_type(order, o), _order_body(o), now)
                    for o in decision.orders
                    if _event_type(order, o)
                )
            return decision

        return decide

    @staticmethod
    def _pay_act(buyer_id: int) -> Callable[[PlatformWriteUnit, Order, int], Decision]:
        def act(unit: PlatformWriteUnit, order: Order, now: int) -> Decision:
            merchant = unit.merchant(order.merchant_id)
            assert merchant is not None
            return flows.pay_order(
                order=order, merchant=merchant, buyer=unit.user(buyer_id), now=now
            )

        return act

    def pay_order(self, order_id: int, buyer_id: int) -> Decision:
        """The buyer pays the order from their wallet (direct or into escrow)."""
        return self._order_command(order_id, None, self._pay_act(buyer_id))

    def create_and_pay_orders(
        self, merchant_id: int, payments: Sequence[OrderPayment]
    ) -> list[Decision]:
        """Create and pay many orders in ONE unit of work: one commit and one ledger batch for
        the whole group (group commit), each payment still applied wholly or not at all, and
        each account the group touches (the merchant's above all) updated once.

        For aggregators submitting in bulk. Each payment gets the `Decision` its pay command
        would have (or its order creation's rejection). A payment the ledger refuses leaves
        no trace: its freshly created order is closed ("payment_failed") in the same unit.
        At most `GROUP_PAYMENTS_MAX` payments per call.

        The payments run in rounds, each a run of consecutive payments with distinct
        out_trade_no (normally the whole group): a round reads what it needs in a few queries,
        decides every payment purely, applies all their money as one ledger batch, and writes
        its records once. A repeated out_trade_no starts the next round, so it sees what the
        earlier payment did, exactly as one payment after the other."""
        if len(payments) > GROUP_PAYMENTS_MAX:
            raise ValueError(f"at most {GROUP_PAYMENTS_MAX} payments per group")
        results: list[Decision | None] = [None] * len(payments)
        committed: list[CommittedBatch] = []
        with self.ledger.grouped_unit_of_work(committed) as (ledger_unit, meta):
            unit = cast(PlatformWriteUnit, ledger_unit)
            merchant = unit.merchant(merchant_id)
            start = 0
            while start < len(payments):
                end = start
                seen: set[str] = set()
                while end < len(payments) and payments[end].out_trade_no not in seen:
                    seen.add(payments[end].out_trade_no)
                    end += 1
                meta = self._create_and_pay_round(
                    unit,
                    meta,
                    committed,
                    merchant_id,
                    merchant,
                    payments,
                    range(start, end),
                    results,
                )
                start = end
        assert all(result is not None for result in results), "every payment has its decision"
        return [result for result in results if result is not None]

    def _create_and_pay_round(
        self,
        unit: PlatformWriteUnit,
        meta: LedgerMeta,
        committed: list[CommittedBatch],
        merchant_id: int,
        merchant: Merchant | None,
        payments: Sequence[OrderPayment],
        indices: range,
        results: list[Decision | None],
    ) -> LedgerMeta:
        """One round of `create_and_pay_orders`: payments with distinct out_trade_no."""
        now = self.clock()
        ledgers: dict[int, int] = {}
        for index in indices:
            currency_record = self._currency(payments[index].currency)
            if currency_record is None:
                results[index] = rejected(
                    PaymentError.UNSUPPORTED_CURRENCY,
                    f"currency {payments[index].currency!r} is not enabled",
                )
            else:
                ledgers[index] = currency_record.ledger
        # Prefetch: the orders already created under these numbers (replays), the buyers, and
        # an order id for each new number (taken even if the creation is rejected, as alone).
        existing = unit.orders_by_out_trade_no(
            merchant_id, [payments[index].out_trade_no for index in ledgers]
        )
        fresh = [index for index in ledgers if payments[index].out_trade_no not in existing]
        new_order_ids = dict(zip(fresh, unit.next_ids("order", len(fresh)), strict=True))
        buyers = unit.users_by_id({payments[index].buyer_id for index in ledgers})
        # Decide, purely: each creation, then each payment of an order created or found.
        orders: dict[int, Order] = {}
        pays: dict[int, Decision] = {}
        for index, ledger in ledgers.items():
            payment = payments[index]
            created = flows.create_order(
                merchant=merchant,
                existing=existing.get(payment.out_trade_no),
                new_order_id=new_order_ids.get(index, 0),
                out_trade_no=payment.out_trade_no,
                ledger=ledger,
                amount=payment.amount,
                subject=payment.subject,
                mode=PaymentMode.DIRECT,
                timeout_seconds=self.config.order_timeout_seconds,
                auto_confirm_seconds=self.config.auto_confirm_seconds,
                refund_period_seconds=self.config.refund_period_seconds,
                now=now,
            )
            if not created.ok:
                results[index] = created
                continue
            order = created.orders[0]
            assert merchant is not None, "an order is created or found for a merchant"
            assert order.merchant_id == merchant_id, "an order found for a merchant is its own"
            orders[index] = order
            pays[index] = flows.pay_order(
                order=order, merchant=merchant, buyer=buyers.get(payment.buyer_id), now=now
            )
        meta = self._apply_together(unit, meta, committed, pays)
        # Each payment's change of its order: paid, or, for an order created by this very
        # payment, closed when the payment failed; an order found replays or is left as is.
        changes: list[tuple[Order, Decision]] = []
        for index, paid in pays.items():
            before = orders[index]
            created_now = index in new_order_ids
            if paid.ok and not paid.replayed:
                changes.append((before, paid))
            elif created_now:
                assert not paid.ok, "a payment of an order created just now is no replay"
                closed = flows.close_order(order=before, now=now, reason="payment_failed")
                assert closed.ok, "a new order can always be closed"
                assert not closed.replayed, "a new order is not closed yet"
                changes.append((before, closed))
            results[index] = paid
        self._number_events(unit, changes, now)
        # The round's records in one write per table: one version of each order, its last.
        records = Decision()
        for _before, decision in changes:
            _gather(records, decision)
        unit.save_records(records)
        return meta

    def run_order_commands(self, commands: Sequence[OrderCommand]) -> list[CommandOutcome]:
        """Run many order commands in ONE unit of work and ONE commit (group commit), each with
        the decision it would have had alone, in the order given.

        The money of every command that moves some goes into one ledger batch, each command's
        transfers a linked chain of their own: a chain the ledger refuses (a wallet short of
        funds) is dropped and the batch is run again without it, so a refused command writes
        nothing, and every account the group touches, a hot merchant's balance above all, is
        written once per group rather than once per payment. A round is the longest run of
        commands on distinct orders; a command on an order already in the round starts the
        next one, so every command sees what the commands before it did, exactly as one after
        the other. Due reservations are expired before the first round. Each command's
        idempotency record (`OrderCommand.remember`) is kept in the same unit; a record another
        request stored first for the same key wins.
        At most `GROUP_PAYMENTS_MAX` commands per call.

        A round reads its orders, their merchants and the payers in three queries, decides
        every command purely, numbers the events of the accepted ones in one statement, and
        writes its records and idempotency records once."""
        if len(commands) > GROUP_PAYMENTS_MAX:
            raise ValueError(f"at most {GROUP_PAYMENTS_MAX} commands per group")
        for command in commands:
            if command.action is not OrderAction.PAY:
                raise ValueError(f"{command.action} cannot run in a group")
        outcomes: list[CommandOutcome | None] = [None] * len(commands)
        committed: list[CommittedBatch] = []
        with self.ledger.grouped_unit_of_work(committed) as (ledger_unit, meta):
            unit = cast(PlatformWriteUnit, ledger_unit)
            waiting = list(range(len(commands)))
            while waiting:
                # A round is the longest run of commands on distinct orders: a command on an
                # order already in the round, and every command after it, waits for the next
                # round, so each decides on what the commands before it left.
                this_round: list[int] = []
                order_ids: set[int] = set()
                for index in waiting:
                    order_id = commands[index].order_id
                    if order_id in order_ids:
                        break
                    this_round.append(index)
                    order_ids.add(order_id)
                later = waiting[len(this_round) :]
                now = self.clock()
                orders = unit.orders_by_id(order_ids)
                merchants = unit.merchants_by_id({order.merchant_id for order in orders.values()})
                payers = unit.users_by_id({commands[index].party_id for index in this_round})
                decisions = {
                    index: _decide_payment(commands[index], orders, merchants, payers, now)
                    for index in this_round
                }
                meta = self._apply_together(unit, meta, committed, decisions)
                changes = [
                    (orders[commands[index].order_id], decision)
                    for index, decision in decisions.items()
                    if decision.ok and not decision.replayed
                ]
                self._number_events(unit, changes, now)
                # The round's records in one write per table: its commands touch distinct
                # orders, so no record appears twice.
                records = Decision()
                for _before, decision in changes:
                    _gather(records, decision)
                unit.save_records(records)
                kept = self._keep_records(
                    unit, [(commands[index], decisions[index]) for index in this_round]
                )
                for index, record in zip(this_round, kept, strict=True):
                    outcomes[index] = CommandOutcome(decisions[index], record)
                waiting = later
        assert all(outcome is not None for outcome in outcomes), "every command has its outcome"
        return [outcome for outcome in outcomes if outcome is not None]

    def _apply_together(
        self,
        unit: PlatformWriteUnit,
        meta: LedgerMeta,
        committed: list[CommittedBatch],
        decisions: dict[int, Decision],
    ) -> LedgerMeta:
        """Apply the transfers of every accepted decision as one ledger batch, and replace each
        decision the ledger refuses by its rejection (what `_apply` would have answered)."""
        moving = [
            index
            for index, decision in decisions.items()
            if decision.ok and not decision.replayed and decision.transfers
        ]
        # Each pass drops at least one refused decision, so this ends. A refused linked chain
        # leaves no trace on the chains after it, so the second pass normally accepts the rest;
        # it runs anyway because the refusals must not be written to the journal (a refused
        # payment retried after a top-up must not find its transfer ids failed).
        while moving:
            transfers = [t for index in moving for t in decisions[index].transfers]
            results, batch = self.ledger.apply_transfers_in_unit(unit, meta, transfers)
            refused: set[int] = set()
            offset = 0
            for index in moving:
                count = len(decisions[index].transfers)
                problem = self._ledger_problem(
                    decisions[index].transfers, results[offset : offset + count]
                )
                offset += count
                if problem is not None:
                    decisions[index] = problem
                    refused.add(index)
            if refused:
                moving = [index for index in moving if index not in refused]
                continue
            if batch is not None:
                unit.save(batch)
                committed.append(batch)
                # The next round in this unit must see these balances, not the cache's.
                self.ledger.account_cache.remember(batch.accounts_updated)
                meta = batch.meta_after
            break
        return meta

    @staticmethod
    def _number_events(
        unit: PlatformWriteUnit, changes: Sequence[tuple[Order, Decision]], now: int
    ) -> None:
        """Add to each accepted decision the webhook events of its order changes (what
        `_order_decider` adds alone), numbered from one reservation, in the given order."""
        due = [
            (decision, order, kind)
            for before, decision in changes
            for order in decision.orders
            if (kind := _event_type(before, order))
        ]
        event_ids = unit.next_ids("event", len(due))
        for (decision, order, kind), event_id in zip(due, event_ids, strict=True):
            decision.events.append(
                WebhookEvent(event_id, order.merchant_id, kind, _order_body(order), now)
            )

    @staticmethod
    def _keep_records(
        unit: PlatformWriteUnit, commands: Sequence[tuple[OrderCommand, Decision]]
    ) -> list[IdempotencyRecord | None]:
        """Each command's idempotency record: the one already kept for its key, else its own,
        inserted (one read and one write for all). Within the group, the first command with a
        key keeps it, as one after the other."""
        wanted = [
            None if command.remember is None else command.remember(decision)
            for command, decision in commands
        ]
        kept = unit.idempotency_records({_idempotency_key(r) for r in wanted if r is not None})
        new: list[IdempotencyRecord] = []
        answers: list[IdempotencyRecord | None] = []
        for record in wanted:
            if record is None:
                answers.append(None)
                continue
            key = _idempotency_key(record)
            existing = kept.get(key)
            if existing is None:
                kept[key] = existing = record
                new.append(record)
            answers.append(existing)
        unit.save_idempotency_records(new)
        return answers

    def cancel_order(self, order_id: int, merchant_id: int) -> Decision:
        return self._order_command(
            order_id,
            merchant_id,
            lambda unit, order, now: flows.close_order(order=order, now=now, reason="cancelled"),
        )

    def confirm_receipt(self, order_id: int, buyer_id: int) -> Decision:
        return self._order_command(
            order_id,
            None,
            lambda unit, order, now: flows.confirm_receipt(order=order, buyer_id=buyer_id, now=now),
        )

    def open_refund_request(self, order_id: int, buyer_id: int) -> Decision:
        return self._order_command(
            order_id,
            None,
            lambda unit, order, now: flows.open_refund_request(
                order=order, buyer_id=buyer_id, now=now
            ),
        )

    def reject_refund_request(self, order_id: int, merchant_id: int) -> Decision:
        return self._order_command(
            order_id,
            merchant_id,
            lambda unit, order, now: flows.reject_refund_request(order=order, now=now),
        )

    def refund(
        self,
        order_id: int,
        merchant_id: int,
        out_request_no: str,
        amount: int,
        reason: str = "",
    ) -> Decision:
        """Refund part or all of a paid order; the same out_request_no is applied once."""

        def act(unit: PlatformWriteUnit, order: Order, now: int) -> Decision:
            existing = next(
                (r for r in unit.refunds_of_order(order.id) if r.out_request_no == out_request_no),
                None,
            )
            decision = flows.refund(
                order=order,
                existing=existing,
                new_refund_id=0 if existing else unit.next_id("refund"),
                out_request_no=out_request_no,
                amount=amount,
                reason=reason,
                now=now,
            )
            if decision.ok and not decision.replayed:
                decision.events.extend(
                    self._event(unit, r.merchant_id, "refund.succeeded", _refund_body(r), now)
                    for r in decision.refunds
                )
            return decision

        return self._order_command(order_id, merchant_id, act)

    # ------------------------------------------------------------------------ bank channel

    def _channel_command(
        self,
        kind: ChannelRequestKind,
        party_kind: PartyKind,
        party_id: int,
        request_no: str,
        amount: int | None,
        currency: str,
        held_at: int | None = None,
    ) -> Decision:
        currency_record = self._currency(currency)
        if currency_record is None:
            return rejected(
                PaymentError.UNSUPPORTED_CURRENCY, f"currency {currency!r} is not enabled"
            )
        ledger = currency_record.ledger

        def decide(unit: PlatformWriteUnit, now: int) -> Decision:
            party_exists = (
                unit.user(party_id) if party_kind is PartyKind.USER else unit.merchant(party_id)
            )
            if party_exists is None:
                error = (
                    PaymentError.USER_NOT_FOUND
                    if party_kind is PartyKind.USER
                    else PaymentError.MERCHANT_NOT_FOUND
                )
                return rejected(error, f"no {party_kind.value} {party_id}")
            existing = unit.channel_request_by_request_no(party_kind, party_id, kind, request_no)
            wanted = amount
            if wanted is None:
                # "Everything available": the balance as of this unit, under the writer lock.
                account_id = chart.merchant_balance(party_id, ledger)
                account = self.ledger.accounts_in_unit(unit, [account_id]).get(account_id)
                wanted = (
                    account.credits_posted - account.debits_posted - account.debits_pending
                    if account
                    else 0
                )
                if held_at is not None:
                    # Settlement of a past day pays out what the merchant held at its end and
                    # still holds, never money that arrived after it: what is available now,
                    # less everything credited since the day ended, capped at the day's
                    # closing balance.
                    end = self._balance_at(account_id, held_at)
                    closing = end.credits_posted - end.debits_posted if end else 0
                    credited_since = (account.credits_posted if account else 0) - (
                        end.credits_posted if end else 0
                    )
                    wanted = min(closing, wanted - credited_since)
                if existing is not None:
                    wanted = existing.amount
                if wanted <= 0:
                    return rejected(PaymentError.NOTHING_TO_PAY_OUT, "the balance is zero")
            return flows.request_channel_transfer(
                kind=kind,
                party_kind=party_kind,
                party_id=party_id,
                existing=existing,
                new_request_id=0 if existing else unit.next_id("channel_request"),
                request_no=request_no,
                ledger=ledger,
                amount=wanted,
                channel_number=self.config.channel_number,
                now=now,
            )

        decision = self._run(decide)
        if decision.ok and not decision.replayed:
            for request in decision.channel_requests:
                self.channel.initiate(request)
        return decision

    def request_top_up(
        self, user_id: int, request_no: str, amount: int, currency: str = "CNY"
    ) -> Decision:
        return self._channel_command(
            ChannelRequestKind.TOP_UP, PartyKind.USER, user_id, request_no, amount, currency
        )

    def request_withdrawal(
        self, user_id: int, request_no: str, amount: int, currency: str = "CNY"
    ) -> Decision:
        return self._channel_command(
            ChannelRequestKind.WITHDRAWAL, PartyKind.USER, user_id, request_no, amount, currency
        )

    def request_payout(
        self,
        merchant_id: int,
        request_no: str,
        amount: int | None = None,
        currency: str = "CNY",
        *,
        held_at: int | None = None,
    ) -> Decision:
        """Pay a merchant's balance out to its bank; `amount` None pays out all available
        (with `held_at`, at most what the merchant's posted balance was at that time)."""
        return self._channel_command(
            ChannelRequestKind.PAYOUT,
            PartyKind.MERCHANT,
            merchant_id,
            request_no,
            amount,
            currency,
            held_at,
        )

    def _posted_balance_at(self, account_id: int, timestamp: int) -> int:
        """An account's posted balance (credits - debits) right after `timestamp`, from its
        balance history."""
        balance = self._balance_at(account_id, timestamp)
        return balance.credits_posted - balance.debits_posted if balance else 0

    def _balance_at(self, account_id: int, timestamp: int) -> AccountBalance | None:
        """An account's balances right after `timestamp` (None before its first transfer)."""
        if timestamp <= 0:
            return None
        latest = self.ledger.get_account_balances(
            AccountFilter(
                account_id=account_id,
                timestamp_max=timestamp,
                limit=1,
                flags=int(
                    AccountFilterFlags.DEBITS
                    | AccountFilterFlags.CREDITS
                    | AccountFilterFlags.REVERSED
                ),
            )
        )
        return latest[0] if latest else None

    def channel_callback(
        self, channel_reference: str, succeeded: bool, amount: int, failure_reason: str = ""
    ) -> Decision:
        """The bank's answer to an instruction (already authenticated by the channel adapter)."""

        def decide(unit: PlatformWriteUnit, now: int) -> Decision:
            request = unit.channel_request_by_reference(channel_reference)
            if request is None:
                return rejected(
                    PaymentError.CHANNEL_REQUEST_NOT_FOUND, f"no request {channel_reference!r}"
                )
            decision = flows.channel_callback(
                request=request,
                succeeded=succeeded,
                amount=amount,
                channel_number=self.config.channel_number,
                now=now,
                failure_reason=failure_reason,
            )
            if decision.ok and not decision.replayed and request.party_kind is PartyKind.MERCHANT:
                decision.events.extend(
                    self._event(
                        unit, r.party_id, f"payout.{r.status.value.lower()}", _channel_body(r), now
                    )
                    for r in decision.channel_requests
                )
            return decision

        return self._run(decide)

    # --------------------------------------------------------------------------- scheduler

    def run_scheduler(self) -> SchedulerReport:
        """One pass of every time-driven job: close unpaid orders past their time, release
        escrow past its auto-confirm time, finish trades past their refund period, expire
        pending transfers. Each change is its own command, so several processes running the
        scheduler at once apply each change exactly once (the second finds it done)."""
        report = SchedulerReport()
        now = self.clock()
        report.expired_pending_transfers = self.ledger.expire_pending_transfers()
        if self.config.daily_settlement:
            yesterday = now // NANOSECONDS_PER_DAY - 1
            if yesterday >= 0 and (
                self._settled_through_day is None or self._settled_through_day < yesterday
            ):
                for currency in self.config.currencies:
                    for decision in self.settle_day(yesterday * NANOSECONDS_PER_DAY, currency):
                        report.payouts_started += int(decision.ok and not decision.replayed)
                        if not decision.ok:
                            report.errors.append(f"settlement: {decision.message}")
                self._settled_through_day = yesterday
        for order in self._due(lambda unit: unit.unpaid_orders_due(now, SCHEDULER_BATCH_MAX)):
            decision = self._order_command(
                order.id,
                None,
                lambda unit, current, at: (
                    flows.close_order(order=current, now=at, reason="expired")
                    if current.status.value == "WAIT_BUYER_PAY" and current.expires_at <= at
                    else Decision(orders=[current], replayed=True)
                ),
            )
            report.closed_orders += int(decision.ok and not decision.replayed)
        for order in self._due(lambda unit: unit.escrow_releases_due(now, SCHEDULER_BATCH_MAX)):
            decision = self._order_command(
                order.id,
                None,
                lambda unit, current, at: (
                    flows.confirm_receipt(order=current, buyer_id=None, now=at)
                    if current.escrow_state.value == "held" and 0 < current.auto_confirm_at <= at
                    else Decision(orders=[current], replayed=True)
                ),
            )
            report.auto_confirmed += int(decision.ok and not decision.replayed)
            if not decision.ok:
                report.errors.append(f"auto-confirm order {order.id}: {decision.message}")
        for order in self._due(lambda unit: unit.trades_to_finish(now, SCHEDULER_BATCH_MAX)):
            decision = self._order_command(
                order.id,
                None,
                lambda unit, current, at: (
                    flows.finish_trade(order=current, now=at)
                    if current.status.value == "TRADE_SUCCESS"
                    and 0 < current.refundable_until <= at
                    else Decision(orders=[current], replayed=True)
                ),
            )
            report.finished_trades += int(decision.ok and not decision.replayed)
        return report

    def _due(self, query: Callable[[PlatformWriteUnit], list[Order]]) -> list[Order]:
        with self.ledger.unit_of_work([]) as (ledger_unit, _meta):
            unit = cast(PlatformWriteUnit, ledger_unit)
            return query(unit)

    def settle_day(self, day_start: int, currency: str = "CNY") -> list[Decision]:
        """Daily settlement for the day starting at `day_start` (nanoseconds, UTC midnight):
        every merchant with daily payout gets a payout of what it held at the end of that day
        (or what is still available, if less), numbered by the day, so a second run for the
        same day pays nothing twice."""
        _check_day_start(day_start)
        day_number = day_start // NANOSECONDS_PER_DAY
        decisions: list[Decision] = []
        after_id = 0
        while True:
            with self.ledger.unit_of_work([]) as (ledger_unit, _meta):
                unit = cast(PlatformWriteUnit, ledger_unit)
                merchants = unit.merchants_page(after_id, SCHEDULER_BATCH_MAX)
            if not merchants:
                return decisions
            for merchant in merchants:
                if merchant.daily_payout:
                    decision = self.request_payout(
                        merchant.id,
                        # One request number per merchant, day and currency.
                        f"settlement-{day_number}-{currency.upper()}",
                        None,
                        currency,
                        held_at=day_start + NANOSECONDS_PER_DAY - 1,
                    )
                    if decision.error is not PaymentError.NOTHING_TO_PAY_OUT:
                        decisions.append(decision)
            after_id = merchants[-1].id

    # ------------------------------------------------------------------ API keys, idempotency

    def issue_api_key(self, party_kind: PartyKind, party_id: int) -> str:
        """A new secret API key for a user or merchant. Only its SHA-256 is stored: the key is
        shown once, here."""
        key = f"pk_{party_kind.value}_{secrets.token_urlsafe(24)}"
        with self.ledger.unit_of_work([]) as (ledger_unit, _meta):
            unit = cast(PlatformWriteUnit, ledger_unit)
            unit.save_api_key(ApiKey(party_kind, party_id, _key_hash(key), self.clock()))
        return key

    def authenticate(self, api_key: str) -> tuple[PartyKind, int] | None:
        """The party an API key belongs to, or None for an unknown key."""
        return self.store.party_for_api_key(_key_hash(api_key))

    def idempotency_record(
        self, party_kind: PartyKind, party_id: int, key: str
    ) -> IdempotencyRecord | None:
        return self.store.idempotency_record(party_kind, party_id, key)

    def save_idempotency_record(self, record: IdempotencyRecord) -> IdempotencyRecord:
        """Keep a POST's first response; if another request with the same key got there first,
        return that one (the caller answers with it)."""
        with self.ledger.unit_of_work([]) as (ledger_unit, _meta):
            unit = cast(PlatformWriteUnit, ledger_unit)
            existing = unit.idempotency_record(record.party_kind, record.party_id, record.key)
            if existing is not None:
                return existing
            unit.save_idempotency_record(record)
        return record

    # ------------------------------------------------------------------- settlement report

    def settlement_report(
        self, merchant_id: int, day_start: int, currency: str = "CNY"
    ) -> SettlementReport | None:
        """A merchant's day, from the books: opening and closing balance, and the sales,
        refunds and payouts between them. None for an unknown merchant or currency.

        Everything comes from the ledger (the merchant balance keeps its balance history),
        plus each sale's order for its fee, so the report is what the money did, not what the
        records say it should have done; `balanced` checks the two agree.
        """
        _check_day_start(day_start)
        currency_record = self._currency(currency)
        if currency_record is None or self.store.merchant(merchant_id) is None:
            return None
        account_id = chart.merchant_balance(merchant_id, currency_record.ledger)
        day_end = day_start + NANOSECONDS_PER_DAY - 1
        both_sides = int(AccountFilterFlags.DEBITS | AccountFilterFlags.CREDITS)

        report = SettlementReport(
            merchant_id=merchant_id,
            day_start=day_start,
            currency=currency_record.code,
            opening_balance=self._posted_balance_at(account_id, day_start - 1),
            closing_balance=self._posted_balance_at(account_id, day_end),
        )
        cursor = day_start
        while True:
            page = self.ledger.get_account_transfers(
                AccountFilter(
                    account_id=account_id,
                    timestamp_min=cursor,
                    timestamp_max=day_end,
                    limit=QUERY_LIMIT_MAX,
                    flags=both_sides,
                )
            )
            for transfer in page:
                report.add(transfer, account_id, self._fee_of_sale)
            if len(page) < QUERY_LIMIT_MAX:
                return report
            cursor = page[-1].timestamp + 1

    def _fee_of_sale(self, sale: Transfer) -> int:
        """The fee transfer that went with a sale, found by its derived id."""
        order_id = sale.user_data_64
        fee_id = (
            flows.transfer_id(flows.TransferCode.FEE, order_id)
            if sale.code == flows.TransferCode.PAYMENT
            else flows.transfer_id(flows.TransferCode.ESCROW_RELEASE, order_id, 1)
        )
        found = self.ledger.lookup_transfers([fee_id])
        return found[0].amount if found else 0

    # ----------------------------------------------------------------------------- reads

    def get_order(self, order_id: int) -> Order | None:
        return self.store.order(order_id)

    def get_order_by_out_trade_no(self, merchant_id: int, out_trade_no: str) -> Order | None:
        return self.store.order_by_out_trade_no(merchant_id, out_trade_no)

    def list_orders(self, merchant_id: int, after_id: int = 0, limit: int = 100) -> list[Order]:
        return self.store.orders_of_merchant(merchant_id, after_id, min(limit, PAGE_LIMIT_MAX))

    def refunds_of_order(self, order_id: int) -> list[Refund]:
        return self.store.refunds_of_order(order_id)

    def get_channel_request(self, request_id: int) -> ChannelRequest | None:
        return self.store.channel_request(request_id)

    def list_channel_requests(
        self, party_kind: PartyKind, party_id: int, after_id: int = 0, limit: int = 100
    ) -> list[ChannelRequest]:
        return self.store.channel_requests_of_party(
            party_kind, party_id, after_id, min(limit, PAGE_LIMIT_MAX)
        )

    def get_user(self, user_id: int) -> User | None:
        return self.store.user(user_id)

    def get_merchant(self, merchant_id: int) -> Merchant | None:
        return self.store.merchant(merchant_id)

    def replay_webhook(self, merchant_id: int, event_id: int) -> WebhookDelivery:
        """Send one of the merchant's events again (raises WebhookEventNotFoundError)."""
        return self.webhooks.replay(merchant_id, event_id)

    def webhook_delivery(self, event_id: int) -> WebhookDelivery | None:
        return self.store.webhook_delivery(event_id)

    def webhook_events(
        self, merchant_id: int, after_id: int = 0, limit: int = 100
    ) -> list[WebhookEvent]:
        return self.store.webhook_events_of_merchant(
            merchant_id, after_id, min(limit, PAGE_LIMIT_MAX)
        )

    def balance(
        self, party_kind: PartyKind, party_id: int, currency: str = "CNY"
    ) -> Account | None:
        currency_record = self._currency(currency)
        if currency_record is None:
            return None
        account_id = (
            chart.user_wallet(party_id, currency_record.ledger)
            if party_kind is PartyKind.USER
            else chart.merchant_balance(party_id, currency_record.ledger)
        )
        found = self.ledger.lookup_accounts([account_id])
        return found[0] if found else None

    def _currency(self, code: str) -> Currency | None:
        if code.upper() not in self.config.currencies:
            return None
        return currency_for_code(code)


# The last day whose every nanosecond is a ledger timestamp: reports and settlements of a
# later day would ask the ledger for timestamps it cannot hold.
LAST_DAY_START: Final = (TIMESTAMP_MAX + 1) // NANOSECONDS_PER_DAY * NANOSECONDS_PER_DAY - (
    NANOSECONDS_PER_DAY
)


def _check_day_start(day_start: int) -> None:
    if (
        isinstance(day_start, bool)
        or not isinstance(day_start, int)
        or not 0 <= day_start <= LAST_DAY_START
        or day_start % NANOSECONDS_PER_DAY
    ):
        raise InvalidFieldError(
            f"must be a UTC midnight in nanoseconds since the epoch, at most {LAST_DAY_START}, "
            f"got {day_start!r}",
            field="day_start",
        )


def _gather(records: Decision, decision: Decision) -> None:
    """Add a decision's records to `records` (its transfers are the ledger's)."""
    records.users += decision.users
    records.merchants += decision.merchants
    records.orders += decision.orders
    records.refunds += decision.refunds
    records.channel_requests += decision.channel_requests
    records.events += decision.events


def _decide_payment(
    command: OrderCommand,
    orders: dict[int, Order],
    merchants: dict[int, Merchant],
    payers: dict[int, User],
    now: int,
) -> Decision:
    """A payment command's decision from prefetched records (what `pay_order` decides alone,
    its events aside: those are numbered once the ledger accepted the money)."""
    order = orders.get(command.order_id)
    if order is None:
        return rejected(PaymentError.ORDER_NOT_FOUND, f"no order {command.order_id}")
    merchant = merchants.get(order.merchant_id)
    assert merchant is not None, f"order {order.id} has no merchant {order.merchant_id}"
    return flows.pay_order(
        order=order, merchant=merchant, buyer=payers.get(command.party_id), now=now
    )


def _idempotency_key(record: IdempotencyRecord) -> IdempotencyKey:
    return (record.party_kind, record.party_id, record.key)


def _key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def _currency_code(ledger: int) -> str:
    return currency_for_ledger(ledger).code


def _event_type(before: Order, after: Order) -> str:
    if before.status != after.status:
        return {
            "TRADE_SUCCESS": "payment.succeeded",
            "TRADE_CLOSED": "order.closed",
            "TRADE_FINISHED": "trade.finished",
        }.get(after.status.value, "")
    if before.escrow_state != after.escrow_state and after.escrow_state.value == "released":
        return "escrow.released"
    return ""


def _order_body(order: Order) -> str:
    return json.dumps(
        {
            "order_id": order.id,
            "out_trade_no": order.out_trade_no,
            "status": order.status.value,
            "amount": order.amount,
            "currency": _currency_code(order.ledger),
            "fee": order.fee,
            "escrow_state": order.escrow_state.value,
            "refunded_amount": order.refunded_amount,
        },
        sort_keys=True,
    )


def _refund_body(refund: Refund) -> str:
    return json.dumps(dataclasses.asdict(refund), sort_keys=True)


def _channel_body(request: ChannelRequest) -> str:
    return json.dumps(
        {
            "request_id": request.id,
            "request_no": request.request_no,
            "kind": request.kind.value,
            "status": request.status.value,
            "amount": request.amount,
            "currency": _currency_code(request.ledger),
            "failure_reason": request.failure_reason,
        },
        sort_keys=True,
    )


__all__ = [
    "GROUP_PAYMENTS_MAX",
    "BankChannel",
    "CommandOutcome",
    "OrderAction",
    "OrderCommand",
    "OrderPayment",
    "PlatformConfig",
    "PlatformService",
    "SchedulerReport",
    "SettlementReport",
]
