"""The one interface between the daemon and netfilter: ``Kernel``.

The daemon installs, checks, repairs and removes its rules and sets, binds its queue,
reads the kernel's counters and feeds the verdict cache only through these methods.
``SystemKernel`` is the real one (it shells out to iptables/ipset and binds a
netfilter queue); the unit tests drive the whole daemon lifecycle — start, reload,
repair, cache rotation, shutdown, and every failure of every call — through a fake
that records calls and fails on demand (tests/unit/fakekernel.py), without root.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol

from op25b.kernel import cachesets, rules
from op25b.kernel.integrity import KernelState
from op25b.kernel.isolate import run_isolated
from op25b.kernel.queuestats import QueueStats, kernel_queue_stats
from op25b.kernel.ruletext import RuleConfig
from op25b.kernel.setcontents import block_timeout, compute_sets, family_contents
from op25b.policy.model import Policy

# handler(payload) -> a VERDICT_* int of op25b.dataplane.verdicts; it must not raise.
Handler = Callable[[bytes], int]
CacheCounts = dict[tuple[int, int], int]  # (version, address) -> packets


class QueueReader(Protocol):
    """A bound queue: select on ``fileno()``, ``process()`` what is pending."""

    @property
    def callback_errors(self) -> int:
        """Packets whose handler raised (they got ``on_error``)."""

    def fileno(self) -> int:
        """The descriptor to wait on."""

    def process(self) -> bool:
        """Handle what is queued without blocking; True when more is probably waiting."""

    def close(self) -> None:
        """Unbind: the kernel's ``--queue-bypass`` fallback applies from now on."""


class Kernel(Protocol):
    """What the daemon needs from netfilter (see the module docstring)."""

    def install(self, cfg: RuleConfig, policy: Policy, now: datetime) -> None:
        """Sets and rules for ``policy`` at ``now``; never removes anything on failure.

        After ``stage_sets`` of this very policy and ``now``, only the quick half is
        left: the staged sets are swapped in, then the rules.
        """

    def stage_sets(self, policy: Policy, now: datetime) -> None:
        """The slow half of an install, begun early (at start, beside the compile): the
        sets for ``policy`` at ``now`` loaded beside the live ones. Nothing in force
        changes until ``install``; ``discard_staged`` drops them."""

    def discard_staged(self) -> None:
        """Drop what ``stage_sets`` loaded (a start refused after it); nothing in force
        changes."""

    def update_sets(self, policy: Policy, now: datetime) -> None:
        """Swap in the sets for ``policy`` at ``now``; the rules stay."""

    def install_rules(self, cfg: RuleConfig) -> None:
        """Replace the rules only (a repair when the sets are intact)."""

    def state(self) -> KernelState:
        """op25b's rules and sets as they are now."""

    def remove(self) -> None:
        """Remove exactly op25b's rules and sets (a clean stop, ``op25b rules remove``)."""

    def queue_stats(self, queues: Iterable[int]) -> dict[int, QueueStats]:
        """The kernel's per-queue counters (drops it made on its own)."""

    def fast_path_counters(self) -> dict[str, int]:
        """Packets the kernel fast path accepted, per reason, since install."""

    def bind_queue(self, queue_num: int, handler: Handler, on_error: int) -> QueueReader:
        """Bind a netfilter queue; ``handler`` decides each packet."""

    def cache_add(self, entries: Sequence[tuple[int, int]], timeout: int) -> None:
        """Put blocked sources in the kernel verdict cache."""

    def cache_counts(self) -> CacheCounts:
        """The verdict cache's per-entry packet counters."""

    def cache_rotate(self, timeout: int) -> CacheCounts:
        """Swap in an empty verdict cache; the old one's final counters."""


