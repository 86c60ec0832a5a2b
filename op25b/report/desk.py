"""``op25b report``: abuse logs in, what an abuse desk acts on out.

This module owns the command: its arguments, putting an engine, the scoring and the
ranking together (``build_report``) in memory bounded by --top (only the best N
summaries are kept while the rest stream past). Reading is ``op25b.report.abuseread``;
merging is an engine (``op25b.report.query`` picks DuckDB's when installed, else the
pure-Python one); per-source summaries, the bot score and what the JSON keys mean are
``op25b.report.botscore``; the table / JSON / CSV and the chart's data are
``op25b.report.render``; drawing the chart is ``op25b.report.chart`` (the only
matplotlib user), imported only for --chart.
"""

from __future__ import annotations

import argparse
import heapq
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TextIO

from op25b.report.abuseread import (
    MAX_PROBLEMS_PER_FILE,
    Problem,
    ReportError,
    parse_time_arg,
    parse_timestamp,
)
from op25b.report.botscore import (
    BOT_THRESHOLD,
    JSON_KEYS,
    Brief,
    SourceReport,
    bot_days,
    rank_key,
    score_source,
    summarise,
)
from op25b.report.progress import Progress
from op25b.report.query import ENGINES, ProgressSink, Query, Run, pick_engine
from op25b.report.render import (
    MAX_CHART_LINES,
    ChartData,
    Report,
    chart_data,
    write_csv,
    write_json,
    write_table,
)
from op25b.util.timefmt import format_ms

# Some names are re-exported from ``abuseread``, ``botscore`` and ``render``:
# ``op25b.report.desk`` stays the one place the CLI, the demo and the tests reach the
# report through.
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


class _Quiet:
    def update(self, text: str) -> None:
        pass


def open_run(
    paths: Sequence[str],
    on_problem: Callable[[Problem], None],
    query: Query,
    *,
    engine: str = "auto",
    progress: ProgressSink | None = None,
) -> Run:
    """Read every file with the chosen engine; ReportError if a file is unusable."""
    sink = progress or _Quiet()
    if pick_engine(engine) == "duckdb":
        from op25b.report.duckengine import run_duckdb

        return run_duckdb(paths, on_problem, query, sink)
    from op25b.report.pyengine import run_python

    return run_python(paths, on_problem, query, sink)


def build_report(
    paths: Sequence[str],
    on_problem: Callable[[Problem], None],
    *,
    since: int | None = None,
    until: int | None = None,
    routers: Sequence[str] = (),
    plans: Sequence[str] = (),
    by_day: bool = False,
    min_days: int = 0,
    top: int = 0,
    chart: bool = False,
    engine: str = "auto",
    progress: ProgressSink | None = None,
) -> Report:
    """Read, merge, score and rank; ReportError (nothing printed yet) if a file is unusable.

    ``top`` = 0 keeps every source; otherwise only the best ``top`` summaries are held.
    ``min_days`` > 0 keeps only sources bot-like on at least that many UTC days.
    """
    query = Query(since, until, frozenset(routers), frozenset(plans), by_day or min_days > 0)
    problems = 0

    def count_problem(p: Problem) -> None:
        nonlocal problems
        problems += 1
        on_problem(p)

    run = open_run(paths, count_problem, query, engine=engine, progress=progress)
    try:
        count = attempts = 0
        first: int | None = None
        last: int | None = None

        def briefs() -> Iterator[Brief]:
            nonlocal count, attempts, first, last
            for b in run.briefs():
                if min_days and len(bot_days(b.days or ())) < min_days:
                    continue
                count += 1
                attempts += b.attempts
                first = b.first_seen if first is None else min(first, b.first_seen)
                last = b.last_seen if last is None else max(last, b.last_seen)
                yield b

        # Rank on the score alone, then summarise only the sources shown: most of a
        # fleet's sources never make the top and need no lists fetched or words written.
        best = heapq.nsmallest(top, briefs(), key=Brief.rank) if top else list(briefs())
        ranked = sorted((summarise(st) for st in run.stats([b.source for b in best])),
                        key=rank_key)  # fmt: skip
        windows = run.windows([s.source for s in ranked[:MAX_CHART_LINES]]) if chart else None
        totals = run.totals
    finally:
        run.close()
    return Report(
        sources=tuple(ranked),
        source_count=count,
        attempts=attempts,
        span=None if first is None or last is None else (first, last),
        files=tuple(paths),
        records=totals.records,
        duplicates=totals.duplicates,
        filtered_out=totals.filtered_out,
        problems=problems,
        by_day=query.by_day,
        windows=windows,
    )


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
        "--router", metavar="NAME", action="append", default=[],
        help="only records of this router (the log's 'router', e.g. edge1 or edge1#q1); "
        "repeat for several",
    )  # fmt: skip
    parser.add_argument(
        "--plan", metavar="NAME", action="append", default=[],
        help="only records of sources in this plan; repeat for several",
    )  # fmt: skip
    parser.add_argument(
        "--by-day", action="store_true",
        help="also list, per source, the UTC days on which it was bot-like on its own "
        "(and chart attempts per day)",
    )  # fmt: skip
    parser.add_argument(
        "--min-days", metavar="N", type=_top, default=0,
        help="only sources bot-like on at least N days (repeat offenders; implies --by-day)",
    )  # fmt: skip
    parser.add_argument(
        "--engine", choices=ENGINES, default="auto",
        help="auto (default): DuckDB when installed (fast, bounded memory), else pure Python",
    )  # fmt: skip
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

    progress = Progress.for_stream(err)

    def on_problem(p: Problem) -> None:
        progress.finish()
        err.write(f"{p}\n")

    try:
        report = build_report(
            args.abuse_logs, on_problem, since=since, until=until, routers=args.router,
            plans=args.plan, by_day=args.by_day, min_days=args.min_days, top=args.top,
            chart=render is not None, engine=args.engine, progress=progress,
        )  # fmt: skip
    except ReportError as e:
        return _fail(err, str(e))
    finally:
        progress.finish()

    shown = report.sources
    if args.json:
        write_json(shown, out)
    elif args.csv:
        write_csv(shown, out, by_day=report.by_day)
    else:
        write_table(report, shown, out)

    if render is not None:
        data = chart_data(shown, report.windows or {}, per_day=report.by_day)
        try:
            render(data, args.chart)
        except OSError as e:
            return _fail(err, f"--chart: cannot write {args.chart}: {e.strerror or e}")
    return 0


def _fail(err: TextIO, message: str) -> int:
    err.write(f"{PROG}: error: {message}\n")
    return 2
