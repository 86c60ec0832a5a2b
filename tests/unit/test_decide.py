"""Tests for op25b.policy.decide: every row of the README's picture and the fixed decision order of
§3, on a policy built in code (builders.py) and on the real policies/example.yaml,
for IPv4 and IPv6; plus a property test against a brute-force reference model.

Expected rule locations are never typed in: they come from the Policy model (where
the loader/builder put each prefix) and, for the example file, are cross-checked
against the position of the prefix text in the file itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from builders import addr, make_policy
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from op25b.dataplane.packet import Packet
from op25b.policy.addr import format_address, parse_prefix, prefix_text
from op25b.policy.compiled import compile_policy
from op25b.policy.decide import Decision, Reason, Verdict, decide, decide_addresses
from op25b.policy.loader import load_policy, load_policy_text
from op25b.policy.model import Action, Location, Policy, Prefix

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "example.yaml"
# Between the example's expired (2024-06-30) and active (2027-01-31) exemptions.
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ACTIONS = [Action.DROP, Action.REJECT, Action.MONITOR]

# ------------------------------------------------------------------------ locations


def plan_rule(policy: Policy, plan: str, prefix: str) -> Location:
    """Where ``prefix`` of ``plan`` was written, as recorded in the Policy model."""
    (p,) = [x for x in policy.plans if x.name == plan]
    return p.prefixes.location(p.prefixes.prefixes.index(parse_prefix(prefix)))


def mta_rule(policy: Policy, address: str) -> Location:
    for mta in policy.provider_mtas:
        for a, loc in zip(mta.addresses, mta.locations, strict=True):
            if a == addr(address):
                return loc
    raise AssertionError(f"{address} is no provider MTA")


def exemption_rule(policy: Policy, prefix: str) -> Location:
    (e,) = [e for e in policy.exemptions if e.prefix == parse_prefix(prefix)]
    return e.location


def text_location(path: Path, needle: str, shown: str) -> Location:
    """file:line:col of the (only) YAML scalar ``needle`` in a file; a quoted
    scalar's mark is its opening quote, as PyYAML reports it."""
    hits = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        col = line.find(needle)
        if col >= 0 and not line.lstrip().startswith("#"):
            if col > 0 and line[col - 1] in "\"'":
                col -= 1
            hits.append(Location(shown, n, col + 1))
    assert len(hits) == 1, f"{needle!r} found {len(hits)} times in {path}"
    return hits[0]


# --------------------------------------------------------------------------- setups


def builder_policy(action: Action) -> Policy:
    return make_policy(
        plans={
            "residential": (False, ["100.64.0.0/16", "2001:db8:100::/40"]),
            "business-static": (
                True,
                [
                    "198.51.100.0/24",
                    "2001:db8:b00::/40",
                    "100.64.200.0/29",
                    "2001:db8:100:200::/56",
                ],
            ),
        },
        mtas=["203.0.113.25", "2001:db8:25::25"],
        exemptions=[
            ("100.64.7.7/32", date(2027, 1, 31)),
            ("2001:db8:100:7::/64", date(2027, 1, 31)),
            ("100.64.8.8/32", date(2024, 6, 30)),
            ("2001:db8:100:8::/64", date(2024, 6, 30)),
        ],
        action=action,
    )


def example_policy(action: Action) -> Policy:
    text = EXAMPLE.read_text()
    assert text.count("\naction: drop\n") == 1
    text = text.replace("\naction: drop\n", f"\naction: {action.value}\n")
    return load_policy_text(text, source=str(EXAMPLE), now=NOW, base_dir=EXAMPLE.parent).policy


