"""The abuse-log file: appending records durably, surviving what happens to the file.

Owns getting ``AbuseRecord`` lines (``op25b.dataplane.abuserecord``; the shape is
docs/abuse-log-format.md) into ``daemon.abuse_log`` on a router where the file can
be rotated, deleted, replaced or planted as a symlink, and the disk can fill up or
fail. Nothing here ever raises into the daemon: a full log disk must not stop
enforcement. What went wrong is counted in ``stats`` and told once per episode
through ``pop_events()``, for the daemon to put in syslog.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import deque
from dataclasses import dataclass

from op25b.dataplane.abuserecord import AbuseRecord

# Records kept in memory while the file cannot be written (a full disk), oldest
# dropped first past this: ~50,000 records of ~600 bytes.
MAX_PENDING_BYTES = 32 << 20

_OPEN_FLAGS = (
    os.O_WRONLY
    | os.O_APPEND
    | os.O_CREAT
    | os.O_CLOEXEC
    | os.O_NOCTTY
    # A symlink planted at the path could point the daemon (root) at any file.
    | os.O_NOFOLLOW
    # A FIFO planted at the path must not block the verdict loop in open().
    | os.O_NONBLOCK
)


@dataclass(frozen=True, slots=True)
class AbuseLogStats:
    """What happened to the abuse log since start; the daemon reports these."""

    lines_written: int
    errors: int  # failed opens, writes and fsyncs
    reopens: int  # the path was found deleted or replaced (no signal) and opened anew
    pending: int  # records kept for the next attempt while writing fails
    lost: int  # records given up: the pending buffer was full, or still pending at close
    failing: bool  # the last attempt failed


@dataclass(frozen=True, slots=True)
class AbuseLogEvent:
    """One thing the daemon should say in syslog: ``error`` (ERR) or not (NOTICE)."""

    error: bool
    message: str


class AbuseLogWriter:
    """Appends records as JSON lines; durable at each ``write()``; never raises from it.

    Each line goes out on an ``O_APPEND`` descriptor without a user-space buffer (a
    killed process loses nothing already written), and ``write()`` ends with
    ``fsync()``, so a machine crash loses at most the window still open in the
    aggregator.

    - Rotation: ``reopen()`` on SIGUSR1; and before every write the path is compared
      with the open file (``st_dev``/``st_ino``, one ``stat``), so a log deleted or
      replaced without a signal is reopened -- created anew -- instead of feeding an
      unlinked inode.
    - Opened with ``O_NOFOLLOW`` (a symlink at the path is refused) and only ever a
      regular file (a FIFO or device at the path is refused, without blocking).
    - Disk full, EIO, a refused path: counted; the records stay pending (up to
      ``max_pending_bytes``, then the oldest are dropped and counted as lost) and are
      retried at the next ``write()``, ``retry()`` or ``reopen()``. A line cut short
      by a full disk is ended with a newline before the retry, so it stays one bad
      line that readers skip, and the record is written whole after it.

    Opening is lazy; construction touches nothing. Not thread-safe: one caller.
    """

    def __init__(
        self,
        path: str,
        *,
        mode: int = 0o640,
        dir_mode: int = 0o750,
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self.path = path
        self.mode = mode
        self.dir_mode = dir_mode
        self.max_pending_bytes = max_pending_bytes
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._torn: tuple[int, int] | None = None  # a file that ends inside a line
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._events: list[AbuseLogEvent] = []
        self._failing = False
        self._episode = (0, 0)  # errors and lost when the current failure began
        self._loss_told = False
        self.lines_written = 0
        self.errors = 0
        self.reopens = 0
        self.lost = 0
        self.last_error: str | None = None

    # -- the file --

    def open(self) -> None:
        """Open (creating the directory and file) if not open; raises OSError."""
        if self._fd is not None:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), self.dir_mode, exist_ok=True)
        try:
            fd = os.open(self.path, _OPEN_FLAGS, self.mode)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise OSError(e.errno, "a symbolic link, refused", self.path) from None
            if e.errno == errno.ENXIO:  # O_NONBLOCK open of a FIFO nobody reads
                raise OSError(e.errno, "not a regular file (a FIFO), refused", self.path) from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file, refused", self.path)
        self._fd = fd
        self._ident = (st.st_dev, st.st_ino)

    def reopen(self) -> None:
        """Close and open the path again (logrotate, SIGUSR1); then retry pending records."""
        self._close_fd()
        try:
            self.open()
        except OSError as e:
            self._failed(e)
            return
        self._flush()

    def close(self) -> None:
        """Close the file (already fsync'd); records still pending now count as lost."""
        if self._pending:
            self._lose(len(self._pending))
            self._pending.clear()
            self._pending_bytes = 0
        self._close_fd()

    def _close_fd(self) -> None:
        fd, self._fd, self._ident = self._fd, None, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _same_file(self) -> bool:
        """Does the path still name the open file? One lstat per write."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._ident

    # -- writing --

    def write(self, records: list[AbuseRecord]) -> int:
        """Append records (and any still pending), then fsync; returns lines written."""
        for record in records:
            line = (record.to_json() + "\n").encode("ascii")
            self._pending.append(line)
            self._pending_bytes += len(line)
        dropped = 0
        while self._pending_bytes > self.max_pending_bytes:
            self._pending_bytes -= len(self._pending.popleft())
            dropped += 1
        if dropped:
            self._lose(dropped)
        return self._flush()

    def retry(self) -> int:
        """Write what is pending, if anything; returns lines written."""
        return self._flush()

    def _flush(self) -> int:
        if not self._pending:
            return 0
        written = 0
        try:
            if self._fd is not None and not self._same_file():
                self._close_fd()
                self.reopens += 1
                self._tell(False, f"abuse log {self.path} was deleted or replaced; reopening it")
            self.open()
            assert self._fd is not None and self._ident is not None
            if self._torn == self._ident:
                self._write_all(b"\n")  # end the fragment a full disk left behind
                self._torn = None
            while self._pending:
                line = self._pending[0]
                self._write_all(line)
                self._pending.popleft()
                self._pending_bytes -= len(line)
                written += 1
            os.fsync(self._fd)
        except OSError as e:
            self.lines_written += written
            self._failed(e)
            return written
        self.lines_written += written
        if self._failing:
            self._failing = False
            errors, lost = self.errors - self._episode[0], self.lost - self._episode[1]
            self._tell(
                False,
                f"abuse log {self.path} is written again after {errors} failed attempt(s);"
                f" {lost} record(s) lost",
            )
        self._loss_told = False
        return written

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                done += os.write(self._fd, view[done:])
        except OSError:
            if done:
                self._torn = self._ident
            raise

    def _failed(self, e: OSError) -> None:
        self.errors += 1
        self.last_error = f"{self.path}: {e.strerror or e}"
        # A broken descriptor (EIO) may stay broken; start afresh at the next attempt.
        self._close_fd()
        if not self._failing:
            self._failing = True
            self._episode = (self.errors - 1, self.lost)
            self._tell(True, f"abuse log {self.last_error}; keeping records and retrying")

    def _lose(self, n: int) -> None:
        self.lost += n
        if not self._loss_told:
            self._loss_told = True
            self._tell(True, f"abuse log {self.path}: records are being lost ({self.lost} so far)")

    def _tell(self, error: bool, message: str) -> None:
        self._events.append(AbuseLogEvent(error, message))

    # -- reporting --

    def pop_events(self) -> list[AbuseLogEvent]:
        """Events since the last call, each told once: failing, records lost, reopened,
        written again."""
        events, self._events = self._events, []
        return events

    @property
    def stats(self) -> AbuseLogStats:
        """Counters since start."""
        return AbuseLogStats(
            lines_written=self.lines_written,
            errors=self.errors,
            reopens=self.reopens,
            pending=len(self._pending),
            lost=self.lost,
            failing=self._failing,
        )
