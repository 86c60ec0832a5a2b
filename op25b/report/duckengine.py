"""The DuckDB report engine: months of a fleet's logs in bounded memory.

The only module that imports duckdb (an optional extra: ``pip install
'op25b[report-fast]'``). DuckDB parses the JSON lines (gzip too) on every core, keeps
what it read in memory up to a limit and spills the rest to a private temporary
directory (removed at the end), and aggregates within the same limit; Python only scores the
per-source rows it streams back (``op25b.report.botscore``). Measured in
bench/README.md.

Exactness: DuckDB accepts some input the documented reader refuses (``"5"`` as a
count, a number as a name) and refuses some the reader recovers from (a truncated
last line, a record glued after a crash stub). So the SQL below only takes a row as
it is when it is certain the reader would read it the same way (JSON types checked,
timestamps in the producer's exact form); a file with any other row, any parse error,
or bzip2/xz compression is read by ``op25b.report.abuseread`` instead (same problem
lines, same recovery), and its records reach DuckDB through a normalised file.
Merging is the same as ``op25b.report.pyengine``'s, which the tests check row for row.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb

from op25b.report.abuseread import Problem, Record, ReportError, compression_of, read_log
from op25b.report.botscore import (
    SAMPLE_INDEX_CAP,
    SAMPLE_LIMIT,
    Brief,
    DayStat,
    SourceStats,
    WindowStat,
)
from op25b.report.query import ProgressSink, Query, Totals
from op25b.util.timefmt import format_ms

# DuckDB's own limit (RSS ~580 MB at 1M records; at 10M it is not enough: bench/README.md).
MEMORY_LIMIT = "512MB"
FETCH_ROWS = 10_000
POLL_S = 0.25

_KEYS = ("type", "version", "router", "source", "family", "plan", "action", "rule",
         "window_start", "window_end", "first_seen", "last_seen", "packets",
         "distinct_destinations", "destinations_sample")  # fmt: skip
# Every column as JSON, so the checks below see the type the line really had.
_COLUMNS = "{" + ", ".join(f"'{k}': 'JSON'" for k in _KEYS) + "}"
# The producer's form, with ranges DuckDB and datetime.fromisoformat agree on.
_TS_RE = (
    "[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    "T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9][.][0-9]{3}Z"
)


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _str_ok(col: str) -> str:
    return f"(json_type({col}) = 'VARCHAR' AND {col}->>'$' <> '')"


def _ts(col: str) -> str:
    return f"epoch_ms(TRY_CAST({col}->>'$' AS TIMESTAMPTZ))"


def _ts_ok(col: str) -> str:
    return (
        f"(json_type({col}) = 'VARCHAR' AND regexp_full_match({col}->>'$', '{_TS_RE}') "
        f"AND {_ts(col)} IS NOT NULL)"
    )


def _count_ok(col: str) -> str:
    return f"(json_type({col}) = 'UBIGINT' AND TRY_CAST({col} AS BIGINT) IS NOT NULL)"


# A row exactly as abuseread.record_from_json would read it, else ``bad``.
_OK = " AND ".join([
    "json_type(\"version\") = 'UBIGINT' AND \"version\"::VARCHAR = '1'",
    "json_type(family) = 'UBIGINT' AND family::VARCHAR IN ('4', '6')",
    _str_ok("router"), _str_ok("source"), _str_ok("plan"),
    "json_type(\"action\") = 'VARCHAR' AND \"action\"->>'$' IN ('drop', 'reject', 'monitor')",
    "(\"rule\" IS NULL OR json_type(\"rule\") IN ('VARCHAR', 'NULL'))",
    _ts_ok("window_start"), _ts_ok("window_end"), _ts_ok("first_seen"), _ts_ok("last_seen"),
    _count_ok("packets"), _count_ok("distinct_destinations"),
    "json_type(destinations_sample) = 'ARRAY'",
    "len(list_filter(json_type(destinations_sample, '$[*]'), lambda t: t <> 'VARCHAR')) = 0",
    f"{_ts('window_end')} >= {_ts('window_start')}",
    f"{_ts('last_seen')} >= {_ts('first_seen')}",
])  # fmt: skip

_SELECT = f"""
SELECT filename, NOT coalesce({{ok}}, false) AS bad,
    router->>'$' AS router, source->>'$' AS source, TRY_CAST(family AS INTEGER) AS family,
    plan->>'$' AS plan, "action"->>'$' AS action, "rule"->>'$' AS rule,
    {_ts("window_start")} AS ws, {_ts("window_end")} AS we,
    {_ts("first_seen")} AS fs, {_ts("last_seen")} AS ls,
    TRY_CAST(packets AS BIGINT) AS packets, TRY_CAST(distinct_destinations AS BIGINT) AS dd,
    json_extract_string(destinations_sample, '$[*]') AS sample
