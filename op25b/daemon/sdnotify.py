"""systemd's sd_notify protocol: READY, RELOADING, STOPPING, WATCHDOG, STATUS, EXTEND_TIMEOUT_USEC.

Implemented directly on the NOTIFY_SOCKET datagram socket so the daemon needs no extra
library; without NOTIFY_SOCKET (not under systemd) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Sends state lines to systemd if we were started by it."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract namespace socket
        self._addr = addr
        usec = env.get("WATCHDOG_USEC", "")
        # Ping at half the watchdog interval, as sd_watchdog_enabled(3) recommends.
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else 0.0

    @property
    def enabled(self) -> bool:
        """True when running under systemd with Type=notify."""
        return bool(self._addr)

    def send(self, *lines: str) -> None:
        """Send ``KEY=VALUE`` lines; failures are ignored (notification is advisory)."""
        if not self._addr:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto("\n".join(lines).encode(), self._addr)
        except OSError:
            pass

    def ready(self, status: str) -> None:
        """The rules are installed and the queue is bound."""
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        """A reload started; MONOTONIC_USEC is required by Type=notify-reload semantics."""
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        """Shutdown started."""
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        """The loop is alive."""
        self.send("WATCHDOG=1")

    def status(self, text: str) -> None:
        """A one-line status shown by ``systemctl status``."""
        self.send(f"STATUS={text}")

    def extend_timeout(self, seconds: float, status: str | None = None) -> None:
        """Ask for ``seconds`` more before the current state's timeout (start, reload).

        systemd only ever lengthens a timeout this way: the next message must come
        within ``seconds``, but never sooner than the unit's own TimeoutStartSec.
        """
        lines = [f"EXTEND_TIMEOUT_USEC={round(seconds * 1e6)}"]
        if status is not None:
            lines.append(f"STATUS={status}")
        self.send(*lines)