# Instants bracketing the end of a date expiry (2027-01-31 = active through that UTC day).
END_2027 = datetime(2027, 2, 1, tzinfo=UTC)
END_2024 = datetime(2024, 7, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    """One policy source and IP family, with the addresses of the design rows."""

    name: str
    policy_for: Callable[[Action], Policy]
    res: str  # residential subscriber
    res_prefix: str
    mx: str  # an external MX
    mta: str  # the provider MTA
    biz: str  # business-static subscriber
    biz_prefix: str
    carve: tuple[str, str, str] | None  # (inside the carve-out, its prefix, just outside)
    active: tuple[str, str, datetime] | None  # (source, exemption prefix, expiry instant)
    expired: tuple[str, str, datetime] | None


BUILDER_V4 = Case(
    "builder-v4", builder_policy, "100.64.0.66", "100.64.0.0/16", "192.0.2.25",
    "203.0.113.25", "198.51.100.10", "198.51.100.0/24",
    ("100.64.200.3", "100.64.200.0/29", "100.64.200.8"),
    ("100.64.7.7", "100.64.7.7/32", END_2027),
    ("100.64.8.8", "100.64.8.8/32", END_2024),
)  # fmt: skip
BUILDER_V6 = Case(
    "builder-v6", builder_policy, "2001:db8:100::66", "2001:db8:100::/40", "2001:db8:ff::25",
    "2001:db8:25::25", "2001:db8:b00::10", "2001:db8:b00::/40",
    ("2001:db8:100:2ff::1", "2001:db8:100:200::/56", "2001:db8:100:300::"),
    ("2001:db8:100:7::abcd", "2001:db8:100:7::/64", END_2027),
    ("2001:db8:100:8:ffff:ffff:ffff:ffff", "2001:db8:100:8::/64", END_2024),
)  # fmt: skip
EXAMPLE_V4 = Case(
    "example-v4", example_policy, "100.64.0.66", "100.64.0.0/16", "192.0.2.25",
    "203.0.113.25", "198.51.100.10", "198.51.100.0/24",
    ("100.64.200.7", "100.64.200.0/29", "100.64.200.8"),
    ("100.64.7.7", "100.64.7.7/32", END_2027),
    ("100.64.8.8", "100.64.8.8/32", END_2024),
)  # fmt: skip
EXAMPLE_V6 = Case(
    "example-v6", example_policy, "2001:db8:100::66", "2001:db8:100::/40", "2001:db8:ff::25",
    "2001:db8:25::25", "2001:db8:b00::10", "2001:db8:b00::/40",
    None, None, None,  # the example has no IPv6 carve-out or exemption
)  # fmt: skip
CASES = [BUILDER_V4, BUILDER_V6, EXAMPLE_V4, EXAMPLE_V6]
WITH_CARVE = [c for c in CASES if c.carve]
WITH_EXEMPTIONS = [c for c in CASES if c.active]


def ids(c: Case) -> str:
    return c.name


def decide_both(policy: Policy, src: str, dst: str, port: int, now: datetime = NOW) -> Decision:
    """decide_addresses(), after checking decide() on the equivalent Packet agrees."""
    compiled = compile_policy(policy)
    (v, s), (v2, d) = addr(src), addr(dst)
    assert v == v2
    by_addr = decide_addresses(compiled, v, s, d, port, now)
    by_packet = decide(compiled, Packet(v, s, d, 40000, port, 0x02), now)
    assert by_packet == by_addr
    return by_addr


# --------------------------------------------------------------- design rows (§1)


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.value)
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_residential_to_external_mx_is_blocked(case: Case, action: Action) -> None:
    policy = case.policy_for(action)
    d = decide_both(policy, case.res, case.mx, 25)
    assert d.verdict.value == action.value
    assert d.reason is Reason.BLOCKED
    assert d.plan == "residential"
    assert d.rule == plan_rule(policy, "residential", case.res_prefix)
    # monitor lets the packet through; drop and reject do not
    assert d.verdict.passes is (action is Action.MONITOR)
    assert d.as_dict() == {
        "verdict": action.value,
        "reason": "blocked",
        "plan": "residential",
        "rule": str(plan_rule(policy, "residential", case.res_prefix)),
    }


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_residential_to_provider_mta_is_accepted(case: Case) -> None:
    policy = case.policy_for(Action.DROP)
    d = decide_both(policy, case.res, case.mta, 25)
    assert (d.verdict, d.reason, d.plan) == (Verdict.ACCEPT, Reason.PROVIDER_MTA, None)
    assert d.rule == mta_rule(policy, case.mta)


