"""``op25b replay``: a packet capture through the policy, offline.

Records come from ``op25b.report.pcapread`` as raw IP bytes (no dissector) and go
through the same ``packet.parse`` + ``decide`` the daemon runs, so a replay exercises
exactly the production decision path, at a few microseconds per packet.

Which packets count: the ones the kernel rules would hand to the daemon — TCP to a
guarded port that is not part of a connection already accepted. A replay has no
conntrack, so it approximates "already accepted" by tracking flows whose SYN it saw
accepted and whose peer answered (SYN-ACK); everything else that opens or pretends to
belong to a connection is decided, as in the kernel. ``walk`` owns that selection;
this module's ``replay`` and ``op25b.report.replaydiff`` decide what ``walk`` selects.

Speed: towards a guarded port and a destination that is not a provider MTA the
decision depends on the source alone, so it is memoised per source (as the daemon's
``Enforcer`` does); ``now`` is fixed for a whole replay, so the memo never goes stale.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from op25b.dataplane.keys import V6_KEY_BIT, key_address
from op25b.dataplane.packet import IPV6_EXTENSIONS_WALKED, Packet, PacketError, parse
from op25b.policy.addr import format_address
from op25b.policy.compiled import CompiledPolicy
from op25b.policy.decide import Decision, Reason, decide
from op25b.report.linklayer import SUPPORTED_LINKS
from op25b.report.pcapread import Capture, CaptureError, ProgressFn, Record

__all__ = [
    "BlockedSource",
    "CaptureError",
    "Decider",
    "ReplayResult",
    "WalkTotals",
    "as_json",
    "read_capture",
    "replay",
    "replay_records",
    "walk",
    "write_text",
]

_SYN = 0x02
_ACK = 0x10
_RST = 0x04
_MEMO_MAX = 1 << 18


@dataclass
class WalkTotals:
    """What a walk through a capture saw, whatever decided its attempts."""

    packets_read: int = 0
    ip_packets: int = 0
    decided: int = 0
    established_skipped: int = 0
    parse_errors: int = 0
    # Notes from the reader: the last record cut short, frames of unread link types.
    truncated: str | None = None
    unsupported_links: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The totals part of ``replay --json``."""
        return {
            "packets_read": self.packets_read,
            "ip_packets": self.ip_packets,
            "decided": self.decided,
            "established_skipped": self.established_skipped,
            "parse_errors": self.parse_errors,
            "truncated": self.truncated,
            "unsupported_link_types": {
                str(k): v for k, v in sorted(self.unsupported_links.items())
            },
        }

    def notes(self, path: str) -> list[str]:
        """Warnings for stderr: what the capture did not let replay read."""
        lines = [f"{path}: {self.truncated} (the capture ends early)"] if self.truncated else []
        known = ", ".join(str(lt) for lt in sorted(SUPPORTED_LINKS))
        lines += [
            f"{path}: {n} frames of link type {lt} skipped (replay reads link types {known})"
            for lt, n in sorted(self.unsupported_links.items())
        ]
        return lines


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
class ReplayResult(WalkTotals):
    """Totals of a replay under one policy."""

    by_verdict: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    blocked: dict[str, BlockedSource] = field(default_factory=dict)


# TCP itself, or an IPv6 extension header parse() walks on its way to TCP.
_V6_TCP_OR_EXTENSION = IPV6_EXTENSIONS_WALKED | {6}


def _may_be_tcp(raw: bytes) -> bool:
    """False only for packets whose IP header names another transport outright."""
    n = len(raw)
    if n >= 20 and raw[0] >> 4 == 4:
        return raw[9] == 6
    if n >= 40 and raw[0] >> 4 == 6:
        return raw[6] in _V6_TCP_OR_EXTENSION
    return True  # too short or odd: let parse() say what is wrong with it


def walk(
    records: Iterable[Record],
    guarded: frozenset[int],
    totals: WalkTotals,
    attempt: Callable[[float, Packet], bool],
) -> None:
    """Hand every packet the kernel would queue to ``attempt``; count the rest.

    ``attempt(ts, packet)`` decides and records one attempt and returns True when the
    packet would pass: a passed SYN whose peer answers makes its flow established.
    """
    accepted_syn: set[tuple[int, int, int, int, int]] = set()
    established: set[tuple[int, int, int, int, int]] = set()
    read = ip = decided = skipped = errors = 0
    for ts, raw in records:
        read += 1
        if raw is None:
            continue
        ip += 1
        if not _may_be_tcp(raw):
            # UDP, ICMP, ...: the kernel rules never queue these, so they are neither
            # decided nor "unparsable" (a capture full of DNS is not a broken capture).
            continue
        try:
            pkt = parse(raw)
        except PacketError:
            errors += 1
            continue
        flags = pkt.flags
        if pkt.sport in guarded and flags & (_SYN | _ACK) == (_SYN | _ACK):
            # A server's SYN-ACK: the flow it answers is now established (if we let it).
            back = (pkt.version, pkt.dst, pkt.src, pkt.dport, pkt.sport)
            if back in accepted_syn:
                established.add(back)
            continue
        if pkt.dport not in guarded:
            continue
        flow = (pkt.version, pkt.src, pkt.dst, pkt.sport, pkt.dport)
        if flow in established:
            skipped += 1
            if flags & _RST:
                established.discard(flow)
            continue
        decided += 1
        if attempt(ts, pkt) and flags & _SYN:
            accepted_syn.add(flow)
    totals.packets_read += read
    totals.ip_packets += ip
    totals.decided += decided
    totals.established_skipped += skipped
    totals.parse_errors += errors


