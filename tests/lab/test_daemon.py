"""The daemon on a real netfilter queue: real TCP connections through a lab router.

Every test starts ``op25b run`` inside the lab's router namespace, sends real TCP
connection attempts from subscriber namespaces and checks what arrived, what the
abuse log and a real syslog socket say, and what the kernel ruleset looks like.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from op25b import native
from op25b.lab import topology as L
from op25b.lab.netns import run_in
from op25b.lab.processes import sd_params
from op25b.lab.tools import ConnectResult, Probe, probe_many
from op25b.lab.topology import Lab

POLICY = """\
version: 1
guarded_ports: [25]
action: {action}
plans:
  residential:
    exempt: false
    prefixes: [100.64.0.0/16, "2001:db8:100::/40"]
  business-static:
    exempt: true
    prefixes: [198.51.100.0/24, 100.64.200.0/29, "2001:db8:b00::/40", "2001:db8:100:200::/56"]
provider_mtas:
  smarthost:
    addresses: [203.0.113.25, "2001:db8:25::25"]
exemptions:
  - prefix: 100.64.7.7/32
    ticket: ABUSE-1234
    expires: {expires}
    reason: verified own MX
  - prefix: "2001:db8:100::7/128"
    ticket: ABUSE-1235
    expires: {expires}
    reason: verified own MX (v6)
daemon:
  queue: {queue}
  workers: {workers}
  on_daemon_down: {down}
  counters_interval: 3600
"""

FUTURE = "2099-12-31"
PAST = "2020-01-01"
BLOCK_TIMEOUT = 1.5  # a dropped SYN: the probe gives up after this


def write_policy(
    path: Path,
    action: str = "drop",
    expires: str = FUTURE,
    down: str = "static",
    workers: int = 1,
    queue: int = 0,
) -> Path:
    path.write_text(
        POLICY.format(action=action, expires=expires, down=down, workers=workers, queue=queue)
    )
    return path


def probes(
    ns: str, items: list[tuple[str, str, int]], timeout: float = BLOCK_TIMEOUT
) -> list[ConnectResult]:
    return probe_many(ns, [Probe(s, d, p) for s, d, p in items], timeout=timeout)


def outcomes(results: list[ConnectResult]) -> list[str]:
    return [r.outcome for r in results]


def ruleset(lab: Lab) -> str:
    """The router's whole firewall state, counters stripped, for before/after comparison."""
    parts = []
    for cmd in (["iptables-save"], ["ip6tables-save"], ["ipset", "save"]):
        out = run_in(lab.rtr, cmd, capture_output=True, text=True, check=True).stdout
        lines = [
            re.sub(r"\[\d+:\d+\]", "[0:0]", line)
            for line in out.splitlines()
            if not line.startswith("#")
        ]
        # Tables in name order: iptables-save prints them in the order the kernel made
        # them in this namespace, which says nothing about their contents.
        tables = "\n".join(lines).split("\n*")
        parts.append("\n*".join(sorted(t.lstrip("*") for t in tables)))
    return "\n---\n".join(parts)


@pytest.mark.parametrize("family", [4, 6])
def test_drop_policy_decides_every_row_of_the_design_table(
    start, lab: Lab, tmp_path: Path, family: int
) -> None:
    r = start(write_policy(tmp_path / "p.yaml", "drop"))
    v4 = family == 4
    res = L.RES_V4 if v4 else L.RES_V6
    mx = L.NET_MX_V4 if v4 else L.NET_MX_V6
    mta = L.ISP_MTA_V4 if v4 else L.ISP_MTA_V6
    exempted = L.RES_EXEMPT_V4 if v4 else L.RES_EXEMPT_V6
    carved = L.RES_BUSINESS_V4 if v4 else L.RES_BUSINESS_V6
    res_results = probes(
        lab.res,
        [
            (res, mx, 25),  # the spambot path
            (res, mta, 25),  # own smarthost
            (res, mx, 587),  # submission: never touched
            (res, mx, 465),
            (exempted, mx, 25),  # single exemption
            (carved, mx, 25),  # business /29 inside the residential /16
        ],
    )
    assert outcomes(res_results) == [
        "timeout",
        "connected",
        "connected",
        "connected",
        "connected",
        "connected",
    ]
    biz = probes(lab.biz, [(L.BIZ_V4 if v4 else L.BIZ_V6, mx, 25)])
    assert outcomes(biz) == ["connected"]
    isp = probes(lab.isp, [(mta, mx, 25)])  # provider MTA relaying out: not a subscriber
    assert outcomes(isp) == ["connected"]
    assert r.stop() == 0


