"""``op25b replay NEW CAPTURE --against OLD``, in-process through ``cli.main``.

OLD is policies/example.yaml; NEW changes it the way a weekly review would: an
exemption for one subscriber, a /25 moved into the business plan, a new provider MTA
and a newly guarded port. Every frame of the scapy-built capture carries the decision
each policy must give it (or that it is not decided at all); the expected changes are
counted from those annotations, and the deciding lines are looked up in the files.
"""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw
from scapy.utils import wrpcap

from op25b.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "example.yaml"
NOW = "2026-01-01T00:00:00Z"
RES, RES2, MOVED, BOT, BIZ = (
    "100.64.0.10",
    "100.64.0.20",
    "100.64.1.77",
    "100.64.0.66",
    "198.51.100.10",
)
MX, NEW_MTA, MTA, RES6, MX6 = (
    "192.0.2.25",
    "192.0.2.35",
    "203.0.113.25",
    "2001:db8:100::10",
    "2001:db8:ff::25",
)

BLOCKED = ("drop", "blocked", "residential")
EXEMPTION = ("accept", "exemption", "residential")
EXEMPT_PLAN = ("accept", "exempt_plan", "business-static")
PROVIDER = ("accept", "provider_mta", None)
NOT_GUARDED = ("accept", "not_guarded", None)


@dataclass(frozen=True)
class Frame:
    pkt: ScapyPacket
    before: tuple[str, str, str | None] | None = None  # None: not decided
    after: tuple[str, str, str | None] | None = None


def tcp(src: str, dst: str, sport: int, dport: int = 25, flags: str = "S") -> ScapyPacket:
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return (
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / ip
        / TCP(sport=sport, dport=dport, flags=flags)
    )


def capture() -> list[Frame]:
    f = [
        # the exempted subscriber: two connections, one SYN retransmitted
        Frame(tcp(RES, MX, 40001), BLOCKED, EXEMPTION),
        Frame(tcp(RES, MX, 40001), BLOCKED, EXEMPTION),
        Frame(tcp(RES, "192.0.2.45", 40002), BLOCKED, EXEMPTION),
        # the /25 that moved to the business plan
        Frame(tcp(MOVED, MX, 40003), BLOCKED, EXEMPT_PLAN),
        # the new provider MTA: blocked before; accepted after, so once it answers,
        # the rest of that connection is established under NEW and not decided
        Frame(tcp(RES2, NEW_MTA, 40004), BLOCKED, PROVIDER),
        Frame(tcp(NEW_MTA, RES2, 25, 40004, "SA")),
        Frame(tcp(RES2, NEW_MTA, 40004, flags="A")),
        Frame(tcp(RES2, NEW_MTA, 40004, flags="PA") / Raw(b"EHLO x\r\n")),
        # a business subscriber to the new MTA: same verdict, another reason
        Frame(tcp(BIZ, NEW_MTA, 40005), EXEMPT_PLAN, PROVIDER),
        # 2525 is guarded in NEW only
        Frame(tcp(BOT, MX, 40006, dport=2525), NOT_GUARDED, BLOCKED),
        # unchanged: a blocked bot, a v6 subscriber, the old provider MTA
        *[Frame(tcp(BOT, f"192.0.2.{100 + i}", 41000 + i), BLOCKED, BLOCKED) for i in range(3)],
        Frame(tcp(RES6, MX6, 40007), BLOCKED, BLOCKED),
        Frame(tcp(RES2, MTA, 40008), PROVIDER, PROVIDER),
        # never decided: submission
        Frame(tcp(RES, MX, 40009, dport=587)),
    ]
    for i, frame in enumerate(f):
        frame.pkt.time = 1_700_000_000 + i
    return f


def new_policy(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text()
    for old, new in [
        ("guarded_ports: [25]", "guarded_ports: [25, 2525]"),
        (
            "      - 100.64.200.0/29        # a business customer inside the residential /16\n",
            "      - 100.64.200.0/29        # a business customer inside the residential /16\n"
            "      - 100.64.1.0/25          # moved from residential, ticket CHG-7\n",
        ),
        (
            'addresses: [203.0.113.25, "2001:db8:25::25"]',
            'addresses: [203.0.113.25, "2001:db8:25::25", 192.0.2.35]',
        ),
        (
            "exemptions:\n",
            "exemptions:\n  - prefix: 100.64.0.10/32\n    ticket: ABUSE-2000\n"
            "    expires: 2027-06-30\n    reason: own MX, verified\n",
        ),
    ]:
        assert old in text
        text = text.replace(old, new, 1)
    (tmp_path / "pools").mkdir()
    shutil.copy(EXAMPLE.parent / "pools" / "mobile.txt", tmp_path / "pools" / "mobile.txt")
    path = tmp_path / "new.yaml"
    path.write_text(text)
    return path


def location(path: Path, needle: str, at: str | None = None) -> str:
    """``path:line:col`` of the first line starting with ``needle`` (comments aside),
    the column that of ``at`` in it (default: of ``needle``)."""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line and not line.lstrip().startswith("#"):
            return f"{path}:{n}:{line.find(at or needle) + 1}"
    raise AssertionError(needle)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


def short(d: dict[str, str | None]) -> tuple[str | None, str | None, str | None]:
    return d["verdict"], d["reason"], d["plan"]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, list[Frame]]:
    frames = capture()
    cap = tmp_path / "yesterday.pcap"
    wrpcap(str(cap), [f.pkt for f in frames])
    return new_policy(tmp_path), cap, frames


