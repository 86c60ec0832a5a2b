"""Lab tests for ``op25b.kernel.rules`` / ``op25b.kernel.ipsets`` against the real kernel (root).

Every test runs its commands in network namespaces it creates (``op25b-rt-<random>``
and friends) and always deletes; the root namespace's firewall, routes and interfaces
are never touched. ipsets are per namespace too.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

# The policy builders live with the unit tests; lab tests share them rather than
# re-implementing policy construction.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from builders import make_policy

from op25b.kernel import rules
from op25b.kernel.commands import RulesError, run_command
from op25b.kernel.names import HOOK_OF, set_name
from op25b.kernel.nfttext import clear_rule, expected_table
from op25b.kernel.ruletext import RuleConfig, render_rules
from op25b.kernel.seam import SystemKernel
from op25b.kernel.setcontents import compute_sets
from op25b.lab import tools
from op25b.policy.model import Action, DaemonConfig, DownMode, Policy

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lab tests need root")

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def sh(*args: str, check: bool = True, input_text: str | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False, input=input_text)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args}: {proc.stderr}")
    return proc.stdout


@pytest.fixture
def ns() -> Iterator[list[str]]:
    """A fresh router namespace; yields the cmd_prefix to run commands inside it."""
    name = f"op25b-rt-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", name)
    try:
        yield ["ip", "netns", "exec", name]
    finally:
        sh("ip", "netns", "del", name, check=False)


def in_ns(prefix: list[str], *args: str, input_text: str | None = None) -> str:
    return sh(*prefix, *args, input_text=input_text)


def _normalise(text: str) -> list[str]:
    """Save output without comment lines and with counters zeroed."""
    return [
        re.sub(r"\[\d+:\d+\]", "[0:0]", ln) for ln in text.splitlines() if not ln.startswith("#")
    ]


def snapshot(prefix: list[str]) -> dict[str, list[str]]:
    snap = {
        "v4": _normalise(in_ns(prefix, "iptables-save")),
        "v6": _normalise(in_ns(prefix, "ip6tables-save")),
    }
    for name in sorted(in_ns(prefix, "ipset", "list", "-n").split()):
        snap[f"ipset {name}"] = sorted(in_ns(prefix, "ipset", "save", name).splitlines())
    # Native nft tables (iptables-nft's own ip/ip6 tables are compared above).
    for line in in_ns(prefix, "nft", "list", "tables").splitlines():
        _, family, name = line.split()
        if family == "inet":
            snap[f"nft {family} {name}"] = in_ns(prefix, "nft", "list", "table", family, name)
    return snap


def drop_empty_table(lines: list[str], table: str) -> list[str]:
    """Remove ``*table`` from normalised save output, asserting it holds nothing."""
    if f"*{table}" not in lines:
        return lines
    start = lines.index(f"*{table}")
    end = lines.index("COMMIT", start)
    body = lines[start + 1 : end]
    assert all(re.fullmatch(r":[A-Z]+ ACCEPT \[0:0\]", ln) for ln in body), body
    return lines[:start] + lines[end + 1 :]


def own_sets(prefix: list[str]) -> list[str]:
    return sorted(n for n in in_ns(prefix, "ipset", "list", "-n").split() if "op25b" in n)


UNRELATED_V4 = """*filter
:ADMIN - [0:0]
-A INPUT -p tcp --dport 22 -j ACCEPT
-A FORWARD -i eth9 -j ADMIN
-A FORWARD -p tcp --dport 25 -m set --match-set admin-set src -j ACCEPT
-A ADMIN -j RETURN
COMMIT
*mangle
-A FORWARD -p udp -j MARK --set-xmark 0x1/0xff
COMMIT
"""
UNRELATED_V6 = """*filter
:ADMIN6 - [0:0]
-A FORWARD -p tcp --dport 25 -j ADMIN6
COMMIT
"""


UNRELATED_NFT = """table inet admin {
    chain admin_forward {
        type filter hook forward priority -151; policy accept;
        tcp dport 25 meta mark set meta mark | 0x00a00000 counter
    }
}
"""


def add_unrelated(prefix: list[str], *, mangle: bool = True) -> None:
    """Someone else's rules, chains and set, which op25b must leave alone."""
    in_ns(prefix, "ipset", "create", "admin-set", "hash:ip")
    in_ns(prefix, "ipset", "add", "admin-set", "192.0.2.1")
    v4 = UNRELATED_V4 if mangle else UNRELATED_V4.split("*mangle")[0]
    in_ns(prefix, "iptables-restore", "--noflush", input_text=v4)
    in_ns(prefix, "ip6tables-restore", "--noflush", input_text=UNRELATED_V6)
    in_ns(prefix, "nft", "-f", "-", input_text=UNRELATED_NFT)


