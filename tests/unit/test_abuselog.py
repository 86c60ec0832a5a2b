"""Abuse log: window aggregation, new-source semantics, caps, JSON shape, the writer."""

from __future__ import annotations

import calendar
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from op25b.daemon.abuselog import AbuseLogWriter
from op25b.dataplane.aggregator import AbuseAggregator, AbuseRecord
from op25b.policy.addr import parse_address
from op25b.policy.decide import Verdict
from op25b.policy.model import Location

T0 = float(calendar.timegm((2026, 11, 23, 18, 0, 0)))  # a window boundary for 300 s
RULE = Location("policies/example.yaml", 4, 9)
BOT = parse_address("100.64.0.66")[1]
BOT2 = parse_address("100.64.0.67")[1]


def ip(text: str) -> int:
    return parse_address(text)[1]


def agg(**kw: object) -> AbuseAggregator:
    return AbuseAggregator(window=300, router="edge1", **kw)  # type: ignore[arg-type]


def hit(
    a: AbuseAggregator,
    src: int,
    dst: str,
    now: float,
    *,
    version: int = 4,
    action: Verdict = Verdict.DROP,
    rule: Location | None = RULE,
    port: int = 25,
) -> bool:
    return a.observe(version, src, ip(dst), port, "residential", action, rule, now)


def test_record_exact_json() -> None:
    a = agg()
    assert hit(a, BOT, "192.0.2.25", T0 + 3.412) is True
    for i in range(119):
        hit(a, BOT, f"192.0.2.{25 + i % 40}", T0 + 4 + i * 0.05)
    assert hit(a, BOT, "192.0.2.26", T0 + 9.901) is False
    assert a.due(T0 + 299.999) == []
    [rec] = a.due(T0 + 300)
    line = rec.to_json()
    assert "\n" not in line
    assert json.loads(line) == {
        "type": "blocked_source",
        "version": 1,
        "router": "edge1",
        "source": "100.64.0.66",
        "family": 4,
        "plan": "residential",
        "action": "drop",
        "rule": "policies/example.yaml:4:9",
        "window_start": "2026-11-23T18:00:00.000Z",
        "window_end": "2026-11-23T18:05:00.000Z",
        "first_seen": "2026-11-23T18:00:03.412Z",
        "last_seen": "2026-11-23T18:00:09.901Z",
        "packets": 121,
        "distinct_destinations": 40,
        "destinations_sample": [f"192.0.2.{25 + i}" for i in range(16)],
        "ports": {"25": 121},
        "distinct_destinations_capped": False,
        "kernel_packets": 0,
        "overflow": False,
        "overflow_sources": 0,
        "overflow_sources_capped": False,
    }
    # Key order is the documented one (readers diffing lines rely on stability).
    assert list(json.loads(line))[:4] == ["type", "version", "router", "source"]


def test_windows_close_in_order_and_per_window() -> None:
    a = agg()
    hit(a, BOT, "192.0.2.25", T0 + 10)
    hit(a, BOT2, "192.0.2.25", T0 + 20)
    hit(a, BOT, "192.0.2.25", T0 + 310)  # next window: rolls the first one over
    first = a.due(T0 + 320)
    assert [r.source for r in first] == ["100.64.0.66", "100.64.0.67"]
    assert all(r.window_end - r.window_start == 300 for r in first)
    second = a.due(T0 + 600)
    assert [(r.source, r.window_start - T0, r.packets) for r in second] == [
        ("100.64.0.66", 300.0, 1)
    ]
    assert a.due(T0 + 10_000) == []


def test_new_source_semantics() -> None:
    """New = not seen in the current window nor in the window right before it."""
    a = agg()
    assert hit(a, BOT, "192.0.2.25", T0 + 1) is True
    assert hit(a, BOT, "192.0.2.25", T0 + 2) is False  # same window
    assert hit(a, BOT, "192.0.2.25", T0 + 301) is False  # next window: seen in previous
    assert hit(a, BOT, "192.0.2.25", T0 + 601) is False  # still active
    # Quiet through the whole 900-1200 window, back at 1201: new again.
    assert hit(a, BOT, "192.0.2.25", T0 + 1201) is True
    # due() rolling the windows gives the same answer as observe() rolling them.
    b = agg()
    assert hit(b, BOT2, "192.0.2.25", T0 + 1) is True
    b.due(T0 + 300)
    b.due(T0 + 600)  # the 300-600 window was empty: BOT2 is forgotten
    assert hit(b, BOT2, "192.0.2.25", T0 + 601) is True
    c = agg()
    hit(c, BOT2, "192.0.2.25", T0 + 299)
    c.due(T0 + 300)
    assert hit(c, BOT2, "192.0.2.25", T0 + 599) is False


