"""Fuzz campaign through the real queue: a million hostile frames, every one accounted for.

::

    sudo .venv/bin/python bench/fuzz_queue.py                 # 1,000,000 packets (~1.5 min)
    sudo .venv/bin/python bench/fuzz_queue.py --quick         # 30,000 packets (~15 s)
    sudo .venv/bin/python bench/fuzz_queue.py --packets N --rate PPS --seed S

Builds its own lab (``op25b.lab.topology``, always torn down), runs ``op25b run`` on
the router with a drop policy (residential pool blocked, business exempt), and sends
randomized and mutated frames (``op25b.lab.fuzzframes``: random flags and options,
IPv4 options, IPv6 extension chains past the parser's limit, truncations, fragments,
bad lengths and checksums) from the ``bot`` namespace with an AF_PACKET socket, at a
bounded rate, to port 25 of the MX addresses in ``net``, from two kinds of source:

- *blocked*: 512 IPv4 addresses of 100.64.64.0/18 and 512 IPv6 /64s of
  2001:db8:100:6600::/56 (all inside the residential plan);
- *open*: 64 + 64 addresses outside every plan (100.65.0.0/24, 2001:db8:200::/48).

Meanwhile the business subscriber makes real TCP connections to the MX every second.
In ``net``, raw-table rules count (and sink) whatever arrives from the fuzz sources.

What it shows (each one a check; the exit code is non-zero if any fails):

1. every queued packet got exactly one verdict: the kernel's ``id_sequence`` for the
   queue (packets handed to the socket) minus ``user_dropped`` (lost on the way to
   the socket) minus what is still waiting equals the daemon's own ``packets``
   (decided + parse errors + undecidable) plus ``callback_errors``; ``queue_dropped``
   (queue full: never given an id) is printed next to it;
2. no traceback on the daemon's stderr, no callback error, no undecidable packet,
   exit code 0 on SIGTERM;
3. the daemon's RSS stays flat (sampled every second: start, end, max);
4. no packet from a blocked source arrived in ``net``, while the open sources' did,
   and every business connection succeeded.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import floodlab as F  # noqa: E402  (bench helper next to this file)
import harness as H  # noqa: E402

from op25b.lab import topology as L  # noqa: E402
from op25b.lab.netns import child_env, popen_in  # noqa: E402
from op25b.lab.processes import DaemonProcess, SyslogReceiver, sd_params  # noqa: E402
from op25b.lab.tools import Listener, Probe, probe_many, start_listener  # noqa: E402
from op25b.lab.topology import Lab, lab_session  # noqa: E402

BLOCKED4, BLOCKED6 = "100.64.64.0/18", "2001:db8:100:6600::/56"
OPEN4, OPEN6 = "100.65.0.0/24", "2001:db8:200::/48"

POLICY = """\
version: 1
guarded_ports: [25]
action: drop
plans:
  residential:
    exempt: false
    prefixes: [100.64.0.0/16, "2001:db8:100::/40"]
  business-static:
    exempt: true
    prefixes: [198.51.100.0/24, "2001:db8:b00::/40"]
provider_mtas:
  smarthost:
    addresses: [203.0.113.25, "2001:db8:25::25"]
daemon:
  queue: 0
  on_daemon_down: static
  counters_interval: 5
  abuse_window: 10
"""


@dataclass(frozen=True)
class Campaign:
    """How much to send, how fast, from how many sources."""

    packets: int = 1_000_000
    rate: int = 15_000
    seed: int = 1
    blocked_sources: int = 512
    open_sources: int = 64

    @property
    def max_seconds(self) -> float:
        """The sender's own bound: twice the paced time, at least a minute."""
        return max(60.0, 2 * self.packets / self.rate)


def _hosts(net: str, n: int, rng: random.Random, per64: bool = False) -> list[str]:
    """``n`` distinct random addresses in ``net`` (IPv6 ``per64``: one per /64)."""
    network = ipaddress.ip_network(net)
    out: set[str] = set()
    while len(out) < n:
        if per64:
            sub = rng.randrange(1 << (64 - network.prefixlen))
            addr = int(network.network_address) | (sub << 64) | rng.randrange(1, 1 << 64)
        else:
            addr = int(network.network_address) + rng.randrange(1, network.num_addresses - 1)
        out.add(str(ipaddress.ip_address(addr)))
    return sorted(out)