@pytest.mark.parametrize("port", [587, 465])
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_submission_ports_are_never_touched(case: Case, port: int) -> None:
    policy = case.policy_for(Action.REJECT)
    for src, dst in [(case.res, case.mx), (case.res, case.mta), (case.biz, case.mx)]:
        d = decide_both(policy, src, dst, port)
        assert (d.verdict, d.reason, d.plan) == (Verdict.ACCEPT, Reason.NOT_GUARDED, None)
        assert d.rule == policy.guarded_ports_location


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_exempt_plan_to_external_mx_is_accepted(case: Case) -> None:
    policy = case.policy_for(Action.DROP)
    d = decide_both(policy, case.biz, case.mx, 25)
    assert (d.verdict, d.reason, d.plan) == (Verdict.ACCEPT, Reason.EXEMPT_PLAN, "business-static")
    assert d.rule == plan_rule(policy, "business-static", case.biz_prefix)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_provider_mta_as_source_is_not_a_subscriber(case: Case) -> None:
    policy = case.policy_for(Action.DROP)
    d = decide_both(policy, case.mta, case.mx, 25)
    assert d == Decision(Verdict.ACCEPT, Reason.NOT_SUBSCRIBER, None, None)


@pytest.mark.parametrize("case", WITH_CARVE, ids=ids)
def test_business_carved_out_of_residential_pool(case: Case) -> None:
    assert case.carve is not None
    inside, prefix, outside = case.carve
    policy = case.policy_for(Action.DROP)
    # the carve-out really lies inside the residential pool
    outer, inner = parse_prefix(case.res_prefix), parse_prefix(prefix)
    assert inner.length > outer.length
    assert inner.network >> (bits_of(outer) - outer.length) == outer.network >> (
        bits_of(outer) - outer.length
    )
    d = decide_both(policy, inside, case.mx, 25)
    assert (d.verdict, d.reason, d.plan) == (Verdict.ACCEPT, Reason.EXEMPT_PLAN, "business-static")
    assert d.rule == plan_rule(policy, "business-static", prefix)
    # one address past the carve-out is residential again
    d = decide_both(policy, outside, case.mx, 25)
    assert (d.verdict, d.reason, d.plan) == (Verdict.DROP, Reason.BLOCKED, "residential")
    assert d.rule == plan_rule(policy, "residential", case.res_prefix)


def bits_of(p: Prefix) -> int:
    return 32 if p.version == 4 else 128


@pytest.mark.parametrize("case", WITH_EXEMPTIONS, ids=ids)
def test_active_exemption_accepts_until_the_expiry_instant(case: Case) -> None:
    assert case.active is not None
    src, prefix, end = case.active
    policy = case.policy_for(Action.REJECT)
    rule = exemption_rule(policy, prefix)
    for now in (NOW, end - timedelta(microseconds=1)):
        d = decide_both(policy, src, case.mx, 25, now)
        assert (d.verdict, d.reason, d.plan, d.rule) == (
            Verdict.ACCEPT,
            Reason.EXEMPTION,
            "residential",
            rule,
        )
    for now in (end, end + timedelta(days=400)):
        d = decide_both(policy, src, case.mx, 25, now)
        assert (d.verdict, d.reason, d.plan) == (Verdict.REJECT, Reason.BLOCKED, "residential")
        assert d.rule == plan_rule(policy, "residential", case.res_prefix)