def policy(**kwargs: object) -> Policy:
    return make_policy(**kwargs)  # type: ignore[arg-type]


def test_install_shows_chains_and_jumps(ns: list[str]) -> None:
    p = policy()
    rules.install(RuleConfig.from_policy(p), compute_sets(p, NOW), ns)
    for save in ("iptables-save", "ip6tables-save"):
        text = in_ns(ns, save)
        for table in ("filter", "mangle"):
            block = text.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0]
            assert ":OP25B - [0:0]" in block
            first_forward = next(ln for ln in block.splitlines() if ln.startswith("-A FORWARD"))
            v = 4 if save == "iptables-save" else 6
            assert first_forward.endswith(
                f"--dports 25 -m set --match-set op25b-subs{v} src -m comment --comment op25b "
                "-j OP25B"
            )
        assert "NFQUEUE --queue-num 0 --queue-bypass" in text
    assert own_sets(ns) == sorted(set_name(k, v) for k in ("mta", "allow", "subs") for v in (4, 6))
    assert in_ns(ns, "ipset", "test", "op25b-subs4", "100.64.3.3", "-q") == ""
    status = rules.status(ns)
    assert re.search(r"^iptables filter: \[\d+:\d+\] -A FORWARD .* -j OP25B$", status, re.M)
    assert "ipset op25b-subs6: 2 entries" in status
    assert "nft: type filter hook forward priority mangle - 1; policy accept;" in status
    assert f"nft: {clear_rule((25,))}" in status


@pytest.mark.parametrize(
    "cfg",
    [
        RuleConfig(guarded_ports=(25,)),
        RuleConfig(
            guarded_ports=(25, 2525),
            action=Action.REJECT,
            fast_path=True,
            block_cache=True,
            workers=2,
        ),
        RuleConfig(guarded_ports=(25,), block_cache=True),  # the cache's drop in raw
    ],
)
def test_the_kernel_reads_back_exactly_the_rendered_chains(ns: list[str], cfg: RuleConfig) -> None:
    """What a verifier compares: iptables-save prints op25b's chains as rendered."""
    p = policy(daemon=DaemonConfig(block_cache_timeout=60 if cfg.block_cache else 0))
    rules.install(cfg, compute_sets(p, NOW), ns)
    for v, save in ((4, "iptables-save"), (6, "ip6tables-save")):
        text = in_ns(ns, save)
        rendered = render_rules(cfg, v)
        for table in cfg.tables:
            hook = HOOK_OF[table]
            block = text.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0]
            want = rendered.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0]
            assert [ln for ln in block.splitlines() if ln.startswith("-A OP25B")] == [
                ln for ln in want.splitlines() if ln.startswith("-A OP25B")
            ]
            jumps = [ln[len(f"-I {hook} 1 ") :] for ln in want.splitlines() if ln[:2] == "-I"]
            assert [ln[3:] for ln in block.splitlines() if "-j OP25B" in ln] == [
                f"{hook} {j}" for j in reversed(jumps)
            ]
        assert ("*raw" in rendered) == cfg.uses_raw_cache
    assert rules.read_state(ns).nft == expected_table(cfg.guarded_ports)


