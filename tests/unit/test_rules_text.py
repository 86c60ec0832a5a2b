"""Pure tests for ``op25b.kernel.rules`` and ``op25b.kernel.ipsets``: generated restore texts
and set contents, no root and no kernel.

The central property: the kernel sets answer exactly as ``decide()`` does. A small
model of ipset semantics (hash:ip = membership; hash:net = the most specific entry
wins, a ``nomatch`` entry is a non-match) reads the *rendered* ``ipset restore`` text,
and "mta(dst) or allow(src) or not subs(src)" must equal decide()'s accept for every
address of random nested policies.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from builders import make_policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from op25b.kernel.cachesets import BlockEntry, parse_block_save
from op25b.kernel.ipsets import render_load, render_swap
from op25b.kernel.names import (
    ACCEPT_MARK,
    MARK_MASK,
    REJECT_MARK,
    TMP_SUFFIX,
    TRUSTED_CONNMARK,
    set_name,
    verdict_mark,
)
from op25b.kernel.ruletext import (
    RAW_MTA_ADDRESSES,
    RuleConfig,
    render_removal,
    render_rules,
)
from op25b.kernel.setcontents import compute_sets, next_change
from op25b.policy.addr import parse_address, parse_prefix, prefix_text
from op25b.policy.compiled import compile_policy
from op25b.policy.decide import Verdict, decide_addresses
from op25b.policy.model import Action, DaemonConfig, DownMode

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PAST = NOW - timedelta(days=1)
FUTURE = NOW + timedelta(days=1)

# --------------------------------------------------------------------------- ipset model


class SetModel:
    """What the kernel would hold after ``ipset restore`` of ``render_load`` text."""

    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.entries: dict[str, list[tuple[ipaddress._BaseNetwork, bool]]] = {}
        for line in text.splitlines():
            words = line.split()
            name = words[1].removesuffix(TMP_SUFFIX)
            if words[0] == "create":
                self.types[name] = words[2]
                self.entries[name] = []
            elif words[0] == "add":
                net = ipaddress.ip_network(words[2])
                assert net.prefixlen > 0, "hash:net cannot hold a /0"
                self.entries[name].append((net, "nomatch" in words[3:]))

    def test(self, name: str, address: str) -> bool:
        """``ipset test``: most specific covering entry decides; nomatch = no match."""
        a = ipaddress.ip_address(address)
        hits = [(n.prefixlen, nm) for n, nm in self.entries[name] if a in n]
        if not hits:
            return False
        _, nomatch = max(hits)
        return not nomatch


def kernel_accepts(model: SetModel, src: str, dst: str) -> bool:
    v = ipaddress.ip_address(src).version
    return (
        model.test(set_name("mta", v), dst)
        or model.test(set_name("allow", v), src)
        or not model.test(set_name("subs", v), src)
    )


def decide_accepts(policy_compiled: object, src: str, dst: str) -> bool:
    v, s = parse_address(src)
    _, d = parse_address(dst)
    decision = decide_addresses(policy_compiled, v, s, d, 25, NOW)  # type: ignore[arg-type]
    return decision.verdict is Verdict.ACCEPT


# --------------------------------------------------------------------------- strategies

V4_BASE = int(ipaddress.ip_address("10.0.0.0"))
V6_BASE = int(ipaddress.ip_address("2001:db8::"))


def _prefixes(version: int) -> st.SearchStrategy[str]:
    width, base, low = (32, V4_BASE, 24) if version == 4 else (128, V6_BASE, 120)
    # Mostly nested prefixes inside one /24 (/120), sometimes very short ones (/0, /1)
    # that exercise the /0 split and entries enclosing everything else.
    lengths = st.one_of(st.integers(low, width), st.sampled_from([0, 1, 8, low - 8]))

    def build(length: int, host: int) -> str:
        shift = width - length
        net = ((base | host) >> shift) << shift if length else 0
        return prefix_text(parse_prefix(f"{ipaddress.ip_address(net)}/{length}"))

    return st.builds(build, lengths, st.integers(0, 255))


def _probe_addresses(version: int) -> list[str]:
    base = V4_BASE if version == 4 else V6_BASE
    inside = [str(ipaddress.ip_address(base + i)) for i in range(256)]
    if version == 4:
        return [*inside, "9.255.255.255", "10.0.1.1", "128.0.0.1", "255.255.255.255"]
    return [*inside, "2001:db8::1:0", "::1", "8000::1", "2001:db9::"]


@st.composite
def nested_policies(draw: st.DrawFn, version: int) -> tuple[object, list[str]]:
    prefixes = _prefixes(version)
    plans = {
        f"p{i}": (draw(st.booleans()), draw(st.lists(prefixes, min_size=1, max_size=4)))
        for i in range(draw(st.integers(1, 4)))
    }
    exemptions = [
        (p, draw(st.sampled_from([PAST, FUTURE]))) for p in draw(st.lists(prefixes, max_size=3))
    ]
    probes = _probe_addresses(version)
    mtas = draw(st.lists(st.sampled_from(probes), max_size=2, unique=True))
    policy = make_policy(plans=plans, mtas=mtas, exemptions=exemptions)
    return policy, mtas


@pytest.mark.parametrize("version", [4, 6])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_sets_agree_with_decide(version: int, data: st.DataObject) -> None:
    policy, mtas = data.draw(nested_policies(version))
    compiled = compile_policy(policy)  # type: ignore[arg-type]
    model = SetModel(render_load(compute_sets(policy, NOW)))  # type: ignore[arg-type]
    probes = _probe_addresses(version)
    other_dst = probes[-1]
    for src in probes:
        for dst in {other_dst, *mtas}:
            assert kernel_accepts(model, src, dst) == decide_accepts(compiled, src, dst), (
                src,
                dst,
            )


# --------------------------------------------------------------------------- set contents


def _allow(policy: object) -> dict[str, bool]:
    fam = compute_sets(policy, NOW).v4  # type: ignore[arg-type]
    return {prefix_text(p): nm for p, nm in fam.allow}


def test_allow_examples_from_the_brief() -> None:
    policy = make_policy(
        plans={
            "res": (False, ["100.64.0.0/16", "10.0.0.0/8"]),
            "biz": (True, ["100.64.9.0/29", "172.16.0.0/16"]),
            "res-in-biz": (False, ["172.16.5.0/24"]),
        },
        exemptions=[("10.0.0.0/8", FUTURE), ("100.64.7.7/32", FUTURE), ("100.64.8.8/32", PAST)],
    )
    allow = _allow(policy)
    assert allow["100.64.9.0/29"] is False  # business /29 inside residential /16: allowed
    assert allow["172.16.5.0/24"] is True  # non-exempt /24 inside exempt /16: nomatch
    assert allow["10.0.0.0/8"] is False  # exemption identical to a plan prefix wins
    assert allow["100.64.7.7/32"] is False  # active exemption
    assert "100.64.8.8/32" not in allow  # expired exemption
    # nomatch with nothing around it changes nothing and is not stored
    assert "100.64.0.0/16" not in allow


def test_exemption_overrides_more_specific_plan_prefix() -> None:
    policy = make_policy(
        plans={"res": (False, ["10.0.0.0/8", "10.1.0.0/16"]), "biz": (True, ["10.0.0.0/9"])},
        exemptions=[("10.0.0.0/15", FUTURE)],
    )
    allow = _allow(policy)
    assert "10.1.0.0/16" not in allow  # would shadow the enclosing exemption
    assert allow["10.0.0.0/9"] is False


def test_slash_zero_is_split() -> None:
    policy = make_policy(
        plans={"all": (False, ["0.0.0.0/0", "::/0"]), "biz": (True, ["128.0.0.0/1"])},
        mtas=[],
        exemptions=[("::/0", FUTURE)],
    )
    sets = compute_sets(policy, NOW)
    assert [prefix_text(p) for p in sets.v4.subs] == ["0.0.0.0/1", "128.0.0.0/1"]
    assert [prefix_text(p) for p in sets.v6.subs] == ["::/1", "8000::/1"]
    allow = {prefix_text(p): nm for p, nm in sets.v4.allow}
    # the /0 nomatch has nothing around it, so it is dropped rather than split
    assert allow == {"128.0.0.0/1": False}
    allow6 = {prefix_text(p): nm for p, nm in sets.v6.allow}
    assert allow6 == {"::/1": False, "8000::/1": False}  # the /0 exemption, split
    assert "/0" not in render_load(sets)


def test_mta_and_families() -> None:
    sets = compute_sets(make_policy(), NOW)
    assert sets.v4.mta == (parse_address("203.0.113.25")[1],)
    assert sets.v6.mta == (parse_address("2001:db8:25::25")[1],)
    assert {prefix_text(p) for p in sets.v6.subs} == {"2001:db8:100::/40", "2001:db8:b00::/40"}
    assert sets.block_timeout == 0


def test_next_change_is_next_expiry() -> None:
    policy = make_policy(
        exemptions=[("100.64.1.1/32", PAST), ("100.64.1.2/32", FUTURE), ("100.64.1.3/32", NOW)]
    )
    assert next_change(policy, NOW) == FUTURE
    assert next_change(make_policy(), NOW) is None


# --------------------------------------------------------------------------- ipset text


def test_render_load_sizes_and_only_tmp_sets() -> None:
    prefixes = [f"{100 + i // 65536}.{i // 256 % 256}.{i % 256}.0/24" for i in range(70000)]
    sets = compute_sets(make_policy(plans={"big": (False, prefixes)}), NOW)
    text = render_load(sets)
    creates = [ln for ln in text.splitlines() if ln.startswith("create")]
    assert all(ln.split()[1].endswith(TMP_SUFFIX) for ln in creates)
    subs4 = next(ln for ln in creates if ln.split()[1] == "op25b-subs4-tmp")
    assert "hashsize 65536 maxelem 131072" in subs4
    assert sum(ln.startswith("add op25b-subs4-tmp ") for ln in text.splitlines()) == 70000


def test_render_swap_creates_missing_and_leaves_block_cache_to_the_daemon() -> None:
    sets = compute_sets(make_policy(daemon=DaemonConfig(block_cache_timeout=300)), NOW)
    fresh = render_swap(sets, existing=[])
    assert "create op25b-mta4 hash:ip family inet " in fresh
    assert "swap op25b-allow6-tmp op25b-allow6\ndestroy op25b-allow6-tmp\n" in fresh
    assert (
        "create op25b-block4 hash:ip family inet hashsize 1024 maxelem 1048576 "
        "timeout 300 counters\n" in fresh
    )
    again = render_swap(sets, existing=["op25b-mta4", "op25b-block4", "op25b-block6"])
    assert "create op25b-mta4 " not in again
    # The daemon rotates the cache itself after a reload (reading its counters first).
    assert "op25b-block" not in again


def test_parse_block_save() -> None:
    text = (
        "create op25b-block4 hash:ip family inet hashsize 1024 maxelem 65536 timeout 60 counters\n"
        "add op25b-block4 100.64.0.66 timeout 57 packets 3 bytes 180\n"
    )
    assert parse_block_save(text) == [BlockEntry("100.64.0.66", 57, 3, 180)]


# --------------------------------------------------------------------------- rules text


def _chain(text: str, table: str) -> list[str]:
    block = text.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0]
    return [ln.removeprefix("-A OP25B ") for ln in block.splitlines() if ln.startswith("-A OP25B")]


def test_marks_are_in_the_mask() -> None:
    assert ACCEPT_MARK & ~MARK_MASK == 0 and REJECT_MARK & ~MARK_MASK == 0
    assert ACCEPT_MARK != REJECT_MARK and ACCEPT_MARK and REJECT_MARK
    assert verdict_mark(0x1234, ACCEPT_MARK) == 0x00A01234
    assert verdict_mark(0xFFFFFFFF, REJECT_MARK) == 0xFFBFFFFF


def test_default_rules_v4() -> None:
    text = render_rules(RuleConfig(guarded_ports=(25,)), 4)
    assert text.index("*filter") < text.index("*mangle")  # enforcing half committed first
    trusted = (
        "-m connmark --mark 0xc00000/0xf00000 "
        "-m conntrack --ctstate ESTABLISHED --ctdir ORIGINAL -j RETURN"
    )
    assert _chain(text, "mangle") == [
        trusted,
        "-m mark --mark 0xa00000/0xf00000 -j RETURN",
        "-m mark --mark 0xb00000/0xf00000 -j RETURN",
        "-j NFQUEUE --queue-num 0 --queue-bypass",
    ]
    assert _chain(text, "filter") == [
        trusted,
        # an accept mark the kernel's sets would not give was forged on the way: drop
        "-p tcp -m mark --mark 0xa00000/0xf00000 -m set ! --match-set op25b-mta4 dst "
        "-m set ! --match-set op25b-allow4 src -j DROP",
        "-m mark --mark 0xa00000/0xf00000 -m conntrack --ctdir ORIGINAL "
        "-j CONNMARK --set-xmark 0xc00000/0xf00000",
        "-m mark --mark 0xa00000/0xf00000 -j RETURN",
        "-p tcp -m mark --mark 0xb00000/0xf00000 -j REJECT --reject-with tcp-reset",
        "-m mark --mark 0xb00000/0xf00000 -j DROP",  # a reject verdict on TCP inside AH
        "-m set --match-set op25b-mta4 dst -j RETURN",
        "-m set --match-set op25b-allow4 src -j RETURN",
        "-m set --match-set op25b-subs4 src -j DROP",
        "-j RETURN",
    ]
    jump = (
        "-I FORWARD 1 -p tcp -m multiport --dports 25 -m set --match-set op25b-subs4 src "
        "-m comment --comment op25b -j OP25B"
    )
    assert text.count(jump) == 2  # once per table, subscriber sources only
    # TCP behind AH is invisible to "-p tcp": subscribers' AH is asked about too.
    ah = "-I FORWARD 1 -p ah -m set --match-set op25b-subs4 src -m comment --comment op25b -j OP25B"
    assert text.count(ah) == 2
    assert ":OP25B - [0:0]" in text


@pytest.mark.parametrize(
    ("down", "action", "tail"),
    [
        (DownMode.OPEN, Action.DROP, ["-j RETURN"]),
        (DownMode.CLOSED, Action.DROP, ["-j DROP"]),
        (
            DownMode.STATIC,
            Action.REJECT,
            [
                "-p tcp -m set --match-set op25b-subs6 src -j REJECT --reject-with tcp-reset",
                "-m set --match-set op25b-subs6 src -j DROP",  # not TCP: TCP inside AH
                "-j RETURN",
            ],
        ),
        (
            DownMode.STATIC,
            Action.MONITOR,
            ["-m set --match-set op25b-subs6 src -j RETURN", "-j RETURN"],
        ),
    ],
)
def test_down_modes_v6(down: DownMode, action: Action, tail: list[str]) -> None:
    text = render_rules(RuleConfig(guarded_ports=(25,), down=down, action=action), 6)
    chain = _chain(text, "filter")
    assert chain[4:][-len(tail) :] == tail
    if down is not DownMode.STATIC:
        assert len(chain) == 7  # trusted, forged-accept guard, trust, 3 verdicts, fallback


def test_many_ports_and_workers() -> None:
    ports = tuple(range(2000, 2020))  # 20 ports: two multiport jumps
    text = render_rules(RuleConfig(guarded_ports=ports, queue=4, workers=3), 4)
    filter_block = text.split("*mangle")[0]
    jumps = [ln for ln in filter_block.splitlines() if ln.startswith("-I FORWARD")]
    assert len(jumps) == 3  # two port chunks and TCP inside AH
    # inserted at 1 in reverse, so the first port chunk ends up first
    assert jumps[0].startswith("-I FORWARD 1 -p ah ")
    assert "--dports 2015,2016,2017,2018,2019 -m set --match-set op25b-subs4 src " in jumps[1]
    assert "--dports " + ",".join(map(str, range(2000, 2015))) + " " in jumps[2]
    assert all("--match-set op25b-subs4 src" in j for j in jumps)
    assert "-j NFQUEUE --queue-balance 4:6 --queue-bypass" in _chain(
        text, "mangle"
    )


def test_fast_path_and_block_cache() -> None:
    cfg = RuleConfig(guarded_ports=(25,), fast_path=True, block_cache=True, action=Action.REJECT)
    chain = _chain(render_rules(cfg, 4), "mangle")
    mark = "-j MARK --set-xmark 0xa00000/0xf00000"
    assert chain[3:] == [
        f"-m set --match-set op25b-mta4 dst {mark}",
        f"-m set --match-set op25b-allow4 src {mark}",
        "-m mark --mark 0xa00000/0xf00000 -j RETURN",
        "-m set --match-set op25b-block4 src -j MARK --set-xmark 0xb00000/0xf00000",
        "-m mark --mark 0xb00000/0xf00000 -j RETURN",
        "-j NFQUEUE --queue-num 0 --queue-bypass",
    ]
    assert "*raw" not in render_rules(cfg, 4)  # REJECT exists only in filter: no raw part
    # block cache with drop: the drop happens in raw PREROUTING, before conntrack; the
    # provider MTA stays reachable there and in mangle
    cfg = RuleConfig(guarded_ports=(25,), block_cache=True)
    text = render_rules(cfg, 6)
    assert _chain(text, "mangle")[3:] == [
        f"-m set --match-set op25b-mta6 dst {mark}",
        "-m mark --mark 0xa00000/0xf00000 -j RETURN",
        "-j NFQUEUE --queue-num 0 --queue-bypass",
    ]
    # No provider MTA in this configuration: a cached source is dropped.
    assert _chain(text, "raw") == ["-m set --match-set op25b-block6 src -j DROP"]
    raw = text.split("*raw\n", 1)[1].split("COMMIT", 1)[0]
    (jump,) = [ln for ln in raw.splitlines() if ln.startswith("-I ")]
    # Guarded ports from anyone: the chain tests (the same jump as a hand-written one).
    assert jump == (
        "-I PREROUTING 1 -p tcp -m multiport --dports 25 -m comment --comment op25b -j OP25B"
    )
    assert text.index("*raw") > text.index("*mangle")  # installed last
    assert cfg.tables == ("filter", "mangle", "raw")
    # monitor never caches a block
    cfg = RuleConfig(guarded_ports=(25,), block_cache=True, action=Action.MONITOR)
    assert "op25b-block" not in render_rules(cfg, 4)


SAVED = """# Generated by iptables-save v1.8.9 (nf_tables) on Mon Jan  1 00:00:00 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:OP25B - [0:0]
:OTHER - [0:0]
-A FORWARD -p tcp -m multiport --dports 25 -m comment --comment op25b -j OP25B
-A FORWARD -j OTHER
-A FORWARD -p tcp -m comment --comment "not OP25B" -j ACCEPT
-A OP25B -j RETURN
COMMIT
*mangle
:FORWARD ACCEPT [0:0]
:OP25B - [0:0]
-A FORWARD -p tcp -m multiport --dports 25,26 -j OP25B
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -j MASQUERADE
COMMIT
"""


def test_removal_deletes_exactly_ours_mangle_first() -> None:
    assert render_removal(SAVED) == (
        "*mangle\n-D FORWARD -p tcp -m multiport --dports 25,26 -j OP25B\n"
        "-F OP25B\n-X OP25B\nCOMMIT\n"
        "*filter\n-D FORWARD -p tcp -m multiport --dports 25 -m comment --comment op25b -j OP25B\n"
        "-F OP25B\n-X OP25B\nCOMMIT\n"
    )
    assert render_removal("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j OTHER\nCOMMIT\n") == ""


RAW_SAVED = SAVED + """*raw
:PREROUTING ACCEPT [0:0]
:OP25B - [0:0]
-A PREROUTING -p tcp -m multiport --dports 25 -m set --match-set op25b-subs4 src -j OP25B
-A OP25B -m set --match-set op25b-block4 src -j DROP
COMMIT
"""


def test_raw_part_goes_first_and_when_the_cache_is_switched_off() -> None:
    removal = render_removal(RAW_SAVED)
    assert removal.startswith(
        "*raw\n-D PREROUTING -p tcp -m multiport --dports 25 -m set --match-set op25b-subs4 src"
        " -j OP25B\n-F OP25B\n-X OP25B\nCOMMIT\n*mangle\n"
    )
    text = render_rules(RuleConfig(guarded_ports=(25,)), 4, saved=RAW_SAVED)
    assert text.endswith(removal.split("*mangle")[0])  # no cache any more: raw removed
    cached = render_rules(RuleConfig(guarded_ports=(25,), block_cache=True), 4, saved=RAW_SAVED)
    assert cached.count("*raw") == 1 and "-D PREROUTING" in cached  # replaced, not doubled


def test_install_replaces_leftovers_in_one_transaction() -> None:
    text = render_rules(RuleConfig(guarded_ports=(25,)), 4, saved=SAVED)
    filter_block = text.split("*mangle")[0]
    lines = filter_block.splitlines()
    old = "-D FORWARD -p tcp -m multiport --dports 25 -m comment --comment op25b -j OP25B"
    assert lines[1] == old  # deletions come before the chain is redeclared
    assert "-D FORWARD -p tcp -m multiport --dports 25,26 -j OP25B" in text.split("*mangle")[1]


def test_rule_config_from_policy_and_validation() -> None:
    policy = make_policy(
        guarded_ports=(2525, 25),
        action=Action.REJECT,
        daemon=DaemonConfig(
            queue=3,
            workers=2,
            on_daemon_down=DownMode.CLOSED,
            fast_path=True,
            block_cache_timeout=60,
        ),
    )
    cfg = RuleConfig.from_policy(policy)
    assert cfg == RuleConfig((25, 2525), 3, 2, DownMode.CLOSED, Action.REJECT, True, True)
    with pytest.raises(ValueError):
        RuleConfig(guarded_ports=())
    with pytest.raises(ValueError):
        RuleConfig(guarded_ports=(0,))
    with pytest.raises(ValueError):
        RuleConfig(guarded_ports=(25,), workers=0)


# --------------------------------------------------------------------------- trust


def _all_configs() -> list[RuleConfig]:
    return [
        RuleConfig(guarded_ports=(25,), fast_path=fp, block_cache=bc, action=a, down=d)
        for fp in (False, True)
        for bc in (False, True)
        for a in Action
        for d in DownMode
    ]


@pytest.mark.parametrize("version", [4, 6])
def test_no_rule_trusts_conntrack_state_alone(version: int) -> None:
    """Only connections op25b let through (our connmark, original direction) skip."""
    for cfg in _all_configs():
        text = render_rules(cfg, version)
        assert "RELATED" not in text and "INVALID" not in text
        for table in ("filter", "mangle"):
            chain = _chain(text, table)
            assert chain[0] == (
                "-m connmark --mark 0xc00000/0xf00000 "
                "-m conntrack --ctstate ESTABLISHED --ctdir ORIGINAL -j RETURN"
            )
            stateful = [r for r in chain if "--ctstate" in r]
            assert stateful == [chain[0]], (cfg, table)
        # The connmark is set in one place only: filter, on a packet carrying our
        # accept, in the connection's original direction.
        setters = [ln for ln in text.splitlines() if "CONNMARK" in ln]
        assert setters == [
            "-A OP25B -m mark --mark 0xa00000/0xf00000 -m conntrack --ctdir ORIGINAL "
            "-j CONNMARK --set-xmark 0xc00000/0xf00000"
        ]
        # Right after the trusted RETURN and the forged-accept guard (none for monitor).
        guard = 0 if cfg.action is Action.MONITOR else 1
        assert _chain(text, "filter").index(setters[0].removeprefix("-A OP25B ")) == 1 + guard


def test_trusted_connmark_is_ours_and_never_a_verdict() -> None:
    assert TRUSTED_CONNMARK & ~MARK_MASK == 0
    assert TRUSTED_CONNMARK not in (0, MARK_MASK, ACCEPT_MARK, REJECT_MARK)


@pytest.mark.parametrize("version", [4, 6])
def test_every_jump_is_for_subscriber_sources(version: int) -> None:
    text = render_rules(RuleConfig(guarded_ports=tuple(range(1, 40))), version)
    jumps = [ln for ln in text.splitlines() if ln.startswith("-I FORWARD")]
    assert len(jumps) == 8  # 39 ports in 3 chunks and one for AH, in both tables
    assert all(f"-m set --match-set op25b-subs{version} src " in j for j in jumps)
    assert f"! --match-set op25b-subs{version}" not in text  # no "not a subscriber" fast path


MTA4 = parse_address("203.0.113.25")[1]
MTA6 = parse_address("2001:db8:25::25")[1]


@pytest.mark.parametrize(
    ("mtas", "raw4", "raw6"),
    [
        # One MTA per family: folded into the drop rule as a native address compare.
        (
            ((4, MTA4), (6, MTA6)),
            ["! -d 203.0.113.25/32 -m set --match-set op25b-block4 src -j DROP"],
            ["! -d 2001:db8:25::25/128 -m set --match-set op25b-block6 src -j DROP"],
        ),
        # Several: the first ones RETURN, the last is folded in; the other family none.
        (
            ((4, MTA4), (4, MTA4 + 1), (4, MTA4 + 2)),
            [
                "-d 203.0.113.25/32 -j RETURN",
                "-d 203.0.113.26/32 -j RETURN",
                "! -d 203.0.113.27/32 -m set --match-set op25b-block4 src -j DROP",
            ],
            ["-m set --match-set op25b-block6 src -j DROP"],
        ),
        # Past RAW_MTA_ADDRESSES: one lookup in the mta set instead of the compares.
        (
            tuple((4, MTA4 + i) for i in range(RAW_MTA_ADDRESSES + 1)),
            [
                "-m set --match-set op25b-mta4 dst -j RETURN",
                "-m set --match-set op25b-block4 src -j DROP",
            ],
            ["-m set --match-set op25b-block6 src -j DROP"],
        ),
    ],
)
def test_raw_cache_lets_provider_mtas_by_before_the_block_set_counts(
    mtas: tuple[tuple[int, int], ...], raw4: list[str], raw6: list[str]
) -> None:
    cfg = RuleConfig(guarded_ports=(25,), block_cache=True, raw_mtas=mtas)
    assert _chain(render_rules(cfg, 4), "raw") == raw4
    assert _chain(render_rules(cfg, 6), "raw") == raw6


def test_raw_mtas_come_from_the_policy_only_when_the_cache_drops_in_raw() -> None:
    cache = DaemonConfig(block_cache_timeout=30)
    mtas = ["2001:db8:25::25", "203.0.113.25"]
    raw = RuleConfig.from_policy(make_policy(mtas=mtas, daemon=cache))
    assert raw.raw_mtas == ((4, MTA4), (6, MTA6)) and raw.uses_raw_cache
    # reject keeps the cache in mangle, which uses the mta set: no addresses in the
    # rules, so an MTA change does not reinstall them
    mangle = RuleConfig.from_policy(make_policy(mtas=mtas, daemon=cache, action=Action.REJECT))
    assert mangle.raw_mtas == () and not mangle.uses_raw_cache