FROM ({{scan}})
-- another record type is not ours to count (the reader skips it quietly too)
WHERE NOT coalesce(json_type("type") = 'VARCHAR' AND "type"->>'$' <> 'blocked_source', false)
"""


_FAST = ("gzip", "none")  # what DuckDB decompresses itself; bzip2 and xz go through abuseread
_EMPTY_U = """CREATE TABLE u (router VARCHAR, source VARCHAR, plan VARCHAR, action VARCHAR,
    rule VARCHAR, ws BIGINT, we BIGINT, fs BIGINT, ls BIGINT, packets BIGINT, dd BIGINT,
    sample VARCHAR[], badfile VARCHAR, keep BOOLEAN, family INTEGER, copies BIGINT)"""


def _scan(paths: Sequence[str], compression: str) -> str:
    files = "[" + ", ".join(_q(p) for p in paths) + "]"
    return (f"SELECT * FROM read_json({files}, format='newline_delimited', "
            f"compression='{compression}', columns={_COLUMNS}, filename=true)")  # fmt: skip


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
            _SELECT.format(ok=_OK, scan=_scan([p for p in fast if kinds[p] == k], k))
            for k in _FAST
            if any(kinds[p] == k for p in fast)
        ]
        if normalised:  # validated by the reader; ``bad`` could only be a year before 1000
            parts.append(_SELECT.format(ok="true", scan=_scan(normalised, "none")))
        self._con.execute("DROP TABLE IF EXISTS u")
        if not parts:
            self._con.execute(_EMPTY_U)
            return set()
        union = " UNION ALL ".join(f"({p})" for p in parts)
        # Every field the report reads, sample included: equal in all = read twice.
        self._sql(
            "CREATE TABLE u AS SELECT router, source, plan, action, rule, ws, we, fs, ls, "
            "packets, dd, sample, CASE WHEN bad THEN filename END AS badfile, "
            f"coalesce(NOT bad AND {self._keep()}, false) AS keep, min(family) AS family, "
            f"count(*)::BIGINT AS copies FROM ({union}) GROUP BY ALL",
            "reading",
        )
        rows = self._con.execute("SELECT DISTINCT badfile FROM u WHERE badfile IS NOT NULL")
        return {r[0] for r in rows.fetchall()}

    def _unparsable(self, paths: Sequence[str], kinds: dict[str, str]) -> set[str]:
        """The files of ``paths`` DuckDB cannot parse at all (a truncated line, not JSON)."""
        failed = set()
        for path in dict.fromkeys(paths):
            try:
                self._con.execute(f"SELECT count(*) FROM ({_scan([path], kinds[path])})")
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
        self._con.execute("DELETE FROM u WHERE NOT keep")
        # The same float operations, in the same order, as botscore.window_rate and
        # window_interval: IEEE doubles give the same bits in both.
        self._sql(
            """CREATE TABLE w AS SELECT *,
                CASE WHEN p >= 2 THEN p / greatest((l - f) / 1000, 1.0::DOUBLE) END AS rate,
                CASE WHEN p >= 2 AND l > f THEN (l - f) / 1000 / (p - 1) END AS iv
            FROM (SELECT source, ws, max(we) AS we, sum(packets)::BIGINT AS p, min(fs) AS f,
                         max(ls) AS l, list_sort(list_distinct(list(router))) AS routers
                  FROM u GROUP BY source, ws)""",
            "merging",
        )

    def briefs(self) -> Iterator[Brief]:
        """Every source's ranking facts, streamed (scalars only: cheap to fetch)."""
        self._merge()
        by_day = self._query.by_day
        for statement in _sources_sql(by_day):
            self._sql(statement, "summing up")
        days = ", days" if by_day else ""
        cur = self._con.execute(
            "SELECT source, greatest(maxd, n), peak_rate, peak_window, attempts, first, last"
            f"{days} FROM src"
        )
        while rows := cur.fetchmany(FETCH_ROWS):
            for r in rows:
                yield Brief(
                    source=r[0],
                    distinct=r[1],
                    peak_rate=r[2],
                    peak_window_attempts=r[3],
                    attempts=r[4],
                    first_seen=r[5],
                    last_seen=r[6],
                    days=tuple(DayStat(**d) for d in r[7]) if by_day else None,
                )

    def stats(self, sources: Sequence[str]) -> list[SourceStats]:
        """The full merged state of ``sources`` (call after ``briefs``)."""
        days = ", days" if self._query.by_day else ""
        rows = self._con.execute(
            "SELECT source, family, plans, actions, routers, maxd, n, s, first, last, counts, "
            f"peak_rate, intervals, firsts{days} FROM src WHERE source IN (SELECT unnest($1))",
            [list(sources)],
        ).fetchall()
        return [
            SourceStats(
                source=r[0],
                family=r[1],
                plans=tuple(r[2]),
                actions=tuple(r[3]),
                routers=tuple(r[4]),
                max_distinct=r[5],
                sample_union=r[6],
                sample=tuple(d["d"] for d in sorted(r[7], key=_kd)),
                first_seen=r[8],
                last_seen=r[9],
                window_counts=tuple(r[10]),
                peak_rate=r[11],
                intervals=tuple(r[12] or ()),
                window_firsts=tuple(sorted(r[13] or ())),
                days=tuple(DayStat(**d) for d in r[14]) if days else None,
            )
            for r in rows
        ]

    def windows(self, sources: Sequence[str]) -> dict[str, tuple[WindowStat, ...]]:
        """The merged windows of ``sources`` (call after ``briefs``)."""
        rows = self._con.execute(
            "SELECT source, ws, we, p, f, l, routers FROM w "
            "WHERE source IN (SELECT unnest($1)) ORDER BY source, ws",
            [list(sources)],
        ).fetchall()
        out: dict[str, list[WindowStat]] = {}
        for src, ws, we, p, f, last, routers in rows:
            out.setdefault(src, []).append(WindowStat(ws, we, p, f, last, tuple(routers)))
        return {s: tuple(w) for s, w in out.items()}


