"""`paycell loadtest`: the curve and percentile math, and a short real run with
--start-server on SQLite (the phases happen, the report is well-formed, the books hold,
verify passes, exit 0)."""

import json
import math
from pathlib import Path

import pytest

from paycell.adapters.cli.main import main
from paycell.adapters.loadtest.curve import (
    BACKLOG,
    DECAY,
    PAY,
    QUERY,
    SPIKE,
    WARMUP,
    Curve,
    percentile,
    percentiles,
    plan,
)


def test_the_curve_warms_up_spikes_and_decays_to_the_base_rate() -> None:
    curve = Curve(duration=100, base_rate=10, peak_multiple=6)
    assert curve.rate(0) == 10
    assert curve.rate(24.9) == 10
    assert curve.rate(25) == 60
    assert curve.rate(44.9) == 60
    assert curve.rate(50) == curve.after_spike_rate == 35  # arrivals go on during the outage
    assert curve.rate(60) == pytest.approx(35)
    rates = [curve.rate(t) for t in range(60, 100)]
    assert rates == sorted(rates, reverse=True)
    assert 10 < curve.rate(99.9) < 12
    assert curve.rate(100) == 0
    assert curve.rate(-1) == 0


def test_outage_arrivals_are_held_and_released_together_as_the_backlog() -> None:
    curve = Curve(duration=20, base_rate=50, peak_multiple=4)
    assert curve.send_time(3.0) == 3.0
    assert curve.send_time(9.0) == curve.send_time(11.9) == curve.outage_end == 12.0
    assert curve.send_time(12.0) == 12.0
    assert [curve.phase(t) for t in (1, 6, 10, 15)] == [WARMUP, SPIKE, BACKLOG, DECAY]


def test_arrivals_follow_the_integral_of_the_rate() -> None:
    curve = Curve(duration=10, base_rate=40, peak_multiple=5)
    arrivals = curve.arrivals()
    expected = sum(curve.rate(i * 0.001) * 0.001 for i in range(10_000))
    assert abs(len(arrivals) - expected) <= 2
    assert arrivals == sorted(arrivals)
    in_spike = [t for t in arrivals if curve.spike_start <= t < curve.outage_start]
    assert len(in_spike) == pytest.approx(40 * 5 * 2, abs=2)


def test_the_plan_numbers_payments_in_order_and_sends_in_time_order() -> None:
    curve = Curve(duration=10, base_rate=30, peak_multiple=3)
    planned = plan(curve, buyers=7, query_share=0.2, seed=1)
    pays = sorted((p for p in planned if p.kind == PAY), key=lambda p: p.order)
    assert [p.order for p in pays] == list(range(len(pays)))
    assert 0 < sum(1 for p in planned if p.kind == QUERY) < len(planned) * 0.35
    assert [p.send_at for p in planned] == sorted(p.send_at for p in planned)
    assert {p.buyer for p in planned} == set(range(7))
    assert plan(curve, 7, 0.2, 1) == planned  # reproducible


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 99.9) == 100
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99.9) == 7
    assert percentile([], 50) == 0
    thousand = [float(v) for v in range(1000, 0, -1)]
    assert percentiles(thousand) == {
        "p50": 500,
        "p99": 990,
        "p999": 999,
        "max": 1000,
        "count": 1000,
    }
    with pytest.raises(ValueError, match="p must be"):
        percentile(values, 0)
    assert math.isclose(percentile([0.5, 0.1, 0.9], 50), 0.5)


def test_a_short_run_with_its_own_server_keeps_the_books(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "report.json"
    database = tmp_path / "loadtest.db"
    code = main(
        ["loadtest", "--start-server", "--database", str(database),
         "--duration-seconds", "4", "--base-rate", "15", "--peak-multiple", "3",
         "--buyers", "6", "--merchants", "3", "--concurrency", "16",
         "--report-json", str(report_path)]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "result: ok" in out
    assert "t=  0s warmup" in err  # live progress on stderr
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    phases = report["phases"]
    assert list(phases) == [WARMUP, SPIKE, BACKLOG, DECAY]
    for name in phases:
        assert phases[name]["requests"] > 0, name
    # The spike is a multiple of the warm-up; the backlog waited for the outage to end.
    assert phases[SPIKE]["requests"] > 2 * phases[WARMUP]["requests"]
    assert phases[BACKLOG]["released_at_s"] == pytest.approx(2.4)
    assert phases[BACKLOG]["waited_in_queue_ms"]["max"] > 300
    assert report["planned_requests"] == sum(p["requests"] for p in phases.values())
    # Structure only, never speed: the figures are counted from the run's own records.
    payments = report["payments"]
    assert payments["sent"] > 0
    assert payments["ok"] > 0
    paid_per_second = [b["payments_ok"] for b in report["per_second"]]
    assert sum(paid_per_second) == payments["ok"]
    assert payments["peak_per_second"] == max(paid_per_second)
    assert 0 < payments["sustained_per_second"] <= payments["peak_per_second"]
    latency = payments["latency_ms"]
    assert set(latency) == {"p50", "p99", "p999", "max", "count"}
    assert latency["count"] == payments["ok"]
    assert 0 <= latency["p50"] <= latency["p99"] <= latency["p999"] <= latency["max"]
    assert sum(report["by_status"].values()) == report["planned_requests"]
    assert sum(b["answered"] for b in report["per_second"]) == report["planned_requests"]
    assert set(report["shed"]) == {"total", "by_class"}
    assert report["server_errors"]["5xx_other_than_503"] == 0
    generator = report["generator"]
    assert generator["lag_ms"]["count"] == report["planned_requests"]
    assert generator["queued_in_generator_ms"]["count"] == report["planned_requests"]
    books = report["books"]
    assert books["ok"] is True
    assert books["problem_count"] == 0
    assert books["acknowledged_in_books"] == books["acknowledged_payments"] == payments["ok"]
    assert books["balances_checked"] == 6 + 3
    assert report["verify"]["run"] is True
    assert report["verify"]["passed"] is True
    assert report["config"]["database"] == str(database)


def test_bad_arguments_are_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["loadtest", "--start-server", "--peak-multiple", "0.5"]) == 2
    assert "peak-multiple" in capsys.readouterr().err
    assert main(["loadtest", "--url", "http://127.0.0.1:9", "--admin-key", ""]) == 2
    assert main(["loadtest"]) == 2  # neither --url nor --start-server
