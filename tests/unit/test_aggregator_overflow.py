"""The aggregator under a spray: bounded memory, nothing hidden, everything counted.

One IPv6 subscriber hopping through its /48, or many sources at once, must neither
grow the aggregator without bound nor cost another subscriber its record; what the
caps keep out of per-source records is summed up in overflow records, exactly.
"""

from __future__ import annotations

import calendar
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from op25b.dataplane.aggregator import AbuseAggregator, AbuseRecord
from op25b.policy.addr import parse_address
from op25b.policy.decide import Verdict
from op25b.policy.model import Location

T0 = float(calendar.timegm((2026, 11, 23, 18, 0, 0)))
RULE = Location("p.yaml", 6, 9)
MX = parse_address("192.0.2.25")[1]
MX6 = parse_address("2001:db8:c0::25")[1]
V4_BOT = parse_address("100.64.0.66")[1]
SPRAY_48 = parse_address("2001:db8:100::")[1]


def v6_in_48(n: int) -> int:
    """The n-th /64 of 2001:db8:100::/48 (wrapping after 65536), host part ::1."""
    return SPRAY_48 | ((n & 0xFFFF) << 64) | 1


def by_source(records: list[AbuseRecord]) -> dict[str, AbuseRecord]:
    return {r.source: r for r in records}


def test_a_48_spraying_70k_sources_does_not_hide_a_v4_bot() -> None:
    a = AbuseAggregator(window=300, router="edge1")  # the daemon's defaults
    tracemalloc.start()
    try:
        for n in range(70_000):
            a.observe(6, v6_in_48(n), MX6, 25, "residential", Verdict.DROP, RULE, T0 + 1)
        # The bot comes last, when the old aggregator had already filled up.
        assert a.observe(4, V4_BOT, MX, 25, "residential", Verdict.DROP, RULE, T0 + 2) is True
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    st_ = a.stats
    assert (st_.tracked_sources, st_.overflow_open) == (257, 1)
    # 65536 records of their own took ~50 MB here; bounded state stays a few MB.
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"

    records = a.due(T0 + 300)
    recs = by_source(records)
    bot = recs["100.64.0.66"]
    assert (bot.packets, bot.overflow) == (1, False)
    over = recs["2001:db8:100::/48"]
    assert over.overflow and over.family == 6 and over.plan == "residential"
    assert over.packets == 70_000 - 2 * 256  # past 65536 the spray meets its first /64s again
    assert (over.overflow_sources, over.overflow_sources_capped) == (1024, True)
    assert over.destinations_sample == ("2001:db8:c0::25",)
    own = [r for r in records if r.family == 6 and not r.overflow]
    assert len(own) == 256 and all(r.source.endswith("::/64") for r in own)
    assert sum(r.packets for r in records if r.family == 6) == 70_000  # none lost
    assert (a.stats.overflow_packets, a.stats.overflow_records) == (over.packets, 1)
    assert a.stats.overflow_sources == 1024  # counted as far as remembered


def test_group_follows_v6_aggregate() -> None:
    a = AbuseAggregator(window=300, v6_aggregate=56, group_cap=2)  # groups are /40s
    base = parse_address("2001:db8:100::")[1]
    for n in range(5):
        a.observe(6, base | (n << 72), MX6, 25, "mobile", Verdict.DROP, RULE, T0)
    recs = by_source(a.due(T0 + 300))
    assert set(recs) == {"2001:db8:100::/56", "2001:db8:100:100::/56", "2001:db8:100::/40"}
    assert recs["2001:db8:100::/40"].overflow_sources == 3


def test_many_v6_groups_leave_room_for_v4() -> None:
    # 16 records at most; v6 may take 12, so the 4 v4 bots that come last still fit.
    a = AbuseAggregator(window=300, max_sources=16, group_cap=2)
    sent6 = 0
    for g in range(100):
        for n in range(3):
            a.observe(6, v6_in_48(n) + (g << 80), MX6, 25, "r", Verdict.DROP, RULE, T0)
            sent6 += 1
    bots = [V4_BOT + i for i in range(5)]
    news = [a.observe(4, b, MX, 25, "r", Verdict.DROP, RULE, T0) for b in bots]
    assert news == [True, True, True, True, False]  # the fifth: table full
    records = a.due(T0 + 300)
    recs = by_source(records)
    assert {f"100.64.0.{66 + i}" for i in range(4)} <= set(recs)
    assert recs["0.0.0.0/0"].overflow_sources == 1
    assert sum(r.packets for r in records if r.family == 6) == sent6
    assert sum(not r.overflow for r in records) == 16
    # group overflows (6 groups reached their cap) plus the family's ::/0 record
    assert len(records) <= 16 + 16 // 2 + 2


