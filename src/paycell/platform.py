"""`paycell.Platform`: the payment platform as a library, on SQLite or PostgreSQL.

    >>> from paycell import Platform
    >>> with Platform(":memory:") as platform:
    ...     buyer = platform.create_user("Li Lei")
    ...     shop = platform.create_merchant("Tea House", fee_rate_basis_points=60,
    ...                                     settlement_bank_account="6222 0000 0001")
    ...     _ = platform.request_top_up(buyer.id, "first top-up", 100_00)
    ...     _ = platform.deliver_bank_callbacks()
    ...     order = platform.create_order(shop.id, "T-1", 25_00, subject="Oolong").orders[0]
    ...     platform.pay_order(order.id, buyer.id).orders[0].status.value
    ...     platform.balance_of_merchant(shop.id).credits_posted
    'TRADE_SUCCESS'
    2485

Commands return a `Decision`: `ok` (or an `error` with a stable code and a message), the
records it wrote, and `replayed` when it was a retry of something already done.
"""

import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from paycell.adapters.channels.simulated_bank import Callback, SimulatedBank, parse_callback
from paycell.adapters.storage.platform_factory import open_platform_store
from paycell.core.payments.outcomes import Decision, PaymentError, rejected
from paycell.core.payments.records import PartyKind
from paycell.core.types import Account
from paycell.service.platform import PlatformConfig, PlatformService
from paycell.service.verify import CounterCallback, ProgressCallback, VerifyReport, verify


class Platform(PlatformService):
    """The payment platform on one database, with the simulated bank as its channel."""

    def __init__(
        self,
        database: str | Path = "paycell.db",
        *,
        clock: Callable[[], int] = time.time_ns,
        bank: SimulatedBank | None = None,
        config: PlatformConfig | None = None,
    ) -> None:
        self.bank = bank or SimulatedBank()
        super().__init__(open_platform_store(str(database)), clock, self.bank, config)

    def channel_callback_message(self, body: str, signature: str) -> Decision:
        """A callback as it arrives from the bank: verified, parsed, then applied."""
        if not self.bank.verify(Callback(body, signature)):
            return rejected(
                PaymentError.INVALID_CHANNEL_SIGNATURE, "the callback's signature does not verify"
            )
        try:
            reference, succeeded, amount, reason = parse_callback(body)
        except ValueError as problem:
            return rejected(PaymentError.CHANNEL_CALLBACK_CONFLICT, str(problem))
        return self.channel_callback(reference, succeeded, amount, reason)

    def deliver_bank_callbacks(self) -> list[Decision]:
        """Let the simulated bank answer every instruction it holds."""
        return [
            self.channel_callback_message(callback.body, callback.signature)
            for callback in self.bank.callbacks(self.clock())
        ]

    def balance_of_user(self, user_id: int, currency: str = "CNY") -> Account | None:
        return self.balance(PartyKind.USER, user_id, currency)

    def balance_of_merchant(self, merchant_id: int, currency: str = "CNY") -> Account | None:
        return self.balance(PartyKind.MERCHANT, merchant_id, currency)

    def verify(
        self, progress: ProgressCallback | None = None, counter: CounterCallback | None = None
    ) -> VerifyReport:
        return verify(self.store, progress, counter)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Platform":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