class SystemKernel:
    """The real kernel of the network namespace ``cmd_prefix`` runs in (default: ours).

    ``install`` and ``update_sets`` compute and load the sets in a forked child
    (``op25b.kernel.isolate``) so a million-entry reload never stalls the verdict loop.
    """

    def __init__(self, cmd_prefix: Sequence[str] = (), *, isolate: bool = True) -> None:
        self.cmd_prefix = tuple(cmd_prefix)
        self.isolate = isolate
        # The policy and instant the live sets were last computed from: a reload then
        # touches only the sets that change (op25b.kernel.ipsets.plan_changes). The
        # daemon disposes of a replaced policy only after the update that replaced it.
        self._loaded: tuple[Policy, datetime] | None = None
        # What stage_sets loaded into the temporaries, until install swaps it in.
        self._staged: tuple[Policy, datetime] | None = None

    def _run(self, work: Callable[[], None], what: str, *, background: bool = True) -> None:
        if self.isolate:
            run_isolated(work, what, background=background)
        else:
            work()

    def install(self, cfg: RuleConfig, policy: Policy, now: datetime) -> None:
        """See ``Kernel.install``."""
        staged, self._staged = self._staged, None
        self._loaded = None  # until it succeeds, the live sets are unknown
        if staged is not None and staged[0] is policy and staged[1] == now:
            # A few commands and no set entries: no child needed.
            rules.install_staged(cfg, block_timeout(policy), self.cmd_prefix)
        else:
            self._run(
                lambda: rules.install(cfg, compute_sets(policy, now), self.cmd_prefix),
                "op25b-install",
            )
        self._loaded = (policy, now)

    def stage_sets(self, policy: Policy, now: datetime) -> None:
        """See ``Kernel.stage_sets``."""
        self._staged = None

        def work() -> None:
            families = (family_contents(policy, v, now) for v in (4, 6))  # computed lazily
            rules.stage(families, self.cmd_prefix)

        # Start-up: no verdict loop to yield to yet (at nice 10 on a busy router the
        # staging took 5 s instead of 2.5 s, measured), so it runs at full priority.
        self._run(work, "op25b-stage", background=False)
        self._staged = (policy, now)

    def discard_staged(self) -> None:
        """See ``Kernel.discard_staged``."""
        self._staged = None
        rules.discard_staged(self.cmd_prefix)

    def update_sets(self, policy: Policy, now: datetime) -> None:
        """See ``Kernel.update_sets``."""
        loaded, self._loaded = self._loaded, None
        self._staged = None

        def work() -> None:
            previous = compute_sets(*loaded) if loaded is not None else None
            rules.update_sets(compute_sets(policy, now), self.cmd_prefix, previous)

        self._run(work, "op25b-sets")
        self._loaded = (policy, now)

    def install_rules(self, cfg: RuleConfig) -> None:
        """See ``Kernel.install_rules``."""
        rules.install_rules(cfg, self.cmd_prefix)

    def state(self) -> KernelState:
        """See ``Kernel.state``."""
        return rules.read_state(self.cmd_prefix)

    def remove(self) -> None:
        """See ``Kernel.remove``."""
        self._loaded = self._staged = None
        rules.remove(self.cmd_prefix)

    def queue_stats(self, queues: Iterable[int]) -> dict[int, QueueStats]:
        """See ``Kernel.queue_stats`` (our own namespace's /proc only)."""
        return kernel_queue_stats(queues=queues)

    def fast_path_counters(self) -> dict[str, int]:
        """See ``Kernel.fast_path_counters``."""
        return rules.fast_path_counters(self.cmd_prefix)

    def bind_queue(self, queue_num: int, handler: Handler, on_error: int) -> QueueReader:
        """See ``Kernel.bind_queue``; imports the compiled binding only when needed."""
        from op25b.kernel.nfq import QueueBinding

        return QueueBinding(queue_num, handler, on_error)

    def cache_add(self, entries: Sequence[tuple[int, int]], timeout: int) -> None:
        """See ``Kernel.cache_add``."""
        cachesets.block_cache_add(entries, timeout, self.cmd_prefix)

    def cache_counts(self) -> CacheCounts:
        """See ``Kernel.cache_counts``."""
        return cachesets.block_cache_counts(self.cmd_prefix)

    def cache_rotate(self, timeout: int) -> CacheCounts:
        """See ``Kernel.cache_rotate``."""
        return cachesets.block_cache_rotate(timeout, self.cmd_prefix)
