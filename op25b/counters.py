"""Daemon counters: per-packet tallies, the kernel's queue statistics, and their syslog form.

Owns three things the daemon loop reports every ``counters_interval`` seconds:

* ``Counters`` -- totals per verdict and per reason, parse errors, undecidable packets,
  reloads, and the packets the kernel's block cache dropped without asking us.
  ``record()`` sits on the per-packet path, so it does one dict increment and nothing
  else; everything derived (per-verdict and per-reason totals, the packet total) is
  computed in ``snapshot()``, which runs once per report.
* ``kernel_queue_stats()`` -- the per-queue line of
  ``/proc/net/netfilter/nfnetlink_queue``, where the kernel admits the packets *it*
  dropped because we were too slow (``queue_dropped``) or our socket buffer was full
  (``user_dropped``). Those never reach ``record()``, so without this a saturated
  daemon would report perfect numbers.
* ``format_counters()`` -- a readable syslog MSG plus RFC 5424 structured-data params,
  cumulative totals and deltas since the previous report.

No clock here: callers pass monotonic ``now`` values in.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from op25b.decide import Decision, Reason, Verdict

NFQUEUE_PROC = "/proc/net/netfilter/nfnetlink_queue"

# The key of one per-packet increment. Enum members hash through a Python-level
# ``Enum.__hash__`` (hash of the name), which made a dict keyed by (Verdict, Reason)
# ~2-3x slower than one keyed by the members' ``_value_`` strings, whose hashes are
# cached in the str objects (measured: see tests/unit/test_counters.py and the
# module's report). ``_value_`` is the documented sunder name for a member's value.
_PAIRS: tuple[tuple[str, str], ...] = tuple((v._value_, r._value_) for v in Verdict for r in Reason)


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
        "_pairs",
        "parse_errors",
        "reload_failures",
        "reloads",
        "undecidable",
    )

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, str], int] = dict.fromkeys(_PAIRS, 0)
        self.parse_errors = 0
        self.undecidable = 0
        self.reloads = 0
        self.reload_failures = 0
        self._block_cache_packets = 0

    def record(self, decision: Decision) -> None:
        """Count one decided packet (per-packet path: a single dict increment)."""
        self._pairs[decision.verdict._value_, decision.reason._value_] += 1

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
        for key, n in other._pairs.items():
            self._pairs[key] += n
        self.parse_errors += other.parse_errors
        self.undecidable += other.undecidable
        self.reloads += other.reloads
        self.reload_failures += other.reload_failures
        self._block_cache_packets += other._block_cache_packets

    def snapshot(self, now: float) -> CounterSnapshot:
        """Freeze the current totals; ``now`` is a monotonic time used for rates."""
        pairs = dict(self._pairs)
        verdicts = dict.fromkeys((v.value for v in Verdict), 0)
        reasons = dict.fromkeys((r.value for r in Reason), 0)
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


# --- kernel queue statistics -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One line of /proc/net/netfilter/nfnetlink_queue (cumulative since the bind)."""

    queue_num: int
    peer_portid: int
    queue_total: int  # packets waiting for a verdict right now
    copy_mode: int
    copy_range: int
    queue_dropped: int  # kernel dropped: queue full (queue_maxlen reached)
    user_dropped: int  # kernel dropped: netlink send to our socket failed (rcvbuf full)
    id_sequence: int


_QUEUE_FIELDS = 8  # the kernel prints a 9th column, always 1 (historical use count)


def parse_queue_stats(text: str, queues: Iterable[int] | None = None) -> dict[int, QueueStats]:
    """Parse the proc file's text; lines that do not parse are skipped, not fatal.

    Robust on purpose: this runs in the daemon's reporting path, and a format change
    in some kernel must cost us the queue numbers, not the daemon.
    """
    wanted = None if queues is None else frozenset(queues)
    out: dict[int, QueueStats] = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < _QUEUE_FIELDS:
            continue
        try:
            nums = [int(c) for c in cols[:_QUEUE_FIELDS]]
        except ValueError:
            continue
        if any(n < 0 for n in nums):
            continue
        stats = QueueStats(*nums)
        if wanted is None or stats.queue_num in wanted:
            out[stats.queue_num] = stats
    return out


def kernel_queue_stats(
    path: str = NFQUEUE_PROC, queues: Iterable[int] | None = None
) -> dict[int, QueueStats]:
    """Read the kernel's per-queue stats; empty when no queue is bound or no such file.

    The file only exists once nfnetlink_queue is loaded and only lists bound queues, so
    absence is normal at start-up and after the daemon unbinds; other read errors are
    raised (a permission problem should be seen, not read as 'no drops').
    """
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return {}
        raise
    return parse_queue_stats(text, queues)


