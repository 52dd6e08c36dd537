"""The platform's storage port: the ledger's unit of work plus the platform's records.

Platform records live in the same database as the ledger, and a platform command writes both
in one transaction under the ledger's writer lock: an order is marked paid in the same commit
that moves the money, or neither happens. `PlatformStore.write()` yields a unit that is a
ledger `WriteUnit` (same connection, same transaction) with the platform's tables added.

Every method that returns several rows takes a `limit`: nothing reads without bound.
"""

from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import NamedTuple, Protocol

from paycell.core.payments.outcomes import Decision
from paycell.core.payments.records import (
    ChannelRequest,
    ChannelRequestKind,
    Merchant,
    Order,
    PartyKind,
    Refund,
    User,
    WebhookEvent,
)
from paycell.service.ports import LedgerStore, WriteUnit


class ApiKey(NamedTuple):
    party_kind: PartyKind
    party_id: int
    # SHA-256 of the secret key, hex; the key itself is never stored.
    key_hash: str
    created_at: int


class IdempotencyRecord(NamedTuple):
    """A POST's first response, replayed for a retry with the same Idempotency-Key."""

    party_kind: PartyKind
    party_id: int
    key: str
    # SHA-256 of method, path and body: the same key with another request is rejected.
    request_hash: str
    status: int
    body: str
    created_at: int


# An idempotency record's key: the party's kind and id, and the Idempotency-Key it sent.
IdempotencyKey = tuple[PartyKind, int, str]


class WebhookDelivery(NamedTuple):
    event_id: int
    merchant_id: int
    # Attempts made so far; the next is number attempts + 1.
    attempts: int
    # When the next attempt is due (0: delivered or given up).
    next_attempt_at: int
    # "pending", "delivered" or "failed" (every attempt used).
    status: str
    last_error: str
    delivered_at: int


class PlatformWriteUnit(WriteUnit, Protocol):
    def next_id(self, sequence: str) -> int:
        """The next number of a named sequence ("user", "merchant", "order", "refund",
        "channel_request", "event"): 1, 2, 3... per database, never reused."""
        ...

    def next_ids(self, sequence: str, count: int) -> range:
        """The next `count` numbers of a sequence, reserved at once (`next_id` `count` times
        over, in one statement); empty for 0."""
        ...

    def user(self, user_id: int) -> User | None: ...

    def merchant(self, merchant_id: int) -> Merchant | None: ...

    def order(self, order_id: int) -> Order | None: ...

    def order_by_out_trade_no(self, merchant_id: int, out_trade_no: str) -> Order | None: ...

    # Batched reads for group commit: a few queries for a whole group rather than one per
    # record. Each answers by key, and leaves out the keys it finds no record for.
    def users_by_id(self, ids: Collection[int]) -> dict[int, User]: ...

    def merchants_by_id(self, ids: Collection[int]) -> dict[int, Merchant]: ...

    def orders_by_id(self, ids: Collection[int]) -> dict[int, Order]: ...

    def orders_by_out_trade_no(
        self, merchant_id: int, out_trade_nos: Collection[str]
    ) -> dict[str, Order]: ...

    def idempotency_records(
        self, keys: Collection[IdempotencyKey]
    ) -> dict[IdempotencyKey, IdempotencyRecord]: ...

    def refunds_of_order(self, order_id: int) -> list[Refund]: ...

    def channel_request(self, request_id: int) -> ChannelRequest | None: ...

    def channel_request_by_request_no(
        self, party_kind: PartyKind, party_id: int, kind: ChannelRequestKind, request_no: str
    ) -> ChannelRequest | None: ...

    def channel_request_by_reference(self, channel_reference: str) -> ChannelRequest | None: ...

    def unpaid_orders_due(self, now: int, limit: int) -> list[Order]:
        """WAIT_BUYER_PAY orders with expires_at <= now, oldest first."""
        ...

    def escrow_releases_due(self, now: int, limit: int) -> list[Order]:
        """Orders with escrow HELD and 0 < auto_confirm_at <= now, oldest first."""
        ...

    def trades_to_finish(self, now: int, limit: int) -> list[Order]:
        """TRADE_SUCCESS orders with escrow not HELD and 0 < refundable_until <= now."""
        ...

    def merchants_page(self, after_id: int, limit: int) -> list[Merchant]: ...

    def save_records(self, decision: Decision) -> None:
        """Insert or replace the decision's users, merchants, orders and channel requests
        (by id), insert its refunds, and insert its events with a pending delivery each."""
        ...

    def save_api_key(self, api_key: ApiKey) -> None: ...

    def idempotency_record(
        self, party_kind: PartyKind, party_id: int, key: str
    ) -> IdempotencyRecord | None: ...

    def save_idempotency_record(self, record: IdempotencyRecord) -> None: ...

    def save_idempotency_records(self, records: Sequence[IdempotencyRecord]) -> None:
        """Insert records whose keys have none yet (one statement for the lot)."""
        ...

    def webhook_deliveries_due(self, now: int, limit: int) -> list[WebhookDelivery]: ...

    def webhook_event(self, event_id: int) -> WebhookEvent | None: ...

    def webhook_events_by_id(self, ids: Collection[int]) -> dict[int, WebhookEvent]: ...

    def webhook_delivery(self, event_id: int) -> WebhookDelivery | None: ...

    def save_webhook_delivery(self, delivery: WebhookDelivery) -> None: ...

    def save_webhook_deliveries(self, deliveries: Sequence[WebhookDelivery]) -> None:
        """Insert or replace many deliveries (one statement for the lot)."""
        ...


class PlatformStore(LedgerStore, Protocol):
    def write(self) -> AbstractContextManager[PlatformWriteUnit]: ...

    # Reads outside the writer lock: a consistent snapshot per call.
    def user(self, user_id: int) -> User | None: ...

    def merchant(self, merchant_id: int) -> Merchant | None: ...

    def order(self, order_id: int) -> Order | None: ...

    def order_by_out_trade_no(self, merchant_id: int, out_trade_no: str) -> Order | None: ...

    def orders_of_merchant(self, merchant_id: int, after_id: int, limit: int) -> list[Order]:
        """A page of a merchant's orders by id ascending, after `after_id` (a cursor)."""
        ...

    def refunds_of_order(self, order_id: int) -> list[Refund]: ...

    def channel_request(self, request_id: int) -> ChannelRequest | None: ...

    def channel_requests_of_party(
        self, party_kind: PartyKind, party_id: int, after_id: int, limit: int
    ) -> list[ChannelRequest]: ...

    def party_for_api_key(self, key_hash: str) -> tuple[PartyKind, int] | None: ...

    def idempotency_record(
        self, party_kind: PartyKind, party_id: int, key: str
    ) -> IdempotencyRecord | None: ...

    def webhook_events_of_merchant(
        self, merchant_id: int, after_id: int, limit: int
    ) -> list[WebhookEvent]: ...

    def webhook_delivery(self, event_id: int) -> WebhookDelivery | None: ...

    def all_orders(self) -> Iterator[Order]: ...
