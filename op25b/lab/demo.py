"""``op25b demo``: the OP25B story end to end, in a private lab, with real mail software.

This module owns the demo: it builds a namespace lab (README, "The lab"), starts a real
external MX and a real provider MTA (`op25b.lab.mailservers`, aiosmtpd) and the real daemon
(`op25b run`) in the router, then plays the story of the README's picture with swaks as the mail
client and prints, for every scenario, what was expected, what was observed and
PASS/FAIL; then the counters the daemon sent to syslog and the top of the abuse report.

Evidence is taken from the far end, not from the client's word: a delivered message is
read back from the MX's Maildir by its Message-ID, and a blocked client is checked to
have produced no connection at the MX at all.

The lab is always torn down (also on Ctrl-C or SIGTERM) unless ``--keep`` is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from op25b.lab.netns import run_in

if TYPE_CHECKING:  # the real imports are lazy: pyroute2 may be missing (see run())
    from op25b.lab.topology import Lab

# The plans of policies/example.yaml the lab exercises (mobile pools and exemptions are
# left out: no lab host uses them).
RESIDENTIAL = ("100.64.0.0/16", "2001:db8:100::/40")
BUSINESS = ("198.51.100.0/24", "2001:db8:b00::/40")

POLICY = """\
# Written by `op25b demo`: the residential and business-static plans and the smarthost
# of policies/example.yaml, with the action chosen on the command line.
version: 1
guarded_ports: [25]
action: {action}
plans:
  residential:
    exempt: false
    prefixes: [{res4}, "{res6}"]
  business-static:
    exempt: true
    prefixes: [{biz4}, "{biz6}"]
provider_mtas:
  smarthost:
    addresses: [{mta4}, "{mta6}"]
daemon:
  queue: 0
  workers: 1
  on_daemon_down: static