def test_v6_aggregated_per_64() -> None:
    a = agg(v6_aggregate=64)
    v, s1 = parse_address("2001:db8:100:1::10")
    _, s2 = parse_address("2001:db8:100:1:ffff::99")
    _, s3 = parse_address("2001:db8:100:2::10")
    assert a.observe(v, s1, ip("2001:db8:25::1"), 25, "residential", Verdict.DROP, RULE, T0)
    assert not a.observe(v, s2, ip("2001:db8:25::2"), 25, "residential", Verdict.DROP, RULE, T0)
    assert a.observe(v, s3, ip("2001:db8:25::1"), 25, "residential", Verdict.DROP, RULE, T0)
    # An IPv4 address equal to the low bits of a v6 key must not merge with it.
    assert a.observe(4, 0, ip("192.0.2.1"), 25, "residential", Verdict.DROP, RULE, T0)
    recs = {r.source: r for r in a.flush_all(T0 + 1)}
    assert set(recs) == {"2001:db8:100:1::/64", "2001:db8:100:2::/64", "0.0.0.0"}
    r = recs["2001:db8:100:1::/64"]
    assert (r.family, r.packets, r.distinct_destinations) == (6, 2, 2)
    assert r.destinations_sample == ("2001:db8:25::1", "2001:db8:25::2")


@pytest.mark.parametrize(
    ("v6_aggregate", "src4", "src6", "record6"),
    [
        (64, "0.0.0.0", "::1", "::/64"),  # ::1 masked to its /64 is 0, like 0.0.0.0
        (128, "100.64.0.66", "::100.64.0.66", "::100.64.0.66/128"),
    ],
    ids=["0.0.0.0-vs-::1", "a.b.c.d-vs-::a.b.c.d"],
)
def test_v4_and_v6_sources_with_equal_bits_stay_apart(
    v6_aggregate: int, src4: str, src6: str, record6: str
) -> None:
    a = agg(v6_aggregate=v6_aggregate)
    assert hit(a, ip(src4), "192.0.2.25", T0)  # new
    assert hit(a, ip(src6), "2001:db8:25::1", T0 + 1, version=6)  # new too, not a repeat
    assert not hit(a, ip(src4), "192.0.2.26", T0 + 2)
    recs = {r.source: r for r in a.flush_all(T0 + 3)}
    assert set(recs) == {src4, record6}
    assert (recs[src4].family, recs[src4].packets, recs[src4].distinct_destinations) == (4, 2, 2)
    assert (recs[record6].family, recs[record6].packets) == (6, 1)
    assert recs[record6].destinations_sample == ("2001:db8:25::1",)


def test_v6_aggregate_configurable() -> None:
    a = agg(v6_aggregate=48)
    v, s1 = parse_address("2001:db8:100:1::10")
    _, s2 = parse_address("2001:db8:100:2::10")
    a.observe(v, s1, 1, 25, None, Verdict.MONITOR, None, T0)
    a.observe(v, s2, 1, 25, None, Verdict.MONITOR, None, T0)
    [r] = a.flush_all(T0 + 1)
    assert r.source == "2001:db8:100::/48" and r.packets == 2
    assert r.as_dict()["action"] == "monitor" and r.plan is None and r.rule is None


def test_destination_caps() -> None:
    a = agg(distinct_cap=100)
    for i in range(250):
        hit(a, BOT, f"192.0.2.{i}", T0 + 1)
    hit(a, BOT, "192.0.2.5", T0 + 2)  # known destination: still counted, not capped extra
    [r] = a.due(T0 + 300)
    assert r.packets == 251
    assert r.distinct_destinations == 100
    assert r.distinct_destinations_capped is True
    assert len(r.destinations_sample) == 16
    assert a.stats.capped_records == 1


