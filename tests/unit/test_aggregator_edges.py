"""AbuseAggregator at its edges: defaults, argument checks, window boundaries, the
counters its stats report, and the JSON text. Each test here was written for a
mutant that survived the rest of the suite (tests/README.md, mutation testing)."""

from __future__ import annotations

import json

import pytest

from op25b.dataplane.aggregator import AbuseAggregator, AggregatorStats
from op25b.policy.addr import parse_address
from op25b.policy.decide import Verdict
from op25b.policy.model import Location

T0 = 1_795_456_800.0  # 2026-11-23T18:00:00Z, a 300 s window boundary
RULE = Location("policies/example.yaml", 4, 9)
BOT, BOT2, BOT3 = (parse_address(f"100.64.0.{n}")[1] for n in (66, 67, 68))
MX = parse_address("192.0.2.25")[1]


def hit(a: AbuseAggregator, src: int, now: float, dst: int = MX, port: int = 25) -> bool:
    return a.observe(4, src, dst, port, "residential", Verdict.DROP, RULE, now)


def kernel(a: AbuseAggregator, src: int, packets: int, now: float) -> bool:
    return a.add_kernel_count(4, src, packets, "residential", Verdict.DROP, RULE, now)


def test_defaults_are_the_documented_ones() -> None:
    a = AbuseAggregator()
    assert (a.window, a.v6_aggregate, a.router) == (300.0, 64, "")
    assert (a.max_sources, a.distinct_cap, a.max_destinations, a.max_ports) == (
        65536,
        4096,
        1_000_000,
        64,
    )
    assert a.stats == AggregatorStats(0, 0, 0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "abuse window must be a positive number of seconds: 0"),
        ({"window": float("inf")}, "abuse window must be a positive number of seconds: inf"),
        ({"v6_aggregate": 129}, "v6_aggregate must be 0..128: 129"),
        ({"v6_aggregate": -1}, "v6_aggregate must be 0..128: -1"),
    ],
)
def test_bad_arguments_are_refused_with_their_reason(
    kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        AbuseAggregator(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_smallest_allowed_window_and_aggregate() -> None:
    a = AbuseAggregator(window=0.5, v6_aggregate=0)
    one, two = parse_address("2001:db8::1")[1], parse_address("2001:db8:ffff::2")[1]
    assert a.observe(6, one, MX, 25, None, Verdict.DROP, None, T0)
    assert not a.observe(6, two, MX, 25, None, Verdict.DROP, None, T0 + 0.25)
    (rec,) = a.due(T0 + 0.5)
    assert (rec.source, rec.packets, rec.window_end - rec.window_start) == ("::/0", 2, 0.5)


def test_an_attempt_at_the_window_end_opens_the_next_window() -> None:
    a = AbuseAggregator()
    hit(a, BOT, T0 + 10)
    assert not hit(a, BOT, T0 + 300)  # the next window, and not new: seen just before
    recs = a.flush_all(T0 + 301)
    assert [(r.window_start - T0, r.packets) for r in recs] == [(0.0, 1), (300.0, 1)]


def test_ports_are_capped() -> None:
    a = AbuseAggregator(max_ports=2)
    for port in (25, 2525, 26, 25):
        hit(a, BOT, T0 + 1, port=port)
    (rec,) = a.flush_all(T0 + 2)
    assert (rec.packets, rec.ports) == (4, ((25, 2), (2525, 1)))


def test_kernel_counts_add_up_from_a_single_packet() -> None:
    a = AbuseAggregator()
    assert kernel(a, BOT, 1, T0 + 1)  # one packet is a count, and the source is new
    assert not kernel(a, BOT, 4, T0 + 2)
    (rec,) = a.flush_all(T0 + 3)
    assert (rec.packets, rec.kernel_packets) == (5, 5)


def test_stats_count_capped_records() -> None:
    b = AbuseAggregator(distinct_cap=1)
    for src in (BOT, BOT2):
        hit(b, src, T0 + 1)
        hit(b, src, T0 + 1, dst=MX + 1)
    b.flush_all(T0 + 2)
    assert b.stats.capped_records == 2


def test_destinations_held_follow_early_closes_and_flushes() -> None:
    a = AbuseAggregator()
    hit(a, BOT, T0 + 1)
    hit(a, BOT2, T0 + 1)
    hit(a, BOT2, T0 + 1, dst=MX + 1)
    assert a.stats.tracked_destinations == 3
    # a reload changes BOT's outcome: its record closes early and frees its destination
    a.observe(4, BOT, MX, 25, "residential", Verdict.MONITOR, RULE, T0 + 2)
    assert a.stats.tracked_destinations == 3  # BOT's old MX freed, its new record holds one
    a.flush_all(T0 + 3)
    assert a.stats.tracked_destinations == 0
    assert not hit(a, BOT, T0 + 4)  # flushed, but not forgotten: no second NOTICE
    assert a.stats.tracked_destinations == 1


def test_flush_after_the_window_end_closes_it_at_its_end() -> None:
    a = AbuseAggregator()
    hit(a, BOT, T0 + 10)
    (rec,) = a.flush_all(T0 + 400)
    assert (rec.window_start, rec.window_end) == (T0, T0 + 300)


def test_flush_at_the_window_end_remembers_its_sources() -> None:
    a = AbuseAggregator()
    hit(a, BOT, T0 + 10)
    (rec,) = a.flush_all(T0 + 300)
    assert rec.window_end == T0 + 300
    assert not hit(a, BOT, T0 + 300)


def test_json_text_is_ascii() -> None:
    a = AbuseAggregator(router="edge-ü")
    hit(a, BOT, T0 + 1)
    (rec,) = a.flush_all(T0 + 2)
    text = rec.to_json()
    assert '"router": "edge-\\u00fc"' in text
    assert text.isascii() and json.loads(text) == rec.as_dict()
