"""``op25b replay``: a packet capture through the policy, offline.

The only non-test module that imports scapy (reading pcap/pcapng is what scapy is
for; the daemon's hot path never uses it). Each IP packet is re-serialised to raw bytes
and handed to the same ``packet.parse`` + ``decide`` the daemon runs, so a replay
exercises exactly the production decision path.

Which packets count: the ones the kernel rules would hand to the daemon — TCP to a
guarded port that is not part of a connection already accepted. A replay has no
conntrack, so it approximates "already accepted" by tracking flows whose SYN it saw
accepted and whose peer answered (SYN-ACK); everything else that opens or pretends to
belong to a connection is decided, as in the kernel.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from op25b.dataplane.packet import IPV6_EXTENSIONS_WALKED, Packet, PacketError, parse
from op25b.errors import InputError
from op25b.policy.addr import format_address
from op25b.policy.compiled import CompiledPolicy
from op25b.policy.decide import Decision, Reason, decide

_SYN = 0x02
_ACK = 0x10
_RST = 0x04


class CaptureError(InputError):
    """The capture file cannot be read."""


@dataclass
class BlockedSource:
    """What a replay saw of one blocked source."""

    source: str
    plan: str | None
    packets: int = 0
    destinations: set[str] = field(default_factory=set)
    first_seen: float = 0.0
    last_seen: float = 0.0


@dataclass
class ReplayResult:
    """Totals of a replay."""

    packets_read: int = 0
    ip_packets: int = 0
    decided: int = 0
    established_skipped: int = 0
    parse_errors: int = 0
    by_verdict: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    blocked: dict[str, BlockedSource] = field(default_factory=dict)
    decisions: list[tuple[float, Packet, Decision]] = field(default_factory=list)


def _ip_payloads(path: str) -> Iterator[tuple[float, bytes]]:
    """(timestamp, raw IP bytes) of every IPv4/IPv6 packet in a pcap/pcapng file."""
    try:
        from scapy.error import Scapy_Exception
        from scapy.layers.inet import IP
        from scapy.layers.inet6 import IPv6
        from scapy.utils import PcapReader
    except ImportError as e:  # pragma: no cover - install problem
        raise CaptureError(f"replay needs scapy: pip install 'op25b[replay]' ({e})") from e
    try:
        # Any: scapy's annotations differ between releases (2.6 types the reader as
        # yielding raw tuples); this is the one place we touch its objects.
        reader: Any = PcapReader(path)
    except (OSError, Scapy_Exception) as e:
        raise CaptureError(f"{path}: cannot read capture: {e}") from e
    with reader:
        try:
            for pkt in reader:
                layer = pkt.getlayer(IP) or pkt.getlayer(IPv6)
                if layer is None:
                    yield float(pkt.time), b""
                    continue
                yield float(pkt.time), bytes(layer)
        except (Scapy_Exception, EOFError, ValueError) as e:
            raise CaptureError(f"{path}: capture ends badly: {e}") from e


# TCP itself, or an IPv6 extension header parse() walks on its way to TCP.
_V6_TCP_OR_EXTENSION = IPV6_EXTENSIONS_WALKED | {6}


def _may_be_tcp(raw: bytes) -> bool:
    """False only for packets whose IP header names another transport outright."""
    if raw[0] >> 4 == 4 and len(raw) >= 20:
        return raw[9] == 6
    if raw[0] >> 4 == 6 and len(raw) >= 40:
        return raw[6] in _V6_TCP_OR_EXTENSION
    return True  # too short or odd: let parse() say what is wrong with it


def replay(compiled: CompiledPolicy, path: str, now: datetime, keep: bool = False) -> ReplayResult:
    """Run every decidable packet of the capture through ``decide``."""
    res = ReplayResult()
    accepted_syn: set[tuple[int, int, int, int, int]] = set()
    established: set[tuple[int, int, int, int, int]] = set()
    guarded = compiled.guarded
    for ts, raw in _ip_payloads(path):
        res.packets_read += 1
        if not raw:
            continue
        res.ip_packets += 1
        if not _may_be_tcp(raw):
            # UDP, ICMP, ...: the kernel rules never queue these, so they are neither
            # decided nor "unparsable" (a capture full of DNS is not a broken capture).
            continue
        try:
            pkt = parse(raw)
        except PacketError:
            res.parse_errors += 1
            continue
        flow = (pkt.version, pkt.src, pkt.dst, pkt.sport, pkt.dport)
        if pkt.sport in guarded and pkt.flags & (_SYN | _ACK) == (_SYN | _ACK):
            # A server's SYN-ACK: the flow it answers is now established (if we let it).
            back = (pkt.version, pkt.dst, pkt.src, pkt.dport, pkt.sport)
            if back in accepted_syn:
                established.add(back)
            continue
        if pkt.dport not in guarded:
            continue
        if flow in established:
            res.established_skipped += 1
            if pkt.flags & _RST:
                established.discard(flow)
            continue
        d = decide(compiled, pkt, now)
        res.decided += 1
        res.by_verdict[d.verdict.value] += 1
        res.by_reason[d.reason.value] += 1
        if keep:
            res.decisions.append((ts, pkt, d))
        if d.verdict.passes and pkt.flags & _SYN:
            accepted_syn.add(flow)
        if d.reason is Reason.BLOCKED:
            src = format_address(pkt.version, pkt.src)
            b = res.blocked.get(src)
            if b is None:
                b = res.blocked[src] = BlockedSource(src, d.plan, first_seen=ts)
            b.packets += 1
            b.destinations.add(format_address(pkt.version, pkt.dst))
            b.last_seen = max(b.last_seen, ts)
    return res


def per_reason_table(res: ReplayResult) -> dict[str, dict[str, int]]:
    """verdict -> reason -> count, from kept decisions."""
    table: dict[str, dict[str, int]] = defaultdict(dict)
    for _, _, d in res.decisions:
        row = table[d.verdict.value]
        row[d.reason.value] = row.get(d.reason.value, 0) + 1
    return dict(table)
