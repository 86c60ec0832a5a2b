"""Tests for op25b.policy.diff: the diff is exact.

The property test draws two small random policies (overlapping plans, exemptions
active or expired, provider MTAs, different guarded ports and actions) and checks,
for random addresses and for both sides of every span boundary, IPv4 and IPv6, that
"the diff lists it, with this before and after" holds exactly when ``decide()``
answers differently under the two files. Larger generated policies exercise the
walk's skipping of identical stretches.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from builders import make_compiled, make_policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from op25b.policy.addr import format_address, prefix_text, range_prefixes, size_text
from op25b.policy.compiled import CompiledPolicy, compile_policy
from op25b.policy.decide import Reason, Verdict, decide_addresses
from op25b.policy.diff import Outcome, PolicyDiff, Side, diff_policies
from op25b.policy.difftext import as_json, render_text
from op25b.policy.model import Action, Prefix

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PAST = NOW - timedelta(days=1)
FUTURE = NOW + timedelta(days=30)
PORTS = (25, 2525, 587)

# A small corner of each family so that random prefixes nest and overlap. The v6
# corner straddles bit 64, where the interval tables switch to their second level.
V4_BASE = 0x64400000  # 100.64.0.0
V6_BASE = 0x20010DB8 << 96  # 2001:db8::
V6_SPAN_BITS = 72  # random v6 addresses vary in their low 72 bits


def v4_prefix() -> st.SearchStrategy[Prefix]:
    return st.builds(
        lambda length, host: Prefix(4, (V4_BASE | host) & ~((1 << (32 - length)) - 1), length),
        st.sampled_from([20, 22, 24, 25, 26, 28, 30, 31, 32]),
        st.integers(0, (1 << 12) - 1),
    )


def v6_prefix() -> st.SearchStrategy[Prefix]:
    return st.builds(
        lambda length, host: Prefix(6, (V6_BASE | host) & ~((1 << (128 - length)) - 1), length),
        st.sampled_from([48, 56, 60, 63, 64, 65, 72, 96, 120, 127, 128]),
        st.integers(0, (1 << V6_SPAN_BITS) - 1),
    )


def v4_addr() -> st.SearchStrategy[int]:
    return st.integers(0, (1 << 12) - 1).map(lambda h: V4_BASE | h)


def v6_addr() -> st.SearchStrategy[int]:
    return st.integers(0, (1 << V6_SPAN_BITS) - 1).map(lambda h: V6_BASE | h)


ANY_PREFIX = st.one_of(v4_prefix(), v6_prefix())


@st.composite
def policies(draw: st.DrawFn) -> CompiledPolicy:
    plans = {
        name: (draw(st.booleans()), draw(st.lists(ANY_PREFIX, min_size=1, max_size=4)))
        for name in draw(st.lists(st.sampled_from("abc"), min_size=1, max_size=3, unique=True))
    }
    mtas = draw(st.lists(st.one_of(v4_addr(), v6_addr()), max_size=2))
    exemptions = [
        (p, draw(st.sampled_from([PAST, FUTURE]))) for p in draw(st.lists(ANY_PREFIX, max_size=3))
    ]
    return make_compiled(
        plans=plans,
        mtas=[format_address(4 if a < 1 << 32 else 6, a) for a in mtas],
        exemptions=exemptions,
        action=draw(st.sampled_from(list(Action))),
        guarded_ports=draw(st.sampled_from([(25,), (25, 2525), (2525,)])),
    )


def assert_exact(diff: PolicyDiff, old: CompiledPolicy, new: CompiledPolicy, probe: tuple) -> None:
    """The diff's claim about one attempt agrees with decide() under both files."""
    version, src, dst, port = probe
    d_old = decide_addresses(old, version, src, dst, port, NOW)
    d_new = decide_addresses(new, version, src, dst, port, NOW)
    hit = diff.lookup(version, src, dst, port)
    if Outcome.of(d_old) == Outcome.of(d_new):
        assert hit is None, (probe, d_old, hit)
        return
    assert hit is not None, (probe, d_old, d_new)
    change, span = hit
    assert span.before == Side(Outcome.of(d_old), d_old.rule), probe
    assert span.after == Side(Outcome.of(d_new), d_new.rule), probe
    assert change.before in (None, span.before.outcome)
    assert change.after in (None, span.after.outcome)


def probes_for(
    diff: PolicyDiff, old: CompiledPolicy, new: CompiledPolicy, version: int, extra: list[int]
) -> list[tuple[int, int, int, int]]:
    """Random sources plus both sides of every span edge, to every destination class."""
    top = (1 << (32 if version == 4 else 128)) - 1
    srcs = set(extra)
    for change in diff.changes:
        for s in change.spans:
            if s.version == version:
                srcs.update(a for a in (s.first - 1, s.first, s.last, s.last + 1) if 0 <= a <= top)
    mtas = {
        a
        for p in (old, new)
        for m in p.policy.provider_mtas
        for v, a in m.addresses
        if v == version
    }
    dsts = [*sorted(mtas), V4_BASE + 4095 if version == 4 else V6_BASE + 12345]
    return [(version, s, d, port) for s in sorted(srcs) for d in dsts for port in PORTS]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policies(),
    policies(),
    st.lists(v4_addr(), min_size=1, max_size=8),
    st.lists(v6_addr(), min_size=1, max_size=8),
)
def test_diff_equals_decide_on_both_files(
    old: CompiledPolicy, new: CompiledPolicy, v4: list[int], v6: list[int]
) -> None:
    diff = diff_policies(old, new, NOW)
    for version, extra in ((4, v4), (6, v6)):
        for probe in probes_for(diff, old, new, version, extra):
            assert_exact(diff, old, new, probe)
    assert diff.changed == bool(diff.changes)


