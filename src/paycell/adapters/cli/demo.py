"""`paycell demo`: a ledger walkthrough of a small two-currency marketplace.

On the given database the demo opens a small marketplace in CNY and USD, with every movement
of money a transfer in the double-entry ledger:

- a bank channel account per currency (money outside the platform: it is debited when money
  comes in, so its net debit is what the platform holds on behalf of its customers);
- about a thousand buyer wallets that can never go below zero
  (`debits_must_not_exceed_credits`), about fifty merchant balances, and the platform's fee,
  escrow and FX accounts;
- top-ups from the channel, direct payments (a linked pair: buyer -> merchant, then the
  platform's fee merchant -> platform fee, in basis points rounded half-even), escrow payments
  (a pending transfer buyer -> escrow, later posted and released to the merchant when the buyer
  confirms receipt, or voided as a refund), FX exchanges (two linked transfers, one per
  currency, through the platform's FX accounts) and merchant payouts to the bank (a balancing
  transfer: "everything available").

Payments that a wallet cannot afford are declined by the ledger (`exceeds_credits`), as they
would be in production. The demo ends with a summary and runs `verify`; it fails (exit 1) if
the books do not balance or any event was rejected for a reason other than insufficient funds.

Every id carries the run number in its top bits, so the demo can run again on the same
database; each run reports on its own accounts, and `verify` covers the whole database.
"""

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import IO, Final

from paycell.adapters.cli.ledger_commands import split_batches
from paycell.adapters.cli.progress import Progress
from paycell.core.currency import Currency, currency_for_code, format_amount
from paycell.core.limits import AMOUNT_MAX, QUERY_LIMIT_MAX
from paycell.core.money import convert, fee_for
from paycell.core.results import CreateAccountResult, CreateTransferResult
from paycell.core.types import Account, AccountFlags, QueryFilter, Transfer, TransferFlags
from paycell.ledger import Ledger

CNY: Final = currency_for_code("CNY")
USD: Final = currency_for_code("USD")

FEE_BASIS_POINTS: Final = 60  # 0.60%, a typical merchant discount rate.
# USD per CNY as an exact fraction: 1 CNY = 0.1385 USD (both currencies have exponent 2).
FX_RATE_NUMERATOR: Final = 1_385
FX_RATE_DENOMINATOR: Final = 10_000
ESCROW_TIMEOUT_SECONDS: Final = 10 * 24 * 60 * 60  # auto-confirm after ten days
# Events per batch: large enough to be quick, small enough to show progress.
DEMO_BATCH_EVENTS: Final = 1_000


class Kind(IntEnum):
    """Account kinds; the account's `code` is the kind times 100."""

    CHANNEL = 1
    PLATFORM_FEE = 2
    ESCROW = 3
    FX = 4
    BUYER = 5
    MERCHANT = 6


class TransferCode(IntEnum):
    TOP_UP = 1
    PAYMENT = 2
    FEE = 3
    ESCROW_HOLD = 4
    ESCROW_RELEASE = 5
    FX = 6
    PAYOUT = 7


@dataclass(frozen=True, slots=True)
class Market:
    """One currency's side of the marketplace and how busy it is."""

    currency: Currency
    buyers: int
    merchants: int
    top_up_range: tuple[int, int]
    payments: int
    payment_range: tuple[int, int]
    escrow_payments: int
    liquidity: int


MARKETS: Final = (
    Market(CNY, 1_000, 50, (500_00, 5_000_00), 3_000, (1_00, 600_00), 800, 500_000_00),
    Market(USD, 200, 10, (50_00, 800_00), 600, (1_00, 150_00), 150, 100_000_00),
)
FX_EXCHANGES: Final = 300

_ALLOWED_DECLINES: Final = frozenset(
    {CreateTransferResult.EXCEEDS_CREDITS, CreateTransferResult.LINKED_EVENT_FAILED}
)


class DemoError(RuntimeError):
    """The ledger rejected something the demo expected to succeed: a bug, not a decline."""


@dataclass(slots=True)
class Figures:
    """What happened in one currency, for the summary."""

    top_ups: int = 0
    top_up_volume: int = 0
    payments: int = 0
    payments_declined: int = 0
    payment_volume: int = 0
    fees: int = 0
    escrow_holds: int = 0
    escrow_declined: int = 0
    escrow_confirmed: int = 0
    escrow_confirmed_volume: int = 0
    escrow_refunded: int = 0
    escrow_refunded_volume: int = 0
    fx_exchanges: int = 0
    fx_sold: int = 0
    fx_bought: int = 0
    payouts: int = 0
    payout_volume: int = 0


