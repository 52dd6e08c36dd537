"""Every payment flow through the REST API, on SQLite and PostgreSQL."""

from tests.e2e.conftest import World

DAY_SECONDS = 86_400


def test_top_up_direct_payment_then_partial_and_full_refund(world: World) -> None:
    buyer, shop = world.new_user(), world.new_merchant(fee_rate_basis_points=60)
    world.top_up(buyer, 100_00)
    assert world.wallet(buyer) == 100_00
    requests = world.client.get("/v1/wallet/requests", headers=buyer.headers).json()
    assert [(r["kind"], r["status"], r["amount"]) for r in requests["data"]] == [
        ("top_up", "SUCCEEDED", 100_00)
    ]

    order_id = world.create_order(shop, "T-1", 25_00, subject="Oolong")
    paid = world.client.post(f"/v1/orders/{order_id}/pay", headers=buyer.headers)
    assert paid.status_code == 200
    assert paid.json()["status"] == "TRADE_SUCCESS"
    assert paid.json()["fee"] == 15  # 0.60% of 25.00, half-even
    assert isinstance(paid.json()["paid_at"], int)
    assert paid.json()["paid_at_iso"].startswith("2024-11-11T")
    assert world.wallet(buyer) == 75_00
    assert world.balance(shop) == 24_85

    partial = world.client.post(
        f"/v1/orders/{order_id}/refunds",
        json={"out_request_no": "R-1", "amount": 10_00, "reason": "one cup broken"},
        headers=shop.headers,
    )
    assert partial.status_code == 201, partial.text
    assert partial.json()["source"] == "merchant"
    assert partial.json()["fee_refunded"] == 6  # 15 * 10/25 = 6.0
    assert partial.json()["order"]["status"] == "TRADE_SUCCESS"
    assert world.wallet(buyer) == 85_00

    full = world.client.post(
        f"/v1/orders/{order_id}/refunds",
        json={"out_request_no": "R-2", "amount": 15_00},
        headers=shop.headers,
    )
    assert full.status_code == 201, full.text
    assert full.json()["order"]["status"] == "TRADE_CLOSED"
    assert full.json()["order"]["close_reason"] == "refunded"
    assert world.wallet(buyer) == 100_00
    assert world.balance(shop) == 0

    # The same refund number again is a replay (200), not a second refund.
    again = world.client.post(
        f"/v1/orders/{order_id}/refunds",
        json={"out_request_no": "R-2", "amount": 15_00},
        headers=shop.headers,
    )
    assert again.status_code == 200
    assert world.wallet(buyer) == 100_00
    refunds = world.client.get(f"/v1/orders/{order_id}/refunds", headers=shop.headers).json()
    assert [r["amount"] for r in refunds["data"]] == [10_00, 15_00]
    events = world.client.get("/v1/webhook-events", headers=shop.headers).json()["data"]
    assert [e["type"] for e in events] == [
        "payment.succeeded",
        "refund.succeeded",
        "refund.succeeded",
        "order.closed",
    ]


def test_merchant_replays_one_of_its_webhook_events(world: World) -> None:
    buyer, shop, other = world.new_user(), world.new_merchant(), world.new_merchant()
    world.top_up(buyer, 10_00)
    order_id = world.create_order(shop, "W-1", 5_00)
    paid = world.client.post(f"/v1/orders/{order_id}/pay", headers=buyer.headers)
    assert paid.status_code == 200, paid.text
    event = world.client.get("/v1/webhook-events", headers=shop.headers).json()["data"][0]
    replay = f"/v1/webhook-events/{event['id']}/replay"
    replayed = world.client.post(replay, headers=shop.headers)
    # Accepted for delivery, not delivered: 202, as the OpenAPI document says.
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["event_id"] == event["id"]
    document = world.client.get("/openapi.json").json()
    assert "202" in document["paths"]["/v1/webhook-events/{event_id}/replay"]["post"]["responses"]
    for path, party in (
        (replay, other),  # another merchant's event is not found, not forbidden
        ("/v1/webhook-events/999999/replay", shop),
        ("/v1/webhook-events/x1/replay", shop),
    ):
        missing = world.client.post(path, headers=party.headers)
        assert missing.status_code == 404, (path, missing.text)
        assert missing.json()["error"]["code"] == "webhook_event_not_found"


def test_a_query_parameter_given_twice_is_invalid(world: World) -> None:
    # Found by fuzzing: `?limit=abc&limit=` answered 200, the last value silently winning.
    shop = world.new_merchant()
    for query in ("limit=abc&limit=", "limit=2&limit=3", "after=0&after=0"):
        listed = world.client.get(f"/v1/orders?{query}", headers=shop.headers)
        assert listed.status_code == 422, (query, listed.text)
        assert listed.json()["error"]["code"] == "invalid_field"
        assert "is given more than once" in listed.json()["error"]["message"]
    assert world.client.get("/v1/orders?limit=2", headers=shop.headers).status_code == 200