def test_global_destination_budget() -> None:
    a = agg(distinct_cap=100, max_destinations=150)
    for i in range(100):
        hit(a, BOT, f"192.0.2.{i}", T0 + 1)
    for i in range(100):
        hit(a, BOT2, f"198.51.100.{i}", T0 + 1)
    assert a.stats.tracked_destinations == 150
    recs = {r.source: r for r in a.due(T0 + 300)}
    assert recs["100.64.0.66"].distinct_destinations_capped is False
    assert recs["100.64.0.67"].distinct_destinations == 50
    assert recs["100.64.0.67"].distinct_destinations_capped is True
    assert a.stats.tracked_destinations == 0  # budget freed with the window


def test_source_cap() -> None:
    a = agg(max_sources=4)  # three v4 records at most: the last quarter is v6's
    for last in (66, 67, 68):
        assert hit(a, ip(f"100.64.0.{last}"), "192.0.2.1", T0)
    fourth = ip("100.64.0.69")
    assert hit(a, fourth, "192.0.2.1", T0) is False  # summarised: no notice storm
    assert hit(a, fourth, "192.0.2.2", T0) is False
    st = a.stats
    assert (st.tracked_sources, st.overflow_open) == (3, 1)
    assert (st.overflow_sources, st.overflow_packets) == (1, 2)
    recs = a.due(T0 + 300)
    assert [r.source for r in recs] == ["100.64.0.66", "100.64.0.67", "100.64.0.68", "0.0.0.0/0"]
    over = recs[-1]
    assert (over.overflow, over.overflow_sources, over.packets) == (True, 1, 2)
    assert over.distinct_destinations == 2 and a.stats.overflow_records == 1


def test_reload_changing_outcome_splits_record() -> None:
    a = agg()
    hit(a, BOT, "192.0.2.1", T0 + 10, action=Verdict.MONITOR)
    hit(a, BOT, "192.0.2.1", T0 + 20, action=Verdict.MONITOR)
    # Same values from a new (equal) Location object: no split.
    hit(a, BOT, "192.0.2.1", T0 + 25, action=Verdict.MONITOR, rule=Location(RULE.file, 4, 9))
    assert hit(a, BOT, "192.0.2.2", T0 + 30, action=Verdict.DROP) is False
    early = a.due(T0 + 31)
    assert [(r.action, r.packets, r.window_end - T0) for r in early] == [("monitor", 3, 30.0)]
    [late] = a.due(T0 + 300)
    assert (late.action, late.packets, late.first_seen - T0) == ("drop", 1, 30.0)


def test_kernel_counts() -> None:
    a = agg()
    assert hit(a, BOT, "192.0.2.1", T0 + 1)
    assert a.add_kernel_count(4, BOT, 500, "residential", Verdict.DROP, RULE, T0 + 60) is False
    assert a.add_kernel_count(4, BOT, 0, "residential", Verdict.DROP, RULE, T0 + 61) is False
    [r] = a.due(T0 + 300)
    assert (r.packets, r.kernel_packets, r.distinct_destinations) == (501, 500, 1)
    assert r.last_seen == T0 + 60 and dict(r.ports) == {25: 1}
    # Kernel-only activity keeps the source known (no repeated NOTICE) and is recorded.
    assert a.add_kernel_count(4, BOT, 7, "residential", Verdict.DROP, RULE, T0 + 400) is False
    [r] = a.due(T0 + 600)
    assert (r.packets, r.kernel_packets, r.destinations_sample) == (7, 7, ())


def test_flush_all_ends_open_window_at_now() -> None:
    a = agg()
    hit(a, BOT, "192.0.2.1", T0 + 10)
    [r] = a.flush_all(T0 + 42.5)
    assert r.window_start == T0 and r.window_end == T0 + 42.5
    assert a.flush_all(T0 + 43) == []


