"""A group commit answers and writes what the same commands one after the other would.

The same world is built on two databases; one runs a group (`create_and_pay_orders`,
`run_order_commands`), the other the same payments one by one through the single commands.
Ids and timestamps may differ; decisions, orders, balances and webhook events may not.
"""

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from paycell.core.payments import flows
from paycell.core.payments.outcomes import Decision, PaymentError
from paycell.core.payments.records import (
    Order,
    OrderStatus,
    PartyKind,
    PaymentMode,
    WebhookEvent,
)
from paycell.platform import Platform
from paycell.service.platform import OrderAction, OrderCommand, OrderPayment
from paycell.service.platform_ports import IdempotencyRecord

_reference_numbers = itertools.count(1)


@pytest.fixture
def reference_url(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A second fresh database on the same backend as `database_url`."""
    if "://" not in database_url:
        return str(tmp_path / "one-by-one.db")
    server = request.getfixturevalue("postgres_server")
    return str(server.create_database(f"one_by_one_{id(request)}_{next(_reference_numbers)}"))


@pytest.fixture
def platforms(database_url: str, reference_url: str) -> Iterator[tuple[Platform, Platform]]:
    with Platform(database_url) as grouped, Platform(reference_url) as alone:
        yield grouped, alone
        assert grouped.verify().ok
        assert alone.verify().ok


class World:
    """Two funded buyers, a merchant with a 1% fee, and a few orders made before the group."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.rich = platform.create_user("rich").id
        self.poor = platform.create_user("poor").id
        self.shop = platform.create_merchant(
            "shop",
            fee_rate_basis_points=100,
            settlement_bank_account="x",
            webhook_url="https://shop.example/notify",  # So deliveries are due, not skipped.
        ).id
        assert platform.request_top_up(self.rich, "t", 100_00).ok
        assert platform.request_top_up(self.poor, "t", 3_00).ok
        platform.deliver_bank_callbacks()
        # Made before the group: one unpaid, one already paid by the poor buyer.
        self.unpaid = platform.create_order(self.shop, "OLD-unpaid", 3_00).orders[0].id
        self.paid = platform.create_order(self.shop, "OLD-paid", 1_00).orders[0].id
        assert platform.pay_order(self.paid, self.poor).ok
        self.escrow = (
            platform.create_order(self.shop, "OLD-escrow", 4_00, mode=PaymentMode.ESCROW)
            .orders[0]
            .id
        )

    def snapshot(self) -> dict[str, Any]:
        """Everything the group must agree on, without ids and timestamps."""
        platform = self.platform
        balances = {}
        for name, account in (
            ("rich", platform.balance_of_user(self.rich)),
            ("poor", platform.balance_of_user(self.poor)),
            ("shop", platform.balance_of_merchant(self.shop)),
        ):
            assert account is not None
            balances[name] = (account.debits_posted, account.credits_posted)
        events = platform.webhook_events(self.shop, limit=500)
        for event in events:
            delivery = platform.webhook_delivery(event.id)
            assert delivery is not None
            assert (delivery.merchant_id, delivery.status) == (self.shop, "pending")
        return {
            "orders": [_order(o) for o in platform.list_orders(self.shop, limit=500)],
            "balances": balances,
            "events": [_event(event) for event in events],
        }


def _order(order: Order) -> tuple[object, ...]:
    # A payment the ledger refused closes its new order "payment_failed" in a group; alone,
    # the test cancels it (the same change and event, another reason).
    reason = "payment_failed" if order.close_reason == "cancelled" else order.close_reason
    return (
        order.out_trade_no,
        order.status,
        order.amount,
        order.fee,
        order.buyer_id,
        order.mode,
        order.escrow_state,
        reason,
    )


def _event(event: WebhookEvent) -> tuple[str, dict[str, object]]:
    body = json.loads(event.body)
    del body["order_id"]
    return event.type, body


def _decision(decision: Decision) -> tuple[object, ...]:
    return (
        decision.error,
        decision.replayed,
        [_order(o) for o in decision.orders],
        [_event(e) for e in decision.events],
    )


def test_a_bulk_group_decides_and_writes_what_one_by_one_would(
    platforms: tuple[Platform, Platform],
) -> None:
    grouped, alone = (World(platform) for platform in platforms)
    unknown_buyer = 999_999

    def payments(world: World) -> list[OrderPayment]:
        return [
            OrderPayment("N-1", 10_00, world.rich),
            OrderPayment("N-2", 1_00, world.poor),
            OrderPayment("N-3", 2_00, world.poor),  # 1.00 left: refused, order closed
            OrderPayment("N-4", 5_00, world.rich, currency="USD"),  # not enabled
            OrderPayment("N-5", 20_00, world.rich),  # the same buyer again
            OrderPayment("N-1", 10_00, world.rich),  # repeated in the group: a replay
            OrderPayment("N-1", 11_00, world.rich),  # repeated, other amount: rejected
            OrderPayment("N-6", 0, world.rich),  # invalid amount
            OrderPayment("N-7", 1_00, unknown_buyer),  # no such buyer: order closed
            OrderPayment("OLD-unpaid", 3_00, world.rich),  # an order made before: paid now
            OrderPayment("OLD-paid", 1_00, world.poor),  # paid before by the same: replay
            OrderPayment("OLD-paid", 1_00, world.rich),  # paid by someone else
            OrderPayment("N-3", 2_00, world.rich),  # the closed order again
            OrderPayment("N-8", 70_00, world.rich, subject="too much"),  # refused
            OrderPayment("N-9", 3_00, world.rich, subject="s"),
        ]

    decisions = grouped.platform.create_and_pay_orders(grouped.shop, payments(grouped))

    one_by_one = []
    for payment in payments(alone):
        created = alone.platform.create_order(
            alone.shop,
            payment.out_trade_no,
            payment.amount,
            currency=payment.currency,
            subject=payment.subject,
        )
        if not created.ok:
            one_by_one.append(created)
            continue
        order = created.orders[0]
        paid = alone.platform.pay_order(order.id, payment.buyer_id)
        if not paid.ok and not created.replayed:
            assert alone.platform.cancel_order(order.id, alone.shop).ok
        one_by_one.append(paid)

    assert [_decision(d) for d in decisions] == [_decision(d) for d in one_by_one]
    assert [d.error for d in decisions] == [
        None,
        None,
        PaymentError.INSUFFICIENT_FUNDS,
        PaymentError.UNSUPPORTED_CURRENCY,
        None,
        None,
        PaymentError.ORDER_EXISTS_WITH_DIFFERENT_CONTENT,
        PaymentError.INVALID_AMOUNT,
        PaymentError.USER_NOT_FOUND,
        None,
        None,
        PaymentError.ORDER_ALREADY_PAID,
        PaymentError.ORDER_ALREADY_CLOSED,
        PaymentError.INSUFFICIENT_FUNDS,
        None,
    ]
    assert [d.replayed for d in decisions].count(True) == 2
    assert grouped.snapshot() == alone.snapshot()
    # A refused payment leaves no trace in the ledger; its new order is closed for it.
    refused = grouped.platform.get_order_by_out_trade_no(grouped.shop, "N-3")
    assert refused is not None
    assert (refused.status, refused.close_reason) == (OrderStatus.TRADE_CLOSED, "payment_failed")
    assert not grouped.platform.ledger.lookup_transfers(
        [flows.transfer_id(flows.TransferCode.PAYMENT, refused.id)]
    )
    # Ids stay unique and replays still replay.
    orders = grouped.platform.list_orders(grouped.shop, limit=500)
    assert len({o.id for o in orders}) == len(orders)
    events = grouped.platform.webhook_events(grouped.shop, limit=500)
    assert len({e.id for e in events}) == len(events)
    again = grouped.platform.create_and_pay_orders(grouped.shop, payments(grouped))
    assert [(d.error, d.replayed) for d in again][:2] == [(None, True), (None, True)]
    assert grouped.platform.webhook_events(grouped.shop, limit=500) == events


def test_a_group_of_order_commands_decides_and_writes_what_one_by_one_would(
    platforms: tuple[Platform, Platform],
) -> None:
    grouped, alone = (World(platform) for platform in platforms)

    def commands(world: World) -> list[tuple[int, int]]:
        fresh = [
            world.platform.create_order(world.shop, f"C-{n}", amount).orders[0].id
            for n, amount in enumerate([10_00, 2_00, 5_00, 1_00])
        ]
        return [
            (fresh[0], world.rich),
            (fresh[1], world.poor),  # 2.00 of the poor buyer's 2.00 left
            (fresh[2], world.poor),  # nothing left: refused
            (fresh[3], world.rich),  # the same buyer again
            (fresh[0], world.rich),  # the same order again: a replay (next round)
            (fresh[2], world.rich),  # the refused order, by another buyer: paid
            (world.paid, world.rich),  # paid before by someone else
            (world.unpaid, 999_999),  # no such buyer
            (world.escrow, world.rich),  # into escrow
            (999_999, world.rich),  # no such order
        ]

    outcomes = grouped.platform.run_order_commands(
        [
            OrderCommand(OrderAction.PAY, order_id, buyer_id)
            for order_id, buyer_id in commands(grouped)
        ]
    )
    one_by_one = [
        alone.platform.pay_order(order_id, buyer_id) for order_id, buyer_id in commands(alone)
    ]

    assert [_decision(o.decision) for o in outcomes] == [_decision(d) for d in one_by_one]
    assert [o.decision.error for o in outcomes] == [
        None,
        None,
        PaymentError.INSUFFICIENT_FUNDS,
        None,
        None,
        None,
        PaymentError.ORDER_ALREADY_PAID,
        PaymentError.USER_NOT_FOUND,
        None,
        PaymentError.ORDER_NOT_FOUND,
    ]
    assert outcomes[4].decision.replayed
    # A command on an order already in the group runs in a later round, so its event follows
    # the events of the round before: the same events, in another order.
    group_state, alone_state = grouped.snapshot(), alone.snapshot()
    assert sorted(group_state.pop("events"), key=repr) == sorted(
        alone_state.pop("events"), key=repr
    )
    assert group_state == alone_state


def test_order_commands_with_the_same_idempotency_key_keep_the_first_record(
    platforms: tuple[Platform, Platform],
) -> None:
    world = World(platforms[0])
    platform = world.platform
    orders = [platform.create_order(world.shop, f"K-{n}", 1_00).orders[0].id for n in range(3)]

    def remember(key: str, body: str) -> Callable[[Decision], IdempotencyRecord]:
        return lambda decision: IdempotencyRecord(
            PartyKind.USER, world.rich, key, "h", 200, body, 1
        )

    outcomes = platform.run_order_commands(
        [
            OrderCommand(OrderAction.PAY, orders[0], world.rich, remember("same", "first")),
            OrderCommand(OrderAction.PAY, orders[1], world.rich, remember("same", "second")),
            OrderCommand(OrderAction.PAY, orders[2], world.rich, remember("other", "third")),
            OrderCommand(OrderAction.PAY, orders[0], world.rich, remember("same", "fourth")),
            OrderCommand(OrderAction.PAY, orders[2], world.rich),
        ]
    )

    first = platform.idempotency_record(PartyKind.USER, world.rich, "same")
    assert first is not None
    assert first.body == "first"
    other = platform.idempotency_record(PartyKind.USER, world.rich, "other")
    assert other is not None
    assert [o.idempotency_record for o in outcomes] == [first, first, other, first, None]
