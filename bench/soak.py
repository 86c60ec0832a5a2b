"""Soak: mixed traffic for minutes while the daemon's environment keeps changing under it.

::

    sudo .venv/bin/python bench/soak.py                  # 10 minutes (the figures in README)
    sudo .venv/bin/python bench/soak.py --duration 60    # what the lab test runs

Builds its own lab (always torn down) with a real provider MTA (587 with AUTH,
relaying on 25) in ``isp``, a real MX storing to a Maildir in ``net``, and ``op25b run``
on the router (action reject, verdict cache on, 10 s abuse windows, counters every
5 s, syslog over TCP to a collector in the router namespace). Traffic, all at once:

- mail: res submits on 587 with AUTH, the MTA relays to the MX on 25 (queued:
  not a subscriber); biz delivers to the MX directly (queued: exempt plan);
- probes: biz connects to the MX every 100 ms, v4 and v6 alternating: the latency
  of each allowed SYN -> SYN-ACK through the queue gives the longest verdict gap;
- bots: the bot connects to the MXes every 200 ms (refused by the daemon or the
  verdict cache), and 300 SYN/s from /128s in 2048 /64s of one /48 (an IPv6 spray).

Faults, one at a time: a reload every 3 s (valid and invalid policies alternating),
the abuse log rotated (rename + SIGUSR1) every 15 s and once deleted without a signal
(a hard link keeps its records for the count), the syslog collector stopped for 1 s
and restarted every 20 s, ``nft flush ruleset`` in the router every 30 s.

It prints: allowed connections failed (must be 0), blocked-source SYNs at the MX
outside flush windows (0; inside them the ruleset is gone until the watchdog repairs
it, so those are counted apart), abuse-log packets vs the final counters (exact,
across every rotated file), RSS and open-fd growth, the longest verdict gap,
reloads applied/refused. Exit 1 if a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import floodlab as F  # noqa: E402  (bench helpers next to this file)
import harness as H  # noqa: E402

from op25b.lab import topology as L  # noqa: E402
from op25b.lab.mailservers import (  # noqa: E402
    MailServer,
    MailServerError,
    MxConfig,
    ProviderConfig,
    start_server,
)
from op25b.lab.netns import child_env, popen_in, run_in, stop_process  # noqa: E402
from op25b.lab.processes import AwaitableLines, DaemonProcess, sd_params  # noqa: E402
from op25b.lab.topology import Lab, lab_session  # noqa: E402

SYSLOG_PORT = 5514
SPRAY_NET = "2001:db8:100:5000::/52"  # inside one /48 of the residential plan
USER, PASSWORD = "alice", "soak-only-secret"
POLICY = """\
version: 1
guarded_ports: [25]
action: reject
plans:
  residential:
    exempt: false
    prefixes: [{residential}, "2001:db8:100::/40"]
  business-static:
    exempt: true
    prefixes: [198.51.100.0/24, "2001:db8:b00::/40"]
provider_mtas:
  smarthost:
    addresses: [203.0.113.25, "2001:db8:25::25"]
exemptions:
  - prefix: 100.64.7.7/32
    ticket: SOAK-{n}
    expires: 2099-12-31
    reason: soak reload {n}
daemon:
  queue: 0
  on_daemon_down: static
  counters_interval: 5
  abuse_window: 10
  block_cache_timeout: 5
"""


def policy_text(n: int, valid: bool) -> str:
    """Valid policies differ in an exemption's ticket; an invalid one has host bits set."""
    return POLICY.format(n=n, residential="100.64.0.0/16" if valid else "100.64.1.0/16")


# ------------------------------------------------------------------ child processes


def probe_loop(src: str, dsts: list[str], interval: float, seconds: float) -> None:
    """In a namespace: connect from ``src`` to each of ``dsts``:25 in turn; JSON per try."""
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        dst = dsts[i % len(dsts)]
        i += 1
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.bind((src, 0))
            t0, wall = time.monotonic(), time.time()
            try:
                s.connect((dst, 25))
                outcome = "connected"
            except ConnectionRefusedError:
                outcome = "refused"
            except TimeoutError:
                outcome = "timeout"
            except OSError as e:
                outcome = f"error {e.errno}"
            ms = (time.monotonic() - t0) * 1000
        print(json.dumps({"t": wall, "dst": dst, "outcome": outcome, "ms": ms}), flush=True)
        time.sleep(max(0.0, interval - ms / 1000))  # the pacing of the load itself


