"""``op25b report``: abuse logs in, what an abuse desk acts on out.

This module owns the command: its arguments, putting reading and scoring together
(``build_report``), and the table / JSON / CSV outputs and the chart's data. Reading
the abuse log is ``op25b.report.abuseread``; per-source summaries, the bot score and what
the JSON keys mean are ``op25b.report.botscore``. Drawing the chart lives in
``op25b.report.chart`` (the only matplotlib user), imported only for --chart.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

from op25b.report.abuseread import (
    MAX_PROBLEMS_PER_FILE,
    Problem,
    ReportError,
    parse_time_arg,
    parse_timestamp,
    read_logs,
)
from op25b.report.botscore import (
    BOT_THRESHOLD,
    JSON_KEYS,
    Aggregator,
    SourceReport,
    plural,
    score_source,
)
from op25b.util.timefmt import format_ms

# Some names are re-exported from ``abuseread`` and ``botscore``: ``op25b.report.desk``
# stays the one place the CLI, the demo and the tests reach the report through.
__all__ = [
    "BOT_THRESHOLD",
    "JSON_KEYS",
    "MAX_PROBLEMS_PER_FILE",
    "ChartData",
    "Problem",
    "Report",
    "ReportError",
    "SourceReport",
    "add_arguments",
    "build_report",
    "chart_data",
    "format_ms",
    "parse_time_arg",
    "parse_timestamp",
    "run",
    "score_source",
    "write_csv",
    "write_json",
    "write_table",
]

PROG = "op25b report"

DEFAULT_TOP = 20
DEFAULT_WINDOW_MS = 300_000  # the producer's default window, used if none is known
MAX_CHART_BUCKETS = 2000
MAX_CHART_LINES = 10  # more lines than this are unreadable in a ticket attachment

# --------------------------------------------------------------------- time words


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
    if s % 3600 == 0:
        return f"{s // 3600}-h"
    if s % 60 == 0:
        return f"{s // 60}-min"
    return f"{s}-s"


# ------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class Report:
    """All sources, best-first, plus what was read to get them."""

    sources: tuple[SourceReport, ...]
    files: tuple[str, ...]
    records: int
    duplicates: int
    filtered_out: int
    problems: int

    @property
    def attempts(self) -> int:
        """Total blocked attempts over all sources."""
        return sum(s.attempts for s in self.sources)

    @property
    def span(self) -> tuple[int, int] | None:
        """(first_seen, last_seen) over all sources, or None without any."""
        if not self.sources:
            return None
        return (min(s.first_seen for s in self.sources), max(s.last_seen for s in self.sources))


def build_report(
    paths: Sequence[str],
    on_problem: Callable[[Problem], None],
    *,
    since: int | None = None,
    until: int | None = None,
) -> Report:
    """Read, merge and score; ReportError (nothing printed yet) if a file is unusable."""
    agg = Aggregator(since, until)
    problems = 0

    def count_problem(p: Problem) -> None:
        nonlocal problems
        problems += 1
        on_problem(p)

    read_logs(paths, agg.add, count_problem)
    return Report(
        sources=tuple(agg.sources()),
        files=tuple(paths),
        records=agg.records,
        duplicates=agg.duplicates,
        filtered_out=agg.filtered_out,
        problems=problems,
    )


def _csv_value(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return " ".join(str(x) for x in v)
    return str(v)


def write_json(sources: Sequence[SourceReport], out: TextIO) -> None:
    """A JSON list of objects with ``JSON_KEYS``."""
    json.dump([s.as_dict() for s in sources], out, indent=2, ensure_ascii=False)
    out.write("\n")


def write_csv(sources: Sequence[SourceReport], out: TextIO) -> None:
    """CSV with a header row; list columns are space-separated."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(JSON_KEYS)
    for s in sources:
        d = s.as_dict()
        w.writerow([_csv_value(d[k]) for k in JSON_KEYS])


def write_table(report: Report, shown: Sequence[SourceReport], out: TextIO) -> None:
    """The human-readable table: totals header, one row per source, reason below."""
    span = report.span
    when = (
        f"{_short_time(span[0])} to {_short_time(span[1])} ({_duration(span[1] - span[0])})"
        if span
        else "no activity"
    )
    out.write(
        f"{plural(len(report.sources), 'source')}, {plural(report.attempts, 'blocked attempt')}, "
        f"{when}, {plural(len(report.files), 'file')} read\n"
    )
    notes = []
    if report.duplicates:
        notes.append(f"{plural(report.duplicates, 'duplicate record')} ignored")
    if report.filtered_out:
        notes.append(f"{plural(report.filtered_out, 'record')} outside --since/--until")
    if report.problems:
        notes.append(f"{plural(report.problems, 'line')} skipped (see stderr)")
    if notes:
        out.write("; ".join(notes) + "\n")
    if not shown:
        return
    if len(shown) < len(report.sources):
        out.write(f"top {len(shown)} of {len(report.sources)} by bot score\n")
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
            str(len(s.windows)),
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
    out.write("\nDESTS is a lower bound (per-window counts and 16-address samples).\n")


