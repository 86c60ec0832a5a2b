"""The bot score's "misconfigured client" rule at its edges, and the retry interval.

A boundary table: each row sits on one side of one documented limit (at most 2
destinations, below 1 attempt/s, at least 3 windows, attempts per window varying by at
most half their mean), so moving any limit by one step, or dropping a condition, flips
a row. The aggregation rows feed records through ``Aggregator`` the way ``op25b
report`` does, to pin the retry interval's fallback for single-attempt windows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from op25b.report.abuseread import Record
from op25b.report.botscore import (
    CLIENT_MAX_DESTINATIONS,
    CLIENT_MAX_RATE,
    STEADY_MAX_CV,
    STEADY_MIN_WINDOWS,
    Score,
    SourceReport,
    rank_key,
    score_source,
    summarise,
)
from op25b.report.pyengine import PyRun
from op25b.report.query import Query


class Aggregator:
    """Records in, ranked ``SourceReport``s out, the way ``op25b report`` does it
    (the streaming engine, every source summarised and ranked)."""

    def __init__(self, since: int | None = None, until: int | None = None) -> None:
        self.run = PyRun(Query(since=since, until=until))

    def add(self, rec: Record) -> None:
        self.run.add(rec)

    def sources(self) -> list[SourceReport]:
        names = [b.source for b in self.run.briefs()]
        return sorted((summarise(st) for st in self.run.stats(names)), key=rank_key)

    @property
    def records(self) -> int:
        return self.run.totals.records

    @property
    def duplicates(self) -> int:
        return self.run.totals.duplicates

    @property
    def filtered_out(self) -> int:
        return self.run.totals.filtered_out

CLIENT = "misconfigured client"
LIKELY = "likely misconfigured client"
HINT = " — likely a mail client set to port 25 instead of 587"


def score(
    distinct: int, rate: float, counts: Sequence[int], interval: float | None = 60.0
) -> Score:
    return score_source(
        distinct=distinct,
        peak_rate=rate,
        peak_window_attempts=max(counts),
        window_counts=counts,
        retry_interval_s=interval,
    )


def test_the_documented_limits() -> None:
    """The table below is written against these values (module docstring, README)."""
    assert (CLIENT_MAX_DESTINATIONS, CLIENT_MAX_RATE) == (2, 1.0)
    assert (STEADY_MIN_WINDOWS, STEADY_MAX_CV) == (3, 0.5)


@pytest.mark.parametrize(
    ("distinct", "rate", "counts", "verdict", "reason"),
    [
        pytest.param(
            2, 0.02, [5, 5, 5], CLIENT,
            "misconfigured client: 2 destinations, steady retries every ~60 s over 3 windows",
            id="two-destinations-is-a-client",
        ),
        pytest.param(
            3, 0.02, [5, 5, 5], "unclear",
            "unclear: 3 destinations, peak 0.0 attempts/s, up to 5 attempts in one window"
            " over 3 windows",
            id="three-destinations-is-not-a-client",
        ),
        pytest.param(
            1, 0.99, [5, 5, 5], CLIENT,
            "misconfigured client: 1 destination, steady retries every ~60 s over 3 windows",
            id="rate-0.99-is-a-client",
        ),
        pytest.param(
            1, 1.0, [5, 5, 5], "unclear",
            "unclear: 1 destination, bursts of 1.0 attempts/s, up to 5 attempts in one window"
            " over 3 windows",
            id="rate-1.0-is-not-a-client",
        ),
        pytest.param(
            1, 0.02, [5, 5], LIKELY,
            "likely misconfigured client: 1 destination, retries every ~60 s in 2 windows"
            " (too few windows to be sure)",
            id="two-windows-too-few",
        ),
        pytest.param(
            1, 0.02, [1, 1, 3, 3], CLIENT,
            "misconfigured client: 1 destination, steady retries every ~60 s over 4 windows",
            id="variation-half-the-mean-is-steady",
        ),
        pytest.param(
            1, 0.02, [1, 10, 1], LIKELY,
            "likely misconfigured client: 1 destination, retries every ~60 s in 3 windows"
            " (irregular to be sure)",
            id="irregular-windows",
        ),
        pytest.param(
            1, 0.02, [1, 1, 4, 4], LIKELY,
            "likely misconfigured client: 1 destination, retries every ~60 s in 4 windows"
            " (irregular to be sure)",
            id="variation-over-half-the-mean-is-irregular",
        ),
    ],
)  # fmt: skip
def test_client_rule_boundaries(
    distinct: int, rate: float, counts: list[int], verdict: str, reason: str
) -> None:
    s = score(distinct, rate, counts)
    assert s.verdict == verdict
    assert s.reason == reason + (HINT if "client" in verdict else "")


def test_client_rule_without_interval_says_low_rate() -> None:
    s = score(1, 0.0, [1, 1, 1], interval=None)
    assert s.reason == (
        "misconfigured client: 1 destination, steady retries at a low rate over 3 windows" + HINT
    )


def record(window: int, packets: int, first_s: int, last_s: int) -> Record:
    """One record of source 100.64.0.10 in 300 s window number ``window``."""
    start = 1_800_000_000_000 + window * 300_000
    return Record(
        router="edge1",
        source="100.64.0.10",
        family=4,
        plan="residential",
        action="drop",
        rule=None,
        window_start=start,
        window_end=start + 300_000,
        first_seen=start + first_s * 1000,
        last_seen=start + last_s * 1000,
        packets=packets,
        distinct_destinations=1,
        destinations_sample=("192.0.2.25",),
    )


def test_retry_interval_falls_back_to_gaps_between_single_attempt_windows() -> None:
    """One attempt per window (a client retrying every 10 min): no window has two
    attempts, so the interval is the median gap between the windows' first attempts."""
    agg = Aggregator()
    for w in (0, 2, 4, 6):
        agg.add(record(w, 1, 30, 30))
    (src,) = agg.sources()
    assert src.retry_interval_s == 600.0
    assert src.peak_rate is None
    assert src.score.verdict == CLIENT
    assert src.score.reason == (
        "misconfigured client: 1 destination, steady retries every ~10 min over 4 windows" + HINT
    )