def test_escrow_payment_then_confirm(world: World) -> None:
    buyer, shop = world.new_user(), world.new_merchant(fee_rate_basis_points=100)
    world.top_up(buyer, 50_00)
    order_id = world.create_order(shop, "E-1", 20_00, mode="escrow")
    paid = world.client.post(f"/v1/orders/{order_id}/pay", headers=buyer.headers).json()
    assert paid["escrow_state"] == "held"
    assert world.balance(shop) == 0
    assert world.wallet(buyer) == 30_00
    confirmed = world.client.post(f"/v1/orders/{order_id}/confirm", headers=buyer.headers)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["escrow_state"] == "released"
    assert world.balance(shop) == 19_80


def test_escrow_auto_confirms_when_the_clock_passes(world: World) -> None:
    buyer, shop = world.new_user(), world.new_merchant(fee_rate_basis_points=0)
    world.top_up(buyer, 50_00)
    order_id = world.create_order(shop, "E-2", 20_00, mode="escrow", auto_confirm_seconds=3600)
    world.client.post(f"/v1/orders/{order_id}/pay", headers=buyer.headers)
    world.clock.advance(3599)
    report = world.client.post("/v1/admin/scheduler/run", headers=world.admin).json()
    assert report["auto_confirmed"] == 0
    world.clock.advance(2)
    report = world.client.post("/v1/admin/scheduler/run", headers=world.admin).json()
    assert report["auto_confirmed"] == 1
    assert world.order(shop, order_id)["escrow_state"] == "released"
    assert world.balance(shop) == 20_00


def test_refund_request_pauses_auto_confirm(world: World) -> None:
    buyer, shop = world.new_user(), world.new_merchant(fee_rate_basis_points=0)
    world.top_up(buyer, 50_00)
    order_id = world.create_order(shop, "E-3", 20_00, mode="escrow", auto_confirm_seconds=3600)
    world.client.post(f"/v1/orders/{order_id}/pay", headers=buyer.headers)
    world.clock.advance(600)
    opened = world.client.post(f"/v1/orders/{order_id}/refund-request", headers=buyer.headers)
    assert opened.status_code == 200, opened.text
    assert opened.json()["refund_request_open"] is True
    world.clock.advance(10 * 3600)
    world.client.post("/v1/admin/scheduler/run", headers=world.admin)
    assert world.order(shop, order_id)["escrow_state"] == "held"
    rejected = world.client.post(
        f"/v1/orders/{order_id}/refund-request/reject", headers=shop.headers
    )
    assert rejected.status_code == 200, rejected.text
    world.clock.advance(2999)  # 600 s had run before the pause: 3000 s are left.
    world.client.post("/v1/admin/scheduler/run", headers=world.admin)
    assert world.order(shop, order_id)["escrow_state"] == "held"
    world.clock.advance(2)
    world.client.post("/v1/admin/scheduler/run", headers=world.admin)
    assert world.order(shop, order_id)["escrow_state"] == "released"


def test_escrow_refund_before_release_comes_from_escrow(world: World) -> None:
    buyer, shop = world.new_user(), world.new_merchant(fee_rate_basis_points=60)
    world.top_up(buyer, 50_00)
    order_id = world.create_order(shop, "E-4", 20_00, mode="escrow")
    world.client.post(f"/v1/orders/{order_id}/pay", headers=buyer.headers)
    refund = world.client.post(
        f"/v1/orders/{order_id}/refunds",
        json={"out_request_no": "R-1", "amount": 20_00},
        headers=shop.headers,
    )
    assert refund.status_code == 201
    assert refund.json()["source"] == "escrow"
    assert refund.json()["order"]["escrow_state"] == "refunded"
    assert world.wallet(buyer) == 50_00


def test_cancel_an_unpaid_order(world: World) -> None:
    shop = world.new_merchant()
    order_id = world.create_order(shop, "C-1", 9_00)
    cancelled = world.client.post(f"/v1/orders/{order_id}/cancel", headers=shop.headers)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "TRADE_CLOSED"
    assert cancelled.json()["close_reason"] == "cancelled"


def test_unpaid_order_closes_when_its_time_runs_out(world: World) -> None:
    shop = world.new_merchant()
    order_id = world.create_order(shop, "X-1", 9_00, timeout_seconds=900)
    world.clock.advance(901)
    report = world.client.post("/v1/admin/scheduler/run", headers=world.admin).json()
    assert report["closed_orders"] == 1
    order = world.order(shop, order_id)
    assert (order["status"], order["close_reason"]) == ("TRADE_CLOSED", "expired")