@settings(max_examples=100, deadline=None)
@given(policies())
def test_a_policy_against_itself_changes_nothing(policy: CompiledPolicy) -> None:
    assert diff_policies(policy, policy, NOW).changes == ()
    # ... also when it is compiled again (fresh objects, equal content)
    assert diff_policies(policy, compile_policy(policy.policy), NOW).changes == ()


# -------------------------------------------------------- big, mostly identical files


def pool(n: int, moved: int | None = None) -> dict[str, tuple[bool, list[str]]]:
    """``n`` /28s in a residential plan; with ``moved``, that one is in an exempt plan."""
    nets = [f"100.{64 + i // 4096}.{i // 16 % 256}.{i % 16 * 16}/28" for i in range(n)]
    plans = {"residential": (False, [p for i, p in enumerate(nets) if i != moved])}
    if moved is not None:
        plans["business"] = (True, [nets[moved]])
    return plans


def test_one_moved_prefix_among_thousands_is_the_only_change() -> None:
    old = make_compiled(plans=pool(5000))
    new = make_compiled(plans=pool(5000, moved=3210))
    diff = diff_policies(old, new, NOW)
    assert len(diff.changes) == 1
    (change,) = diff.changes
    (span,) = change.spans
    assert [prefix_text(p) for p in span.blocks()] == ["100.64.200.160/28"]
    assert change.before == Outcome(Verdict.DROP, Reason.BLOCKED, "residential")
    assert change.after == Outcome(Verdict.ACCEPT, Reason.EXEMPT_PLAN, "business")
    assert (change.ports, [d.address for d in change.destinations]) == ((25,), [None])
    for probe in probes_for(diff, old, new, 4, [span.first + 5, span.first + 17]):
        assert_exact(diff, old, new, probe)


def test_an_action_change_lists_every_blocked_source() -> None:
    # Every run differs: the walk's skip must give up cleanly, not lose runs.
    old = make_compiled(plans=pool(3000), action=Action.DROP)
    new = make_compiled(plans=pool(3000), action=Action.REJECT)
    diff = diff_policies(old, new, NOW)
    assert [c.version for c in diff.changes] == [4]
    (change,) = diff.changes
    assert change.size == 3000 * 16
    assert change.after == Outcome(Verdict.REJECT, Reason.BLOCKED, "residential")
    for probe in probes_for(diff, old, new, 4, []):
        assert_exact(diff, old, new, probe)
    text = render_text(diff)
    assert "1. 48,000 addresses -> any external MX, port 25\n" in text
    assert "... and 2,990 more ranges (47,840 addresses); --json lists all" in text
    assert len(as_json(diff)["changes"][0]["sources"]) == 3000


# ----------------------------------------------------------------- small pieces


def test_range_prefixes_are_minimal_and_exact() -> None:
    def texts(version: int, first: str, last: str) -> list[str]:
        from op25b.policy.addr import parse_address

        return [
            prefix_text(p)
            for p in range_prefixes(version, parse_address(first)[1], parse_address(last)[1])
        ]

    assert texts(4, "100.64.0.0", "100.64.255.255") == ["100.64.0.0/16"]
    assert texts(4, "0.0.0.0", "255.255.255.255") == ["0.0.0.0/0"]
    assert texts(4, "100.64.0.1", "100.64.0.6") == [
        "100.64.0.1/32",
        "100.64.0.2/31",
        "100.64.0.4/31",
        "100.64.0.6/32",
    ]
    assert texts(6, "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") == ["::/0"]
    # 2**64 - 1 addresses from an aligned start: one block per bit, /65 down to /128
    blocks = texts(6, "2001:db8::", "2001:db8::ffff:ffff:ffff:fffe")
    assert len(blocks) == 64
    assert (blocks[0], blocks[-1]) == ("2001:db8::/65", "2001:db8::ffff:ffff:ffff:fffe/128")


def test_size_text_counts_v6_in_slash64s() -> None:
    assert size_text(4, 1) == "1 address"
    assert size_text(4, 128) == "128 addresses"
    assert size_text(6, 1 << 64) == "1 /64"
    assert size_text(6, 256 << 64) == "256 /64s"
    assert size_text(6, (2 << 64) + 1) == "2 /64s + 1 address"
    assert size_text(6, 5) == "5 addresses"


def test_expiring_exemptions_of_new_within_the_horizon() -> None:
    soon, later = NOW + timedelta(days=3), NOW + timedelta(days=9)
    new = make_policy(
        exemptions=[("100.64.7.7/32", later), ("100.64.7.8/32", soon), ("100.64.7.9/32", PAST)]
    )
    old = compile_policy(new)
    diff = diff_policies(old, old, NOW)
    assert [prefix_text(e.prefix) for e in diff.expiring] == ["100.64.7.8/32"]
    wide = diff_policies(old, old, NOW, horizon=timedelta(days=10))
    assert [prefix_text(e.prefix) for e in wide.expiring] == ["100.64.7.8/32", "100.64.7.7/32"]
    assert not wide.changed
