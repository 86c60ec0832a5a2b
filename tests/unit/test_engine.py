"""Tests for op25b.dataplane.enforcer.Enforcer: raw packet bytes in, queue verdict out, with real
Counters and AbuseAggregator and no kernel. Packets are built with ``struct`` so
these tests do not need scapy."""

from __future__ import annotations

import random
import struct
from datetime import UTC, datetime, timedelta

import pytest
from builders import FAR_FUTURE, addr, make_compiled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_decide import NOW as DECIDE_NOW
from test_decide import policy_strategy, random_address

from op25b.dataplane import enforcer as enforcer_module
from op25b.dataplane.aggregator import AbuseAggregator
from op25b.dataplane.counters import Counters
from op25b.dataplane.enforcer import Enforcer
from op25b.dataplane.packet import MAX_EXTENSION_HEADERS, Packet, PacketError, parse
from op25b.dataplane.verdicts import FOR_VERDICT, VERDICT_ACCEPT, VERDICT_DROP, VERDICT_REJECT
from op25b.policy.compiled import CompiledPolicy, compile_policy
from op25b.policy.decide import Decision, Reason, Verdict, decide_addresses
from op25b.policy.model import Action, Policy

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SYN, ACK = 0x02, 0x10
RES, BIZ, BOT = "100.64.0.10", "198.51.100.10", "100.64.0.66"
MX, MX2, MTA = "192.0.2.25", "192.0.2.26", "203.0.113.25"
RES6, BIZ6, MX6 = "2001:db8:100::10", "2001:db8:b00::10", "2001:db8:ff::25"


def tcp(sport: int, dport: int, flags: int) -> bytes:
    # sport, dport, seq, ack, data offset 5 (<<4), flags, window, checksum, urgent
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)


def v4(src: str, dst: str, dport: int = 25, flags: int = SYN, sport: int = 40000) -> bytes:
    seg = tcp(sport, dport, flags)
    s, d = addr(src)[1], addr(dst)[1]
    return struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(seg), 0, 0, 64, 6, 0, s, d) + seg


def v6(src: str, dst: str, dport: int = 25, flags: int = SYN, ext: int = 0) -> bytes:
    """IPv6 SYN whose TCP header sits behind ``ext`` destination-options headers."""
    seg = tcp(40000, dport, flags)
    chain = b""
    for i in range(ext):
        nxt = 60 if i < ext - 1 else 6
        chain += struct.pack("!BB6x", nxt, 0)  # 8 bytes, no options (padding)
    first = 60 if ext else 6
    s, d = addr(src)[1].to_bytes(16, "big"), addr(dst)[1].to_bytes(16, "big")
    hdr = struct.pack("!IHBB", 6 << 28, len(chain) + len(seg), first, 64) + s + d
    return hdr + chain + seg


def enforcer(action: Action = Action.DROP, on_error: int = VERDICT_ACCEPT) -> Enforcer:
    return Enforcer(make_compiled(action=action), Counters(), AbuseAggregator(), on_error, NOW)


def snap(e: Enforcer) -> dict[str, object]:
    s = e.counters.snapshot(0.0)
    return {
        "packets": s.packets,
        "verdicts": {k: v for k, v in s.verdicts.items() if v},
        "reasons": {k: v for k, v in s.reasons.items() if v},
        "parse_errors": s.parse_errors,
        "undecidable": s.undecidable,
    }


def test_packet_builders_produce_what_parse_reads() -> None:
    p = parse(v4(RES, MX, 25, SYN))
    assert (p.version, p.src, p.dst, p.dport, p.flags) == (4, addr(RES)[1], addr(MX)[1], 25, SYN)
    p = parse(v6(RES6, MX6, 25, SYN, ext=3))
    assert (p.version, p.src, p.dst, p.dport) == (6, addr(RES6)[1], addr(MX6)[1], 25)