@pytest.mark.parametrize("family", [4, 6])
def test_reject_refuses_within_a_second(start, lab: Lab, tmp_path: Path, family: int) -> None:
    start(write_policy(tmp_path / "p.yaml", "reject"))
    res, mx = (L.RES_V4, L.NET_MX_V4) if family == 4 else (L.RES_V6, L.NET_MX_V6)
    (result,) = probes(lab.res, [(res, mx, 25)], timeout=5)
    assert result.outcome == "refused"
    assert result.elapsed < 1.0


def test_monitor_connects_but_logs(start, lab: Lab, tmp_path: Path) -> None:
    r = start(write_policy(tmp_path / "p.yaml", "monitor"))
    results = probes(lab.res, [(L.RES_V4, L.NET_MX_V4, 25), (L.RES_V6, L.NET_MX_V6, 25)])
    assert outcomes(results) == ["connected", "connected"]
    assert r.stop() == 0
    counters = r.final_counters()
    assert counters["monitor"] == "2"
    assert counters["blocked"] == "2"
    records = r.abuse_records()
    assert {(x["source"], x["action"]) for x in records} == {
        (L.RES_V4, "monitor"),
        ("2001:db8:100::/64", "monitor"),
    }


def mapped_files(pid: int) -> set[str]:
    """The files process ``pid`` has mapped (its loaded extension modules among them)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {parts[-1] for parts in map(str.split, lines) if len(parts) == 6}


@pytest.mark.parametrize("pure", ["", "1"], ids=["compiled", "pure-python"])
def test_counters_and_abuse_log_match_the_traffic_exactly(
    start, lab: Lab, tmp_path: Path, pure: str
) -> None:
    """Both implementations of the per-packet path (op25b.native) in the real daemon."""
    # reject: every blocked attempt is exactly one SYN (answered by a reset at once, so
    # no retransmissions blur the count).
    r = start(write_policy(tmp_path / "p.yaml", "reject"), env={native.ENV_PURE: pure})
    enforcer_so = [f for f in mapped_files(r.daemon.proc.pid) if "dataplane/enforcer" in f]
    if pure:
        assert enforcer_so == []
    else:
        assert [Path(f).parent for f in enforcer_so] == [native.NATIVE_DIR / "op25b/dataplane"]
    bot_targets = list(L.NET_MX_EXTRA_V4[:12])
    bot = probes(lab.bot, [(L.BOT_V4, mx, 25) for mx in bot_targets] * 2, timeout=5)
    assert set(outcomes(bot)) == {"refused"}
    res = probes(
        lab.res,
        [(L.RES_V4, L.NET_MX_V4, 25), (L.RES_V4, L.ISP_MTA_V4, 25), (L.RES_V6, L.ISP_MTA_V6, 25)],
        timeout=5,
    )
    assert outcomes(res) == ["refused", "connected", "connected"]
    biz = probes(lab.biz, [(L.BIZ_V4, L.NET_MX_V4, 25)], timeout=5)
    assert outcomes(biz) == ["connected"]
    notice = r.syslog.wait_for(lambda m: f'src="{L.BOT_V4}"' in m, what="bot notice")
    assert "blocked source" in notice
    assert r.stop() == 0

    c = r.final_counters()
    assert (c["reject"], c["blocked"]) == ("25", "25")  # 24 bot + 1 res
    assert (c["provider_mta"], c["exempt_plan"], c["accept"]) == ("2", "1", "3")
    assert c["parse_errors"] == "0"
    assert c["queue_dropped"] == "0"
    by_source = {x["source"]: x for x in r.abuse_records()}
    assert set(by_source) == {L.BOT_V4, L.RES_V4}
    b = by_source[L.BOT_V4]
    assert (b["packets"], b["distinct_destinations"], b["plan"]) == (24, 12, "residential")
    assert sorted(b["destinations_sample"]) == sorted(bot_targets)
    assert by_source[L.RES_V4]["packets"] == 1
    # One NOTICE per newly blocked source, not per packet.
    notices = [m for m in r.syslog.lines.snapshot() if "blocked source" in m]
    assert len(notices) == 2


def test_exemption_stops_working_after_it_expires_on_reload(
    start, lab: Lab, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path / "p.yaml", "reject", expires=FUTURE)
    r = start(policy)
    items = [(L.RES_EXEMPT_V4, L.NET_MX_V4, 25), (L.RES_EXEMPT_V6, L.NET_MX_V6, 25)]
    assert outcomes(probes(lab.res, items, timeout=5)) == ["connected", "connected"]
    write_policy(policy, "reject", expires=PAST)
    assert "reloaded" in r.daemon.reload()
    assert outcomes(probes(lab.res, items, timeout=5)) == ["refused", "refused"]
    assert r.stop() == 0
    assert r.final_counters()["reloads"] == "1"


def test_broken_policy_on_sighup_keeps_the_old_one(start, lab: Lab, tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.yaml", "reject")
    r = start(policy)
    policy.write_text(policy.read_text().replace("203.0.113.25", "203.0.113.256"))
    line = r.daemon.reload()
    assert "reload refused" in line
    assert f"{policy}:" in line and "not an IP address" in line
    err = r.syslog.wait_for(lambda m: "reload refused" in m, what="reload error in syslog")
    assert re.search(rf"{re.escape(str(policy))}:\d+:\d+: provider_mtas", err)
    # Still the old policy: the smarthost is reachable, the MX is not.
    assert outcomes(
        probes(lab.res, [(L.RES_V4, L.ISP_MTA_V4, 25), (L.RES_V4, L.NET_MX_V4, 25)], timeout=5)
    ) == ["connected", "refused"]
    assert r.stop() == 0
    c = r.final_counters()
    assert (c["reloads"], c["reload_failures"]) == ("1", "1")


def test_sigterm_leaves_the_ruleset_exactly_as_before(start, lab: Lab, tmp_path: Path) -> None:
    # Someone else's rules in the same namespace must survive us untouched.
    rtr = lab.rtr
    run_in(rtr, ["iptables", "-N", "SITE"], check=True)
    run_in(
        rtr, ["iptables", "-A", "FORWARD", "-p", "udp", "--dport", "53", "-j", "SITE"], check=True
    )
    run_in(
        rtr,
        ["ip6tables", "-A", "FORWARD", "-p", "tcp", "--dport", "80", "-j", "ACCEPT"],
        check=True,
    )
    # The kernel makes a table on first use and keeps it (empty) after op25b's rules
    # leave it, as on any router where the tables already exist: make every table
    # op25b uses first, so that "before" holds them too whichever test ran earlier.
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "mangle", "raw"):
            for step in ("-N", "-X"):  # listing alone does not make it
                run_in(rtr, [tool, "-t", table, step, "T25"], check=True)
    try:
        before = ruleset(lab)
        r = start(write_policy(tmp_path / "p.yaml", "drop"))
        during = ruleset(lab)
        assert "OP25B" in during and "op25b-allow4" in during
        assert r.stop() == 0
        assert ruleset(lab) == before
    finally:
        run_in(
            rtr,
            ["iptables", "-D", "FORWARD", "-p", "udp", "--dport", "53", "-j", "SITE"],
            check=False,
        )
        run_in(rtr, ["iptables", "-X", "SITE"], check=False)
        run_in(
            rtr,
            ["ip6tables", "-D", "FORWARD", "-p", "tcp", "--dport", "80", "-j", "ACCEPT"],
            check=False,
        )


@pytest.mark.parametrize(
    ("down", "expected"),
    [
        # res->MX, res->MTA, biz->MX, exempted->MX (v4), res->MX (v6), biz->MX (v6)
        ("static", ["timeout", "connected", "connected", "connected", "timeout", "connected"]),
        ("open", ["connected"] * 6),
        ("closed", ["timeout"] * 6),
    ],
)
def test_kill9_gives_the_configured_down_behaviour(
    start, lab: Lab, tmp_path: Path, down: str, expected: list[str]
) -> None:
    r = start(write_policy(tmp_path / "p.yaml", "drop", down=down))
    r.daemon.kill9()
    got = outcomes(
        probes(
            lab.res,
            [(L.RES_V4, L.NET_MX_V4, 25), (L.RES_V4, L.ISP_MTA_V4, 25)],
        )
    )
    got += outcomes(probes(lab.biz, [(L.BIZ_V4, L.NET_MX_V4, 25)]))
    got += outcomes(probes(lab.res, [(L.RES_EXEMPT_V4, L.NET_MX_V4, 25)]))
    got += outcomes(probes(lab.res, [(L.RES_V6, L.NET_MX_V6, 25)]))
    got += outcomes(probes(lab.biz, [(L.BIZ_V6, L.NET_MX_V6, 25)]))
    assert got == expected
    r.syslog.close()
    # A restart after the crash cleans up the leftovers and enforces again.
    r2 = start(write_policy(tmp_path / "p2.yaml", "reject"))
    assert outcomes(probes(lab.res, [(L.RES_V4, L.NET_MX_V4, 25)], timeout=5)) == ["refused"]
    assert r2.stop() == 0


def test_two_workers_share_the_load(start, lab: Lab, tmp_path: Path) -> None:
    r = start(write_policy(tmp_path / "p.yaml", "reject", workers=2))
    stats = run_in(
        lab.rtr,
        ["cat", "/proc/net/netfilter/nfnetlink_queue"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    bound = {int(line.split()[0]) for line in stats.splitlines() if line.strip()}
    assert {0, 1} <= bound
    items = [(L.BOT_V4, mx, 25) for mx in L.NET_MX_EXTRA_V4[:20]]
    assert set(outcomes(probes(lab.bot, items, timeout=5))) == {"refused"}
    assert r.stop() == 0
    finals = [sd_params(m) for m in r.syslog.lines.snapshot() if 'final="1"' in m]
    assert sorted(f["queue"] for f in finals) == ["0", "1"]
    assert sum(int(f["reject"]) for f in finals) == 20
    # Each worker logs what it saw; together they account for every attempt.
    records = r.abuse_records()
    assert sum(x["packets"] for x in records) == 20
    assert {x["router"].rsplit("#", 1)[1] for x in records} <= {"q0", "q1"}


def test_sigusr1_reopens_the_abuse_log(start, lab: Lab, tmp_path: Path) -> None:
    r = start(write_policy(tmp_path / "p.yaml", "reject"))
    rotated = tmp_path / "blocked.jsonl.1"
    r.abuse_log.rename(rotated)
    r.daemon.proc.send_signal(signal.SIGUSR1)
    r.daemon.lines.wait_for(lambda s: "reopened abuse log" in s, 10, what="reopen")
    assert r.abuse_log.exists()
    assert outcomes(probes(lab.res, [(L.RES_V4, L.NET_MX_V4, 25)], timeout=5)) == ["refused"]
    assert r.stop() == 0
    assert [x["source"] for x in r.abuse_records()] == [L.RES_V4]


def with_daemon_keys(policy: Path, **keys: object) -> Path:
    text = policy.read_text()
    extra = "".join(
        f"  {k}: {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in keys.items()
    )
    policy.write_text(text + extra)
    return policy


def await_cached(lab: Lab, src: str, timeout: float = 10.0) -> None:
    name = "op25b-block6" if ":" in src else "op25b-block4"
    deadline = time.monotonic() + timeout
    while True:
        out = run_in(lab.rtr, ["ipset", "list", name], capture_output=True, text=True).stdout
        if src in out.split():
            return
        assert time.monotonic() < deadline, f"{src} never reached {name}:\n{out}"
        time.sleep(0.02)  # polling a kernel table: there is no event to wait on


def start_with_cached_bots(start, lab: Lab, tmp_path: Path, action: str):  # type: ignore[no-untyped-def]
    """The daemon with the verdict cache, after one blocked attempt per bot family."""
    policy = with_daemon_keys(write_policy(tmp_path / "p.yaml", action), block_cache_timeout=3600)
    r = start(policy)
    wait = 5 if action == "reject" else 1
    first = probes(lab.bot, [(L.BOT_V4, L.NET_MX_V4, 25), (L.BOT_V6, L.NET_MX_V6, 25)], wait)
    assert outcomes(first) == ["refused" if action == "reject" else "timeout"] * 2
    # The daemon hands the source to its ipset thread right after deciding; await the
    # kernel entry (bounded) before sending the repeat attempts.
    await_cached(lab, L.BOT_V4)
    await_cached(lab, L.BOT_V6)
    return r


def test_block_cache_handles_repeat_attempts_in_the_kernel_and_counts_them(
    start, lab: Lab, tmp_path: Path
) -> None:
    r = start_with_cached_bots(start, lab, tmp_path, "reject")
    targets = list(L.NET_MX_EXTRA_V4[:15])
    again = probes(lab.bot, [(L.BOT_V4, mx, 25) for mx in targets], timeout=5)
    assert set(outcomes(again)) == {"refused"}  # rejected by the kernel, still a reset
    # The provider MTA stays reachable for a cached bot (decide() allows it).
    assert outcomes(probes(lab.bot, [(L.BOT_V4, L.ISP_MTA_V4, 25)], timeout=5)) == ["connected"]
    assert r.stop() == 0
    c = r.final_counters()
    assert c["reject"] == "2"  # only the first attempt per source reached the daemon
    assert c["block_cache"] == "15"
    by_source = {x["source"]: x for x in r.abuse_records()}
    bot = by_source[L.BOT_V4]
    assert (bot["packets"], bot["kernel_packets"]) == (16, 15)


def raw_drops(lab: Lab, binary: str) -> int:
    """Packets op25b's raw-table chain dropped (iptables-save counters)."""
    out = run_in(lab.rtr, [binary, "-c", "-t", "raw"], capture_output=True, text=True).stdout
    m = re.search(r"^\[(\d+):\d+\] -A OP25B .*-j DROP$", out, re.M)
    assert m is not None, out
    return int(m.group(1))