@pytest.mark.parametrize("mangle_before", [True, False])
def test_remove_restores_everything_and_leaves_others_alone(
    ns: list[str], mangle_before: bool
) -> None:
    add_unrelated(ns, mangle=mangle_before)
    before = snapshot(ns)
    p = policy(daemon=DaemonConfig(fast_path=True, block_cache_timeout=60))
    rules.install(RuleConfig.from_policy(p), compute_sets(p, NOW), ns)
    during = snapshot(ns)
    for key in ("v4", "v6"):  # every unrelated line is still there, in order
        unrelated = [ln for ln in before[key] if ln.startswith("-A")]
        assert [ln for ln in during[key] if ln in unrelated] == unrelated
    assert during["ipset admin-set"] == before["ipset admin-set"]
    assert during["nft inet admin"] == before["nft inet admin"]
    assert "nft inet op25b" in during

    rules.remove(ns)
    after = snapshot(ns)
    for fam in ("v4", "v6"):
        for table in ("mangle", "raw"):  # raw: the verdict cache's drop
            if f"*{table}" not in before[fam]:
                # iptables-nft cannot delete a table: a table our install created stays,
                # empty (built-in chains, policy ACCEPT, no rules): behaviourally absent.
                after[fam] = drop_empty_table(after[fam], table)
    assert after == before
    rules.remove(ns)  # safe when nothing is installed
    assert own_sets(ns) == []


def test_remove_when_nothing_installed(ns: list[str]) -> None:
    before = snapshot(ns)
    rules.remove(ns)
    assert snapshot(ns) == before


def test_install_twice_replaces_crash_leftovers(ns: list[str]) -> None:
    p = policy()
    rules.install(RuleConfig.from_policy(p), compute_sets(p, NOW), ns)
    # a crashed run: rules still there, plus a half-loaded temporary set
    in_ns(ns, "ipset", "create", "op25b-subs4-tmp", "hash:net")
    p2 = policy(guarded_ports=(25, 2525), daemon=DaemonConfig(on_daemon_down=DownMode.CLOSED))
    rules.install(RuleConfig.from_policy(p2), compute_sets(p2, NOW), ns)
    for save in ("iptables-save", "ip6tables-save"):
        text = in_ns(ns, save)
        assert text.count("-j OP25B") == 4  # TCP and AH jumps per table, not doubled
        assert "--dports 25,2525 " in text
        assert text.count(":OP25B ") == 2
        filt = text.split("*filter", 1)[1].split("COMMIT", 1)[0]
        assert filt.rstrip().endswith("-A OP25B -j DROP")  # closed, old fallback gone
    assert "op25b-subs4-tmp" not in own_sets(ns)
    rules.remove(ns)
    assert own_sets(ns) == []
    assert "OP25B" not in in_ns(ns, "iptables-save") + in_ns(ns, "ip6tables-save")


def test_update_sets_swaps_contents(ns: list[str]) -> None:
    future = NOW + timedelta(days=1)
    p = policy(daemon=DaemonConfig(block_cache_timeout=30))
    rules.install(RuleConfig.from_policy(p), compute_sets(p, NOW), ns)
    in_ns(ns, "ipset", "add", "op25b-block4", "100.64.0.66")
    p2 = policy(
        plans={"res": (False, ["100.65.0.0/16"]), "biz": (True, ["100.65.1.0/24"])},
        exemptions=[("100.65.7.7/32", future)],
        daemon=DaemonConfig(block_cache_timeout=30),
    )
    rules.update_sets(compute_sets(p2, NOW), ns)
    subs = in_ns(ns, "ipset", "save", "op25b-subs4")
    assert "add op25b-subs4 100.65.0.0/16" in subs and "100.64.0.0/16" not in subs
    allow = in_ns(ns, "ipset", "save", "op25b-allow4")
    assert "add op25b-allow4 100.65.1.0/24" in allow and "100.65.7.7" in allow
    # The verdict cache is left for the daemon to rotate (it reads the counters first).
    assert "add op25b-block4 100.64.0.66" in in_ns(ns, "ipset", "save", "op25b-block4")
    assert not [n for n in own_sets(ns) if n.endswith("-tmp")]
    rules.remove(ns)


