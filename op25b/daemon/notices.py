"""Syslog NOTICEs for newly blocked sources: one each up to a rate, then counted summaries.

A flood of new (or spoofed) subscriber sources makes every packet a new source. One
NOTICE each would flood the syslog collector (and cost the verdict loop a formatted
line and a send per packet), so NOTICEs go out one per source while a token bucket
allows (``RATE`` per second, bursts of ``BURST``); past it, sources are only counted
per plan, and every ``SUMMARY_EVERY`` seconds (and on shutdown) one NOTICE says how
many were not listed, by plan. Every source is still in the abuse log: the summary
loses no one, it only spares syslog. The count also reaches the counters line
(``new_source_notices_summarised``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from op25b.daemon.syslog import SyslogSender
from op25b.daemon.syslogformat import Severity
from op25b.dataplane.packet import Packet
from op25b.policy.addr import format_address
from op25b.policy.decide import Decision

RATE = 20.0  # individual NOTICEs per second, sustained
BURST = 200  # ... and at once, after a quiet spell
SUMMARY_EVERY = 10.0  # seconds between summaries while sources are being summarised


@dataclass
class NoticeLimiter:
    """The token bucket and the per-plan counts of sources it held back (pure: pass ``now``)."""

    rate: float = RATE
    burst: int = BURST
    every: float = SUMMARY_EVERY
    tokens: float = float(BURST)
    last: float | None = None
    held: dict[str, int] = field(default_factory=dict)  # plan -> sources not listed
    held_since: float | None = None
    summarised: int = 0  # sources told only in summaries, in total

    def allow(self, now: float) -> bool:
        """True when one more individual NOTICE may go out at ``now``."""
        if self.last is not None:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def hold(self, plan: str, now: float) -> None:
        """Count a source that gets no NOTICE of its own."""
        if self.held_since is None:
            self.held_since = now
        self.held[plan] = self.held.get(plan, 0) + 1
        self.summarised += 1

    def summary(self, now: float, final: bool = False) -> str | None:
        """The summary text when one is due (``final``: whenever anything is held)."""
        if self.held_since is None or (not final and now - self.held_since < self.every):
            return None
        count = sum(self.held.values())
        plans = ", ".join(f"{p or '-'}={n}" for p, n in sorted(self.held.items()))
        text = (
            f"{count} more newly blocked sources in the last {now - self.held_since:.1f}s"
            f" not listed one by one (over {self.rate:g} notices/s): {plans};"
            " every one is in the abuse log"
        )
        self.held = {}
        self.held_since = None
        return text


class NewSourceNotices:
    """Formats and sends the NOTICEs of one worker through its limiter."""

    def __init__(self, syslog: SyslogSender, limiter: NoticeLimiter | None = None) -> None:
        self.syslog = syslog
        self.limiter = limiter if limiter is not None else NoticeLimiter()

    def send(self, new_sources: list[tuple[Packet, Decision]], now: float) -> None:
        """One NOTICE per source the limiter allows; the rest counted. Empties the list."""
        limiter = self.limiter
        for pkt, d in new_sources:
            if limiter.allow(now):
                self._one(pkt, d)
            else:
                limiter.hold(d.plan or "", now)
        new_sources.clear()
        self.flush(now)

    def flush(self, now: float, final: bool = False) -> None:
        """Send a summary if one is due (``final``: on shutdown, whatever is held)."""
        held = sum(self.limiter.held.values())
        text = self.limiter.summary(now, final)
        if text is not None:
            self.syslog.send(
                Severity.NOTICE, text, msgid="blocked-summary", params=(("count", str(held)),)
            )

    def _one(self, pkt: Packet, d: Decision) -> None:
        src = format_address(pkt.version, pkt.src)
        dst = format_address(pkt.version, pkt.dst)
        self.syslog.send(
            Severity.NOTICE,
            f"blocked source {src} plan={d.plan} action={d.verdict.value} "
            f"first_destination={dst if pkt.version == 4 else f'[{dst}]'}:{pkt.dport} "
            f"rule={d.rule}",
            msgid="blocked",
            params=(
                ("src", src),
                ("plan", d.plan or ""),
                ("action", d.verdict.value),
                ("dst", dst),
                ("dport", str(pkt.dport)),
            ),
        )