def collect(port: int) -> None:
    """In the router namespace: a TCP syslog collector (RFC 6587 octet counting)."""
    srv = socket.create_server(("127.0.0.1", port))
    print("READY", flush=True)

    def serve(conn: socket.socket) -> None:
        buf = b""
        while data := conn.recv(65536):
            buf += data
            while b" " in buf[:8]:
                size, _, rest = buf.partition(b" ")
                if len(rest) < int(size):
                    break
                msg, buf = rest[: int(size)], rest[int(size) :]
                print(msg.decode("utf-8", "replace").replace("\n", " "), flush=True)

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


# ------------------------------------------------------------------ parent side


class Collector:
    """The TCP syslog collector in rtr; restartable; messages kept per incarnation."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.lines = AwaitableLines()
        self.per_start: list[int] = []
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "collect"]
        proc = popen_in(self.ns, argv, stdout=subprocess.PIPE, text=True, env=child_env())
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "READY":
            raise RuntimeError("syslog collector did not start")
        self._proc = proc
        self.per_start.append(0)
        index = len(self.per_start) - 1

        def drain() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.per_start[index] += 1
                self.lines.add(line.rstrip("\n"))

        threading.Thread(target=drain, daemon=True).start()

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, 5)
            self._proc = None


class Lines:
    """JSON lines of a child process, collected on a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.items: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.items.append(json.loads(line))

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.proc, 5)
        self._thread.join(5)


@dataclass
class Mail:
    """Mail sent by swaks in a loop: via the provider MTA (res) and direct (biz)."""

    lab: Lab
    sent: dict[str, str] = field(default_factory=dict)  # message id -> path
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self, period: float) -> None:
        n = 0
        while not self._stop.wait(period):
            n += 1
            via_mta = n % 2 == 1
            v6 = n % 4 in (2, 3)
            mid = f"<soak-{n}-{time.time_ns()}@op25b.lab>"
            if via_mta:
                ns, src, server = self.lab.res, L.RES_V4, L.ISP_MTA_V4
                argv = ["--port", "587", "--auth", "PLAIN"]
                argv += ["--auth-user", USER, "--auth-password", PASSWORD]
            else:
                ns, src = self.lab.biz, L.BIZ_V6 if v6 else L.BIZ_V4
                server, argv = (L.NET_MX_V6 if v6 else L.NET_MX_V4), ["--port", "25"]
            domain = "v6.example.net" if v6 else "example.net"
            argv = ["swaks", "--server", server, "--local-interface", src, *argv]
            argv += ["--from", "alice@isp.example", "--to", f"bob@{domain}"]
            argv += ["--h-Message-Id", mid, "--timeout", "5s", "--silent", "2"]
            done = run_in(ns, argv, capture_output=True, text=True, timeout=30, check=False)
            path = "via MTA" if via_mta else "direct"
            if done.returncode != 0:
                self.failures.append(f"{path} {mid}: swaks exit {done.returncode}")
            else:
                self.sent[mid] = path

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Window:
    """One ``nft flush ruleset``: when, how long until repaired, what leaked meanwhile."""

    start: float
    end: float = 0.0
    leaked: dict[str, int] = field(default_factory=dict)


def _sinks(lab: Lab) -> H.Sink:
    syn = "-p tcp -m tcp --dport 25 --tcp-flags FIN,SYN,RST,ACK SYN"
    return H.Sink(
        lab.net,
        [
            H.SinkRule(4, "soak-bot-syn-v4", f"-s {L.BOT_V4} {syn}", drop=False),
            H.SinkRule(6, "soak-bot-syn-v6", f"-s {L.BOT_V6} {syn}", drop=False),
            H.SinkRule(6, "soak-spray-syn", f"-s {SPRAY_NET} {syn}"),
        ],
    )


