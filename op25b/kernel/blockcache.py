"""The kernel verdict cache for blocked sources, seen from the daemon.

After the daemon blocks a source, the source goes into ``op25b-block4/6`` (ipset
hash:ip with counters) and the mangle rules drop (or mark for reject) its further
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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from op25b.kernel.commands import run_command
from op25b.kernel.ipsets import (
    block_add_line,
    block_cache_read,
    block_set_line,
)
from op25b.kernel.names import set_name
from op25b.policy.addr import parse_address
from op25b.policy.decide import Decision

_ROTATE_SUFFIX = "-old"
# During a flood the queue socket never runs dry, so the loop cannot wait for the end
# of a batch: newly blocked sources are pushed to the kernel once this many are
# pending or the oldest has waited this long.
_FLUSH_COUNT = 64
_FLUSH_AGE = 0.005
_HASHSIZE = 4096


@dataclass(frozen=True, slots=True)
class CachedHits:
    """Packets the kernel dropped for one cached source since the last read."""

    version: int
    src: int
    packets: int
    decision: Decision


class BlockCache:
    """Adds blocked sources to the kernel cache and reads back what it handled."""

    def __init__(
        self,
        timeout: int,
        cmd_prefix: Sequence[str] = (),
        resolve: Callable[[int, int], Decision] | None = None,
    ) -> None:
        self.timeout = timeout
        self.cmd_prefix = tuple(cmd_prefix)
        # With several workers every one adds sources, but only the leader reads and
        # rotates the sets; ``resolve`` gives it the decision (plan, rule, action) for
        # a source another worker cached, so it can account for every entry.
        self.resolve = resolve
        self._pending: dict[tuple[int, int], Decision] = {}
        self._pending_since = 0.0
        # ipset runs as a subprocess; a worker thread waits for it so the verdict loop
        # never blocks on fork/exec (one thread keeps the adds in order).
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="op25b-cache")
        self._inflight: Future[None] | None = None
        # Sources in the live sets with the decision that put them there (plan, rule
        # and action for the abuse log) and the packet count already accounted.
        self._live: dict[tuple[int, int], Decision] = {}
        self._seen: dict[tuple[int, int], int] = {}
        self.errors = 0
        self.last_error = ""

    def want(self, version: int, src: int, decision: Decision) -> None:
        """Per-packet path: remember a blocked source; pushed to the kernel soon."""
        key = (version, src)
        if key in self._live or key in self._pending:
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
        """Hand pending sources to the ipset thread in one ``ipset restore``."""
        if not self._pending:
            return 0
        text = "".join(block_add_line(v, a, self.timeout * 2) for v, a in self._pending)
        batch, self._pending = self._pending, {}
        # Counted as live at once: until the add lands the daemon simply keeps deciding
        # these sources itself, which is correct, only slower.
        for key, d in batch.items():
            self._live[key] = d
            self._seen.setdefault(key, 0)
        self._inflight = self._io.submit(self._add, text)
        return len(batch)

    def _add(self, text: str) -> None:
        try:
            run_command(["ipset", "restore", "-exist"], self.cmd_prefix, text)
        except Exception as e:  # the daemon still decides these sources; keep going
            self.errors += 1
            self.last_error = str(e)

    def _settle(self) -> None:
        """Wait for adds in flight, so reads and rotations see them."""
        self.flush()
        if self._inflight is not None:
            self._inflight.result()
            self._inflight = None

    def forget(self) -> None:
        """A follower's rotation: the leader swapped the sets, so re-add from now on."""
        self._settle()
        self._live.clear()
        self._seen.clear()

    def close(self) -> None:
        """Stop the ipset thread (after what it has in hand)."""
        self._settle()
        self._io.shutdown(wait=True)

    def _read(self, names: dict[int, str]) -> dict[tuple[int, int], int]:
        counts: dict[tuple[int, int], int] = {}
        for version, name in names.items():
            for entry in block_cache_read(version, self.cmd_prefix, name):
                _, addr = parse_address(entry.address)
                counts[(version, addr)] = entry.packets
        return counts

    def _hits(self, counts: dict[tuple[int, int], int]) -> list[CachedHits]:
        out: list[CachedHits] = []
        for key, packets in counts.items():
            d = self._live.get(key)
            if d is None:
                if self.resolve is None:
                    continue  # added by a previous daemon; not ours to attribute
                d = self.resolve(*key)
            delta = packets - self._seen.get(key, 0)
            if delta > 0:
                out.append(CachedHits(key[0], key[1], delta, d))
            self._seen[key] = packets
        return out

    def read(self) -> list[CachedHits]:
        """Packets handled by the kernel since the last read, per source."""
        if not self._live and self.resolve is None:
            return []
        self._settle()
        try:
            return self._hits(self._read({4: set_name("block", 4), 6: set_name("block", 6)}))
        except Exception as e:
            self.errors += 1
            self.last_error = str(e)
            return []

    def rotate(self) -> list[CachedHits]:
        """Swap in empty sets, read the old ones' final counters, destroy them."""
        self._settle()
        names = {v: set_name("block", v) for v in (4, 6)}
        olds = {v: n + _ROTATE_SUFFIX for v, n in names.items()}
        create = "".join(
            block_set_line(olds[v], v, self.timeout * 2, hashsize=_HASHSIZE) for v in (4, 6)
        )
        # -exist + flush: a leftover from a crashed daemon must not be swapped back in.
        flush = "".join(f"flush {olds[v]}\n" for v in (4, 6))
        swap = "".join(f"swap {olds[v]} {names[v]}\n" for v in (4, 6))
        try:
            run_command(["ipset", "restore", "-exist"], self.cmd_prefix, create + flush + swap)
            hits = self._hits(self._read(olds)) if self._live or self.resolve else []
            run_command(
                ["ipset", "restore"],
                self.cmd_prefix,
                "".join(f"destroy {olds[v]}\n" for v in (4, 6)),
            )
        except Exception as e:
            self.errors += 1
            self.last_error = str(e)
            hits = []
        self._live.clear()
        self._seen.clear()
        return hits