# ---------------------------------------------------------------------- chart data


@dataclass(frozen=True, slots=True)
class ChartData:
    """Attempts per time bucket for the top sources, ready to draw."""

    bucket_ms: int
    starts: tuple[int, ...]
    series: tuple[tuple[str, tuple[int, ...]], ...]
    title: str


def chart_data(sources: Sequence[SourceReport], limit: int = MAX_CHART_LINES) -> ChartData:
    """Bucket each top source's windows onto one shared, regular time axis.

    Windows with no record are zeros (the producer writes only sources that were
    blocked), which a plot of the raw points would draw as a line across the gap.
    """
    top = list(sources[: max(0, min(limit, MAX_CHART_LINES))])
    windows = [w for s in top for w in s.windows]
    if not windows:
        return ChartData(DEFAULT_WINDOW_MS, (), (), "op25b: no blocked attempts in range")
    lengths = [w.end - w.start for w in windows if w.end > w.start]
    # The producer's window length (mode, in case routers differ) is the natural bucket.
    bucket = statistics.mode(lengths) if lengths else DEFAULT_WINDOW_MS
    first_start = min(w.start for w in windows)
    t1 = max(w.start for w in windows)
    # Months of 5-minute windows would be tens of thousands of points: widen the
    # bucket by a whole factor so each bucket still holds whole windows.
    bucket *= max(1, math.ceil(((t1 - first_start) // bucket + 1) / MAX_CHART_BUCKETS))
    t0 = first_start - first_start % bucket  # align to the clock, like the windows
    n = (t1 - t0) // bucket + 1
    starts = tuple(t0 + i * bucket for i in range(n))
    series = []
    for s in top:
        counts = [0] * n
        for w in s.windows:
            counts[(w.start - t0) // bucket] += w.packets
        series.append((f"{s.source}: {s.score.verdict}, score {s.score.value}", tuple(counts)))
    first = min(s.first_seen for s in top)
    last = max(s.last_seen for s in top)
    title = (
        f"op25b: blocked port-25 attempts per {_bucket_words(bucket)} window, top {len(top)} "
        f"sources\n{_short_time(first)} to {_short_time(last)} ({_duration(last - first)})"
    )
    return ChartData(bucket, starts, tuple(series), title)


# ---------------------------------------------------------------------------- CLI


def _top(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 (all) or more")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Define ``op25b report``'s arguments on ``parser`` (a subcommand parser)."""
    parser.add_argument(
        "abuse_logs", nargs="+", metavar="ABUSE_LOG",
        help="abuse log files (plain, rotated .1, or gzip/bzip2/xz compressed; "
        "several routers' logs are merged)",
    )  # fmt: skip
    parser.add_argument(
        "--since", metavar="T",
        help="only windows active at or after T: ISO 8601 time or date (UTC), or an "
        "age like 24h, 7d",
    )  # fmt: skip
    parser.add_argument(
        "--until", metavar="T", help="only windows active before T (same forms as --since)"
    )
    parser.add_argument(
        "--top", metavar="N", type=_top, default=DEFAULT_TOP,
        help=f"show the N highest-scoring sources (default {DEFAULT_TOP}; 0 = all)",
    )  # fmt: skip
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON list of objects")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    parser.add_argument(
        "--chart", metavar="FILE.png",
        help="also draw blocked attempts over time for the top sources (needs matplotlib)",
    )  # fmt: skip


def run(args: argparse.Namespace, out: TextIO, err: TextIO, *, now: datetime | None = None) -> int:
    """Run ``op25b report``; 0 on success, 2 on bad arguments or unreadable files.

    ``now`` anchors relative --since/--until (tests pass a fixed one).
    """
    now = now or datetime.now(UTC)
    try:
        since = parse_time_arg(args.since, now) if args.since else None
    except ValueError as e:
        return _fail(err, f"--since: {e}")
    try:
        until = parse_time_arg(args.until, now) if args.until else None
    except ValueError as e:
        return _fail(err, f"--until: {e}")
    if since is not None and until is not None and since >= until:
        return _fail(err, "--since must be before --until")

    render = None
    if args.chart:
        # Import before reading gigabytes of logs, so a missing matplotlib fails fast.
        from op25b.report import chart

        try:
            render = chart.load_renderer()
        except chart.ChartUnavailable as e:
            return _fail(err, str(e))

    def on_problem(p: Problem) -> None:
        err.write(f"{p}\n")

    try:
        report = build_report(args.abuse_logs, on_problem, since=since, until=until)
    except ReportError as e:
        return _fail(err, str(e))

    shown = report.sources if args.top == 0 else report.sources[: args.top]
    if args.json:
        write_json(shown, out)
    elif args.csv:
        write_csv(shown, out)
    else:
        write_table(report, shown, out)

    if render is not None:
        try:
            render(chart_data(shown), args.chart)
        except OSError as e:
            return _fail(err, f"--chart: cannot write {args.chart}: {e.strerror or e}")
    return 0


def _fail(err: TextIO, message: str) -> int:
    err.write(f"{PROG}: error: {message}\n")
    return 2