def test_changes_counted_from_the_annotations(files: tuple[Path, Path, list[Frame]]) -> None:
    new, cap, frames = files
    code, out, err = run(
        "replay", str(new), str(cap), "--against", str(EXAMPLE), "--json", "--now", NOW
    )
    assert (code, err) == (1, "")
    doc = json.loads(out)
    decided = [f for f in frames if f.before is not None]
    changed = [f for f in decided if f.before != f.after]
    assert doc["decided"] == len(decided)
    assert doc["established_skipped"] == 2
    assert doc["changed_attempts"] == len(changed)
    attempts = Counter((f.before, f.after) for f in changed)
    got = {(short(c["before"]), short(c["after"])): c["attempts"] for c in doc["changes"]}
    assert got == dict(attempts)
    # biggest change first: the exemption, 3 attempts in 2 connections to 2 MXes
    top = doc["changes"][0]
    assert (short(top["before"]), short(top["after"])) == (BLOCKED, EXEMPTION)
    assert (top["attempts"], top["connections"]) == (3, 2)
    assert top["pairs"] == [
        {"source": RES, "destination": MX, "port": 25, "connections": 1, "attempts": 2},
        {"source": RES, "destination": "192.0.2.45", "port": 25, "connections": 1, "attempts": 1},
    ]


def test_deciding_lines_come_from_each_file(files: tuple[Path, Path, list[Frame]]) -> None:
    new, cap, _ = files
    _, out, _ = run("replay", str(new), str(cap), "--against", str(EXAMPLE), "--json", "--now", NOW)
    by = {(short(c["before"]), short(c["after"])): c for c in json.loads(out)["changes"]}
    exemption = by[(BLOCKED, EXEMPTION)]
    assert exemption["before"]["rule"] == location(EXAMPLE, "100.64.0.0/16")
    assert exemption["after"]["rule"] == location(new, "prefix: 100.64.0.10/32")
    moved = by[(BLOCKED, EXEMPT_PLAN)]
    assert moved["after"]["rule"] == location(new, "100.64.1.0/25")
    assert by[(BLOCKED, PROVIDER)]["after"]["rule"] == location(new, "192.0.2.35")
    assert by[(NOT_GUARDED, BLOCKED)]["before"]["rule"] == location(
        EXAMPLE, "guarded_ports:", "[25]"
    )


def test_text_table(files: tuple[Path, Path, list[Frame]]) -> None:
    new, cap, frames = files
    code, out, err = run("replay", str(new), str(cap), "--against", str(EXAMPLE), "--now", NOW)
    assert (code, err) == (1, "")
    lines = out.splitlines()
    n_decided = sum(f.before is not None for f in frames)
    assert lines[0] == (
        f"{cap}: {len(frames)} packets read, {n_decided} attempts decided under both "
        "policies, 7 change (6 connections)"
    )
    assert lines[2] == "change 1: 3 attempts, 2 connections"
    assert (
        lines[3]
        == f"  before: drop, blocked (plan residential)  [{location(EXAMPLE, '100.64.0.0/16')}]"
    )
    assert lines[4].startswith("  after:  accept, exemption (plan residential)  [")
    assert lines[6].split() == [RES, MX, "25", "1", "2"]
    assert sum(line.startswith("change ") for line in lines) == 5
    # --top 1 keeps one pair per change and says how many are left out
    _, out, _ = run(
        "replay", str(new), str(cap), "--against", str(EXAMPLE), "--now", NOW, "--top", "1"
    )
    assert "    ... 1 more (--top, --json)" in out.splitlines()


def test_no_change_exits_0(files: tuple[Path, Path, list[Frame]]) -> None:
    _, cap, frames = files
    code, out, err = run(
        "replay", str(EXAMPLE), str(cap), "--against", str(EXAMPLE), "--json", "--now", NOW
    )
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert (doc["changes"], doc["changed_attempts"]) == ([], 0)
    # 2525 is not guarded; the connection to 192.0.2.35 is blocked, so its ACK and
    # data are decided too (nothing answered an accepted SYN)
    assert doc["decided"] == sum(f.before is not None for f in frames) - 1 + 2


def test_bad_old_policy_is_a_one_line_error(
    tmp_path: Path, files: tuple[Path, Path, list[Frame]]
) -> None:
    new, cap, _ = files
    bad = tmp_path / "old.yaml"
    bad.write_text(EXAMPLE.read_text().replace("action: drop", "action: dorp"))
    code, out, err = run("replay", str(new), str(cap), "--against", str(bad), "--now", NOW)
    assert (code, out) == (1, "")
    assert err.startswith(f"{location(bad, 'dorp')}: ") and err.count("\n") == 1
