"""``op25b demo --fleet``: one policy on every edge router of a fleet, one central view of all.

This module owns the fleet demo. It builds the fleet lab (``op25b.lab.fleet``: three
edge routers by default, a core, the provider MTA, the external MXes, a collector),
starts a real central rsyslogd and a real Prometheus in the collector, a real rsyslogd
agent and ``op25b run`` on every router (each with its own host name), then:

1. checks the fleet's one policy with ``op25b check`` and starts it on every router;
2. plays mail traffic and a bot behind every router (swaks through the provider MTA,
   business mail direct, a bot bursting to many MXes, residential direct-to-MX);
3. rolls out a policy change (a new exemption) by reloading every router, and shows
   the change took effect where it should and nowhere else;
4. stops the daemons and prints a per-router and fleet-total table of three views of
   the decision counters: the router's own log, the collector's file, and PromQL
   sums; every number must be equal;
5. ranks the fleet's bots with ``op25b report`` run on the collector's abuse files.

Exit 0 when every check passed, 1 if any failed, 2 if the demo could not run. The
fleet is always torn down (Ctrl-C and SIGTERM included) unless ``--keep``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from op25b.lab import fleetplan as FP
from op25b.lab import fleetviews as V
from op25b.lab.demo import (
    PASSWORD,
    USER,
    V4_DOMAIN,
    V6_DOMAIN,
    DemoOptions,
    Result,
    _Demo,
    _missing_prerequisites,
    demo_workdir,
    prerequisites_met,
)

if TYPE_CHECKING:
    from op25b.lab.fleet import Fleet
    from op25b.lab.processes import DaemonProcess
    from op25b.lab.rsyslog import Rsyslogd

EXEMPT_SITE = 2  # the rollout exempts this router's residential subscriber
EXEMPTION = """\
exemptions:
  - prefix: {prefix}
    ticket: ABUSE-2001
    expires: 2099-12-31
    reason: verified own MX (rolled out to every router)
"""
POLICY = """\
# Written by `op25b demo --fleet`: one policy for every edge router of the fleet. Each
# router's pools are listed; the provider MTA is shared.
version: 1
guarded_ports: [25]
action: reject
plans:
  residential:
    exempt: false
    prefixes: [{residential}]
  business-static:
    exempt: true
    prefixes: [{business}]
provider_mtas:
  smarthost:
    addresses: [{mta4}, "{mta6}"]
{exemptions}daemon:
  queue: 0
  workers: 1
  on_daemon_down: static
  # The router's rsyslog agent: it keeps the router's own log and ships to the collector.
  syslog: {{address: "tcp://127.0.0.1:{agent_port}", facility: local5}}
  # One abuse window and no periodic counters line during the demo: the records and
  # the final counters written at SIGTERM hold everything.
  abuse_window: 3600
  counters_interval: 3600
  metrics: {{listen: "0.0.0.0:{metrics_port}", interval: 0.2}}
"""
SCRAPE_INTERVAL = 1.0
SETTLE = 1.0  # a scrape this long after the last packet holds every count


@dataclass(frozen=True)
class FleetOptions:
    """Knobs for tests; the CLI uses the defaults."""

    workdir: Path | None = None
    routers: int = 3
    bot_step: int = 8  # router I's bot tries I * bot_step distinct MXes


def fleet_policy(sites: tuple[FP.Site, ...], exempt: str | None = None) -> str:
    """The fleet's policy text; *exempt*: a subscriber address given an exemption."""
    from op25b.lab.prometheus import METRICS_PORT
    from op25b.lab.rsyslog import AGENT_PORT

    def quoted(prefixes: list[str]) -> str:
        return ", ".join(f'"{p}"' if ":" in p else p for p in prefixes)

    return POLICY.format(
        residential=quoted([p for s in sites for p in s.residential]),
        business=quoted([p for s in sites for p in s.business]),
        mta4=FP.ISP_MTA_V4,
        mta6=FP.ISP_MTA_V6,
        exemptions=EXEMPTION.format(prefix=f"{exempt}/32") if exempt else "",
        agent_port=AGENT_PORT,
        metrics_port=METRICS_PORT,
    )


