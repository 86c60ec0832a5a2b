"""The fleet lab's pure parts: the addressing plan, the fleet policy, the rsyslog and
Prometheus configurations (checked by the real rsyslogd -N1 and promtool), the three
views' comparison, and the CLI's bounds. No root, no namespaces."""

from __future__ import annotations

import io
import ipaddress
import os
import shutil
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from op25b.cli import main
from op25b.lab import fleetplan as FP
from op25b.lab import fleetviews as V
from op25b.lab.fleetdemo import fleet_policy
from op25b.lab.netns import NetnsError, own_hostname, tcp_listening
from op25b.lab.prometheus import scrape_config
from op25b.lab.rsyslog import agent_conf, collector_conf
from op25b.policy.addr import parse_address
from op25b.policy.compiled import compile_policy
from op25b.policy.decide import decide_addresses
from op25b.policy.loader import load_policy

DOC = [
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "100.64.0.0/10",
              "2001:db8::/32", "fe80::/64")
]  # fmt: skip
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def inside(addr: str, net: str) -> bool:
    return ipaddress.ip_address(addr) in ipaddress.ip_network(net)


@pytest.mark.parametrize("routers", [1, 3, FP.MAX_ROUTERS])
def test_plan_uses_documentation_space_and_wires_what_it_names(routers: int) -> None:
    plan = FP.fleet_plan(routers)
    roles = set(plan.roles)
    assert len(roles) == len(plan.roles) == 4 + 4 * routers
    assert plan.forwarding == {"core", *(f"r{i}" for i in range(1, routers + 1))}
    ends: set[tuple[str, str]] = set()
    for link in plan.links:
        assert {link.a, link.b} <= roles
        for addr in link.addrs_a + link.addrs_b:
            assert any(ipaddress.ip_address(addr) in net for net in DOC), addr
        assert len(link.ifname_a) <= 15 and len(link.ifname_b) <= 15  # IFNAMSIZ
        for end in ((link.a, link.ifname_a), (link.b, link.ifname_b)):
            assert end not in ends, end  # one interface name per namespace
            ends.add(end)
    for route in plan.routes:
        assert (route.role, route.dev) in ends, route
    # every host address lives on exactly one host end
    hosts = [a for link in plan.links for a in link.addrs_b if not a.startswith("fe80:")]
    assert len(hosts) == len(set(hosts))


def test_sites_own_disjoint_pools() -> None:
    sites = FP.sites(FP.MAX_ROUTERS)
    pools = [ipaddress.ip_network(p) for s in sites for p in s.residential + s.business]
    for i, a in enumerate(pools):
        assert not any(a.overlaps(b) for b in pools[i + 1 :]), a
    for s in sites:
        for addr in (*s.res, *s.bot):
            assert any(inside(addr, p) for p in s.residential), addr
        for addr in s.biz:
            assert any(inside(addr, p) for p in s.business), addr
        assert inside(s.gateway("res")[0], s.residential[0])
        assert inside(s.gateway("biz")[0], s.business[0])


@pytest.mark.parametrize("routers", [0, FP.MAX_ROUTERS + 1])
def test_fleet_size_is_bounded(routers: int) -> None:
    with pytest.raises(ValueError, match="1 to 14 routers"):
        FP.sites(routers)


def decide(policy: Path, src: str, dst: str) -> tuple[str, str]:
    compiled = compile_policy(load_policy(policy, now=NOW).policy)
    version, s = parse_address(src)
    _, d = parse_address(dst)
    got = decide_addresses(compiled, version, s, d, 25, NOW)
    return got.verdict.value, got.reason.value


def test_one_policy_decides_for_every_router_and_the_exemption_for_one(tmp_path: Path) -> None:
    sites = FP.sites(3)
    before, after = tmp_path / "before.yaml", tmp_path / "after.yaml"
    before.write_text(fleet_policy(sites))
    after.write_text(fleet_policy(sites, exempt=sites[1].res[0]))
    for s in sites:
        assert decide(before, s.res[0], FP.NET_MX_V4) == ("reject", "blocked")
        assert decide(before, s.res[1], FP.NET_MX_V6) == ("reject", "blocked")
        assert decide(before, s.bot[0], FP.NET_MX_EXTRA_V4[5]) == ("reject", "blocked")
        assert decide(before, s.biz[0], FP.NET_MX_V4) == ("accept", "exempt_plan")
        assert decide(before, s.res[0], FP.ISP_MTA_V4) == ("accept", "provider_mta")
        want = ("accept", "exemption") if s is sites[1] else ("reject", "blocked")
        assert decide(after, s.res[0], FP.NET_MX_V4) == want
    out, err = io.StringIO(), io.StringIO()
    assert main(["check", str(after)], out, err) == 0, err.getvalue()


RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


