"""Rate limits shared by the workers of one server through a mapped table: every worker draws
from one bucket per API key, so N workers do not let a key through at N times its limit; the
answers are the in-memory limiter's."""

import itertools
import multiprocessing
import random
import sys
import threading
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from paycell.adapters.http.admission import (
    TABLE_BYTES,
    TABLE_SLOTS,
    RateLimit,
    RateLimiter,
    _key_hash,
    create_rate_table,
)

# Workers are spawned, not forked: each opens the table itself.
SPAWN = multiprocessing.get_context("spawn")

# A slow refill, so that a burst spent stays spent for the length of a test.
SLOW: RateLimit = RateLimit(rate_per_second=0.01, burst=2.0)
WORKER_BURST = 20_000


def frozen_clock() -> float:
    """No time passes: no bucket refills (a top-level function, so a child can unpickle it)."""
    return 1_000.0


class ScriptedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# (Quoted: Python 3.11's multiprocessing.queues.Queue takes no subscript at run time.)
def _drain_in_a_worker(table: str, key: str, start: Barrier, admitted: "Queue[int]") -> None:
    limiter = RateLimiter(RateLimit(1.0, WORKER_BURST), clock=frozen_clock, table=Path(table))
    start.wait(timeout=60)
    admitted.put(sum(limiter.take(key) == 0 for _ in range(WORKER_BURST)))
    limiter.close()


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "rate-limits"
    create_rate_table(path)
    return path