def test_payout_of_the_whole_balance(world: World) -> None:
    buyer, shop = world.new_user(), world.new_merchant(fee_rate_basis_points=0)
    world.top_up(buyer, 30_00)
    order_id = world.create_order(shop, "P-1", 30_00)
    world.client.post(f"/v1/orders/{order_id}/pay", headers=buyer.headers)
    payout = world.client.post("/v1/payouts", json={"request_no": "PO-1"}, headers=shop.headers)
    assert payout.status_code == 201, payout.text
    assert (payout.json()["amount"], payout.json()["status"]) == (30_00, "PENDING")
    assert world.balance(shop) == 0  # reserved while the bank works on it
    world.deliver_callbacks()
    payouts = world.client.get("/v1/payouts", headers=shop.headers).json()["data"]
    assert [p["status"] for p in payouts] == ["SUCCEEDED"]
    balance = world.client.get("/v1/balance?currency=CNY", headers=shop.headers).json()
    assert (balance["balance"], balance["reserved"]) == (0, 0)
    nothing = world.client.post("/v1/payouts", json={"request_no": "PO-2"}, headers=shop.headers)
    assert (nothing.status_code, nothing.json()["error"]["code"]) == (409, "nothing_to_pay_out")


def test_daily_settlement_pays_out_each_merchant_once(world: World) -> None:
    buyer, shop = world.new_user(), world.new_merchant(fee_rate_basis_points=0)
    world.top_up(buyer, 30_00)
    order_id = world.create_order(shop, "S-1", 12_00)
    world.client.post(f"/v1/orders/{order_id}/pay", headers=buyer.headers)
    first = world.client.post(
        "/v1/admin/settlements", json={"day": "2024-11-11"}, headers=world.admin
    )
    assert first.status_code == 200, first.text
    [payout] = first.json()["payouts"]
    assert (payout["kind"], payout["amount"], payout["status"]) == ("payout", 12_00, "PENDING")
    assert world.platform.bank.pending_instructions == 1

    second = world.client.post(
        "/v1/admin/settlements", json={"day": "2024-11-11"}, headers=world.admin
    )

    assert second.status_code == 200, second.text
    # The same payout again (same id, request number and channel reference), not a new one,
    # and no second instruction to the bank.
    assert second.json()["payouts"] == [payout]
    assert world.platform.bank.pending_instructions == 1
    payouts = world.client.get("/v1/payouts", headers=shop.headers).json()["data"]
    assert [(p["id"], p["request_no"]) for p in payouts] == [(payout["id"], payout["request_no"])]
    [answer] = world.deliver_callbacks()
    assert answer["status"] == "SUCCEEDED"
    assert world.balance(shop) == 0


def test_failed_withdrawal_returns_the_money(world: World) -> None:
    buyer = world.new_user()
    world.top_up(buyer, 100_00)
    withdrawal = world.client.post(
        "/v1/wallet/withdrawals",
        json={"request_no": "W-1", "amount": 40_13},  # the bank declines amounts ending in 13
        headers=buyer.headers,
    )
    assert withdrawal.status_code == 201, withdrawal.text
    assert world.wallet(buyer) == 100_00 - 40_13
    [answer] = world.deliver_callbacks()
    assert (answer["status"], answer["failure_reason"]) == ("FAILED", "declined by the bank")
    assert world.wallet(buyer) == 100_00
    ok = world.client.post(
        "/v1/wallet/withdrawals", json={"request_no": "W-2", "amount": 40_00}, headers=buyer.headers
    )
    assert ok.status_code == 201
    world.deliver_callbacks()
    assert world.wallet(buyer) == 60_00


