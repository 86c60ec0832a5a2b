"""Run heavy kernel work in a forked child that holds nothing of the daemon's.

Computing and loading a million set entries means building and freeing dicts and
tuples of a million items, and CPython does each resize and each free in one C call
that holds the interpreter: measured, up to 210 ms without a verdict. A forked child
has the policy already (copy-on-write), does that work on its own interpreter, and
the waiting thread holds nothing.

The child must not outlive or impersonate the daemon: it closes every inherited
descriptor (above all the queue socket: a child holding it after the parent died
would keep the queue bound to a process that never reads it, so ``--queue-bypass``
would never apply), asks the kernel to kill it when its parent dies
(``PR_SET_PDEATHSIG``), and runs at the lowest CPU priority so the verdict loop goes
first on a busy router.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable

from op25b.kernel.commands import RulesError

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def run_isolated(work: Callable[[], None], what: str = "op25b-kernel") -> None:
    """Run ``work`` in a forked child and wait for it; its error is raised here."""
    parent = os.getpid()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no return, no atexit handlers, no parent buffers flushed
        code = 0
        try:
            os.close(r)
            # The daemon's signal wake-up fd is about to be closed below; left set, the
            # first SIGCHLD (from the child's own ipset/iptables runs) would write to a
            # closed descriptor -- a traceback on the daemon's stderr -- or, once the
            # number is reused, a stray byte into a pipe such as ipset restore's input.
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(-1)
            _die_with_parent(parent)
            # Every fd but stdin/out/err and the result pipe: the queue socket, the
            # abuse log, syslog and lock sockets stay the parent's alone.
            os.closerange(3, w)
            os.closerange(w + 1, os.sysconf("SC_OPEN_MAX"))
            with contextlib.suppress(OSError, AttributeError):
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            work()
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.write(w, f"{type(e).__name__}: {e}".encode("utf-8", "replace")[:8192])
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        message = f.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RulesError([what], code, message or f"child exited with {code}")
