"""The abuse-log file: appending records durably, surviving rotation and a full disk.

Records come from ``op25b.dataplane.aggregator``; their JSON shape is fixed by
docs/abuse-log-format.md.
"""

from __future__ import annotations

import contextlib
import os

from op25b.dataplane.aggregator import AbuseRecord


class AbuseLogWriter:
    """Appends records as JSON lines; durable at each ``write()``; ``reopen()`` after rotation.

    Each line goes out in one ``os.write()`` on an ``O_APPEND`` descriptor (no
    user-space buffer, so a killed process loses nothing already written), and
    ``write()`` ends with ``fsync()``, so a machine crash loses at most the window
    still open in the aggregator. Write errors (disk full, directory removed) are
    counted and kept in ``last_error`` instead of raised: a full log disk must not
    stop enforcement. Opening is lazy; construction touches nothing.
    """

    def __init__(self, path: str, *, mode: int = 0o640, dir_mode: int = 0o750) -> None:
        self.path = path
        self.mode = mode
        self.dir_mode = dir_mode
        self._fd: int | None = None
        self.lines_written = 0
        self.errors = 0
        self.last_error: str | None = None

    def open(self) -> None:
        """Open (creating the directory and file) if not open; raises OSError."""
        if self._fd is not None:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=self.dir_mode, exist_ok=True)
        self._fd = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self.mode
        )

    def write(self, records: list[AbuseRecord]) -> int:
        """Append records, then fsync; returns lines written (errors: see class doc)."""
        if not records:
            return 0
        written = 0
        try:
            self.open()
            assert self._fd is not None
            for record in records:
                line = (record.to_json() + "\n").encode("ascii")
                n = os.write(self._fd, line)
                if n != len(line):
                    # Only on a full disk or a size limit: finish the line so the file
                    # does not continue mid-record (readers tolerate a truncated *last*
                    # line only), and let the next write raise if it still fails.
                    view = memoryview(line)[n:]
                    while view:
                        view = view[os.write(self._fd, view) :]
                written += 1
            os.fsync(self._fd)
        except OSError as e:
            self.errors += 1
            self.last_error = f"{self.path}: {e.strerror or e}"
            # A broken descriptor (e.g. EIO) may stay broken; start afresh next time.
            self.close()
        self.lines_written += written
        return written

    def reopen(self) -> None:
        """Close and open the path again: logrotate renamed the old file (SIGUSR1)."""
        self.close()
        try:
            self.open()
        except OSError as e:
            self.errors += 1
            self.last_error = f"{self.path}: {e.strerror or e}"

    def close(self) -> None:
        """Close the file (already fsync'd by the last write)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