def test_block_cache_drops_before_conntrack_and_counts_every_attempt(
    start, lab: Lab, tmp_path: Path
) -> None:
    r = start_with_cached_bots(start, lab, tmp_path, "drop")
    run_in(lab.rtr, ["conntrack", "-F"], capture_output=True)
    targets = list(L.NET_MX_EXTRA_V4[:10])
    again = probes(lab.bot, [(L.BOT_V4, mx, 25) for mx in targets], timeout=1)
    assert set(outcomes(again)) == {"timeout"}
    # Dropped in raw PREROUTING: no conntrack entry was ever made for them (the
    # SYNs are retransmitted within the 1 s timeout, so "at least" one each).
    assert raw_drops(lab, "iptables-save") >= 10
    tracked = run_in(
        lab.rtr, ["conntrack", "-L", "-s", L.BOT_V4, "-p", "tcp", "--dport", "25"],
        capture_output=True, text=True,
    ).stdout
    assert tracked.strip() == ""
    # The provider MTA stays reachable for a cached bot (decide() allows it), and the
    # raw chain lets it by before the block set counts: kernel_packets below is exact.
    mta = [(L.BOT_V4, L.ISP_MTA_V4, 25), (L.BOT_V6, L.ISP_MTA_V6, 25)]
    assert outcomes(probes(lab.bot, mta, timeout=5)) == ["connected"] * 2
    kernel4, kernel6 = raw_drops(lab, "iptables-save"), raw_drops(lab, "ip6tables-save")
    assert r.stop() == 0
    c = r.final_counters()
    assert c["drop"] == "2"  # only the first attempt per source reached the daemon
    assert int(c["block_cache"]) == kernel4 + kernel6  # every kernel drop counted once
    bot = {x["source"]: x for x in r.abuse_records()}[L.BOT_V4]
    assert bot["kernel_packets"] == kernel4 and bot["packets"] == kernel4 + 1