def _sinks(lab: Lab) -> H.Sink:
    """Counters in net, first match wins (each DROPs what it counts).

    The first rule only makes the kernel reassemble fragments in net before the raw
    table (a conntrack match turns defragmentation on; before conntrack runs every
    packet is INVALID to it), so a datagram the MX's stack would deliver is counted
    whole: a non-first fragment of an allowed datagram is not a leak.
    """
    rules = []
    for fam, blocked, opened in ((4, BLOCKED4, OPEN4), (6, BLOCKED6, OPEN6)):
        rules += [
            H.SinkRule(fam, f"defrag-v{fam}", "-m conntrack --ctstate INVALID", drop=False),
            H.SinkRule(fam, f"fuzz-blocked-tcp25-v{fam}", f"-s {blocked} -p tcp -m tcp --dport 25"),
        ]
        if fam == 6:
            # TCP behind an AH header: "-p tcp" stops at AH, so op25b jumps on "-p ah"
            # from subscribers too; none of these may arrive.
            rules.append(H.SinkRule(fam, "fuzz-blocked-ah-v6", f"-s {blocked} -p ah"))
        rules += [
            H.SinkRule(fam, f"fuzz-blocked-other-v{fam}", f"-s {blocked}"),
            H.SinkRule(fam, f"fuzz-open-v{fam}", f"-s {opened}"),
        ]
    return H.Sink(lab.net, rules)


def _routes(lab: Lab, verb: str) -> None:
    # rtr routes replies (and reverse-path checks) for the spoofed ranges to the bot link.
    for net in (BLOCKED4, OPEN4):
        F.sh(lab.rtr, ["ip", "route", verb, net, "via", L.BOT_V4, "dev", "to-bot", "onlink"])
    for net in (BLOCKED6, OPEN6):
        F.sh(lab.rtr, ["ip", "-6", "route", verb, net, "dev", "to-bot"])


class _BizProber:
    """Real TCP from the business subscriber to the MX, once a second, v4 and v6."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.ok = self.failed = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        probes = [Probe(L.BIZ_V4, L.NET_MX_V4, 25), Probe(L.BIZ_V6, L.NET_MX_V6, 25)]
        while True:
            for r in probe_many(self.lab.biz, probes, timeout=3):
                if r.ok:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.failures.append(f"{r.src}->{r.dst}: {r.outcome} {r.detail}")
            if self._stop.wait(1.0):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _await_drained(pid: int, timeout: float = 30.0) -> F.QueueStats:
    """The queue's line once nothing waits and two reads 0.2 s apart agree."""
    stop = threading.Event()
    last = H.queue_totals(pid)
    for _ in range(int(timeout / 0.2)):
        stop.wait(0.2)
        now = H.queue_totals(pid)
        if now == last and now.waiting == 0:
            return now
        last = now
    raise RuntimeError(f"queue not drained after {timeout:.0f} s: {last}")


