"""Progress on stderr while ``op25b report`` reads: only on a terminal, only when slow.

Owns when and how a progress line is shown: never when stderr is not a terminal (a
cron job's mail or a pipe gets no carriage returns), not before ``DELAY_S`` (a small
log is read before anyone would look), at most every ``EVERY_S``, on one line that is
cleared when reading is done so the report itself starts on a clean line. Engines
call ``update`` (the DuckDB engine from its polling thread, hence the lock).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

DELAY_S = 2.0
EVERY_S = 0.5


class Progress:
    """A rate-limited, self-erasing status line."""

    def __init__(
        self,
        out: TextIO,
        *,
        enabled: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out
        self._enabled = enabled
        self._clock = clock
        self._start = clock()
        self._last = float("-inf")
        self._width = 0
        self._lock = threading.Lock()

    @classmethod
    def for_stream(cls, out: TextIO) -> Progress:
        """Enabled only when ``out`` is a terminal."""
        isatty = getattr(out, "isatty", None)
        return cls(out, enabled=bool(isatty and isatty()))

    def update(self, text: str) -> None:
        """Show ``text`` in place of the previous status, if it is time to."""
        if not self._enabled:
            return
        with self._lock:
            now = self._clock()
            if now - self._start < DELAY_S or now - self._last < EVERY_S:
                return
            self._last = now
            line = f"op25b report: {text}"
            self._out.write("\r" + line.ljust(self._width))
            self._out.flush()
            self._width = len(line)

    def finish(self) -> None:
        """Erase the status line, if one was shown."""
        with self._lock:
            if self._width:
                self._out.write("\r" + " " * self._width + "\r")
                self._out.flush()
                self._width = 0
