"""``op25b report``: abuse logs in, what an abuse desk acts on out.

This module owns reading the abuse log (docs/abuse-log-format.md: plain, rotated, and
compressed files, several routers merged), turning its per-window records into one
summary per source, the bot score, and the table / JSON / CSV outputs. Drawing the
chart lives in ``op25b.chart`` (the only matplotlib user), imported only for --chart.

Definitions (also what the JSON keys mean):

- attempts: sum of ``packets`` over the source's records. Records of the same router,
  source and window are duplicates (a file passed twice, copytruncate overlap) and
  count once; the same window seen on *different* routers adds up.
- distinct_destinations: a lower bound. Every record's ``distinct_destinations`` is a
  true count for one router and window, and the union of all ``destinations_sample``
  lists is a true count too (but samples hold at most 16). The report shows the larger
  of the largest per-record count and the size of the union.
- window rate: attempts in one window / the active part of it (last_seen - first_seen,
  at least 1 s). The log has no finer timing, so a "burst" is the busiest window's
  mean rate while it was active.
- retry interval: median over windows of (last_seen - first_seen) / (attempts - 1); if
  no window has two attempts, the median gap between the starts of active windows.

Bot score, 0-100, the sum of three capped log-scale parts (see ``score_source``):
destinations up to 50 (saturates at 64 distinct), burst rate up to 30 (0.2/s..10/s),
busiest-window volume up to 20 (10..1000 attempts). Verdicts: >= 60 "bot-like"; at
most 2 destinations and rates below 1/s "misconfigured client" (with "likely" when
there are too few windows or they are irregular); else >= 30 "suspicious"; else
"unclear".
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import io
import itertools
import json
import lzma
import math
import re
import statistics
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

PROG = "op25b report"

# Per-file cap on problem lines printed, so a wrong file (a pcap, a binary) given by
# mistake yields a short note instead of a million lines of stderr.
MAX_PROBLEMS_PER_FILE = 20

SAMPLE_LIMIT = 16  # the producer's sample size; reused for the report's own sample
ACTIONS = frozenset({"drop", "reject", "monitor"})

# Score constants; public so tests and docs can refer to them.
DEST_WEIGHT, DEST_SATURATION = 50.0, 64
BURST_WEIGHT, BURST_MIN_RATE, BURST_SAT_RATE = 30.0, 0.2, 10.0
VOLUME_WEIGHT, VOLUME_MIN, VOLUME_SAT = 20.0, 10, 1000
BOT_THRESHOLD = 60
SUSPICIOUS_THRESHOLD = 30
CLIENT_MAX_DESTINATIONS = 2
CLIENT_MAX_RATE = 1.0  # attempts/s; a mail client's retries are far slower than this
STEADY_MIN_WINDOWS = 3
STEADY_MAX_CV = 0.5  # coefficient of variation of attempts per window

DEFAULT_TOP = 20
DEFAULT_WINDOW_MS = 300_000  # the producer's default window, used if none is known
MAX_CHART_BUCKETS = 2000
MAX_CHART_LINES = 10  # more lines than this are unreadable in a ticket attachment

JSON_KEYS = (
    "source",
    "family",
    "plan",
    "score",
    "verdict",
    "reason",
    "attempts",
    "distinct_destinations",
    "destinations_sample",
    "first_seen",
    "last_seen",
    "windows_active",
    "peak_window_attempts",
    "peak_rate",
    "retry_interval_s",
    "routers",
    "action",
)


class ReportError(Exception):
    """A problem that stops the report (bad argument, unreadable file): exit 2."""


# --------------------------------------------------------------------------- time


def parse_timestamp(text: str) -> int:
    """A record timestamp (ISO 8601 with a zone) -> epoch milliseconds; ValueError."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        # The format says UTC with 'Z'; a zoneless time would be a producer bug, and
        # guessing a zone would silently shift every window.
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return _to_ms(dt)


def _to_ms(dt: datetime) -> int:
    # timestamp() is C and a float holds epoch ms exactly for millennia; round() undoes
    # the binary fraction (x.412 s * 1000 may come out as 411.99999).
    return round(dt.timestamp() * 1000)


def format_timestamp(ms: int) -> str:
    """Epoch milliseconds -> the log's own format, e.g. ``2026-11-23T18:00:03.412Z``."""
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _short_time(ms: int) -> str:
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%d %H:%M:%SZ")


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_time_arg(text: str, now: datetime) -> int:
    """--since/--until value -> epoch ms: ISO time, date (UTC midnight), ``24h``, ``7d``."""
    m = _RELATIVE.match(text)
    if m:
        return _to_ms(now) - round(float(m.group(1)) * _UNIT_S[m.group(2)] * 1000)
    if text.strip().lower() == "now":
        return _to_ms(now)
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 time or date, nor an age like 24h or 7d: {text!r}"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # the logs are UTC; a bare date means a UTC day
    return _to_ms(dt)


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


