"""The DuckDB engine's SQL: reading the logs exactly as the reader would, and ranking.

Owns the statements ``op25b.report.duckengine`` runs (that module owns running them);
no DuckDB import here, only text.

Reading. Every key is read as DuckDB's JSON type, whose text is the value re-written by
DuckDB's JSON library in minified form: a string quoted with only the escapes it needs, an
integer as plain digits, a real always with a '.' or an exponent. So a few cheap tests on
those texts (``_CERTAIN``: equality, a prefix, no backslash, a time that prints back as
itself) tell that a line is in the producer's form and that every value is what
``abuseread.record_from_json`` would make of it, and the values are cut out of the
texts: no JSON function per key (those checks were half the scan's CPU). A line in any
other form (escapes in a string, ``1.0`` as the version, a time with an offset) is not
wrong, only not certain: its file is read by ``abuseread`` and reaches DuckDB normalised
(``SELECT_NORMALISED``).

Ranking. Only scalars are aggregated over all sources (sums, minima, maxima, counts:
DuckDB's hash aggregates spill them to disk under its memory limit; lists and
``arg_min`` tops do not, and ran out of memory at 10M records). A source's lists (windows,
routers, its sample in first-seen order) are made only for the sources shown, by
``op25b.report.pyengine`` from their records (``DETAIL``).
"""

from __future__ import annotations

from op25b.report.botscore import DAY_MS, DEST_SATURATION

_DAY = f"fdiv(ws, {DAY_MS})::BIGINT"  # botscore's day (floor division, as Python's //)
KEYS = ("type", "version", "router", "source", "family", "plan", "action", "rule",
        "window_start", "window_end", "first_seen", "last_seen", "packets",
        "distinct_destinations", "destinations_sample")  # fmt: skip
COLUMNS = "{" + ", ".join(f"'{k}': 'JSON'" for k in KEYS) + "}"

# The producer's time form; a time is certain when it prints back as itself (a 31
# September does not parse) with a four-digit year from 1000 (what fromisoformat reads).
_TIME_FORMAT = '"%Y-%m-%dT%H:%M:%S.%gZ"'
_TIMES = {"window_start": "ws", "window_end": "we", "first_seen": "fs", "last_seen": "ls"}


def _no_escape(key: str) -> str:
    """A JSON string whose text has no backslash: its value is the text unquoted."""
    return f"(starts_with({key}, '\"') AND NOT contains({key}, '\\'))"


def _time_ok(key: str) -> str:
    return (f"(length({key}) = 26 AND {key}[2] BETWEEN '1' AND '9' "
            f"AND strftime({_TIMES[key]}, '{_TIME_FORMAT}') = {key})")  # fmt: skip


_COUNT = "[0-9]{1,18}"  # fits a BIGINT; a longer one is read by abuseread
_SAMPLE = r'\[("[^"\\]*"(,"[^"\\]*")*)?\]'  # strings without escapes, minified
_CERTAIN = " AND ".join([
    """"type" = '"blocked_source"'""", "version = '1'", "family IN ('4', '6')",
    *(f"{_no_escape(k)} AND length({k}) > 2" for k in ("router", "source", "plan")),
    """"action" IN ('"drop"', '"reject"', '"monitor"')""",
    f'("rule" IS NULL OR {_no_escape("rule")})',  # missing and null are both SQL NULL
    *(_time_ok(k) for k in _TIMES),
    f"regexp_full_match(packets, '{_COUNT}')",
    f"regexp_full_match(distinct_destinations, '{_COUNT}')",
    f"regexp_full_match(destinations_sample, '{_SAMPLE}')",
])  # fmt: skip
_PARSED = ", ".join(f"try_strptime({k}, '{_TIME_FORMAT}') AS {v}" for k, v in _TIMES.items())
_TEXTS = ", ".join(f'"{k}"::VARCHAR AS "{k}"' for k in KEYS)


def _time(key: str) -> str:
    return f'epoch_ms(TRY_CAST(("{key}"::VARCHAR)[2:-2] AS TIMESTAMPTZ))'


