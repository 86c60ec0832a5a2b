"""The kernel verdict cache for blocked sources, seen from the daemon.

After the daemon blocks a source, the source goes into ``op25b-block4/6`` (ipset
hash:ip with counters) and the kernel rules drop (or mark for reject) its further
attempts without asking userspace: a flooding bot then costs kernel time only.

Exact accounting is the hard part. Entries are never left to time out in the kernel,
because packets counted on an entry between our last read and its expiry would be
lost. Instead the daemon *rotates* the whole set every ``timeout`` seconds (and on
reload, to invalidate it): an empty set is swapped in, then the old one is read and
destroyed. Packets that hit the old set before the swap are in its final counters;
packets after the swap meet the empty set and reach the daemon again, which decides
(and counts) them itself and re-caches the source. Nothing is counted twice or lost.
The kernel timeout on entries (twice the rotation period) is only a safety net for a
daemon that died.

Nothing here blocks the verdict loop: adds, reads and rotations run on one I/O
thread in submission order (so an add submitted before a rotation lands in the old
set), and their results come back through ``poll()``. Each result belongs to the
*generation* of the set it read (the sources cached in it and the counts already
accounted), so a read that finishes after a rotation began is still attributed to
the right set. Measured: ``ipset save`` of 100k cached sources takes ~240 ms, which
used to be a 240 ms verdict gap once a second.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from op25b.policy.decide import Decision

# During a flood the queue socket never runs dry, so the loop cannot wait for the end
# of a batch: newly blocked sources are pushed to the kernel once this many are
# pending or the oldest has waited this long.
_FLUSH_COUNT = 64
_FLUSH_AGE = 0.005
_READS_PER_SECOND = 20_000  # cache entries a read may parse per second of period

Counts = dict[tuple[int, int], int]


class CacheKernel(Protocol):
    """The kernel side (``op25b.kernel.seam.Kernel`` provides it)."""

    def cache_add(self, entries: list[tuple[int, int]], timeout: int) -> None:
        """Add entries to the live sets."""

    def cache_counts(self) -> Counts:
        """The live sets' per-entry packet counters."""

    def cache_rotate(self, timeout: int) -> Counts:
        """Swap in empty sets; the old ones' final counters."""


@dataclass(frozen=True, slots=True)
class CachedHits:
    """Packets the kernel dropped for one cached source since the last read."""

    version: int
    src: int
    packets: int
    decision: Decision


@dataclass
class _Generation:
    """One incarnation of the kernel sets: who was put in it, and what is accounted."""

    live: dict[tuple[int, int], Decision] = field(default_factory=dict)
    seen: Counts = field(default_factory=dict)


