"""The abuse-review log: blocked sources aggregated per time window, as JSON lines.

Owns the aggregation (``AbuseAggregator``) and the record (``AbuseRecord``) behind
docs/abuse-log-format.md, whose record shape is fixed (fields may be added, never
renamed).

Aggregation. Windows are aligned to multiples of ``window`` seconds of wall-clock
time (a 300 s window runs 18:00:00-18:05:00), so records from several routers line
up. One record per blocked source (an IPv4 address, or an IPv6 /N prefix: a bot on
an IPv6 subscriber line can hop through its /64 at will, so a per-address record
would both flood the log and hide the subscriber) and per (plan, action, rule)
within a window -- a reload that changes a source's outcome closes its record early
rather than mixing drop and monitor packets in one.

"New" source (the daemon sends one syslog NOTICE for it): a source that was seen
neither in the current window nor in the window immediately before it. A bot that
keeps trying is announced once; one that goes quiet for at least a whole window and
comes back is announced again. The aggregator outlives policy reloads, so a reload
does not re-announce every active source.

Memory is bounded: at most ``max_sources`` sources per window (further sources are
counted in ``stats`` but not recorded), at most ``distinct_cap`` distinct
destinations remembered per source and ``max_destinations`` over all sources. Past
either cap ``distinct_destinations`` is a lower bound and the record says
``"distinct_destinations_capped": true`` ("4096+").

No clock: every call takes the caller's wall-clock ``now`` (seconds since the epoch).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from op25b.dataplane.keys import V6_KEY_BIT
from op25b.policy.addr import format_address
from op25b.policy.decide import Verdict
from op25b.policy.model import Location
from op25b.util.timefmt import format_seconds

RECORD_TYPE = "blocked_source"
FORMAT_VERSION = 1
SAMPLE_SIZE = 16  # fixed by the format: at most 16 destinations in first-seen order


@dataclass(frozen=True)
class AbuseRecord:
    """One line of the abuse log; ``as_dict()`` has the documented key order."""

    router: str
    source: str  # "100.64.0.66" or "2001:db8:100::/64"
    family: int
    plan: str | None
    action: str
    rule: str | None
    window_start: float
    window_end: float
    first_seen: float
    last_seen: float
    packets: int
    distinct_destinations: int
    destinations_sample: tuple[str, ...]
    ports: tuple[tuple[int, int], ...]  # (port, packets), ascending port
    distinct_destinations_capped: bool = False
    kernel_packets: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The record as the JSON object of docs/abuse-log-format.md."""
        return {
            "type": RECORD_TYPE,
            "version": FORMAT_VERSION,
            "router": self.router,
            "source": self.source,
            "family": self.family,
            "plan": self.plan,
            "action": self.action,
            "rule": self.rule,
            "window_start": format_seconds(self.window_start),
            "window_end": format_seconds(self.window_end),
            "first_seen": format_seconds(self.first_seen),
            "last_seen": format_seconds(self.last_seen),
            "packets": self.packets,
            "distinct_destinations": self.distinct_destinations,
            "destinations_sample": list(self.destinations_sample),
            "ports": {str(p): n for p, n in self.ports},
            "distinct_destinations_capped": self.distinct_destinations_capped,
            "kernel_packets": self.kernel_packets,
        }

    def to_json(self) -> str:
        """One JSON line, without the trailing newline."""
        return json.dumps(self.as_dict(), ensure_ascii=True)


@dataclass(frozen=True, slots=True)
class AggregatorStats:
    """How much the caps cost since start; the daemon reports these to syslog."""

    tracked_sources: int  # in the open window now
    tracked_destinations: int  # distinct destinations held now, all sources
    untracked_sources: int  # sources refused because max_sources was reached
    untracked_packets: int  # their packets
    capped_records: int  # records written with distinct_destinations_capped