def test_clock_step_back_stays_in_window() -> None:
    a = agg()
    hit(a, BOT, "192.0.2.1", T0 + 100)
    hit(a, BOT, "192.0.2.1", T0 - 50)  # NTP stepped back across the boundary
    hit(a, BOT2, "192.0.2.1", T0 - 40)
    recs = a.due(T0 + 300)
    assert [r.packets for r in recs] == [2, 1]
    assert all(T0 <= r.first_seen <= r.last_seen <= r.window_end for r in recs)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        AbuseAggregator(window=0)
    with pytest.raises(ValueError):
        AbuseAggregator(v6_aggregate=129)


# --- writer ---------------------------------------------------------------------------


def records(n: int, start: float = T0) -> list[AbuseRecord]:
    a = agg()
    for i in range(n):
        hit(a, ip(f"100.64.1.{i}"), "192.0.2.25", start + i)
    return a.due(start + 300)


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writer_creates_directory_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "var" / "log" / "op25b" / "blocked.jsonl"
    w = AbuseLogWriter(str(path))
    assert not path.parent.exists()  # construction touches nothing
    assert w.write(records(3)) == 3
    assert w.write(records(2, T0 + 300)) == 2
    w.close()
    lines = read_lines(path)
    assert [x["source"] for x in lines] == [
        "100.64.1.0",
        "100.64.1.1",
        "100.64.1.2",
        "100.64.1.0",
        "100.64.1.1",
    ]
    assert oct(path.stat().st_mode & 0o777) == "0o640"


def test_writer_reopen_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "blocked.jsonl"
    w = AbuseLogWriter(str(path))
    w.write(records(1))
    os.rename(path, tmp_path / "blocked.jsonl.1")  # logrotate's rename
    w.reopen()  # the loop saw the USR1 flag
    assert path.exists() and path.read_text() == ""
    w.write(records(1, T0 + 300))
    w.close()
    assert len(read_lines(tmp_path / "blocked.jsonl.1")) == 1
    assert [x["window_start"] for x in read_lines(path)] == ["2026-11-23T18:05:00.000Z"]
    assert w.stats.reopens == 0 and w.pop_events() == []  # a signalled reopen is no news


def test_writer_errors_are_counted_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    w = AbuseLogWriter(str(blocker / "sub" / "blocked.jsonl"))  # parent is a file
    assert w.write(records(1)) == 0
    assert w.errors == 1 and w.last_error is not None
    w.reopen()
    assert w.errors == 2


CRASHER = textwrap.dedent(
    """
    import sys, time
    from op25b.daemon.abuselog import AbuseLogWriter
    from op25b.dataplane.aggregator import AbuseAggregator
    from op25b.policy.decide import Verdict
    path, t0 = sys.argv[1], float(sys.argv[2])
    a = AbuseAggregator(window=300, router="edge1")
    w = AbuseLogWriter(path)
    for i in range(50):
        a.observe(4, 0x64400100 + i, 0xC0000219, 25, "residential", Verdict.DROP, None, t0 + i)
    w.write(a.due(t0 + 300))  # window 1 closed: durable
    for i in range(50):  # window 2 open: in memory only
        a.observe(4, 0x64400200 + i, 0xC0000219, 25, None, Verdict.DROP, None, t0 + 301 + i)
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_kill9_loses_at_most_the_open_window(tmp_path: Path) -> None:
    path = tmp_path / "blocked.jsonl"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHER, str(path), str(T0)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    lines = read_lines(path)  # every line complete and parseable
    assert len(lines) == 50
    assert {x["window_start"] for x in lines} == {"2026-11-23T18:00:00.000Z"}
    assert lines[0]["source"] == "100.64.1.0" and lines[-1]["source"] == "100.64.1.49"


def test_observe_cost_is_small() -> None:
    """observe() runs per blocked packet; keep it in the low microseconds."""
    a = agg()
    dsts = [ip(f"192.0.2.{i}") for i in range(64)]
    t0 = time.perf_counter()
    n = 20_000
    for i in range(n):
        a.observe(4, BOT, dsts[i & 63], 25, "residential", Verdict.DROP, RULE, T0 + 1)
    per = (time.perf_counter() - t0) / n
    assert per < 50e-6, f"observe() took {per * 1e6:.1f} us"