def test_reload_invalidates_the_block_cache(start, lab: Lab, tmp_path: Path) -> None:
    policy = with_daemon_keys(write_policy(tmp_path / "p.yaml", "reject"), block_cache_timeout=3600)
    r = start(policy)
    assert outcomes(probes(lab.bot, [(L.BOT_V4, L.NET_MX_V4, 25)], timeout=5)) == ["refused"]
    r.syslog.wait_for(lambda m: f'src="{L.BOT_V4}"' in m, what="bot notice")
    text = policy.read_text().replace(
        "exemptions:\n",
        "exemptions:\n"
        f"  - {{prefix: {L.BOT_V4}/32, ticket: T-1, expires: {FUTURE}, reason: cleaned}}\n",
    )
    policy.write_text(text)
    assert "reloaded" in r.daemon.reload()
    assert outcomes(probes(lab.bot, [(L.BOT_V4, L.NET_MX_V4, 25)], timeout=5)) == ["connected"]
    assert r.stop() == 0


def test_fast_path_accepts_allowed_traffic_in_the_kernel(start, lab: Lab, tmp_path: Path) -> None:
    policy = with_daemon_keys(write_policy(tmp_path / "p.yaml", "reject"), fast_path=True)
    r = start(policy)
    assert (
        outcomes(
            probes(lab.biz, [(L.BIZ_V4, L.NET_MX_V4, 25), (L.BIZ_V6, L.NET_MX_V6, 25)], timeout=5)
        )
        == ["connected"] * 2
    )
    assert outcomes(
        probes(lab.res, [(L.RES_V4, L.ISP_MTA_V4, 25), (L.RES_V4, L.NET_MX_V4, 25)], timeout=5)
    ) == ["connected", "refused"]
    assert r.stop() == 0
    c = r.final_counters()
    # Only the blocked attempt reached userspace; the kernel's fast-path accepts are
    # added to the counters line from the rule counters.
    assert (c["accept"], c["reject"]) == ("0", "1")
    assert (c["fast_exempt"], c["fast_provider_mta"]) == ("2", "1")


