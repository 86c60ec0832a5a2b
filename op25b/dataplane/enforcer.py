"""The per-packet path: parse, decide, count, aggregate. No sockets, no files.

``Enforcer.handle`` is what the queue binding calls for every packet. It is kept free
of I/O so it can be unit-tested and benchmarked without a kernel; everything slow
(syslog lines for new sources, writing the abuse log) is queued here and done by the
daemon loop between batches.

Speed: for a guarded port to a destination that is not a provider MTA the decision
depends on the source alone (steps 3-6 of the fixed order), and only through two
longest-prefix matches: the plan prefix (a plan-table index) and the exemptions
covering it (an exemption-table index). So decisions are memoised twice over:

* per **class** -- the (family, plan index, exemption index) pair every source of one
  LPM interval shares: a flood of new sources (a spray over a /16, a v6 /48) costs two
  lookups per source and one ``decide`` per class, no PlanHit or Location per source;
* per **source** -- a flooding bot costs one dict probe a packet.

Both memos hold an ``_Outcome``: the Decision with what the per-packet path needs of
it precomputed (the queue verdict, the counter slot, blocked or not), so a packet
reads no enum. They are dropped when the policy changes, when an exemption expires
(the next expiry instant is known), and when they grow past a bound. ``decide()``
itself stays pure. This module is also compiled by mypyc (``op25b.native``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from op25b.dataplane.aggregator import AbuseAggregator
from op25b.dataplane.counters import Counters, pair_index
from op25b.dataplane.keys import V6_KEY_BIT
from op25b.dataplane.packet import Packet, PacketError, packet_of, parse_addresses, parse_fields
from op25b.dataplane.verdicts import FOR_VERDICT
from op25b.policy.compiled import CompiledPolicy
from op25b.policy.decide import Decision, Reason, Verdict, decide_addresses
from op25b.policy.lpm import PrefixTable

_MEMO_MAX = 1 << 18


class _Outcome(NamedTuple):
    """A Decision and what each packet needs of it, computed once per memo entry."""

    verdict: int  # FOR_VERDICT of the decision: what the queue binding applies
    slot: int  # the decision's Counters slot (counters.pair_index)
    blocked: bool  # reason BLOCKED: aggregate it
    cacheable: bool  # blocked and not monitor: hand it to the verdict cache
    decision: Decision


def _outcome(d: Decision) -> _Outcome:
    blocked = d.reason is Reason.BLOCKED
    cacheable = blocked and d.verdict is not Verdict.MONITOR
    return _Outcome(FOR_VERDICT[d.verdict], pair_index(d), blocked, cacheable, d)


class CacheSink(Protocol):
    """Where blocked sources go for the kernel verdict cache (``op25b.kernel.blockcache``)."""

    def want(self, version: int, src: int, decision: Decision) -> None:
        """Per-packet: remember a blocked source; must be cheap and never raise."""


class Enforcer:
    """Holds the compiled policy in force and applies it to raw packets."""

    def __init__(
        self,
        compiled: CompiledPolicy,
        counters: Counters,
        aggregator: AbuseAggregator,
        on_error: int,
        now: datetime | None = None,
    ) -> None:
        # The loop refreshes these once per batch: one clock read per batch, not per
        # packet, and decide() stays pure. ``now`` lets tests fix the starting clock.
        self.now = datetime.now(UTC) if now is None else now
        self.wall = self.now.timestamp()
        self._memo: dict[int, _Outcome] = {}
        self._classes: dict[int, _Outcome] = {}
        self._memo_from = self.now
        self._memo_until: datetime | None = None
        self.compiled = compiled  # (a property: also resets the memo)
        self.counters = counters
        self.aggregator = aggregator
        self.on_error = on_error
        # (packet, decision) of sources seen for the first time; the loop sends one
        # syslog NOTICE each and clears the list.
        self.new_sources: list[tuple[Packet, Decision]] = []
        # The kernel verdict cache, when enabled: blocked sources are handed to it here;
        # it batches them into one ipset call per 64 sources or 5 ms (op25b.kernel.blockcache).
        self.cache: CacheSink | None = None

    @property
    def compiled(self) -> CompiledPolicy:
        """The policy in force; assigning a new one (reload) drops the memo."""
        return self._compiled

    @compiled.setter
    def compiled(self, compiled: CompiledPolicy) -> None:
        self._compiled = compiled
        self._guarded = compiled.guarded
        self._provider_mta = compiled.provider_mta
        self._plan4 = compiled.plan_table(4)
        self._plan6 = compiled.plan_table(6)
        self._exempt4: PrefixTable | None = _nonempty(compiled.exemption_table(4)[0])
        self._exempt6: PrefixTable | None = _nonempty(compiled.exemption_table(6)[0])
        # The port an address-only decision assumes: any guarded one decides the same.
        self._some_guarded_port = min(compiled.guarded)
        self._reset_memo(self.now)

    def _reset_memo(self, now: datetime) -> None:
        self._memo = {}
        self._classes = {}
        self._memo_from = now
        # Source-only decisions change by themselves only when an exemption expires.
        future = [e.expires for e in self._compiled.policy.exemptions if e.expires > now]
        self._memo_until = min(future) if future else None

    def set_clock(self, now: datetime) -> None:
        """Called by the loop before each batch."""
        self.now = now
        self.wall = now.timestamp()
        # Reset at the next expiry, and if the clock stepped back past the reset.
        if (self._memo_until is not None and now >= self._memo_until) or now < self._memo_from:
            self._reset_memo(now)

    def handle(self, payload: bytes) -> int:
        """Verdict for one raw packet; never raises."""
        try:
            fields = parse_fields(payload)
        except PacketError:
            self.counters.record_parse_error()
            return self._decide_unparsable(payload)
        version, src, dst, _, dport, _ = fields
        try:
            if dport in self._guarded and self._provider_mta(version, dst) is None:
                key = src if version == 4 else src | V6_KEY_BIT  # inlined source_key()
                out = self._memo.get(key)
                if out is None:
                    out = self._source_outcome(version, src, dst, dport, key)
            else:
                out = _outcome(decide_addresses(self._compiled, version, src, dst, dport, self.now))
        except Exception:
            # A bug in deciding must not stop enforcement: count it, apply on_error.
            self.counters.record_undecidable()
            return self.on_error
        self.counters.record_index(out.slot)
        if out.blocked:
            d = out.decision
            if self.aggregator.observe(
                version, src, dst, dport, d.plan, d.verdict, d.rule, self.wall
            ):
                self.new_sources.append((packet_of(fields), d))
            if self.cache is not None and out.cacheable:
                self.cache.want(version, src, d)
        return out.verdict

    def _source_outcome(self, version: int, src: int, dst: int, dport: int, key: int) -> _Outcome:
        """A source the memo does not hold: its class's outcome (decided once per class)."""
        if version == 4:
            plan, exempt = self._plan4, self._exempt4
        else:
            plan, exempt = self._plan6, self._exempt6
        g = plan.lookup(src)
        j = exempt.lookup(src) if exempt is not None else -1
        # Indexes are < 2**31 (lpm's bound) and >= -1: one int keys the class.
        cls = ((g + 1) << 33 | (j + 1)) << 1 | (version == 6)
        classes = self._classes
        out = classes.get(cls)
        if out is None:
            out = _outcome(decide_addresses(self._compiled, version, src, dst, dport, self.now))
            if len(classes) >= _MEMO_MAX:
                classes.clear()
            classes[cls] = out
        memo = self._memo
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[key] = out
        return out

    def decide_on_addresses(self, version: int, src: int, dst: int = 0) -> Decision:
        """Decide without a TCP header: the kernel only queues TCP to guarded ports.

        Used for packets whose TCP header the parser cannot reach, and by the leader
        for sources another worker put in the verdict cache (``dst`` 0 is never a
        provider MTA, so that is the source's decision towards any MX).
        """
        port = self._some_guarded_port
        return decide_addresses(self._compiled, version, src, dst, port, self.now)

    def _decide_unparsable(self, payload: bytes) -> int:
        # A packet whose TCP header we cannot reach is still decidable on its
        # addresses; on_error covers the rest. It stays counted as a parse error (not
        # twice as a decision), but a blocked one goes to the abuse log: a bot dressing
        # up its SYNs is still a bot.
        try:
            version, src, dst = parse_addresses(payload)
            d = self.decide_on_addresses(version, src, dst)
        except Exception:
            return self.on_error
        port = self._some_guarded_port
        if d.reason is Reason.BLOCKED and self.aggregator.observe(
            version, src, dst, port, d.plan, d.verdict, d.rule, self.wall
        ):
            self.new_sources.append((Packet(version, src, dst, 0, port, 0), d))
        return FOR_VERDICT[d.verdict]


def _nonempty(table: PrefixTable) -> PrefixTable | None:
    # Most policies have no exemptions of a family: skip that lookup altogether.
    return table if len(table) else None