"""

USER, PASSWORD = "alice", "lab-only-secret"  # the subscriber's mailbox at the provider
SENDER = "alice@isp.example"
V4_DOMAIN, V6_DOMAIN = "example.net", "v6.example.net"  # routed to the MX's v4 / v6 address
SWAKS_TIMEOUT = 3  # seconds; a dropped SYN costs this much per blocked swaks run
PROBE_TIMEOUT = 2.0
EVENT_TIMEOUT = 15.0  # queued -> relayed -> stored, on a loaded CI machine


@dataclass(frozen=True)
class DemoOptions:
    """Knobs for tests; the CLI uses the defaults."""

    workdir: Path | None = None  # keep files here (Maildir, logs, policy); default a temp dir
    relay_port: int = 25  # the provider MTA's next-hop port; a test breaks it on purpose
    bot_targets: int = 30
    bot_attempts: int = 60


@dataclass(frozen=True)
class Result:
    """One row of the table."""

    scenario: str
    expected: str
    observed: str
    passed: bool
    message_id: str = ""  # set for delivered mail
    received: tuple[str, ...] = ()  # Received: headers of the stored copy, newest first


@dataclass(frozen=True)
class Swaks:
    """What one swaks run did."""

    code: int  # swaks exit code: 0 ok, 2 connect failed, 23 MAIL refused, 28 AUTH failed
    elapsed: float
    error: str  # swaks's error lines, condensed


# --- entry point ---------------------------------------------------------------------------


def run(
    out: TextIO,
    err: TextIO,
    keep: bool = False,
    action: str = "reject",
    *,
    options: DemoOptions | None = None,
) -> int:
    """Run the demo; 0 if every scenario passed, 1 if any failed, 2 if it could not run."""
    opts = options or DemoOptions()
    if not prerequisites_met("op25b demo", _missing_prerequisites(), err):
        return 2
    with demo_workdir(opts.workdir, keep, "op25b-demo-") as workdir:
        return _Demo(out, err, keep, action, opts, workdir).run()


def prerequisites_met(prog: str, missing: list[str], err: TextIO) -> bool:
    """True when nothing is *missing*; otherwise say what is, on *err*."""
    if missing:
        print(f"{prog}: cannot run:\n  " + "\n  ".join(missing), file=err)
        print("run ./scripts/bootstrap.sh (as root) first", file=err)
    return not missing


@contextlib.contextmanager
def demo_workdir(given: Path | None, keep: bool, prefix: str) -> Iterator[Path]:
    """The demo's files: *given*, or a temp dir removed afterwards (unless *keep*).

    While it is in use SIGTERM unwinds like Ctrl-C, so the lab's teardown still runs.
    """
    with _sigterm_as_interrupt(), contextlib.ExitStack() as stack:
        if given is None:
            workdir = Path(tempfile.mkdtemp(prefix=prefix))
            if not keep:
                stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        else:
            workdir = given
            workdir.mkdir(parents=True, exist_ok=True)
        yield workdir


def _missing_prerequisites() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root is needed (network namespaces, firewall rules inside them)")
    for tool in ("ip", "iptables", "ip6tables", "ipset", "swaks"):
        if shutil.which(tool) is None:
            missing.append(f"`{tool}` not found")
    for module, extra in (("pyroute2", "lab"), ("aiosmtpd", "lab"), ("netfilterqueue", "daemon")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"python module {module} missing (pip install -e '.[{extra}]')")
    if shutil.which("swaks"):
        support = subprocess.run(["swaks", "--support"], capture_output=True, text=True)
        if "IPv6 supported" not in support.stdout + support.stderr:
            missing.append("swaks has no IPv6 support (apt-get install libio-socket-inet6-perl)")
    return missing


_MAIN_PID = os.getpid()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the lab exists, SIGTERM unwinds like Ctrl-C so teardown still runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        # pyroute2 forks helpers that inherit this handler: they must just die.
        if os.getpid() != _MAIN_PID:
            os._exit(128 + signum)
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


# --- the demo ------------------------------------------------------------------------------


class _Demo:
    """One run: setup, scenarios, shutdown, output. Heavy imports happen here, lazily."""

    prog = "op25b demo"

    def __init__(
        self, out: TextIO, err: TextIO, keep: bool, action: str, opts: DemoOptions, workdir: Path
    ) -> None:
        from op25b.lab import topology as L

        self.L = L
        self.out, self.err, self.keep, self.action = out, err, keep, action
        self.opts, self.workdir = opts, workdir
        self.maildir = workdir / "mx" / "Maildir"
        self.abuse_log = workdir / "blocked.jsonl"
        self.results: list[Result] = []
        self.blocked_attempts = 0  # connection attempts the scenarios expect to be blocked
        self.t0 = time.monotonic()

    def say(self, text: str, end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        start = time.monotonic()
        self.say(f"{text}... ", end="")
        try:
            yield
        except BaseException:
            self.say("failed")
            raise
        self.say(f"ok ({time.monotonic() - start:.1f}s)")

    def open_lab(self) -> tuple[Any, Callable[[], None], str]:
        """Create the lab: (lab, its teardown, a line naming it)."""
        from op25b.lab.labstate import lab_up
        from op25b.lab.topology import create_lab, destroy_lab

        # --keep records the lab so `op25b lab status|down` find it later.
        lab = lab_up(prefix="op25bdemo") if self.keep else create_lab("op25bdemo")
        return (
            lab,
            functools.partial(destroy_lab, lab),
            (f"  lab {lab.name}: namespaces {', '.join(lab.namespaces)}"),
        )

    def failures(self) -> tuple[type[Exception], ...]:
        """What ends a run with exit 2 (could not run), rather than a traceback."""
        from op25b.lab.mailservers import MailServerError
        from op25b.lab.processes import LabRunError
        from op25b.lab.topology import LabError

        return (LabError, LabRunError, MailServerError, OSError)

    def run(self) -> int:
        lab: Any = None
        teardown: Callable[[], None] | None = None
        try:
            with self.step("creating lab"):
                lab, teardown, line = self.open_lab()
            self.say(line)
            code = self._with_lab(lab)
        except self.failures() as exc:
            print(f"{self.prog}: {exc}", file=self.err)
            code = 2
        finally:
            if teardown is not None and not self.keep:
                with self.step("tearing down lab"):
                    teardown()
        if lab is not None and self.keep:
            self.say(f"lab {lab.name} kept, without its processes (files: {self.workdir});")
            self.say(f"remove it with: op25b lab down {lab.name}")
        self.say(f"demo finished in {time.monotonic() - self.t0:.1f}s")
        return code

    def _with_lab(self, lab: Lab) -> int:
        from op25b.lab.mailservers import MxConfig, ProviderConfig, start_server
        from op25b.lab.processes import DaemonProcess, SyslogReceiver

        L = self.L
        policy = self.workdir / "policy.yaml"
        res4, res6 = RESIDENTIAL
        biz4, biz6 = BUSINESS
        policy.write_text(
            POLICY.format(
                action=self.action, res4=res4, res6=res6, biz4=biz4, biz6=biz6,
                mta4=L.ISP_MTA_V4, mta6=L.ISP_MTA_V6,
            )
        )  # fmt: skip
        self.abuse_log.unlink(missing_ok=True)
        with contextlib.ExitStack() as stack:
            with self.step(f"starting external MX in {lab.net} (port 25, every address)"):
                self.mx = stack.enter_context(
                    start_server(lab.net, MxConfig(self.maildir), self.workdir / "mx.log")
                )
            provider = ProviderConfig(
                addresses=(L.ISP_MTA_V4, L.ISP_MTA_V6),
                users=((USER, PASSWORD),),
                relay_nets=RESIDENTIAL + BUSINESS,
                routes=((V4_DOMAIN, L.NET_MX_V4), (V6_DOMAIN, L.NET_MX_V6)),
                relay_port=self.opts.relay_port,
            )
            with self.step(f"starting provider MTA in {lab.isp} (587 with AUTH, 25)"):
                self.mta = stack.enter_context(
                    start_server(lab.isp, provider, self.workdir / "mta.log")
                )
            self.syslog = stack.enter_context(SyslogReceiver())
            # One abuse window and no periodic counters during the run: the final
            # counters line and the abuse log written at SIGTERM hold everything.
            extra = [
                "--abuse-log", str(self.abuse_log), "--syslog", self.syslog.path,
                "--abuse-window", "3600", "--counters-interval", "3600",
            ]  # fmt: skip
            with self.step(f"starting op25b in {lab.rtr} (action {self.action})"):
                daemon = stack.enter_context(DaemonProcess(lab.rtr, policy, extra))
                daemon.wait_started()
            self.say("running scenarios:")
            self._scenarios(lab)
            with self.step("stopping op25b (SIGTERM) for its final counters"):
                daemon.stop()
            counters = self._final_counters()
            self.results.append(self._check_counters(counters))
            top = self._report_top()
            self.results.append(top[0])
            self._print_results(counters, top[1])
        return self.summary()

    # --- scenarios -------------------------------------------------------------------------

    def _scenarios(self, lab: Lab) -> None:
        L, P = self.L, functools.partial
        bot = f"bot -> {self.opts.bot_targets} MXes :25, {self.opts.bot_attempts} tries"
        plan: list[tuple[str, Callable[[], Result]]] = [
            ("residential -> external MX :25 (v4)",
             P(self._blocked, lab.res, L.RES_V4, L.NET_MX_V4, "res-v4")),
            ("residential -> provider MTA :587 with AUTH (v4)",
             P(self._delivered, lab.res, L.RES_V4, L.ISP_MTA_V4, 587, V4_DOMAIN, "res-v4",
               auth=True, relayed=True)),
            ("residential -> provider MTA :587 no AUTH (v4)",
             P(self._relay_refused, lab.res, L.RES_V4, L.ISP_MTA_V4)),
            ("residential -> provider MTA :25 (v4)",
             P(self._delivered, lab.res, L.RES_V4, L.ISP_MTA_V4, 25, V4_DOMAIN, "res25-v4",
               auth=False, relayed=True)),
            ("business-static -> external MX :25 (v4)",
             P(self._delivered, lab.biz, L.BIZ_V4, L.NET_MX_V4, 25, V4_DOMAIN, "biz-v4",
               auth=False, relayed=False)),
            (f"{bot} (v4)", P(self._bot, lab.bot)),
            ("residential -> external MX :25 (v6)",
             P(self._blocked, lab.res, L.RES_V6, L.NET_MX_V6, "res-v6")),
            ("residential -> provider MTA :587 with AUTH (v6)",
             P(self._delivered, lab.res, L.RES_V6, L.ISP_MTA_V6, 587, V6_DOMAIN, "res-v6",
               auth=True, relayed=True)),
            ("business-static -> external MX :25 (v6)",
             P(self._delivered, lab.biz, L.BIZ_V6, L.NET_MX_V6, 25, V6_DOMAIN, "biz-v6",
               auth=False, relayed=False)),
        ]  # fmt: skip
        self.play(plan)

    def play(self, plan: Sequence[tuple[str, Callable[[], Result]]]) -> None:
        """Run scenarios in order, one result row each; a broken one hides no other."""
        for title, fn in plan:
            start = time.monotonic()
            self.say(f"  {len(self.results) + 1:2}. {title}... ", end="")
            try:
                result = fn()
            except KeyboardInterrupt:
                self.say("interrupted")
                raise
            except Exception as exc:  # one broken scenario must not hide the others
                result = Result("", "", f"error: {type(exc).__name__}: {exc}", False)
            result = dataclasses.replace(result, scenario=title)
            self.results.append(result)
            word = "PASS" if result.passed else "FAIL"
            self.say(f"{word} ({time.monotonic() - start:.1f}s)")

    def _swaks(
        self, ns: str, src: str, server: str, port: int, rcpt: str, message_id: str, auth: bool
    ) -> Swaks:
        argv = [
            "swaks", "--server", server, "--port", str(port), "--local-interface", src,
            "--ehlo", f"{ns.rsplit('-', 1)[-1]}.subscriber.example",
            "--from", SENDER, "--to", rcpt,
            "--h-Message-Id", message_id, "--h-Subject", "op25b demo",
            "--body", "Sent by op25b demo through a lab router running OP25B.",
            "--timeout", f"{SWAKS_TIMEOUT}s", "--silent", "2",
        ]  # fmt: skip
        if auth:
            argv += ["--auth", "PLAIN", "--auth-user", USER, "--auth-password", PASSWORD]
        start = time.monotonic()
        done = run_in(
            ns, argv, capture_output=True, text=True, timeout=SWAKS_TIMEOUT * 4, check=False
        )
        lines = (done.stdout + done.stderr).splitlines()
        # With --silent 2 swaks prints only errors: "*** ..." (local) and "<** ..." (server).
        error = " ".join(
            " ".join(line.lstrip("*<- ").split())
            for line in lines
            if line.lstrip().startswith(("***", "<**"))
        )
        return Swaks(done.returncode, time.monotonic() - start, error)

    def _mx_connections_from(self, src: str) -> int:
        return sum(1 for e in self.mx.events("connect") if e["peer"] == src)

    def _blocked_expectation(self) -> str:
        return "refused at once" if self.action == "reject" else "no answer (SYN dropped)"

    def _blocked(self, ns: str, src: str, mx: str, tag: str) -> Result:
        self.blocked_attempts += 1
        mid = _message_id(tag)
        run = self._swaks(ns, src, mx, 25, f"bob@{V4_DOMAIN}", mid, auth=False)
        seen = self._mx_connections_from(src)
        if self.action == "reject":
            ok = run.code == 2 and "refused" in run.error.lower() and run.elapsed < 2.0
        else:
            ok = run.code == 2 and "refused" not in run.error.lower()
        # swaks's last words are the socket error ("...: connect: Connection refused").
        why = run.error.rsplit(": ", 1)[-1] if run.error else f"swaks exit {run.code}"
        observed = f"{_short(why, 30)} in {run.elapsed:.1f}s; MX saw {_conns(seen)}"
        return Result("", f"blocked: {self._blocked_expectation()}", observed, ok and seen == 0)

    def _relay_refused(self, ns: str, src: str, mta: str) -> Result:
        run = self._swaks(ns, src, mta, 587, f"bob@{V4_DOMAIN}", _message_id("noauth"), False)
        ok = run.code == 23 and "530" in run.error
        observed = f"{_short(run.error, 40)} (swaks exit {run.code})"
        return Result("", "MTA refuses: 530, AUTH first", observed, ok)

    def _delivered(
        self, ns: str, src: str, server: str, port: int, domain: str, tag: str, *,
        auth: bool, relayed: bool,
    ) -> Result:  # fmt: skip
        from op25b.lab.mailservers import MailServerError, find_message, received_chain

        mid = _message_id(tag)
        expected = "in MX mailbox, via the MTA" if relayed else "in MX mailbox, direct"
        run = self._swaks(ns, src, server, port, f"bob@{domain}", mid, auth)
        if run.code != 0:
            observed = f"swaks exit {run.code}: {_short(run.error)}"
            return Result("", expected, observed, False, mid)
        try:
            if relayed:
                hop = self.mta.wait_event(
                    lambda e: e["event"] in ("relayed", "deferred") and e["message_id"] == mid,
                    EVENT_TIMEOUT,
                    f"relay of {mid}",
                )
                if hop["event"] == "deferred":
                    observed = f"MTA queued it, relay deferred: {_short(hop['error'])}"
                    return Result("", expected, observed, False, mid)
            stored = self.mx.wait_event(
                lambda e: e["event"] == "stored" and e["message_id"] == mid,
                EVENT_TIMEOUT,
                f"{mid} at the MX",
            )
        except MailServerError as exc:
            return Result("", expected, f"never arrived: {_short(str(exc))}", False, mid)
        msg = find_message(self.maildir, mid)
        if msg is None:
            return Result("", expected, f"MX said stored, but {mid} not in Maildir", False, mid)
        want_peer = server if relayed else src
        ok = stored["peer"] == want_peer
        observed = f"{mid} from {stored['peer']}"
        return Result("", expected, observed, ok, mid, tuple(received_chain(msg)))

    def _bot(self, ns: str) -> Result:
        from op25b.lab.tools import Probe, probe_many

        L = self.L
        targets = L.NET_MX_EXTRA_V4[: self.opts.bot_targets]
        probes = [
            Probe(L.BOT_V4, targets[i % len(targets)], 25) for i in range(self.opts.bot_attempts)
        ]
        self.blocked_attempts += len(probes)
        results = probe_many(ns, probes, timeout=PROBE_TIMEOUT)
        want = "refused" if self.action == "reject" else "timeout"
        tally: Counter[str] = Counter(r.outcome for r in results)
        seen = self._mx_connections_from(L.BOT_V4)
        observed = ", ".join(f"{n} {what}" for what, n in tally.most_common())
        observed += f"; MX saw {_conns(seen)}"
        expected = f"all {len(probes)} blocked ({want})"
        return Result("", expected, observed, tally[want] == len(probes) and seen == 0)

    # --- after the daemon stopped ------------------------------------------------------------

    def _final_counters(self) -> dict[str, str]:
        from op25b.lab.processes import LabRunError, sd_params

        try:
            msg = self.syslog.wait_for(lambda m: 'final="1"' in m, 5.0, "final counters")
        except LabRunError:
            return {}
        return sd_params(msg)

    def _check_counters(self, c: dict[str, str]) -> Result:
        title = "op25b counters (final syslog line)"
        n = self.blocked_attempts
        if not c:
            return Result(title, f"blocked = {n}", "no final counters line in syslog", False)
        blocked, qdrop = int(c.get("blocked", -1)), int(c.get("queue_dropped", -1))
        udrop = int(c.get("user_dropped", -1))
        if self.action == "reject":
            # A reset answers each SYN at once: exactly one decided packet per attempt.
            expected, ok = f"blocked = {n}, no queue drop", blocked == n
        else:
            # A dropped SYN is retransmitted until the client gives up: >= 1 per attempt.
            expected, ok = f"blocked >= {n} (retries), no queue drop", blocked >= n
        observed = f"blocked = {blocked}, queue drops {qdrop}+{udrop}"
        return Result(title, expected, observed, ok and qdrop == 0 and udrop == 0)

    def _report_top(self) -> tuple[Result, str]:
        import io

        from op25b.report import desk as report

        title = "op25b report: bot first"
        expected = f"{self.L.BOT_V4} on top"
        problems: list[str] = []
        try:
            rep = report.build_report([str(self.abuse_log)], lambda p: problems.append(str(p)))
        except report.ReportError as exc:
            return Result(title, expected, f"no report: {exc}", False), ""
        text = io.StringIO()
        report.write_table(rep, rep.sources[:5], text)
        if not rep.sources:
            return Result(title, expected, "report is empty", False), text.getvalue()
        first = rep.sources[0]
        observed = (
            f"{first.source}: {first.score.verdict}, score {first.score.value}, "
            f"{first.attempts} tries, {first.distinct_destinations} MXes"
        )
        ok = first.source == self.L.BOT_V4 and not problems
        return Result(title, expected, observed, ok), text.getvalue()

    # --- output ----------------------------------------------------------------------------

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Columns padded to their widest cell, two spaces apart."""
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
        for row in (header, *rows):
            self.say("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    def result_table(self, first: str = "SCENARIO") -> None:
        """One row per check: what was expected, what was observed, PASS or FAIL."""
        rows = [
            (str(n), r.scenario, r.expected, r.observed, "PASS" if r.passed else "FAIL")
            for n, r in enumerate(self.results, 1)
        ]
        self.table(("#", first, "EXPECTED", "OBSERVED", "RESULT"), rows)

    def summary(self) -> int:
        """The closing line: how many checks passed; 1 if any failed."""
        failed = [r for r in self.results if not r.passed]
        self.say(
            f"{len(self.results) - len(failed)} of {len(self.results)} checks passed"
            + (f"; FAILED: {', '.join(r.scenario for r in failed)}" if failed else "")
        )
        return 1 if failed else 0

    def _print_results(self, counters: dict[str, str], report_text: str) -> None:
        self.say("")
        self.result_table()

        delivered = [r for r in self.results if r.received]
        if delivered:
            self.say("\nmail read back from the external MX's Maildir (Received: newest first):")
        for r in delivered:
            self.say(f"  Message-ID: {r.message_id}  ({r.scenario})")
            for line in r.received:
                self.say(f"    Received: {line}")

        self.say(f"\nop25b counters (final syslog line from the daemon, action {self.action}):")
        if not counters:
            self.say("  (none received)")
        else:
            c = counters
            self.say(f"  packets decided {c.get('packets')}")
            for verdict in ("accept", "reject", "drop", "monitor"):
                self.say(f"  {verdict:<8} {c.get(verdict, '?'):>5}")
            reasons = ("provider_mta", "not_subscriber", "exempt_plan", "exemption", "blocked")
            self.say("  by reason: " + ", ".join(f"{r} {c.get(r, '?')}" for r in reasons))
            self.say(
                f"  kernel queue drops: {c.get('queue_dropped')} queue-full, "
                f"{c.get('user_dropped')} socket-full; parse errors {c.get('parse_errors')}"
            )
        self.say(f"\nop25b report {self.abuse_log} (top 5):")
        for line in report_text.rstrip().splitlines():
            self.say(f"  {line}".rstrip())
        self.say("")


def _message_id(tag: str) -> str:
    return f"<{tag}.{secrets.token_hex(4)}@op25b.demo>"


def _conns(n: int) -> str:
    return "no connection" if n == 0 else f"{n} connections"


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