CRAFT = """
import sys
from scapy.all import IP, IPv6, TCP, send, conf
conf.verb = 0
src, dst = sys.argv[1], sys.argv[2]
ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
for flags in ("SF", "A", "", "FPU", "R", "SA"):
    send(ip / TCP(sport=40000, dport=25, flags=flags, seq=1000, ack=1))
"""
CRAFTED = 6  # packets per run of CRAFT


def arrived(lab: Lab, src: str) -> int:
    """Packets from src to port 25 counted by a rule inside the MX namespace."""
    cmd = "ip6tables" if ":" in src else "iptables"
    out = run_in(
        lab.net, [cmd, "-L", "INPUT", "-v", "-x", "-n"], capture_output=True, text=True, check=True
    ).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if src in line)


@pytest.mark.parametrize("family", [4, 6])
def test_odd_tcp_flags_and_bare_acks_are_decided_too(
    start, lab: Lab, tmp_path: Path, family: int
) -> None:
    """Not only textbook SYNs: SYN+FIN, bare ACK, NULL, XMAS, RST, SYN-ACK are decided."""
    r = start(write_policy(tmp_path / "p.yaml", "drop"))
    res, biz, mx = (
        (L.RES_V4, L.BIZ_V4, L.NET_MX_V4) if family == 4 else (L.RES_V6, L.BIZ_V6, L.NET_MX_V6)
    )
    cmd = "iptables" if family == 4 else "ip6tables"
    for src in (res, biz):
        run_in(lab.net, [cmd, "-A", "INPUT", "-s", src, "-p", "tcp", "--dport", "25"], check=True)
    try:
        import sys

        for ns, src in ((lab.res, res), (lab.biz, biz)):
            run_in(ns, [sys.executable, "-c", CRAFT, src, mx], check=True, capture_output=True)
        assert arrived(lab, res) == 0  # every crafted packet from the guarded subscriber stopped
        assert arrived(lab, biz) == CRAFTED  # the exempt plan's all arrive
        assert r.stop() == 0
        c = r.final_counters()
        assert (c["drop"], c["exempt_plan"]) == (str(CRAFTED), str(CRAFTED))
    finally:
        for src in (res, biz):
            run_in(
                lab.net, [cmd, "-D", "INPUT", "-s", src, "-p", "tcp", "--dport", "25"], check=False
            )


def test_block_cache_with_two_workers_counts_every_attempt(start, lab: Lab, tmp_path: Path) -> None:
    policy = with_daemon_keys(
        write_policy(tmp_path / "p.yaml", "reject", workers=2), block_cache_timeout=3600
    )
    r = start(policy)
    first = [(L.BOT_V4, mx, 25) for mx in L.NET_MX_EXTRA_V4[:4]]
    assert set(outcomes(probes(lab.bot, first, timeout=5))) == {"refused"}
    await_cached(lab, L.BOT_V4)
    more = [(L.BOT_V4, mx, 25) for mx in L.NET_MX_EXTRA_V4[4:20]]
    assert set(outcomes(probes(lab.bot, more, timeout=5))) == {"refused"}
    assert r.stop() == 0
    finals = [sd_params(m) for m in r.syslog.lines.snapshot() if 'final="1"' in m]
    decided = sum(int(f["reject"]) for f in finals)
    in_kernel = sum(int(f["block_cache"]) for f in finals)
    assert decided + in_kernel == 20
    assert in_kernel > 0  # the cache did take over
    records = r.abuse_records()
    assert sum(x["packets"] for x in records) == 20
    assert sum(x["kernel_packets"] for x in records) == in_kernel