def _interval_words(seconds: float) -> str:
    if seconds < 90:
        return f"~{round(seconds)} s"
    if seconds < 5400:
        return f"~{round(seconds / 60)} min"
    return f"~{seconds / 3600:.1f} h"


def _bucket_words(ms: int) -> str:
    s = ms // 1000
    if s % 3600 == 0:
        return f"{s // 3600}-h"
    if s % 60 == 0:
        return f"{s // 60}-min"
    return f"{s}-s"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _rate_words(rate: float) -> str:
    return f"{round(rate)}" if rate >= 10 else f"{rate:.1f}"


# ------------------------------------------------------------------------ records


@dataclass(frozen=True, slots=True)
class Record:
    """One ``blocked_source`` line, validated; times in epoch milliseconds."""

    router: str
    source: str
    family: int
    plan: str
    action: str
    window_start: int
    window_end: int
    first_seen: int
    last_seen: int
    packets: int
    distinct_destinations: int
    destinations_sample: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """A skipped line (or file part), printed as ``file:line: message``."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


def _str(obj: dict[str, Any], key: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v:
        raise ValueError(f"{key}: expected a non-empty string, got {v!r}")
    return v


def _count(obj: dict[str, Any], key: str) -> int:
    v = obj.get(key)
    # bool is an int subclass; True packets would be a producer bug, not 1.
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{key}: expected a non-negative integer, got {v!r}")
    return v


def _time(obj: dict[str, Any], key: str) -> int:
    v = _str(obj, key)
    try:
        return parse_timestamp(v)
    except ValueError:
        raise ValueError(f"{key}: not an ISO 8601 UTC timestamp: {v!r}") from None


def record_from_json(obj: object) -> Record | None:
    """Validate one decoded line; None for other record types; ValueError if invalid."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    rtype = obj.get("type")
    if rtype != "blocked_source":
        if isinstance(rtype, str):
            return None  # a record type added later: not ours to count, not an error
        raise ValueError(f"type: expected a string, got {rtype!r}")
    if obj.get("version") != 1:
        raise ValueError(f"version: unsupported {obj.get('version')!r} (this reader knows 1)")
    family = obj.get("family")
    if family not in (4, 6) or isinstance(family, bool):
        raise ValueError(f"family: expected 4 or 6, got {family!r}")
    action = _str(obj, "action")
    if action not in ACTIONS:
        raise ValueError(f"action: expected drop, reject or monitor, got {action!r}")
    sample = obj.get("destinations_sample")
    if not isinstance(sample, list) or not all(isinstance(d, str) for d in sample):
        raise ValueError("destinations_sample: expected a list of strings")
    rec = Record(
        router=_str(obj, "router"),
        source=_str(obj, "source"),
        family=family,
        plan=_str(obj, "plan"),
        action=action,
        window_start=_time(obj, "window_start"),
        window_end=_time(obj, "window_end"),
        first_seen=_time(obj, "first_seen"),
        last_seen=_time(obj, "last_seen"),
        packets=_count(obj, "packets"),
        distinct_destinations=_count(obj, "distinct_destinations"),
        destinations_sample=tuple(sample),
    )
    if rec.window_end < rec.window_start or rec.last_seen < rec.first_seen:
        raise ValueError("times out of order (window_end < window_start or last < first)")
    return rec


# ------------------------------------------------------------------------ reading

_GZIP_MAGIC = b"\x1f\x8b"
_BZ2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"


def open_log(path: str) -> io.BufferedIOBase:
    """Open a log for binary reading, decompressing by magic bytes (not by name).

    logrotate's ``delaycompress`` leaves ``.1`` plain and ``.2.gz`` compressed, and a
    ``compresscmd`` can change the format, so names are no guide. ReportError if the
    file cannot be opened.
    """
    try:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a directory, not an abuse log") from None
    except OSError as e:
        raise ReportError(f"{path}: cannot open: {e.strerror or e}") from None
    try:
        head = raw.read(6)
        raw.seek(0)
    except OSError as e:
        raw.close()
        raise ReportError(f"{path}: cannot read: {e.strerror or e}") from None
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head.startswith(_BZ2_MAGIC):
        return bz2.BZ2File(raw, mode="rb")
    if head.startswith(_XZ_MAGIC):
        return lzma.LZMAFile(raw, mode="rb")
    return raw


def _decode(line: bytes) -> object:
    return json.loads(line.decode("utf-8"))


