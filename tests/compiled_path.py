"""Running the core with and without its compiled fast path (paycell.core.compiled)."""

from collections.abc import Iterator
from contextlib import contextmanager

from paycell.core import compiled

# Whether this run has the compiled path on (PAYCELL_PURE_PYTHON=1 runs the suite without).
COMPILED = compiled.enabled()
# The settings a comparison runs under: both where the compiled path is on, else Python alone.
WITH_COMPILED = [True, False] if COMPILED else [False]
WITH_COMPILED_IDS = ["compiled", "python"][-len(WITH_COMPILED) :]


@contextmanager
def use_compiled(enabled: bool) -> Iterator[None]:
    saved = compiled.enabled()
    compiled.switch(enabled)
    try:
        yield
    finally:
        compiled.switch(saved)
