"""From the run's records to the report: per-second buckets, latencies, codes, sheds, phases,
the generator's own lag; the live progress line; the optional PNG chart."""

import math
from collections import Counter, defaultdict
from typing import Any

from paycell.adapters.loadtest.curve import BACKLOG, DECAY, PAY, SPIKE, WARMUP, Curve, percentiles
from paycell.adapters.loadtest.driver import GAVE_UP, Record

SUSTAINED_WINDOW_SECONDS = 5


def _ms(values: list[float]) -> dict[str, float]:
    return {k: (round(v * 1000, 3) if k != "count" else v) for k, v in percentiles(values).items()}


def progress_line(second: int, records: list[Record], in_flight: int, phase: str) -> str:
    """One second of the run: sent, ok, errors by code, p99 (of the answers in that second)."""
    ok = sum(1 for r in records if r.status and 200 <= r.status < 300)
    errors = Counter(r.code for r in records if not (r.status and 200 <= r.status < 300))
    p99 = percentiles([r.done - r.started for r in records if r.code != GAVE_UP])["p99"] * 1000
    text = ", ".join(f"{code} {n}" for code, n in errors.most_common(4)) or "none"
    return (
        f"  t={second:>3}s {phase:<7} answered {len(records):>6}  ok {ok:>6}  "
        f"errors: {text}  p99 {p99:.1f} ms  queued+in flight {in_flight}"
    )


def phase_at(curve: Curve, t: float) -> str:
    if t < curve.spike_start:
        return WARMUP
    if t < curve.outage_start:
        return SPIKE
    if t < curve.outage_end:
        return "outage"
    return DECAY


def build_report(curve: Curve, records: list[Record], planned: int) -> dict[str, Any]:
    records = sorted(records, key=lambda r: r.seq)
    sent = [r for r in records if r.code != GAVE_UP]
    ok = [r for r in records if r.status and 200 <= r.status < 300]
    pays_ok = [r for r in ok if r.kind == PAY]
    last = max((r.done for r in records), default=0.0)
    seconds = max(math.ceil(max(last, curve.duration)), 1)
    buckets: list[dict[str, Any]] = []
    by_done: dict[int, list[Record]] = defaultdict(list)
    sent_in: Counter[int] = Counter()
    for r in records:
        by_done[min(int(r.done), seconds - 1)].append(r)
        if r.code != GAVE_UP:
            sent_in[min(int(r.started), seconds - 1)] += 1
    for second in range(seconds):
        answered = by_done.get(second, [])
        buckets.append(
            {
                "second": second,
                "phase": phase_at(curve, second + 0.5),
                "planned_rate": round(curve.rate(second + 0.5), 1),
                "sent": sent_in[second],
                "answered": len(answered),
                "ok": sum(1 for r in answered if r.status and 200 <= r.status < 300),
                "payments_ok": sum(
                    1 for r in answered if r.kind == PAY and r.status and 200 <= r.status < 300
                ),
                "errors": dict(
                    Counter(r.code for r in answered if not (r.status and 200 <= r.status < 300))
                ),
                "p99_ms": round(
                    percentiles([r.done - r.started for r in answered])["p99"] * 1000, 3
                ),
            }
        )
    paid_per_second = [b["payments_ok"] for b in buckets]
    window = min(SUSTAINED_WINDOW_SECONDS, len(paid_per_second))
    sustained = max(
        sum(paid_per_second[i : i + window]) / window
        for i in range(len(paid_per_second) - window + 1)
    )
    phases: dict[str, Any] = {}
    windows = curve.phase_windows()
    for name in (WARMUP, SPIKE, BACKLOG, DECAY):
        mine = [r for r in records if curve.phase(r.arrival) == name]
        mine_sent = [r for r in mine if r.code != GAVE_UP]
        good = [r for r in mine if r.status and 200 <= r.status < 300]
        start, end = windows["outage" if name == BACKLOG else name]
        entry: dict[str, Any] = {
            "arrivals_from_s": round(start, 3),
            "arrivals_to_s": round(end, 3),
            "requests": len(mine),
            "ok": len(good),
            "errors": len(mine) - len(good),
            "gave_up_unsent": len(mine) - len(mine_sent),
            "latency_ms": _ms([r.done - r.started for r in mine_sent]),
        }
        if name == BACKLOG:
            entry["released_at_s"] = round(curve.outage_end, 3)
            entry["drained_by_s"] = round(max((r.done for r in mine), default=0.0), 3)
            entry["waited_in_queue_ms"] = _ms([r.send_at - r.arrival for r in mine])
        else:
            span = max(end - start, 1e-9)
            entry["ok_per_second"] = round(len(good) / span, 1)
        phases[name] = entry
    shed = [r for r in records if r.status in (429, 503)]
    five_xx = [r for r in records if r.status >= 500]
    return {
        "planned_requests": planned,
        "answered": len([r for r in records if r.status]),
        "no_answer": len([r for r in records if not r.status]),
        "gave_up_unsent": len(records) - len(sent),
        "payments": {
            "planned": sum(1 for r in records if r.kind == PAY),
            "sent": sum(1 for r in sent if r.kind == PAY),
            "ok": len(pays_ok),
            "peak_per_second": max(paid_per_second),
            "sustained_per_second": round(sustained, 1),
            "sustained_window_seconds": window,
            "latency_ms": _ms([r.done - r.started for r in pays_ok]),
            "latency_from_schedule_ms": _ms([r.done - r.send_at for r in pays_ok]),
        },
        "latency_ms": _ms([r.done - r.started for r in sent]),
        "by_status": {str(k): v for k, v in sorted(Counter(r.status for r in records).items())},
        "by_code": dict(Counter(r.code for r in records).most_common()),
        "by_route": {
            route: dict(Counter(r.code for r in records if r.route == route))
            for route in sorted({r.route for r in records})
        },
        "shed": {"total": len(shed), "by_class": dict(Counter(r.shed_class for r in shed))},
        "server_errors": {
            "5xx": len(five_xx),
            "5xx_other_than_503": sum(1 for r in five_xx if r.status != 503),
        },
        "phases": phases,
        "generator": {
            "lag_ms": _ms([r.dispatched - r.send_at for r in records]),
            "queued_in_generator_ms": _ms([r.started - r.dispatched for r in records]),
        },
        "per_second": buckets,
    }


def write_chart(report: dict[str, Any], path: str) -> str:
    """A PNG of throughput and p99 over time, if matplotlib is importable; a note either way."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install matplotlib to get one)"
    buckets = report["per_second"]
    seconds = [b["second"] for b in buckets]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    top.plot(seconds, [b["planned_rate"] for b in buckets], label="planned arrivals/s")
    top.plot(seconds, [b["sent"] for b in buckets], label="sent/s")
    top.plot(seconds, [b["payments_ok"] for b in buckets], label="payments ok/s")
    top.plot(seconds, [sum(b["errors"].values()) for b in buckets], label="errors/s")
    top.legend()
    top.set_ylabel("per second")
    bottom.plot(seconds, [b["p99_ms"] for b in buckets], label="p99 ms")
    bottom.set_ylabel("p99 latency (ms)")
    bottom.set_xlabel("seconds")
    figure.suptitle("paycell loadtest")
    figure.savefig(path)
    plt.close(figure)
    return f"chart written to {path}"
