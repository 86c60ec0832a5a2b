"""Tests for op25b.policy.compiled: LPM tables against a brute-force reference, and the
CompiledPolicy lookups (plans, exemptions, provider MTAs) the decision core uses."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from builders import FAR_FUTURE, addr, make_compiled, make_plan, make_policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from op25b.policy.addr import parse_prefix
from op25b.policy.compiled import compile_policy
from op25b.policy.lpm import NO_MATCH, PrefixTable

# --------------------------------------------------------------------------- reference


def brute_lpm(width: int, prefixes: list[tuple[int, int]], a: int) -> int:
    """Index of the longest prefix containing ``a``; the first of identical ones wins."""
    best, best_len = NO_MATCH, -1
    for i, (net, length) in enumerate(prefixes):
        shift = width - length
        if (a >> shift) == (net >> shift) and length > best_len:
            best, best_len = i, length
    return best


def brute_parent(width: int, prefixes: list[tuple[int, int]], i: int) -> int:
    """Nearest enclosing prefix of i (an identical earlier one counts as enclosing)."""
    net_i, len_i = prefixes[i]
    best, best_len = NO_MATCH, -1
    for j, (net, length) in enumerate(prefixes):
        if j == i or length > len_i or (length == len_i and j > i):
            continue
        shift = width - length
        if (net_i >> shift) == (net >> shift) and length > best_len:
            best, best_len = j, length
    if best >= 0 and prefixes[best] == prefixes[i]:
        # parent of a duplicate is the first identical one
        return next(j for j in range(i) if prefixes[j] == prefixes[i])
    return best


def boundary_probes(width: int, prefixes: list[tuple[int, int]]) -> set[int]:
    """First/last address of every prefix and the addresses just outside."""
    top = (1 << width) - 1
    probes = {0, top}
    for net, length in prefixes:
        last = net | ((1 << (width - length)) - 1)
        probes.update(x for x in (net - 1, net, net + 1, last - 1, last, last + 1) if 0 <= x <= top)
    return probes


# --------------------------------------------------------------------------- strategies


def prefix_lists(width: int, seeds: list[int]) -> st.SearchStrategy[list[tuple[int, int]]]:
    """Prefixes derived from few seed addresses so that nesting is the common case."""

    def mask(pair: tuple[int, int]) -> tuple[int, int]:
        a, length = pair
        return (a >> (width - length)) << (width - length), length

    interesting = [0, 1, 8, width // 2, width - 8, width - 1, width]
    if width == 128:
        interesting += [63, 64, 65, 56, 48]
    lengths = st.one_of(st.sampled_from(interesting), st.integers(0, width))
    addrs = st.one_of(st.sampled_from(seeds), st.integers(0, (1 << width) - 1))
    return st.lists(st.tuples(addrs, lengths).map(mask), max_size=40)


V4_SEEDS = [
    int.from_bytes(bytes(b), "big")
    for b in ([100, 64, 0, 0], [100, 64, 9, 8], [100, 64, 255, 255], [0, 0, 0, 0], [255] * 4)
]
V6_SEEDS = [
    addr(t)[1]
    for t in (
        "2001:db8:100::",
        "2001:db8:100::1",
        "2001:db8:100:0:8000::",
        "2001:db8:100:1::",
        "::",
    )
] + [(1 << 128) - 1]


def check_table(width: int, prefixes: list[tuple[int, int]], extra: list[int]) -> None:
    table = PrefixTable.build(width, prefixes)
    assert len(table) == len(prefixes)
    for a in boundary_probes(width, prefixes) | set(extra):
        assert table.lookup(a) == brute_lpm(width, prefixes, a), hex(a)
    for i in range(len(prefixes)):
        assert table.parent(i) == brute_parent(width, prefixes, i)


# --------------------------------------------------------------------------- PrefixTable


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix_lists(32, V4_SEEDS),
    st.lists(st.one_of(st.sampled_from(V4_SEEDS), st.integers(0, 2**32 - 1)), max_size=20),
)
def test_v4_matches_brute_force(prefixes: list[tuple[int, int]], probes: list[int]) -> None:
    check_table(32, prefixes, probes)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix_lists(128, V6_SEEDS),
    st.lists(st.one_of(st.sampled_from(V6_SEEDS), st.integers(0, 2**128 - 1)), max_size=20),
)
def test_v6_matches_brute_force(prefixes: list[tuple[int, int]], probes: list[int]) -> None:
    check_table(128, prefixes, probes)


@pytest.mark.parametrize(
    ("width", "texts"),
    [
        (32, ["0.0.0.0/0"]),
        (32, ["0.0.0.0/0", "255.255.255.255/32", "0.0.0.0/32"]),
        (32, ["100.64.0.0/16", "100.64.9.8/29", "100.64.9.8/32", "100.64.0.0/10"]),
        (32, ["100.64.0.0/16", "100.64.0.0/16"]),  # duplicate: first wins
        (128, ["::/0"]),
        (128, ["::/0", "::/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]),
        (128, ["2001:db8:100::/64", "2001:db8:100::/65", "2001:db8:100::8000:0:0:0/65"]),
        (128, ["2001:db8:100::/64", "2001:db8:100::7/128", "2001:db8:100::/127"]),
        (128, ["2001:db8:100::7/128", "2001:db8:100::/40"]),  # pointer without a /64
        # a lone host route ending one below the top of its /64: the top goes back to the /64
        (128, ["2001:db8:100::/64", "2001:db8:100:0:ffff:ffff:ffff:fffe/128"]),
        (128, ["2001:db8:100::7/128", "2001:db8:100::7/128", "2001:db8:100::/64"]),
        (128, ["2001:db8::/32", "2001:db8:0:1::/64", "2001:db8:0:1::1/128", "2001:db8:0:2::/64"]),
    ],
)
def test_edge_cases(width: int, texts: list[str]) -> None:
    prefixes = [(p.network, p.length) for p in map(parse_prefix, texts)]
    check_table(width, prefixes, [])


def test_empty_table_never_matches() -> None:
    assert PrefixTable.build(32, []).lookup(0) == NO_MATCH
    assert PrefixTable.build(128, []).lookup((1 << 128) - 1) == NO_MATCH


def test_business_29_carved_out_of_residential_16() -> None:
    res, biz = parse_prefix("100.64.0.0/16"), parse_prefix("100.64.9.8/29")
    table = PrefixTable.build(32, [(res.network, res.length), (biz.network, biz.length)])
    base = biz.network
    assert table.lookup(base - 1) == 0
    assert [table.lookup(base + k) for k in range(8)] == [1] * 8
    assert table.lookup(base + 8) == 0
    assert table.lookup(res.network) == 0
    assert table.lookup(res.network + 0xFFFF) == 0
    assert table.lookup(res.network + 0x10000) == NO_MATCH
    assert table.lookup(res.network - 1) == NO_MATCH
    # the two pieces either side of the /29 plus the /29 and the gaps around the /16
    assert table.intervals == 5


@pytest.mark.parametrize(
    ("width", "prefix", "message"),
    [
        (32, (1, 31), "host bits set in 0x1/31"),
        (32, (0, 33), "bad prefix 0x0/33 for width 32"),
        (32, (0, -1), "bad prefix 0x0/-1 for width 32"),
        (128, (1 << 128, 0), "bad prefix 0x100000000000000000000000000000000/0 for width 128"),
        (128, (-1, 128), "bad prefix -0x1/128 for width 128"),
        (64, (0, 0), "unsupported address width 64"),
    ],
)
def test_bad_input_is_refused_with_its_reason(
    width: int, prefix: tuple[int, int], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        PrefixTable.build(width, [prefix])
    assert str(info.value) == message


def _runs_are_minimal(starts: Sequence[int], labels: Sequence[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(starts)) and all(
        a != b for a, b in itertools.pairwise(labels)
    )


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([32, 128]).flatmap(
        lambda w: st.tuples(st.just(w), prefix_lists(w, V4_SEEDS if w == 32 else V6_SEEDS))
    )
)
def test_intervals_are_sorted_and_never_repeat_a_label(
    case: tuple[int, list[tuple[int, int]]],
) -> None:
    """The sweep's output is canonical: strictly rising starts, and two neighbouring
    intervals never carry the same label (they would be one interval, twice the work)."""
    width, prefixes = case
    t = PrefixTable.build(width, prefixes)
    assert _runs_are_minimal(t._starts, t._labels)
    bounds = t._sub_bounds
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        assert _runs_are_minimal(t._sub_starts[lo:hi], t._sub_labels[lo:hi])


def test_adjacent_prefixes_with_same_label_do_not_merge_indexes() -> None:
    # Two adjacent /25s are separate prefixes: each must report its own index.
    a, b = parse_prefix("100.64.0.0/25"), parse_prefix("100.64.0.128/25")
    table = PrefixTable.build(32, [(a.network, 25), (b.network, 25)])
    assert table.lookup(a.network + 127) == 0
    assert table.lookup(b.network) == 1


# --------------------------------------------------------------------------- CompiledPolicy


def test_plan_of_longest_prefix_across_plans_and_location() -> None:
    policy = make_policy(
        plans={
            "residential": (False, ["100.64.0.0/16", "2001:db8:100::/40"]),
            "business-static": (True, ["100.64.9.8/29", "2001:db8:100:b00::/56"]),
            "mobile": (False, ["100.64.9.12/30"]),
        }
    )
    compiled = compile_policy(policy)
    res, biz, mobile = policy.plans

    def hit(text: str) -> tuple[str, int] | None:
        h = compiled.plan_of(*addr(text))
        return None if h is None else (h.plan.name, h.location.line)

    assert hit("100.64.0.1") == ("residential", res.prefixes.location(0).line)
    assert hit("100.64.9.8") == ("business-static", biz.prefixes.location(0).line)
    assert hit("100.64.9.11") == ("business-static", biz.prefixes.location(0).line)
    assert hit("100.64.9.12") == ("mobile", mobile.prefixes.location(0).line)
    assert hit("100.64.9.16") == ("residential", res.prefixes.location(0).line)
    assert hit("100.65.0.0") is None
    assert hit("2001:db8:100:b00::1") == ("business-static", biz.prefixes.location(1).line)
    assert hit("2001:db8:100:c00::1") == ("residential", res.prefixes.location(1).line)
    assert hit("2001:db9::1") is None
    # v4 and v6 do not leak into each other: ::100.64.0.1 is not 100.64.0.1
    assert compiled.plan_of(6, addr("100.64.0.1")[1]) is None
    assert compiled.plan_index(*addr("100.64.9.13")) == 2
    assert compiled.plan_index(*addr("100.65.0.0")) == -1


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(prefix_lists(32, V4_SEEDS), min_size=1, max_size=4),
    st.lists(prefix_lists(128, V6_SEEDS), min_size=1, max_size=4),
)
def test_plan_of_matches_brute_force(
    v4: list[list[tuple[int, int]]], v6: list[list[tuple[int, int]]]
) -> None:
    from op25b.policy.model import Prefix

    plans = {}
    for k in range(max(len(v4), len(v6))):
        mixed = [Prefix(4, n, ln) for n, ln in (v4[k] if k < len(v4) else [])]
        # interleave v6 so a plan's PrefixList mixes versions like a real one
        for j, (n, ln) in enumerate(v6[k] if k < len(v6) else []):
            mixed.insert(min(2 * j + 1, len(mixed)), Prefix(6, n, ln))
        plans[f"p{k}"] = (k % 2 == 1, mixed)
    policy = make_policy(plans=plans)
    compiled = compile_policy(policy)
    for version, width, seeds in ((4, 32, V4_SEEDS), (6, 128, V6_SEEDS)):
        flat = [
            (plan, i, p)
            for plan in policy.plans
            for i, p in enumerate(plan.prefixes)
            if p.version == version
        ]
        pairs = [(p.network, p.length) for _, _, p in flat]
        for a in boundary_probes(width, pairs) | set(seeds):
            want = brute_lpm(width, pairs, a)
            got = compiled.plan_of(version, a)
            if want == NO_MATCH:
                assert got is None
            else:
                plan, i, _ = flat[want]
                assert got is not None
                assert got.plan is plan
                assert got.location == plan.prefixes.location(i)


def test_provider_mta_exact_match_per_version() -> None:
    compiled = make_compiled(mtas={"smarthost": ["203.0.113.25", "2001:db8:25::25"]})
    (mta,) = compiled.policy.provider_mtas
    assert compiled.provider_mta(*addr("203.0.113.25")) == mta.locations[0]
    assert compiled.provider_mta(*addr("2001:db8:25::25")) == mta.locations[1]
    assert compiled.provider_mta(*addr("203.0.113.26")) is None
    assert compiled.provider_mta(*addr("203.0.113.24")) is None
    # same integer, other version
    assert compiled.provider_mta(6, addr("203.0.113.25")[1]) is None


def test_provider_mta_listed_twice_reports_first() -> None:
    compiled = make_compiled(mtas={"a": ["203.0.113.25"], "b": ["203.0.113.25"]})
    a, _ = compiled.policy.provider_mtas
    assert compiled.provider_mta(*addr("203.0.113.25")) == a.locations[0]


def test_exemptions_most_specific_first() -> None:
    exp = datetime(2027, 1, 31, tzinfo=UTC)
    compiled = make_compiled(
        exemptions=[
            ("100.64.0.0/16", exp, "T-16"),
            ("100.64.7.7/32", exp, "T-32a"),
            ("100.64.7.0/24", exp, "T-24"),
            ("100.64.7.7/32", FAR_FUTURE, "T-32b"),
            ("100.64.8.0/24", exp, "T-other"),
            ("2001:db8:100::7/128", exp, "T-128"),
            ("2001:db8:100::/64", exp, "T-64"),
            ("2001:db8::/32", exp, "T-32v6"),
        ]
    )

    def tickets(text: str) -> list[str]:
        return [e.ticket for e in compiled.exemptions_of(*addr(text))]

    assert tickets("100.64.7.7") == ["T-32a", "T-32b", "T-24", "T-16"]
    assert tickets("100.64.7.8") == ["T-24", "T-16"]
    assert tickets("100.64.8.1") == ["T-other", "T-16"]
    assert tickets("100.64.9.1") == ["T-16"]
    assert tickets("100.65.0.0") == []
    assert tickets("2001:db8:100::7") == ["T-128", "T-64", "T-32v6"]
    assert tickets("2001:db8:100::6") == ["T-64", "T-32v6"]
    assert tickets("2001:db8:200::7") == ["T-32v6"]
    assert tickets("2001:db9::") == []


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(prefix_lists(32, V4_SEEDS), st.lists(st.sampled_from(V4_SEEDS), max_size=5))
def test_exemptions_of_matches_brute_force(
    prefixes: list[tuple[int, int]], probes: list[int]
) -> None:
    from op25b.policy.model import Prefix

    policy = make_policy(
        exemptions=[(Prefix(4, n, ln), FAR_FUTURE, f"T{i}") for i, (n, ln) in enumerate(prefixes)]
    )
    compiled = compile_policy(policy)
    for a in boundary_probes(32, prefixes) | set(probes):
        covering = [
            (i, e)
            for i, e in enumerate(policy.exemptions)
            if (a >> (32 - e.prefix.length)) == (e.prefix.network >> (32 - e.prefix.length))
        ]
        # most specific first; identical prefixes in policy order
        covering.sort(key=lambda ie: (-ie[1].prefix.length, ie[0]))
        assert list(compiled.exemptions_of(4, a)) == [e for _, e in covering]


def test_compiled_exposes_policy_fields() -> None:
    policy = make_policy(guarded_ports=[25, 2525])
    compiled = compile_policy(policy)
    assert compiled.policy is policy
    assert compiled.guarded == frozenset({25, 2525})
    assert compiled.action is policy.action
    assert compiled.guarded_location == policy.guarded_ports_location
    assert compiled.action_location == policy.action_location


def test_builders_make_distinct_locations() -> None:
    policy = make_policy(exemptions=[("100.64.7.7/32", FAR_FUTURE)])
    locs = [policy.guarded_ports_location, policy.action_location]
    for plan in policy.plans:
        locs.append(plan.location)
        locs += [plan.prefixes.location(i) for i in range(len(plan.prefixes))]
    for mta in policy.provider_mtas:
        locs += [mta.location, *mta.locations]
    locs += [e.location for e in policy.exemptions]
    assert len({(loc.line) for loc in locs}) == len(locs)
    assert make_plan("x", ["100.64.0.0/16"]).prefixes.location(0).line == 1


def dict_reference(width: int, prefixes: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """First index of every distinct prefix, for a fast (per-length probe) reference."""
    first: dict[tuple[int, int], int] = {}
    for i, p in enumerate(prefixes):
        first.setdefault(p, i)
    return first


@pytest.mark.parametrize("width", [32, 128])
def test_many_clustered_prefixes_against_per_length_reference(width: int) -> None:
    # Thousands of prefixes make the bucket index non-trivial (many buckets, empty and
    # crowded ones); the quadratic brute force would be too slow here.
    rng = random.Random(width)
    lengths = [8, 16, 20, 24, 24, 28, 30, 32] if width == 32 else [32, 48, 56, 56, 64, 96, 128]
    clusters = [rng.getrandbits(width) for _ in range(5)]
    prefixes = []
    for _ in range(4000):
        length = rng.choice(lengths)
        a = rng.choice(clusters) ^ rng.getrandbits(width - 8)
        prefixes.append(((a >> (width - length)) << (width - length), length))
    table = PrefixTable.build(width, prefixes)
    first = dict_reference(width, prefixes)
    by_len = sorted({ln for _, ln in prefixes}, reverse=True)

    def reference(a: int) -> int:
        for ln in by_len:
            hit = first.get(((a >> (width - ln)) << (width - ln), ln))
            if hit is not None:
                return hit
        return NO_MATCH

    probes = boundary_probes(width, prefixes)
    probes.update(rng.getrandbits(width) for _ in range(5000))
    probes.update(rng.choice(clusters) ^ rng.getrandbits(width - 8) for _ in range(5000))
    for a in probes:
        assert table.lookup(a) == reference(a), hex(a)


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ("100.64.0.0", 0),  # residential's first prefix: table index 0 is a match
        ("2001:db8:100::10", 0),
        ("198.51.100.10", 1),
        ("2001:db8:b00::10", 1),
        ("192.0.2.1", NO_MATCH),
        ("2001:db8:ff::1", NO_MATCH),
    ],
)
def test_plan_index_agrees_with_plan_of(text: str, index: int) -> None:
    compiled = make_compiled()  # plans: residential (0), business-static (1)
    version, a = addr(text)
    assert compiled.plan_index(version, a) == index
    hit = compiled.plan_of(version, a)
    if index == NO_MATCH:
        assert hit is None
    else:
        assert hit is not None and hit.plan is compiled.policy.plans[index]
