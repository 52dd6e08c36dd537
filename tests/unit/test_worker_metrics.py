"""GET /metrics with several workers: a scrape reaches one worker, which sums its own figures
with the snapshots the others publish to files, and a restarted worker counts on from its
predecessor's last snapshot."""

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from paycell.adapters.http.admission import (
    PAYMENTS,
    REPORTS,
    Admission,
    AdmissionConfig,
    ClassLimits,
    ShedError,
)
from paycell.adapters.http.metrics import Metrics, MetricsBoard
from paycell.adapters.http.switches import Switches
from tests.prometheus import prometheus_samples

STARTED = 1_700_000_000.0
PAY = "/v1/orders/{order_id}/pay"
PAY_LABELS = f'route="{PAY}",method="POST"'
# One slot and one place in the queue per class, so that a few requests fill a class.
LIMITS = ClassLimits(in_flight=1, queue_depth=1, max_wait_seconds=5.0, retry_after_seconds=1)
CONFIG = AdmissionConfig((LIMITS, LIMITS, LIMITS, LIMITS), total_in_flight=4)

Crowd = Callable[[], Admission]


@pytest.fixture
def crowd() -> Iterator[Crowd]:
    """Makes admissions with a payment and a report in flight, a payment waiting, and a
    payment and a report shed; the waiting payments are cancelled at the end."""
    loop = asyncio.new_event_loop()
    waiting: list[asyncio.Task[None]] = []

    def crowded() -> Admission:
        admission = Admission(CONFIG)

        async def arrive() -> None:
            await admission.acquire(PAYMENTS)
            await admission.acquire(REPORTS)
            waiting.append(asyncio.create_task(admission.acquire(PAYMENTS)))
            await asyncio.sleep(0)  # the payment takes its place in the queue
            for shed in (PAYMENTS, REPORTS):  # queue_full, then priority
                with pytest.raises(ShedError):
                    await admission.acquire(shed)

        loop.run_until_complete(arrive())
        return admission

    yield crowded
    for task in waiting:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*waiting, return_exceptions=True))
    loop.close()


def _busy_metrics() -> Metrics:
    metrics = Metrics(clock=lambda: STARTED)
    for status, seconds in ((200, 0.0004), (200, 0.03), (409, 12.0)):
        metrics.observe(PAY, "POST", status, seconds)
    metrics.rate_limited()
    metrics.degraded("reports")
    metrics.bulk_items("SUCCESS", 3)
    metrics.bulk_items("FAILED")
    metrics.group_started(3)
    metrics.group_started(1)
    metrics.group_fell_back()
    return metrics


def test_a_scrape_of_one_worker_counts_every_workers_requests(crowd: Crowd) -> None:
    quiet = Metrics()
    quiet.observe("/v1/orders", "GET", 200, 0.2)
    peers = [_busy_metrics().snapshot(crowd(), 2), quiet.snapshot(Admission(CONFIG), None)]
    text = _busy_metrics().render(crowd(), Switches(), group_queue_depth=lambda: 5, peers=peers)
    samples = prometheus_samples(text)
    assert samples["paycell_workers"] == 3
    assert samples[f'paycell_http_requests_total{{{PAY_LABELS},status="200"}}'] == 4
    assert samples[f'paycell_http_requests_total{{{PAY_LABELS},status="409"}}'] == 2
    assert samples['paycell_http_requests_total{route="/v1/orders",method="GET",status="200"}'] == 1
    histogram = "paycell_http_request_duration_seconds"
    assert samples[f'{histogram}_bucket{{{PAY_LABELS},le="0.001"}}'] == 2
    assert samples[f'{histogram}_bucket{{{PAY_LABELS},le="0.05"}}'] == 4
    assert samples[f'{histogram}_bucket{{{PAY_LABELS},le="10"}}'] == 4
    assert samples[f'{histogram}_bucket{{{PAY_LABELS},le="+Inf"}}'] == 6
    assert samples[f"{histogram}_count{{{PAY_LABELS}}}"] == 6
    assert samples[f"{histogram}_sum{{{PAY_LABELS}}}"] == pytest.approx(2 * 12.0304)
    # Admission: gauges and sheds are totals, the limits each worker's own.
    assert samples['paycell_admission_in_flight{class="payments"}'] == 2
    assert samples['paycell_admission_in_flight{class="reports"}'] == 2
    assert samples['paycell_admission_queue_depth{class="payments"}'] == 2
    assert samples['paycell_admission_shed_total{class="payments",reason="queue_full"}'] == 2
    assert samples['paycell_admission_shed_total{class="reports",reason="priority"}'] == 2
    assert samples['paycell_admission_in_flight_limit{class="payments"}'] == 1
    assert samples['paycell_admission_queue_limit{class="payments"}'] == 1
    limit = "# HELP paycell_admission_queue_limit queue depth limit per priority class, per worker"
    assert limit in text.splitlines()
    assert samples["paycell_rate_limited_total"] == 2
    assert samples['paycell_degraded_total{switch="reports"}'] == 2
    assert samples['paycell_bulk_items_total{code="SUCCESS"}'] == 6
    # Group commit: the sizes of every worker's groups and every worker's waiting payments.
    assert samples['paycell_group_commit_size_bucket{le="1"}'] == 2
    assert samples['paycell_group_commit_size_bucket{le="4"}'] == 4
    assert samples["paycell_group_commit_size_sum"] == 8
    assert samples["paycell_group_commit_groups_total"] == 4
    assert samples["paycell_group_commit_fallbacks_total"] == 2
    assert samples["paycell_group_commit_queue_depth"] == 7


