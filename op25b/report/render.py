"""The report's outputs: the table, JSON, CSV, and the chart's data.

Owns how a built ``Report`` (``op25b.report.desk``) is written for people and programs:
the totals header and per-source rows with their reasons (and, with --by-day, the
days a source was bot-like), the JSON list and CSV columns (``JSON_KEYS``, then
``bot_days``), and the attempts per time bucket the chart draws (drawing itself is
``op25b.report.chart``).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

from op25b.report.botscore import DAY_MS, JSON_KEYS, SourceReport, WindowStat, plural

DEFAULT_WINDOW_MS = 300_000  # the producer's default window, used if none is known
MAX_CHART_BUCKETS = 2000
MAX_CHART_LINES = 10  # more lines than this are unreadable in a ticket attachment
DAY_KEYS = (*JSON_KEYS, "bot_days")


@dataclass(frozen=True, slots=True)
class Report:
    """The sources to show, best-first, plus totals over every source in range."""

    sources: tuple[SourceReport, ...]  # at most --top of them
    source_count: int
    attempts: int
    span: tuple[int, int] | None  # (first_seen, last_seen) over all, None without any
    files: tuple[str, ...]
    records: int
    duplicates: int
    filtered_out: int
    problems: int
    by_day: bool = False
    # The merged windows of the first MAX_CHART_LINES shown sources, when a chart was asked.
    windows: Mapping[str, tuple[WindowStat, ...]] | None = None


def _short_time(ms: int) -> str:
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%d %H:%M:%SZ")


def _duration(ms: int) -> str:
    s = max(0, ms // 1000)
    d, s = divmod(s, 86_400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h}h"
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def _bucket_words(ms: int) -> str:
    s = ms // 1000
    if s == 86_400:
        return "1-day"
    if s % 3600 == 0:
        return f"{s // 3600}-h"
    if s % 60 == 0:
        return f"{s // 60}-min"
    return f"{s}-s"


def _csv_value(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return " ".join(str(x) for x in v)
    return str(v)


def write_json(sources: Sequence[SourceReport], out: TextIO) -> None:
    """A JSON list of objects with ``JSON_KEYS`` (and ``bot_days`` when known)."""
    json.dump([s.as_dict() for s in sources], out, indent=2, ensure_ascii=False)
    out.write("\n")


def write_csv(sources: Sequence[SourceReport], out: TextIO, *, by_day: bool = False) -> None:
    """CSV with a header row; list columns are space-separated."""
    keys = DAY_KEYS if by_day else JSON_KEYS
    w = csv.writer(out, lineterminator="\n")
    w.writerow(keys)
    for s in sources:
        d = s.as_dict()
        w.writerow([_csv_value(d[k]) for k in keys])


def write_table(report: Report, shown: Sequence[SourceReport], out: TextIO) -> None:
    """The human-readable table: totals header, one row per source, reason below."""
    span = report.span
    when = (
        f"{_short_time(span[0])} to {_short_time(span[1])} ({_duration(span[1] - span[0])})"
        if span
        else "no activity"
    )
    out.write(
        f"{plural(report.source_count, 'source')}, {plural(report.attempts, 'blocked attempt')}, "
        f"{when}, {plural(len(report.files), 'file')} read\n"
    )
    notes = []
    if report.duplicates:
        notes.append(f"{plural(report.duplicates, 'duplicate record')} ignored")
    if report.filtered_out:
        notes.append(f"{plural(report.filtered_out, 'record')} outside the filters")
    if report.problems:
        notes.append(f"{plural(report.problems, 'line')} skipped (see stderr)")
    if notes:
        out.write("; ".join(notes) + "\n")
    if not shown:
        return
    if len(shown) < report.source_count:
        out.write(f"top {len(shown)} of {report.source_count} by bot score\n")
    out.write("\n")
    header = ("SCORE", "SOURCE", "PLAN", "ATTEMPTS", "DESTS", "WINDOWS",
              "FIRST SEEN", "LAST SEEN", "ROUTERS", "ACTION")  # fmt: skip
    rows = [
        (
            str(s.score.value),
            s.source,
            ",".join(s.plans),
            str(s.attempts),
            str(s.distinct_destinations),
            str(s.windows_active),
            _short_time(s.first_seen),
            _short_time(s.last_seen),
            ",".join(s.routers),
            ",".join(s.actions),
        )
        for s in shown
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    right = {0, 3, 4, 5}  # numbers align right

    def fmt(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    out.write(fmt(header) + "\n")
    indent = " " * (widths[0] + 2)
    for s, row in zip(shown, rows, strict=True):
        out.write(fmt(row) + "\n")
        out.write(f"{indent}{s.score.reason}\n")
        if s.bot_days is not None:
            out.write(f"{indent}{_days_words(s.bot_days)}\n")
    out.write("\nDESTS is a lower bound (per-window counts and 16-address samples).\n")


# ---------------------------------------------------------------------- chart data


@dataclass(frozen=True, slots=True)
class ChartData:
    """Attempts per time bucket for the top sources, ready to draw."""

    bucket_ms: int
    starts: tuple[int, ...]
    series: tuple[tuple[str, tuple[int, ...]], ...]
    title: str


def chart_data(
    sources: Sequence[SourceReport],
    windows: Mapping[str, tuple[WindowStat, ...]],
    limit: int = MAX_CHART_LINES,
    *,
    per_day: bool = False,
) -> ChartData:
    """Bucket each top source's windows onto one shared, regular time axis.

    Windows with no record are zeros (the producer writes only sources that were
    blocked), which a plot of the raw points would draw as a line across the gap.
    ``per_day`` makes the buckets UTC days (a source's attempts per day).
    """
    top = list(sources[: max(0, min(limit, MAX_CHART_LINES))])
    all_windows = [w for s in top for w in windows.get(s.source, ())]
    if not all_windows:
        return ChartData(DEFAULT_WINDOW_MS, (), (), "op25b: no blocked attempts in range")
    first_start = min(w.start for w in all_windows)
    t1 = max(w.start for w in all_windows)
    if per_day:
        bucket = DAY_MS
    else:
        lengths = [w.end - w.start for w in all_windows if w.end > w.start]
        # The producer's window length (mode, in case routers differ) is the natural bucket.
        bucket = statistics.mode(lengths) if lengths else DEFAULT_WINDOW_MS
        # Months of 5-minute windows would be tens of thousands of points: widen the
        # bucket by a whole factor so each bucket still holds whole windows.
        bucket *= max(1, math.ceil(((t1 - first_start) // bucket + 1) / MAX_CHART_BUCKETS))
    t0 = first_start - first_start % bucket  # align to the clock, like the windows
    n = (t1 - t0) // bucket + 1
    starts = tuple(t0 + i * bucket for i in range(n))
    series = []
    for s in top:
        counts = [0] * n
        for w in windows.get(s.source, ()):
            counts[(w.start - t0) // bucket] += w.packets
        series.append((f"{s.source}: {s.score.verdict}, score {s.score.value}", tuple(counts)))
    first = min(s.first_seen for s in top)
    last = max(s.last_seen for s in top)
    title = (
        f"op25b: blocked port-25 attempts per {_bucket_words(bucket)} window, top {len(top)} "
        f"sources\n{_short_time(first)} to {_short_time(last)} ({_duration(last - first)})"
    )
    return ChartData(bucket, starts, tuple(series), title)


def _days_words(days: Sequence[str]) -> str:
    if not days:
        return "bot-like on no single day"
    return f"bot-like on {plural(len(days), 'day')}: {', '.join(days)}"