@pytest.mark.parametrize(
    ("action", "verdict_int", "verdict"),
    [
        (Action.DROP, VERDICT_DROP, Verdict.DROP),
        (Action.REJECT, VERDICT_REJECT, Verdict.REJECT),
        (Action.MONITOR, VERDICT_ACCEPT, Verdict.MONITOR),
    ],
)
def test_blocked_syn_verdict_counts_and_new_source_once(
    action: Action, verdict_int: int, verdict: Verdict
) -> None:
    e = enforcer(action)
    assert e.handle(v4(BOT, MX)) == verdict_int
    assert snap(e) == {
        "packets": 1,
        "verdicts": {verdict.value: 1},
        "reasons": {"blocked": 1},
        "parse_errors": 0,
        "undecidable": 0,
    }
    assert len(e.new_sources) == 1
    pkt, d = e.new_sources[0]
    assert (pkt.src, pkt.dst) == (addr(BOT)[1], addr(MX)[1])
    assert (d.verdict, d.reason, d.plan) == (verdict, Reason.BLOCKED, "residential")
    # the same source again, to another MX and as a bare ACK: counted, not new again
    assert e.handle(v4(BOT, MX2)) == verdict_int
    assert e.handle(v4(BOT, MX, flags=ACK)) == verdict_int
    assert len(e.new_sources) == 1
    assert snap(e)["reasons"] == {"blocked": 3}
    # a second blocked source is new
    assert e.handle(v6(RES6, MX6)) == verdict_int
    assert len(e.new_sources) == 2
    assert e.new_sources[1][0].version == 6


def test_accepted_packets_are_counted_and_never_new_sources() -> None:
    e = enforcer(Action.REJECT, on_error=VERDICT_DROP)
    assert e.handle(v4(RES, MTA)) == VERDICT_ACCEPT
    assert e.handle(v4(BIZ, MX)) == VERDICT_ACCEPT
    assert e.handle(v4(MTA, MX)) == VERDICT_ACCEPT
    assert e.handle(v6(BIZ6, MX6)) == VERDICT_ACCEPT
    assert e.new_sources == []
    assert snap(e)["reasons"] == {"provider_mta": 1, "exempt_plan": 2, "not_subscriber": 1}


def test_blocked_sources_reach_the_aggregator() -> None:
    e = enforcer()
    for dst in (MX, MX2, MX):
        e.handle(v4(BOT, dst))
    records = e.aggregator.flush_all(e.wall + 1)
    assert len(records) == 1
    rec = records[0].as_dict()
    assert rec["packets"] == 3
    assert rec["distinct_destinations"] == 2


@pytest.mark.parametrize("on_error", [VERDICT_ACCEPT, VERDICT_DROP])
@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x45", b"\xff" * 60, bytes(19), b"\x60" + bytes(30)],
    ids=["empty", "one-byte", "version-15", "short-v0", "short-v6"],
)
def test_garbage_counts_a_parse_error_and_gets_on_error(on_error: int, garbage: bytes) -> None:
    e = enforcer(Action.REJECT, on_error=on_error)
    assert e.handle(garbage) == on_error
    assert snap(e) == {
        "packets": 1,
        "verdicts": {},
        "reasons": {},
        "parse_errors": 1,
        "undecidable": 0,
    }
    assert e.new_sources == []


def test_deep_extension_chain_is_still_decided_on_addresses() -> None:
    deep = MAX_EXTENSION_HEADERS + 1
    with pytest.raises(PacketError, match="too long"):
        parse(v6(RES6, MX6, ext=deep))
    # on_error would give the opposite answer in both cases, so the verdict must come
    # from the policy: a residential bot cannot hide its SYN behind 9 headers ...
    e = enforcer(Action.REJECT, on_error=VERDICT_ACCEPT)
    assert e.handle(v6(RES6, MX6, ext=deep)) == VERDICT_REJECT
    # ... and a business subscriber is not dropped because of them
    e2 = enforcer(Action.DROP, on_error=VERDICT_DROP)
    assert e2.handle(v6(BIZ6, MX6, ext=deep)) == VERDICT_ACCEPT
    assert e2.handle(v6(RES6, "2001:db8:25::25", ext=deep)) == VERDICT_ACCEPT  # provider MTA
    for x in (e, e2):
        assert snap(x)["parse_errors"] == x.counters.snapshot(0).packets
    # one header fewer parses normally and is counted as a decision
    e3 = enforcer(Action.REJECT, on_error=VERDICT_ACCEPT)
    assert e3.handle(v6(RES6, MX6, ext=MAX_EXTENSION_HEADERS)) == VERDICT_REJECT
    assert snap(e3)["reasons"] == {"blocked": 1}


def test_unparsable_v4_is_decided_on_addresses() -> None:
    # a truncated TCP header behind a valid IPv4 header
    raw = v4(BOT, MX)[:26]
    with pytest.raises(PacketError):
        parse(raw)
    assert enforcer(Action.DROP, on_error=VERDICT_ACCEPT).handle(raw) == VERDICT_DROP
    raw = v4(BIZ, MX)[:26]
    assert enforcer(Action.DROP, on_error=VERDICT_DROP).handle(raw) == VERDICT_ACCEPT


