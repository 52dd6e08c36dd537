"""Writers of one SQLite file take turns through a lock file instead of SQLite's busy handler.

SQLite lets one writer in at a time. A process that finds the write lock taken waits in
SQLite's busy handler, which sleeps between tries in steps that grow to 100 ms. With two
`paycell serve` workers taking turns many times a second, a waiting worker slept through most
of the other's turn: two workers served single payments about as fast as one, with p99 above
200 ms (docs/performance.md).

So before `BEGIN IMMEDIATE`, a writer first takes an exclusive `flock` on `<database>-lock`
beside the file. Waiting for it is cheap: a failed try costs one system call, and the sleeps
between tries never grow past a millisecond, so the next writer starts within about a
millisecond of the last COMMIT. The kernel releases the lock when its process dies (SIGKILL
included), so a crashed writer never blocks the others.

The lock file only orders the writers; SQLite's own lock still guards the data. A process that
does not take the queue (the sqlite3 shell, another program) is still serialized by SQLite,
and a writer that has waited `QUEUE_WAIT_SECONDS_MAX` for its turn stops queueing and goes on
to `BEGIN IMMEDIATE`, which then waits SQLite's busy timeout as before. No wait is unbounded.
"""

import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

# As long as SQLite's busy timeout: the queue never makes a writer give up sooner.
QUEUE_WAIT_SECONDS_MAX: Final = 60.0
# Sleeps between tries double from the first to the last: short turns (a batch of 100 commits
# in a few ms) are taken at once, and a long wait costs at most a thousand tries a second.
_FIRST_SLEEP_SECONDS: Final = 0.000_05
_LAST_SLEEP_SECONDS: Final = 0.001
LOCK_SUFFIX: Final = "-lock"

_log = logging.getLogger(__name__)


class WriterQueue:
    """The turn of one connection's writes. One per connection: flock locks belong to an open
    file, so two connections of one process queue against each other as two processes do."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + LOCK_SUFFIX)
        self._descriptor: int | None = None
        try:
            self._descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as problem:
            # A directory we may read but not write: writes fail in SQLite anyway, with its
            # clearer message; reads never queue.
            _log.debug("no writer queue at %s (%s); SQLite's lock alone", self.path, problem)

    @contextmanager
    def turn(self, wait_seconds_max: float = QUEUE_WAIT_SECONDS_MAX) -> Iterator[bool]:
        """Hold the queue's lock for the block; yields whether it was taken (False: the wait
        ran out, or there is no lock file, and only SQLite's lock serializes)."""
        descriptor = self._descriptor
        taken = descriptor is not None and _take(descriptor, wait_seconds_max)
        try:
            yield taken
        finally:
            if taken:
                assert descriptor is not None
                fcntl.flock(descriptor, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


def _take(descriptor: int, wait_seconds_max: float) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    deadline = time.monotonic() + wait_seconds_max
    sleep = _FIRST_SLEEP_SECONDS
    while True:
        # A blocking flock cannot be given a timeout, so the wait polls; time.sleep releases
        # the GIL, so the process's other threads run meanwhile.
        time.sleep(sleep)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as problem:
            if problem.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise
        if time.monotonic() >= deadline:
            _log.warning(
                "waited %.0f s for the SQLite writer queue; going on to SQLite's own lock",
                wait_seconds_max,
            )
            return False
        sleep = min(sleep * 2, _LAST_SLEEP_SECONDS)