def _sources_sql(by_day: bool) -> list[str]:
    """Statements building table src (one row per source, what ``SourceStats`` needs)
    from tables u and w. One table per step, each dropped once used, to hold fewer
    hash tables at once. At 10M records this step still runs out of DuckDB's memory
    limit (list and arg_min states do not spill): bench/README.md."""
    days = ", d.days" if by_day else ""
    join = " LEFT JOIN days d USING (source)" if by_day else ""
    return [
        # Unordered lists (ordered aggregates cost 5x): the score uses their sum, max,
        # median and spread, none of which depends on the order.
        """CREATE TABLE agg AS SELECT source, list(p) AS counts, max(p) AS peak_window,
            sum(p)::BIGINT AS attempts, min(f) AS first, max(l) AS last,
            max(rate) AS peak_rate, list(iv) FILTER (WHERE iv IS NOT NULL) AS intervals,
            CASE WHEN count(iv) = 0 THEN list(f) END AS firsts,
            list_sort(list_distinct(flatten(list(routers)))) AS routers
        FROM w GROUP BY source""",
        """CREATE TABLE meta AS SELECT source, min(family) AS family,
            list_sort(list_distinct(list(plan))) AS plans,
            list_sort(list_distinct(list(action))) AS actions, max(dd) AS maxd
        FROM u GROUP BY source""",
        *([f"CREATE TABLE days AS {_DAYS}"] if by_day else []),
        # botscore.sample_order as one BIGINT (a struct key costs 3x the CPU)
        f"""CREATE TABLE s1 AS SELECT source, dst,
            min(fs * {SAMPLE_INDEX_CAP + 1} + least(i, {SAMPLE_INDEX_CAP})) AS k
        FROM (SELECT source, fs, unnest(sample) AS dst, generate_subscripts(sample, 1) - 1 AS i
              FROM u)
        GROUP BY source, dst""",
        "DROP TABLE u",
        f"""CREATE TABLE samp AS SELECT source, count(*) AS n,
            arg_min({{'k': k, 'd': dst}}, {{'k': k, 'd': dst}}, {SAMPLE_LIMIT}) AS s
        FROM s1 GROUP BY source""",
        "DROP TABLE s1",
        f"""CREATE TABLE src AS SELECT a.source, m.family, m.plans, m.actions, a.routers, m.maxd,
            coalesce(s.n, 0) AS n, coalesce(s.s, []) AS s, a.first, a.last, a.counts,
            a.peak_rate, a.intervals, a.firsts, a.peak_window, a.attempts{days}
        FROM agg a JOIN meta m USING (source) LEFT JOIN samp s USING (source){join}""",
        "DROP TABLE agg",
        "DROP TABLE meta",
        "DROP TABLE samp",
        *(["DROP TABLE days"] if by_day else []),
    ]


# Per source and UTC day, what decides whether it was bot-like that day.
_DAYS = """
    WITH wd AS (SELECT source, ws // 86400000 AS day, max(rate) AS peak_rate,
                       max(p) AS peak_window_attempts FROM w GROUP BY ALL),
    ud AS (SELECT source, ws // 86400000 AS day, max(dd) AS md FROM u GROUP BY ALL),
    sd AS (SELECT source, day, count(DISTINCT dst) AS n
           FROM (SELECT source, ws // 86400000 AS day, unnest(sample) AS dst FROM u)
           GROUP BY ALL)
    SELECT source, list({'day': day, 'distinct': greatest(md, coalesce(n, 0)),
                         'peak_rate': peak_rate, 'peak_window_attempts': peak_window_attempts}
                        ORDER BY day) AS days
    FROM wd JOIN ud USING (source, day) LEFT JOIN sd USING (source, day)
    GROUP BY source
"""


def _kd(entry: dict[str, Any]) -> tuple[int, str]:
    return entry["k"], entry["d"]


def _normalised(rec: Record) -> str:
    """A validated record as one producer-form line (times in the exact 'Z' form)."""
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