def _boom(self: CompiledPolicy, version: int, addr: int) -> None:
    raise RuntimeError("simulated bug in the matcher")


@pytest.mark.parametrize("on_error", [VERDICT_ACCEPT, VERDICT_DROP])
def test_decide_raising_counts_undecidable_and_gets_on_error(
    monkeypatch: pytest.MonkeyPatch, on_error: int
) -> None:
    e = enforcer(Action.REJECT, on_error=on_error)
    # CompiledPolicy is frozen, so patch the method on the class (undone after the test)
    monkeypatch.setattr(CompiledPolicy, "plan_of", _boom)
    assert e.handle(v4(BOT, MX)) == on_error
    assert e.handle(v6(RES6, MX6)) == on_error
    assert snap(e) == {
        "packets": 2,
        "verdicts": {},
        "reasons": {},
        "parse_errors": 0,
        "undecidable": 2,
    }
    assert e.new_sources == []
    # decisions made before the source lookup are unaffected
    assert e.handle(v4(BOT, MTA)) == VERDICT_ACCEPT
    assert e.handle(v4(BOT, MX, dport=587)) == VERDICT_ACCEPT
    assert snap(e)["reasons"] == {"provider_mta": 1, "not_guarded": 1}
    # and the address fallback for unparsable packets also ends in on_error
    assert e.handle(v6(RES6, MX6, ext=MAX_EXTENSION_HEADERS + 1)) == on_error


def test_set_clock_drives_exemption_expiry() -> None:
    compiled = make_compiled(exemptions=[("100.64.7.7/32", datetime(2027, 2, 1, tzinfo=UTC))])
    start = datetime(2027, 1, 31, 23, 59, tzinfo=UTC)
    e = Enforcer(compiled, Counters(), AbuseAggregator(), VERDICT_DROP, start)
    e.set_clock(start)
    assert e.handle(v4("100.64.7.7", MX)) == VERDICT_ACCEPT
    e.set_clock(datetime(2027, 2, 1, tzinfo=UTC))
    assert e.wall == datetime(2027, 2, 1, tzinfo=UTC).timestamp()
    assert e.handle(v4("100.64.7.7", MX)) == VERDICT_DROP
    assert snap(e)["reasons"] == {"exemption": 1, "blocked": 1}


def test_source_memo_follows_exemption_expiry_and_reload() -> None:
    """Memoised per-source decisions must not outlive an exemption or a policy."""
    expires = datetime(2026, 1, 2, tzinfo=UTC)
    start = datetime(2026, 1, 1, 23, 59, 59, tzinfo=UTC)
    e = Enforcer(
        make_compiled(exemptions=[("100.64.7.7/32", expires)]),
        Counters(),
        AbuseAggregator(),
        VERDICT_ACCEPT,
        start,  # an injected clock: the memo's expiry path, whatever today's date is
    )
    e.set_clock(start)
    assert e.handle(v4("100.64.7.7", MX)) == VERDICT_ACCEPT
    assert e.handle(v4("100.64.7.7", MX2)) == VERDICT_ACCEPT  # served from the memo
    e.set_clock(expires)  # the exemption ends at this instant
    assert e.handle(v4("100.64.7.7", MX)) == VERDICT_DROP
    # A reload to a policy exempting the source again takes effect at once.
    e.compiled = make_compiled(exemptions=[("100.64.7.7/32", datetime(2027, 1, 1, tzinfo=UTC))])
    assert e.handle(v4("100.64.7.7", MX)) == VERDICT_ACCEPT
    # The provider MTA is decided per destination, never from the source memo.
    assert e.handle(v4(RES, MX)) == VERDICT_DROP
    assert e.handle(v4(RES, MTA)) == VERDICT_ACCEPT
    reasons = e.counters.snapshot(0.0).reasons
    assert (reasons["exemption"], reasons["blocked"], reasons["provider_mta"]) == (3, 2, 1)


