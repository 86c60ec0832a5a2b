"""Trust only what op25b let through: crafted packets from both sides of the router.

The daemon runs on a real queue in the lab router; scapy (inside the lab's namespaces,
never the root one) crafts what a bot and a colluding outside host could send, and a
counting rule in the MX's own namespace says what arrived there. Nothing from a
blocked subscriber may reach the MX -- whatever conntrack state or packet mark the
packets meet on the router -- while the legitimate paths keep working with real TCP,
each decided once per connection.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_daemon import arrived, outcomes, probes, with_daemon_keys, write_policy

from op25b.kernel import rules
from op25b.kernel.names import ACCEPT_MARK, MARK_MASK, TRUSTED_CONNMARK
from op25b.kernel.nfttext import expected_table
from op25b.lab import topology as L
from op25b.lab.netns import popen_in, run_in
from op25b.lab.topology import Lab

StartFn = Callable[[Path], object]

SEND = """
import json, sys
from scapy.all import IP, IPv6, TCP, Raw, conf, send
conf.verb = 0
for p in json.loads(sys.argv[1]):
    ip = IPv6(src=p["src"], dst=p["dst"]) if ":" in p["src"] else IP(src=p["src"], dst=p["dst"])
    seg = TCP(sport=p["sport"], dport=p["dport"], flags=p["flags"], seq=p["seq"], ack=p["ack"])
    send(ip / seg / Raw(p["load"].encode()) if p["load"] else ip / seg)
