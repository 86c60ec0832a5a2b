"""Policy reloads off the verdict path, and disposing of the policy they replace.

A reload runs in a background thread that waits on two forked children in turn: one
loads and compiles the new policy and hands the compiled tables over
(``op25b.daemon.loadchild``), then ``SystemKernel`` updates the kernel sets in another.
While both run, the old policy and its kernel rules stay in force untouched (verdicts
go on; the fail-static fallback stays that of the old policy until the new sets are
swapped in). The result goes back to the loop as a ``Loaded``; the loop swaps the
new policy in at once. Whatever fails — a bad policy, a kernel command, a hung
command's timeout, MemoryError — ends the reload with a message and leaves the
daemon enforcing the old policy (and its rules, which are never removed on an error
path), ready for the next SIGHUP.
"""

from __future__ import annotations

import ctypes
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from op25b.daemon.loadchild import load_compiled
from op25b.daemon.sdnotify import Notifier
from op25b.daemon.startup import (
    COMPILE_PER_MILLION,
    INSTALL_PER_MILLION,
    Progress,
    budget,
    prefix_count,
)
from op25b.kernel.ruletext import RuleConfig
from op25b.kernel.seam import Kernel
from op25b.policy.compiled import CompiledPolicy
from op25b.policy.model import Policy
from op25b.policy.problems import PolicyError
from op25b.util.background import BackgroundCall


@dataclass(frozen=True)
class Loaded:
    """A reload's result, handed from the reload thread to the loop."""

    policy: Policy | None
    compiled: CompiledPolicy | None
    error: str | None
    seconds: float
    sets_only: bool = False
    rules_changed: bool = False
    # The kernel update began: on a failure the watchdog puts the last good state back
    # (a refused policy never touched the kernel, so there is nothing to put back).
    kernel_touched: bool = False


def refuse_reason(old: Policy, new: Policy) -> str | None:
    """Why a reload cannot be applied in place, or None.

    The queue numbers are bound by running processes; moving them means rebinding every
    worker, which a restart does cleanly (and the fallback rules hold meanwhile). The
    metrics outputs are opened once at start too: a changed ``daemon.metrics`` is
    refused rather than silently ignored until the next restart.
    """
    o, n = old.daemon, new.daemon
    restart = " restart op25b to apply (systemctl restart op25b)"
    if (o.queue, o.workers) != (n.queue, n.workers):
        return (
            f"daemon.queue/workers changed ({o.queue}/{o.workers} -> {n.queue}/{n.workers});"
            + restart
        )
    if o.metrics != n.metrics:
        return "daemon.metrics changed;" + restart
    return None


def reload_policy(
    path: str,
    current: Policy,
    kernel: Kernel,
    *,
    leader: bool,
    sets_only: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Progress | None = None,
) -> Loaded:
    """Load, compile and (leader) put into the kernel; never raises.

    The kernel update starts as soon as the loader child has sent the policy (the
    sets need nothing else), beside the child's compile; the result waits for both.
    ``progress`` (a full reload by the leader) tells systemd each step in STATUS=
    and asks for time while it runs (systemd times the RELOADING=1 state too).
    """
    t0 = time.monotonic()
    tell = progress or Progress(Notifier({}))  # no NOTIFY_SOCKET: silent, no thread
    update = _KernelUpdate(kernel, current, leader, sets_only, clock)
    phases = ExitStack()
    try:
        with phases:
            if sets_only:
                policy, compiled = current, None
                update.start(current)
            else:

                def loaded(policy: Policy) -> None:
                    size = prefix_count(policy)
                    phases.close()  # the load phase ends here
                    text = f"reloading: compiling {size:,} prefixes"
                    phases.enter_context(tell.phase(text, budget(COMPILE_PER_MILLION, size)))
                    update.start(policy)

                phases.enter_context(tell.phase(f"reloading {path}"))
                policy, compiled = load_compiled(
                    path, background=True, on_policy=loaded, progress=tell.loaded
                )
            phases.close()
            if update.touched:
                allowed = budget(INSTALL_PER_MILLION, prefix_count(policy))
                phases.enter_context(tell.phase("reloading: updating the kernel", allowed))
            update.wait()
        return Loaded(policy, compiled, None, time.monotonic() - t0, sets_only, update.changed)
    except _Refusal as e:
        return Loaded(None, None, str(e), time.monotonic() - t0, sets_only)
    except PolicyError as e:
        update.wait_quietly()
        return Loaded(None, None, str(e), time.monotonic() - t0, sets_only, False, update.touched)
    except MemoryError:
        update.wait_quietly()
        message = "out of memory while loading"
        return Loaded(None, None, message, time.monotonic() - t0, sets_only, False, update.touched)
    except Exception as e:  # a kernel command, a bug: still a refused reload, never a dead one
        update.wait_quietly()
        where = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
        at = f" (at {where[0].filename}:{where[0].lineno})" if where else ""
        message = f"{type(e).__name__}: {e}{at}"
        return Loaded(None, None, message, time.monotonic() - t0, sets_only, False, update.touched)


