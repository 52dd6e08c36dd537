"""What `paycell serve` does to the cyclic garbage collector before it serves."""

import gc

from paycell.adapters.http.serve import SERVING_GC_THRESHOLDS, _tune_garbage_collection


def test_serving_freezes_the_startup_heap_and_collects_the_young_generation_less_often() -> None:
    before = gc.get_threshold()
    try:
        _tune_garbage_collection()
        assert gc.get_freeze_count() > 0  # startup's objects are out of the collector's walk
        assert gc.get_threshold() == SERVING_GC_THRESHOLDS
        # Many times Python's 700, so connections in flight are not walked every few requests.
        assert SERVING_GC_THRESHOLDS[0] >= 20 * before[0]
        # The older generations follow close behind, so cyclic garbage that outlives a young
        # collection waits no more than about twice as long as at Python's defaults.
        young, middle, old = SERVING_GC_THRESHOLDS
        assert young * middle * old <= 3 * before[0] * before[1] * before[2]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