def test_retry_interval_of_one_single_attempt_window_is_unknown() -> None:
    agg = Aggregator()
    agg.add(record(0, 1, 30, 30))
    (src,) = agg.sources()
    assert src.retry_interval_s is None
    assert src.score.reason == (
        "likely misconfigured client: 1 destination, retries at a low rate in 1 window"
        " (too few windows to be sure)" + HINT
    )


def test_retry_interval_prefers_attempts_within_windows() -> None:
    """Windows with two or more attempts give the interval; start gaps are not used."""
    agg = Aggregator()
    agg.add(record(0, 3, 0, 120))  # every 60 s
    agg.add(record(5, 1, 0, 0))
    (src,) = agg.sources()
    assert src.retry_interval_s == 60.0


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(89.4, "~89 s"), (90, "~2 min"), (3000, "~50 min"), (5399, "~90 min"), (5400, "~1.5 h"),
     (8460, "~2.4 h")],
)  # fmt: skip
def test_retry_interval_words_at_their_unit_boundaries(seconds: float, words: str) -> None:
    assert (
        f"steady retries every {words} over 3 windows" in score(1, 0.01, [5, 5, 5], seconds).reason
    )


@pytest.mark.parametrize(
    ("rate", "words"), [(9.96, "bursts of 10.0 attempts/s"), (10.0, "bursts of 10 attempts/s")]
)
def test_rate_words_switch_to_whole_numbers_at_ten(rate: float, words: str) -> None:
    assert words in score(1, rate, [5]).reason


def test_verdict_thresholds_are_inclusive() -> None:
    bot = score_source(
        distinct=64, peak_rate=0.74, peak_window_attempts=10, window_counts=[10],
        retry_interval_s=None,
    )  # fmt: skip
    assert (bot.value, bot.verdict) == (60, "bot-like")
    sus = score_source(
        distinct=8, peak_rate=0.39, peak_window_attempts=10, window_counts=[10],
        retry_interval_s=None,
    )  # fmt: skip
    assert (sus.value, sus.verdict) == (30, "suspicious")
    assert sus.reason == (
        "suspicious: 8 destinations, peak 0.4 attempts/s, up to 10 attempts in one window — review"
    )
    assert (round(sus.destinations_part, 2), round(sus.burst_part, 2), sus.volume_part) == (
        25.0,
        5.12,
        0.0,
    )


def test_score_parts_start_above_one_destination_and_cap_at_100() -> None:
    two = score(2, 0.0, [1])
    assert round(two.destinations_part, 2) == 8.33
    top = score_source(
        distinct=10**6, peak_rate=1e6, peak_window_attempts=10**7, window_counts=[10**7],
        retry_interval_s=None,
    )  # fmt: skip
    assert (top.value, top.destinations_part, top.burst_part, top.volume_part) == (
        100, 50.0, 30.0, 20.0,
    )  # fmt: skip