def test_kernel_counts_of_a_summarised_source_land_in_its_overflow_record() -> None:
    a = AbuseAggregator(window=300, group_cap=1)
    a.observe(6, v6_in_48(0), MX6, 25, "r", Verdict.DROP, RULE, T0)
    a.observe(6, v6_in_48(1), MX6, 25, "r", Verdict.DROP, RULE, T0)
    assert a.add_kernel_count(6, v6_in_48(1), 500, "r", Verdict.DROP, RULE, T0 + 5) is False
    over = by_source(a.due(T0 + 300))["2001:db8:100::/48"]
    assert (over.packets, over.kernel_packets, over.overflow_sources) == (501, 500, 1)


def test_overflow_records_keep_plans_and_actions_apart() -> None:
    a = AbuseAggregator(window=300, group_cap=1)
    other_rule = Location("p.yaml", 7, 9)
    a.observe(6, v6_in_48(0), MX6, 25, "a", Verdict.DROP, RULE, T0)
    a.observe(6, v6_in_48(1), MX6, 25, "a", Verdict.DROP, RULE, T0 + 1)
    a.observe(6, v6_in_48(2), MX6, 25, "a", Verdict.DROP, other_rule, T0 + 2)
    a.observe(6, v6_in_48(3), MX6, 25, "b", Verdict.DROP, RULE, T0 + 3)
    # A reload turned the action to monitor: the overflow record closes early.
    a.observe(6, v6_in_48(4), MX6, 25, "a", Verdict.MONITOR, RULE, T0 + 4)
    early = a.due(T0 + 10)
    assert [(r.source, r.plan, r.action, r.rule, r.packets) for r in early] == [
        ("2001:db8:100::/48", "a", "drop", None, 2)  # two rules: none named
    ]
    late = {(r.plan, r.action, r.rule, r.overflow, r.packets) for r in a.due(T0 + 300)}
    assert late == {
        ("a", "drop", "p.yaml:6:9", False, 1),
        ("b", "drop", "p.yaml:6:9", True, 1),
        ("a", "monitor", "p.yaml:6:9", True, 1),
    }


OBS = st.tuples(
    st.sampled_from([4, 6]),
    st.integers(0, 40),  # source index: few enough that caps are hit and revisited
    st.integers(0, 3),  # destination index
    st.sampled_from(["a", "b"]),
    st.integers(0, 900),  # seconds after T0: three windows
)


@settings(max_examples=150, deadline=None)
@given(st.lists(OBS, max_size=300))
def test_every_packet_is_in_exactly_one_record_and_records_are_bounded(
    obs: list[tuple[int, int, int, str, int]],
) -> None:
    a = AbuseAggregator(window=300, max_sources=8, group_cap=2, overflow_cap=3, distinct_cap=2)
    records: list[AbuseRecord] = []
    for version, s, d, plan, t in sorted(obs, key=lambda o: o[4]):
        src = V4_BOT + s if version == 4 else v6_in_48(s % 5) + ((s // 5) << 80)
        dst = MX + d if version == 4 else MX6 + d
        a.observe(version, src, dst, 25, plan, Verdict.DROP, RULE, T0 + t)
        st_ = a.stats
        assert st_.tracked_sources <= 8
        assert st_.overflow_open <= 2 * (8 // 2 + 2)  # two plans
        records.extend(a.due(T0 + t))
    records.extend(a.flush_all(T0 + 1000))
    assert sum(r.packets for r in records) == len(obs)
    for r in records:
        assert r.overflow_sources <= 3 and r.distinct_destinations <= 2
        assert (r.overflow_sources > 0) == r.overflow