class _Refusal(Exception):
    """The new policy cannot be applied in place (``refuse_reason``)."""


class _KernelUpdate:
    """A reload's kernel update on its own thread (it waits on a forked child)."""

    def __init__(
        self,
        kernel: Kernel,
        current: Policy,
        leader: bool,
        sets_only: bool,
        clock: Callable[[], datetime],
    ) -> None:
        self.kernel = kernel
        self.current = current
        self.leader = leader
        self.sets_only = sets_only
        self.clock = clock
        self.touched = False
        self.changed = False
        self._call: BackgroundCall | None = None

    def start(self, policy: Policy) -> None:
        """Begin the update for ``policy`` (the loader child's on_policy hook)."""
        why = refuse_reason(self.current, policy)
        if why is not None:
            raise _Refusal(why)
        if not self.leader:
            return
        new_cfg = RuleConfig.from_policy(policy)
        self.changed = not self.sets_only and new_cfg != RuleConfig.from_policy(self.current)
        self.touched = True
        self._call = BackgroundCall("op25b-kernel-update", self._run, new_cfg, policy)

    def _run(self, new_cfg: RuleConfig, policy: Policy) -> None:
        if self.changed:
            self.kernel.install(new_cfg, policy, self.clock())
        else:
            self.kernel.update_sets(policy, self.clock())

    def wait(self) -> None:
        """Wait for the update; its error is raised here."""
        error = self._call.join() if self._call is not None else None
        if error is not None:
            raise error

    def wait_quietly(self) -> None:
        """Wait for the update on a failure path (the first error is the one told)."""
        if self._call is not None:
            self._call.join()


def trim_memory() -> None:
    """Hand freed heap memory back to the kernel (glibc); a no-op elsewhere.

    Loading a million-prefix policy leaves a few hundred MB of freed parse garbage
    that glibc keeps for reuse; trimming takes the daemon's RSS from ~370 MB back to
    ~120 MB (measured at 1M prefixes).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
_MMAP_THRESHOLD = 1 << 17  # glibc's default starting value (128 KiB)


def pin_mmap_threshold() -> None:
    """Keep glibc's mmap threshold at 128 KiB for good (a no-op elsewhere).

    glibc raises the threshold each time a big mmap'd block is freed (up to 32 MiB), so
    after the first reload freed a policy's arrays, the next policy's multi-MB arrays
    and bytes came from the heap and stayed there once freed: steady RSS grew from ~120
    to ~160 MB at 1M prefixes (measured). Fixed, every big block is mmap'd and goes back
    to the kernel on free, with no ``malloc_trim`` (which holds the arena lock while the
    verdict loop allocates).
    """
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def dispose(holder: list[tuple[Policy, CompiledPolicy]]) -> None:
    """Free replaced policies a slice at a time (run in a thread, off the verdict path).

    The holder list is their last reference; emptying it here means the deallocation
    of a million prefixes happens in this thread, not in the loop.
    """
    for policy, _ in holder:
        for plan in policy.plans:
            plan.prefixes.release()
    holder.clear()
    # No malloc_trim here: the loader's garbage lives and dies in its child, and the big
    # arrays freed above are mmap'd blocks glibc returns at once. A trim would hold the
    # arena lock, stalling the loop's allocations (measured: the reload's worst verdict
    # gap, 46 ms, fell at the swap).