# --- syslog form ---------------------------------------------------------------------

SdParams = tuple[tuple[str, str], ...]


def _delta(now: int, before: int | None) -> int:
    # A counter that went backwards was reset (queue rebound, worker restarted):
    # the new value is then the best estimate of what happened since.
    if before is None:
        return now
    return now - before if now >= before else now


def _queue_totals(stats: Mapping[int, QueueStats]) -> tuple[int, int, int]:
    waiting = sum(s.queue_total for s in stats.values())
    qdrop = sum(s.queue_dropped for s in stats.values())
    udrop = sum(s.user_dropped for s in stats.values())
    return waiting, qdrop, udrop


def format_counters(
    snapshot: CounterSnapshot,
    queue_stats: Mapping[int, QueueStats],
    previous: CounterSnapshot | None = None,
    previous_queue: Mapping[int, QueueStats] | None = None,
) -> tuple[str, SdParams]:
    """Render counters as (readable MSG, structured-data params) for one syslog line.

    Params hold cumulative totals under plain names (``accept``, ``blocked``, ...) and
    the increase since ``previous`` under ``d_``-prefixed names; without ``previous``
    (the first report) the deltas equal the totals. ``interval`` is the seconds
    between the two snapshots (0 on the first report). Kernel queue drops are summed
    over the given queues.
    """
    prev_at = previous.at if previous is not None else snapshot.at
    interval = max(0.0, snapshot.at - prev_at)

    totals: list[tuple[str, str]] = []
    deltas: list[tuple[str, str]] = []

    def add(name: str, now: int, before: int | None) -> None:
        totals.append((name, str(now)))
        deltas.append((f"d_{name}", str(_delta(now, before))))

    add("packets", snapshot.packets, previous.packets if previous else None)
    for v in Verdict:
        add(v.value, snapshot.verdicts[v.value], previous.verdicts[v.value] if previous else None)
    for r in Reason:
        add(r.value, snapshot.reasons[r.value], previous.reasons[r.value] if previous else None)
    add("parse_errors", snapshot.parse_errors, previous.parse_errors if previous else None)
    add("undecidable", snapshot.undecidable, previous.undecidable if previous else None)
    add("reloads", snapshot.reloads, previous.reloads if previous else None)
    add(
        "reload_failures",
        snapshot.reload_failures,
        previous.reload_failures if previous else None,
    )
    add(
        "block_cache",
        snapshot.block_cache_packets,
        previous.block_cache_packets if previous else None,
    )
    waiting, qdrop, udrop = _queue_totals(queue_stats)
    if previous_queue is not None:
        _, p_qdrop, p_udrop = _queue_totals(previous_queue)
        before_q: int | None = p_qdrop
        before_u: int | None = p_udrop
    else:
        before_q = before_u = None
    add("queue_dropped", qdrop, before_q)
    add("user_dropped", udrop, before_u)
    params: SdParams = (
        ("interval", f"{interval:.0f}"),
        *totals,
        ("queue_waiting", str(waiting)),
        *deltas,
    )
    d = dict(params)
    msg = (
        f"counters: {d['d_packets']} packets in {d['interval']}s"
        f" (accept {d['d_accept']}, drop {d['d_drop']}, reject {d['d_reject']},"
        f" monitor {d['d_monitor']}; blocked {d['d_blocked']});"
        f" parse errors {d['d_parse_errors']}, undecidable {d['d_undecidable']};"
        f" kernel dropped {d['d_queue_dropped']} queue-full + {d['d_user_dropped']}"
        f" socket-full, {d['d_block_cache']} by block cache;"
        f" total {d['packets']} packets, {d['blocked']} blocked"
    )
    return msg, params


class CounterReporter:
    """Remembers the previous report so the daemon only passes the current values."""

    __slots__ = ("_prev", "_prev_queue")

    def __init__(self) -> None:
        self._prev: CounterSnapshot | None = None
        self._prev_queue: Mapping[int, QueueStats] | None = None

    def report(
        self, snapshot: CounterSnapshot, queue_stats: Mapping[int, QueueStats]
    ) -> tuple[str, SdParams]:
        """``format_counters`` against the last report, then remember this one."""
        out = format_counters(snapshot, queue_stats, self._prev, self._prev_queue)
        self._prev = snapshot
        self._prev_queue = dict(queue_stats)
        return out