"""

EXTERNAL_PORT = 40001  # the subscriber's port a colluding outside host "connects" to


def craft(ns: str, packets: list[dict[str, object]]) -> None:
    """Send ``packets`` (src, dst, sport, dport, flags, seq, ack, load) from ``ns``."""
    run_in(ns, [sys.executable, "-c", SEND, json.dumps(packets)], check=True, capture_output=True)


def pkt(
    src: str, dst: str, sport: int, dport: int, flags: str, seq: int, ack: int = 0, load: str = ""
) -> dict[str, object]:
    return dict(
        src=src, dst=dst, sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, load=load
    )


def tables(family: int) -> str:
    return "iptables" if family == 4 else "ip6tables"


@contextmanager
def rules_in(ns: str, family: int, specs: list[list[str]]) -> Iterator[None]:
    """Firewall rules (``-t TABLE -A CHAIN ...``) inside a lab namespace, always removed."""
    added: list[list[str]] = []
    try:
        for spec in specs:
            run_in(ns, [tables(family), *spec], check=True)
            added.append(spec)
        yield
    finally:
        for spec in reversed(added):
            delete = [("-D" if word == "-A" else word) for word in spec]
            run_in(ns, [tables(family), *delete], check=False)


def count_at(src: str, dport: int) -> list[str]:
    """A counting rule (no target) for TCP from ``src`` to ``dport``, for INPUT."""
    return ["-t", "filter", "-A", "INPUT", "-s", src, "-p", "tcp", "--dport", str(dport)]


def received(ns: str, family: int, src: str) -> int:
    out = run_in(
        ns, [tables(family), "-L", "INPUT", "-v", "-x", "-n"], capture_output=True, text=True
    ).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if src in line.split())


def forget_connections(lab: Lab) -> None:
    """Empty the router's conntrack table: earlier tests' entries linger in TIME_WAIT."""
    run_in(lab.rtr, ["conntrack", "-F"], check=True, capture_output=True)


def conntrack_marks(lab: Lab, family: int, src: str, dst: str) -> list[int]:
    """The conntrack marks of the router's TCP entries from ``src`` to ``dst``:25."""
    listing = ["conntrack", "-L", "-f", f"ipv{family}", "-p", "tcp", "-s", src, "-d", dst]
    proc = subprocess.run(
        ["ip", "netns", "exec", lab.rtr, *listing, "--dport", "25"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [
        int(word.split("=", 1)[1])
        for line in proc.stdout.splitlines()
        for word in line.split()
        if word.startswith("mark=")
    ]


def addresses(family: int) -> dict[str, str]:
    v4 = family == 4
    return {
        "res": L.RES_V4 if v4 else L.RES_V6,
        "bot": L.BOT_V4 if v4 else L.BOT_V6,
        "biz": L.BIZ_V4 if v4 else L.BIZ_V6,
        "mx": L.NET_MX_V4 if v4 else L.NET_MX_V6,
        "mta": L.ISP_MTA_V4 if v4 else L.ISP_MTA_V6,
    }


@pytest.mark.parametrize("family", [4, 6])
def test_a_mark_set_upstream_is_not_a_verdict(
    start: StartFn, lab: Lab, tmp_path: Path, family: int
) -> None:
    """An admin's mark rules ahead of op25b (a multi-WAN CONNMARK restore, and a mark
    that happens to equal op25b's accept) do not let a blocked subscriber through."""
    a = addresses(family)
    accept = f"{ACCEPT_MARK:#x}/{MARK_MASK:#x}"
    upstream = [
        ["-t", "mangle", "-A", "PREROUTING", "-j", "CONNMARK", "--restore-mark"],
        [
            "-t",
            "mangle",
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "--dport",
            "25",
            "-j",
            "MARK",
            "--set-xmark",
            accept,
        ],
    ]
    forget_connections(lab)
    r = start(write_policy(tmp_path / "p.yaml", "reject"))
    with rules_in(lab.rtr, family, upstream), rules_in(lab.net, family, [count_at(a["bot"], 25)]):
        # No prior state at all: SYN, bare ACK, data, FIN.
        craft(
            lab.bot,
            [
                pkt(a["bot"], a["mx"], 40100, 25, "S", 100),
                pkt(a["bot"], a["mx"], 40101, 25, "A", 100, 1),
                pkt(a["bot"], a["mx"], 40101, 25, "PA", 100, 1, "EHLO bot\r\n"),
                pkt(a["bot"], a["mx"], 40101, 25, "FA", 111, 1),
            ],
        )
        # And a real client, refused.
        assert outcomes(probes(lab.bot, [(a["bot"], a["mx"], 25)], timeout=5)) == ["refused"]
        assert arrived(lab, a["bot"]) == 0
        # The same marks on legitimate traffic change nothing.
        legit = probes(lab.biz, [(a["biz"], a["mx"], 25)], timeout=5)
        legit += probes(lab.res, [(a["res"], a["mta"], 25), (a["res"], a["mx"], 587)], timeout=5)
        assert [x.ok for x in legit] == [True, True, True]
    assert r.stop() == 0
    c = r.final_counters()
    # 4 crafted + the probe's SYN: every one decided by the daemon, none skipped.
    assert c["reject"] == "5"
    assert (c["exempt_plan"], c["provider_mta"]) == ("1", "1")


@pytest.mark.parametrize("family", [4, 6])
def test_a_connection_opened_from_outside_is_not_trusted(
    start: StartFn, lab: Lab, tmp_path: Path, family: int
) -> None:
    """An outside host "connects" from port 25 to the subscriber (a conntrack entry the
    subscriber did not originate); the subscriber's answers to it -- SYN-ACK, ACK,
    SMTP data, all TCP to port 25 in conntrack's reply direction -- are decided, so a
    blocked subscriber's never reach the outside host, an exempt one's all do."""
    a = addresses(family)
    forget_connections(lab)
    r = start(write_policy(tmp_path / "p.yaml", "drop"))
    no_resets = ["-t", "filter", "-A", "OUTPUT", "-p", "tcp", "--tcp-flags", "RST", "RST"]
    no_resets += ["-j", "DROP"]  # keep the hosts' own stacks from closing the state
    answers = 5
    counting = [count_at(a[s], 25) for s in ("res", "biz")]
    with (
        rules_in(lab.res, family, [no_resets, count_at(a["mx"], EXTERNAL_PORT)]),
        rules_in(lab.biz, family, [no_resets]),
        rules_in(lab.net, family, [no_resets, *counting]),
    ):
        for who in ("res", "biz"):
            sub = a[who]
            craft(lab.net, [pkt(a["mx"], sub, 25, EXTERNAL_PORT, "S", 1000)])
            craft(
                getattr(lab, who),
                [
                    pkt(sub, a["mx"], EXTERNAL_PORT, 25, "SA", 5000, 1001),
                    pkt(sub, a["mx"], EXTERNAL_PORT, 25, "A", 5001, 1001),
                    pkt(sub, a["mx"], EXTERNAL_PORT, 25, "PA", 5001, 1001, "EHLO bot\r\n"),
                    pkt(sub, a["mx"], EXTERNAL_PORT, 25, "PA", 5011, 1001, "MAIL FROM:<>\r\n"),
                    pkt(sub, a["mx"], EXTERNAL_PORT, 25, "FA", 5025, 1001),
                ],
            )
        # The outside host's SYN did reach the subscriber (the state existed) ...
        assert received(lab.res, family, a["mx"]) == 1
        # ... and not one of the blocked subscriber's answers reached the outside host,
        assert arrived(lab, a["res"]) == 0
        # while the same crafted answers from an exempt subscriber all pass the router.
        assert arrived(lab, a["biz"]) == answers
    assert r.stop() == 0
    c = r.final_counters()
    # Every reply-direction packet was decided on its own (none trusted).
    assert (c["drop"], c["exempt_plan"]) == (str(answers), str(answers))


@pytest.mark.parametrize("fast_path", [False, True])
@pytest.mark.parametrize("family", [4, 6])
def test_legitimate_flows_are_decided_once_and_then_trusted(
    start: StartFn, lab: Lab, tmp_path: Path, family: int, fast_path: bool
) -> None:
    """Real SMTP sessions (banner, QUIT): provider MTA relay, business plan direct, a
    blocked subscriber to the provider MTA, 587/465. Only the SYNs of subscriber flows
    to port 25 are decided; their later packets pass on the connmark op25b set."""
    a = addresses(family)
    policy = write_policy(tmp_path / "p.yaml", "reject")
    forget_connections(lab)
    r = start(with_daemon_keys(policy, fast_path=True) if fast_path else policy)
    got = probes(lab.isp, [(a["mta"], a["mx"], 25)], timeout=5)  # relay: not a subscriber
    got += probes(lab.biz, [(a["biz"], a["mx"], 25)], timeout=5)
    got += probes(
        lab.res,
        [(a["res"], a["mta"], 25), (a["res"], a["mx"], 587), (a["res"], a["mx"], 465)],
        timeout=5,
    )
    assert [x.ok for x in got] == [True] * 5, got
    trusted = TRUSTED_CONNMARK
    assert [m & MARK_MASK for m in conntrack_marks(lab, family, a["biz"], a["mx"])] == [trusted]
    assert [m & MARK_MASK for m in conntrack_marks(lab, family, a["res"], a["mta"])] == [trusted]
    # The relay never entered op25b's chains, so its connection carries no mark of ours.
    assert [m & MARK_MASK for m in conntrack_marks(lab, family, a["mta"], a["mx"])] == [0]
    blocked = probes(lab.res, [(a["res"], a["mx"], 25)], timeout=5)
    assert outcomes(blocked) == ["refused"]
    assert r.stop() == 0
    c = r.final_counters()
    decided = "0" if fast_path else "1"  # one SYN per subscriber flow, or none (fast path)
    assert (c["exempt_plan"], c["provider_mta"], c["reject"]) == (decided, decided, "1")
    assert c["not_subscriber"] == "0"  # the relay's SYN never reached userspace


HOLD = """
import socket, sys
src, dst = sys.argv[1], sys.argv[2]
s = socket.create_connection((dst, 25), timeout=5, source_address=(src, 0))
print(s.recv(512).decode().split("\\r\\n")[0], flush=True)
sys.stdin.readline()
s.settimeout(3)
try:
    s.sendall(b"EHLO held\\r\\n")
    print("reply" if s.recv(512) else "closed", flush=True)
except TimeoutError:
    print("timeout", flush=True)
"""


@pytest.mark.parametrize("family", [4, 6])
def test_connections_from_before_the_daemon_are_decided(
    start: StartFn, lab: Lab, tmp_path: Path, family: int
) -> None:
    """SMTP sessions opened while no op25b rules were in the kernel are ESTABLISHED but
    not op25b's: their next packets are decided (blocked subscriber cut, exempt kept)."""
    a = addresses(family)
    # A router tracks connections anyway (NAT, its own firewall); without a rule that
    # needs conntrack the kernel would not track these sessions before op25b starts.
    tracking = [["-t", "filter", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED"]]
    with rules_in(lab.rtr, family, tracking):
        forget_connections(lab)
        held_sessions_are_decided(start, lab, tmp_path, a)


def held_sessions_are_decided(start: StartFn, lab: Lab, tmp_path: Path, a: dict[str, str]) -> None:
    held = {
        who: popen_in(
            getattr(lab, who),
            [sys.executable, "-c", HOLD, a[who], a["mx"]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for who in ("res", "biz")
    }
    try:
        for proc in held.values():
            assert proc.stdout is not None and proc.stdout.readline().startswith("220")
        r = start(write_policy(tmp_path / "p.yaml", "drop"))
        answers = {}
        for who, proc in held.items():
            out, _ = proc.communicate("go\n", timeout=30)
            answers[who] = out.strip()
        assert answers == {"res": "timeout", "biz": "reply"}
    finally:
        for proc in held.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert r.stop() == 0
    c = r.final_counters()
    assert int(c["drop"]) >= 1 and int(c["exempt_plan"]) >= 1


def test_a_deleted_nft_table_is_put_back(start: StartFn, lab: Lab, tmp_path: Path) -> None:
    """Someone deletes only op25b's nft table (the mark clearing): the watchdog
    notices, says so, and puts it back; a pre-set mark is then no verdict again."""
    a = addresses(4)
    r = start(write_policy(tmp_path / "p.yaml", "reject"))
    run_in(lab.rtr, ["nft", "delete", "table", "inet", "op25b"], check=True)
    line = r.syslog.wait_for(lambda m: "kernel rules damaged, repaired" in m, what="repair")
    assert "nft table inet op25b is missing" in line
    assert rules.read_state(["ip", "netns", "exec", lab.rtr]).nft == expected_table((25,))
    accept = f"{ACCEPT_MARK:#x}/{MARK_MASK:#x}"
    upstream = [["-t", "mangle", "-A", "PREROUTING", "-j", "MARK", "--set-xmark", accept]]
    with rules_in(lab.rtr, 4, upstream):
        assert outcomes(probes(lab.bot, [(a["bot"], a["mx"], 25)], timeout=5)) == ["refused"]
    assert r.stop() == 0
    assert int(r.final_counters()["rules_repaired"]) >= 1


SEND_AH = """
import sys
from scapy.all import AH, IP, IPv6, TCP, conf, send
conf.verb = 0
src, dst, dport = sys.argv[1], sys.argv[2], int(sys.argv[3])
ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
for i in range(5):
    send(ip / AH(spi=0x100 + i, seq=i) / TCP(sport=41000 + i, dport=dport, flags="S"))
"""


def ah_counter(family: int, src: str) -> list[str]:
    """Counts AH from ``src`` arriving at the MX host (the MX's stack drops it anyway)."""
    return ["-t", "filter", "-A", "INPUT", "-s", src, "-p", "ah"]


@pytest.mark.parametrize("family", [4, 6])
def test_tcp_inside_ah_is_decided_too(
    start: StartFn, lab: Lab, tmp_path: Path, family: int
) -> None:
    # Found by the fuzz campaign: "-p tcp" stops at an AH header, so a SYN behind AH
    # used to pass the router undecided. Now subscribers' AH is queued and decided.
    a = addresses(family)
    start(write_policy(tmp_path / "p.yaml", "drop"))
    with rules_in(lab.net, family, [ah_counter(family, a["bot"]), ah_counter(family, a["biz"])]):
        for who in ("bot", "biz"):
            run_in(
                getattr(lab, who),
                [sys.executable, "-c", SEND_AH, a[who], a["mx"], "25"],
                check=True,
                capture_output=True,
            )
        assert received(lab.net, family, a["bot"]) == 0  # blocked subscriber: dropped
        assert received(lab.net, family, a["biz"]) == 5  # exempt plan: decided, let through


_FORGED = f"--set-xmark {ACCEPT_MARK:#x}/{MARK_MASK:#x}"
# Rules that write op25b's accept mark *between* its two tables (after the nft clearing
# at -151 and mangle's ask, before filter enforces): (add, remove) shell commands.
FORGERS = {
    # After op25b's jump in the same chain: it runs on the daemon's repeat pass.
    "mangle-after-jump": (
        f"iptables -t mangle -A FORWARD -p tcp --dport 25 -j MARK {_FORGED}",
        f"iptables -t mangle -D FORWARD -p tcp --dport 25 -j MARK {_FORGED}",
    ),
    # The other iptables backend: its own hook entries, invisible to iptables-nft.
    "iptables-legacy": (
        f"iptables-legacy -t mangle -A FORWARD -p tcp --dport 25 -j MARK {_FORGED}",
        f"iptables-legacy -t mangle -D FORWARD -p tcp --dport 25 -j MARK {_FORGED}",
    ),
    # An admin's own nft base chain between the priorities.
    "nft-chain": (
        "nft add table ip adm && nft add chain ip adm fw"
        " '{ type filter hook forward priority -100; }'"
        f" && nft add rule ip adm fw tcp dport 25 meta mark set {ACCEPT_MARK:#x}",
        "nft delete table ip adm",
    ),
}


@pytest.mark.parametrize("forger", list(FORGERS))
def test_an_accept_mark_forged_between_the_tables_is_not_a_verdict(
    start: StartFn, lab: Lab, tmp_path: Path, forger: str
) -> None:
    """Found by the adversarial review: each of these turned the daemon's reject (and,
    for the last two, the daemon-down fallback) into an accept for the bot."""
    add, remove = FORGERS[forger]
    forget_connections(lab)
    r = start(write_policy(tmp_path / "p.yaml", "reject"))
    bot = (L.BOT_V4, L.NET_MX_V4, 25)
    legit = [(L.BIZ_V4, L.NET_MX_V4, 25), (L.RES_V4, L.ISP_MTA_V4, 25)]
    run_in(lab.rtr, ["sh", "-c", add], check=True)
    try:
        assert outcomes(probes(lab.bot, [bot], timeout=5)) == ["refused"]
        assert [x.ok for x in probes(lab.biz, legit[:1]) + probes(lab.res, legit[1:])] == [
            True,
            True,
        ]
        r.daemon.kill9()  # the static fallback, with the forger still in place
        assert outcomes(probes(lab.bot, [bot], timeout=5)) == ["refused"]
        assert [x.ok for x in probes(lab.biz, legit[:1]) + probes(lab.res, legit[1:])] == [
            True,
            True,
        ]
        assert TRUSTED_CONNMARK not in conntrack_marks(lab, 4, L.BOT_V4, L.NET_MX_V4)
    finally:
        run_in(lab.rtr, ["sh", "-c", remove], check=False)
