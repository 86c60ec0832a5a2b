"""The abuse-review log's aggregation: blocked attempts -> one record per source per window.

Owns the windows, the per-source state and the memory caps behind
docs/abuse-log-format.md; the record and its JSON are ``op25b.dataplane.abuserecord``.

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

Memory is bounded per window, and one subscriber's flood cannot hide another's
record: a source past a cap is *summarised*, its packets (exact), destinations and
ports going into an ``"overflow": true`` record for a covering prefix that counts
its sources (up to ``overflow_cap``, then a lower bound, ``_capped``). The caps:
``group_cap`` (256) own records per v6 group, the /(v6_aggregate - 16) around them
(a /64 spraying its /48: 256 records and one /48 overflow; 70,000 such sources cost
0.28 MiB, not 53 MiB, bench/bench_robust.py); ``max_sources`` (65536) own records,
neither family past three quarters of them (then 0.0.0.0/0 or ::/0 overflow);
hence at most ``max_sources // group_cap + 2`` overflow records per plan;
``distinct_cap`` (4096) destinations per record and ``max_destinations`` in all
(past either, ``distinct_destinations_capped``: "4096+").

Speed: most sources of a flood of new (or spoofed) addresses are seen once. Such a
source is held as a compact ``_Once`` tuple of plain numbers (its outcome interned
per window) and becomes a full record at its second attempt or when the window
closes; records, caps and counts are the same either way. Plain-number tuples are
also untracked by the cyclic garbage collector, whose passes over ~50k full records
(each an object with a set, a list and a dict) had tripled the cost of a v4 spray.

No clock: every call takes the caller's wall-clock ``now`` (seconds since the epoch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from op25b.dataplane.abuserecord import SAMPLE_SIZE, AbuseRecord
from op25b.dataplane.keys import V6_KEY_BIT
from op25b.policy.addr import format_address
from op25b.policy.decide import Verdict
from op25b.policy.model import Location

__all__ = ["AbuseAggregator", "AbuseRecord", "AggregatorStats"]

# A v6 group is the /(v6_aggregate - 16) around a source (the /48 of a /64): room for
# 65536 sources, of which at most ``group_cap`` get records of their own per window.
GROUP_BITS = 16


@dataclass(frozen=True, slots=True)
class AggregatorStats:
    """Sizes now and what the caps cost since start; the daemon reports these."""

    tracked_sources: int  # sources with a record of their own in the open window
    tracked_destinations: int  # distinct destinations held now, all records
    overflow_open: int  # overflow records in the open window
    overflow_records: int  # overflow records closed since start
    overflow_sources: int  # sources summarised into them since start (lower bound, see doc)
    overflow_packets: int  # their packets since start (exact)
    capped_records: int  # records written with distinct_destinations_capped


# A source seen once: (outcome id, first seen, destination or -1 when a cap kept it
# out, port or -1 when past max_ports). Its packet count is 1, last seen = first seen.
_Once = tuple[int, float, int, int]


@dataclass
class _Source:
    """Mutable state of one open record (private; never leaves the module).

    ``prefix_len`` is None for a source's own record; an overflow record has the
    length of the prefix it sums up and remembers (up to a cap) which sources it holds.
    """

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
    prefix_len: int | None = None
    members: set[int] | None = None
    members_capped: bool = False


class AbuseAggregator:
    """Per-window, per-source aggregation of blocked connection attempts."""

    def __init__(
        self,
        *,
        window: float = 300.0,
        v6_aggregate: int = 64,
        router: str = "",
        max_sources: int = 65536,
        group_cap: int = 256,
        overflow_cap: int = 1024,
        distinct_cap: int = 4096,
        max_destinations: int = 1_000_000,
        max_ports: int = 64,
    ) -> None:
        if not window > 0 or not math.isfinite(window):
            raise ValueError(f"abuse window must be a positive number of seconds: {window:g}")
        if not 0 <= v6_aggregate <= 128:
            raise ValueError(f"v6_aggregate must be 0..128: {v6_aggregate}")
        if max_sources < 4 or group_cap < 1 or overflow_cap < 0:
            raise ValueError("max_sources must be >= 4, group_cap >= 1, overflow_cap >= 0")
        self.window = float(window)
        self.v6_aggregate = v6_aggregate
        self.router = router
        self.max_sources = max_sources
        # Neither family may take the last quarter: a spray in one cannot hide the other.
        self.family_cap = max_sources - max_sources // 4
        self.group_cap = group_cap
        self.group_len = max(0, v6_aggregate - GROUP_BITS)
        self.overflow_cap = overflow_cap
        self.distinct_cap = distinct_cap
        self.max_destinations = max_destinations
        self.max_ports = max_ports
        self._v6_shift = 128 - v6_aggregate
        self._group_shift = 128 - self.group_len

        self._start: float | None = None  # open window's start; None before first use
        self._current: dict[int, _Source | _Once] = {}
        # The window's distinct (plan, action, rule) outcomes, for _Once records; keyed
        # by identity, which the list keeps alive (a reload's equal copies just add one).
        self._outcomes: list[tuple[str | None, Verdict, Location | None]] = []
        self._outcome_ids: dict[tuple[str | None, int, int], int] = {}
        self._family_sizes = [0] * 7  # tracked sources per IP version, open window
        self._group_sizes: dict[int, int] = {}  # tracked v6 sources per group key
        self._overflow: dict[tuple[int, int, str | None], _Source] = {}
        self._previous_keys: set[int] = set()  # sources of the window right before
        self._closed: list[AbuseRecord] = []  # records awaiting due()/flush_all()
        self._destinations = 0
        self._overflow_records = 0
        self._overflow_sources = 0
        self._overflow_packets = 0
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
        entry: _Source | None = None
        new = False
        start = self._start
        if start is not None and start <= now_wall < start + self.window:
            # A flooding bot's every packet: its full record, same outcome, open window.
            # Checked here without _entry's call and tuple (~15% of a memo-hit packet).
            key = src if version == 4 else ((src >> self._v6_shift) << self._v6_shift) | V6_KEY_BIT
            found = self._current.get(key)
            if (
                isinstance(found, _Source)
                and found.action is action
                and found.rule is rule
                and found.plan == plan
            ):
                entry = found
        if entry is None:
            entry, new = self._entry(version, src, plan, action, rule, now_wall, 1, dst, dport)
            if entry is None:
                return new  # a new _Once record holds this attempt
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
        entry, new = self._entry(version, src, plan, action, rule, now_wall, packets)
        assert entry is not None  # only an observed attempt makes a _Once
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
        packets: int,
        dst: int = -1,
        dport: int = -1,
    ) -> tuple[_Source | None, bool]:
        """The open record of ``src`` for this outcome, and whether the source is new.

        None instead of a record: a first attempt (``dst`` >= 0) of a source with no
        record yet, now held as a _Once with that attempt counted in.
        """
        start = self._start
        if start is None or now >= start + self.window:
            self._roll(now)
        elif now < start:
            # The wall clock stepped back (NTP): stay in the open window rather than
            # reopen a closed one, and keep its times inside it.
            now = start
        key = self._key(version, src)
        found = self._current.get(key)
        entry = self._expand(key, found) if isinstance(found, tuple) else found
        if entry is not None:
            # `is` first: the same compiled policy hands out the same objects.
            if (
                entry.action is action
                and (entry.rule is rule or entry.rule == rule)
                and (entry.plan == plan)
            ):
                self._current[key] = entry  # (a _Once expanded: its second attempt)
                return entry, False
            # A reload changed this source's outcome mid-window: close its record
            # early so one record never mixes two actions or rules. The source keeps
            # its place (and its count in the caps) under the new outcome.
            self._close(entry, window_end=max(now, entry.last_seen))
            new = False
        else:
            where = self._overflow_prefix(version, key)
            if where is not None:
                return self._summarise(key, (*where, plan), action, rule, now, packets), False
            new = key not in self._previous_keys
            self._family_sizes[version] += 1
            if version == 6:
                group = (key >> self._group_shift) << self._group_shift
                self._group_sizes[group] = self._group_sizes.get(group, 0) + 1
            if dst >= 0:
                self._current[key] = self._once(plan, action, rule, now, dst, dport)
                return None, new
        entry = _Source(version, key, plan, action, rule, first_seen=now, last_seen=now)
        self._current[key] = entry
        return entry, new

    def _once(
        self,
        plan: str | None,
        action: Verdict,
        rule: Location | None,
        now: float,
        dst: int,
        dport: int,
    ) -> _Once:
        """A first attempt as a _Once, under the same caps ``observe`` applies."""
        ids = self._outcome_ids
        ident = (plan, id(action), id(rule))
        oid = ids.get(ident)
        if oid is None:
            oid = ids[ident] = len(self._outcomes)
            self._outcomes.append((plan, action, rule))
        if self.distinct_cap > 0 and self._destinations < self.max_destinations:
            self._destinations += 1
        else:
            dst = -1
        return (oid, now, dst, dport if self.max_ports > 0 else -1)

    def _expand(self, key: int, once: _Once) -> _Source:
        """The full record of a _Once (its destination already counted in the caps)."""
        oid, seen, dst, dport = once
        plan, action, rule = self._outcomes[oid]
        version = 6 if key & V6_KEY_BIT else 4
        entry = _Source(version, key, plan, action, rule, first_seen=seen, last_seen=seen)
        entry.packets = 1
        if dst >= 0:
            entry.dests.add(dst)
            if SAMPLE_SIZE > 0:
                entry.sample.append(dst)
        else:
            entry.capped = True
        if dport >= 0:
            entry.ports[dport] = 1
        return entry

    def _overflow_prefix(self, version: int, key: int) -> tuple[int, int] | None:
        """(length, key) of the overflow record a new source goes to, None if it fits."""
        if version == 6:
            group = (key >> self._group_shift) << self._group_shift
            if self._group_sizes.get(group, 0) >= self.group_cap:
                return self.group_len, group
        if len(self._current) >= self.max_sources or self._family_sizes[version] >= self.family_cap:
            return 0, (0 if version == 4 else V6_KEY_BIT)
        return None

    def _summarise(
        self,
        key: int,
        slot: tuple[int, int, str | None],
        action: Verdict,
        rule: Location | None,
        now: float,
        packets: int,
    ) -> _Source:
        """The overflow record ``slot`` (prefix length, prefix key, plan), ``key`` counted in.

        Never "new": a spray must not turn into a storm of notices; its sources are
        in the stats and in the record.
        """
        length, prefix, plan = slot
        entry = self._overflow.get(slot)
        if entry is not None and entry.action is not action:
            self._close(entry, window_end=max(now, entry.last_seen))  # a reload, as above
            entry = None
        if entry is None:
            version = 6 if prefix & V6_KEY_BIT else 4
            entry = _Source(version, prefix, plan, action, rule, now, now)
            entry.prefix_len = length
            entry.members = set()
            self._overflow[slot] = entry
        elif entry.rule is not None and entry.rule is not rule and entry.rule != rule:
            entry.rule = None  # sources from several pool lines: no single rule
        members = entry.members
        assert members is not None
        if key not in members:
            if len(members) < self.overflow_cap:
                members.add(key)
                self._overflow_sources += 1
            else:
                entry.members_capped = True
        self._overflow_packets += packets
        return entry

    # -- windows --

    def _window_start(self, now: float) -> float:
        return math.floor(now / self.window) * self.window

    def _close_all(self, end: float) -> None:
        """Close every open record at ``end`` and empty the window."""
        for key, entry in self._current.items():
            full = self._expand(key, entry) if isinstance(entry, tuple) else entry
            self._close(full, window_end=end)
        for entry in self._overflow.values():
            self._close(entry, window_end=end)
        self._current = {}
        self._overflow = {}
        self._outcomes = []
        self._outcome_ids = {}
        self._family_sizes = [0] * 7
        self._group_sizes = {}
        self._destinations = 0

    def _roll(self, now: float) -> None:
        """Close the open window (if any) and open the one containing ``now``."""
        new_start = self._window_start(now)
        start = self._start
        if start is not None:
            end = start + self.window
            # "Previous window" means the one right before the new window: after a
            # gap of one or more empty windows nobody is remembered.
            contiguous = new_start - end < self.window / 2
            previous = set(self._current) if contiguous else set()
            self._close_all(end)
            self._previous_keys = previous
        self._start = new_start

    def _close(self, entry: _Source, *, window_end: float) -> None:
        assert self._start is not None
        self._destinations -= len(entry.dests)
        address = entry.key ^ V6_KEY_BIT if entry.version == 6 else entry.key
        source = format_address(entry.version, address)
        if entry.prefix_len is not None:
            source = f"{source}/{entry.prefix_len}"
            self._overflow_records += 1
        elif entry.version == 6:
            source = f"{source}/{self.v6_aggregate}"
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
                window_end=max(window_end, entry.last_seen),
                first_seen=entry.first_seen,
                last_seen=entry.last_seen,
                packets=entry.packets,
                distinct_destinations=len(entry.dests),
                destinations_sample=tuple(format_address(entry.version, d) for d in entry.sample),
                ports=tuple(sorted(entry.ports.items())),
                distinct_destinations_capped=entry.capped,
                kernel_packets=entry.kernel_packets,
                overflow=entry.prefix_len is not None,
                overflow_sources=len(entry.members) if entry.members is not None else 0,
                overflow_sources_capped=entry.members_capped,
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
                previous = set(self._current)
                self._close_all(now)
                self._previous_keys = previous
        out, self._closed = self._closed, []
        return out

    @property
    def stats(self) -> AggregatorStats:
        """Sizes and cap counters."""
        return AggregatorStats(
            tracked_sources=len(self._current),
            tracked_destinations=self._destinations,
            overflow_open=len(self._overflow),
            overflow_records=self._overflow_records,
            overflow_sources=self._overflow_sources,
            overflow_packets=self._overflow_packets,
            capped_records=self._capped_records,
        )