def test_memo_resets_at_exemption_expiry_without_a_clock_step() -> None:
    """The clock only moves forward here, so only the expiry instant can reset the memo."""
    expires = datetime(2026, 1, 2, tzinfo=UTC)
    start = datetime(2026, 1, 1, 23, 0, tzinfo=UTC)
    compiled = make_compiled(exemptions=[("100.64.7.7/32", expires)])
    e = Enforcer(compiled, Counters(), AbuseAggregator(), VERDICT_ACCEPT, start)
    assert e.now == start and e.wall == start.timestamp()
    assert e.handle(v4("100.64.7.7", MX)) == VERDICT_ACCEPT  # memoised as exemption
    e.set_clock(datetime(2026, 1, 1, 23, 59, 59, tzinfo=UTC))
    assert e.handle(v4("100.64.7.7", MX)) == VERDICT_ACCEPT
    e.set_clock(expires)
    assert e.handle(v4("100.64.7.7", MX)) == VERDICT_DROP


def test_memo_resets_when_the_clock_steps_back_past_its_start() -> None:
    """An NTP step back revives an exemption that had expired: the memo must not hide it."""
    expires = datetime(2026, 3, 1, tzinfo=UTC)
    start = datetime(2026, 6, 1, tzinfo=UTC)  # the exemption is already over at start
    compiled = make_compiled(exemptions=[("100.64.7.7/32", expires)])
    e = Enforcer(compiled, Counters(), AbuseAggregator(), VERDICT_ACCEPT, start)
    assert e.handle(v4("100.64.7.7", MX)) == VERDICT_DROP  # memoised as blocked
    e.set_clock(datetime(2026, 2, 1, tzinfo=UTC))  # stepped back before the expiry
    assert e.handle(v4("100.64.7.7", MX)) == VERDICT_ACCEPT
    assert snap(e)["reasons"] == {"blocked": 1, "exemption": 1}


@pytest.mark.parametrize(
    ("plans", "src4", "src6"),
    [
        ({"residential": ["0.0.0.0/32"]}, "0.0.0.0", "::"),
        ({"residential": ["100.64.0.0/16"]}, "100.64.0.10", "::100.64.0.10"),
    ],
    ids=["0.0.0.0-vs-::", "a.b.c.d-vs-::a.b.c.d"],
)
@pytest.mark.parametrize("v4_first", [True, False], ids=["v4-first", "v6-first"])
def test_memo_keeps_v4_and_v6_sources_with_equal_bits_apart(
    plans: dict[str, list[str]], src4: str, src6: str, v4_first: bool
) -> None:
    """The v4 source is a subscriber, the v6 one with the same integer value is not."""
    e = Enforcer(make_compiled(plans=plans), Counters(), AbuseAggregator(), VERDICT_ACCEPT, NOW)
    order = [(v4(src4, MX), VERDICT_DROP), (v6(src6, MX6), VERDICT_ACCEPT)]
    for raw, want in order if v4_first else order[::-1]:
        assert e.handle(raw) == want
        assert e.handle(raw) == want  # and again, now from the memo
    assert snap(e)["reasons"] == {"blocked": 2, "not_subscriber": 2}


class RecordingCache:
    """A CacheSink that only remembers what it was handed."""

    def __init__(self) -> None:
        self.wanted: list[tuple[int, int, Verdict]] = []

    def want(self, version: int, src: int, decision: Decision) -> None:
        self.wanted.append((version, src, decision.verdict))


@pytest.mark.parametrize(
    ("action", "cached"),
    [(Action.DROP, Verdict.DROP), (Action.REJECT, Verdict.REJECT), (Action.MONITOR, None)],
)
def test_monitor_blocks_never_reach_the_verdict_cache(
    action: Action, cached: Verdict | None
) -> None:
    """A cached source is dropped in the kernel: in monitor mode that would block mail."""
    e = enforcer(action)
    sink = RecordingCache()
    e.cache = sink
    e.handle(v4(BOT, MX))
    e.handle(v6(RES6, MX6))
    e.handle(v4(RES, MTA))  # accepted: never cached whatever the action
    want = [(4, addr(BOT)[1], cached), (6, addr(RES6)[1], cached)]
    assert sink.wanted == ([] if cached is None else want)
    assert snap(e)["reasons"] == {"blocked": 2, "provider_mta": 1}


def test_memo_never_serves_a_destination_decision() -> None:
    """Only source-decided packets (guarded port, not to a provider MTA) are memoised:
    a source's accepted submission or smarthost traffic must not let its MX SYNs pass."""
    e = enforcer()
    assert e.handle(v4(BOT, MX, dport=587)) == VERDICT_ACCEPT
    assert e.handle(v4(BOT, MX)) == VERDICT_DROP
    assert e.handle(v4(RES, MTA)) == VERDICT_ACCEPT
    assert e.handle(v4(RES, MX)) == VERDICT_DROP
    assert e.handle(v4(RES, MTA)) == VERDICT_ACCEPT
    assert snap(e)["reasons"] == {"not_guarded": 1, "blocked": 2, "provider_mta": 2}


