"""Daemon counters: per-packet tallies and their snapshots.

Owns what the daemon loop reports every ``counters_interval`` seconds (the kernel's
own queue drops are ``op25b.kernel.queuestats``, the syslog form is
``op25b.daemon.countersline``):

* ``Counters`` -- totals per verdict and per reason, parse errors, undecidable packets,
  reloads, and the packets the kernel's block cache dropped without asking us.
  ``record_index()`` sits on the per-packet path, so it does one list increment and
  nothing else; everything derived (per-verdict and per-reason totals, the packet total) is
  computed in ``snapshot()``, which runs once per report.

No clock here: callers pass monotonic ``now`` values in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from op25b.policy.decide import Decision, Reason, Verdict

# Every (verdict, reason) pair, by value. Enum members hash through a Python-level
# ``Enum.__hash__`` (hash of the name), which made a dict keyed by (Verdict, Reason)
# ~2-3x slower than one keyed by the members' ``_value_`` strings, whose hashes are
# cached in the str objects (measured: see tests/unit/test_counters.py and the
# module's report). ``_value_`` is the documented sunder name for a member's value.
_PAIRS: tuple[tuple[str, str], ...] = tuple((v._value_, r._value_) for v in Verdict for r in Reason)
# A pair's slot in Counters' list: the enforcer looks it up once per memoised decision
# and then counts with ``record_index`` (a list increment, no tuple built or hashed).
_PAIR_INDEX: dict[tuple[str, str], int] = {pair: i for i, pair in enumerate(_PAIRS)}


def pair_index(decision: Decision) -> int:
    """The slot ``Counters.record_index`` counts ``decision`` in."""
    return _PAIR_INDEX[decision.verdict._value_, decision.reason._value_]


def _frozen(mapping: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class CounterSnapshot:
    """The counters at one instant; ``at`` is the caller's monotonic time.

    ``packets`` counts every packet the daemon handled: decided + parse_errors +
    undecidable. Packets the kernel dropped (queue overflow, block cache) are not in
    it: they are in ``block_cache_packets`` here and in ``QueueStats``.
    """

    at: float
    packets: int
    verdicts: Mapping[str, int]  # Verdict value -> count, every verdict present
    reasons: Mapping[str, int]  # Reason value -> count, every reason present
    pairs: Mapping[tuple[str, str], int] = field(repr=False)  # (verdict, reason) -> count
    parse_errors: int = 0
    undecidable: int = 0
    reloads: int = 0
    reload_failures: int = 0
    block_cache_packets: int = 0

    @property
    def decided(self) -> int:
        """Packets that got a Decision."""
        return sum(self.verdicts.values())

    @property
    def blocked(self) -> int:
        """Packets decided ``blocked`` (dropped, rejected, or monitored)."""
        return self.reasons[Reason.BLOCKED.value]


class Counters:
    """Cumulative daemon counters; not thread-safe (one per worker, merge with ``merge``)."""

    __slots__ = (
        "_block_cache_packets",
        "_counts",
        "parse_errors",
        "reload_failures",
        "reloads",
        "undecidable",
    )

    def __init__(self) -> None:
        self._counts: list[int] = [0] * len(_PAIRS)
        self.parse_errors = 0
        self.undecidable = 0
        self.reloads = 0
        self.reload_failures = 0
        self._block_cache_packets = 0

    def record(self, decision: Decision) -> None:
        """Count one decided packet."""
        self._counts[pair_index(decision)] += 1

    def record_index(self, index: int) -> None:
        """Count one decided packet by its ``pair_index`` (the per-packet path)."""
        self._counts[index] += 1

    def record_parse_error(self) -> None:
        """Count a packet ``packet.parse`` refused."""
        self.parse_errors += 1

    def record_undecidable(self) -> None:
        """Count a packet whose decision raised (handled per ``daemon.on_error``)."""
        self.undecidable += 1

    def record_reload(self, ok: bool) -> None:
        """Count a policy reload attempt; a failed one keeps the old policy."""
        self.reloads += 1
        if not ok:
            self.reload_failures += 1

    def add_block_cache_packets(self, packets: int) -> None:
        """Add packets the kernel's verdict cache dropped for cached blocked sources.

        The daemon reads the kernel set's counters and passes the *increase* since its
        last read (entries time out and sets are swapped on reload, so only the
        daemon knows how to turn raw counters into deltas).
        """
        if packets < 0:
            raise ValueError(f"negative block-cache packet count: {packets}")
        self._block_cache_packets += packets

    def merge(self, other: Counters) -> None:
        """Add another worker's counters into this one."""
        counts = self._counts
        for i, n in enumerate(other._counts):
            counts[i] += n
        self.parse_errors += other.parse_errors
        self.undecidable += other.undecidable
        self.reloads += other.reloads
        self.reload_failures += other.reload_failures
        self._block_cache_packets += other._block_cache_packets

    def snapshot(self, now: float) -> CounterSnapshot:
        """Freeze the current totals; ``now`` is a monotonic time used for rates."""
        pairs = dict(zip(_PAIRS, self._counts, strict=True))
        verdicts = dict.fromkeys([v.value for v in Verdict], 0)
        reasons = dict.fromkeys([r.value for r in Reason], 0)
        for (v, r), n in pairs.items():
            verdicts[v] += n
            reasons[r] += n
        decided = sum(pairs.values())
        return CounterSnapshot(
            at=now,
            packets=decided + self.parse_errors + self.undecidable,
            verdicts=_frozen(verdicts),
            reasons=_frozen(reasons),
            pairs=MappingProxyType(pairs),
            parse_errors=self.parse_errors,
            undecidable=self.undecidable,
            reloads=self.reloads,
            reload_failures=self.reload_failures,
            block_cache_packets=self._block_cache_packets,
        )