def test_block_cache_helpers(ns: list[str]) -> None:
    from op25b.kernel.cachesets import block_cache_add, block_cache_read
    from op25b.policy.addr import parse_address

    p = policy(daemon=DaemonConfig(block_cache_timeout=30))
    rules.install(RuleConfig.from_policy(p), compute_sets(p, NOW), ns)
    block_cache_add([parse_address("100.64.0.66")], timeout=20, cmd_prefix=ns)
    block_cache_add([parse_address("2001:db8:100::66")], timeout=20, cmd_prefix=ns)
    (entry,) = block_cache_read(4, ns)
    assert entry.address == "100.64.0.66" and 0 < entry.timeout <= 20 and entry.packets == 0
    assert block_cache_read(6, ns)[0].address == "2001:db8:100::66"
    rules.remove(ns)


def test_errors_carry_stderr(ns: list[str]) -> None:
    with pytest.raises(RulesError) as info:
        run_command(["ipset", "list", "no-such-set"], ns)
    assert "does not exist" in info.value.stderr


# ------------------------------------------------------------------ traffic (no daemon)


@pytest.fixture
def topo() -> Iterator[dict[str, list[str]]]:
    """client (100.64.0.10) -- rtr -- server (192.0.2.25 external, 203.0.113.25 MTA)."""
    tag = secrets.token_hex(3)
    names = {k: f"op25b-{k}-{tag}" for k in ("rt", "cl", "sv")}
    try:
        for n in names.values():
            sh("ip", "netns", "add", n)
        rt, cl, sv = names["rt"], names["cl"], names["sv"]
        sh("ip", "-n", rt, "link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns", cl)
        sh("ip", "-n", rt, "link", "add", "s0", "type", "veth", "peer", "name", "r0", "netns", sv)
        for n, dev, addr in (
            (rt, "c0", "100.64.0.1/24"),
            (rt, "s0", "192.0.2.1/24"),
            (rt, "s0", "203.0.113.1/24"),
            (cl, "r0", "100.64.0.10/24"),
            (sv, "r0", "192.0.2.25/24"),
            (sv, "r0", "203.0.113.25/24"),
        ):
            sh("ip", "-n", n, "addr", "add", addr, "dev", dev)
        for n, dev in ((rt, "c0"), (rt, "s0"), (cl, "r0"), (sv, "r0")):
            sh("ip", "-n", n, "link", "set", dev, "up")
            sh("ip", "-n", n, "link", "set", "lo", "up")
        sh("ip", "-n", cl, "route", "add", "default", "via", "100.64.0.1")
        sh("ip", "-n", sv, "route", "add", "100.64.0.0/24", "via", "192.0.2.1")
        sh("ip", "netns", "exec", rt, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield {k: ["ip", "netns", "exec", n] for k, n in names.items()}
    finally:
        for n in names.values():
            sh("ip", "netns", "del", n, check=False)


def connect(client: list[str], dst: str) -> str:
    """What a TCP connect from the client to ``dst``:25 saw (``op25b.lab.tools``):
    ``refused`` (the SYN got through to a closed port, or REJECT's reset), ``timeout``
    (dropped), ``connected``; any other error comes back with its errno name, so a
    routing mistake cannot pass for a DROP."""
    result = tools.connect(client[-1], "100.64.0.10", dst, 25, timeout=1.0)
    return " ".join(filter(None, (result.outcome, result.detail)))


@pytest.mark.parametrize(
    ("down", "action", "external", "mta"),
    [
        (DownMode.STATIC, Action.DROP, "timeout", "refused"),
        (DownMode.STATIC, Action.REJECT, "refused", "refused"),  # RST from the router
        (DownMode.STATIC, Action.MONITOR, "refused", "refused"),
        (DownMode.OPEN, Action.DROP, "refused", "refused"),
        (DownMode.CLOSED, Action.DROP, "timeout", "timeout"),
    ],
)
def test_daemon_down_behaviour(
    topo: dict[str, list[str]], down: DownMode, action: Action, external: str, mta: str
) -> None:
    """No daemon bound: the fallback really is reached (a bypassed NFQUEUE acts as
    ACCEPT for its table, which is why the queue sits in mangle and the fallback in
    filter)."""
    assert connect(topo["cl"], "192.0.2.25") == "refused"  # plain forwarding works
    p = policy(action=action, daemon=DaemonConfig(on_daemon_down=down))
    rules.install(RuleConfig.from_policy(p), compute_sets(p, NOW), topo["rt"])
    assert connect(topo["cl"], "192.0.2.25") == external
    assert connect(topo["cl"], "203.0.113.25") == mta
    rules.remove(topo["rt"])
    assert connect(topo["cl"], "192.0.2.25") == "refused"


def test_fast_path_accepts_in_kernel(topo: dict[str, list[str]]) -> None:
    """With the fast path, a non-subscriber gets through with no daemon even when
    closed: the fast path marks it accepted before the queue."""
    p = policy(
        plans={"res": (False, ["100.64.1.0/24"])},
        daemon=DaemonConfig(on_daemon_down=DownMode.CLOSED, fast_path=True),
    )
    rules.install(RuleConfig.from_policy(p), compute_sets(p, NOW), topo["rt"])
    assert connect(topo["cl"], "192.0.2.25") == "refused"
    p2 = policy(
        plans={"res": (False, ["100.64.0.0/24"])},
        daemon=DaemonConfig(on_daemon_down=DownMode.CLOSED, fast_path=True),
    )
    rules.update_sets(compute_sets(p2, NOW), topo["rt"])  # now a subscriber: queued, closed
    assert connect(topo["cl"], "192.0.2.25") == "timeout"
    rules.remove(topo["rt"])


# ------------------------------------------------------------------ scale


@pytest.mark.parametrize("count", [100_000])
def test_large_set_install(ns: list[str], count: int) -> None:
    prefixes = [f"{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24" for i in range(count)]
    p = policy(plans={"pool": (False, prefixes)})
    t0 = time.perf_counter()
    sets = compute_sets(p, NOW)
    t1 = time.perf_counter()
    rules.install(RuleConfig.from_policy(p), sets, ns)
    t2 = time.perf_counter()
    rules.update_sets(sets, ns)
    t3 = time.perf_counter()
    header = in_ns(ns, "ipset", "list", "-t", "op25b-subs4")
    assert f"Number of entries: {count}" in header
    # The replaced big sets were drained in batches and destroyed: no temporaries left.
    assert not [n for n in own_sets(ns) if n.endswith("-tmp")]
    print(
        f"\n{count} prefixes: compute {t1 - t0:.2f}s, install {t2 - t1:.2f}s, "
        f"update_sets {t3 - t2:.2f}s"
    )
    rules.remove(ns)


def without_initval(snap: dict[str, list[str]]) -> dict[str, list[str]]:
    """A snapshot without ipset's random hash seeds (each new set gets its own)."""
    return {k: [re.sub(r" initval 0x[0-9a-f]+", "", ln) for ln in v] for k, v in snap.items()}


def test_staged_sets_change_nothing_in_force_until_the_install(ns: list[str]) -> None:
    """Start-up's pipelining on the real kernel: sets staged while the policy compiles
    sit beside the live ones; dropping them leaves the previous run's rules and sets
    exactly; installing them gives what a full install gives."""
    old = policy()
    rules.install(RuleConfig.from_policy(old), compute_sets(old, NOW), ns)
    previous = snapshot(ns)
    new = policy(guarded_ports=(25, 2525), daemon=DaemonConfig(block_cache_timeout=30))
    kernel = SystemKernel(ns)
    kernel.stage_sets(new, NOW)
    staged = snapshot(ns)
    assert {k: v for k, v in staged.items() if not k.endswith("-tmp")} == previous
    assert "ipset op25b-subs4-tmp" in staged and "ipset op25b-allow6-tmp" in staged
    kernel.discard_staged()
    assert snapshot(ns) == previous

    kernel.stage_sets(new, NOW)
    kernel.install(RuleConfig.from_policy(new), new, NOW)
    via_staging = without_initval(snapshot(ns))
    rules.install(RuleConfig.from_policy(new), compute_sets(new, NOW), ns)
    assert via_staging == without_initval(snapshot(ns))
    assert "ipset op25b-block4" in via_staging and not any(k.endswith("-tmp") for k in via_staging)
    rules.remove(ns)
    assert own_sets(ns) == []