def account_id(run: int, ledger: int, kind: Kind, number: int = 0) -> int:
    return (run << 64) | (ledger << 40) | (int(kind) << 32) | number


def with_separators(amount: int, currency: Currency) -> str:
    text = format_amount(amount, currency)
    whole, dot, fraction = text.partition(".")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}{int(whole.lstrip('-')):,}{dot}{fraction} {currency.code}"


@dataclass
class Demo:
    ledger: Ledger
    run: int
    random: random.Random
    progress: Progress
    figures: dict[int, Figures] = field(default_factory=dict)
    next_id: int = 1
    declines: Counter[str] = field(default_factory=Counter)

    def transfer_id(self) -> int:
        transfer_id = (self.run << 64) | self.next_id
        self.next_id += 1
        return transfer_id

    def id(self, market: Market, kind: Kind, number: int = 0) -> int:
        return account_id(self.run, market.currency.ledger, kind, number)

    # Writing ----------------------------------------------------------------------------------

    def create_accounts(self, accounts: Sequence[Account]) -> None:
        for batch in split_batches(accounts, int(AccountFlags.LINKED), DEMO_BATCH_EVENTS):
            results = self.ledger.create_accounts(batch)
            bad = [r.value for r in results if r is not CreateAccountResult.OK]
            if bad:
                raise DemoError(f"creating accounts was rejected: {bad[0]}")

    def submit(self, step: str, transfers: Sequence[Transfer]) -> list[CreateTransferResult]:
        """Apply transfers in batches; declines are allowed, any other rejection is a bug."""
        results: list[CreateTransferResult] = []
        for batch in split_batches(transfers, int(TransferFlags.LINKED), DEMO_BATCH_EVENTS):
            batch_results = self.ledger.create_transfers(batch)
            for transfer, result in zip(batch, batch_results, strict=True):
                if result is CreateTransferResult.OK:
                    continue
                if result not in _ALLOWED_DECLINES:
                    raise DemoError(f"{step}: transfer {transfer.id} rejected: {result.value}")
                self.declines[result.value] += 1
            results.extend(batch_results)
            self.progress.update(step, len(results), len(transfers))
        self.progress.finish()
        return results

    # The walkthrough --------------------------------------------------------------------------

    def open_accounts(self) -> None:
        accounts = []
        guarded = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
        for market in MARKETS:
            ledger = market.currency.ledger
            self.figures[ledger] = Figures()

            def account(kind: Kind, number: int = 0, flags: int = guarded) -> Account:
                return Account(
                    id=self.id(market, kind, number),  # noqa: B023 - used at once
                    ledger=ledger,  # noqa: B023
                    code=int(kind) * 100,
                    flags=flags,
                    user_data_64=self.run,
                    user_data_32=number,
                )

            # The channel stands for the bank: money outside the platform, so it has no guard.
            accounts.append(account(Kind.CHANNEL, flags=0))
            accounts += [account(Kind.PLATFORM_FEE), account(Kind.ESCROW), account(Kind.FX)]
            accounts += [account(Kind.BUYER, n) for n in range(1, market.buyers + 1)]
            accounts += [account(Kind.MERCHANT, n) for n in range(1, market.merchants + 1)]
        self.progress.say(
            f"opening {len(accounts)} accounts: per currency a bank channel, buyer wallets, "
            "merchants, platform fee, escrow and FX accounts"
        )
        self.create_accounts(accounts)

    def top_up(self) -> None:
        transfers = []
        for market in MARKETS:
            figures = self.figures[market.currency.ledger]
            channel = self.id(market, Kind.CHANNEL)
            low, high = market.top_up_range
            # The platform's own FX float comes in from the bank like any other money.
            transfers.append(
                self.transfer(market, channel, self.id(market, Kind.FX), market.liquidity)
            )
            for buyer in range(1, market.buyers + 1):
                amount = self.random.randint(low, high)
                transfers.append(
                    self.transfer(market, channel, self.id(market, Kind.BUYER, buyer), amount)
                )
                figures.top_ups += 1
                figures.top_up_volume += amount
        self.progress.say(f"topping up {len(transfers) - len(MARKETS)} wallets from the bank")
        self.submit("top-ups", [t._replace(code=TransferCode.TOP_UP) for t in transfers])

    def transfer(
        self,
        market: Market,
        debit: int,
        credit: int,
        amount: int,
        code: TransferCode = TransferCode.TOP_UP,
        flags: int = 0,
        **fields: int,
    ) -> Transfer:
        return Transfer(
            id=self.transfer_id(),
            debit_account_id=debit,
            credit_account_id=credit,
            amount=amount,
            ledger=market.currency.ledger,
            code=int(code),
            flags=flags,
            **fields,
        )

    def _payment_pair(
        self, market: Market, buyer: int, merchant: int, amount: int
    ) -> list[Transfer]:
        """buyer -> merchant, then the merchant's fee to the platform, as one linked chain."""
        fee = fee_for(amount, FEE_BASIS_POINTS)
        linked = int(TransferFlags.LINKED) if fee else 0
        chain = [self.transfer(market, buyer, merchant, amount, TransferCode.PAYMENT, linked)]
        if fee:
            fee_account = self.id(market, Kind.PLATFORM_FEE)
            chain.append(self.transfer(market, merchant, fee_account, fee, TransferCode.FEE))
        return chain

    def direct_payments(self) -> None:
        chains: list[tuple[Market, int, list[Transfer]]] = []
        for market in MARKETS:
            low, high = market.payment_range
            for _ in range(market.payments):
                buyer = self.id(market, Kind.BUYER, self.random.randint(1, market.buyers))
                merchant = self.id(market, Kind.MERCHANT, self.random.randint(1, market.merchants))
                amount = self.random.randint(low, high)
                chains.append((market, amount, self._payment_pair(market, buyer, merchant, amount)))
        self.progress.say(
            f"{len(chains)} direct payments, each buyer -> merchant linked with a "
            f"{FEE_BASIS_POINTS / 100:.2f}% fee merchant -> platform"
        )
        results = iter(self.submit("payments", [t for _, _, chain in chains for t in chain]))
        for market, amount, chain in chains:
            figures = self.figures[market.currency.ledger]
            outcome = [next(results) for _ in chain]
            if outcome[0] is CreateTransferResult.OK:
                figures.payments += 1
                figures.payment_volume += amount
                figures.fees += sum(t.amount for t in chain[1:])
            else:
                figures.payments_declined += 1

    def escrow_payments(self) -> None:
        holds: list[tuple[Market, int, Transfer]] = []
        for market in MARKETS:
            low, high = market.payment_range
            escrow = self.id(market, Kind.ESCROW)
            for _ in range(market.escrow_payments):
                buyer = self.id(market, Kind.BUYER, self.random.randint(1, market.buyers))
                merchant = self.id(market, Kind.MERCHANT, self.random.randint(1, market.merchants))
                hold = self.transfer(
                    market,
                    buyer,
                    escrow,
                    self.random.randint(low, high),
                    TransferCode.ESCROW_HOLD,
                    int(TransferFlags.PENDING),
                    timeout=ESCROW_TIMEOUT_SECONDS,
                )
                holds.append((market, merchant, hold))
        self.progress.say(
            f"{len(holds)} escrow payments: the buyer's money is reserved (pending) in escrow"
        )
        results = self.submit("escrow holds", [hold for _, _, hold in holds])
        resolutions: list[Transfer] = []
        confirmed: list[tuple[Market, Transfer, int]] = []
        refunded: list[tuple[Market, Transfer, int]] = []
        for (market, merchant, hold), result in zip(holds, results, strict=True):
            figures = self.figures[market.currency.ledger]
            if result is not CreateTransferResult.OK:
                figures.escrow_declined += 1
                continue
            figures.escrow_holds += 1
            choice = self.random.random()
            if choice < 0.70:
                # The buyer confirms receipt: post the hold into escrow, release it to the
                # merchant, charge the fee; all or nothing.
                post = self.transfer(
                    market,
                    hold.debit_account_id,
                    hold.credit_account_id,
                    hold.amount,
                    TransferCode.ESCROW_HOLD,
                    int(TransferFlags.POST_PENDING_TRANSFER | TransferFlags.LINKED),
                    pending_id=hold.id,
                )
                release = self._payment_pair(market, hold.credit_account_id, merchant, hold.amount)
                release[0] = release[0]._replace(
                    code=int(TransferCode.ESCROW_RELEASE),
                    flags=release[0].flags | TransferFlags.LINKED if len(release) > 1 else 0,
                )
                chain = [post, *release]
                resolutions += chain
                confirmed.append((market, hold, len(chain)))
            elif choice < 0.85:
                # A refund before release: voiding the hold gives the buyer the money back.
                void = self.transfer(
                    market,
                    hold.debit_account_id,
                    hold.credit_account_id,
                    hold.amount,
                    TransferCode.ESCROW_HOLD,
                    int(TransferFlags.VOID_PENDING_TRANSFER),
                    pending_id=hold.id,
                )
                resolutions.append(void)
                refunded.append((market, hold, 1))
        self.progress.say(
            f"resolving escrow: {len(confirmed)} confirmed and released to merchants, "
            f"{len(refunded)} refunded, the rest still held"
        )
        outcome = iter(self.submit("escrow resolutions", resolutions))
        for market, hold, size in confirmed:
            figures = self.figures[market.currency.ledger]
            chain_results = [next(outcome) for _ in range(size)]
            if any(r is not CreateTransferResult.OK for r in chain_results):
                raise DemoError(f"escrow release of {hold.id} failed: {chain_results}")
            figures.escrow_confirmed += 1
            figures.escrow_confirmed_volume += hold.amount
            figures.fees += fee_for(hold.amount, FEE_BASIS_POINTS)
        for market, hold, _ in refunded:
            figures = self.figures[market.currency.ledger]
            if next(outcome) is not CreateTransferResult.OK:
                raise DemoError(f"escrow refund of {hold.id} failed")
            figures.escrow_refunded += 1
            figures.escrow_refunded_volume += hold.amount

    def fx_exchanges(self) -> None:
        cny, usd = MARKETS
        chains: list[tuple[int, int]] = []
        transfers: list[Transfer] = []
        for _ in range(FX_EXCHANGES):
            # Buyers 1..200 hold a wallet in both currencies.
            buyer = self.random.randint(1, usd.buyers)
            sold = self.random.randint(10_00, 500_00)
            bought = convert(sold, FX_RATE_NUMERATOR, FX_RATE_DENOMINATOR)
            transfers += [
                self.transfer(
                    cny,
                    self.id(cny, Kind.BUYER, buyer),
                    self.id(cny, Kind.FX),
                    sold,
                    TransferCode.FX,
                    int(TransferFlags.LINKED),
                ),
                self.transfer(
                    usd,
                    self.id(usd, Kind.FX),
                    self.id(usd, Kind.BUYER, buyer),
                    bought,
                    TransferCode.FX,
                ),
            ]
            chains.append((sold, bought))
        self.progress.say(
            f"{len(chains)} FX exchanges CNY -> USD at {FX_RATE_NUMERATOR}/"
            f"{FX_RATE_DENOMINATOR}: two linked transfers, one in each ledger"
        )
        results = self.submit("fx", transfers)
        for index, (sold, bought) in enumerate(chains):
            if results[2 * index] is CreateTransferResult.OK:
                self.figures[cny.currency.ledger].fx_exchanges += 1
                self.figures[cny.currency.ledger].fx_sold += sold
                self.figures[usd.currency.ledger].fx_bought += bought

    def payouts(self) -> None:
        transfers: list[tuple[Market, Transfer]] = []
        for market in MARKETS:
            channel = self.id(market, Kind.CHANNEL)
            # Odd-numbered merchants are paid out everything available: a balancing debit
            # clamps AMOUNT_MAX to what the merchant's balance allows.
            for merchant in range(1, market.merchants + 1, 2):
                transfers.append(
                    (
                        market,
                        self.transfer(
                            market,
                            self.id(market, Kind.MERCHANT, merchant),
                            channel,
                            AMOUNT_MAX,
                            TransferCode.PAYOUT,
                            int(TransferFlags.BALANCING_DEBIT),
                        ),
                    )
                )
        self.progress.say(f"paying out {len(transfers)} merchants' balances to their banks")
        results = self.submit("payouts", [t for _, t in transfers])
        paid = self.ledger.lookup_transfers(
            [t.id for (_, t), r in zip(transfers, results, strict=True) if r.value == "ok"]
        )
        by_id = {t.id: t for t in paid}
        for market, transfer in transfers:
            if transfer.id in by_id:
                figures = self.figures[market.currency.ledger]
                figures.payouts += 1
                figures.payout_volume += by_id[transfer.id].amount

    # The summary ------------------------------------------------------------------------------

    def summary(self) -> list[str]:
        lines = [f"paycell demo, run {self.run}: a marketplace on {self.ledger.url}"]
        for market in MARKETS:
            lines += ["", *self._market_summary(market)]
        if self.declines:
            declined = ", ".join(f"{n} {name}" for name, n in sorted(self.declines.items()))
            lines += ["", f"declined by the ledger: {declined}"]
        return lines

    def _market_summary(self, market: Market) -> list[str]:
        currency = market.currency
        figures = self.figures[currency.ledger]
        platform = {kind: self.id(market, kind) for kind in Kind if kind < Kind.BUYER}
        buyers = [self.id(market, Kind.BUYER, n) for n in range(1, market.buyers + 1)]
        merchants = [self.id(market, Kind.MERCHANT, n) for n in range(1, market.merchants + 1)]
        accounts = {
            a.id: a for a in self.ledger.lookup_accounts([*platform.values(), *buyers, *merchants])
        }

        def net_credit(*account_ids: int) -> int:
            return sum(accounts[i].credits_posted - accounts[i].debits_posted for i in account_ids)

        def show(amount: int) -> str:
            return with_separators(amount, currency)

        channel = accounts[platform[Kind.CHANNEL]]
        escrow_held = accounts[platform[Kind.ESCROW]].credits_pending
        reserved = sum(accounts[i].debits_pending for i in buyers)
        still_held = figures.escrow_holds - figures.escrow_confirmed - figures.escrow_refunded
        lines = [
            f"{currency.code} (ledger {currency.ledger})",
            f"  top-ups         {figures.top_ups:>5}  {show(figures.top_up_volume)}",
            f"  payments        {figures.payments:>5}  {show(figures.payment_volume)}"
            f"  ({figures.payments_declined} declined: insufficient funds)",
            f"  escrow payments {figures.escrow_holds:>5}  "
            f"{figures.escrow_confirmed} confirmed {show(figures.escrow_confirmed_volume)}, "
            f"{figures.escrow_refunded} refunded {show(figures.escrow_refunded_volume)}, "
            f"{still_held} still held, {figures.escrow_declined} declined",
        ]
        if figures.fx_exchanges:
            bought = with_separators(self.figures[USD.ledger].fx_bought, USD)
            lines.append(
                f"  fx exchanges    {figures.fx_exchanges:>5}  sold {show(figures.fx_sold)} "
                f"for {bought}"
            )
        fees = net_credit(platform[Kind.PLATFORM_FEE])
        lines += [
            f"  payouts         {figures.payouts:>5}  {show(figures.payout_volume)}",
            f"  fees earned            {show(fees)} (expected {show(figures.fees)})",
            f"  escrow held            {show(escrow_held)}",
            "  balances",
            f"    buyer wallets        {show(net_credit(*buyers))} (+ {show(reserved)} reserved)",
            f"    merchants            {show(net_credit(*merchants))}",
            f"    platform fees        {show(fees)}",
            f"    platform fx          {show(net_credit(platform[Kind.FX]))}",
            f"    escrow               {show(net_credit(platform[Kind.ESCROW]))}",
            f"    held for customers   {show(channel.debits_posted - channel.credits_posted)}"
            " (the bank channel's net debit)",
        ]
        if fees != figures.fees:
            raise DemoError(f"{currency.code} fees {fees} differ from the expected {figures.fees}")
        return lines