def run(
    out: TextIO, err: TextIO, keep: bool = False, *, options: FleetOptions | None = None
) -> int:
    """Run the fleet demo; 0 if every check passed, 1 if any failed, 2 if it could not run."""
    opts = options or FleetOptions()
    missing = _missing_prerequisites()
    for tool in ("rsyslogd", "prometheus", "unshare"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            missing.append(f"`{tool}` not found")
    if not prerequisites_met("op25b demo --fleet", missing, err):
        return 2
    with demo_workdir(opts.workdir, keep, "op25b-fleet-") as workdir:
        return _FleetDemo(out, err, keep, opts, workdir).run()


class _FleetDemo(_Demo):
    """One fleet run; the scenario checks are the one-router demo's own."""

    prog = "op25b demo --fleet"

    def __init__(
        self, out: TextIO, err: TextIO, keep: bool, fopts: FleetOptions, workdir: Path
    ) -> None:
        super().__init__(out, err, keep, "reject", DemoOptions(workdir=workdir), workdir)
        self.fopts = fopts
        self.blocked: Counter[str] = Counter()  # attempts each router must have blocked
        self.daemons: dict[str, DaemonProcess] = {}
        self.agents: dict[str, Rsyslogd] = {}
        self.exempt_site: FP.Site | None = None
        self.report_text = ""
        self.collected = workdir / "collector"  # the collector's files

    def open_lab(self) -> tuple[Any, Callable[[], None], str]:
        from op25b.lab.fleet import create_fleet, destroy_fleet, fleet_up

        n = self.fopts.routers
        fleet = fleet_up(n) if self.keep else create_fleet(n)
        line = f"  fleet {fleet.name}: {n} edge routers, {len(fleet.namespaces)} namespaces"
        return fleet, functools.partial(destroy_fleet, fleet), line

    def failures(self) -> tuple[type[Exception], ...]:
        from op25b.lab.prometheus import PrometheusError
        from op25b.lab.rsyslog import RsyslogError

        return (*super().failures(), RsyslogError, PrometheusError)

    # --- set-up ----------------------------------------------------------------------------

    def _with_lab(self, fleet: Fleet) -> int:  # type: ignore[override]  # a fleet is its lab
        from op25b.lab.mailservers import MxConfig, ProviderConfig, start_server
        from op25b.lab.prometheus import METRICS_PORT, Prometheus, scrape_config
        from op25b.lab.rsyslog import COLLECTOR_PORT, Rsyslogd, collector_conf

        sites = fleet.sites
        policy = self.workdir / "policy.yaml"
        policy.write_text(fleet_policy(sites))
        if not self._check(policy, "the fleet's policy"):
            return self.summary()
        with contextlib.ExitStack() as stack:
            with self.step(f"starting external MX in {fleet.ns('net')}"):
                self.mx = stack.enter_context(
                    start_server(fleet.ns("net"), MxConfig(self.maildir), self.workdir / "mx.log")
                )
            provider = ProviderConfig(
                addresses=(FP.ISP_MTA_V4, FP.ISP_MTA_V6),
                users=((USER, PASSWORD),),
                relay_nets=tuple(p for s in sites for p in s.residential + s.business),
                routes=((V4_DOMAIN, FP.NET_MX_V4), (V6_DOMAIN, FP.NET_MX_V6)),
            )
            with self.step(f"starting provider MTA in {fleet.ns('isp')}"):
                self.mta = stack.enter_context(
                    start_server(fleet.ns("isp"), provider, self.workdir / "mta.log")
                )
            col = fleet.ns("col")
            with self.step(f"starting the collector's rsyslogd in {col} (TCP {COLLECTOR_PORT})"):
                work = self.workdir / "collector-rsyslog"
                conf = collector_conf(work, self.collected, FP.COLLECTOR_V4)
                stack.enter_context(Rsyslogd(col, work, conf, COLLECTOR_PORT))
            targets = {s.name: f"{s.uplink_v4}:{METRICS_PORT}" for s in sites}
            with self.step(f"starting Prometheus in {col}, scraping {len(targets)} routers"):
                config = scrape_config(targets, SCRAPE_INTERVAL)
                work = self.workdir / "prometheus"
                self.prom = stack.enter_context(Prometheus(col, FP.COLLECTOR_V4, work, config))
            for site in sites:
                with self.step(f"starting rsyslog agent and op25b on {fleet.ns(site.name)}"):
                    self._start_router(stack, fleet, site, policy)
            with self.step("Prometheus sees every router"):
                self.prom.await_query('up{job="op25b"} == 1', lambda r: len(r) == len(sites), 30.0)
            self.say("traffic behind every router:")
            self.play([t for s in sites for t in self._traffic(fleet, s)])
            self._rollout(fleet, sites, policy)
            self.say("after the rollout:")
            self.play([self._after(fleet, s) for s in sites])
            cmp = self._views(sites)
            self.results.append(self._views_result(cmp))
            self.results.append(self._report(sites))
            self._print(cmp)
        return self.summary()

    def _check(self, policy: Path, what: str) -> bool:
        """``op25b check POLICY`` as the operator runs it (a process: lab never imports cli)."""
        from op25b.lab.netns import child_env

        done = subprocess.run(
            [sys.executable, "-m", "op25b", "check", str(policy)],
            capture_output=True, text=True, env=child_env(), timeout=120, check=False,
        )  # fmt: skip
        first = (done.stdout or done.stderr).strip().splitlines()[:1]
        self.say(f"op25b check {policy.name} ({what}): exit {done.returncode}; {' '.join(first)}")
        ok = done.returncode == 0
        self.results.append(Result(f"op25b check ({what})", "valid", f"exit {done.returncode}", ok))
        return ok

    def _start_router(
        self, stack: contextlib.ExitStack, fleet: Fleet, site: FP.Site, policy: Path
    ) -> None:
        from op25b.lab.netns import own_hostname
        from op25b.lab.processes import DaemonProcess
        from op25b.lab.rsyslog import AGENT_PORT, Rsyslogd, agent_conf

        home = self.workdir / site.name
        home.mkdir(exist_ok=True)
        abuse = home / "blocked.jsonl"
        abuse.touch()  # the agent's imfile follows it from the first byte
        ns = fleet.ns(site.name)
        conf = agent_conf(home / "rsyslog", site.name, home / "own.log", abuse, FP.COLLECTOR_V4)
        self.agents[site.name] = stack.enter_context(
            Rsyslogd(ns, home / "rsyslog", conf, AGENT_PORT)
        )
        shutil.copyfile(policy, home / "policy.yaml")  # what config management pushes
        daemon = DaemonProcess(
            ns, home / "policy.yaml", ["--abuse-log", str(abuse)], wrapper=own_hostname(site.name)
        )
        self.daemons[site.name] = stack.enter_context(daemon)
        daemon.wait_started()

    # --- traffic ---------------------------------------------------------------------------

    def _traffic(self, fleet: Fleet, site: FP.Site) -> list[tuple[str, Callable[[], Result]]]:
        P = functools.partial
        res, biz = (
            fleet.ns(FP.subscriber_role(site, "res")),
            fleet.ns(FP.subscriber_role(site, "biz")),
        )
        tries = site.index * self.fopts.bot_step
        r = site.name
        return [
            (f"{r}: residential -> external MX :25 (v4)",
             P(self._count, r, 1, P(self._blocked, res, site.res[0], FP.NET_MX_V4, f"{r}-res4"))),
            (f"{r}: residential -> external MX :25 (v6)",
             P(self._count, r, 1, P(self._blocked, res, site.res[1], FP.NET_MX_V6, f"{r}-res6"))),
            (f"{r}: residential -> provider MTA :587 with AUTH",
             P(self._delivered, res, site.res[0], FP.ISP_MTA_V4, 587, V4_DOMAIN, f"{r}-sub",
               auth=True, relayed=True)),
            (f"{r}: business-static -> external MX :25",
             P(self._delivered, biz, site.biz[0], FP.NET_MX_V4, 25, V4_DOMAIN, f"{r}-biz",
               auth=False, relayed=False)),
            (f"{r}: bot -> {tries} MXes :25",
             P(self._count, r, tries, P(self._fleet_bot, fleet, site, tries))),
        ]  # fmt: skip

    def _count(self, router: str, attempts: int, fn: Callable[[], Result]) -> Result:
        """Run a blocked-traffic scenario and remember how many attempts *router* blocks."""
        self.blocked[router] += attempts
        return fn()

    def _fleet_bot(self, fleet: Fleet, site: FP.Site, tries: int) -> Result:
        from op25b.lab.tools import Probe, probe_many

        targets = FP.NET_MX_EXTRA_V4[:tries]
        probes = [Probe(site.bot[0], mx, 25) for mx in targets]
        results = probe_many(fleet.ns(FP.subscriber_role(site, "bot")), probes, timeout=2.0)
        tally: Counter[str] = Counter(r.outcome for r in results)
        seen = self._mx_connections_from(site.bot[0])
        observed = ", ".join(f"{n} {what}" for what, n in tally.most_common())
        observed += f"; MX saw {seen} connections"
        ok = tally["refused"] == len(probes) and seen == 0
        return Result("", f"all {len(probes)} refused", observed, ok)

    def _rollout(self, fleet: Fleet, sites: tuple[FP.Site, ...], policy: Path) -> None:
        exempt = next(s for s in sites if s.index == min(EXEMPT_SITE, len(sites)))
        new = self.workdir / "policy-new.yaml"
        new.write_text(fleet_policy(sites, exempt=exempt.res[0]))
        self.say(f"policy change: exemption ABUSE-2001 for {exempt.res[0]} ({exempt.name})")
        if not self._check(new, "the change"):
            return
        shutil.copyfile(new, policy)
        for site in sites:
            home = self.workdir / site.name
            tmp = home / ".policy.yaml.new"
            shutil.copyfile(new, tmp)
            os.replace(tmp, home / "policy.yaml")  # atomic: a reload never reads half a file
            start = time.monotonic()
            line = self.daemons[site.name].reload()
            ok = "reloaded " in line
            self.results.append(
                Result(f"{site.name}: reload (SIGHUP)", "reloaded", line.split(": ", 1)[-1], ok)
            )
            word = "ok" if ok else "REFUSED"
            self.say(f"  {site.name}: reload {word} ({time.monotonic() - start:.1f}s)")
        self.exempt_site = exempt

    def _after(self, fleet: Fleet, site: FP.Site) -> tuple[str, Callable[[], Result]]:
        P = functools.partial
        res = fleet.ns(FP.subscriber_role(site, "res"))
        r = site.name
        if site == self.exempt_site:
            title = f"{r}: exempted residential -> external MX :25"
            return title, P(self._delivered, res, site.res[0], FP.NET_MX_V4, 25, V4_DOMAIN,
                            f"{r}-exempt", auth=False, relayed=False)  # fmt: skip
        title = f"{r}: residential -> external MX :25, still blocked"
        return title, P(self._count, r, 1, P(self._blocked, res, site.res[0], FP.NET_MX_V4,
                                             f"{r}-after"))  # fmt: skip

    # --- the three views -------------------------------------------------------------------

    def _views(self, sites: tuple[FP.Site, ...]) -> V.Comparison:
        from op25b.lab.processes import sd_params
        from op25b.lab.rsyslog import await_file

        quiet = time.time()
        with self.step("Prometheus scrapes every router after the last packet"):
            self.prom.await_query(
                'timestamp(up{job="op25b"})',
                lambda r: (
                    len(r) == len(sites) and min(float(s["value"][1]) for s in r) > quiet + SETTLE
                ),
                30.0,
            )
            prom = {s.name: self._prom_counts(f'router="{s.name}"') for s in sites}
            fleet_prom = self._prom_counts("")
        with self.step("stopping op25b on every router (SIGTERM): final counters, records"):
            for daemon in self.daemons.values():
                daemon.stop()
        own: dict[str, V.Counts] = {}
        central: dict[str, V.Counts] = {}
        with self.step("the final counters in each router's log and at the collector"):
            for s in sites:
                home = self.workdir / s.name
                for where, path in (
                    (own, home / "own.log"),
                    (central, self.collected / f"{s.name}.log"),
                ):
                    lines = await_file(path, _has_final, 30.0, f"{s.name}'s final counters")
                    where[s.name] = V.from_syslog(
                        sd_params(next(x for x in lines if 'final="1"' in x))
                    )
        with self.step("every router's abuse records at the collector"):
            for s in sites:
                mine = (self.workdir / s.name / "blocked.jsonl").read_text().splitlines()
                await_file(
                    self.collected / "abuse" / f"{s.name}.jsonl",
                    functools.partial(_same, mine),
                    30.0,
                    f"{s.name}'s {len(mine)} abuse records",
                )
        return V.compare({"router": own, "collector": central, "prometheus": prom}, fleet_prom)

    def _prom_counts(self, match: str) -> V.Counts:
        sel = (
            f'op25b_decisions_total{{job="op25b",{match}}}'
            if match
            else 'op25b_decisions_total{job="op25b"}'
        )
        verdicts = {
            k[0]: v for k, v in self.prom.by_label(f"sum by (verdict) ({sel})", ["verdict"]).items()
        }
        reasons = {
            k[0]: v for k, v in self.prom.by_label(f"sum by (reason) ({sel})", ["reason"]).items()
        }
        rsel = f'op25b_reloads_total{{job="op25b",result="ok"{"," + match if match else ""}}}'
        reloads = sum(self.prom.by_label(f"sum({rsel})", []).values())
        return V.from_prometheus(verdicts, reasons, reloads)

    def _views_result(self, cmp: V.Comparison) -> Result:
        blocked = {r: cmp.cells[(r, "router")]["blocked"] for r in cmp.routers}
        want = {r: self.blocked[r] for r in cmp.routers}
        observed = "all equal" if cmp.agree else "; ".join(cmp.mismatches[:3])
        observed += f"; blocked {blocked}"
        ok = cmp.agree and blocked == want
        title = "three views agree (router log, collector, PromQL)"
        return Result(title, f"equal; blocked {want}", observed, ok)

    def _report(self, sites: tuple[FP.Site, ...]) -> Result:
        from op25b.report import desk as report

        title = "op25b report on the collector's files: the fleet's bots first"
        files = sorted(str(p) for p in (self.collected / "abuse").glob("*.jsonl"))
        bots = [(s.bot[0], s.name) for s in sorted(sites, key=lambda s: -s.index)]
        expected = ", ".join(f"{b} ({r})" for b, r in bots)
        problems: list[str] = []
        try:
            rep = report.build_report(files, lambda p: problems.append(str(p)))
        except report.ReportError as exc:
            return Result(title, expected, f"no report: {exc}", False)
        text = io.StringIO()
        report.write_table(rep, rep.sources[: len(sites) + 2], text)
        self.report_text = text.getvalue()
        top = [(s.source, ",".join(s.routers)) for s in rep.sources[: len(sites)]]
        observed = ", ".join(f"{b} ({r})" for b, r in top)
        return Result(title, expected, observed, top == bots and not problems)

    # --- output ----------------------------------------------------------------------------

    def _print(self, cmp: V.Comparison) -> None:
        self.say("")
        self.result_table("CHECK")
        self.say("\ndecision counters, per router and for the fleet, in three views:")
        header, body = V.rows(cmp)
        self.table(header, body)
        if cmp.mismatches:
            self.say("MISMATCH: " + "; ".join(cmp.mismatches))
        self.say(f"\nop25b report {self.collected / 'abuse'}/*.jsonl (top):")
        for line in self.report_text.rstrip().splitlines():
            self.say(f"  {line}".rstrip())
        self.say("")


def _has_final(lines: list[str]) -> bool:
    return any('final="1"' in line for line in lines)


def _same(want: list[str], lines: list[str]) -> bool:
    return lines == want