def counting_decide(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch the enforcer's decide_addresses to record the source of every call."""
    calls: list[int] = []
    real = enforcer_module.decide_addresses

    def counting(
        compiled: CompiledPolicy, version: int, src: int, dst: int, dport: int, now: datetime
    ) -> Decision:
        calls.append(src)
        return real(compiled, version, src, dst, dport, now)

    monkeypatch.setattr(enforcer_module, "decide_addresses", counting)
    return calls


def test_memo_decides_each_class_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the memos: a flooding source, or a spray over one plan prefix,
    costs one decide() per policy; another plan prefix or an exemption is another class."""
    calls = counting_decide(monkeypatch)
    e = enforcer()
    for dst in (MX, MX2, MX, MX2):
        assert e.handle(v4(BOT, dst)) == VERDICT_DROP
    for host in range(1, 200):  # the rest of the spray: same /16, same class
        assert e.handle(v4(f"100.64.3.{host}", MX)) == VERDICT_DROP
    assert e.handle(v4(RES, MX)) == VERDICT_DROP
    assert calls == [addr(BOT)[1]]
    assert e.handle(v4(BIZ, MX)) == VERDICT_ACCEPT  # exempt plan: its own class
    assert e.handle(v6(RES6, MX6)) == VERDICT_DROP  # other family: its own class
    assert e.handle(v6("2001:db8:100::99", MX6)) == VERDICT_DROP
    assert calls == [addr(BOT)[1], addr(BIZ)[1], addr(RES6)[1]]
    assert snap(e)["reasons"] == {"blocked": 206, "exempt_plan": 1}


def test_class_memo_tells_an_exempted_host_from_its_plan_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exemption inside a plan prefix splits the class: the exemption index is in the key."""
    calls = counting_decide(monkeypatch)
    compiled = make_compiled(exemptions=[("100.64.7.0/30", FAR_FUTURE)])
    e = Enforcer(compiled, Counters(), AbuseAggregator(), VERDICT_ACCEPT, NOW)
    got = [e.handle(v4(f"100.64.7.{h}", MX)) for h in range(8)]
    assert got == [VERDICT_ACCEPT] * 4 + [VERDICT_DROP] * 4
    assert calls == [addr("100.64.7.0")[1], addr("100.64.7.4")[1]]
    # A new policy drops both memos: the same sources are decided afresh.
    e.compiled = make_compiled()
    assert [e.handle(v4(f"100.64.7.{h}", MX)) for h in range(8)] == [VERDICT_DROP] * 8
    assert calls[2:] == [addr("100.64.7.0")[1]]


def test_class_outcomes_share_one_decision_object() -> None:
    """Every source of a class carries the same Decision: the aggregator's ``is`` checks
    and the new-source notices see one object per class, not one per source."""
    e = enforcer()
    for host in (10, 11, 12):
        e.handle(v4(f"100.64.9.{host}", MX))
    decisions = [d for _, d in e.new_sources]
    assert len(decisions) == 3 and decisions[0] is decisions[1] is decisions[2]
    assert [p.src for p, _ in e.new_sources] == [addr(f"100.64.9.{h}")[1] for h in (10, 11, 12)]


def test_blocked_packet_reaches_the_abuse_record_in_full() -> None:
    e = enforcer(Action.REJECT)
    e.handle(v4(BOT, MX))
    e.handle(v4(BOT, MX2, dport=2525))
    e.handle(v4(RES, MTA))  # accepted: no record
    (rec,) = e.aggregator.flush_all(e.wall + 1)
    (_, d), *_ = e.new_sources
    assert d.rule is not None
    got = rec.as_dict()
    assert (got["source"], got["family"], got["plan"], got["action"]) == (
        BOT,
        4,
        "residential",
        "reject",
    )
    assert (got["rule"], got["ports"], got["destinations_sample"]) == (str(d.rule), {"25": 1}, [MX])


def deep_v6(src: str, dst: str) -> bytes:
    """An IPv6 SYN the parser refuses (too many extension headers)."""
    return v6(src, dst, ext=MAX_EXTENSION_HEADERS + 1)


def test_unparsable_blocked_packet_is_logged_like_a_parsed_one() -> None:
    e = enforcer(Action.REJECT)
    assert e.handle(deep_v6(RES6, MX6)) == VERDICT_REJECT
    (pkt, d), *more = e.new_sources
    assert more == []
    # no TCP header was read: ports and flags 0, the destination port assumed guarded
    assert pkt == Packet(6, addr(RES6)[1], addr(MX6)[1], 0, 25, 0)
    assert (d.verdict, d.reason, d.plan) == (Verdict.REJECT, Reason.BLOCKED, "residential")
    (rec,) = e.aggregator.flush_all(e.wall + 1)
    got = rec.as_dict()
    assert (got["source"], got["family"], got["plan"], got["action"], got["rule"]) == (
        "2001:db8:100::/64",
        6,
        "residential",
        "reject",
        str(d.rule),
    )
    assert (got["ports"], got["destinations_sample"]) == ({"25": 1}, [MX6])


def test_unparsable_accepted_packet_is_not_logged() -> None:
    e = enforcer(Action.REJECT)
    assert e.handle(deep_v6(BIZ6, MX6)) == VERDICT_ACCEPT
    assert e.new_sources == []
    assert e.aggregator.flush_all(e.wall + 1) == []


def test_unparsable_packet_from_an_exempted_source_is_accepted() -> None:
    """The address-only decision gets the clock too: exemptions still apply."""
    compiled = make_compiled(exemptions=[(f"{RES6}/128", datetime(2027, 1, 1, tzinfo=UTC))])
    e = Enforcer(compiled, Counters(), AbuseAggregator(), VERDICT_DROP, NOW)
    assert e.handle(deep_v6(RES6, MX6)) == VERDICT_ACCEPT
    assert e.decide_on_addresses(6, addr(RES6)[1]).reason is Reason.EXEMPTION


def test_default_clock_is_the_current_utc_time() -> None:
    compiled = make_compiled(exemptions=[("100.64.7.7/32", FAR_FUTURE)])
    before = datetime.now(UTC)
    e = Enforcer(compiled, Counters(), AbuseAggregator(), VERDICT_DROP)
    assert before <= e.now <= datetime.now(UTC)  # aware: a naive time would not compare
    assert e.wall == e.now.timestamp()
    assert e.handle(v4("100.64.7.7", MX)) == VERDICT_ACCEPT


def raw_syn(version: int, src: int, dst: int, dport: int) -> bytes:
    seg = tcp(40000, dport, SYN)
    if version == 4:
        return struct.pack("!BBHHHBBHII", 0x45, 0, 40, 0, 0, 64, 6, 0, src, dst) + seg
    head = struct.pack("!IHBB", 6 << 28, len(seg), 6, 64)
    return head + src.to_bytes(16, "big") + dst.to_bytes(16, "big") + seg


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policy_strategy(), seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_memoised_enforcer_agrees_with_decide(policy: Policy, seed: int) -> None:
    """Whatever the memos hold (per source, per LPM class), every packet's verdict and
    reason are decide()'s, including across exemption expiries as the clock moves."""
    rng = random.Random(seed)
    compiled = compile_policy(policy)
    start = DECIDE_NOW - timedelta(hours=80)
    e = Enforcer(compiled, Counters(), AbuseAggregator(), VERDICT_ACCEPT, start)
    now = start
    inside = [(p.version, p) for plan in policy.plans for p in plan.prefixes]
    inside += [(x.prefix.version, x.prefix) for x in policy.exemptions]
    mtas = [(v, a) for m in policy.provider_mtas for (v, a) in m.addresses]
    before = e.counters.snapshot(0.0).reasons
    for _ in range(120):
        if rng.random() < 0.1:  # the clock moves on, sometimes past an expiry
            now += timedelta(hours=rng.randint(0, 40))
            e.set_clock(now)
        if rng.random() < 0.7:
            version, p = rng.choice(inside)
            src = p.network | rng.getrandbits((32 if version == 4 else 128) - p.length)
        else:
            version = rng.choice([4, 6])
            src = random_address(rng, version)
        family_mtas = [a for v, a in mtas if v == version]
        dst = rng.choice(family_mtas) if family_mtas and rng.random() < 0.2 else 0
        dst = dst or random_address(rng, version)
        port = rng.choice([25, 25, 2525, 587])
        want = decide_addresses(compiled, version, src, dst, port, now)
        assert e.handle(raw_syn(version, src, dst, port)) == FOR_VERDICT[want.verdict]
        after = e.counters.snapshot(0.0).reasons
        changed = {r for r in after if after[r] != before[r]}
        assert changed == {want.reason.value}, (version, src, dst, port, now)
        before = after
