"""The DuckDB engine: months of a fleet's logs in bounded memory.

The only module that imports duckdb (an optional extra: ``pip install
'op25b[report-fast]'``), and it owns running the engine's SQL (``op25b.report.ducksql``,
which says how it stays exact and bounded). DuckDB parses the JSON lines (gzip too) on
every core, keeps what it read in memory up to a limit and spills the rest to a private
temporary directory (removed at the end), and aggregates within the same limit; Python
only scores the per-source rows it streams back (``op25b.report.botscore``). Measured
in bench/README.md.

Exactness: a file with a row DuckDB cannot take as certain (see ``ducksql``), a parse
error DuckDB and the reader would treat differently (a truncated last line, a record
glued after a crash stub), or bzip2/xz compression is read by
``op25b.report.abuseread`` instead (same problem lines, same recovery), and its records
reach DuckDB through a normalised file. The lists of the sources shown are merged by
``op25b.report.pyengine`` from their records, so both engines give the same answers by
construction; the tests check it row for row.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

import duckdb

from op25b.report import ducksql
from op25b.report.abuseread import Problem, Record, ReportError, compression_of, read_log
from op25b.report.botscore import Brief, DayStat, SourceStats, WindowStat
from op25b.report.pyengine import PyRun
from op25b.report.query import ProgressSink, Query, Totals
from op25b.util.timefmt import format_ms

# DuckDB's own limit: what it holds beyond is spilled (peak RSS: bench/README.md).
MEMORY_LIMIT = "512MB"
FETCH_ROWS = 10_000
POLL_S = 0.25
HUGEINT_MAX = 2**127 - 1
DETAIL_SOURCES = 10_000  # sources merged in Python at once when many are shown (--top 0)

_FAST = ("gzip", "none")  # what DuckDB decompresses itself; bzip2 and xz go through abuseread


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _scan(paths: Sequence[str], compression: str) -> str:
    files = "[" + ", ".join(_q(p) for p in paths) + "]"
    return (f"SELECT * FROM read_json({files}, format='newline_delimited', "
            f"compression='{compression}', columns={ducksql.COLUMNS}, filename=true)")  # fmt: skip


class DuckRun:
    """Records loaded into a private DuckDB database, aggregated on demand."""

    def __init__(self, query: Query, progress: ProgressSink) -> None:
        self._query = query
        self._progress = progress
        self._tmp = tempfile.TemporaryDirectory(prefix="op25b-report-")
        # In memory up to MEMORY_LIMIT, then spilled to the private directory: a
        # database file would also write (and fsync) what fits in memory.
        self._con = duckdb.connect()
        threads = max(1, len(os.sched_getaffinity(0)))
        for setting in (f"memory_limit='{MEMORY_LIMIT}'", f"threads={threads}",
                        f"temp_directory={_q(self._tmp.name)}", "TimeZone='UTC'",
                        "preserve_insertion_order=false",
                        # Progress is tracked for query_progress(), never printed by
                        # DuckDB itself: its bar would land in the report's output.
                        "enable_progress_bar=true", "enable_progress_bar_print=false"):  # fmt: skip
            self._con.execute(f"SET {setting}")
        self._totals = Totals(0, 0, 0)

    @property
    def totals(self) -> Totals:
        """Records counted, duplicates ignored, records filtered out."""
        return self._totals

    def close(self) -> None:
        """Close the database and remove its directory (spill files included)."""
        self._con.close()
        self._tmp.cleanup()

    # ------------------------------------------------------------------ loading

    def _sql(self, sql: str, label: str, params: Sequence[Any] | None = None) -> None:
        """Run one statement, reporting DuckDB's progress on it while it runs."""
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(POLL_S):
                done = self._con.query_progress()
                if done >= 0:
                    self._progress.update(f"{label}: {done:.0f}%")

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        try:
            self._con.execute(sql, params)
        finally:
            stop.set()
            watcher.join()

    def load(self, paths: Sequence[str], on_problem: Callable[[Problem], None]) -> None:
        """Read every file into table u (records, each once, with how often it was read).

        One parallel scan does it all when every file is plain or gzip and every line
        is in the producer's form (the usual case). Files that are not are read by
        abuseread into normalised files and the scan is run again; their problem
        lines are printed at the end, in the order the files were given.
        """
        kinds = {p: compression_of(p) for p in paths}  # ReportError before any reading
        slow = {p for p in paths if kinds[p] not in _FAST}
        problems: dict[int, list[Problem]] = {}
        normalised: dict[int, str] = {}
        for _attempt in range(3):  # each retry moves files to ``slow``; two suffice
            for i, path in enumerate(paths):
                if path in slow and i not in normalised:
                    normalised[i] = self._normalise(i, path, problems.setdefault(i, []).append)
            fast = [p for p in paths if p not in slow]
            try:
                bad = self._scan_into_u(fast, kinds, [normalised[i] for i in sorted(normalised)])
            except duckdb.Error as e:
                unparsable = self._unparsable(fast, kinds)
                if not unparsable:
                    raise ReportError(f"DuckDB could not read the logs: {e}") from None
                slow |= unparsable
                continue
            if not bad:
                break
            slow |= bad
        for i in sorted(problems):
            for problem in problems[i]:
                on_problem(problem)

    def _scan_into_u(
        self, fast: Sequence[str], kinds: dict[str, str], normalised: Sequence[str]
    ) -> set[str]:
        """One scan of everything into table u; return the files with a ``bad`` row."""
        parts = [
            ducksql.select(ducksql.SELECT_FAST, _scan([p for p in fast if kinds[p] == k], k))
            for k in _FAST
            if any(kinds[p] == k for p in fast)
        ]
        if normalised:
            parts.append(ducksql.select(ducksql.SELECT_NORMALISED, _scan(normalised, "none")))
        for table in ("u", "read", "twice"):
            self._con.execute(f"DROP TABLE IF EXISTS {table}")
        if not parts:
            self._con.execute(ducksql.EMPTY_U)
            return set()
        union = " UNION ALL BY NAME ".join(f"({p})" for p in parts)
        self._sql(ducksql.create_read(union, self._keep()), "reading")
        rows = self._con.execute("SELECT DISTINCT badfile FROM read WHERE badfile IS NOT NULL")
        bad = {r[0] for r in rows.fetchall()}
        if bad:
            return bad
        self._sql(ducksql.CREATE_TWICE, "reading")
        if self._con.execute("SELECT count(*) FROM twice").fetchall() == [(0,)]:
            self._con.execute("ALTER TABLE read RENAME TO u")  # the usual case: no copies
        else:
            self._sql(ducksql.CREATE_U, "reading")
            self._con.execute("DROP TABLE read")
        self._con.execute("DROP TABLE twice")
        return set()

    def _unparsable(self, paths: Sequence[str], kinds: dict[str, str]) -> set[str]:
        """The files of ``paths`` DuckDB cannot parse at all (a truncated line, not JSON)."""
        failed = set()
        for path in dict.fromkeys(paths):
            try:
                # count(type), not count(*): only reading a column makes DuckDB
                # transform each line, and so fail on one that is not an object.
                self._con.execute(f"SELECT count(type) FROM ({_scan([path], kinds[path])})")
            except duckdb.Error:
                failed.add(path)
        return failed

    def _normalise(self, index: int, path: str, on_problem: Callable[[Problem], None]) -> str:
        """Read ``path`` with abuseread into a producer-form file DuckDB takes as it is."""
        norm = Path(self._tmp.name) / f"read-{index}.jsonl"
        with norm.open("w", encoding="utf-8") as out:

            def write(rec: Record) -> None:
                out.write(_normalised(rec))

            read_log(path, write, on_problem)
        return str(norm)

    # -------------------------------------------------------------- aggregation

    def _keep(self) -> str:
        q = self._query
        conds = ["true"]
        if q.since is not None:
            conds.append(f"ls >= {int(q.since)}")
        if q.until is not None:
            conds.append(f"fs < {int(q.until)}")
        if q.routers:
            conds.append(f"router IN ({', '.join(_q(r) for r in sorted(q.routers))})")
        if q.plans:
            conds.append(f"plan IN ({', '.join(_q(p) for p in sorted(q.plans))})")
        return "(" + " AND ".join(conds) + ")"

    def _merge(self) -> None:
        """Count what was read, keep what the query keeps, merge windows (table w)."""
        ((valid, kept, unique),) = self._con.execute(
            "SELECT coalesce(sum(copies), 0), coalesce(sum(copies) FILTER (WHERE keep), 0), "
            "count(*) FILTER (WHERE keep) FROM u"
        ).fetchall()
        self._totals = Totals(unique, kept - unique, valid - kept)
        if kept < valid:
            self._con.execute("DELETE FROM u WHERE NOT keep")
        self._sql(ducksql.CREATE_W, "merging")

    def briefs(self) -> Iterator[Brief]:
        """Every source's ranking facts, streamed (scalars only: cheap to fetch)."""
        self._merge()
        by_day = self._query.by_day
        for statement in ducksql.ranking(by_day):
            self._sql(statement, "summing up")
        cur = self._con.execute(ducksql.BRIEFS_BY_DAY if by_day else ducksql.BRIEFS)
        rows = _stream(cur)
        if not by_day:
            for r in rows:
                yield Brief(r[0], r[1], r[2], r[3], r[4], r[5], r[6])
            return
        for _, group in groupby(rows, key=lambda r: r[0]):
            days = [(r, DayStat(r[7], r[8], r[9], r[10])) for r in group]
            r = days[0][0]
            yield Brief(r[0], r[1], r[2], r[3], r[4], r[5], r[6], tuple(d for _, d in days))

    def _detail(self, sources: Sequence[str]) -> Iterator[PyRun]:
        """``sources``' records merged by the pure-Python engine, a few thousand at a time."""
        cur = self._con.execute(ducksql.DETAIL, [list(sources)])
        query = Query(by_day=self._query.by_day)
        run, count = PyRun(query), 0
        for _source, records in groupby(_stream(cur), key=lambda r: r[1]):
            if count == DETAIL_SOURCES:
                yield run
                run, count = PyRun(query), 0
            count += 1
            for r in records:
                run.add(_record(r))
        yield run

    def stats(self, sources: Sequence[str]) -> list[SourceStats]:
        """The full merged state of ``sources`` (call after ``briefs``)."""
        return [st for run in self._detail(sources) for st in run.stats(run.sources())]

    def windows(self, sources: Sequence[str]) -> dict[str, tuple[WindowStat, ...]]:
        """The merged windows of ``sources`` (call after ``briefs``)."""
        out: dict[str, tuple[WindowStat, ...]] = {}
        for run in self._detail(sources):
            out.update(run.windows(run.sources()))
        return out


