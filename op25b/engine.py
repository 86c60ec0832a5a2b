"""The per-packet path: parse, decide, count, aggregate. No sockets, no files.

``Enforcer.handle`` is what the queue binding calls for every packet. It is kept free
of I/O so it can be unit-tested and benchmarked without a kernel; everything slow
(syslog lines for new sources, writing the abuse log) is queued here and done by the
daemon loop between batches.
"""

from __future__ import annotations

from datetime import UTC, datetime

from op25b.abuselog import AbuseAggregator
from op25b.blockcache import BlockCache
from op25b.counters import Counters
from op25b.decide import Decision, Reason, Verdict, decide, decide_addresses
from op25b.matcher import CompiledPolicy
from op25b.nfq import VERDICT_ACCEPT, VERDICT_DROP, VERDICT_REJECT
from op25b.packet import Packet, PacketError, parse, parse_addresses

_VERDICT_INT = {
    Verdict.ACCEPT: VERDICT_ACCEPT,
    Verdict.MONITOR: VERDICT_ACCEPT,
    Verdict.DROP: VERDICT_DROP,
    Verdict.REJECT: VERDICT_REJECT,
}


class Enforcer:
    """Holds the compiled policy in force and applies it to raw packets."""

    def __init__(
        self,
        compiled: CompiledPolicy,
        counters: Counters,
        aggregator: AbuseAggregator,
        on_error: int,
    ) -> None:
        self.compiled = compiled
        self.counters = counters
        self.aggregator = aggregator
        self.on_error = on_error
        # The loop refreshes these once per batch: one clock read per batch, not per
        # packet, and decide() stays pure.
        self.now = datetime.now(UTC)
        self.wall = self.now.timestamp()
        # (packet, decision) of sources seen for the first time; the loop sends one
        # syslog NOTICE each and clears the list.
        self.new_sources: list[tuple[Packet, Decision]] = []
        # The kernel verdict cache, when enabled: blocked sources are queued here and
        # added by the loop after the batch (one ipset call per batch, not per packet).
        self.cache: BlockCache | None = None

    def set_clock(self, now: datetime) -> None:
        """Called by the loop before each batch."""
        self.now = now
        self.wall = now.timestamp()

    def handle(self, payload: bytes) -> int:
        """Verdict for one raw packet; never raises."""
        try:
            pkt = parse(payload)
        except PacketError:
            self.counters.record_parse_error()
            return self._decide_unparsable(payload)
        try:
            d = decide(self.compiled, pkt, self.now)
        except Exception:
            # A bug in deciding must not stop enforcement: count it, apply on_error.
            self.counters.record_undecidable()
            return self.on_error
        self.counters.record(d)
        if d.reason is Reason.BLOCKED:
            if self.aggregator.observe(
                pkt.version, pkt.src, pkt.dst, pkt.dport, d.plan, d.verdict, d.rule, self.wall
            ):
                self.new_sources.append((pkt, d))
            if self.cache is not None and d.verdict is not Verdict.MONITOR:
                self.cache.want(pkt.version, pkt.src, d)
        return _VERDICT_INT[d.verdict]

    def _decide_unparsable(self, payload: bytes) -> int:
        # The kernel only queues TCP to guarded ports, so a packet whose TCP header we
        # cannot reach is still decidable on its addresses; on_error covers the rest.
        # It stays counted as a parse error (not twice as a decision), but a blocked
        # one goes to the abuse log: a bot dressing up its SYNs is still a bot.
        try:
            version, src, dst = parse_addresses(payload)
            port = min(self.compiled.guarded)
            d = decide_addresses(self.compiled, version, src, dst, port, self.now)
        except Exception:
            return self.on_error
        if d.reason is Reason.BLOCKED and self.aggregator.observe(
            version, src, dst, port, d.plan, d.verdict, d.rule, self.wall
        ):
            self.new_sources.append((Packet(version, src, dst, 0, port, 0), d))
        return _VERDICT_INT[d.verdict]
