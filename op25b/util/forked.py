"""Run a piece of work in a forked child that holds nothing of the daemon's; get its bytes.

Owns the one way op25b runs heavy work beside its verdict loop: loading and compiling
a policy (``op25b.daemon.loadchild``) and computing and loading kernel sets
(``op25b.kernel.isolate``). CPython's big C calls (a dict resize, the free of a
million objects, ``list.sort``) hold the interpreter for 100 ms and more; in a child
they hold only the child's. The child has the parent's memory copy-on-write, so it
needs no input; its result comes back as bytes through a pipe.

The child must not outlive or impersonate the daemon: it closes every inherited
descriptor but stdin/out/err and the result pipe (above all the queue socket: a child
holding it after the parent died would keep the queue bound to a process that never
reads it, so ``--queue-bypass`` would never apply), asks the kernel to kill it when
its parent dies (``PR_SET_PDEATHSIG``), and can run at a lower CPU priority so the
verdict loop goes first on a busy router.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import signal
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
# Nice value of a "background" child. Not SCHED_IDLE: on a loaded machine an idle-class
# task gets almost no CPU at all (weight 3 against 1024), so a reload could take minutes;
# nice 10 still leaves ~90% of a shared core to the verdict loop.
BACKGROUND_NICE = 10


class ChildFailed(Exception):
    """The work raised in the child (``kind`` is the exception's type name)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}" if kind else message)
        self.kind = kind
        self.message = message


def _step_aside() -> None:
    """Lower priority, and off the verdict loop's CPUs when the machine has others.

    A daemon pinned to one CPU (``taskset``, systemd ``CPUAffinity=``) passes its
    affinity to the child, which would then take its CPU time from the verdict loop
    itself (measured under a flood: a reload's 2.5 s of CPU took 27 s of wall time at
    nice 10 on the loop's CPU). Any CPU the cpuset refuses keeps the inherited mask.
    """
    with contextlib.suppress(OSError):
        os.nice(BACKGROUND_NICE)
    with contextlib.suppress(OSError, AttributeError):
        others = set(range(os.cpu_count() or 1)) - os.sched_getaffinity(0)
        if others:
            os.sched_setaffinity(0, others)


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def run_forked(
    work: Callable[[BinaryIO], None],
    read: Callable[[io.BufferedReader], T],
    *,
    background: bool,
) -> T:
    """Fork; the child runs ``work(out)`` writing its result to ``out``; the parent
    returns ``read(pipe)``. A child that raised raises ``ChildFailed`` here.

    ``read`` must consume what ``work`` writes (or the pipe will be closed under it);
    the waiting thread holds nothing while the child works.
    """
    parent = os.getpid()
    r, w = os.pipe()
    # Failures travel apart from the result: a reader may have consumed part of a
    # report written after a half-written result.
    er, ew = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no return, no atexit handlers, no parent buffers flushed
        code = 0
        out = os.fdopen(w, "wb", buffering=1 << 20)
        try:
            os.close(r)
            os.close(er)
            # The daemon's signal wake-up fd is about to be closed below; left set, the
            # first SIGCHLD (from the child's own ipset/iptables runs) would write to a
            # closed descriptor -- a traceback on the daemon's stderr -- or, once the
            # number is reused, a stray byte into a pipe such as ipset restore's input.
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(-1)
            _die_with_parent(parent)
            keep = sorted((w, ew))
            os.closerange(3, keep[0])
            os.closerange(keep[0] + 1, keep[1])
            os.closerange(keep[1] + 1, os.sysconf("SC_OPEN_MAX"))
            if background:
                _step_aside()
            work(out)
            out.flush()
        except BaseException as e:
            code = 1
            with contextlib.suppress(OSError):
                # At most 8 KiB: below a pipe's capacity, so this never blocks.
                os.write(ew, f"{type(e).__name__}\0{e}".encode("utf-8", "replace")[:8192])
        finally:
            os._exit(code)
    os.close(w)
    os.close(ew)
    result: T | None = None
    broken: Exception | None = None
    try:
        with os.fdopen(r, "rb") as pipe:
            try:
                result = read(pipe)
            except Exception as e:  # a child that failed or died mid-write; see below
                broken = e
            pipe.read()  # whatever the reader left: the child never blocks on a full pipe
    finally:
        _, status = os.waitpid(pid, 0)
        with os.fdopen(er, "rb") as errors:
            report = errors.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        if report:
            kind, _, message = report.decode("utf-8", "replace").partition("\0")
            raise ChildFailed(kind, message)
        raise ChildFailed("", f"child exited with {code}")
    if broken is not None:
        raise ChildFailed(type(broken).__name__, f"unreadable result: {broken}")
    return result  # type: ignore[return-value]  # read() ran: T, which may be None


def chunks(data: memoryview, size: int = 1 << 20) -> Iterator[memoryview]:
    """``data`` in slices of ``size`` bytes (for writes that let other threads in)."""
    for i in range(0, len(data), size):
        yield data[i : i + size]
