"""The forked kernel-work child leaves the daemon's signal wake-up fd alone.

Found by bench/soak.py: every reload's child closed the inherited wake-up socket but
kept it registered, so the SIGCHLD of its own ipset/iptables runs made CPython write
to a closed descriptor ("Exception ignored when trying to write to the signal wakeup
fd ... Bad file descriptor" on the daemon's stderr), or into whatever reused the
number. No root needed: the child's work here is a plain subprocess.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest

from op25b.kernel.isolate import run_isolated


@pytest.fixture
def wakeup_fd_and_sigchld_handler() -> Iterator[socket.socket]:
    r, w = socket.socketpair()
    w.setblocking(False)
    old_fd = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
    old_handler = signal.signal(signal.SIGCHLD, lambda *_: None)
    try:
        yield r
    finally:
        signal.signal(signal.SIGCHLD, old_handler)
        signal.set_wakeup_fd(old_fd)
        r.close()
        w.close()


def test_child_subprocesses_do_not_hit_the_closed_wakeup_fd(
    wakeup_fd_and_sigchld_handler: socket.socket, capfd: pytest.CaptureFixture[str]
) -> None:
    def work() -> None:
        for _ in range(3):
            subprocess.run(["true"], check=True)
        # Let pending signal reports run in the child before it exits.
        subprocess.run(["true"], check=True)

    run_isolated(work, "test")
    err = capfd.readouterr().err
    assert "wakeup fd" not in err and "Bad file descriptor" not in err, err


def test_child_failure_is_still_reported(wakeup_fd_and_sigchld_handler: socket.socket) -> None:
    def work() -> None:
        raise RuntimeError("boom")

    with pytest.raises(Exception, match="RuntimeError: boom"):
        run_isolated(work, "test")
