"""The pure-Python report engine: records streamed in, per-source state in memory.

Owns merging validated records (``op25b.report.abuseread``) into one ``SourceStats``
per source without any optional dependency. Memory grows with the per-source state
(one small object per source and window, plus the destination samples), not with
the log: about 5x less than the first implementation on a fleet's logs (see
bench/README.md), but not bounded; ``op25b.report.duckengine`` is the bounded one.

What counts once: a record equal to one already counted in every field the report
reads (router, plan, action, rule, times, counts, sample) is the same record read twice.
Records of one window (same source and aligned ``window_start``) that differ are parts
to add up: other routers, or the parts of a window a policy reload or a restart split
(the first part's ``window_end`` is then the reload or shutdown time; see
docs/abuse-log-format.md).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from sys import intern

from op25b.report.abuseread import Problem, Record, read_log
from op25b.report.botscore import (
    DAY_MS,
    SAMPLE_LIMIT,
    Brief,
    DayStat,
    SourceStats,
    WindowStat,
    sample_order,
    window_interval,
    window_rate,
)
from op25b.report.query import ProgressSink, Query, Totals

PROGRESS_EVERY = 65_536  # records between progress updates (a cheap modulo per record)

# A record's identity within its source and window (what makes it a duplicate).
_Part = tuple[str, str, str, str | None, int, int, int, int, int, tuple[str, ...]]


class _WindowAcc:
    """Mutable while merging (records of one window arrive from several files)."""

    __slots__ = ("end", "first", "last", "packets", "parts")

    def __init__(self, end: int, first: int, last: int) -> None:
        self.end = end
        self.packets = 0
        self.first = first
        self.last = last
        # Usually one part (two or three across routers or a reload): a list costs
        # half a set's memory and is as fast to search at that size.
        self.parts: list[_Part] = []


class _DayAcc:
    __slots__ = ("max_distinct", "samples")

    def __init__(self) -> None:
        self.max_distinct = 0
        self.samples: set[str] = set()


class _SourceAcc:
    __slots__ = ("actions", "days", "family", "max_distinct", "plans", "samples", "windows")

    def __init__(self, family: int, by_day: bool) -> None:
        self.family = family
        self.plans: set[str] = set()
        self.actions: set[str] = set()
        self.max_distinct = 0
        # destination -> (first_seen of the record naming it, index in its sample):
        # a first-seen order that does not depend on the order files are given in.
        self.samples: dict[str, tuple[int, int]] = {}
        # Keyed by the window's aligned start only: a record cut short by a reload or
        # a shutdown has an earlier window_end, yet belongs to the same window.
        self.windows: dict[int, _WindowAcc] = {}
        self.days: dict[int, _DayAcc] | None = {} if by_day else None


class PyRun:
    """Merges records from any number of files, in any order, into per-source state."""

    def __init__(self, query: Query) -> None:
        self._query = query
        self._filtering = query != Query(by_day=query.by_day)
        self._sources: dict[str, _SourceAcc] = {}
        self._records = 0
        self._duplicates = 0
        self._filtered_out = 0

    @property
    def totals(self) -> Totals:
        """Records counted, duplicates ignored, records filtered out so far."""
        return Totals(self._records, self._duplicates, self._filtered_out)

    def add(self, rec: Record) -> None:
        """Count one record (unless filtered out or a duplicate)."""
        if self._filtering and not self._query.keeps(rec):
            self._filtered_out += 1
            return
        acc = self._sources.get(rec.source)
        if acc is None:
            acc = self._sources[rec.source] = _SourceAcc(rec.family, self._query.by_day)
        win = acc.windows.get(rec.window_start)
        if win is None:
            win = acc.windows[rec.window_start] = _WindowAcc(
                rec.window_end, rec.first_seen, rec.last_seen
            )
        # Interned: a part is kept per record, and its strings are the same few
        # thousand names and addresses over and over (json.loads makes new copies).
        part = (intern(rec.router), intern(rec.plan), intern(rec.action),
                None if rec.rule is None else intern(rec.rule), rec.window_end,
                rec.first_seen, rec.last_seen, rec.packets, rec.distinct_destinations,
                tuple(map(intern, rec.destinations_sample)))  # fmt: skip
        if part in win.parts:
            self._duplicates += 1
            return
        win.parts.append(part)
        self._records += 1
        win.end = max(win.end, rec.window_end)
        win.packets += rec.packets
        win.first = min(win.first, rec.first_seen)
        win.last = max(win.last, rec.last_seen)
        sample = part[-1]
        acc.plans.add(part[1])
        acc.actions.add(part[2])
        acc.max_distinct = max(acc.max_distinct, rec.distinct_destinations)
        for i, dst in enumerate(sample):
            seen = acc.samples.get(dst)
            if seen is None or (rec.first_seen, i) < seen:
                acc.samples[dst] = (rec.first_seen, i)
        if acc.days is not None:
            day = acc.days.get(rec.window_start // DAY_MS)
            if day is None:
                day = acc.days[rec.window_start // DAY_MS] = _DayAcc()
            day.max_distinct = max(day.max_distinct, rec.distinct_destinations)
            day.samples.update(sample)

    def briefs(self) -> Iterator[Brief]:
        """Every source's ranking facts."""
        for source, acc in self._sources.items():
            wins = acc.windows.values()
            peak_rate, peak_window = _peaks(wins)
            yield Brief(
                source=source,
                distinct=max(acc.max_distinct, len(acc.samples)),
                peak_rate=peak_rate,
                peak_window_attempts=peak_window,
                attempts=sum(w.packets for w in wins),
                first_seen=min(w.first for w in wins),
                last_seen=max(w.last for w in wins),
                days=_days(acc),
            )

    def sources(self) -> list[str]:
        """Every source seen so far, in the order first seen."""
        return list(self._sources)

    def stats(self, sources: Sequence[str]) -> list[SourceStats]:
        """The full merged state of ``sources``."""
        return [_stats(s, self._sources[s]) for s in sources if s in self._sources]

    def windows(self, sources: Sequence[str]) -> dict[str, tuple[WindowStat, ...]]:
        """The merged windows of ``sources`` that are known, in window order."""
        return {s: _windows(self._sources[s]) for s in sources if s in self._sources}

    def close(self) -> None:
        """Drop the state."""
        self._sources.clear()


