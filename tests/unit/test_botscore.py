"""The bot score's "misconfigured client" rule at its edges, and the retry interval.

A boundary table: each row sits on one side of one documented limit (at most 2
destinations, below 1 attempt/s, at least 3 windows, attempts per window varying by at
most half their mean), so moving any limit by one step, or dropping a condition, flips
a row. The aggregation rows feed records through ``Aggregator`` the way ``op25b
report`` does, to pin the retry interval's fallback for single-attempt windows.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from op25b.report.abuseread import Record
from op25b.report.botscore import (
    CLIENT_MAX_DESTINATIONS,
    CLIENT_MAX_RATE,
    STEADY_MAX_CV,
    STEADY_MIN_WINDOWS,
    Aggregator,
    Score,
    score_source,
)

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