@dataclass
class _Source:
    """Mutable per-source state of the open window (private; never leaves the module)."""

    version: int
    key: int
    plan: str | None
    action: Verdict
    rule: Location | None
    first_seen: float
    last_seen: float
    packets: int = 0
    kernel_packets: int = 0
    dests: set[int] = field(default_factory=set)
    sample: list[int] = field(default_factory=list)
    ports: dict[int, int] = field(default_factory=dict)
    capped: bool = False


class AbuseAggregator:
    """Per-window, per-source aggregation of blocked connection attempts."""

    def __init__(
        self,
        *,
        window: float = 300.0,
        v6_aggregate: int = 64,
        router: str = "",
        max_sources: int = 65536,
        distinct_cap: int = 4096,
        max_destinations: int = 1_000_000,
        max_ports: int = 64,
    ) -> None:
        if not window > 0 or not math.isfinite(window):
            raise ValueError(f"abuse window must be a positive number of seconds: {window}")
        if not 0 <= v6_aggregate <= 128:
            raise ValueError(f"v6_aggregate must be 0..128: {v6_aggregate}")
        self.window = float(window)
        self.v6_aggregate = v6_aggregate
        self.router = router
        self.max_sources = max_sources
        self.distinct_cap = distinct_cap
        self.max_destinations = max_destinations
        self.max_ports = max_ports
        self._v6_shift = 128 - v6_aggregate

        self._start: float | None = None  # open window's start; None before first use
        self._current: dict[int, _Source] = {}
        self._previous_keys: set[int] = set()  # sources of the window right before
        self._closed: list[AbuseRecord] = []  # records awaiting due()/flush_all()
        self._destinations = 0
        self._untracked_sources: set[int] = set()
        self._untracked_sources_total = 0
        self._untracked_packets = 0
        self._capped_records = 0

    # -- observations --

    def _key(self, version: int, src: int) -> int:
        if version == 4:
            return src
        return ((src >> self._v6_shift) << self._v6_shift) | V6_KEY_BIT

    def observe(
        self,
        version: int,
        src: int,
        dst: int,
        dport: int,
        plan: str | None,
        action: Verdict,
        rule: Location | None,
        now_wall: float,
    ) -> bool:
        """Count one blocked attempt; True when the source is new (see module docstring)."""
        entry, new = self._entry(version, src, plan, action, rule, now_wall)
        if entry is None:
            return False
        entry.packets += 1
        if now_wall > entry.last_seen:
            entry.last_seen = now_wall
        ports = entry.ports
        if dport in ports:
            ports[dport] += 1
        elif len(ports) < self.max_ports:
            ports[dport] = 1
        dests = entry.dests
        if dst not in dests:
            if len(dests) < self.distinct_cap and self._destinations < self.max_destinations:
                dests.add(dst)
                self._destinations += 1
                if len(entry.sample) < SAMPLE_SIZE:
                    entry.sample.append(dst)
            else:
                entry.capped = True
        return new

    def add_kernel_count(
        self,
        version: int,
        src: int,
        packets: int,
        plan: str | None,
        action: Verdict,
        rule: Location | None,
        now_wall: float,
    ) -> bool:
        """Add packets the kernel's block cache dropped for this source since the last read.

        No destinations or ports are known for them; they count in ``packets`` and in
        ``kernel_packets``. ``now_wall`` (the read time) stands in for when they were
        seen. Returns whether the source is new, like ``observe``.
        """
        if packets <= 0:
            return False
        entry, new = self._entry(version, src, plan, action, rule, now_wall)
        if entry is None:
            return False
        entry.packets += packets
        entry.kernel_packets += packets
        if now_wall > entry.last_seen:
            entry.last_seen = now_wall
        return new

    def _entry(
        self,
        version: int,
        src: int,
        plan: str | None,
        action: Verdict,
        rule: Location | None,
        now: float,
    ) -> tuple[_Source | None, bool]:
        start = self._start
        if start is None or now >= start + self.window:
            self._roll(now)
        elif now < start:
            # The wall clock stepped back (NTP): stay in the open window rather than
            # reopen a closed one, and keep its times inside it.
            now = start
        key = self._key(version, src)
        entry = self._current.get(key)
        if entry is not None:
            # `is` first: the same compiled policy hands out the same objects.
            if (
                entry.action is action
                and (entry.rule is rule or entry.rule == rule)
                and (entry.plan == plan)
            ):
                return entry, False
            # A reload changed this source's outcome mid-window: close its record
            # early so one record never mixes two actions or rules.
            self._close(entry, window_end=max(now, entry.last_seen))
            del self._current[key]
            new = False
        else:
            new = key not in self._previous_keys
            if len(self._current) >= self.max_sources:
                if key not in self._untracked_sources:
                    if len(self._untracked_sources) < self.max_sources:
                        self._untracked_sources.add(key)
                    self._untracked_sources_total += 1
                self._untracked_packets += 1
                return None, False
        entry = _Source(version, key, plan, action, rule, first_seen=now, last_seen=now)
        self._current[key] = entry
        return entry, new

    # -- windows --

    def _window_start(self, now: float) -> float:
        return math.floor(now / self.window) * self.window

    def _roll(self, now: float) -> None:
        """Close the open window (if any) and open the one containing ``now``."""
        new_start = self._window_start(now)
        start = self._start
        if start is not None:
            end = start + self.window
            for entry in self._current.values():
                self._close(entry, window_end=end)
            # "Previous window" means the one right before the new window: after a
            # gap of one or more empty windows nobody is remembered.
            contiguous = new_start - end < self.window / 2
            self._previous_keys = set(self._current) if contiguous else set()
        self._current = {}
        self._destinations = 0
        self._untracked_sources = set()
        self._start = new_start

    def _close(self, entry: _Source, *, window_end: float) -> None:
        assert self._start is not None
        self._destinations -= len(entry.dests)
        if entry.version == 4:
            source = format_address(4, entry.key)
        else:
            source = f"{format_address(6, entry.key ^ V6_KEY_BIT)}/{self.v6_aggregate}"
        if entry.capped:
            self._capped_records += 1
        self._closed.append(
            AbuseRecord(
                router=self.router,
                source=source,
                family=entry.version,
                plan=entry.plan,
                action=entry.action.value,
                rule=str(entry.rule) if entry.rule is not None else None,
                window_start=self._start,
                window_end=window_end,
                first_seen=entry.first_seen,
                last_seen=entry.last_seen,
                packets=entry.packets,
                distinct_destinations=len(entry.dests),
                destinations_sample=tuple(format_address(entry.version, d) for d in entry.sample),
                ports=tuple(sorted(entry.ports.items())),
                distinct_destinations_capped=entry.capped,
                kernel_packets=entry.kernel_packets,
            )
        )

    def due(self, now: float) -> list[AbuseRecord]:
        """Records of every window that has ended by ``now`` (and early-closed ones).

        Call it from the daemon loop at least once per window; calling it late only
        delays records, observations already roll windows over on their own.
        """
        start = self._start
        if start is not None and now >= start + self.window:
            self._roll(now)
        out, self._closed = self._closed, []
        return out

    def flush_all(self, now: float) -> list[AbuseRecord]:
        """Close everything at shutdown; the open window's records end at ``now``.

        Ending the cut-short window at ``now`` (not its nominal end) keeps a restarted
        daemon's records from claiming overlapping periods.
        """
        if self._start is not None:
            nominal_end = self._start + self.window
            if now >= nominal_end:
                self._roll(now)
            else:
                for entry in self._current.values():
                    self._close(entry, window_end=max(now, entry.last_seen))
                self._previous_keys = set(self._current)
                self._current = {}
                self._destinations = 0
        out, self._closed = self._closed, []
        return out

    @property
    def stats(self) -> AggregatorStats:
        """Sizes and cap counters."""
        return AggregatorStats(
            tracked_sources=len(self._current),
            tracked_destinations=self._destinations,
            untracked_sources=self._untracked_sources_total,
            untracked_packets=self._untracked_packets,
            capped_records=self._capped_records,
        )
