"""Signals only set flags; the loop acts on them (a handler never does real work).

``signal.set_wakeup_fd`` makes the loop's ``select`` return when a signal arrives,
and threads (a finished reload) wake it through the same socket pair.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from types import FrameType

FLAG_OF = {
    signal.SIGHUP: "reload",
    signal.SIGUSR1: "reopen",
    signal.SIGTERM: "stop",
    signal.SIGINT: "stop",
    signal.SIGCHLD: "children",
}


class SignalFlags:
    """Pending flags and the wake-up socket the loop selects on."""

    def __init__(self) -> None:
        self._flags: set[str] = set()
        self._r, self._w = socket.socketpair()
        for s in (self._r, self._w):
            s.setblocking(False)

    def install(self, signals: tuple[signal.Signals, ...] = tuple(FLAG_OF)) -> None:
        """Route ``signals`` to flags (main thread only)."""
        signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        for sig in signals:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._flags.add(FLAG_OF[signal.Signals(signum)])

    def raise_flag(self, flag: str) -> None:
        """Raise a flag from code (and wake the loop)."""
        self._flags.add(flag)
        self.wake()

    def wake(self) -> None:
        """Make the loop's select return (safe from any thread)."""
        with contextlib.suppress(OSError):
            self._w.send(b"w")

    def fileno(self) -> int:
        """What the loop selects on."""
        return self._r.fileno()

    def drain_wakeups(self) -> None:
        """Read the wake-up bytes (they carry no information)."""
        with contextlib.suppress(BlockingIOError):
            while self._r.recv(4096):
                pass

    def take(self) -> set[str]:
        """The flags raised since the last call."""
        flags, self._flags = self._flags, set()
        return flags
