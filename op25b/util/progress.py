"""A one-line progress display on a terminal for long offline runs (replay, report).

Shown only when the stream is a terminal: a pipe, a file or a test's StringIO gets
nothing, so scripted output never carries carriage returns. The line is redrawn at
most every ``MIN_INTERVAL`` seconds (callers report per chunk of input, not per
record) and erased by ``close``, so the command's own output starts on a clean line.
"""

from __future__ import annotations

import time
from typing import TextIO

#: Seconds between redraws; the first line appears after this long, so a run that
#: ends sooner shows no progress at all.
MIN_INTERVAL = 0.5


def human_bytes(n: float) -> str:
    """``1.5 MB``-style size (decimal units, as ``ls -h --si`` and disk vendors)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class Progress:
    """``label: 12.3 MB of 45.6 MB (27%), 80.1 MB/s`` on ``stream`` if it is a terminal."""

    def __init__(self, stream: TextIO, label: str, total: int | None = None) -> None:
        self.stream = stream
        self.label = label
        self.total = total
        try:
            self.enabled = stream.isatty()
        except (AttributeError, ValueError):  # a closed or exotic stream: stay quiet
            self.enabled = False
        self._start = time.monotonic()
        self._last = self._start
        self._shown = False

    def update(self, done: int) -> None:
        """Report ``done`` bytes read; redraws when the last redraw is old enough."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < MIN_INTERVAL:
            return
        self._last = now
        rate = done / max(now - self._start, 1e-9)
        of = ""
        if self.total:
            of = f" of {human_bytes(self.total)} ({min(100 * done // self.total, 100)}%)"
        self.stream.write(f"\r{self.label}: {human_bytes(done)}{of}, {human_bytes(rate)}/s\x1b[K")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        """Erase the line (if one was drawn)."""
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
