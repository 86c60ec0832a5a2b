"""AbuseAggregator's compact record for sources seen once (a ``_Once``): the records,
caps and stats come out exactly as for a full record, whichever way the source leaves
the compact form (a second attempt, kernel counts, a reload's new outcome, the window's
end), and the compact form is invisible to the cyclic garbage collector."""

from __future__ import annotations

import gc

from op25b.dataplane.abuserecord import AbuseRecord
from op25b.dataplane.aggregator import AbuseAggregator
from op25b.policy.addr import parse_address
from op25b.policy.decide import Verdict
from op25b.policy.model import Location

T0 = 1_795_456_800.0  # a 300 s window boundary
RULE = Location("policies/example.yaml", 4, 9)
RULE2 = Location("policies/example.yaml", 5, 9)
BOT, BOT2 = (parse_address(f"100.64.0.{n}")[1] for n in (66, 67))
MX, MX2 = (parse_address(f"192.0.2.{n}")[1] for n in (25, 26))
V6 = parse_address("2001:db8:100:1::5")[1]
MX6 = parse_address("2001:db8:ff::25")[1]


def hit(
    a: AbuseAggregator,
    src: int,
    now: float,
    dst: int = MX,
    port: int = 25,
    action: Verdict = Verdict.DROP,
    rule: Location = RULE,
    version: int = 4,
) -> bool:
    return a.observe(version, src, dst, port, "residential", action, rule, now)


def record(source: str, **changes: object) -> AbuseRecord:
    base: dict[str, object] = {
        "router": "r1",
        "source": source,
        "family": 4,
        "plan": "residential",
        "action": "drop",
        "rule": str(RULE),
        "window_start": T0,
        "window_end": T0 + 300,
        "first_seen": T0 + 1,
        "last_seen": T0 + 1,
        "packets": 1,
        "distinct_destinations": 1,
        "destinations_sample": ("192.0.2.25",),
        "ports": ((25, 1),),
    }
    base.update(changes)
    return AbuseRecord(**base)  # type: ignore[arg-type]


def test_a_source_seen_once_makes_the_full_record() -> None:
    a = AbuseAggregator(router="r1")
    assert hit(a, BOT, T0 + 1) is True
    assert hit(a, V6, T0 + 1, dst=MX6, port=2525, version=6) is True
    assert a.stats.tracked_sources == 2 and a.stats.tracked_destinations == 2
    got = a.due(T0 + 300)
    assert got == [
        record("100.64.0.66"),
        record(
            "2001:db8:100:1::/64",
            family=6,
            destinations_sample=("2001:db8:ff::25",),
            ports=((2525, 1),),
        ),
    ]
    assert a.stats.tracked_sources == 0 and a.stats.tracked_destinations == 0


def test_second_attempt_continues_the_record() -> None:
    a = AbuseAggregator(router="r1")
    assert hit(a, BOT, T0 + 1) is True
    assert hit(a, BOT, T0 + 2, dst=MX2) is False
    assert hit(a, BOT, T0 + 3) is False
    assert a.stats.tracked_destinations == 2
    (got,) = a.flush_all(T0 + 10)
    assert got == record(
        "100.64.0.66",
        window_end=T0 + 10,
        last_seen=T0 + 3,
        packets=3,
        distinct_destinations=2,
        destinations_sample=("192.0.2.25", "192.0.2.26"),
        ports=((25, 3),),
    )


def test_kernel_counts_after_one_attempt() -> None:
    a = AbuseAggregator(router="r1")
    hit(a, BOT, T0 + 1)
    assert a.add_kernel_count(4, BOT, 40, "residential", Verdict.DROP, RULE, T0 + 5) is False
    (got,) = a.due(T0 + 300)
    assert got == record("100.64.0.66", last_seen=T0 + 5, packets=41, kernel_packets=40)


def test_a_reload_closes_a_once_record_early() -> None:
    a = AbuseAggregator(router="r1")
    hit(a, BOT, T0 + 1)
    assert hit(a, BOT, T0 + 2, action=Verdict.MONITOR, rule=RULE2) is False
    assert a.stats.tracked_sources == 1 and a.stats.tracked_destinations == 1
    early, late = a.due(T0 + 300)
    assert early == record("100.64.0.66", window_end=T0 + 2)
    assert late == record(
        "100.64.0.66", action="monitor", rule=str(RULE2), first_seen=T0 + 2, last_seen=T0 + 2
    )


def test_once_record_past_the_destination_caps() -> None:
    a = AbuseAggregator(router="r1", max_destinations=1)
    hit(a, BOT2, T0 + 1, dst=MX2)  # takes the only destination slot
    hit(a, BOT, T0 + 1)
    assert a.stats.tracked_destinations == 1
    _, got = a.due(T0 + 300)
    assert got == record(
        "100.64.0.66",
        distinct_destinations=0,
        destinations_sample=(),
        distinct_destinations_capped=True,
    )
    assert a.stats.capped_records == 1
    b = AbuseAggregator(router="r1", distinct_cap=0)
    hit(b, BOT, T0 + 1)
    assert b.stats.tracked_destinations == 0
    assert b.due(T0 + 300) == [got]


def test_once_record_past_the_port_cap() -> None:
    a = AbuseAggregator(router="r1", max_ports=0)
    hit(a, BOT, T0 + 1)
    assert a.due(T0 + 300) == [record("100.64.0.66", ports=())]


def test_once_records_are_not_tracked_by_the_garbage_collector() -> None:
    a = AbuseAggregator()
    for n in range(1000):
        hit(a, BOT + n, T0 + 1)
    gc.collect()
    assert a.stats.tracked_sources == 1000
    assert not any(gc.is_tracked(v) for v in a._current.values())
    hit(a, BOT, T0 + 2)  # a second attempt: a full record, tracked like any object
    assert gc.is_tracked(a._current[BOT])