def rsyslog_validates(conf: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    path = tmp / "rsyslog.conf"
    path.write_text(conf)
    return subprocess.run(
        [RSYSLOGD, "-N1", "-f", str(path)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(not os.path.exists(RSYSLOGD), reason="rsyslogd not installed")
def test_rsyslogd_accepts_the_collector_and_agent_configs(tmp_path: Path) -> None:
    col = collector_conf(tmp_path, tmp_path / "out", FP.COLLECTOR_V4)
    agent = agent_conf(tmp_path, "r1", tmp_path / "own.log", tmp_path / "b.jsonl", "192.0.2.9")
    for conf in (col, agent):
        done = rsyslog_validates(conf, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    # the validation has teeth: an unknown output module is refused
    done = rsyslog_validates(agent + 'action(type="omnothing")\n', tmp_path)
    assert done.returncode != 0
    # one file per sending host, path-safe; abuse records as bare JSON lines
    assert "%hostname:::secpath-replace%.log" in col
    assert 'string="%msg%\\n"' in col
    assert 'TCP_Framing="octet-counted"' in agent and 'localHostName="r1"' in agent
    assert "imuxsock" not in col + agent  # never the system's /dev/log


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    text = scrape_config({"r1": "100.127.0.1:9125", "r2": "100.127.0.2:9125"}, 1.0)
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    done = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "labels: {router: 'r2'}" in text and "scrape_interval: 1000ms" in text


def counts(**changes: int) -> V.Counts:
    base = {c: 0 for c in V.COLUMNS} | {"packets": 12, "reject": 11, "accept": 1,
                                         "blocked": 11, "exempt_plan": 1, "reloads": 1}  # fmt: skip
    return base | changes


def test_views_agree_only_when_every_number_is_equal() -> None:
    same = {view: {"r1": counts(), "r2": counts()} for view in V.VIEWS}
    fleet = V.total([counts(), counts()])
    assert V.compare(same, fleet).agree
    off = {**same, "collector": {"r1": counts(), "r2": counts(blocked=10)}}
    cmp = V.compare(off, fleet)
    assert cmp.mismatches == (
        "r2 blocked: router 11, collector 10, prometheus 11",
        "fleet blocked: router 22, collector 21, prometheus 22",
    )
    header, rows = V.rows(cmp)
    assert [r[-1] for r in rows if r[0]] == ["yes", "NO", "NO"]
    assert len(rows) == 3 * 3 and len(header) == len(rows[0])


def test_views_catch_a_missing_router_and_a_fleet_sum_apart() -> None:
    views = {view: {"r1": counts(), "r2": counts()} for view in V.VIEWS}
    views["prometheus"] = {"r1": counts()}
    assert (
        "r2 packets: router 12, collector 12, prometheus -1"
        in V.compare(views, V.total([counts(), counts()])).mismatches
    )
    views = {view: {"r1": counts()} for view in V.VIEWS}
    cmp = V.compare(views, counts(reloads=0))
    assert cmp.mismatches == ("fleet reloads: router 1, collector 1, prometheus 0",)


def test_counts_from_syslog_and_prometheus() -> None:
    params = {"packets": "3", "accept": "1", "reject": "2", "blocked": "2", "reloads": "1"}
    got = V.from_syslog(params)
    assert got["packets"] == 3 and got["blocked"] == 2 and got["drop"] == -1
    prom = V.from_prometheus({"accept": 1.0, "reject": 2.0}, {"blocked": 2.0}, 1.0)
    assert prom["packets"] == 3 and prom["drop"] == 0 and prom["reloads"] == 1


def test_host_names_are_checked_and_listening_sockets_found() -> None:
    assert own_hostname("r1")[:2] == ["unshare", "--uts"] and own_hostname("r1")[-1] == "r1"
    for bad in ("", "r 1", "-r1", "a/b", "x" * 64):
        with pytest.raises(NetnsError):
            own_hostname(bad)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert not tcp_listening(os.getpid(), port)
        s.listen()
        assert tcp_listening(os.getpid(), port)


@pytest.mark.parametrize(
    "argv", [["lab", "up", "--routers", "0"], ["lab", "up", "--routers", "15"],
             ["demo", "--fleet", "--routers", "1"]],
)  # fmt: skip
def test_cli_bounds_the_fleet_size(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(argv, out, err) == 2
    assert "--routers must be" in err.getvalue() and err.getvalue().count("\n") == 1


def test_a_mismatch_or_a_wrong_count_fails_the_fleet_demo(tmp_path: Path) -> None:
    from op25b.lab.fleetdemo import FleetOptions, _FleetDemo

    demo = _FleetDemo(io.StringIO(), io.StringIO(), False, FleetOptions(), tmp_path)
    demo.blocked.update({"r1": 11})  # what the traffic made r1 block
    agree = V.compare({view: {"r1": counts()} for view in V.VIEWS}, counts())
    assert demo._views_result(agree).passed
    views = {view: {"r1": counts()} for view in V.VIEWS}
    views["prometheus"] = {"r1": counts(blocked=10)}
    apart = demo._views_result(V.compare(views, counts(blocked=10)))
    assert (
        not apart.passed and "r1 blocked: router 11, collector 11, prometheus 10" in apart.observed
    )
    demo.blocked["r1"] += 1  # the views agree, but not with the traffic
    assert not demo._views_result(agree).passed
    demo.results.append(apart)
    assert demo.summary() == 1
