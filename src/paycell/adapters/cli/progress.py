"""Progress on stderr: a line redrawn in place on a terminal, plain lines otherwise.

Progress never goes to stdout, which carries only results, so output can be piped as JSON lines.
"""

import sys
import time
from typing import IO


class Progress:
    def __init__(self, stream: IO[str] | None = None, *, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._open_line = False
        self._last_update = 0.0

    def say(self, message: str) -> None:
        """A step: always printed, on its own line."""
        if self.quiet:
            return
        self._end_line()
        self.stream.write(message + "\n")
        self.stream.flush()

    def update(self, message: str, done: int, total: int) -> None:
        """A counter within a step: redrawn in place on a terminal, at most ten times a second."""
        if self.quiet or not self.interactive:
            return
        now = time.monotonic()
        if done < total and now - self._last_update < 0.1:
            return
        self._last_update = now
        width = 30
        filled = width * done // total if total else width
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r  {message} [{bar}] {done}/{total}")
        self.stream.flush()
        self._open_line = True

    def _end_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False

    def finish(self) -> None:
        if not self.quiet:
            self._end_line()
            self.stream.flush()
