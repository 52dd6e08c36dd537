"""GET /metrics (Prometheus text format) and the structured request log with a request id."""

import json
import logging

import pytest

from paycell.adapters.http.logging_setup import ACCESS_LOGGER, JsonFormatter
from tests.e2e.conftest import World
from tests.prometheus import prometheus_samples


def test_metrics_in_prometheus_format(world: World) -> None:
    shop = world.new_merchant()
    buyer = world.new_user()
    world.top_up(buyer, 50_00)
    order = world.create_order(shop, "M-1", 10_00)
    assert world.client.post(f"/v1/orders/{order}/pay", headers=buyer.headers).status_code == 200
    world.order(shop, order)
    world.client.get("/v1/orders/999999", headers=shop.headers)
    world.client.put("/v1/admin/switches", json={"reports": "off"}, headers=world.admin)
    world.client.get("/v1/orders", headers=shop.headers)
    assert world.client.get("/metrics").status_code == 401
    response = world.client.get("/metrics", headers=world.admin)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    samples = prometheus_samples(text)
    route = 'route="/v1/orders/{order_id}"'
    assert samples[f'paycell_http_requests_total{{{route},method="GET",status="200"}}'] == 1
    assert samples[f'paycell_http_requests_total{{{route},method="GET",status="404"}}'] == 1
    pay = 'route="/v1/orders/{order_id}/pay",method="POST"'
    assert samples[f"paycell_http_request_duration_seconds_count{{{pay}}}"] == 1
    assert samples[f'paycell_http_request_duration_seconds_bucket{{{pay},le="+Inf"}}'] == 1
    assert samples['paycell_admission_in_flight{class="payments"}'] == 0
    assert samples['paycell_admission_queue_depth{class="reports"}'] == 0
    assert samples['paycell_admission_in_flight_limit{class="payments"}'] == 32
    assert samples['paycell_switch_on{switch="reports"}'] == 0
    assert samples['paycell_switch_on{switch="webhooks"}'] == 1
    assert samples['paycell_switch_state{switch="risk_mode",value="full"}'] == 1
    assert samples['paycell_degraded_total{switch="reports"}'] == 1
    channel = 'currency="CNY",account="channel_settlement"'
    assert samples[f"paycell_ledger_platform_debits_posted{{{channel}}}"] == 50_00
    fees = 'currency="CNY",account="fee_revenue"'
    assert samples[f"paycell_ledger_platform_credits_posted{{{fees}}}"] == 6
    assert samples["paycell_process_uptime_seconds"] >= 0
    for line in text.splitlines():  # every family is declared
        if line.startswith("# TYPE"):
            assert line.split()[3] in ("counter", "gauge", "histogram")


def test_request_id_and_one_json_log_line_per_request(
    sqlite_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world = sqlite_world
    shop = world.new_merchant()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        given = world.client.get("/v1/balance", headers={**shop.headers, "X-Request-Id": "abc-123"})
        made = world.client.get("/v1/balance", headers={**shop.headers, "X-Request-Id": "bad id!"})
    assert given.headers["X-Request-Id"] == "abc-123"
    assert len(made.headers["X-Request-Id"]) == 32
    records = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(records) == 2
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == "abc-123"
    assert line["route"] == "/v1/balance"
    assert line["status"] == 200
    assert line["class"] == "queries"
    assert line["duration_ms"] >= 0
    assert (
        json.loads(JsonFormatter().format(records[1]))["request_id"] == made.headers["X-Request-Id"]
    )