def test_client_rule_with_no_or_empty_windows() -> None:
    assert score_source(
        distinct=1, peak_rate=None, peak_window_attempts=0, window_counts=[],
        retry_interval_s=None,
    ).verdict == LIKELY  # fmt: skip
    assert score(1, 0.0, [0, 0, 0]).verdict == CLIENT


def rec_of(source: str, window: int, packets: int, **changes: Any) -> Record:
    """A record of ``source`` with ``packets`` attempts one second apart."""
    base = record(window, packets, 0, max(packets - 1, 0))
    return dataclasses.replace(base, source=source, **changes)


def test_aggregator_counts_records_duplicates_and_filtered() -> None:
    start = record(0, 1, 0, 0).window_start
    agg = Aggregator(since=start + 6_000, until=start + 300_000 * 3)
    agg.add(record(0, 2, 5, 6))  # last seen exactly at --since: kept
    agg.add(record(0, 2, 5, 6))  # the same again: a duplicate
    agg.add(record(1, 2, 0, 1))
    agg.add(record(0, 2, 0, 4))  # seen only before --since... a duplicate of window 0 too
    agg.add(record(3, 2, 0, 1))  # first seen exactly at --until: filtered out
    agg.add(record(4, 2, 0, 1))
    assert (agg.records, agg.duplicates, agg.filtered_out) == (2, 1, 3)


def test_report_fields_of_a_multi_plan_source() -> None:
    agg = Aggregator()
    agg.add(rec_of("100.64.0.9", 0, 3, plan="residential", action="drop",
                   destinations_sample=("192.0.2.9", "192.0.2.10")))  # fmt: skip
    agg.add(rec_of("100.64.0.9", 1, 1, plan="mobile", action="monitor", distinct_destinations=0,
                   destinations_sample=("192.0.2.1",)))  # fmt: skip
    agg.add(rec_of("100.64.0.8", 0, 1))
    agg.add(rec_of("100.64.0.7", 0, 2))
    srcs = agg.sources()
    assert [s.source for s in srcs] == ["100.64.0.9", "100.64.0.7", "100.64.0.8"]  # by attempts
    d = srcs[0].as_dict()
    assert (d["plan"], d["action"], d["retry_interval_s"]) == (
        "mobile,residential",
        "drop,monitor",
        1.0,
    )
    # first-seen order, not text order: window 0's sample came first
    assert d["destinations_sample"] == ["192.0.2.9", "192.0.2.10", "192.0.2.1"]
    first = agg.run.windows(["100.64.0.9"])["100.64.0.9"][0]  # the chart's per-window data
    assert (first.start, first.end) == (
        record(0, 1, 0, 0).window_start,
        record(0, 1, 0, 0).window_end,
    )


def test_report_of_single_attempt_windows_has_no_rate() -> None:
    agg = Aggregator()
    agg.add(rec_of("100.64.0.9", 0, 1, distinct_destinations=0, destinations_sample=()))
    agg.add(rec_of("100.64.0.9", 3, 1, distinct_destinations=0, destinations_sample=()))
    (src,) = agg.sources()
    d = src.as_dict()
    assert (d["peak_rate"], d["retry_interval_s"], d["distinct_destinations"]) == (None, 900.0, 0)
    agg2 = Aggregator()
    agg2.add(rec_of("100.64.0.9", 0, 1))
    assert agg2.sources()[0].as_dict()["retry_interval_s"] is None


def test_retry_interval_is_rounded_to_milliseconds() -> None:
    agg = Aggregator()
    r = record(0, 4, 0, 1)  # 3 gaps in 1 s
    agg.add(r)
    assert agg.sources()[0].as_dict()["retry_interval_s"] == 0.333


def test_equal_scores_rank_by_attempts_then_source() -> None:
    agg = Aggregator()
    for source, packets in (("100.64.0.1", 2), ("100.64.0.2", 3), ("100.64.0.3", 2)):
        agg.add(dataclasses.replace(record(0, packets, 0, 200), source=source))
    srcs = agg.sources()
    assert [s.score.value for s in srcs] == [0, 0, 0]
    assert [s.source for s in srcs] == ["100.64.0.2", "100.64.0.1", "100.64.0.3"]