class Decider:
    """``decide`` for the attempts of one replay, memoised (see the module docstring).

    Below a guarded port the decision depends on the source alone unless the
    destination is a provider MTA, and then on the destination alone; an unguarded
    port (another policy of a comparison guards it) always gets the same answer.
    """

    def __init__(self, compiled: CompiledPolicy, now: datetime) -> None:
        self.compiled = compiled
        self.now = now
        self._by_source: dict[int, Decision] = {}
        self._by_mta: dict[int, Decision] = {}
        self._unguarded: dict[int, Decision] = {}

    def __call__(self, pkt: Packet) -> Decision:
        """The decision for one attempt, from a memo when possible."""
        compiled = self.compiled
        if pkt.dport not in compiled.guarded:
            memo, key = self._unguarded, pkt.dport
        elif compiled.provider_mta(pkt.version, pkt.dst) is not None:
            memo, key = self._by_mta, pkt.dst if pkt.version == 4 else pkt.dst | V6_KEY_BIT
        else:
            memo, key = self._by_source, pkt.src if pkt.version == 4 else pkt.src | V6_KEY_BIT
        d = memo.get(key)
        if d is None:
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            d = memo[key] = decide(compiled, pkt, self.now)
        return d


def read_capture(
    path: str, totals: WalkTotals, progress: ProgressFn | None = None
) -> Iterable[Record]:
    """The records of ``path``; when they are used up, the reader's notes are in ``totals``."""
    capture = Capture(path, progress)
    yield from capture.records()
    totals.truncated = capture.truncated
    totals.unsupported_links = dict(capture.unsupported_links)


def replay(
    compiled: CompiledPolicy, path: str, now: datetime, progress: ProgressFn | None = None
) -> ReplayResult:
    """Run every decidable packet of the capture file through ``decide``."""
    res = ReplayResult()
    return _replay(compiled, read_capture(path, res, progress), now, res)


def replay_records(
    compiled: CompiledPolicy, records: Iterable[Record], now: datetime
) -> ReplayResult:
    """``replay`` for records from elsewhere (tests compare readers with it)."""
    return _replay(compiled, records, now, ReplayResult())


def _replay(
    compiled: CompiledPolicy, records: Iterable[Record], now: datetime, res: ReplayResult
) -> ReplayResult:
    decider = Decider(compiled, now)
    # Counted per Decision object first: the memo hands out the same object for every
    # attempt of a source, so this is one dict update per packet, not two Counters.
    per_decision: dict[int, list[Any]] = {}
    # source key -> [plan, attempts, destination ints, first seen, last seen]
    blocked: dict[int, list[Any]] = {}
    blocked_reason = Reason.BLOCKED

    def attempt(ts: float, pkt: Packet) -> bool:
        d = decider(pkt)
        tally = per_decision.get(id(d))
        if tally is None:
            per_decision[id(d)] = [d, 1]
        else:
            tally[1] += 1
        if d.reason is blocked_reason:
            key = pkt.src if pkt.version == 4 else pkt.src | V6_KEY_BIT
            b = blocked.get(key)
            if b is None:
                blocked[key] = [d.plan, 1, {pkt.dst}, ts, ts]
            else:
                b[1] += 1
                b[2].add(pkt.dst)
                if ts > b[4]:
                    b[4] = ts
        return d.verdict.passes

    walk(records, compiled.guarded, res, attempt)
    for d, n in per_decision.values():
        res.by_verdict[d.verdict.value] += n
        res.by_reason[d.reason.value] += n
    for key, (plan, n, dsts, first, last) in blocked.items():
        version, src = key_address(key)
        text = format_address(version, src)
        res.blocked[text] = BlockedSource(
            text, plan, n, {format_address(version, d) for d in dsts}, first, last
        )
    return res


def _blocked_order(res: ReplayResult) -> list[BlockedSource]:
    return sorted(res.blocked.values(), key=lambda b: (-b.packets, -len(b.destinations), b.source))


def as_json(res: ReplayResult) -> dict[str, Any]:
    """``replay --json``: the totals, verdict and reason counts, every blocked source."""
    return {
        **res.as_dict(),
        "verdicts": dict(sorted(res.by_verdict.items())),
        "reasons": dict(sorted(res.by_reason.items())),
        "blocked_sources": [
            {
                "source": b.source,
                "plan": b.plan,
                "packets": b.packets,
                "distinct_destinations": len(b.destinations),
                "destinations": sorted(b.destinations),
            }
            for b in _blocked_order(res)
        ],
    }


def write_text(res: ReplayResult, capture: str, top: int, out: TextIO) -> None:
    """Totals, then the ``top`` blocked sources by attempts."""
    print(
        f"{capture}: {res.packets_read} packets read, {res.decided} decided, "
        f"{res.established_skipped} of established connections skipped, "
        f"{res.parse_errors} unparsable",
        file=out,
    )
    for title, counts in (("by verdict:", res.by_verdict), ("by reason: ", res.by_reason)):
        print(title, ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), file=out)
    blocked = _blocked_order(res)
    if blocked:
        print(f"\nblocked sources ({len(blocked)}):", file=out)
        print(f"  {'source':<40} {'plan':<16} {'attempts':>8} {'distinct dst':>12}", file=out)
        for b in blocked[:top]:
            print(
                f"  {b.source:<40} {b.plan or '-':<16} {b.packets:>8} {len(b.destinations):>12}",
                file=out,
            )
