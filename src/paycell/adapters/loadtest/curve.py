"""The Singles'-Day arrival curve, the plan of requests it yields, and percentile math.

Over a run of `duration` seconds (fractions of it):

- warm-up   [0, 0.25): the base rate;
- spike     [0.25, 0.45): midnight, `peak_multiple` x the base rate;
- outage    [0.45, 0.60): the generator stops sending; requests keep *arriving* (at the
  after-spike rate, half-way between peak and base) and queue up;
- backlog   at 0.60: everything queued during the outage is released at once;
- decay     [0.60, 1.0): the rate falls back from the after-spike level towards the base.

Arrivals are deterministic (evenly spaced along the integral of the rate), so a run is
reproducible and its size is known in advance: orders are created before the clock starts.
"""

import math
import random
from dataclasses import dataclass
from typing import Final

WARMUP: Final = "warmup"
SPIKE: Final = "spike"
OUTAGE: Final = "outage"
BACKLOG: Final = "backlog"
DECAY: Final = "decay"
PHASES: Final = (WARMUP, SPIKE, OUTAGE, BACKLOG, DECAY)

SPIKE_START: Final = 0.25
OUTAGE_START: Final = 0.45
OUTAGE_END: Final = 0.60

PAY: Final = "pay"
QUERY: Final = "query"

STEP_SECONDS: Final = 0.0005


@dataclass(frozen=True)
class Curve:
    duration: float
    base_rate: float
    peak_multiple: float

    def __post_init__(self) -> None:
        if self.duration <= 0 or self.base_rate <= 0 or self.peak_multiple < 1:
            raise ValueError("duration and base rate must be positive, peak multiple >= 1")

    @property
    def spike_start(self) -> float:
        return SPIKE_START * self.duration

    @property
    def outage_start(self) -> float:
        return OUTAGE_START * self.duration

    @property
    def outage_end(self) -> float:
        return OUTAGE_END * self.duration

    @property
    def after_spike_rate(self) -> float:
        return self.base_rate * (1 + (self.peak_multiple - 1) / 2)

    def rate(self, t: float) -> float:
        """Arrivals per second at `t` seconds into the run (they arrive during the outage too,
        they are only not sent)."""
        if t < 0 or t >= self.duration:
            return 0.0
        if t < self.spike_start:
            return self.base_rate
        if t < self.outage_start:
            return self.base_rate * self.peak_multiple
        if t < self.outage_end:
            return self.after_spike_rate
        tau = (self.duration - self.outage_end) / 4
        excess = self.after_spike_rate - self.base_rate
        return self.base_rate + excess * math.exp(-(t - self.outage_end) / tau)

    def phase(self, arrival: float) -> str:
        """The phase of a request by its arrival time (outage arrivals are the backlog)."""
        if arrival < self.spike_start:
            return WARMUP
        if arrival < self.outage_start:
            return SPIKE
        if arrival < self.outage_end:
            return BACKLOG
        return DECAY

    def send_time(self, arrival: float) -> float:
        """When the generator sends a request that arrives at `arrival`: at once, except
        during the outage, whose arrivals all go out when it ends."""
        if self.outage_start <= arrival < self.outage_end:
            return self.outage_end
        return arrival

    def arrivals(self) -> list[float]:
        """Arrival times: the k-th request arrives when the integral of the rate reaches k."""
        times: list[float] = []
        accumulated = 0.0
        steps = int(self.duration / STEP_SECONDS)
        for step in range(steps):
            t = step * STEP_SECONDS
            accumulated += self.rate(t) * STEP_SECONDS
            while accumulated >= 1.0:
                accumulated -= 1.0
                times.append(t)
        return times

    def phase_windows(self) -> dict[str, tuple[float, float]]:
        return {
            WARMUP: (0.0, self.spike_start),
            SPIKE: (self.spike_start, self.outage_start),
            OUTAGE: (self.outage_start, self.outage_end),
            BACKLOG: (self.outage_end, self.outage_end),
            DECAY: (self.outage_end, self.duration),
        }


@dataclass(frozen=True)
class Planned:
    """One request of the plan. `order` indexes the pre-created orders (pay only); `buyer`
    indexes the buyers."""

    index: int
    kind: str
    arrival: float
    send_at: float
    buyer: int
    order: int


def plan(curve: Curve, buyers: int, query_share: float, seed: int) -> list[Planned]:
    """The run's requests in send order. Payments take orders 0, 1, 2, ...; buyers go round."""
    rng = random.Random(seed)
    planned: list[Planned] = []
    orders = 0
    for index, arrival in enumerate(curve.arrivals()):
        buyer = index % buyers
        if rng.random() < query_share:
            planned.append(Planned(index, QUERY, arrival, curve.send_time(arrival), buyer, -1))
        else:
            planned.append(Planned(index, PAY, arrival, curve.send_time(arrival), buyer, orders))
            orders += 1
    planned.sort(key=lambda p: (p.send_at, p.index))
    return planned


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile of `values` (0 < p <= 100): the smallest value with at
    least p% of the values at or below it; 0.0 for no values."""
    if not values:
        return 0.0
    if not 0 < p <= 100:
        raise ValueError("p must be in (0, 100]")
    ordered = sorted(values)
    return ordered[_rank(p, len(ordered)) - 1]


def _rank(p: float, n: int) -> int:
    # Rounded first: 99.9 / 100 * 1000 is 999.0000000000001 in binary floating point.
    return max(math.ceil(round(p / 100 * n, 9)), 1)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p99, p999 and max, sorted once."""
    if not values:
        return {"p50": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0, "count": 0}
    ordered = sorted(values)
    n = len(ordered)

    def at(p: float) -> float:
        return ordered[_rank(p, n) - 1]

    return {"p50": at(50), "p99": at(99), "p999": at(99.9), "max": ordered[-1], "count": n}
