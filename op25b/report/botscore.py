"""The bot score: one source's merged state in, one scored summary out.

Owns what an engine hands over (``SourceStats``, ``DayStat``), turning it into a
``SourceReport`` (``summarise``), the bot score and the reason an abuse desk reads,
the days a source was bot-like, the ranking, and the JSON shape of a summary. Merging
records into that state is an engine's job (``op25b.report.pyengine``, or
``op25b.report.duckengine`` when DuckDB is installed); reading files is
``op25b.report.abuseread``; printing is ``op25b.report.desk``.

Definitions (also what the JSON keys mean):

- attempts: sum of ``packets`` over the source's records. A record read twice (a file
  passed twice, copytruncate overlap: every field equal) counts once; records of the
  same window that differ (the same window seen on *different* routers, or the two
  parts of a window a policy reload split on one router) add up.
- distinct_destinations: a lower bound. Every record's ``distinct_destinations`` is a
  true count for one router and window, and the union of all ``destinations_sample``
  lists is a true count too (but samples hold at most 16). The report shows the larger
  of the largest per-record count and the size of the union.
- window rate: attempts in one window / the active part of it (last_seen - first_seen,
  at least 1 s). The log has no finer timing, so a "burst" is the busiest window's
  mean rate while it was active.
- bot_days (with --by-day): the UTC days on which the source's windows of that day
  alone score as bot-like.
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

from op25b.util.timefmt import format_ms

SAMPLE_LIMIT = 16  # the producer's sample size; reused for the report's own sample
# Sample positions beyond this compare equal (the producer writes 16); it keeps the
# DuckDB engine's first-seen key one BIGINT (epoch ms * 4096 + position).
SAMPLE_INDEX_CAP = 4095

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
        return window_rate(self.packets, self.first_seen, self.last_seen)

    @property
    def interval_s(self) -> float | None:
        """Mean time between attempts in this window; None if it cannot be told."""
        return window_interval(self.packets, self.first_seen, self.last_seen)


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
    windows_active: int
    peak_window_attempts: int
    peak_rate: float | None
    retry_interval_s: float | None
    score: Score
    # The UTC days (YYYY-MM-DD) the source was bot-like on its own; None when the
    # report was not asked for days (--by-day, --min-days), which costs a pass more.
    bot_days: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, object]:
        """The stable JSON shape (keys in ``JSON_KEYS`` order, then ``bot_days`` if known)."""
        d: dict[str, object] = {
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
            "windows_active": self.windows_active,
            "peak_window_attempts": self.peak_window_attempts,
            "peak_rate": None if self.peak_rate is None else round(self.peak_rate, 2),
            "retry_interval_s": (
                None if self.retry_interval_s is None else round(self.retry_interval_s, 3)
            ),
            "routers": list(self.routers),
            "action": ",".join(self.actions),
        }
        if self.bot_days is not None:
            d["bot_days"] = list(self.bot_days)
        return d


DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class DayStat:
    """What decides whether a source was bot-like on one UTC day (day = epoch days).

    The bot verdict needs only the score, and the score only these three: the
    retry interval and the spread of windows matter for the other verdicts.
    """

    day: int
    distinct: int
    peak_rate: float | None
    peak_window_attempts: int


@dataclass(frozen=True, slots=True)
class SourceStats:
    """One source's merged state, as an engine hands it over to be scored.

    Both engines (``pyengine``, ``duckengine``) produce exactly this, so the summary
    and score below are computed by one piece of code whichever engine ran.
    Lists are per merged window (all routers, all parts of a window split by a
    reload), in window order.
    """

    source: str
    family: int
    plans: tuple[str, ...]
    actions: tuple[str, ...]
    routers: tuple[str, ...]
    max_distinct: int  # the largest per-record distinct_destinations
    sample_union: int  # distinct destinations over every record's sample
    sample: tuple[str, ...]  # first SAMPLE_LIMIT of them, in first-seen order
    first_seen: int
    last_seen: int
    window_counts: tuple[int, ...]
    peak_rate: float | None
    intervals: tuple[float, ...]  # each window's interval_s, where it has one
    window_firsts: tuple[int, ...]  # sorted first_seen per window; only if no intervals
    days: tuple[DayStat, ...] | None = None


def sample_order(first_seen: int, index: int, destination: str) -> tuple[int, int, str]:
    """Where a destination goes in a source's sample: first seen first; ties (two
    routers, same time and position) by address, so no engine depends on file order."""
    return (first_seen, min(index, SAMPLE_INDEX_CAP), destination)


def window_rate(packets: int, first_seen: int, last_seen: int) -> float | None:
    """Attempts/s while active (span floored at 1 s); None below two attempts."""
    if packets < 2:
        return None
    return packets / max((last_seen - first_seen) / 1000, 1.0)


def window_interval(packets: int, first_seen: int, last_seen: int) -> float | None:
    """Mean time between attempts in one window; None if it cannot be told."""
    if packets < 2 or last_seen <= first_seen:
        return None
    return (last_seen - first_seen) / 1000 / (packets - 1)


def day_words(day: int) -> str:
    """Epoch day number -> ``YYYY-MM-DD`` (UTC)."""
    return format_ms(day * DAY_MS)[:10]


def bot_days(days: Sequence[DayStat]) -> tuple[str, ...]:
    """The days (in order) on which the source alone scored as bot-like (the verdict
    ``score_source`` gives at or above BOT_THRESHOLD, whatever else it is told)."""
    return tuple(
        day_words(d.day)
        for d in sorted(days, key=lambda d: d.day)
        if score_value(d.distinct, d.peak_rate, d.peak_window_attempts) >= BOT_THRESHOLD
    )


@dataclass(frozen=True, slots=True)
class Brief:
    """What ranks a source and adds to the totals, without its lists (cheap for all).

    ``distinct`` (and a DayStat's) may stop at any count from DEST_SATURATION up: the
    score is the same from there on, and the DuckDB engine spares counting a bot's
    every destination. Summaries always get the exact count.
    """

    source: str
    distinct: int
    peak_rate: float | None
    peak_window_attempts: int
    attempts: int
    first_seen: int
    last_seen: int
    days: tuple[DayStat, ...] | None = None

    def rank(self) -> tuple[int, int, str]:
        """``rank_key`` of the summary this source will get."""
        score = score_value(self.distinct, self.peak_rate, self.peak_window_attempts)
        return (-score, -self.attempts, self.source)


def summarise(st: SourceStats) -> SourceReport:
    """Score one source's merged state and say why."""
    distinct = max(st.max_distinct, st.sample_union)
    if st.intervals:
        interval: float | None = statistics.median(st.intervals)
    elif len(st.window_firsts) >= 2:
        gaps = ((b - a) / 1000 for a, b in itertools.pairwise(st.window_firsts))
        interval = statistics.median(gaps)
    else:
        interval = None
    counts = st.window_counts
    peak_window = max(counts) if counts else 0
    score = score_source(
        distinct=distinct,
        peak_rate=st.peak_rate,
        peak_window_attempts=peak_window,
        window_counts=counts,
        retry_interval_s=interval,
    )
    return SourceReport(
        source=st.source,
        family=st.family,
        plans=st.plans,
        actions=st.actions,
        routers=st.routers,
        attempts=sum(counts),
        distinct_destinations=distinct,
        destinations_sample=st.sample[:SAMPLE_LIMIT],
        first_seen=st.first_seen,
        last_seen=st.last_seen,
        windows_active=len(counts),
        peak_window_attempts=peak_window,
        peak_rate=st.peak_rate,
        retry_interval_s=interval,
        score=score,
        bot_days=None if st.days is None else bot_days(st.days),
    )


def rank_key(s: SourceReport) -> tuple[int, int, str]:
    """The report's order: score, then attempts (both highest first), then source."""
    return (-s.score.value, -s.attempts, s.source)


# ------------------------------------------------------------------------ scoring


def _log_part(value: float, low: float, high: float, weight: float) -> float:
    """``weight`` scaled logarithmically: 0 at or below ``low``, full at ``high``."""
    if value <= low:
        return 0.0
    return weight * min(1.0, math.log(value / low) / math.log(high / low))


def _parts(distinct: int, rate: float, peak_window_attempts: int) -> tuple[float, float, float]:
    return (
        _log_part(distinct, 1, DEST_SATURATION, DEST_WEIGHT),
        _log_part(rate, BURST_MIN_RATE, BURST_SAT_RATE, BURST_WEIGHT),
        _log_part(peak_window_attempts, VOLUME_MIN, VOLUME_SAT, VOLUME_WEIGHT),
    )


def score_value(distinct: int, peak_rate: float | None, peak_window_attempts: int) -> int:
    """The score alone (what ``score_source`` computes first): it needs no lists, so
    every source can be ranked before any is summarised."""
    a, b, c = _parts(distinct, peak_rate or 0.0, peak_window_attempts)
    return max(0, min(100, round(a + b + c)))


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
    dest_part, burst_part, volume_part = _parts(distinct, rate, peak_window_attempts)
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