class Soak:
    """One soak run in a lab (see the module docstring)."""

    def __init__(self, lab: Lab, workdir: Path, duration: float) -> None:
        self.lab, self.workdir, self.duration = lab, workdir, duration
        self.abuse_log = workdir / "blocked.jsonl"
        self.policy = workdir / "soak.yaml"
        self.windows: list[Window] = []
        self.reloads = {"valid": 0, "invalid": 0, "wrong_outcome": 0}
        self.rotations = self.deletions = self.collector_restarts = 0
        self.errors: list[str] = []
        self.collector = Collector(lab.rtr)
        self.sink = _sinks(lab)

    def run(self) -> dict[str, Any]:
        lab = self.lab
        maildir = self.workdir / "Maildir"
        provider = ProviderConfig(
            addresses=(L.ISP_MTA_V4, L.ISP_MTA_V6),
            users=((USER, PASSWORD),),
            relay_nets=("100.64.0.0/16", "198.51.100.0/24"),
            routes=(("example.net", L.NET_MX_V4), ("v6.example.net", L.NET_MX_V6)),
        )
        with contextlib.ExitStack() as stack:
            mx = stack.enter_context(
                start_server(lab.net, MxConfig(maildir), self.workdir / "mx.log")
            )
            mta = stack.enter_context(start_server(lab.isp, provider, self.workdir / "mta.log"))
            self.collector.start()
            stack.callback(self.collector.stop)
            self.sink.install()
            stack.callback(self.sink.remove)
            self.policy.write_text(policy_text(0, True))
            extra = ["--abuse-log", str(self.abuse_log)]
            extra += ["--syslog", f"tcp://127.0.0.1:{SYSLOG_PORT}"]
            daemon = stack.enter_context(DaemonProcess(lab.rtr, self.policy, extra))
            daemon.wait_started()
            return self._with_daemon(daemon, mx, mta)

    def _with_daemon(
        self, daemon: DaemonProcess, mx: MailServer, mta: MailServer
    ) -> dict[str, Any]:
        lab, pid = self.lab, daemon.proc.pid
        sampler = H.Sampler(pid, period=2.0).start()
        me = str(Path(__file__).resolve())

        def loop(ns: str, src: str, dsts: list[str], interval: float) -> Lines:
            argv = [sys.executable, me, "probe-loop", src, str(interval), str(self.duration), *dsts]
            proc = popen_in(ns, argv, stdout=subprocess.PIPE, text=True, env=child_env())
            return Lines(proc)

        probes = loop(lab.biz, L.BIZ_V4, [L.NET_MX_V4], 0.1)
        probes6 = loop(lab.biz, L.BIZ_V6, [L.NET_MX_V6], 0.2)
        bot4 = loop(lab.bot, L.BOT_V4, list(L.NET_MX_EXTRA_V4[:16]), 0.2)
        bot6 = loop(lab.bot, L.BOT_V6, list(L.NET_MX_EXTRA_V6[:16]), 0.2)
        spray = self._spray(lab)
        mail = Mail(lab)
        mailer = threading.Thread(target=mail.run, args=(2.0,), daemon=True)
        mailer.start()
        self._faults(daemon)
        mail.stop()
        mailer.join(60)
        for lines in (probes, probes6, bot4, bot6):
            lines.wait(30)
        spray_out, _ = spray.communicate(timeout=60)
        undelivered = self._await_mail(mail, mx, mta)
        arrived = self.sink.counts()
        memory = sampler.stop()
        code = daemon.stop()
        final = sd_params(
            self.collector.lines.wait_for(lambda m: 'final="1"' in m, 30, what="final counters")[1]
        )
        return self._results(
            daemon, code, final, memory, arrived, probes.items + probes6.items,
            bot4.items + bot6.items, mail, undelivered, json.loads(spray_out.splitlines()[-1]),
        )  # fmt: skip

    def _spray(self, lab: Lab) -> subprocess.Popen[str]:
        # 2048 random /128s, each in a random /64 of the spray's /52 (one /48).
        rng = random.Random(3)
        net = ipaddress.ip_network(SPRAY_NET)
        base = int(net.network_address)
        srcs = {
            str(ipaddress.ip_address(base | (rng.randrange(4096) << 64) | rng.getrandbits(64)))
            for _ in range(2048)
        }
        argv = [sys.executable, "-m", "op25b.lab.fuzzframes", "send", "--plain"]
        argv += ["--dmac", F.mac_of(lab.rtr, "to-bot"), "--rate", "300"]
        argv += ["--count", str(int(300 * self.duration)), "--max-seconds", str(self.duration)]
        argv += [x for a in sorted(srcs) for x in ("--src6", a)]
        argv += [x for a in L.NET_MX_EXTRA_V6 for x in ("--dst6", a)]
        return popen_in(lab.bot, argv, stdout=subprocess.PIPE, text=True, env=child_env())

    # -- faults ------------------------------------------------------------------------

    def _faults(self, daemon: DaemonProcess) -> None:
        start = time.monotonic()
        jobs: list[tuple[float, float, Callable[[DaemonProcess], None]]] = [
            (3.0, 3.0, self._reload),
            (15.0, 7.0, self._rotate),
            (20.0, 11.0, self._restart_collector),
            (30.0, 14.0, self._flush),
        ]
        due = {i: start + off for i, (_, off, _) in enumerate(jobs)}
        deleted = False
        while True:
            now = time.monotonic()
            if now >= start + self.duration - 2:
                return
            i = min(due, key=due.__getitem__)
            if due[i] > now:
                time.sleep(min(due[i], start + self.duration - 2) - now)  # the fault schedule
                continue
            period, _, job = jobs[i]
            if job == self._rotate and not deleted and now - start > self.duration / 3:
                deleted = True
                self._delete_log(daemon)
            else:
                job(daemon)
            due[i] = max(due[i] + period, time.monotonic())

    def _reload(self, daemon: DaemonProcess) -> None:
        valid = self.reloads["valid"] <= self.reloads["invalid"]
        self.reloads["valid" if valid else "invalid"] += 1
        self.policy.write_text(policy_text(self.reloads["valid"], valid))
        line = daemon.reload(timeout=60)
        if ("reloaded " in line) != valid:
            self.reloads["wrong_outcome"] += 1
            self.errors.append(f"reload ({'valid' if valid else 'invalid'}): {line}")

    def _rotate(self, daemon: DaemonProcess) -> None:
        self.rotations += 1
        start = len(daemon.lines.snapshot())
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.abuse_log, f"{self.abuse_log}.{self.rotations}")
        daemon.proc.send_signal(signal.SIGUSR1)
        daemon.lines.wait_for(lambda s: "reopened abuse log" in s, 30, start, "reopen")

    def _delete_log(self, daemon: DaemonProcess) -> None:
        self.deletions += 1
        start = len(daemon.lines.snapshot())
        kept = Path(f"{self.abuse_log}.deleted")
        with contextlib.suppress(FileNotFoundError):
            os.link(self.abuse_log, kept)  # the records stay countable; the path is gone
            os.unlink(self.abuse_log)
        daemon.lines.wait_for(lambda s: "was deleted or replaced" in s, 30, start, "recreate")

    def _restart_collector(self, daemon: DaemonProcess) -> None:
        self.collector_restarts += 1
        self.collector.stop()
        time.sleep(1.0)  # the outage itself
        self.collector.start()

    def _flush(self, daemon: DaemonProcess) -> None:
        before = self.sink.counts()
        start = len(daemon.lines.snapshot())
        w = Window(time.time())
        F.sh(self.lab.rtr, ["nft", "flush", "ruleset"])
        # Any repair after the flush: a check whose reads straddle it (iptables-save
        # before, nft list after) finds only the nft table missing, and its repair
        # reinstalls the rules as well.
        daemon.lines.wait_for(lambda s: "kernel rules damaged, repaired" in s, 30, start, "repair")
        w.end = time.time()
        after = self.sink.counts()
        w.leaked = {k: after[k] - before[k] for k in after}
        self.windows.append(w)

    # -- results -----------------------------------------------------------------------

    def _await_mail(self, mail: Mail, mx: MailServer, mta: MailServer) -> list[str]:
        deadline = time.monotonic() + 30
        missing = []
        for mid in mail.sent:
            try:
                left = max(0.1, deadline - time.monotonic())
                mx.wait_event(
                    lambda e, m=mid: e["event"] == "stored" and e["message_id"] == m, left, mid
                )  # type: ignore[misc]
            except MailServerError:
                missing.append(mid)
        deferred = [f"deferred {e['message_id']}: {e['error']}" for e in mta.events("deferred")]
        return missing + deferred

    def _in_window(self, t: float) -> bool:
        return any(w.start <= t <= w.end + 0.05 for w in self.windows)

    def _abuse_packets(self) -> tuple[int, int]:
        files = sorted(self.workdir.glob("blocked.jsonl*"))
        records = packets = 0
        for f in files:
            for line in f.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    records += 1
                    packets += int(rec["packets"])
        return records, packets

    def _results(
        self,
        daemon: DaemonProcess,
        code: int,
        final: dict[str, str],
        memory: dict[str, float],
        arrived: dict[str, int],
        probes: list[dict[str, Any]],
        bots: list[dict[str, Any]],
        mail: Mail,
        undelivered: list[str],
        spray: dict[str, Any],
    ) -> dict[str, Any]:
        stderr = daemon.lines.snapshot()
        allowed_failed = [p for p in probes if p["outcome"] != "connected"]
        ms = sorted(p["ms"] for p in probes)
        bot_leaks = [b for b in bots if b["outcome"] == "connected"]
        bot_leaks_out = [b for b in bot_leaks if not self._in_window(b["t"])]
        bot_other = [b for b in bots if b["outcome"] not in ("connected", "refused")]
        in_windows = {k: sum(w.leaked.get(k, 0) for w in self.windows) for k in arrived}
        outside = {k: arrived[k] - in_windows[k] for k in arrived}
        records, abuse_packets = self._abuse_packets()
        blocked = int(final["blocked"]) + int(final["block_cache"])
        applied = sum("reloaded " in s for s in stderr)
        refused = sum("reload refused" in s for s in stderr)
        r: dict[str, Any] = {
            "duration_s": self.duration,
            "allowed": {
                "probes": len(probes),
                "probes_failed": len(allowed_failed),
                "failures": allowed_failed[:10],
                "mails_accepted": len(mail.sent),
                "mail_failures": mail.failures + undelivered,
            },
            "verdict_gap_ms": {
                "max": round(ms[-1], 1),
                "p99": round(ms[int(len(ms) * 0.99)], 1),
                "median": round(statistics.median(ms), 2),
            },
            "bots": {
                "attempts": len(bots),
                "refused": sum(b["outcome"] == "refused" for b in bots),
                "connected_in_flush_windows": len(bot_leaks) - len(bot_leaks_out),
                "connected_outside": len(bot_leaks_out),
                "other_outcomes": bot_other[:10],
                "spray_sent": spray["sent"],
            },
            "blocked_syns_at_mx": {"in_flush_windows": in_windows, "outside": outside},
            "flush_windows_s": [round(w.end - w.start, 2) for w in self.windows],
            "abuse": {
                "records": records,
                "packets_in_records": abuse_packets,
                "counters_blocked_plus_block_cache": blocked,
                "files": len(list(self.workdir.glob("blocked.jsonl*"))),
            },
            "reloads": {**self.reloads, "applied": applied, "refused": refused},
            "faults": {
                "rotations": self.rotations,
                "deletions": self.deletions,
                "collector_restarts": self.collector_restarts,
                "collector_messages_per_start": self.collector.per_start,
                "flushes": len(self.windows),
            },
            "daemon": {
                "exit_code": code,
                "tracebacks": _tracebacks(stderr),
                **{
                    k: int(final[k])
                    for k in (
                        "packets",
                        "blocked",
                        "block_cache",
                        "rules_repaired",
                        "syslog_dropped",
                        "abuse_records_lost",
                        "callback_errors",
                    )
                },
            },
            "memory": memory,
            "errors": self.errors,
        }
        r["checks"] = {
            "allowed connections failed: 0": not allowed_failed
            and not r["allowed"]["mail_failures"],
            "blocked-source SYNs at the MX outside flush windows: 0": not any(outside.values())
            and not bot_leaks_out,
            "abuse-log packets == blocked + block_cache": abuse_packets == blocked,
            "reloads: every valid applied, every invalid refused": (
                applied == self.reloads["valid"] and refused == self.reloads["invalid"]
            ),
            "exit 0, no traceback, no callback error": code == 0
            and not r["daemon"]["tracebacks"]
            and final["callback_errors"] == "0",
            "syslog back after every collector restart": all(
                n > 0 for n in self.collector.per_start
            ),
            "open fds: end <= start + 4": memory["fds_end"] <= memory["fds_start"] + 4,
        }
        return r


