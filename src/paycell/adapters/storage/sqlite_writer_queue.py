"""Writers of one SQLite file take turns through a lock file instead of SQLite's busy handler.

SQLite lets one writer in at a time. A process that finds the write lock taken waits in
SQLite's busy handler, which sleeps between tries in steps that grow to 100 ms. With two
`paycell serve` workers taking turns many times a second, a waiting worker slept through most
of the other's turn: two workers served single payments about as fast as one, with p99 above
200 ms (docs/performance.md).

So before `BEGIN IMMEDIATE`, a writer first takes an exclusive `flock` on `<database>-lock`
beside the file. A writer that finds it taken waits in the kernel (a blocking `flock`, in a
helper thread so that the wait can be bounded): the kernel wakes it when the lock is released,
so the next writer starts as soon as the last one's COMMIT returned. (Polling the lock instead
let a process that wrote back to back take it again before a waiter's next try: the other
writer's p99 was 51 ms against 4.6 ms waiting in the kernel.) The kernel releases the lock
when its process dies (SIGKILL included), so a crashed writer never blocks the others.

The lock file only orders the writers; SQLite's own lock still guards the data. A process that
does not take the queue (the sqlite3 shell, another program) is still serialized by SQLite,
and a writer that has waited `QUEUE_WAIT_SECONDS_MAX` for its turn stops queueing and goes on
to `BEGIN IMMEDIATE`, which then waits SQLite's busy timeout as before. No wait is unbounded.
"""

import contextlib
import fcntl
import logging
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

# As long as SQLite's busy timeout: the queue never makes a writer give up sooner.
QUEUE_WAIT_SECONDS_MAX: Final = 60.0
LOCK_SUFFIX: Final = "-lock"

_log = logging.getLogger(__name__)


class WriterQueue:
    """The turn of one connection's writes. One per connection: flock locks belong to an open
    file, so two connections of one process queue against each other as two processes do."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + LOCK_SUFFIX)
        self._descriptor: int | None = None
        # A waiter that gave up its wait may still be blocked in the kernel; until it ends,
        # this queue is not used (see _take).
        self._abandoned: threading.Thread | None = None
        self._held = False
        try:
            self._descriptor = _open_like(self.path, database)
        except OSError as problem:
            # Writes still work, serialized by SQLite's lock alone, but slower under
            # contention: worth an operator's look (the file's owner or mode, usually).
            _log.warning("no writer queue at %s (%s); SQLite's lock alone", self.path, problem)

    @contextmanager
    def turn(self, wait_seconds_max: float = QUEUE_WAIT_SECONDS_MAX) -> Iterator[bool]:
        """Hold the queue's lock for the block; yields whether it was taken (False: the wait
        ran out, or there is no lock file, and only SQLite's lock serializes)."""
        if self._held:
            # flock locks are not counted: the inner turn's release would end the outer one.
            raise RuntimeError(f"a writer turn on {self.path} is already held here")
        descriptor = self._descriptor
        taken = descriptor is not None and self._take(descriptor, wait_seconds_max)
        self._held = taken
        try:
            yield taken
        finally:
            if taken:
                assert descriptor is not None
                self._held = False
                fcntl.flock(descriptor, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._abandoned is not None and self._abandoned.is_alive():
            # Its flock still names this descriptor: closing it would let the number be
            # reused by another file before the wait ends. Left open, the process's exit
            # closes it.
            self._descriptor = None
            return
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def _take(self, descriptor: int, wait_seconds_max: float) -> bool:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        if self._abandoned is not None:
            if self._abandoned.is_alive():
                # Two waits on one open file would share its lock: the old one's release
                # would end the new one's turn. So while it waits, only SQLite's lock orders.
                return False
            self._abandoned = None
        # A blocking flock cannot be given a timeout, so it waits in a helper thread (the
        # GIL is released while it blocks) and this thread waits at most wait_seconds_max.
        # The lock belongs to the open file, not the thread, so this thread releases it.
        state = _Wait()
        waiter = threading.Thread(
            target=state.run, args=(descriptor,), name="paycell-writer-queue", daemon=True
        )
        waiter.start()
        if state.taken.wait(wait_seconds_max):
            waiter.join()
            return True
        with state.mutex:
            if state.taken.is_set():
                return True
            state.abandoned = True
        self._abandoned = waiter
        _log.warning(
            "waited %.0f s for the SQLite writer queue; going on to SQLite's own lock",
            wait_seconds_max,
        )
        return False


class _Wait:
    """One blocking wait for the lock. If the writer gave up before it was taken, the lock
    is let go at once."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.taken = threading.Event()
        self.abandoned = False

    def run(self, descriptor: int) -> None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError:
            return  # the file was closed meanwhile: nobody waits for this turn any more
        with self.mutex:
            if self.abandoned:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
                return
            self.taken.set()


def _open_like(path: Path, database: Path) -> int:
    """The lock file, opened (created if missing) with the database's mode and, when run as
    root, its owner, as SQLite does for its -wal and -shm files: a lock file that root
    created once must not shut the database's own user out of the queue."""
    try:
        reference = database.stat()
        mode = stat.S_IMODE(reference.st_mode)
    except OSError:
        reference, mode = None, 0o644  # a new database: SQLite creates it with 0644
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    # The umask narrowed the mode at creation; set it as given (refused, harmlessly, on a
    # file someone else owns).
    with contextlib.suppress(OSError):
        os.fchmod(descriptor, mode)
    if reference is not None and os.geteuid() == 0:
        # A file system without owners refuses; the mode is what matters then.
        with contextlib.suppress(OSError):
            os.fchown(descriptor, reference.st_uid, reference.st_gid)
    return descriptor
