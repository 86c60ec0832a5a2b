"""The report's aggregation as it was before issue 14, kept as the reference.

Owns nothing new: this is the per-source merge of ``op25b report`` as first written
(everything in memory, a record of the same router, source and window counted once).
The equivalence check (tests/unit/report_reference_check.py, run on every log the
report tests build) and bench/bench_report.py compare the current engines against it;
remove it once they no longer need it. It reads with today's ``abuseread`` and scores
with today's ``botscore``, so it differs from the engines only in how records are
merged (and, unlike them, drops the second part of a window a reload split: issue 15).
"""

from __future__ import annotations

import itertools
import statistics

from op25b.report.abuseread import Record
from op25b.report.botscore import SAMPLE_LIMIT, SourceReport, WindowStat, score_source


class _WindowAcc:
    """Mutable while merging (records of one window arrive from several files)."""

    __slots__ = ("first", "last", "packets", "routers")

    def __init__(self) -> None:
        self.packets = 0
        self.first = 0
        self.last = 0
        self.routers: list[str] = []


class _SourceAcc:
    __slots__ = ("actions", "family", "max_distinct", "plans", "samples", "windows")

    def __init__(self, family: int) -> None:
        self.family = family
        self.plans: set[str] = set()
        self.actions: set[str] = set()
        self.max_distinct = 0
        # destination -> (first_seen of the record naming it, index in its sample):
        # a first-seen order that does not depend on the order files are given in.
        self.samples: dict[str, tuple[int, int]] = {}
        self.windows: dict[tuple[int, int], _WindowAcc] = {}


class ReferenceAggregator:
    """Merges records from any number of files, in any order, into per-source state."""

    def __init__(self, since: int | None = None, until: int | None = None) -> None:
        self._since = since
        self._until = until
        self._sources: dict[str, _SourceAcc] = {}
        self.records = 0
        self.duplicates = 0
        self.filtered_out = 0

    def add(self, rec: Record) -> None:
        """Count one record (unless filtered out or a duplicate)."""
        # Whole windows are kept when their activity overlaps [since, until): the log
        # cannot split a window, and dropping a window that straddles the edge would
        # hide its attempts from both sides.
        if (self._since is not None and rec.last_seen < self._since) or (
            self._until is not None and rec.first_seen >= self._until
        ):
            self.filtered_out += 1
            return
        acc = self._sources.get(rec.source)
        if acc is None:
            acc = self._sources[rec.source] = _SourceAcc(rec.family)
        key = (rec.window_start, rec.window_end)
        win = acc.windows.get(key)
        if win is None:
            win = acc.windows[key] = _WindowAcc()
            win.first, win.last = rec.first_seen, rec.last_seen
        elif rec.router in win.routers:
            self.duplicates += 1
            return
        self.records += 1
        win.routers.append(rec.router)
        win.packets += rec.packets
        win.first = min(win.first, rec.first_seen)
        win.last = max(win.last, rec.last_seen)
        acc.plans.add(rec.plan)
        acc.actions.add(rec.action)
        acc.max_distinct = max(acc.max_distinct, rec.distinct_destinations)
        for i, dst in enumerate(rec.destinations_sample):
            seen = acc.samples.get(dst)
            if seen is None or (rec.first_seen, i) < seen:
                acc.samples[dst] = (rec.first_seen, i)

    def sources(self) -> list[SourceReport]:
        """Per-source summaries, sorted by score, then attempts, then source."""
        out = [_summarise(src, acc) for src, acc in self._sources.items()]
        out.sort(key=lambda s: (-s.score.value, -s.attempts, s.source))
        return out


def _summarise(source: str, acc: _SourceAcc) -> SourceReport:
    windows = tuple(
        WindowStat(k[0], k[1], w.packets, w.first, w.last, tuple(sorted(w.routers)))
        for k, w in sorted(acc.windows.items())
    )
    ordered = sorted(acc.samples, key=lambda d: acc.samples[d])
    distinct = max(acc.max_distinct, len(ordered))
    rates = [r for r in (w.rate for w in windows) if r is not None]
    peak_rate = max(rates) if rates else None
    intervals = [i for i in (w.interval_s for w in windows) if i is not None]
    if intervals:
        interval: float | None = statistics.median(intervals)
    elif len(windows) >= 2:
        starts = sorted(w.first_seen for w in windows)
        interval = statistics.median((b - a) / 1000 for a, b in itertools.pairwise(starts))
    else:
        interval = None
    counts = [w.packets for w in windows]
    peak_window = max(counts) if counts else 0
    score = score_source(
        distinct=distinct,
        peak_rate=peak_rate,
        peak_window_attempts=peak_window,
        window_counts=counts,
        retry_interval_s=interval,
    )
    routers = sorted({r for w in windows for r in w.routers})
    return SourceReport(
        source=source,
        family=acc.family,
        plans=tuple(sorted(acc.plans)),
        actions=tuple(sorted(acc.actions)),
        routers=tuple(routers),
        attempts=sum(counts),
        distinct_destinations=distinct,
        destinations_sample=tuple(ordered[:SAMPLE_LIMIT]),
        first_seen=min(w.first_seen for w in windows),
        last_seen=max(w.last_seen for w in windows),
        windows_active=len(windows),
        peak_window_attempts=peak_window,
        peak_rate=peak_rate,
        retry_interval_s=interval,
        score=score,
    )
