"""Per-source aggregation and the bot score: records in, one scored summary per source.

Owns merging ``blocked_source`` records from any number of files and routers (a
duplicate counts once, --since/--until keep whole windows) into one ``SourceReport``
per source, the bot score and the reason an abuse desk reads, and the JSON shape of a
summary. Reading files is ``op25b.report.abuseread``; printing is ``op25b.report.desk``.

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

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from op25b.report.abuseread import Record
from op25b.util.timefmt import format_ms

SAMPLE_LIMIT = 16  # the producer's sample size; reused for the report's own sample

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

# ``SourceReport.as_dict`` keys in order: the report's JSON keys and CSV columns.
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


def _interval_words(seconds: float) -> str:
    if seconds < 90:
        return f"~{round(seconds)} s"
    if seconds < 5400:
        return f"~{round(seconds / 60)} min"
    return f"~{seconds / 3600:.1f} h"


def plural(count: int, noun: str) -> str:
    """``1 window``, ``3 windows``."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _rate_words(rate: float) -> str:
    return f"{round(rate)}" if rate >= 10 else f"{rate:.1f}"


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
            "first_seen": format_ms(self.first_seen),
            "last_seen": format_ms(self.last_seen),
            "windows_active": len(self.windows),
            "peak_window_attempts": self.peak_window_attempts,
            "peak_rate": None if self.peak_rate is None else round(self.peak_rate, 2),
            "retry_interval_s": (
                None if self.retry_interval_s is None else round(self.retry_interval_s, 3)
            ),
            "routers": list(self.routers),
            "action": ",".join(self.actions),
        }


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
    dests = plural(distinct, "destination")
    windows = plural(n_windows, "window")
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
