"""Every bad input of issue 3, through HTTP: a 4xx with a stable code and a message, never a
500, and nothing changed (balances, records and the ledger exactly as before)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from paycell.core.payments.records import PartyKind
from tests.e2e.conftest import World


@dataclass
class Scene:
    world: World
    buyer: Any
    other_buyer: Any
    shop: Any
    other_shop: Any
    ghost_user: dict[str, str]
    ghost_merchant: dict[str, str]
    paid: int
    unpaid: int
    closed: int
    released: int
    pending_callback: tuple[str, str]
    done_callback: tuple[str, str]


def build_scene(world: World) -> Scene:
    buyer, other_buyer = world.new_user("buyer"), world.new_user("poor buyer")
    shop, other_shop = world.new_merchant("shop"), world.new_merchant("other shop")
    world.top_up(buyer, 100_00)
    paid = world.create_order(shop, "PAID", 25_00)
    assert world.client.post(f"/v1/orders/{paid}/pay", headers=buyer.headers).status_code == 200
    unpaid = world.create_order(shop, "UNPAID", 10_00, timeout_seconds=600)
    closed = world.create_order(shop, "CLOSED", 10_00)
    world.client.post(f"/v1/orders/{closed}/cancel", headers=shop.headers)
    released = world.create_order(shop, "ESCROW", 10_00, mode="escrow")
    world.client.post(f"/v1/orders/{released}/pay", headers=buyer.headers)
    world.client.post(f"/v1/orders/{released}/confirm", headers=buyer.headers)
    # A top-up whose callback has not come yet, and one that completed (kept to replay).
    world.client.post(
        "/v1/wallet/top-ups",
        json={"request_no": "T-9", "amount": 5_00},
        headers=other_buyer.headers,
    )
    [pending] = world.platform.bank.callbacks(world.clock())
    world.client.post(
        "/v1/wallet/top-ups", json={"request_no": "T-8", "amount": 7_00}, headers=buyer.headers
    )
    [done] = world.platform.bank.callbacks(world.clock())
    response = world.client.post(
        "/v1/channel/callbacks", content=done.body, headers={"X-Channel-Signature": done.signature}
    )
    assert response.status_code == 200
    # Keys of parties that do not exist (issued straight from the library).
    ghost_user = {"Authorization": f"Bearer {world.platform.issue_api_key(PartyKind.USER, 999)}"}
    ghost_merchant = {
        "Authorization": f"Bearer {world.platform.issue_api_key(PartyKind.MERCHANT, 999)}"
    }
    return Scene(
        world, buyer, other_buyer, shop, other_shop, ghost_user, ghost_merchant,
        paid, unpaid, closed, released, (pending.body, pending.signature),
        (done.body, done.signature),
    )  # fmt: skip


Request = Callable[[Scene], httpx.Response]


def _post(path: Callable[[Scene], str], who: str, **kwargs: Any) -> Request:
    extra_headers: dict[str, str] = kwargs.pop("headers", {})

    def send(scene: Scene) -> httpx.Response:
        party = getattr(scene, who) if who else None
        auth = party if isinstance(party, dict) else (party.headers if party else {})
        response: httpx.Response = scene.world.client.post(
            path(scene), headers={**auth, **extra_headers}, **kwargs
        )
        return response

    return send


def _get(path: Callable[[Scene], str], who: str) -> Request:
    def send(scene: Scene) -> httpx.Response:
        party = getattr(scene, who)
        auth = party if isinstance(party, dict) else party.headers
        response: httpx.Response = scene.world.client.get(path(scene), headers=auth)
        return response

    return send


def _order(amount: object, **extra: object) -> dict[str, object]:
    return {"out_trade_no": "NEW", "amount": amount, **extra}


def _callback(which: str, signature: str | None = None, body: str | None = None) -> Request:
    def send(scene: Scene) -> httpx.Response:
        real_body, real_signature = getattr(scene, which)
        sent_body = body if body is not None else real_body
        headers = {"X-Channel-Signature": signature if signature is not None else real_signature}
        if body is not None and signature is None:
            headers["X-Channel-Signature"] = scene.world.platform.bank.sign(sent_body)
        response: httpx.Response = scene.world.client.post(
            "/v1/channel/callbacks", content=sent_body, headers=headers
        )
        return response

    return send


def _chunked(size: int) -> Request:
    def send(scene: Scene) -> httpx.Response:
        def chunks() -> Any:
            for _ in range(size // 1024):
                yield b" " * 1024

        response: httpx.Response = scene.world.client.post(
            "/v1/orders", content=chunks(), headers=scene.shop.headers
        )
        return response

    return send


ORDERS = lambda s: "/v1/orders"  # noqa: E731
PAID = lambda s: f"/v1/orders/{s.paid}"  # noqa: E731
UNPAID = lambda s: f"/v1/orders/{s.unpaid}"  # noqa: E731
CLOSED = lambda s: f"/v1/orders/{s.closed}"  # noqa: E731
RELEASED = lambda s: f"/v1/orders/{s.released}"  # noqa: E731
TOP_UPS = lambda s: "/v1/wallet/top-ups"  # noqa: E731
BODY = b'{"out_trade_no": "BIG", "amount": 1, "subject": "' + b"x" * 70_000 + b'"}'

CASES: dict[str, tuple[Request, int, str]] = {
    "unknown user tops up": (
        _post(TOP_UPS, "ghost_user", json={"request_no": "T", "amount": 1_00}), 404,
        "user_not_found"),
    "unknown user pays": (
        _post(lambda s: f"/v1/orders/{s.unpaid}/pay", "ghost_user"), 404, "user_not_found"),
    "unknown merchant creates an order": (
        _post(ORDERS, "ghost_merchant", json=_order(1_00)), 404, "merchant_not_found"),
    "no API key": (_post(ORDERS, "", json=_order(1_00)), 401, "unauthorized"),
    "bad API key": (
        _post(ORDERS, "", json=_order(1_00), headers={"Authorization": "Bearer pk_nope"}),
        401, "unauthorized"),
    "not a bearer key": (
        _post(ORDERS, "", json=_order(1_00), headers={"Authorization": "Basic abc"}),
        401, "unauthorized"),
    "user key on a merchant endpoint": (
        _post(ORDERS, "buyer", json=_order(1_00)), 403, "forbidden"),
    "merchant key on a user endpoint": (
        _post(lambda s: f"/v1/orders/{s.unpaid}/pay", "shop"), 403, "forbidden"),
    "merchant key on an admin endpoint": (
        _post(lambda s: "/v1/admin/users", "shop", json={"name": "x"}), 403, "forbidden"),
    "another merchant's order: read": (_get(PAID, "other_shop"), 404, "order_not_found"),
    "another merchant's order: refund": (
        _post(lambda s: f"/v1/orders/{s.paid}/refunds", "other_shop",
              json={"out_request_no": "R", "amount": 1_00}), 404, "order_not_found"),
    "another merchant's order: cancel": (
        _post(lambda s: f"/v1/orders/{s.unpaid}/cancel", "other_shop"), 404, "order_not_found"),
    "another buyer's paid order: read": (_get(PAID, "other_buyer"), 404, "order_not_found"),
    "order id out of range": (
        _get(lambda s: "/v1/orders/99999999999999999999999", "shop"), 404, "order_not_found"),
    "order id not a number": (_get(lambda s: "/v1/orders/abc", "shop"), 404, "order_not_found"),
    "zero amount": (_post(ORDERS, "shop", json=_order(0)), 422, "invalid_amount"),
    "negative amount": (_post(ORDERS, "shop", json=_order(-5)), 422, "invalid_amount"),
    "amount above the limit": (_post(ORDERS, "shop", json=_order(1 << 63)), 422, "invalid_field"),
    "float amount": (_post(ORDERS, "shop", json=_order(12.5)), 422, "invalid_field"),
    "integral float amount": (_post(ORDERS, "shop", json=_order(100.0)), 422, "invalid_field"),
    "string amount": (_post(ORDERS, "shop", json=_order("100")), 422, "invalid_field"),
    "boolean amount": (_post(ORDERS, "shop", json=_order(True)), 422, "invalid_field"),
    "zero top-up": (
        _post(TOP_UPS, "buyer", json={"request_no": "T-0", "amount": 0}), 422, "invalid_amount"),
    "negative refund": (
        _post(lambda s: f"/v1/orders/{s.paid}/refunds", "shop",
              json={"out_request_no": "R", "amount": -1}), 422, "invalid_amount"),
    "wrong currency on an order": (
        _post(ORDERS, "shop", json=_order(1_00, currency="USD")), 422, "unsupported_currency"),
    "unknown currency on a top-up": (
        _post(TOP_UPS, "buyer", json={"request_no": "T", "amount": 1, "currency": "XYZ"}),
        422, "unsupported_currency"),
    "wrong currency on a balance": (
        _get(lambda s: "/v1/wallet?currency=EUR", "buyer"), 422, "unsupported_currency"),
    "paying a closed order": (
        _post(lambda s: f"/v1/orders/{s.closed}/pay", "buyer"), 409, "order_already_closed"),
    "paying an order already paid by another": (
        _post(lambda s: f"/v1/orders/{s.paid}/pay", "other_buyer"), 409, "order_already_paid"),
    "paying without the money": (
        _post(lambda s: f"/v1/orders/{s.unpaid}/pay", "other_buyer"), 409, "insufficient_funds"),
    "withdrawing more than the wallet holds": (
        _post(lambda s: "/v1/wallet/withdrawals", "other_buyer",
              json={"request_no": "W", "amount": 1_00}), 409, "insufficient_funds"),
    "confirming twice": (
        _post(lambda s: f"/v1/orders/{s.released}/confirm", "buyer"), 409,
        "escrow_already_released"),
    "confirming a direct order": (
        _post(lambda s: f"/v1/orders/{s.paid}/confirm", "buyer"), 409, "order_not_escrow"),
    "cancelling a paid order": (
        _post(lambda s: f"/v1/orders/{s.paid}/cancel", "shop"), 409, "order_already_paid"),
    "refund above what was paid": (
        _post(lambda s: f"/v1/orders/{s.paid}/refunds", "shop",
              json={"out_request_no": "R", "amount": 25_01}), 422, "refund_exceeds_amount_paid"),
    "refund on an unpaid order": (
        _post(lambda s: f"/v1/orders/{s.unpaid}/refunds", "shop",
              json={"out_request_no": "R", "amount": 1_00}), 409, "order_not_paid"),
    "rejecting a refund request that is not open": (
        _post(lambda s: f"/v1/orders/{s.paid}/refund-request/reject", "shop"), 409,
        "no_refund_request_open"),
    "same order number, other amount": (
        _post(ORDERS, "shop", json={"out_trade_no": "PAID", "amount": 1}), 409,
        "order_exists_with_different_content"),
    "forged channel callback": (_callback("pending_callback", signature="00" * 32), 401,
                                "invalid_signature"),
    "unsigned channel callback": (_callback("pending_callback", signature=""), 401,
                                  "invalid_signature"),
    "forged body with a real signature": (
        lambda s: s.world.client.post(
            "/v1/channel/callbacks",
            content=s.pending_callback[0].replace("SUCCESS", "FAILED"),
            headers={"X-Channel-Signature": s.pending_callback[1]}),
        401, "invalid_signature"),
    "callback contradicting a final answer": (
        lambda s: _callback("done_callback", body=s.done_callback[0].replace(
            '"SUCCESS"', '"FAILED"'))(s), 409, "channel_callback_conflict"),
    "callback for an unknown request": (
        _callback("done_callback", body='{"amount": 1, "channel_reference": "PC99", '
                  '"reason": "", "status": "SUCCESS"}'), 404, "channel_request_not_found"),
    "malformed JSON": (_post(ORDERS, "shop", content=b'{"amount": 1'), 400, "malformed_json"),
    "JSON that is not an object": (_post(ORDERS, "shop", content=b"[1, 2]"), 400,
                                   "malformed_json"),
    "body not UTF-8": (_post(ORDERS, "shop", content=b'{"a": "\xff"}'), 400, "malformed_json"),
    "NaN in JSON": (_post(ORDERS, "shop", content=b'{"amount": NaN}'), 400, "malformed_json"),
    "missing amount": (_post(ORDERS, "shop", json={"out_trade_no": "M"}), 422, "invalid_field"),
    "missing out_trade_no": (_post(ORDERS, "shop", json={"amount": 1}), 422, "invalid_field"),
    "unknown field": (_post(ORDERS, "shop", json=_order(1, colour="red")), 422, "invalid_field"),
    "mode not in the list": (_post(ORDERS, "shop", json=_order(1, mode="cash")), 422,
                             "invalid_field"),
    "NUL in a string": (_post(ORDERS, "shop", json={"out_trade_no": "A\x00", "amount": 1}),
                        422, "invalid_field"),
    "empty order number": (_post(ORDERS, "shop", json=_order(1, out_trade_no="")), 422,
                           "invalid_field"),
    "zero timeout": (_post(ORDERS, "shop", json=_order(1, timeout_seconds=0)), 422,
                     "invalid_field"),
    "limit out of range": (_get(lambda s: "/v1/orders?limit=0", "shop"), 422, "invalid_field"),
    "cursor not a number": (_get(lambda s: "/v1/orders?after=x", "shop"), 422, "invalid_field"),
    "unknown query parameter": (_get(lambda s: "/v1/orders?page=2", "shop"), 422,
                                "invalid_field"),
    "Idempotency-Key too long": (
        _post(ORDERS, "shop", json=_order(1), headers={"Idempotency-Key": "k" * 256}), 422,
        "invalid_field"),
    "oversized body by Content-Length": (_post(ORDERS, "shop", content=BODY), 413,
                                         "body_too_large"),
    "oversized chunked body": (_chunked(70 * 1024), 413, "body_too_large"),
    "unknown route": (_get(lambda s: "/v1/nothing-here", "shop"), 404, "not_found"),
    "wrong method": (
        lambda s: s.world.client.delete(f"/v1/orders/{s.paid}", headers=s.shop.headers), 405,
        "method_not_allowed"),
    "settlement day malformed": (
        _post(lambda s: "/v1/admin/settlements", "", json={"day": "11/11/2024"},
              headers={"Authorization": "Bearer test-admin-key"}), 422, "invalid_field"),
}  # fmt: skip


def _check(scene: Scene, name: str) -> None:
    send, status, code = CASES[name]
    before = scene.world.snapshot()
    response = send(scene)
    assert response.status_code == status, f"{name}: {response.text}"
    error = response.json()["error"]
    assert error["code"] == code, name
    assert error["message"], name
    assert scene.world.snapshot() == before, f"{name} changed state"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_rejected_and_changes_nothing(sqlite_world: World, name: str) -> None:
    _check(build_scene(sqlite_world), name)


@pytest.fixture
def postgres_world(world_on: Any, postgres_url: str) -> World:
    result: World = world_on(postgres_url)
    return result


@pytest.mark.postgres
def test_every_bad_input_on_postgresql(postgres_world: World) -> None:
    # The cases above, on PostgreSQL: in turn on one scene (one database rather than one per
    # case), which each case must leave exactly as it found it.
    scene = build_scene(postgres_world)
    for name in CASES:
        _check(scene, name)


def test_expired_unpaid_order_cannot_be_paid(world: World) -> None:
    scene = build_scene(world)
    world.clock.advance(601)
    before = world.snapshot()
    response = world.client.post(f"/v1/orders/{scene.unpaid}/pay", headers=scene.buyer.headers)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "order_expired")
    assert world.snapshot() == before


def test_replayed_channel_callback_answers_the_same_and_applies_once(world: World) -> None:
    scene = build_scene(world)
    body, signature = scene.pending_callback
    first = world.client.post(
        "/v1/channel/callbacks", content=body, headers={"X-Channel-Signature": signature}
    )
    assert first.status_code == 200
    assert world.wallet(scene.other_buyer) == 5_00
    before = world.snapshot()
    again = world.client.post(
        "/v1/channel/callbacks", content=body, headers={"X-Channel-Signature": signature}
    )
    assert again.status_code == 200
    assert again.json() == first.json()
    assert world.snapshot() == before