def _record(r: tuple[Any, ...]) -> Record:
    """A row of ``ducksql.DETAIL`` (its columns in ``Record``'s order) as a Record."""
    router, source, family, plan, action, rule, ws, we, fs, ls, packets, dd, sample = r
    dests = tuple(json.loads(sample))
    return Record(router, source, family, plan, action, rule, ws, we, fs, ls, packets, dd, dests)


def _stream(cur: duckdb.DuckDBPyConnection) -> Iterator[tuple[Any, ...]]:
    while rows := cur.fetchmany(FETCH_ROWS):
        yield from rows


def _normalised(rec: Record) -> str:
    """A validated record as one producer-form line (times in the exact 'Z' form)."""
    if max(rec.packets, rec.distinct_destinations) > HUGEINT_MAX:
        raise ReportError(
            f"{rec.source}: a count beyond 2**127 does not fit DuckDB; use --engine python"
        )
    return json.dumps({
        "type": "blocked_source", "version": 1, "router": rec.router, "source": rec.source,
        "family": rec.family, "plan": rec.plan, "action": rec.action, "rule": rec.rule,
        "window_start": format_ms(rec.window_start), "window_end": format_ms(rec.window_end),
        "first_seen": format_ms(rec.first_seen), "last_seen": format_ms(rec.last_seen),
        "packets": rec.packets, "distinct_destinations": rec.distinct_destinations,
        "destinations_sample": list(rec.destinations_sample),
    }, ensure_ascii=False) + "\n"  # fmt: skip


def run_duckdb(
    paths: Sequence[str],
    on_problem: Callable[[Problem], None],
    query: Query,
    progress: ProgressSink,
) -> DuckRun:
    """Load every file into a ``DuckRun``; ReportError if one cannot be opened."""
    run = DuckRun(query, progress)
    try:
        run.load(paths, on_problem)
    except BaseException:
        run.close()
        raise
    return run