class BlockCache:
    """Adds blocked sources to the kernel cache and accounts for what it handled.

    ``reader=False`` (a follower worker with ``workers > 1``) only adds: the leader
    reads and rotates, and attributes sources it did not cache itself with
    ``resolve`` (the source's decision under the policy in force).
    """

    def __init__(
        self,
        timeout: int,
        kernel: CacheKernel,
        *,
        reader: bool = True,
        resolve: Callable[[int, int], Decision] | None = None,
    ) -> None:
        self.timeout = timeout
        self.kernel = kernel
        self.reader = reader
        self.resolve = resolve
        self._gen = _Generation()
        self._pending: dict[tuple[int, int], Decision] = {}
        self._pending_since = 0.0
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="op25b-cache")
        # Results in submission order; reads and rotations are turned into hits on the
        # I/O thread too (100k entries are ~50 ms of dict work the loop must not do).
        self._results: deque[Future[list[CachedHits]]] = deque()
        self._last_read = 0.0
        self._last_size = 0  # entries seen by the last read or rotation
        self.errors = 0
        self.last_error = ""
        self.adds = 0  # sources handed to the kernel
        self.unattributed = 0  # packets counted on entries nobody could attribute

    # -- the per-packet side ---------------------------------------------------

    def want(self, version: int, src: int, decision: Decision) -> None:
        """Per-packet path: remember a blocked source; pushed to the kernel soon."""
        key = (version, src)
        if key in self._gen.live or key in self._pending:
            return
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending[key] = decision
        if (
            len(self._pending) >= _FLUSH_COUNT
            or time.monotonic() - self._pending_since >= _FLUSH_AGE
        ):
            self.flush()

    def flush(self) -> int:
        """Hand pending sources to the I/O thread in one ``ipset restore``."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        # Counted as live at once: until the add lands the daemon simply keeps deciding
        # these sources itself, which is correct, only slower.
        for key, d in batch.items():
            self._gen.live[key] = d
            self._gen.seen.setdefault(key, 0)
        self.adds += len(batch)
        self._submit(self.kernel.cache_add, "add", list(batch), self.timeout * 2)
        return len(batch)

    # -- reads and rotations (asynchronous) --------------------------------------

    def start_read(self, now: float | None = None) -> None:
        """Ask for the live sets' counters; the hits come back through ``poll()``.

        A big cache is read less often (every ``entries / 20,000`` seconds at least):
        reads only make attribution prompter, the rotation's final counts keep it exact.
        """
        if not self.reader or (not self._gen.live and self.resolve is None):
            return
        now = time.monotonic() if now is None else now
        if now - self._last_read < self._last_size / _READS_PER_SECOND:
            return
        self._last_read = now
        self.flush()
        self._submit(self.kernel.cache_counts, "read")

    def start_rotation(self) -> None:
        """Swap in empty sets now (in order after pending adds); hits via ``poll()``.

        A follower only forgets what it cached: the leader swapped the sets.
        """
        self.flush()
        if self.reader:
            self._submit(self.kernel.cache_rotate, "rotate", self.timeout * 2)
        self._gen = _Generation()

    def _submit(self, fn: Callable[..., Counts | None], kind: str, *args: object) -> None:
        gen = self._gen

        def call() -> list[CachedHits]:
            try:
                counts = fn(*args)
            except Exception as e:  # the daemon still decides these sources; keep going
                self.errors += 1
                self.last_error = f"{kind}: {e}"
                return []
            if counts is None or kind == "add":
                return []
            self._last_size = len(counts)
            return self._hits(gen, counts)

        self._results.append(self._io.submit(call))

    def poll(self, wait: bool = False) -> list[CachedHits]:
        """Hits of the reads and rotations finished so far, in order (``wait``: all)."""
        out: list[CachedHits] = []
        while self._results and (wait or self._results[0].done()):
            out.extend(self._results.popleft().result())
        return out

    @property
    def entries(self) -> int:
        """Sources in the live kernel set as far as we know (adds, and the last read)."""
        return len(self._gen.seen)

    @property
    def busy(self) -> int:
        """Kernel operations submitted and not yet collected."""
        return len(self._results)

    def _hits(self, gen: _Generation, counts: Counts) -> list[CachedHits]:
        # On the I/O thread. The loop may add keys to gen.live meanwhile (dict updates
        # are atomic); gen.seen is written here only (the loop's setdefault never
        # overwrites), so nothing is counted twice.
        out: list[CachedHits] = []
        for key, packets in counts.items():
            d = gen.live.get(key)
            if d is None:
                if self.resolve is None:
                    # Added by a previous daemon (or lost track): counted, not attributed.
                    self.unattributed += max(0, packets - gen.seen.get(key, 0))
                    gen.seen[key] = packets
                    continue
                d = self.resolve(*key)
            delta = packets - gen.seen.get(key, 0)
            if delta > 0:
                out.append(CachedHits(key[0], key[1], delta, d))
            gen.seen[key] = packets
        return out

    def close(self) -> list[CachedHits]:
        """Final rotation (a reader) and stop the I/O thread; the last hits."""
        self.start_rotation()
        hits = self.poll(wait=True)
        self._io.shutdown(wait=True)
        return hits
