"""Tests for ``op25b replay``: a capture written with scapy, run in-process through
``cli.main`` against policies/example.yaml, with exact totals.

Every frame of the capture carries what the design says must happen to it; the
expected totals are counted from those annotations, never typed in as numbers.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

scapy_all = pytest.importorskip("scapy.all", reason="replay needs the [replay] extra (scapy)")
from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import ARP, Ether  # noqa: E402
from scapy.packet import Packet as ScapyPacket  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from scapy.utils import wrpcap, wrpcapng  # noqa: E402

from op25b.cli import main  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "example.yaml"
NOW = "2026-01-01T00:00:00Z"

RES, RES2, BOT, LONE = "100.64.0.10", "100.64.0.20", "100.64.0.66", "100.64.0.30"
BIZ, MTA, RES6 = "198.51.100.10", "203.0.113.25", "2001:db8:100::10"
MXES = ["192.0.2.25", "192.0.2.35", "192.0.2.45"]
BOT_MXES = [f"192.0.2.{100 + i}" for i in range(10)]
MX6 = "2001:db8:ff::25"


@dataclass(frozen=True)
class Frame:
    """One captured frame and what replay must make of it."""

    pkt: ScapyPacket
    # "decided" (with verdict/reason), "established" (skipped: part of an accepted
    # connection), "ignored" (not something the kernel would queue)
    outcome: str
    verdict: str | None = None
    reason: str | None = None
    ip: bool = True


def eth() -> Ether:
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def syn(src: str, dst: str, sport: int, dport: int = 25, flags: str = "S") -> ScapyPacket:
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return eth() / ip / TCP(sport=sport, dport=dport, flags=flags, seq=1000)


def blocked(p: ScapyPacket) -> Frame:
    return Frame(p, "decided", "drop", "blocked")


def capture_frames() -> list[Frame]:
    frames: list[Frame] = []
    # a residential subscriber trying three MXes directly, the first SYN retransmitted
    frames.append(blocked(syn(RES, MXES[0], 40001)))
    frames.append(blocked(syn(RES, MXES[0], 40001)))
    frames += [blocked(syn(RES, mx, 40002 + i)) for i, mx in enumerate(MXES[1:])]
    # a residential client using the provider MTA: SYN decided, the rest of the
    # accepted, answered connection is not
    frames.append(Frame(syn(RES2, MTA, 40010), "decided", "accept", "provider_mta"))
    frames.append(
        Frame(
            eth() / IP(src=MTA, dst=RES2) / TCP(sport=25, dport=40010, flags="SA", ack=1001),
            "ignored",
        )
    )
    frames.append(Frame(syn(RES2, MTA, 40010, flags="A"), "established"))
    frames.append(
        Frame(syn(RES2, MTA, 40010, flags="PA") / Raw(b"EHLO res2.example\r\n"), "established")
    )
    # submission: not a guarded port, never queued
    frames.append(Frame(syn(RES, MXES[0], 40020, dport=587), "ignored"))
    # an exempt business subscriber
    frames.append(Frame(syn(BIZ, MXES[0], 40030), "decided", "accept", "exempt_plan"))
    # a bot bursting to ten MXes
    frames += [blocked(syn(BOT, mx, 41000 + i)) for i, mx in enumerate(BOT_MXES)]
    # IPv6 residential
    frames.append(blocked(syn(RES6, MX6, 40040)))
    # not TCP, not IP
    frames.append(
        Frame(eth() / IP(src=RES, dst="192.0.2.53") / UDP(sport=5353, dport=53), "ignored")
    )
    frames.append(Frame(eth() / ARP(psrc=RES, pdst="100.64.0.1"), "ignored", ip=False))
    # a bare ACK to port 25 with no connection before it: conntrack would call it NEW
    # and the kernel rules queue it, so it is decided
    frames.append(blocked(syn(LONE, "192.0.2.77", 40099, flags="A")))
    for i, f in enumerate(frames):
        f.pkt.time = 1_700_000_000 + i  # deterministic timestamps
    return frames


def write(path: Path, frames: list[Frame], ng: bool = False) -> None:
    (wrpcapng if ng else wrpcap)(str(path), [f.pkt for f in frames])


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def expected_blocked(frames: list[Frame]) -> list[dict[str, Any]]:
    """Blocked sources as replay --json must list them, from the annotations."""
    per: dict[str, list[str]] = {}
    for f in frames:
        if f.reason == "blocked":
            ip = f.pkt[IP] if f.pkt.haslayer(IP) else f.pkt[IPv6]
            per.setdefault(ip.src, []).append(ip.dst)
    rows = [
        {
            "source": src,
            "plan": "residential",
            "packets": len(dsts),
            "distinct_destinations": len(set(dsts)),
            "destinations": sorted(set(dsts)),
        }
        for src, dsts in per.items()
    ]
    # most attempts first, then most destinations, then address text
    rows.sort(key=lambda r: (-r["packets"], -r["distinct_destinations"], r["source"]))
    return rows


@pytest.mark.parametrize("ng", [False, True], ids=["pcap", "pcapng"])
def test_replay_json_exact_totals(tmp_path: Path, ng: bool) -> None:
    frames = capture_frames()
    cap = tmp_path / ("c.pcapng" if ng else "c.pcap")
    write(cap, frames, ng)
    code, out, err = run("replay", str(EXAMPLE), str(cap), "--json", "--now", NOW)
    assert code == 0, err
    doc = json.loads(out)
    decided = [f for f in frames if f.outcome == "decided"]
    assert doc["packets_read"] == len(frames)
    assert doc["ip_packets"] == sum(f.ip for f in frames)
    assert doc["decided"] == len(decided)
    assert doc["established_skipped"] == sum(f.outcome == "established" for f in frames)
    assert doc["parse_errors"] == 0
    assert doc["verdicts"] == dict(sorted(Counter(f.verdict for f in decided).items()))
    assert doc["reasons"] == dict(sorted(Counter(f.reason for f in decided).items()))
    # not_guarded never shows up: 587 is not queued by the kernel, so not replayed
    assert "not_guarded" not in doc["reasons"]
    assert doc["blocked_sources"] == expected_blocked(frames)


def test_replay_blocked_sources_shape(tmp_path: Path) -> None:
    """Spot-check the facts the design cares about, independently of the helper above."""
    cap = tmp_path / "c.pcap"
    write(cap, capture_frames())
    code, out, _ = run("replay", str(EXAMPLE), str(cap), "--json", "--now", NOW)
    assert code == 0
    by_src = {b["source"]: b for b in json.loads(out)["blocked_sources"]}
    assert set(by_src) == {BOT, RES, RES6, LONE}
    assert (by_src[BOT]["packets"], by_src[BOT]["distinct_destinations"]) == (10, 10)
    # the retransmitted SYN counts as an attempt but not as another destination
    assert (by_src[RES]["packets"], by_src[RES]["distinct_destinations"]) == (4, 3)
    assert by_src[RES]["destinations"] == sorted(MXES)
    assert json.loads(out)["blocked_sources"][0]["source"] == BOT
    assert RES2 not in by_src and BIZ not in by_src


def test_replay_text_names_the_top_blocked_source(tmp_path: Path) -> None:
    frames = capture_frames()
    cap = tmp_path / "c.pcap"
    write(cap, frames)
    code, out, err = run("replay", str(EXAMPLE), str(cap), "--now", NOW)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    n_decided = sum(f.outcome == "decided" for f in frames)
    assert lines[0].startswith(f"{cap}: {len(frames)} packets read, {n_decided} decided")
    header = next(i for i, line in enumerate(lines) if line.startswith("blocked sources"))
    assert lines[header] == "blocked sources (4):"
    top = lines[header + 2].split()
    assert top == [BOT, "residential", "10", "10"]
    # --top limits the table
    code, out, _ = run("replay", str(EXAMPLE), str(cap), "--now", NOW, "--top", "1")
    assert code == 0
    assert BOT in out and f"  {RES} " not in out


def test_monitor_accepted_flow_is_skipped_once_answered(tmp_path: Path) -> None:
    """Under action: monitor a blocked SYN passes; once the MX answers, the rest of
    that connection is established and skipped, like conntrack would."""
    policy_dir = tmp_path / "policies"
    (policy_dir / "pools").mkdir(parents=True)
    (policy_dir / "pools" / "mobile.txt").write_text(
        (EXAMPLE.parent / "pools" / "mobile.txt").read_text()
    )
    policy = policy_dir / "monitor.yaml"
    policy.write_text(EXAMPLE.read_text().replace("\naction: drop\n", "\naction: monitor\n"))
    mx = MXES[0]
    frames = [
        syn(RES, mx, 40001),
        eth() / IP(src=mx, dst=RES) / TCP(sport=25, dport=40001, flags="SA"),
        syn(RES, mx, 40001, flags="A"),
        syn(RES, mx, 40001, flags="PA") / Raw(b"MAIL FROM:<x@example.org>\r\n"),
        syn(RES, mx, 40002, flags="A"),  # another port: no connection, decided
    ]
    cap = tmp_path / "m.pcap"
    wrpcap(str(cap), frames)
    code, out, err = run("replay", str(policy), str(cap), "--json", "--now", NOW)
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["decided"], doc["established_skipped"]) == (2, 2)
    assert doc["verdicts"] == {"monitor": 2}
    assert doc["reasons"] == {"blocked": 2}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a capture file at all\n" * 4, "cannot read capture"),
        (b"", "cannot read capture"),
        (b"\xd4\xc3\xb2", "cannot read capture"),  # a cut pcap magic
    ],
    ids=["text", "empty", "cut-magic"],
)
def test_corrupt_capture_exits_1_cleanly(tmp_path: Path, content: bytes, message: str) -> None:
    cap = tmp_path / "bad.pcap"
    cap.write_bytes(content)
    code, out, err = run("replay", str(EXAMPLE), str(cap), "--now", NOW)
    assert (code, out) == (1, "")
    assert err.startswith(f"op25b replay: {cap}: {message}")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_truncated_last_record_is_counted_unparsable(tmp_path: Path) -> None:
    frames = [syn(RES, mx, 40001 + i) for i, mx in enumerate(MXES)]
    cap = tmp_path / "t.pcap"
    wrpcap(str(cap), frames)
    data = cap.read_bytes()
    # keep the last record's header and its IP header, lose its TCP header
    cap.write_bytes(data[: len(data) - len(bytes(frames[-1])) + 14 + 20 + 4])
    code, out, err = run("replay", str(EXAMPLE), str(cap), "--json", "--now", NOW)
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["packets_read"], doc["decided"], doc["parse_errors"]) == (3, 2, 1)