def _recover_tail(line: bytes) -> Record | None:
    """A record glued after a crash-truncated one (restart appended to the stub).

    Try each later ``{"`` as the start of a complete record that runs to the end of
    the line; nested objects (``ports``) fail validation or leave trailing text.
    """
    text = line.decode("utf-8", errors="replace")
    decoder = json.JSONDecoder()
    pos = text.find('{"', 1)
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
            if not text[end:].strip():
                rec = record_from_json(obj)
                if rec is not None:
                    return rec
        except ValueError:
            pass
        pos = text.find('{"', pos + 1)
    return None


def read_log(
    path: str, on_record: Callable[[Record], None], on_problem: Callable[[Problem], None]
) -> int:
    """Stream one file's records to ``on_record``; return the number of lines read.

    Skipped lines go to ``on_problem`` and nothing else is lost: a last line without
    its newline is a write cut short by a crash ("truncated"), a bad line elsewhere is
    "malformed" or "invalid". ReportError only when the file cannot be opened or read.
    """
    shown = 0
    hidden = 0

    def problem(lineno: int | None, message: str) -> None:
        nonlocal shown, hidden
        if shown < MAX_PROBLEMS_PER_FILE:
            shown += 1
            on_problem(Problem(path, lineno, message))
        else:
            hidden += 1

    lineno = 0
    with open_log(path) as stream:
        try:
            for line in stream:
                lineno += 1
                if not line.strip():
                    continue
                complete = line.endswith(b"\n")
                try:
                    obj = _decode(line)
                except (ValueError, UnicodeDecodeError) as e:
                    if not complete:
                        problem(lineno, "truncated record skipped")
                        continue
                    tail = _recover_tail(line)
                    if tail is not None:
                        problem(
                            lineno,
                            "truncated record skipped (the record appended after it "
                            "on the same line was kept)",
                        )
                        on_record(tail)
                    else:
                        problem(lineno, f"malformed record skipped: {_json_reason(e)}")
                    continue
                try:
                    rec = record_from_json(obj)
                except ValueError as e:
                    problem(lineno, f"invalid record skipped: {e}")
                    continue
                if rec is not None:
                    on_record(rec)
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError, lzma.LZMAError) as e:
            # A compressed file cut short (copy interrupted) or corrupt: keep what
            # decompressed cleanly, say where it stopped.
            problem(None, f"unreadable after line {lineno}, rest of file skipped: {e}")
    if hidden:
        on_problem(Problem(path, None, f"{hidden} more skipped lines not shown"))
    return lineno


def _json_reason(e: Exception) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} at column {e.colno}"
    return str(e)


# -------------------------------------------------------------------- aggregation


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


@dataclass(frozen=True, slots=True)
class WindowStat:
    """One source's merged activity in one aggregation window (all routers)."""

    start: int
    end: int
    packets: int
    first_seen: int
    last_seen: int
    routers: tuple[str, ...]

    @property
    def rate(self) -> float | None:
        """Attempts/s while active (span floored at 1 s); None below two attempts."""
        if self.packets < 2:
            return None
        return self.packets / max((self.last_seen - self.first_seen) / 1000, 1.0)

    @property
    def interval_s(self) -> float | None:
        """Mean time between attempts in this window; None if it cannot be told."""
        if self.packets < 2 or self.last_seen <= self.first_seen:
            return None
        return (self.last_seen - self.first_seen) / 1000 / (self.packets - 1)


@dataclass(frozen=True, slots=True)
class Score:
    """The bot score, its parts, and the words an abuse desk reads."""

    value: int
    verdict: str
    reason: str
    destinations_part: float
    burst_part: float
    volume_part: float


@dataclass(frozen=True, slots=True)
class SourceReport:
    """Everything the report says about one source (address or /64)."""

    source: str
    family: int
    plans: tuple[str, ...]
    actions: tuple[str, ...]
    routers: tuple[str, ...]
    attempts: int
    distinct_destinations: int
    destinations_sample: tuple[str, ...]
    first_seen: int
    last_seen: int
    windows: tuple[WindowStat, ...]
    peak_window_attempts: int
    peak_rate: float | None
    retry_interval_s: float | None
    score: Score

    def as_dict(self) -> dict[str, object]:
        """The stable JSON shape (keys in ``JSON_KEYS`` order)."""
        return {
            "source": self.source,
            "family": self.family,
            "plan": ",".join(self.plans),
            "score": self.score.value,
            "verdict": self.score.verdict,
            "reason": self.score.reason,
            "attempts": self.attempts,
            "distinct_destinations": self.distinct_destinations,
            "destinations_sample": list(self.destinations_sample),
            "first_seen": format_timestamp(self.first_seen),
            "last_seen": format_timestamp(self.last_seen),
            "windows_active": len(self.windows),
            "peak_window_attempts": self.peak_window_attempts,
            "peak_rate": None if self.peak_rate is None else round(self.peak_rate, 2),
            "retry_interval_s": (
                None if self.retry_interval_s is None else round(self.retry_interval_s, 3)
            ),
            "routers": list(self.routers),
            "action": ",".join(self.actions),
        }


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


