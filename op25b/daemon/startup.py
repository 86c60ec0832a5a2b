"""What systemd hears while a policy loads, compiles and goes into the kernel.

Owns the ``STATUS=`` lines of a start (and of a reload's load) and the
``EXTEND_TIMEOUT_USEC=`` requests that keep a long one from being killed. A
million-prefix start took ~11 s here (load 3 s, compile 2 s, kernel sets 6 s, on a
busy 2-vCPU box); the 256 MiB pool limit is ~17 M prefixes, minutes of work, far past
systemd's default TimeoutStartSec of 90 s. Killing a daemon that is working fine would
leave the router on its fallback rules in a restart loop.

So each phase says what it does, and a ticker thread asks for more time every few
seconds while the phase runs -- but only while it makes progress: the loader reports
prefixes as it parses them (``loaded``), and a phase without such a hook (YAML, compile,
kernel install) gets a budget that grows with the prefix count. A start that hangs
still times out. Without ``NOTIFY_SOCKET`` (not under systemd) no thread is started and
every call is a no-op send.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from op25b.daemon.sdnotify import Notifier
from op25b.policy.model import Policy

# How long a phase may run without progress before we stop asking for more time: above
# the slowest hook-less step seen at the limits (YAML of a 16 MiB policy, ~35 s).
STALL = 60.0
# Extra budget per million prefixes for the hook-less phases, from the 1 M figures above
# with a 5x margin for a slower router: compile ~2 s/M, kernel sets ~6 s/M.
COMPILE_PER_MILLION = 10.0
INSTALL_PER_MILLION = 30.0


def prefix_count(policy: Policy) -> int:
    """The plan prefixes of a policy (what the compile and install phases scale with)."""
    return sum(len(plan.prefixes) for plan in policy.plans)


def budget(per_million: float, prefixes: int) -> float:
    """A hook-less phase's budget for ``prefixes``: ``STALL`` plus its share per million."""
    return STALL + per_million * prefixes / 1e6


class Progress:
    """STATUS lines and timeout extensions for one phase at a time."""

    def __init__(
        self,
        notifier: Notifier,
        *,
        tick: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.tick = tick
        self.clock = clock
        self.text = ""
        self._label = ""
        self._deadline = 0.0  # the ticker extends until then; progress pushes it on
        self._stop = threading.Event()
        self.ticks = 0  # ticker wake-ups, extended or not (tests await them)

    @contextmanager
    def phase(self, text: str, allowed: float = STALL) -> Iterator[None]:
        """Announce ``text``; keep extending the timeout for up to ``allowed`` seconds
        (more with each ``loaded`` report) until the block ends."""
        self._label = self.text = text
        self._deadline = self.clock() + allowed
        self.notifier.extend_timeout(2 * self.tick, text)
        ticker: threading.Thread | None = None
        if self.notifier.enabled:
            self._stop.clear()
            ticker = threading.Thread(target=self._run, name="op25b-progress", daemon=True)
            ticker.start()
        try:
            yield
        finally:
            if ticker is not None:
                self._stop.set()
                ticker.join()

    def loaded(self, prefixes: int) -> None:
        """The loader's progress callback: ``prefixes`` parsed so far (cheap: no I/O)."""
        self.text = f"{self._label}: {prefixes:,} prefixes"
        self._deadline = max(self._deadline, self.clock() + STALL)

    def _run(self) -> None:
        # Ask for two ticks each tick: one lost or late datagram costs nothing.
        while not self._stop.wait(self.tick):
            if self.clock() < self._deadline:
                self.notifier.extend_timeout(2 * self.tick, self.text)
            self.ticks += 1