# Another record type is not ours to count (the reader skips it quietly too); a row
# whose "type" is missing or not a string is kept, is not certain and is read by abuseread.
_OTHER_TYPE = """NOT coalesce(starts_with("type"::VARCHAR, '"')
                              AND "type"::VARCHAR <> '"blocked_source"', false)"""

# Texts, then the times parsed once, then the checks and the values (DuckDB computes an
# expression named twice in one SELECT twice).
SELECT_FAST = f"""
SELECT filename, NOT coalesce({_CERTAIN} AND we >= ws AND ls >= fs, false) AS bad,
    router[2:-2] AS router, source[2:-2] AS source, TRY_CAST(family AS INTEGER) AS family,
    plan[2:-2] AS plan, "action"[2:-2] AS action, "rule"[2:-2] AS rule,
    {", ".join(f"epoch_ms({v}) AS {v}" for v in _TIMES.values())},
    TRY_CAST(packets AS BIGINT) AS packets, TRY_CAST(distinct_destinations AS BIGINT) AS dd,
    destinations_sample AS sample
FROM (SELECT *, {_PARSED}
      FROM (SELECT filename, {_TEXTS} FROM (@SCAN@) WHERE {_OTHER_TYPE}))
"""

# Files abuseread validated and wrote in the producer's form (strings may need escapes,
# counts may not fit a BIGINT: the reader takes any integer, ``duckengine`` up to 2**127).
SELECT_NORMALISED = f"""
SELECT filename, false AS bad, router->>'$' AS router, source->>'$' AS source,
    TRY_CAST(family::VARCHAR AS INTEGER) AS family, plan->>'$' AS plan,
    "action"->>'$' AS action, "rule"->>'$' AS rule,
    {_time("window_start")} AS ws, {_time("window_end")} AS we,
    {_time("first_seen")} AS fs, {_time("last_seen")} AS ls,
    TRY_CAST(packets::VARCHAR AS HUGEINT) AS packets,
    TRY_CAST(distinct_destinations::VARCHAR AS HUGEINT) AS dd,
    destinations_sample::VARCHAR AS sample
FROM (@SCAN@) WHERE {_OTHER_TYPE}
"""


def select(form: str, scan: str) -> str:
    """``SELECT_FAST`` or ``SELECT_NORMALISED`` over ``scan`` (a read_json query)."""
    return form.replace("@SCAN@", scan)


EMPTY_U = """CREATE TABLE u (router VARCHAR, source VARCHAR, plan VARCHAR, action VARCHAR,
    rule VARCHAR, ws BIGINT, we BIGINT, fs BIGINT, ls BIGINT, packets BIGINT, dd BIGINT,
    sample VARCHAR, badfile VARCHAR, keep BOOLEAN, family INTEGER, copies BIGINT, h UBIGINT)"""


_RECORD = "router, source, plan, action, rule, ws, we, fs, ls, packets, dd, sample"


def create_read(union: str, keep: str) -> str:
    """Table ``read``: every row the scan yields, with a hash of every field the report
    reads (the sample's minified text included) to find the same record read twice."""
    return (
        f"CREATE TABLE read AS SELECT {_RECORD}, CASE WHEN bad THEN filename END AS badfile, "
        f"coalesce(NOT bad AND {keep}, false) AS keep, family, 1::BIGINT AS copies, "
        f"hash({_RECORD}) AS h FROM ({union})"
    )


# Hashes more than one row has: records read twice, or (rarely) different records whose
# hashes collide. Grouping on one integer is ~6x cheaper than on every field.
CREATE_TWICE = "CREATE TABLE twice AS SELECT h FROM read GROUP BY h HAVING count(*) > 1"
# Table u: each record once, with how often it was read. Rows of a hash seen more than
# once are grouped on every field, so a collision never merges two different records.
CREATE_U = f"""CREATE TABLE u AS
    SELECT * FROM read ANTI JOIN twice USING (h)
    UNION ALL BY NAME
    SELECT {_RECORD}, badfile, keep, h, min(family) AS family, sum(copies)::BIGINT AS copies
    FROM read SEMI JOIN twice USING (h) GROUP BY ALL"""