def _windows(acc: _SourceAcc) -> tuple[WindowStat, ...]:
    return tuple(
        WindowStat(k, w.end, w.packets, w.first, w.last, _routers(w))
        for k, w in sorted(acc.windows.items())
    )


def _routers(w: _WindowAcc) -> tuple[str, ...]:
    return tuple(sorted({p[0] for p in w.parts}))


def _stats(source: str, acc: _SourceAcc) -> SourceStats:
    wins = sorted(acc.windows.items())
    rates = [r for _, w in wins if (r := window_rate(w.packets, w.first, w.last)) is not None]
    intervals = tuple(
        i for _, w in wins if (i := window_interval(w.packets, w.first, w.last)) is not None
    )
    ordered = sorted(acc.samples, key=lambda d: sample_order(*acc.samples[d], d))
    return SourceStats(
        source=source,
        family=acc.family,
        plans=tuple(sorted(acc.plans)),
        actions=tuple(sorted(acc.actions)),
        routers=tuple(sorted({p[0] for _, w in wins for p in w.parts})),
        max_distinct=acc.max_distinct,
        sample_union=len(ordered),
        sample=tuple(ordered[:SAMPLE_LIMIT]),
        first_seen=min(w.first for _, w in wins),
        last_seen=max(w.last for _, w in wins),
        window_counts=tuple(w.packets for _, w in wins),
        peak_rate=max(rates) if rates else None,
        intervals=intervals,
        window_firsts=() if intervals else tuple(sorted(w.first for _, w in wins)),
        days=_days(acc),
    )


def _days(acc: _SourceAcc) -> tuple[DayStat, ...] | None:
    if acc.days is None:
        return None
    wins = sorted(acc.windows.items())
    return tuple(_day_stats(day, dacc, wins) for day, dacc in sorted(acc.days.items()))


def _day_stats(day: int, dacc: _DayAcc, wins: Sequence[tuple[int, _WindowAcc]]) -> DayStat:
    peak_rate, peak_window = _peaks([w for start, w in wins if start // DAY_MS == day])
    return DayStat(day, max(dacc.max_distinct, len(dacc.samples)), peak_rate, peak_window)


def _peaks(wins: Collection[_WindowAcc]) -> tuple[float | None, int]:
    """The busiest window's rate and attempts (they may be different windows)."""
    rates = [r for w in wins if (r := window_rate(w.packets, w.first, w.last)) is not None]
    return (max(rates) if rates else None), max(w.packets for w in wins)


def run_python(
    paths: Sequence[str],
    on_problem: Callable[[Problem], None],
    query: Query,
    progress: ProgressSink,
) -> PyRun:
    """Read every file into a ``PyRun``; ReportError if one cannot be opened."""
    from op25b.report.abuseread import open_log

    # Open every file once first: a typo in the last of ten names should fail in a
    # second, not after reading nine files.
    for path in paths:
        open_log(path).close()
    run = PyRun(query)
    seen = 0
    where = ""

    def add(rec: Record) -> None:
        nonlocal seen
        run.add(rec)
        seen += 1
        if seen % PROGRESS_EVERY == 0:
            progress.update(f"read {seen:,} records, {where}")

    for n, path in enumerate(paths, 1):
        where = f"file {n} of {len(paths)}"
        read_log(path, add, on_problem)
    return run