@pytest.mark.parametrize("case", WITH_EXEMPTIONS, ids=ids)
def test_date_expiry_is_active_through_that_utc_day(case: Case) -> None:
    assert case.active is not None
    src, _, end = case.active
    policy = case.policy_for(Action.DROP)
    # 2027-01-31 is the written date: the whole UTC day counts, in any time zone
    last_day = datetime(2027, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert end == last_day + timedelta(microseconds=1)
    plus_one = timezone(timedelta(hours=1))
    active_times = [
        datetime(2027, 1, 31, 0, 0, tzinfo=UTC),
        last_day,
        datetime(2027, 2, 1, 0, 59, 59, tzinfo=plus_one),  # 23:59:59 UTC
    ]
    expired_times = [
        datetime(2027, 2, 1, 0, 0, tzinfo=UTC),
        datetime(2027, 2, 1, 1, 0, tzinfo=plus_one),  # 00:00 UTC
        datetime(2027, 1, 31, 19, 0, tzinfo=timezone(timedelta(hours=-5))),  # 00:00 UTC
    ]
    for now in active_times:
        assert decide_both(policy, src, case.mx, 25, now).reason is Reason.EXEMPTION, now
    for now in expired_times:
        assert decide_both(policy, src, case.mx, 25, now).reason is Reason.BLOCKED, now


@pytest.mark.parametrize("case", WITH_EXEMPTIONS, ids=ids)
def test_expired_exemption_is_blocked(case: Case) -> None:
    assert case.expired is not None
    src, prefix, end = case.expired
    policy = case.policy_for(Action.DROP)
    d = decide_both(policy, src, case.mx, 25, NOW)
    assert (d.verdict, d.reason, d.plan) == (Verdict.DROP, Reason.BLOCKED, "residential")
    assert d.rule == plan_rule(policy, "residential", case.res_prefix)
    # ... and it was active right before its expiry instant
    d = decide_both(policy, src, case.mx, 25, end - timedelta(microseconds=1))
    assert (d.reason, d.rule) == (Reason.EXEMPTION, exemption_rule(policy, prefix))


def test_mobile_pool_file_block_names_the_pool_file_line() -> None:
    policy = example_policy(Action.DROP)
    pool = EXAMPLE.parent / "pools" / "mobile.txt"
    for src, prefix, mx in [
        ("100.65.16.5", "100.65.16.0/20", "192.0.2.25"),
        ("2001:db8:200::1", "2001:db8:200::/40", "2001:db8:ff::25"),
    ]:
        d = decide_both(policy, src, mx, 25)
        assert (d.verdict, d.reason, d.plan) == (Verdict.DROP, Reason.BLOCKED, "mobile")
        assert d.rule == text_location(pool, prefix, str(pool))


def test_example_rule_locations_are_the_prefix_text_in_the_file() -> None:
    """The Locations used above really are where the prefixes sit in example.yaml."""
    policy = example_policy(Action.DROP)
    shown = str(EXAMPLE)
    for plan, prefix in [
        ("residential", "100.64.0.0/16"),
        ("residential", "2001:db8:100::/40"),
        ("business-static", "198.51.100.0/24"),
        ("business-static", "2001:db8:b00::/40"),
        ("business-static", "100.64.200.0/29"),
    ]:
        assert plan_rule(policy, plan, prefix) == text_location(EXAMPLE, prefix, shown)
    for mta in ("203.0.113.25", "2001:db8:25::25"):
        assert mta_rule(policy, mta) == text_location(EXAMPLE, mta, shown)
    # an exemption's rule is its entry: the mapping that starts at 'prefix:'
    loc = text_location(EXAMPLE, "prefix: 100.64.7.7/32", shown)
    assert exemption_rule(policy, "100.64.7.7/32") == loc
    guarded = text_location(EXAMPLE, "[25]", shown)
    assert policy.guarded_ports_location == guarded


def test_load_policy_from_path_agrees_with_text_load() -> None:
    by_path = load_policy(EXAMPLE, now=NOW).policy
    c1, c2 = compile_policy(by_path), compile_policy(example_policy(Action.DROP))
    for src, dst in [("100.64.0.66", "192.0.2.25"), ("2001:db8:b00::10", "2001:db8:ff::25")]:
        (v, s), (_, d) = addr(src), addr(dst)
        assert decide_addresses(c1, v, s, d, 25, NOW) == decide_addresses(c2, v, s, d, 25, NOW)


# ------------------------------------------------------------ decision order (§3)


def test_provider_mta_destination_wins_over_exempt_source() -> None:
    policy = builder_policy(Action.DROP)
    for src, mta in [("198.51.100.10", "203.0.113.25"), ("2001:db8:b00::10", "2001:db8:25::25")]:
        d = decide_both(policy, src, mta, 25)
        assert (d.reason, d.plan, d.rule) == (Reason.PROVIDER_MTA, None, mta_rule(policy, mta))


def test_provider_mta_destination_wins_over_active_exemption_and_non_subscriber() -> None:
    policy = builder_policy(Action.DROP)
    assert decide_both(policy, "100.64.7.7", "203.0.113.25", 25).reason is Reason.PROVIDER_MTA
    assert decide_both(policy, "192.0.2.99", "203.0.113.25", 25).reason is Reason.PROVIDER_MTA


def test_unguarded_port_wins_over_everything() -> None:
    policy = builder_policy(Action.DROP)
    for src, dst in [("100.64.0.66", "203.0.113.25"), ("100.64.0.66", "192.0.2.25")]:
        for port in (24, 26, 443, 587, 465, 2525, 65535):
            assert decide_both(policy, src, dst, port).reason is Reason.NOT_GUARDED


def test_every_guarded_port_is_guarded() -> None:
    policy = make_policy(guarded_ports=(25, 2525), action=Action.REJECT)
    for port in (25, 2525):
        assert decide_both(policy, "100.64.0.66", "192.0.2.25", port).reason is Reason.BLOCKED
    assert decide_both(policy, "100.64.0.66", "192.0.2.25", 26).reason is Reason.NOT_GUARDED


def test_exempt_plan_wins_over_exemption() -> None:
    policy = make_policy(
        plans={"biz": (True, ["198.51.100.0/24"]), "res": (False, ["100.64.0.0/16"])},
        exemptions=[("198.51.100.7/32", date(2099, 1, 1))],
    )
    d = decide_both(policy, "198.51.100.7", "192.0.2.25", 25)
    assert (d.reason, d.plan, d.rule) == (
        Reason.EXEMPT_PLAN,
        "biz",
        plan_rule(policy, "biz", "198.51.100.0/24"),
    )


def test_exemption_outside_every_plan_is_not_subscriber() -> None:
    policy = make_policy(
        plans={"res": (False, ["100.64.0.0/16"])}, exemptions=[("192.0.2.7/32", date(2099, 1, 1))]
    )
    d = decide_both(policy, "192.0.2.7", "192.0.2.25", 25)
    assert d == Decision(Verdict.ACCEPT, Reason.NOT_SUBSCRIBER, None, None)


def test_longest_prefix_across_plans_decides_both_ways() -> None:
    # a guarded /24 inside an exempt /16, and an exempt /29 inside a guarded /16
    policy = make_policy(
        plans={
            "biz": (True, ["10.0.0.0/16", "100.64.9.0/29", "2001:db8::/32"]),
            "res": (False, ["10.0.5.0/24", "100.64.0.0/16", "2001:db8:5::/48"]),
        }
    )
    expect = [
        ("10.0.5.1", "res", "10.0.5.0/24"),
        ("10.0.6.1", "biz", "10.0.0.0/16"),
        ("100.64.9.7", "biz", "100.64.9.0/29"),
        ("100.64.9.8", "res", "100.64.0.0/16"),
        ("2001:db8:5::1", "res", "2001:db8:5::/48"),
        ("2001:db8:6::1", "biz", "2001:db8::/32"),
    ]
    for src, plan, prefix in expect:
        dst = "2001:db8:ff::25" if ":" in src else "192.0.2.25"
        d = decide_both(policy, src, dst, 25)
        assert (d.plan, d.rule) == (plan, plan_rule(policy, plan, prefix)), src
        assert d.reason is (Reason.EXEMPT_PLAN if plan == "biz" else Reason.BLOCKED)


def test_most_specific_active_exemption_names_the_rule() -> None:
    policy = make_policy(
        exemptions=[
            ("100.64.7.0/24", date(2099, 1, 1)),  # active, wider
            ("100.64.7.7/32", date(2020, 1, 1)),  # expired, more specific
            ("100.64.7.8/32", date(2099, 1, 1)),  # active, most specific
        ]
    )
    d7 = decide_both(policy, "100.64.7.7", "192.0.2.25", 25)
    assert (d7.reason, d7.rule) == (Reason.EXEMPTION, exemption_rule(policy, "100.64.7.0/24"))
    d8 = decide_both(policy, "100.64.7.8", "192.0.2.25", 25)
    assert (d8.reason, d8.rule) == (Reason.EXEMPTION, exemption_rule(policy, "100.64.7.8/32"))


def test_families_do_not_leak() -> None:
    # the integer of an IPv4 MTA/prefix, asked as IPv6 (and back), matches nothing
    policy = builder_policy(Action.DROP)
    compiled = compile_policy(policy)
    _, res4 = addr("100.64.0.66")
    _, mta4 = addr("203.0.113.25")
    _, mta6 = addr("2001:db8:25::25")
    d = decide_addresses(compiled, 6, res4, mta4, 25, NOW)
    assert d == Decision(Verdict.ACCEPT, Reason.NOT_SUBSCRIBER, None, None)
    _, res6 = addr("2001:db8:100::66")
    d = decide_addresses(compiled, 4, res6 >> 96, mta6 & 0xFFFFFFFF, 25, NOW)
    assert d.reason is Reason.NOT_SUBSCRIBER


# ----------------------------------------------------------- property: reference


def reference(
    policy: Policy, version: int, src: int, dst: int, port: int, now: datetime
) -> tuple[str, str, str | None, Location | None]:
    """The decision order written out naively: linear scans and brute-force longest match."""
    if port not in policy.guarded_ports:
        return ("accept", "not_guarded", None, policy.guarded_ports_location)
    for mta in policy.provider_mtas:
        for (v, a), loc in zip(mta.addresses, mta.locations, strict=True):
            if (v, a) == (version, dst):
                return ("accept", "provider_mta", None, loc)

    def covers(p: Prefix, a: int) -> bool:
        shift = (32 if p.version == 4 else 128) - p.length
        return p.version == version and a >> shift == p.network >> shift

    best: tuple[int, str, bool, Location] | None = None
    for plan in policy.plans:
        for i, p in enumerate(plan.prefixes.prefixes):
            if covers(p, src) and (best is None or p.length > best[0]):
                best = (p.length, plan.name, plan.exempt, plan.prefixes.location(i))
    if best is None:
        return ("accept", "not_subscriber", None, None)
    _, name, exempt, loc = best
    if exempt:
        return ("accept", "exempt_plan", name, loc)
    covering = [(e.prefix.length, i, e) for i, e in enumerate(policy.exemptions)]
    covering = [t for t in covering if covers(t[2].prefix, src)]
    # most specific first, then policy order
    for _, _, e in sorted(covering, key=lambda t: (-t[0], t[1])):
        if now < e.expires:
            return ("accept", "exemption", name, e.location)
    return (policy.action.value, "blocked", name, loc)


SEEDS4 = [0x0A000000, 0x0A0A0A00, 0x64400000, 0xC0000200]
SEEDS6 = [0x20010DB8 << 96, (0x20010DB8 << 96) | (0x100 << 80), (0x20010DB8 << 96) | 0xFF]


def near_address(version: int) -> st.SearchStrategy[int]:
    """Addresses close to a seed, so prefixes, MTAs and probes collide often."""
    width = 32 if version == 4 else 128
    flips = [0, 0, 1 << (width - 9), 1 << (64 if version == 6 else 24)]

    def build(t: tuple[int, int, int, int]) -> int:
        seed, low, low_bits, flip = t
        return (seed ^ flip ^ (low & ((1 << low_bits) - 1))) & ((1 << width) - 1)

    return st.tuples(
        st.sampled_from(SEEDS4 if version == 4 else SEEDS6),
        st.integers(min_value=0, max_value=(1 << 20) - 1),
        st.sampled_from([0, 3, 8, 20]),
        st.sampled_from(flips),
    ).map(build)


def _prefix(t: tuple[int, int, int]) -> str:
    version, a, length_quarter = t
    width = 32 if version == 4 else 128
    length = width // 4 + length_quarter * (width - width // 4) // 12
    return prefix_text(Prefix(version, a & ~((1 << (width - length)) - 1), length))


# Prefix lengths from width/4 to width in 13 steps (a /32 and a /128 included).
PREFIXES = st.one_of(
    st.tuples(st.just(4), near_address(4), st.integers(0, 12)),
    st.tuples(st.just(6), near_address(6), st.integers(0, 12)),
).map(_prefix)


@st.composite
def policy_strategy(draw: st.DrawFn) -> Policy:
    used: set[str] = set()
    plans: dict[str, tuple[bool, list[str]]] = {}
    for k in range(draw(st.integers(min_value=1, max_value=3))):
        items = []
        for p in draw(st.lists(PREFIXES, min_size=1, max_size=4)):
            if p not in used:  # the loader refuses the same prefix twice
                used.add(p)
                items.append(p)
        if items:
            plans[f"plan{k}"] = (draw(st.booleans()), items)
    if not plans:
        plans["plan0"] = (False, ["10.0.0.0/8"])
    mta_addresses = st.one_of(
        near_address(4).map(lambda a: format_address(4, a)),
        near_address(6).map(lambda a: format_address(6, a)),
    )
    mtas = {
        f"mta{k}": draw(st.lists(mta_addresses, min_size=1, max_size=2))
        for k in range(draw(st.integers(min_value=0, max_value=2)))
    }
    exemptions = [
        (draw(PREFIXES), NOW + timedelta(hours=draw(st.integers(-72, 72))))
        for _ in range(draw(st.integers(min_value=0, max_value=4)))
    ]
    return make_policy(
        plans=plans,
        mtas=mtas,
        exemptions=exemptions,
        action=draw(st.sampled_from(ACTIONS)),
        guarded_ports=draw(st.sets(st.sampled_from([25, 2525]), min_size=1)),
    )


def random_address(rng: random.Random, version: int) -> int:
    """Like ``near_address``, for the probes drawn in bulk below."""
    width = 32 if version == 4 else 128
    seed = rng.choice(SEEDS4 if version == 4 else SEEDS6)
    flip = rng.choice([0, 0, 1 << (width - 9), 1 << (64 if version == 6 else 24)])
    return seed ^ flip ^ rng.getrandbits(rng.choice([0, 3, 8, 20]))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policy_strategy(), seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_decide_agrees_with_reference(policy: Policy, seed: int) -> None:
    # The policy comes from hypothesis (and shrinks); the many probes per policy come
    # from a seeded RNG, because hypothesis draws cost ~1 ms each here.
    rng = random.Random(seed)
    compiled = compile_policy(policy)
    for _ in range(60):
        version = rng.choice([4, 6])
        width = 32 if version == 4 else 128
        # sources: half the time inside an exemption or plan prefix of this family
        inside = [e.prefix for e in policy.exemptions if e.prefix.version == version]
        inside += [p for plan in policy.plans for p in plan.prefixes if p.version == version]
        if inside and rng.random() < 0.5:
            p = rng.choice(inside)
            src = p.network | rng.getrandbits(width - p.length)
        else:
            src = random_address(rng, version)
        # destinations: often exactly a provider MTA address of this family
        mta_addrs = [a for m in policy.provider_mtas for (v, a) in m.addresses if v == version]
        if mta_addrs and rng.random() < 0.4:
            dst = rng.choice(mta_addrs)
        else:
            dst = random_address(rng, version)
        port = rng.choice([25, 25, 2525, 587])
        now = NOW + timedelta(hours=rng.randint(-80, 80))
        d = decide_addresses(compiled, version, src, dst, port, now)
        event(d.reason.value)
        probe = (version, format_address(version, src), format_address(version, dst), port, now)
        assert (d.verdict.value, d.reason.value, d.plan, d.rule) == reference(
            policy, version, src, dst, port, now
        ), probe