# A sample's destinations from its minified text: split without a JSON parse when no
# string in it has an escape (then '","' only occurs between two of them).
_DESTS = """CASE WHEN contains(sample, '\\') THEN json_extract_string(sample, '$[*]')
    WHEN sample = '[]' THEN []::VARCHAR[] ELSE string_split(sample[3:-3], '","') END"""

# Windows merged across routers and the parts a reload split; the same float
# operations, in the same order, as botscore.window_rate (IEEE doubles: same bits).
CREATE_W = """CREATE TABLE w AS SELECT *,
    CASE WHEN p >= 2 THEN p / greatest((l - f) / 1000, 1.0::DOUBLE) END AS rate
FROM (SELECT source, ws, max(we) AS we, sum(packets) AS p, min(fs) AS f,
             max(ls) AS l, max(dd) AS md
      FROM u GROUP BY source, ws)"""


def ranking(by_day: bool) -> list[str]:
    """Statements building table src (a source's ranking facts) and, ``by_day``, table
    days (the same per source and UTC day), from u and w.

    Distinct destinations are counted as rows of a DISTINCT (it spills), joined to the
    rest by a UNION ALL into one scalar aggregate per source instead of a join. They are
    counted only where the largest per-record count is below DEST_SATURATION: at or
    above it the score's destinations part is full whatever the union holds, so the
    ranking (all ``Brief`` is for) is the same, and bots' long samples, most of the
    pairs, are left out. The sources shown get exact counts (``DETAIL``).
    """
    below = f"HAVING max(md) < {DEST_SATURATION}"
    if not by_day:
        return [
            f"""CREATE TABLE pairs AS SELECT DISTINCT source, unnest({_DESTS}) AS dst FROM u
            SEMI JOIN (SELECT source FROM w GROUP BY source {below}) USING (source)""",
            _SRC,
            "DROP TABLE pairs",
        ]
    return [
        f"""CREATE TABLE dpairs AS SELECT DISTINCT source, day, unnest({_DESTS}) AS dst
        FROM (SELECT source, {_DAY} AS day, sample FROM u)
        SEMI JOIN (SELECT source, {_DAY} AS day FROM w GROUP BY ALL {below}) USING (source, day)""",
        f"""CREATE TABLE pairs AS SELECT DISTINCT source, dst FROM dpairs
        SEMI JOIN (SELECT source FROM w GROUP BY source {below}) USING (source)""",
        _SRC,
        "DROP TABLE pairs",
        f"""CREATE TABLE days AS SELECT source, day, greatest(max(md), count(dst)) AS nd,
            max(rate) AS peak_rate, max(p) AS peak_window
        FROM (SELECT source, {_DAY} AS day, p, rate, md, NULL AS dst FROM w
              UNION ALL SELECT source, day, NULL, NULL, NULL, dst FROM dpairs)
        GROUP BY source, day""",
        "DROP TABLE dpairs",
    ]


_SRC = """CREATE TABLE src AS SELECT source, greatest(max(md), count(dst)) AS nd,
    max(rate) AS peak_rate, max(p) AS peak_window, sum(p) AS attempts,
    min(f) AS first, max(l) AS last
FROM (SELECT source, p, f, l, rate, md, NULL AS dst FROM w
      UNION ALL SELECT source, NULL, NULL, NULL, NULL, NULL, dst FROM pairs)
GROUP BY source"""

BRIEFS = "SELECT source, nd, peak_rate, peak_window, attempts, first, last FROM src"
# One row per source and day, in source order (an external sort: spills).
BRIEFS_BY_DAY = """SELECT source, s.nd, s.peak_rate, s.peak_window, attempts, first,
    last, day, d.nd, d.peak_rate, d.peak_window
FROM src s JOIN days d USING (source) ORDER BY source, day"""

# The records of a few sources, each source's together (lowest family first: the
# family a source gets when its records disagree).
DETAIL = """SELECT router, source, family, plan, action, rule, ws, we, fs, ls, packets, dd,
    sample FROM u WHERE source IN (SELECT unnest($1)) ORDER BY source, family"""