def _tracebacks(lines: list[str]) -> list[str]:
    """Each traceback on the daemon's stderr with the 12 lines after it (at most 3)."""
    at = [i for i, s in enumerate(lines) if "Traceback" in s][:3]
    return ["\n".join(lines[i : i + 13]) for i in at]


def print_results(r: dict[str, Any]) -> None:
    """The soak's summary, one topic a line."""
    a, g, b = r["allowed"], r["verdict_gap_ms"], r["bots"]
    m, ab, rl, f = r["memory"], r["abuse"], r["reloads"], r["faults"]
    syns = r["blocked_syns_at_mx"]
    lines = [
        f"soak {r['duration_s']:.0f} s",
        f"allowed: {a['probes']} probes, {a['probes_failed']} failed;"
        f" {a['mails_accepted']} mails, {len(a['mail_failures'])} failed",
        f"verdict gap (allowed SYN -> SYN-ACK through the queue) ms:"
        f" max {g['max']}, p99 {g['p99']}, median {g['median']}",
        f"bots: {b['attempts']} attempts, {b['refused']} refused,"
        f" {b['connected_in_flush_windows']} connected inside flush windows,"
        f" {b['connected_outside']} outside; spray {b['spray_sent']} SYNs",
        f"blocked SYNs at the MX: outside flush windows {syns['outside']},"
        f" inside {syns['in_flush_windows']}; windows s {r['flush_windows_s']}",
        f"abuse log: {ab['records']} records in {ab['files']} files,"
        f" {ab['packets_in_records']} packets;"
        f" counters blocked + block_cache {ab['counters_blocked_plus_block_cache']}",
        f"reloads: {rl['applied']} applied / {rl['refused']} refused"
        f" (sent {rl['valid']} valid, {rl['invalid']} invalid)",
        f"faults: {f['rotations']} rotations, {f['deletions']} deletion,"
        f" {f['collector_restarts']} collector restarts"
        f" (messages per start {f['collector_messages_per_start']}), {f['flushes']} flushes",
        f"RSS MB start/half-way/end/max {m['rss_start_mb']}/{m['rss_half_mb']}"
        f"/{m['rss_end_mb']}/{m['rss_max_mb']};"
        f" fds {m['fds_start']}/{m['fds_end']}/{m['fds_max']}",
        f"daemon: { {k: v for k, v in r['daemon'].items() if k != 'tracebacks'} }",
        *r["daemon"]["tracebacks"],
        *(f"  [{'ok' if ok else 'FAIL'}] {name}" for name, ok in r["checks"].items()),
        *(f"  error: {e}" for e in r["errors"]),
    ]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Run a soak (or one of its child processes)."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "probe-loop":
        probe_loop(args[1], args[4:], float(args[2]), float(args[3]))
        return 0
    if args and args[0] == "collect":
        collect(SYSLOG_PORT)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    a = p.parse_args(args)
    with lab_session(prefix="op25bsk") as lab, tempfile.TemporaryDirectory() as tmp:
        r = Soak(lab, Path(tmp), a.duration).run()
    print_results(r)
    return H.finish("soak", r)


if __name__ == "__main__":
    sys.exit(main())