def run_campaign(lab: Lab, mx: Listener, workdir: Path, c: Campaign) -> dict[str, Any]:
    """Run one campaign in ``lab`` with ``mx`` listening on net's MX addresses, port 25."""
    rng = random.Random(c.seed)
    blocked4 = _hosts(BLOCKED4, c.blocked_sources, rng)
    blocked6 = _hosts(BLOCKED6, c.blocked_sources, rng, per64=True)
    open4, open6 = _hosts(OPEN4, c.open_sources, rng), _hosts(OPEN6, c.open_sources, rng)
    policy = workdir / "fuzz.yaml"
    policy.write_text(POLICY)
    sink = _sinks(lab)
    syslog = SyslogReceiver()
    daemon: DaemonProcess | None = None
    _routes(lab, "add")
    try:
        sink.install()
        daemon = DaemonProcess(
            lab.rtr,
            policy,
            ["--abuse-log", str(workdir / "blocked.jsonl"), "--syslog", syslog.path],
        )
        daemon.wait_started()
        pid = daemon.proc.pid
        sampler = H.Sampler(pid).start()
        biz = _BizProber(lab)
        argv = [sys.executable, "-m", "op25b.lab.fuzzframes", "send"]
        argv += ["--dmac", F.mac_of(lab.rtr, "to-bot"), "--count", str(c.packets)]
        argv += ["--rate", str(c.rate), "--seed", str(c.seed)]
        argv += ["--max-seconds", str(c.max_seconds)]
        for flag, items in (("--src4", blocked4 + open4), ("--src6", blocked6 + open6)):
            argv += [x for a in items for x in (flag, a)]
        argv += [x for a in (L.NET_MX_V4, *L.NET_MX_EXTRA_V4) for x in ("--dst4", a)]
        argv += [x for a in (L.NET_MX_V6, *L.NET_MX_EXTRA_V6) for x in ("--dst6", a)]
        sender = popen_in(
            lab.bot,
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        out, err = sender.communicate(timeout=c.max_seconds + 60)
        if sender.returncode != 0:
            raise RuntimeError(f"fuzz sender failed: {err.strip()}")
        sent = json.loads(out.strip().splitlines()[-1])
        biz.stop()
        kernel = _await_drained(pid)
        arrived = sink.counts()
        memory = sampler.stop()
        code = daemon.stop()
        final = sd_params(syslog.wait_for(lambda m: 'final="1"' in m, what="final counters"))
        stderr = daemon.lines.snapshot()
    finally:
        if daemon is not None and daemon.proc.poll() is None:
            daemon.stop()
        syslog.close()
        sink.remove()
        _routes(lab, "del")
    peers = mx.peers() & set(blocked4 + blocked6)
    return _results(c, sent, kernel, final, code, stderr, memory, arrived, biz, peers)


def _results(
    c: Campaign,
    sent: dict[str, Any],
    kernel: F.QueueStats,
    final: dict[str, str],
    code: int,
    stderr: list[str],
    memory: dict[str, float],
    arrived: dict[str, int],
    biz: _BizProber,
    blocked_peers: set[str],
) -> dict[str, Any]:
    handed = kernel.id_sequence - kernel.user_dropped - kernel.waiting
    answered = int(final["packets"]) + int(final["callback_errors"])
    tracebacks = [s for s in stderr if "Traceback" in s]
    blocked_arrived = sum(n for k, n in arrived.items() if k.startswith("fuzz-blocked-tcp25"))
    open_arrived = sum(n for k, n in arrived.items() if k.startswith("fuzz-open"))
    growth = memory["rss_end_mb"] - memory["rss_start_mb"]
    checks = {
        "every queued packet got exactly one verdict": handed == answered and handed > 0,
        "no traceback, callback error or undecidable packet; exit 0": not tracebacks
        and final["callback_errors"] == "0"
        and final["undecidable"] == "0"
        and code == 0,
        "daemon RSS flat (end - start < 16 MB)": growth < 16,
        "no blocked-source TCP/25 packet or connection at the MX; open sources arrived": (
            blocked_arrived == 0 and not blocked_peers and open_arrived > 0
        ),
        "every business connection succeeded": biz.failed == 0 and biz.ok > 0,
    }
    return {
        "campaign": asdict(c),
        "sent": sent,
        "kernel": asdict(kernel),
        "daemon": {
            k: int(final[k])
            for k in ("packets", "accept", "drop", "blocked", "parse_errors", "undecidable")
        }
        | {"callback_errors": int(final["callback_errors"]), "exit_code": code},
        "handed_to_daemon": handed,
        "answered_by_daemon": answered,
        "tracebacks": tracebacks[:5],
        "memory": memory,
        "arrived_in_net": {k: n for k, n in arrived.items() if not k.startswith("defrag")},
        "blocked_peers_at_mx": sorted(blocked_peers),
        "business_connections": {"ok": biz.ok, "failed": biz.failed, "failures": biz.failures},
        "checks": checks,
    }


def print_results(r: dict[str, Any]) -> None:
    """A readable summary of ``run_campaign``'s result."""
    s, k, d, m = r["sent"], r["kernel"], r["daemon"], r["memory"]
    print(f"sent {s['sent']:,} frames in {s['seconds']:.1f} s ({s['send_errors']} send errors)")
    print("  by kind: " + ", ".join(f"{n} {v:,}" for n, v in sorted(s["kinds"].items())))
    print(
        f"kernel queue 0: id_sequence {k['id_sequence']:,}, user_dropped {k['user_dropped']},"
        f" queue_dropped {k['queue_dropped']}, waiting {k['waiting']}"
    )
    print(
        f"daemon: {d['packets']:,} packets ({d['accept']:,} accept, {d['drop']:,} drop,"
        f" {d['parse_errors']:,} parse errors, {d['undecidable']} undecidable),"
        f" {d['callback_errors']} callback errors, exit {d['exit_code']}"
    )
    print(f"handed to the daemon {r['handed_to_daemon']:,} = answered {r['answered_by_daemon']:,}")
    print(
        f"RSS MB start/half-way/end/max {m['rss_start_mb']}/{m['rss_half_mb']}"
        f"/{m['rss_end_mb']}/{m['rss_max_mb']},"
        f" fds {m['fds_start']}/{m['fds_end']}/{m['fds_max']} ({m['samples']} samples)"
    )
    print("arrived in net: " + ", ".join(f"{n} {v:,}" for n, v in r["arrived_in_net"].items()))
    print(f"connections from blocked sources accepted by the MX: {len(r['blocked_peers_at_mx'])}")
    b = r["business_connections"]
    print(f"business connections: {b['ok']} ok, {b['failed']} failed")
    for name, ok in r["checks"].items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")


def main(argv: list[str] | None = None) -> int:
    """Build a lab, run the campaign, print and save the results."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="30,000 packets at 10,000/s")
    p.add_argument("--packets", type=int, default=Campaign.packets)
    p.add_argument("--rate", type=int, default=Campaign.rate)
    p.add_argument("--seed", type=int, default=Campaign.seed)
    a = p.parse_args(argv)
    c = Campaign(30_000, 10_000, a.seed) if a.quick else Campaign(a.packets, a.rate, a.seed)
    with lab_session(prefix="op25bfz") as lab, tempfile.TemporaryDirectory() as tmp:
        mx = start_listener(lab.net, (L.NET_MX_V4, L.NET_MX_V6), (25,), name="mx")
        try:
            r = run_campaign(lab, mx, Path(tmp), c)
        finally:
            mx.stop()
    print_results(r)
    return H.finish("fuzz", r)


if __name__ == "__main__":
    sys.exit(main())
