"""The lab itself, with no firewall: reachability over real TCP, teardown, coexistence.

If these fail, every policy test built on the lab is meaningless, so they check the
plumbing end to end: real sockets, a banner read, both address families.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from op25b.lab import topology as lab_mod
from op25b.lab.labstate import lab_down, lab_status, lab_up, labs_state
from op25b.lab.netns import list_netns, netns_exists, netns_pids, run_in
from op25b.lab.tools import (
    MAIL_PORTS,
    ConnectResult,
    Listener,
    Probe,
    connect,
    probe_many,
    start_listener,
)
from op25b.lab.topology import (
    HOSTS,
    Lab,
    LabError,
    create_lab,
    destroy_lab,
    lab_session,
)

SUBSCRIBER_SOURCES = {
    "res": HOSTS["res"].addresses,  # primary plus the exemption / carve-out extras
    "bot": HOSTS["bot"].addresses,
    "biz": HOSTS["biz"].addresses,
}
FAR_TARGETS = (
    lab_mod.ISP_MTA_V4,
    lab_mod.ISP_MTA_V6,
    lab_mod.NET_MX_V4,
    lab_mod.NET_MX_V6,
)


def _same_family(a: str, b: str) -> bool:
    return (":" in a) == (":" in b)


def _fail_msg(results: list[ConnectResult]) -> str:
    bad = [r for r in results if not r.ok]
    return "\n".join(f"{r.src} -> {r.dst}:{r.port} {r.outcome} {r.detail}" for r in bad)


def _root_snapshot() -> tuple[list[tuple[int, str]], str, str]:
    # Read in *this* process, which lives in the root namespace.
    fwd4 = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    fwd6 = Path("/proc/sys/net/ipv6/conf/all/forwarding").read_text()
    return sorted(socket.if_nameindex()), fwd4, fwd6


@pytest.mark.parametrize("role", sorted(SUBSCRIBER_SOURCES))
def test_subscriber_reaches_isp_and_net_on_all_mail_ports(
    lab: Lab, listeners: dict[str, Listener], role: str
) -> None:
    probes = [
        Probe(src, dst, port)
        for src in SUBSCRIBER_SOURCES[role]
        for dst in FAR_TARGETS
        if _same_family(src, dst)
        for port in MAIL_PORTS
    ]
    results = probe_many(lab.ns(role), probes)
    assert all(r.ok for r in results), _fail_msg(results)
    assert results[0].banner is not None and "ESMTP" in results[0].banner
    # No NAT anywhere: the far side sees each bound source address as it is.
    seen = listeners["isp"].peers() | listeners["net"].peers()
    assert set(SUBSCRIBER_SOURCES[role]) <= seen


def test_bot_reaches_every_mx_address(lab: Lab, listeners: dict[str, Listener]) -> None:
    targets = [lab_mod.NET_MX_V4, *lab_mod.NET_MX_EXTRA_V4]
    targets6 = [lab_mod.NET_MX_V6, *lab_mod.NET_MX_EXTRA_V6]
    probes = [Probe(lab_mod.BOT_V4, d, 25) for d in targets]
    probes += [Probe(lab_mod.BOT_V6, d, 25) for d in targets6]
    results = probe_many(lab.bot, probes)
    assert len(results) == 2 * 64 + 2
    assert all(r.ok for r in results), _fail_msg(results)
    locals_seen = {local.rsplit(":", 1)[0].strip("[]") for _, local in listeners["net"].accepted()}
    assert set(targets) | set(targets6) <= locals_seen


def test_provider_mta_reaches_external_mx(lab: Lab, listeners: dict[str, Listener]) -> None:
    results = probe_many(
        lab.isp,
        [
            Probe(lab_mod.ISP_MTA_V4, lab_mod.NET_MX_V4, 25),
            Probe(lab_mod.ISP_MTA_V6, lab_mod.NET_MX_V6, 25),
        ],
    )
    assert all(r.ok for r in results), _fail_msg(results)


def test_default_source_is_the_primary_address(lab: Lab, listeners: dict[str, Listener]) -> None:
    # Unbound clients (swaks, an MTA) must come from the primary address, not an extra.
    script = (
        "import socket,sys\n"
        "for dst in sys.argv[1:]:\n"
        "    s = socket.create_connection((dst, 25), 3)\n"
        "    print(s.getsockname()[0]); s.close()\n"
    )
    res = run_in(
        lab.res,
        ["python3", "-c", script, lab_mod.NET_MX_V4, lab_mod.NET_MX_V6],
        capture_output=True,
        text=True,
        check=True,
    )
    assert res.stdout.split() == [lab_mod.RES_V4, lab_mod.RES_V6]


def test_outcomes_refused_and_timeout_are_told_apart(
    lab: Lab, listeners: dict[str, Listener]
) -> None:
    refused = connect(lab.res, lab_mod.RES_V4, lab_mod.NET_MX_V4, 2525)
    assert refused.outcome == "refused"
    # A blackhole route inside rtr (lab namespace only) swallows packets silently.
    hole = "192.0.2.200/32"
    run_in(lab.rtr, ["ip", "route", "add", "blackhole", hole], check=True)
    try:
        lost = connect(lab.res, lab_mod.RES_V4, "192.0.2.200", 25, timeout=0.5)
    finally:
        run_in(lab.rtr, ["ip", "route", "del", "blackhole", hole], check=True)
    assert lost.outcome == "timeout"
    assert 0.45 <= lost.elapsed < 2.0
    # rtr has no route to these: it answers with ICMP(v6) unreachable.
    nowhere = probe_many(
        lab.res,
        [Probe(lab_mod.RES_V4, "203.0.113.99", 25), Probe(lab_mod.RES_V6, "2001:db8:99::1", 25)],
    )
    assert [r.outcome for r in nowhere] == ["unreachable", "unreachable"], nowhere


def test_rtr_forwards_but_hosts_do_not(lab: Lab) -> None:
    def sysctl(ns: str, key: str) -> str:
        res = run_in(ns, ["sysctl", "-n", key], capture_output=True, text=True, check=True)
        return str(res.stdout.strip())

    assert sysctl(lab.rtr, "net.ipv4.ip_forward") == "1"
    assert sysctl(lab.rtr, "net.ipv6.conf.all.forwarding") == "1"
    assert sysctl(lab.res, "net.ipv4.ip_forward") == "0"


def test_teardown_leaves_nothing_behind() -> None:
    before = _root_snapshot()
    the_lab = create_lab(prefix="op25bt")
    listener = start_listener(the_lab.net, [lab_mod.NET_MX_V4], [25])
    try:
        assert all(netns_exists(ns) for ns in the_lab.namespaces)
        assert netns_pids(the_lab.net) == [listener.proc.pid]
        assert connect(the_lab.res, lab_mod.RES_V4, lab_mod.NET_MX_V4, 25).ok
    finally:
        destroy_lab(the_lab)  # with the listener still running: teardown must end it
    assert listener.proc.wait(5) is not None
    listener.stop()
    assert not [ns for ns in list_netns() if ns.startswith(the_lab.name)]
    ip_list = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert the_lab.name not in ip_list.stdout
    assert _root_snapshot() == before  # no link, no sysctl of the root namespace changed
    destroy_lab(the_lab)  # idempotent


def test_session_tears_down_on_interrupt() -> None:
    seen: list[Lab] = []
    with pytest.raises(KeyboardInterrupt), lab_session(prefix="op25bt") as the_lab:
        seen.append(the_lab)
        raise KeyboardInterrupt
    assert seen and not any(netns_exists(ns) for ns in seen[0].namespaces)


def test_failed_build_is_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    names: list[str] = []
    real_new_name = lab_mod._new_name

    def recording_new_name(prefix: str) -> str:
        names.append(real_new_name(prefix))
        return names[-1]

    def boom(*_a: object, **_k: object) -> None:
        raise LabError("injected failure")

    # Fail after every namespace and link exists, the worst case for cleanup.
    monkeypatch.setattr(lab_mod, "_new_name", recording_new_name)
    monkeypatch.setattr(lab_mod, "_check_no_tentative", boom)
    with pytest.raises(LabError, match="injected"):
        create_lab(prefix="op25bt")
    assert len(names) == 1
    assert not [ns for ns in list_netns() if ns.startswith(names[0])]


def test_two_labs_coexist(lab: Lab, listeners: dict[str, Listener]) -> None:
    with lab_session(prefix="op25bt") as other:
        assert other.name != lab.name
        assert not set(other.namespaces) & set(lab.namespaces)
        # Usable at once, v4 and v6: no waiting for DAD after create_lab returns.
        with start_listener(other.isp, [lab_mod.ISP_MTA_V4, lab_mod.ISP_MTA_V6], [587]) as lst:
            results = probe_many(
                other.res,
                [
                    Probe(lab_mod.RES_V4, lab_mod.ISP_MTA_V4, 587),
                    Probe(lab_mod.RES_V6, lab_mod.ISP_MTA_V6, 587),
                ],
            )
            assert all(r.ok for r in results), _fail_msg(results)
            assert lst.peers() == {lab_mod.RES_V4, lab_mod.RES_V6}
        # The session lab is untouched by the second one.
        assert connect(lab.bot, lab_mod.BOT_V6, lab_mod.NET_MX_V6, 25).ok
    assert not any(netns_exists(ns) for ns in other.namespaces)
    assert all(netns_exists(ns) for ns in lab.namespaces)


def test_lab_up_status_down(tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")
    first = lab_up(state_dir=state_dir, prefix="op25bt")
    second = lab_up(state_dir=state_dir, prefix="op25bt")
    try:
        state = json.loads((tmp_path / "state" / f"{first.name}.json").read_text())
        assert Lab.from_json(state) == first
        status = lab_status(state_dir)
        assert first.name in status and second.name in status
        assert lab_mod.RES_V4 in status and "MISSING" not in status
        # `lab status --json`: the same facts as data
        doc = json.loads(json.dumps(labs_state(state_dir).as_dict()))
        assert doc["state_dir"] == state_dir
        # (other runs' labs on this machine are "unrecorded" here; ours are recorded)
        assert first.name not in doc["unrecorded"] and second.name not in doc["unrecorded"]
        labs = {lab["name"]: lab for lab in doc["labs"]}
        assert sorted(labs) == sorted([first.name, second.name])
        spaces = {ns["role"]: ns for ns in labs[first.name]["namespaces"]}
        assert [ns["namespace"] for ns in spaces.values()] == list(first.namespaces)
        assert all(ns["present"] for ns in spaces.values())
        assert any(a.startswith(f"{lab_mod.RES_V4}/") for a in spaces["res"]["addresses"])
        assert lab_down(first.name, state_dir) == [first.name]
        assert not any(netns_exists(ns) for ns in first.namespaces)
        assert first.name not in lab_status(state_dir)
        with pytest.raises(LabError, match="no lab named"):
            lab_down(first.name, state_dir)
        assert lab_down(None, state_dir) == [second.name]
        assert "no labs recorded" in lab_status(state_dir)
    finally:
        destroy_lab(first)
        destroy_lab(second)
    assert os.listdir(tmp_path / "state") == []
