"""The counters' syslog form: a readable MSG plus RFC 5424 structured data.

Cumulative totals and deltas since the previous report, from a
``op25b.dataplane.counters.CounterSnapshot`` and the kernel's queue statistics.
"""

from __future__ import annotations

from collections.abc import Mapping

from op25b.dataplane.counters import CounterSnapshot
from op25b.kernel.queuestats import QueueStats
from op25b.policy.decide import Reason, Verdict

SdParams = tuple[tuple[str, str], ...]

# Health counters that say nothing went wrong when they grow: in the structured data,
# not in the readable summary of troubles.
NOT_TROUBLE = frozenset(
    {"rules_ok", "rules_checks", "abuse_records_written", "abuse_records_pending"}
)


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
    health: Mapping[str, int] | None = None,
    previous_health: Mapping[str, int] | None = None,
) -> tuple[str, SdParams]:
    """Render counters as (readable MSG, structured-data params) for one syslog line.

    Params hold cumulative totals under plain names (``accept``, ``blocked``, ...) and
    the increase since ``previous`` under ``d_``-prefixed names; without ``previous``
    (the first report) the deltas equal the totals. ``interval`` is the seconds
    between the two snapshots (0 on the first report). Kernel queue drops are summed
    over the given queues. ``health`` adds cumulative counters of what went wrong
    around the verdicts (rules repaired, syslog messages dropped, abuse records lost,
    aggregation overflows, ...), each with its delta, so nothing the daemon counts is
    left out of the line.
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
    for name, value in (health or {}).items():
        add(name, value, previous_health.get(name) if previous_health is not None else None)
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
    troubles = [
        f"{name.replace('_', ' ')} {d['d_' + name]}"
        for name in (health or {})
        if name not in NOT_TROUBLE and d["d_" + name] != "0"
    ]
    if troubles:
        msg += "; " + ", ".join(troubles)
    return msg, params


class CounterReporter:
    """Remembers the previous report so the daemon only passes the current values."""

    __slots__ = ("_prev", "_prev_health", "_prev_queue")

    def __init__(self) -> None:
        self._prev: CounterSnapshot | None = None
        self._prev_queue: Mapping[int, QueueStats] | None = None
        self._prev_health: Mapping[str, int] | None = None

    def report(
        self,
        snapshot: CounterSnapshot,
        queue_stats: Mapping[int, QueueStats],
        health: Mapping[str, int] | None = None,
    ) -> tuple[str, SdParams]:
        """``format_counters`` against the last report, then remember this one."""
        out = format_counters(
            snapshot, queue_stats, self._prev, self._prev_queue, health, self._prev_health
        )
        self._prev = snapshot
        self._prev_queue = dict(queue_stats)
        self._prev_health = dict(health or {})
        return out