def test_two_workers_share_one_bucket_per_key(table: Path) -> None:
    start = SPAWN.Barrier(2)
    admitted: Queue[int] = SPAWN.Queue()
    workers = [
        SPAWN.Process(target=_drain_in_a_worker, args=(str(table), "sk_shop", start, admitted))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    counts = [admitted.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    # Each took as many times as the burst, so each alone would have been admitted every
    # time: together they got exactly one burst, not one each.
    assert sum(counts) == WORKER_BURST
    # And the bucket they left empty is the one this process sees.
    here = RateLimiter(RateLimit(1.0, WORKER_BURST), clock=frozen_clock, table=table)
    assert here.take("sk_shop") == 1
    assert here.take("sk_other") == 0
    here.close()


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Threads switch every microsecond or so: a race between them gets a chance to show."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_threads_of_one_worker_share_its_bucket_too(table: Path) -> None:
    limiter = RateLimiter(RateLimit(1.0, 5_000), clock=frozen_clock, table=table)
    admitted: list[int] = []
    start = threading.Barrier(4)

    def drain() -> None:
        start.wait(timeout=60)
        admitted.append(sum(limiter.take("sk_shop") == 0 for _ in range(2_500)))

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 5_000
    limiter.close()


def test_different_keys_do_not_share_a_bucket(table: Path) -> None:
    one = RateLimiter(SLOW, clock=frozen_clock, table=table)
    other = RateLimiter(SLOW, clock=frozen_clock, table=table)
    assert [one.take("sk_a") for _ in range(3)] == [0, 0, 100]
    assert [other.take("sk_b") for _ in range(3)] == [0, 0, 100]
    assert one.take("sk_b") == 100
    assert other.take("sk_a") == 100
    one.close()
    other.close()


def _keys_in_one_window(count: int) -> list[str]:
    """Keys whose slots all start at the same place in the table."""
    home = _key_hash("sk_0") % TABLE_SLOTS
    candidates = (f"sk_{n}" for n in itertools.count())
    return list(
        itertools.islice((k for k in candidates if _key_hash(k) % TABLE_SLOTS == home), count)
    )


def test_a_full_window_forgets_its_least_recently_used_key_and_answers_the_rest_right(
    table: Path,
) -> None:
    k0, k1, k2, k3, k4, k5, k6, k7, k8 = _keys_in_one_window(9)
    clock = ScriptedClock()
    shared = RateLimiter(SLOW, clock=clock, table=table)
    memory = RateLimiter(SLOW, clock=clock)

    def take(key: str, at: float) -> tuple[int, int]:
        clock.now = at
        return shared.take(key), memory.take(key)

    # Eight keys fill the window; each spends its burst of 2 (k0 first, at 0 s).
    for second, key in enumerate((k0, k1, k2, k3, k4, k5, k6, k7)):
        assert [take(key, second) for _ in range(3)] == [(0, 0), (0, 0), (100, 100)]
    # A ninth key takes over the least recently used slot (k0's) and starts from a full burst.
    assert [take(k8, 8.0) for _ in range(3)] == [(0, 0), (0, 0), (100, 100)]
    # The others are still remembered: the same answers as the in-memory limiter's.
    assert take(k1, 9.0) == (92, 92)
    assert take(k7, 9.0) == (98, 98)
    # k0 was forgotten: it starts again from a full burst (the in-memory limiter would refuse
    # it); it takes over the now least recently used slot, k2's, which is forgotten in turn.
    assert take(k0, 10.0) == (0, 90)
    assert take(k2, 11.0) == (0, 91)
    assert take(k3, 12.0) == (0, 91)  # k3 was the oldest left when k2 came back
    assert take(k5, 12.0) == (93, 93)
    shared.close()


@pytest.mark.parametrize(
    "limit",
    [RateLimit(0.05, 3.0), RateLimit(0.3, 1.0), RateLimit(2.5, 3.0), RateLimit(40.0, 2.0)],
    ids=str,
)
def test_the_answer_to_wait_is_the_in_memory_limiters_for_the_same_history(
    table: Path, limit: RateLimit
) -> None:
    clock = ScriptedClock()
    shared = RateLimiter(limit, clock=clock, table=table)
    memory = RateLimiter(limit, clock=clock)
    script = random.Random(20_241_111)
    shared_answers: list[int] = []
    memory_answers: list[int] = []
    for _ in range(3_000):
        # Mostly bursts, now and then a pause of a fraction of a token's time or of two.
        pause = script.choice((0.0, 0.0, 0.0, 0.0, 0.0, 0.05, 0.2, 2.0))
        clock.now += pause / limit.rate_per_second
        key = f"sk_{script.randrange(4)}"
        shared_answers.append(shared.take(key))
        memory_answers.append(memory.take(key))
    assert shared_answers == memory_answers
    # The script is not trivial: it admits some requests and refuses others.
    assert 0 in memory_answers
    assert any(memory_answers)
    shared.close()


def test_create_rate_table_makes_an_empty_table_of_the_documented_size(table: Path) -> None:
    assert TABLE_SLOTS == 16_384
    assert TABLE_BYTES == 393_216 == table.stat().st_size
    assert table.read_bytes() == bytes(TABLE_BYTES)


def test_creating_the_table_again_forgets_every_bucket(table: Path) -> None:
    limiter = RateLimiter(SLOW, clock=frozen_clock, table=table)
    assert [limiter.take("sk_a") for _ in range(3)] == [0, 0, 100]
    limiter.close()
    create_rate_table(table)
    again = RateLimiter(SLOW, clock=frozen_clock, table=table)
    assert again.take("sk_a") == 0
    again.close()


def test_a_missing_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no rate table"):
        RateLimiter(table=tmp_path / "rate-limits")


@pytest.mark.parametrize("size", [0, 24, TABLE_BYTES - 1, TABLE_BYTES + 24])
def test_a_table_of_the_wrong_size_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / "rate-limits"
    path.write_bytes(bytes(size))
    with pytest.raises(ValueError, match=f"not a rate table: {size} bytes, expected 393216"):
        RateLimiter(table=path)


def test_the_in_memory_limiter_is_as_before() -> None:
    clock = ScriptedClock()
    limiter = RateLimiter(RateLimit(10.0, 2.0), clock=clock)
    assert [limiter.take("k") for _ in range(3)] == [0, 0, 1]
    clock.now += 0.1
    assert limiter.take("k") == 0
    assert limiter.take("k") == 1
    assert limiter.take("other") == 0
    limiter.close()  # nothing to release: the limiter goes on working
    assert limiter.take("other") == 0
