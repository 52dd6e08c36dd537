"""POST /v1/orders/bulk-pay: many payments in one request, each with its own result, paid only
with buyers' one-time payment codes."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from paycell.adapters.alipay.store import GatewayStore, PaymentCode
from paycell.adapters.http.bulk import BULK_ITEMS_MAX
from tests.e2e.conftest import Party, World


def _code(world: World, user: Party) -> str:
    response = world.client.post("/alipay/buyer/payment-codes", headers=user.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["auth_code"])


@contextmanager
def _gateway_store(database_url: str) -> Iterator[GatewayStore]:
    """The gateway's tables, through a connection of the test's own."""
    store = GatewayStore(database_url)
    try:
        yield store
    finally:
        store.close()


def _shop_and_buyer(world: World, money: int) -> tuple[Party, Party]:
    """A merchant, and a buyer with `money` in her wallet."""
    shop = world.new_merchant()
    alice = world.new_user()
    world.top_up(alice, money)
    return shop, alice


def _codes(response: Any) -> list[str]:
    return [r["code"] for r in response.json()["results"]]


def _bulk(world: World, merchant: Party, items: list[dict[str, Any]], **headers: str) -> Any:
    return world.client.post(
        "/v1/orders/bulk-pay", json={"items": items}, headers={**merchant.headers, **headers}
    )


def test_bulk_pay_gives_each_item_its_result(world: World) -> None:
    shop = world.new_merchant()
    alice, bob = world.new_user("alice"), world.new_user("bob")
    world.top_up(alice, 100_00, "a")
    world.top_up(bob, 10_00, "b")
    items = [
        {"out_trade_no": "B-1", "amount": 30_00, "payment_code": _code(world, alice)},
        {"out_trade_no": "B-2", "amount": 20_00, "payment_code": _code(world, bob)},  # too much
        {"out_trade_no": "B-3", "amount": 5_00, "payment_code": "281111111111111111"},  # unknown
        {"out_trade_no": "B-4", "amount": 1.5, "payment_code": _code(world, alice)},  # float
        {"out_trade_no": "B-1", "amount": 30_00, "payment_code": _code(world, alice)},  # repeat
        {"out_trade_no": "B-5", "amount": 5_00, "currency": "XXX", "payment_code": "28"},
    ]
    response = _bulk(world, shop, items)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "bulk_payment"
    assert (body["paid"], body["failed"]) == (1, 5)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(6))
    assert [(r["status"], r["code"]) for r in results] == [
        (201, "ok"),
        (409, "insufficient_funds"),
        (422, "invalid_payment_code"),
        (422, "invalid_field"),
        (422, "duplicate_item"),
        (422, "unsupported_currency"),
    ]
    assert results[0]["order"]["status"] == "TRADE_SUCCESS"
    assert results[0]["order"]["buyer_id"] == alice.id
    assert world.wallet(alice) == 70_00
    assert world.wallet(bob) == 10_00
    # The refused order was closed, and bob's code was given back: it pays a cheaper one.
    refused = world.platform.get_order_by_out_trade_no(shop.id, "B-2")
    assert refused is not None
    assert refused.status.value == "TRADE_CLOSED"
    again = _bulk(
        world,
        shop,
        [{"out_trade_no": "B-6", "amount": 5_00, "payment_code": items[1]["payment_code"]}],
    )
    assert again.json()["results"][0]["code"] == "ok"
    assert world.wallet(bob) == 5_00


def test_bulk_pay_resent_answers_paid_items_again(world: World) -> None:
    shop, alice = _shop_and_buyer(world, 100_00)
    items = [
        {"out_trade_no": f"R-{i}", "amount": 10_00, "payment_code": _code(world, alice)}
        for i in range(3)
    ]
    first = _bulk(world, shop, items)
    assert [r["code"] for r in first.json()["results"]] == ["ok"] * 3
    second = _bulk(world, shop, items)
    assert second.status_code == 200
    assert [(r["status"], r["code"], r["replayed"]) for r in second.json()["results"]] == [
        (200, "ok", True)
    ] * 3
    assert world.wallet(alice) == 70_00
    # A used code cannot pay a new order.
    third = _bulk(
        world,
        shop,
        [{"out_trade_no": "R-new", "amount": 1_00, "payment_code": items[0]["payment_code"]}],
    )
    assert third.json()["results"][0]["code"] == "invalid_payment_code"
    assert world.wallet(alice) == 70_00


def test_bad_bulk_requests_are_refused_whole_and_change_nothing(sqlite_world: World) -> None:
    world = sqlite_world
    shop = world.new_merchant()
    alice = world.new_user()
    world.top_up(alice, 10_00)
    # A payable item: a request taken in spite of its fault would pay it with alice's code.
    item = {"out_trade_no": "L", "amount": 1_00, "payment_code": _code(world, alice)}
    client = world.client
    before = world.snapshot()

    refused = {
        "too many items": _bulk(world, shop, [item] * (BULK_ITEMS_MAX + 1)),
        "no items": _bulk(world, shop, []),
        "an unknown field": client.post(
            "/v1/orders/bulk-pay", json={"items": [item], "extra": 1}, headers=shop.headers
        ),
        "malformed JSON": client.post("/v1/orders/bulk-pay", content=b"[1,2", headers=shop.headers),
        # Only merchants; a user cannot submit payments in bulk.
        "a user's key": _bulk(world, alice, [item]),
        "no key": client.post("/v1/orders/bulk-pay", json={"items": [item]}),
    }

    assert {name: (r.status_code, r.json()["error"]["code"]) for name, r in refused.items()} == {
        "too many items": (413, "too_many_items"),
        "no items": (422, "invalid_field"),
        "an unknown field": (422, "invalid_field"),
        "malformed JSON": (400, "malformed_json"),
        "a user's key": (403, "forbidden"),
        "no key": (401, "unauthorized"),
    }
    assert world.snapshot() == before
    # Nor was alice's one-time code used up: the same item, sent properly, pays with it.
    paid = _bulk(world, shop, [item])
    assert [r["code"] for r in paid.json()["results"]] == ["ok"]
    assert world.wallet(alice) == 9_00


def test_bulk_pay_takes_up_to_its_item_limit(sqlite_world: World) -> None:
    world = sqlite_world
    shop = world.new_merchant()
    # A thousand items fit the body limit: each is answered (here, refused: unknown codes).
    full = _bulk(
        world,
        shop,
        [
            {"out_trade_no": f"L-{i}", "amount": 1, "payment_code": f"28{i:016d}"}
            for i in range(BULK_ITEMS_MAX)
        ],
    )
    assert full.status_code == 200
    assert (full.json()["paid"], full.json()["failed"]) == (0, BULK_ITEMS_MAX)
    assert {r["code"] for r in full.json()["results"]} == {"invalid_payment_code"}


def test_bulk_pay_with_an_idempotency_key_replays(sqlite_world: World) -> None:
    world = sqlite_world
    shop = world.new_merchant()
    alice = world.new_user()
    world.top_up(alice, 10_00)
    items = [{"out_trade_no": "K-1", "amount": 1_00, "payment_code": _code(world, alice)}]
    first = _bulk(world, shop, items, **{"Idempotency-Key": "k1"})
    second = _bulk(world, shop, items, **{"Idempotency-Key": "k1"})
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert first.json() == second.json()
    assert world.wallet(alice) == 9_00


def test_bulk_pay_refuses_expired_and_used_codes_and_pays_with_the_rest(world: World) -> None:
    shop, alice = _shop_and_buyer(world, 100_00)
    expired = _code(world, alice)
    world.clock.advance(121)  # codes live 120 s
    used = _code(world, alice)
    assert [r["code"] for r in _bulk(world, shop, [
        {"out_trade_no": "U-1", "amount": 1_00, "payment_code": used},
    ]).json()["results"]] == ["ok"]  # fmt: skip
    fresh = _code(world, alice)
    response = _bulk(
        world,
        shop,
        [
            {"out_trade_no": "E-1", "amount": 2_00, "payment_code": expired},
            {"out_trade_no": "E-2", "amount": 3_00, "payment_code": used},  # a new order
            {"out_trade_no": "E-3", "amount": 4_00, "payment_code": fresh},
        ],
    )
    assert [(r["status"], r["code"]) for r in response.json()["results"]] == [
        (422, "invalid_payment_code"),
        (422, "invalid_payment_code"),
        (201, "ok"),
    ]
    assert world.wallet(alice) == 100_00 - 1_00 - 4_00
    for number in ("E-1", "E-2"):
        assert world.platform.get_order_by_out_trade_no(shop.id, number) is None


def test_each_payment_code_is_taken_once_across_connections(database_url: str) -> None:
    """The bulk endpoint looks codes up and takes them a request at a time: a code taken by
    another connection, expired, or unknown is left out of what a request takes."""
    store, other = GatewayStore(database_url), GatewayStore(database_url)
    try:
        # More codes than one IN list holds (500), so the lookups run in several chunks.
        many = [f"28{n:016d}" for n in range(1_201)]
        for code in [*many, "expired"]:
            store.add_payment_code(PaymentCode(code, 7, 100 if code == "expired" else 1_000, 0, 0))
        assert other.use_payment_codes([many[0], many[1]], now=500) == {many[0], many[1]}
        taken = store.use_payment_codes([*many, "expired", "unknown"], now=500)
        assert taken == set(many[2:])
        assert store.use_payment_codes(many, now=600) == set()  # all used now
        store.release_payment_codes([many[0], many[5]])
        assert store.use_payment_codes(many, now=700) == {many[0], many[5]}
        store.payment_codes_paid([(many[0], 41), (many[5], 42)])
        found = store.payment_codes([many[0], many[5], many[9], "expired", "unknown"])
        assert {code: (c.used_at, c.order_id) for code, c in found.items()} == {
            many[0]: (700, 41),
            many[5]: (700, 42),
            many[9]: (500, 0),
            "expired": (0, 0),
        }
        assert len(store.payment_codes(many)) == len(many)
    finally:
        store.close()
        other.close()


def test_a_fresh_code_sent_for_an_order_already_paid_answers_it_and_stays_usable(
    world: World,
) -> None:
    shop, alice = _shop_and_buyer(world, 100_00)
    paid = _bulk(
        world, shop, [{"out_trade_no": "F-1", "amount": 10_00, "payment_code": _code(world, alice)}]
    )
    assert [r["code"] for r in paid.json()["results"]] == ["ok"]
    fresh = _code(world, alice)
    again = _bulk(world, shop, [{"out_trade_no": "F-1", "amount": 10_00, "payment_code": fresh}])
    assert [(r["status"], r["code"], r["replayed"]) for r in again.json()["results"]] == [
        (200, "ok", True)
    ]
    assert world.wallet(alice) == 90_00  # paid once
    # The order needed no new consent: the fresh code still pays another order.
    other = _bulk(world, shop, [{"out_trade_no": "F-2", "amount": 5_00, "payment_code": fresh}])
    assert [r["code"] for r in other.json()["results"]] == ["ok"]
    assert world.wallet(alice) == 85_00


def test_a_resend_after_the_codes_went_unrecorded_answers_the_paid_order(
    world: World, database_url: str
) -> None:
    shop, alice = _shop_and_buyer(world, 100_00)
    items = [{"out_trade_no": "C-1", "amount": 10_00, "payment_code": _code(world, alice)}]
    assert _codes(_bulk(world, shop, items)) == ["ok"]
    # As if the request had stopped after the payment's commit, before recording its code.
    with _gateway_store(database_url) as store:
        store.payment_codes_paid([(str(items[0]["payment_code"]), 0)])
    resent = _bulk(world, shop, items)
    assert [(r["status"], r["code"], r["replayed"]) for r in resent.json()["results"]] == [
        (200, "ok", True)
    ]
    assert resent.json()["results"][0]["order"]["out_trade_no"] == "C-1"
    assert world.wallet(alice) == 90_00
    # Sent for another order, the used code is still refused.
    other = [{"out_trade_no": "C-2", "amount": 10_00, "payment_code": items[0]["payment_code"]}]
    assert _codes(_bulk(world, shop, other)) == ["invalid_payment_code"]


def test_a_used_code_with_no_order_recorded_does_not_answer_for_an_order_it_cannot_have_paid(
    world: World, database_url: str
) -> None:
    # A code taken but not (yet) used to pay: by a request still in flight, or one that stopped
    # before paying. It must not answer "paid" for a refunded order, nor for an order paid
    # before the code was taken.
    shop, alice = _shop_and_buyer(world, 100_00)
    first = [
        {"out_trade_no": "R-1", "amount": 10_00, "payment_code": _code(world, alice)},
        {"out_trade_no": "R-2", "amount": 10_00, "payment_code": _code(world, alice)},
    ]
    assert _codes(_bulk(world, shop, first)) == ["ok", "ok"]
    refunded = _bulk(world, shop, first).json()["results"][0]["order"]["id"]
    refund = world.client.post(
        f"/v1/orders/{refunded}/refunds",
        json={"out_request_no": "RF-1", "amount": 10_00},
        headers=shop.headers,
    )
    assert refund.status_code in (200, 201), refund.text
    taken_later = _code(world, alice)
    with _gateway_store(database_url) as store:
        assert store.use_payment_codes([taken_later], now=world.clock()) == {taken_later}
    for number in ("R-1", "R-2"):  # refunded; paid before the code was taken
        item = [{"out_trade_no": number, "amount": 10_00, "payment_code": taken_later}]
        assert _codes(_bulk(world, shop, item)) == ["invalid_payment_code"]
    assert world.wallet(alice) == 90_00
