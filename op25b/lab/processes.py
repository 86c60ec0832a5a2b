"""Running the real daemon inside a lab router, and a syslog receiver to watch it.

Shared by the lab tests and the demo: ``DaemonProcess`` starts ``op25b run`` as a
subprocess in the router namespace and lets callers *await* what it says (its stderr
mirrors every syslog line) instead of sleeping; ``SyslogReceiver`` is a real unix
datagram syslog socket whose messages callers can await and parse.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from op25b.errors import EnvironmentFailure
from op25b.lab.netns import child_env, popen_in, stop_process

_SD_PARAM = re.compile(r'([A-Za-z0-9_.-]+)="((?:[^"\\]|\\.)*)"')


class LabRunError(EnvironmentFailure):
    """The daemon did not do what was awaited in time."""


class AwaitableLines:
    """Lines collected by a reader thread, awaitable with a condition variable."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self.closed = False

    def add(self, line: str) -> None:
        with self._cond:
            self._lines.append(line)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def snapshot(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def wait_for(
        self, pred: Callable[[str], bool], timeout: float, start: int = 0, what: str = ""
    ) -> tuple[int, str]:
        """(index, line) of the first line from ``start`` on that satisfies ``pred``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self._lines):
                    if pred(self._lines[i]):
                        return i, self._lines[i]
                    i += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    tail = "\n".join(self._lines[-15:])
                    raise LabRunError(f"timed out waiting for {what or 'a line'}; last:\n{tail}")
                self._cond.wait(remaining)


class DaemonProcess:
    """``op25b run`` in a namespace; stderr lines are collected and awaitable."""

    def __init__(
        self,
        ns: str,
        policy: str | Path,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
        wrapper: Sequence[str] = (),
        command: Sequence[str] = (sys.executable, "-m", "op25b"),
    ) -> None:
        self.ns = ns
        # ``wrapper`` runs in front of the daemon inside the namespace (e.g. ``setpriv``
        # with a unit's credentials); it must exec, so ``proc.pid`` stays the daemon's.
        # ``command`` is another op25b to run, e.g. the installed package's /usr/bin/op25b.
        argv = [*wrapper, *command, "run", "--policy", str(policy), *extra]
        self.proc: subprocess.Popen[str] = popen_in(
            ns,
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**child_env(), **(env or {})},
        )
        self.lines = AwaitableLines()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.add(line.rstrip("\n"))
        self.lines.close()

    def wait_started(self, timeout: float = 30.0) -> None:
        """Return once the queue is bound and the rules are in place."""
        self.lines.wait_for(lambda s: "started:" in s, timeout, what="daemon start")

    def reload(self, timeout: float = 60.0) -> str:
        """SIGHUP and await the outcome line ('reloaded ...' or 'reload refused ...')."""
        start = len(self.lines.snapshot())
        self.proc.send_signal(signal.SIGHUP)
        _, line = self.lines.wait_for(
            lambda s: "reloaded " in s or "reload refused" in s, timeout, start, "reload"
        )
        return line

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        stop_process(self.proc, timeout)
        self._thread.join(5)
        return self.proc.returncode

    def kill9(self) -> None:
        """SIGKILL: no cleanup runs; the kernel's down-behaviour takes over."""
        self.proc.kill()
        self.proc.wait()
        self._thread.join(5)

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SyslogReceiver:
    """A unix datagram syslog socket in a private directory; messages are awaitable."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="op25b-syslog-")
        self.path = str(Path(self._dir.name) / "log.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        os.chmod(self.path, 0o666)
        self.lines = AwaitableLines()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                break
            self.lines.add(data.decode("utf-8", "replace"))
        self.lines.close()

    def wait_for(self, pred: Callable[[str], bool], timeout: float = 10.0, what: str = "") -> str:
        """The first message satisfying ``pred``."""
        return self.lines.wait_for(pred, timeout, what=what)[1]

    def close(self) -> None:
        """Stop receiving and remove the socket."""
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)
        self._dir.cleanup()

    def __enter__(self) -> SyslogReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sd_params(message: str) -> dict[str, str]:
    """The structured-data params (``name="value"``) of a syslog message."""
    return {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _SD_PARAM.findall(message)}