class Aggregator:
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
        windows=windows,
        peak_window_attempts=peak_window,
        peak_rate=peak_rate,
        retry_interval_s=interval,
        score=score,
    )


# ------------------------------------------------------------------------ scoring


def _log_part(value: float, low: float, high: float, weight: float) -> float:
    """``weight`` scaled logarithmically: 0 at or below ``low``, full at ``high``."""
    if value <= low:
        return 0.0
    return weight * min(1.0, math.log(value / low) / math.log(high / low))


def score_source(
    *,
    distinct: int,
    peak_rate: float | None,
    peak_window_attempts: int,
    window_counts: Sequence[int],
    retry_interval_s: float | None,
) -> Score:
    """The bot score (0-100) and its reason; pure, so tests can probe the edges.

    Log scales because the signals span orders of magnitude (1 vs 500 destinations,
    0.01 vs 100 attempts/s) and what matters is the order, not the exact count.
    Destinations weigh most: a spambot's whole purpose is reaching many MXes, while
    a misconfigured client knows exactly one server (its provider's or a mailbox
    provider's). Rate and volume separate a flooding bot from a patient client.
    """
    rate = peak_rate or 0.0
    dest_part = _log_part(distinct, 1, DEST_SATURATION, DEST_WEIGHT)
    burst_part = _log_part(rate, BURST_MIN_RATE, BURST_SAT_RATE, BURST_WEIGHT)
    volume_part = _log_part(peak_window_attempts, VOLUME_MIN, VOLUME_SAT, VOLUME_WEIGHT)
    value = max(0, min(100, round(dest_part + burst_part + volume_part)))
    n_windows = len(window_counts)
    dests = _n(distinct, "destination")
    windows = _n(n_windows, "window")
    rate_words = (
        f"bursts of {_rate_words(rate)} attempts/s"
        if rate >= 1
        else f"peak {_rate_words(rate)} attempts/s"
    )

    if value >= BOT_THRESHOLD:
        verdict = "bot-like"
        reason = f"bot-like: {distinct} distinct MX destinations, {rate_words}"
    elif distinct <= CLIENT_MAX_DESTINATIONS and rate < CLIENT_MAX_RATE:
        mean = statistics.fmean(window_counts) if window_counts else 0.0
        cv = statistics.pstdev(window_counts) / mean if mean else 0.0
        every = (
            f"every {_interval_words(retry_interval_s)}"
            if retry_interval_s is not None
            else "at a low rate"
        )
        hint = "likely a mail client set to port 25 instead of 587"
        if n_windows >= STEADY_MIN_WINDOWS and cv <= STEADY_MAX_CV:
            verdict = "misconfigured client"
            reason = (
                f"misconfigured client: {dests}, steady retries {every} over {windows} — {hint}"
            )
        else:
            verdict = "likely misconfigured client"
            why = "too few windows" if n_windows < STEADY_MIN_WINDOWS else "irregular"
            reason = (
                f"likely misconfigured client: {dests}, retries {every} in {windows} "
                f"({why} to be sure) — {hint}"
            )
    elif value >= SUSPICIOUS_THRESHOLD:
        verdict = "suspicious"
        reason = (
            f"suspicious: {dests}, {rate_words}, up to {peak_window_attempts} attempts "
            f"in one window — review"
        )
    else:
        verdict = "unclear"
        reason = (
            f"unclear: {dests}, {rate_words}, up to {peak_window_attempts} attempts "
            f"in one window over {windows}"
        )
    return Score(value, verdict, reason, dest_part, burst_part, volume_part)


# ------------------------------------------------------------------------- report


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

    # Open every file once first: a typo in the last of ten names should fail in a
    # second, not after reading nine files.
    for path in paths:
        open_log(path).close()
    for path in paths:
        read_log(path, agg.add, count_problem)
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
        f"{_n(len(report.sources), 'source')}, {_n(report.attempts, 'blocked attempt')}, "
        f"{when}, {_n(len(report.files), 'file')} read\n"
    )
    notes = []
    if report.duplicates:
        notes.append(f"{_n(report.duplicates, 'duplicate record')} ignored")
    if report.filtered_out:
        notes.append(f"{_n(report.filtered_out, 'record')} outside --since/--until")
    if report.problems:
        notes.append(f"{_n(report.problems, 'line')} skipped (see stderr)")
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
        from op25b import chart

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
