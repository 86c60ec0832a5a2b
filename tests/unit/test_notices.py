"""New-source NOTICEs under a flood of new sources: one each up to a rate, then a
counted summary per plan (op25b.daemon.notices), pure and through the daemon loop."""

from __future__ import annotations

from typing import Any

from test_daemon_lifecycle import MX, Env, env, steps_until  # noqa: F401  (env: a fixture)
from test_engine import v4

from op25b.daemon.notices import NewSourceNotices, NoticeLimiter
from op25b.daemon.syslogformat import Severity
from op25b.dataplane.packet import Packet
from op25b.dataplane.verdicts import VERDICT_REJECT
from op25b.policy.addr import parse_address
from op25b.policy.decide import Decision, Reason, Verdict
from op25b.policy.model import Location


class Sent:
    """Stands in for SyslogSender: keeps (message, msgid, params) of each NOTICE."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str | None, tuple[tuple[str, str], ...]]] = []

    def send(self, severity: Severity, msg: str, **kw: Any) -> bool:
        assert severity is Severity.NOTICE
        self.lines.append((msg, kw.get("msgid"), tuple(kw.get("params", ()))))
        return True


def _blocked(i: int, plan: str) -> tuple[Packet, Decision]:
    src = parse_address(f"100.64.{i >> 8}.{i & 255}")[1]
    pkt = Packet(4, src, parse_address(MX)[1], 40000, 25, 2)
    return pkt, Decision(Verdict.DROP, Reason.BLOCKED, plan, Location("p.yaml", 1, 1))


def test_limiter_allows_a_burst_then_the_rate() -> None:
    lim = NoticeLimiter(rate=10.0, burst=3, every=5.0, tokens=3.0)
    assert [lim.allow(100.0) for _ in range(4)] == [True, True, True, False]
    assert lim.allow(100.05) is False  # half a token
    assert lim.allow(100.2) is True  # a token back after 0.1 s at 10/s (float-safe margin)
    assert [lim.allow(200.0) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_summary_counts_per_plan_after_its_period_and_on_final() -> None:
    lim = NoticeLimiter(rate=1.0, burst=1, every=10.0, tokens=1.0)
    lim.hold("residential", 50.0)
    lim.hold("residential", 51.0)
    lim.hold("mobile", 52.0)
    assert lim.summary(55.0) is None  # not yet due
    text = lim.summary(60.0)
    assert text is not None and text.startswith("3 more newly blocked sources in the last 10.0s")
    assert "mobile=1, residential=2" in text and "abuse log" in text
    assert lim.summary(70.0, final=True) is None  # nothing held any more
    lim.hold("mobile", 71.0)
    assert (lim.summary(71.5, final=True) or "").startswith("1 more newly blocked")
    assert lim.summarised == 4


def test_a_flood_of_new_sources_gets_burst_notices_and_one_summary() -> None:
    sent = Sent()
    limiter = NoticeLimiter(rate=20.0, burst=50, every=10.0, tokens=50.0)
    notices = NewSourceNotices(sent, limiter)  # type: ignore[arg-type]  (a stand-in)
    batch = [_blocked(i, "residential" if i % 4 else "mobile") for i in range(1000)]
    notices.send(batch, 10.0)
    assert batch == []  # consumed
    assert len(sent.lines) == 50 and all(m == "blocked" for _, m, _ in sent.lines)
    assert sent.lines[0][0].startswith("blocked source 100.64.0.0 plan=mobile action=drop")
    notices.send([_blocked(5000, "mobile")], 20.0)  # 10 s later: 200 tokens back, one used
    assert len(sent.lines) == 52
    individual, summary = sent.lines[-2], sent.lines[-1]
    assert individual[1] == "blocked" and summary[1] == "blocked-summary"
    assert summary[2] == (("count", "950"),)
    assert "mobile=237, residential=713" in summary[0]
    assert notices.limiter.summarised == 950


def test_daemon_summarises_past_the_rate_and_counts_it(env: Env) -> None:  # noqa: F811
    w = env.worker()
    w.notices.limiter = NoticeLimiter(rate=0.0, burst=5, every=0.0, tokens=5.0)
    q = env.queue()
    for i in range(30):
        q.feed(v4(f"100.64.1.{i + 1}", MX))
    steps_until(w, lambda: len(q.verdicts) == 30)
    assert set(q.verdicts) == {VERDICT_REJECT}
    steps_until(w, lambda: bool(env.syslog.having("blocked-summary")))
    assert len(env.syslog.having("blocked source 100.64.1.")) == 5
    (line,) = env.syslog.having("blocked-summary")
    assert "25 more newly blocked sources" in line and "residential=25" in line
    assert w.health_counters()["new_source_notices_summarised"] == 25
    # Every source still has its abuse-log record, summarised in syslog or not.
    assert w.aggregator.stats.tracked_sources == 30