def test_a_snapshot_crosses_the_board_and_json_unchanged(tmp_path: Path, crowd: Crowd) -> None:
    snapshot = _busy_metrics().snapshot(crowd(), 5)
    MetricsBoard(tmp_path, 1).publish(Metrics().snapshot(Admission(CONFIG), None))
    MetricsBoard(tmp_path, 1).publish(snapshot)  # replaces the first
    assert MetricsBoard(tmp_path, 0).peers() == [snapshot]
    assert [path.name for path in tmp_path.iterdir()] == ["metrics-worker-1.json"]
    # Read straight from JSON (lists where there were tuples), it sums the same.
    through_json = json.loads(json.dumps(snapshot))
    live = Metrics(clock=lambda: STARTED)
    assert live.render(Admission(CONFIG), Switches(), peers=[through_json]) == live.render(
        Admission(CONFIG), Switches(), peers=[snapshot]
    )


def test_peers_skip_broken_files_and_the_workers_own(
    tmp_path: Path, crowd: Crowd, caplog: pytest.LogCaptureFixture
) -> None:
    snapshot = _busy_metrics().snapshot(crowd(), None)
    for worker in (0, 1):
        MetricsBoard(tmp_path, worker).publish(snapshot)
    text = (tmp_path / "metrics-worker-1.json").read_text()
    (tmp_path / "metrics-worker-2.json").write_text(text[: len(text) // 2])
    # A publication cut short: the temporary file never took the snapshot's name.
    (tmp_path / "metrics-worker-3.json.4242.tmp").write_text(text[: len(text) // 2])
    # A worker of a version with other buckets.
    (tmp_path / "metrics-worker-4.json").write_text(json.dumps({**snapshot, "group_sizes": [1]}))
    (tmp_path / "metrics-worker-5.json").write_text('{"requests": "all of them"}')
    (tmp_path / "metrics-worker-6.json").mkdir()
    with caplog.at_level(logging.DEBUG, logger="paycell.adapters.http.metrics"):
        assert MetricsBoard(tmp_path, 0).peers() == [snapshot]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for skipped in (2, 4, 5, 6):
        assert f"metrics-worker-{skipped}.json" in logged
    assert MetricsBoard(tmp_path / "not yet", 0).peers() == []


def test_a_restarted_worker_counts_on_from_its_predecessors_snapshot(
    tmp_path: Path, crowd: Crowd
) -> None:
    assert MetricsBoard(tmp_path, 2).last_published() is None
    MetricsBoard(tmp_path, 2).publish(_busy_metrics().snapshot(crowd(), 5))

    last = MetricsBoard(tmp_path, 2).last_published()
    assert last is not None
    restarted = Metrics()
    restarted.resume(last)
    restarted.observe(PAY, "POST", 200, 0.002)
    restarted.group_started(2)
    samples = prometheus_samples(restarted.render(crowd(), Switches(), group_queue_depth=lambda: 0))
    assert samples["paycell_workers"] == 1
    assert samples[f'paycell_http_requests_total{{{PAY_LABELS},status="200"}}'] == 3
    assert samples[f'paycell_http_requests_total{{{PAY_LABELS},status="409"}}'] == 1
    histogram = "paycell_http_request_duration_seconds"
    assert samples[f'{histogram}_bucket{{{PAY_LABELS},le="0.0025"}}'] == 2
    assert samples[f"{histogram}_count{{{PAY_LABELS}}}"] == 4
    assert samples[f"{histogram}_sum{{{PAY_LABELS}}}"] == pytest.approx(12.0324)
    assert samples["paycell_rate_limited_total"] == 1
    assert samples['paycell_bulk_items_total{code="SUCCESS"}'] == 3
    assert samples["paycell_group_commit_groups_total"] == 3
    assert samples["paycell_group_commit_size_sum"] == 6
    assert samples["paycell_group_commit_fallbacks_total"] == 1
    assert restarted.groups() == (3, 6)
    # Sheds are counted by Admission, whose counts start again with the process.
    assert samples['paycell_admission_shed_total{class="payments",reason="queue_full"}'] == 2
    # Gauges are the restarted worker's own: its predecessor's requests are gone with it.
    assert samples['paycell_admission_in_flight{class="payments"}'] == 1
    assert samples['paycell_admission_queue_depth{class="payments"}'] == 1
    assert samples["paycell_group_commit_queue_depth"] == 0
    # What it publishes in turn carries the predecessor's counters to its own successor.
    assert restarted.snapshot(Admission(CONFIG), None)["shed"] == last["shed"]


# The rendering of _busy_metrics() with one crowd() before several workers existed, without
# the switch families (they follow switches.py's list of switches).
BEFORE = """\
# HELP paycell_http_requests_total HTTP requests by route and status
# TYPE paycell_http_requests_total counter
paycell_http_requests_total{route="/v1/orders/{order_id}/pay",method="POST",status="200"} 2
paycell_http_requests_total{route="/v1/orders/{order_id}/pay",method="POST",status="409"} 1
# HELP paycell_http_request_duration_seconds request latency by route, from the first byte in to the response
# TYPE paycell_http_request_duration_seconds histogram
paycell_http_request_duration_seconds_bucket{route="/v1/orders/{order_id}/pay",method="POST",le="0.001"} 1
paycell_http_request_duration_seconds_bucket{route="/v1/orders/{order_id}/pay",method="POST",le="0.0025"} 1
paycell_http_request_duration_seconds_bucket{route="/v1/orders/{order_id}/pay",method="POST",le="0.005"} 1
paycell_http_request_duration_seconds_bucket{route="/v1/orders/{order_id}/pay",method="POST",le="0.01"} 1
paycell_http_request_duration_seconds_bucket{route="/v1/orders/{order_id}/pay",method="POST",le="0.025"} 1
paycell_http_request_duration_seconds_bucket{route="/v1/orders/{order_id}/pay",method="POST",le="0.05"} 2
paycell_http_request_duration_seconds_bucket{route="/v1/orders/{order_id}/pay",method="POST",le="0.1"} 2
paycell_http_request_duration_seconds_bucket{route="/v1/orders/{order_id}/pay",method="POST",le="0.25"} 2
paycell_http_request_duration_seconds_bucket{route="/v1/orders/{order_id}/pay",method="POST",le="0.5"} 2
paycell_http_request_duration_seconds_bucket{route="/v1/orders/{order_id}/pay",method="POST",le="1"} 2
paycell_http_request_duration_seconds_bucket{route="/v1/orders/{order_id}/pay",method="POST",le="2.5"} 2
paycell_http_request_duration_seconds_bucket{route="/v1/orders/{order_id}/pay",method="POST",le="5"} 2
paycell_http_request_duration_seconds_bucket{route="/v1/orders/{order_id}/pay",method="POST",le="10"} 2
paycell_http_request_duration_seconds_bucket{route="/v1/orders/{order_id}/pay",method="POST",le="+Inf"} 3
paycell_http_request_duration_seconds_sum{route="/v1/orders/{order_id}/pay",method="POST"} 12.0304
paycell_http_request_duration_seconds_count{route="/v1/orders/{order_id}/pay",method="POST"} 3
# HELP paycell_admission_in_flight admitted requests per priority class
# TYPE paycell_admission_in_flight gauge
paycell_admission_in_flight{class="payments"} 1
paycell_admission_in_flight{class="queries"} 0
paycell_admission_in_flight{class="reports"} 1
paycell_admission_in_flight{class="console"} 0
# HELP paycell_admission_queue_depth requests waiting per priority class
# TYPE paycell_admission_queue_depth gauge
paycell_admission_queue_depth{class="payments"} 1
paycell_admission_queue_depth{class="queries"} 0
paycell_admission_queue_depth{class="reports"} 0
paycell_admission_queue_depth{class="console"} 0
# HELP paycell_admission_in_flight_limit in-flight limit per priority class
# TYPE paycell_admission_in_flight_limit gauge
paycell_admission_in_flight_limit{class="payments"} 1
paycell_admission_in_flight_limit{class="queries"} 1
paycell_admission_in_flight_limit{class="reports"} 1
paycell_admission_in_flight_limit{class="console"} 1
# HELP paycell_admission_queue_limit queue depth limit per priority class
# TYPE paycell_admission_queue_limit gauge
paycell_admission_queue_limit{class="payments"} 1
paycell_admission_queue_limit{class="queries"} 1
paycell_admission_queue_limit{class="reports"} 1
paycell_admission_queue_limit{class="console"} 1
# HELP paycell_admission_shed_total requests shed (503) by class, reason
# TYPE paycell_admission_shed_total counter
paycell_admission_shed_total{class="payments",reason="queue_full"} 1
paycell_admission_shed_total{class="reports",reason="priority"} 1
# HELP paycell_rate_limited_total requests refused over a key's rate (429)
# TYPE paycell_rate_limited_total counter
paycell_rate_limited_total 1
# HELP paycell_degraded_total requests refused by a switch (503)
# TYPE paycell_degraded_total counter
paycell_degraded_total{switch="reports"} 1
# HELP paycell_bulk_items_total bulk payment items by result code
# TYPE paycell_bulk_items_total counter
paycell_bulk_items_total{code="FAILED"} 1
paycell_bulk_items_total{code="SUCCESS"} 3
# HELP paycell_group_commit_size single payments per group commit (one unit of work, one commit)
# TYPE paycell_group_commit_size histogram
paycell_group_commit_size_bucket{le="1"} 1
paycell_group_commit_size_bucket{le="2"} 1
paycell_group_commit_size_bucket{le="4"} 2
paycell_group_commit_size_bucket{le="8"} 2
paycell_group_commit_size_bucket{le="16"} 2
paycell_group_commit_size_bucket{le="32"} 2
paycell_group_commit_size_bucket{le="64"} 2
paycell_group_commit_size_bucket{le="128"} 2
paycell_group_commit_size_bucket{le="256"} 2
paycell_group_commit_size_bucket{le="512"} 2
paycell_group_commit_size_bucket{le="1000"} 2
paycell_group_commit_size_bucket{le="+Inf"} 2
paycell_group_commit_size_sum 4
paycell_group_commit_size_count 2
# HELP paycell_group_commit_groups_total groups of single payments run
# TYPE paycell_group_commit_groups_total counter
paycell_group_commit_groups_total 2
# HELP paycell_group_commit_fallbacks_total groups that failed unexpectedly and ran their requests one by one
# TYPE paycell_group_commit_fallbacks_total counter
paycell_group_commit_fallbacks_total 1
# HELP paycell_group_commit_queue_depth payments waiting for a group
# TYPE paycell_group_commit_queue_depth gauge
paycell_group_commit_queue_depth 5
# HELP paycell_process_start_time_seconds start time, Unix seconds
# TYPE paycell_process_start_time_seconds gauge
paycell_process_start_time_seconds 1700000000
# HELP paycell_process_uptime_seconds seconds since the server started
# TYPE paycell_process_uptime_seconds gauge
paycell_process_uptime_seconds 0
"""  # noqa: E501


def test_one_worker_renders_as_before_but_for_the_workers_gauge(crowd: Crowd) -> None:
    text = _busy_metrics().render(crowd(), Switches(), group_queue_depth=lambda: 5)
    expected = BEFORE.replace(
        " limit per priority class\n", " limit per priority class, per worker\n"
    )
    expected = expected.replace(
        "# HELP paycell_process_start_time_seconds",
        "# HELP paycell_workers server workers whose figures are summed here (this one and the"
        " others' snapshots)\n# TYPE paycell_workers gauge\npaycell_workers 1\n"
        "# HELP paycell_process_start_time_seconds",
    )
    assert (
        "".join(line for line in text.splitlines(keepends=True) if "paycell_switch_" not in line)
        == expected
    )