def _next_run(ledger: Ledger) -> int:
    """1 on a fresh database; one more than the runs before on a database the demo used."""
    channels = ledger.query_accounts(
        QueryFilter(ledger=CNY.ledger, code=int(Kind.CHANNEL) * 100, limit=QUERY_LIMIT_MAX)
    )
    runs = [
        a.user_data_64
        for a in channels
        if a.id == account_id(a.user_data_64, CNY.ledger, Kind.CHANNEL)
    ]
    return max(runs, default=0) + 1


def run_demo(database: str, seed: int, out: IO[str], progress: Progress) -> int:
    with Ledger(database) as ledger:
        run = _next_run(ledger)
        progress.say(f"paycell demo: run {run} on {ledger.url} (seed {seed})")
        demo = Demo(ledger, run, random.Random(seed), progress)
        try:
            demo.open_accounts()
            demo.top_up()
            demo.direct_payments()
            demo.escrow_payments()
            demo.fx_exchanges()
            demo.payouts()
            summary = demo.summary()
        except DemoError as error:
            progress.say(f"demo failed: {error}")
            return 1
        for line in summary:
            out.write(line + "\n")
        progress.say("verifying the books")
        report = ledger.verify(progress.say)
    out.write("\nverify\n" + report.render() + "\n")
    return 0 if report.ok else 1