def test_idempotency_key_replays_and_rejects_reuse(world: World) -> None:
    buyer, shop = world.new_user(), world.new_merchant()
    world.top_up(buyer, 100_00)
    headers = {**shop.headers, "Idempotency-Key": "create-order-1"}
    first = world.client.post(
        "/v1/orders", json={"out_trade_no": "I-1", "amount": 5_00}, headers=headers
    )
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    replay = world.client.post(
        "/v1/orders", json={"out_trade_no": "I-1", "amount": 5_00}, headers=headers
    )
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    before = world.snapshot()
    reused = world.client.post(
        "/v1/orders", json={"out_trade_no": "I-2", "amount": 5_00}, headers=headers
    )
    assert (reused.status_code, reused.json()["error"]["code"]) == (422, "idempotency_key_reused")
    assert world.snapshot() == before
    # Keys are per caller: another merchant's same key is a different key.
    other = world.new_merchant("other")
    mine = world.client.post(
        "/v1/orders",
        json={"out_trade_no": "I-1", "amount": 5_00},
        headers={**other.headers, "Idempotency-Key": "create-order-1"},
    )
    assert mine.status_code == 201
    # A payment with a key, retried: paid once, answered twice the same.
    pay_headers = {**buyer.headers, "Idempotency-Key": "pay-1"}
    order_id = first.json()["id"]
    paid = world.client.post(f"/v1/orders/{order_id}/pay", headers=pay_headers)
    again = world.client.post(f"/v1/orders/{order_id}/pay", headers=pay_headers)
    assert paid.status_code == again.status_code == 200
    assert again.json() == paid.json()
    assert world.wallet(buyer) == 95_00
    # A business rejection is kept too: the retry answers it again without running.
    refund_headers = {**shop.headers, "Idempotency-Key": "refund-too-much"}
    body = {"out_request_no": "R-1", "amount": 6_00}
    too_much = world.client.post(
        f"/v1/orders/{order_id}/refunds", json=body, headers=refund_headers
    )
    assert too_much.json()["error"]["code"] == "refund_exceeds_amount_paid"
    retried = world.client.post(f"/v1/orders/{order_id}/refunds", json=body, headers=refund_headers)
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert retried.json() == too_much.json()
    # A rejected form keeps nothing: the corrected request may use the key.
    bad = world.client.post(
        "/v1/orders",
        json={"out_trade_no": "I-3", "amount": "5"},
        headers={**shop.headers, "Idempotency-Key": "k3"},
    )
    assert bad.status_code == 422
    good = world.client.post(
        "/v1/orders",
        json={"out_trade_no": "I-3", "amount": 5},
        headers={**shop.headers, "Idempotency-Key": "k3"},
    )
    assert good.status_code == 201


def test_admin_key_is_shown_once_and_not_stored(world: World) -> None:
    headers = {**world.admin, "Idempotency-Key": "new-user-1"}
    first = world.client.post("/v1/admin/users", json={"name": "Han Meimei"}, headers=headers)
    replay = world.client.post("/v1/admin/users", json={"name": "Han Meimei"}, headers=headers)
    assert first.json()["api_key"].startswith("pk_user_")
    assert replay.json()["api_key"] is None
    assert replay.json()["user"] == first.json()["user"]
    me = world.client.get(
        "/v1/wallet", headers={"Authorization": f"Bearer {first.json()['api_key']}"}
    )
    assert me.status_code == 200


def test_orders_are_paginated_by_cursor(world: World) -> None:
    shop = world.new_merchant()
    ids = [world.create_order(shop, f"N-{n}", 1_00 + n) for n in range(5)]
    seen: list[int] = []
    after = 0
    while True:
        page = world.client.get(f"/v1/orders?after={after}&limit=2", headers=shop.headers).json()
        seen += [o["id"] for o in page["data"]]
        if page["next_cursor"] is None:
            break
        after = page["next_cursor"]
    assert seen == ids


def test_merchant_reads_its_settlement_report_over_http(world: World) -> None:
    buyer, shop = world.new_user(), world.new_merchant()
    world.top_up(buyer, 500_00)
    order_id = world.create_order(shop, "day-1", 100_00)
    paid = world.client.post(f"/v1/orders/{order_id}/pay", headers=buyer.headers)
    assert paid.status_code == 200, paid.text
    response = world.client.get("/v1/settlements/2024-11-11", headers=shop.headers)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["object"] == "settlement_report"
    assert (report["sales"], report["fees"], report["closing_balance"]) == (99_40, 60, 99_40)
    assert report["balanced"] is True
    bad_day = world.client.get("/v1/settlements/2024-13-40", headers=shop.headers)
    assert bad_day.status_code == 422
    assert bad_day.json()["error"]["code"] == "invalid_field"
    as_buyer = world.client.get("/v1/settlements/2024-11-11", headers=buyer.headers)
    assert as_buyer.status_code == 403


def test_settlement_days_beyond_the_ledgers_clock_are_invalid_not_errors(world: World) -> None:
    # Found by fuzzing the OpenAPI document: a day whose nanoseconds pass what a ledger
    # timestamp holds reached the ledger and answered 500.
    shop = world.new_merchant()
    last = world.client.get("/v1/settlements/2554-07-20", headers=shop.headers)
    assert last.status_code == 200, last.text
    assert last.json()["sales"] == 0
    before = world.snapshot()
    for day in ("2554-07-21", "9237-12-31", "1970-01-01"):
        report = world.client.get(f"/v1/settlements/{day}", headers=shop.headers)
        assert report.status_code == 422, (day, report.text)
        assert report.json()["error"]["code"] == "invalid_field"
        assert "from 1970-01-02 to 2554-07-20" in report.json()["error"]["message"]
        settle = world.client.post("/v1/admin/settlements", json={"day": day}, headers=world.admin)
        assert settle.status_code == 422, (day, settle.text)
        assert settle.json()["error"]["code"] == "invalid_field"
    assert world.snapshot() == before
