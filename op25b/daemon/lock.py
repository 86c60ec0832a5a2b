"""One daemon per network namespace: a lock held for the daemon's lifetime.

Two ``op25b run`` in one namespace would install over each other's rules, and the
loser's clean-up would remove the winner's enforcement. The lock is a listening unix
socket in the *abstract* namespace, which Linux keeps per network namespace: no file
to go stale, released by the kernel when the holder dies (``kill -9`` included), and a
second instance learns the holder's pid from ``SO_PEERCRED``.
"""

from __future__ import annotations

import contextlib
import socket
import struct

from op25b.errors import EnvironmentFailure

LOCK_NAME = b"\0op25b-daemon"


class AlreadyRunning(EnvironmentFailure):
    """Another op25b daemon holds this namespace."""


class NamespaceLock:
    """Held from ``acquire()`` to ``release()`` (or process exit)."""

    def __init__(self, name: bytes = LOCK_NAME) -> None:
        self.name = name
        self._sock: socket.socket | None = None

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning naming the holder."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(self.name)
            sock.listen(8)
        except OSError:
            sock.close()
            raise AlreadyRunning(
                "another op25b daemon is running in this network namespace"
                f"{self._holder()}; stop it first (its rules stay untouched)"
            ) from None
        self._sock = sock

    def _holder(self) -> str:
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe,
        ):
            probe.settimeout(1.0)
            probe.connect(self.name)
            cred = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, _, _ = struct.unpack("3i", cred)
            return f" (pid {pid})"
        return ""

    def fileno(self) -> int:
        """The socket's descriptor (-1 when not held); forked followers close it."""
        return self._sock.fileno() if self._sock is not None else -1

    def release(self) -> None:
        """Give the lock up."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
