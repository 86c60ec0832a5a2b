"""Flood benchmark: can op25b hold a bot flood at kernel speed without losing allowed mail?

Builds its own namespace lab (op25b.lab.topology; torn down whatever happens), a policy with a
pool of 1,000,000 prefixes (``--quick``: 100,000) and measures, side by side in one run
on the same trafgen SYN flood (bots in the pool -> 65 MX addresses through rtr):

1. SYNs/s *handled* (given a verdict) by
   (a) op25b, block cache off, abuse log and syslog on,
   (b) op25b with the kernel block cache on,
   (c) a bare netfilterqueue consumer (bench/bare_consumer.py) on the same rule shape
       (mangle FORWARD -> mark/ctstate RETURNs -> NFQUEUE --queue-bypass), accepting
       everything (and, for the same verdict as op25b, dropping everything),
   (d) kernel-only iptables DROP in the same place;
   plus (e) op25b with the fast path, and workers 1 vs 2 (both unpinned).
   Handled = rtr ingress - packets that reached the queue rule + verdicts the consumer
   gave (Δ id_sequence - user_dropped - still waiting, from /proc/net/netfilter/
   nfnetlink_queue read the instant trafgen exits), divided by trafgen's send time.
   The generator is pinned to CPU 0 (with it, the forwarding softirq); consumers to CPU 1.
2. allowed SYNs lost while the flood runs: res -> provider MTA at R/s (trafgen, counted
   at rtr ingress and on arrival in isp), flood at max rate, without and with fast path.
3. connect latency res -> isp:25 (median, p99): no rules vs op25b vs op25b + fast path.
4. workers 1 vs 2 (handled SYNs/s).
5. reload at full size: SIGHUP -> "reloaded ... in X s", and the longest verdict pause
   seen by a stream of sequential connects (res -> MTA, queued) during the reload.
6. daemon RSS (VmRSS / VmHWM) after start, after the floods and after the reload.

Results: a compact table on stdout (targets next to measurements) and the full numbers
in bench/results/flood-<timestamp>.json.

    .venv/bin/python bench/bench_flood.py --quick   # ~2-3 minutes, 100k prefixes
    .venv/bin/python bench/bench_flood.py           # ~10 minutes, 1M prefixes
    .venv/bin/python bench/bench_flood.py --goal3   # ~3 minutes: only (a) vs (c), on
                                                    # each hot-path implementation

``--goal3`` runs two op25b sessions, the compiled hot path and pure Python
(``OP25B_PURE_PYTHON=1``, op25b.native), each with the bare consumers' rounds
interleaved with its own, so each op25b / bare ratio is paired round by round.

Root only. Not part of pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import floodlab as F  # noqa: E402  (bench helper next to this file)

from op25b.kernel.ruletext import TRUSTED_RETURN  # noqa: E402
from op25b.lab.netns import popen_in, run_in  # noqa: E402
from op25b.lab.processes import DaemonProcess, LabRunError, SyslogReceiver  # noqa: E402
from op25b.lab.tools import start_listener  # noqa: E402
from op25b.lab.topology import Lab, lab_session  # noqa: E402

GEN_CPU = 0
CONSUMER_CPU = 1
BENCH_CHAIN = "BENCHFLOOD"
_MARKS = (
    "-m mark --mark 0xa00000/0xf00000 -j RETURN",
    "-m mark --mark 0xb00000/0xf00000 -j RETURN",
)

TARGETS = {
    "op25b_vs_bare": 0.90,
    "cache_vs_raw_drop": 0.90,
    "allowed_lost_fast_path": 0,
    "reload_pause_ms": 30.0,
    "rss_mb": 300.0,
}


@dataclass(frozen=True)
class Settings:
    """Sizes of one run."""

    quick: bool
    prefixes: int
    bots: int
    flood_packets: int
    rounds: int
    stream_rate: int
    connects: int
    block_cache: int
    seed: int
    profile: bool
    sessions: tuple[str, ...] = ("base", "cache", "fast", "workers2")

    @property
    def flood_timeout(self) -> float:
        """Wall-clock bound of one flood (even a slow path moves 20k SYN/s)."""
        return max(20.0, self.flood_packets / 20_000)


@dataclass
class Ctx:
    """Everything the steps share."""

    lab: Lab
    tmp: Path
    s: Settings
    syslog: SyslogReceiver
    flood_cfg: Path = Path()
    stream_cfg: Path = Path()
    pool: Path = Path()
    flood_pps_hint: float = 0.0
    notes: list[str] = field(default_factory=list)

    def say(self, msg: str) -> None:
        print(f"  {msg}", flush=True)


# ------------------------------------------------------------------ consumers

BASELINES = {
    "kernel_drop": "-j DROP",
    "bare_accept": "-j NFQUEUE --queue-num 10 --queue-bypass",
    "bare_drop": "-j NFQUEUE --queue-num 11 --queue-bypass",
}
_BASE_QUEUES = {"kernel_drop": set(), "bare_accept": {10}, "bare_drop": {11}, "raw_drop": set()}
# The hand-written cheapest drop: raw PREROUTING, before conntrack and routing.
RAW_DROP = "raw_drop"


def _chain(kind: str) -> str:
    return f"BENCH-{kind.replace('_', '-').upper()}"


def _jump(kind: str) -> str:
    hook = "PREROUTING" if kind == RAW_DROP else "FORWARD"
    return f"{hook} -p tcp -m multiport --dports 25 -j {_chain(kind)}"


def _table(kind: str) -> str:
    return "raw" if kind == RAW_DROP else "mangle"


class Baselines:
    """The comparison consumers, alive for the whole run, switched in per flood round.

    Each baseline is a chain with op25b's mangle shape (trusted-connection RETURN, mark
    RETURNs, then its target: DROP or NFQUEUE to a bare consumer on queue 10/11). A round
    routes the flood to one of them by inserting its jump first in mangle FORWARD, ahead
    of op25b's own jump (which then never sees the packets), and removes it after. So
    baseline rounds interleave with op25b's rounds without restarting the daemon, and
    every ratio compares floods run seconds apart on the same noisy cores.
    """

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.procs: dict[str, subprocess.Popen[str]] = {}
        text = "*mangle\n"
        for kind, target in BASELINES.items():
            body = [TRUSTED_RETURN, *_MARKS, target]
            text += f":{_chain(kind)} - [0:0]\n"
            text += "".join(f"-A {_chain(kind)} {r}\n" for r in body)
        text += f"COMMIT\n*raw\n:{_chain(RAW_DROP)} - [0:0]\n-A {_chain(RAW_DROP)} -j DROP\n"
        F.sh(ctx.lab.rtr, ["iptables-restore", "--noflush"], text + "COMMIT\n")
        for kind, queue in (("bare_accept", 10), ("bare_drop", 11)):
            verdict = kind.split("_")[1]
            argv = [sys.executable, str(ROOT / "bench" / "bare_consumer.py")]
            argv += ["--queue", str(queue), "--verdict", verdict]
            proc = popen_in(ctx.lab.rtr, argv, stdout=subprocess.PIPE, text=True)
            self.procs[kind] = proc
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise F.BenchError(f"bare consumer ({verdict}) did not start")
            F.pin(proc.pid, CONSUMER_CPU)

    @property
    def pid(self) -> int:
        """A process in rtr, for reading the namespace's queue stats."""
        return self.procs["bare_accept"].pid

    @contextlib.contextmanager
    def route(self, kind: str) -> Iterator[None]:
        """Send guarded traffic to baseline *kind* for the duration."""
        rtr, table = self.ctx.lab.rtr, _table(kind)
        F.sh(rtr, ["iptables-restore", "--noflush"], f"*{table}\n-I {_jump(kind)}\nCOMMIT\n")
        try:
            yield
        finally:
            F.sh(rtr, ["iptables-restore", "--noflush"], f"*{table}\n-D {_jump(kind)}\nCOMMIT\n")
            F.sh(rtr, ["conntrack", "-F"])

    def round(self, kind: str) -> dict[str, Any]:
        """One flood into baseline *kind*."""
        proc = self.procs.get(kind)
        with self.route(kind):
            return flood_round(
                self.ctx,
                kind,
                self.pid,
                _BASE_QUEUES[kind],
                consumer=proc.pid if proc is not None else None,
            )

    def close(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
            proc.wait(10)


class Op25b:
    """``op25b run`` in rtr with a generated policy; start time and RSS recorded."""

    def __init__(
        self,
        ctx: Ctx,
        name: str,
        workers: int = 1,
        fast_path: bool = False,
        cache: int = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        policy = F.write_policy(ctx.tmp / f"{name}.yaml", ctx.pool, workers, fast_path, cache)
        self.abuse_log = ctx.tmp / f"{name}.jsonl"
        t0 = time.monotonic()
        self.d = DaemonProcess(
            ctx.lab.rtr,
            policy,
            ["--abuse-log", str(self.abuse_log), "--syslog", ctx.syslog.path],
            env=env,
        )
        try:
            self.d.wait_started(timeout=600)
        except LabRunError:
            self.d.stop()
            raise
        self.start_s = time.monotonic() - t0
        self.pid = self.d.proc.pid

    def memory(self) -> dict[str, float]:
        """Leader's VmRSS/VmHWM (MB), plus the sum over forked workers if any."""
        mem = F.proc_memory(self.pid)
        kids = [F.proc_memory(p) for p in F.children(self.pid)]
        if kids:
            mem["workers_VmRSS"] = sum(k.get("VmRSS", 0) for k in kids)
        return mem

    def pids(self) -> list[int]:
        return [self.pid, *F.children(self.pid)]

    def stop(self) -> None:
        self.d.stop()
        with contextlib.suppress(F.BenchError):
            F.sh(self.d.ns, ["conntrack", "-F"])


# ------------------------------------------------------------------ measurements


def _drain(pid: int, queues: set[int], timeout: float = 5.0) -> None:
    """Wait until the consumer answered everything queued (so rounds do not overlap)."""
    deadline = time.monotonic() + timeout
    while queues and time.monotonic() < deadline:
        if sum(q.waiting for q in _queues(pid, queues).values()) == 0:
            break
        time.sleep(0.02)
    time.sleep(0.2)  # packets still in the veths / backlog


def _queues(pid: int, queues: set[int]) -> dict[int, F.QueueStats]:
    return {q: st for q, st in F.queue_stats(pid).items() if q in queues}


def flood_round(
    ctx: Ctx,
    label: str,
    pid: int,
    queues: set[int],
    gen_cpu: int | None = GEN_CPU,
    consumer: int | None = None,
) -> dict[str, Any]:
    """One max-rate flood; what rtr was offered and what got a verdict, per second.

    *pid* is any process in rtr (its /proc/PID/net is rtr's); *queues* the queues whose
    verdicts count for this round; *consumer* the process giving them, whose CPU
    seconds per verdict are the consumer's cost even when the generator, not the
    consumer, bounds the rate (then handled/s says nothing about the consumer).
    """
    rtr = ctx.lab.rtr
    c0, ct0 = F.rule_counters(rtr), F.conntrack_stats(rtr)
    rx0 = F.rx_packets(rtr, "to-bot")
    q0 = _queues(pid, queues)
    cpu0 = F.cpu_seconds(consumer) if consumer else 0.0
    tg = F.Trafgen(ctx.lab.bot, ctx.flood_cfg, ctx.s.flood_packets, ctx.s.flood_timeout, gen_cpu)
    sent = tg.wait()
    q1 = _queues(pid, queues)  # the instant trafgen is done
    _drain(pid, queues)
    cpu = F.cpu_seconds(consumer) - cpu0 if consumer else 0.0
    c1, ct1 = F.rule_counters(rtr), F.conntrack_stats(rtr)

    def delta(*needles: str) -> int:
        return F.counter(c1, *needles) - F.counter(c0, *needles)

    offered = F.rx_packets(rtr, "to-bot") - rx0
    to_queue = delta("mangle:", "NFQUEUE")
    per_queue = {q: q1[q].verdict_base - (q0[q].verdict_base if q in q0 else 0) for q in q1}
    verdicts = sum(per_queue.values())
    lost = sum(
        q1[q].queue_dropped
        + q1[q].user_dropped
        - (q0[q].queue_dropped + q0[q].user_dropped if q in q0 else 0)
        for q in q1
    )
    handled = offered - to_queue + verdicts
    out = {
        "sent": sent.packets,
        "seconds": round(sent.seconds, 3),
        "offered": offered,
        "offered_pps": round(offered / sent.seconds) if sent.seconds else 0,
        "handled": handled,
        "handled_pps": round(handled / sent.seconds) if sent.seconds else 0,
        "to_queue": to_queue,
        "verdicts_by_queue": per_queue,
        "queue_overflow_lost": lost,
        "kernel_dropped_by_block_cache": delta("raw:", "match-set op25b-block4", "DROP"),
        "reached_sink": delta("raw:", "bench-flood-sink"),
        "rtr_ingress_lost": sent.packets - offered,
        "conntrack_drop": ct1.get("drop", 0) - ct0.get("drop", 0),
        "conntrack_early_drop": ct1.get("early_drop", 0) - ct0.get("early_drop", 0),
        "consumer_cpu_s": round(cpu, 3),
        "consumer_cpu_us_per_verdict": round(cpu / verdicts * 1e6, 3) if verdicts else None,
    }
    ctx.say(
        f"{label:<22} {sent.packets:,} in {sent.seconds:.2f}s: offered {out['offered_pps']:,}/s "
        f"handled {out['handled_pps']:,}/s, queue lost {lost:,}, queued {to_queue:,}"
    )
    return out


Round = Callable[[], dict[str, Any]]


def interleaved(ctx: Ctx, variants: dict[str, Round]) -> dict[str, dict[str, Any]]:
    """``rounds`` x every variant, alternating; per variant the median handled/s."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for _ in range(ctx.s.rounds):
        for name, fn in variants.items():
            runs[name].append(fn())
    out: dict[str, dict[str, Any]] = {}
    for name, rounds in runs.items():
        rates = [r["handled_pps"] for r in rounds]
        ctx.flood_pps_hint = max(ctx.flood_pps_hint, *(r["offered_pps"] for r in rounds))
        out[name] = {
            "handled_pps": statistics.median(rates),
            "handled_pps_rounds": rates,
            "offered_pps": statistics.median(r["offered_pps"] for r in rounds),
            "rounds": rounds,
        }
    return out


def allowed_under_flood(ctx: Ctx, pid: int, queues: set[int]) -> dict[str, Any]:
    """Allowed stream at R/s while a max-rate flood runs; lost = offered to rtr - arrived."""
    rtr, isp = ctx.lab.rtr, ctx.lab.isp
    rate = ctx.s.stream_rate
    flood_s = ctx.s.flood_packets / ctx.flood_pps_hint if ctx.flood_pps_hint else 5.0
    stream_n = int(rate * (flood_s * 1.5 + 1.5))  # covers the flood with margin
    c0, i0 = F.rule_counters(rtr, ("raw",)), F.rule_counters(isp, ("raw",))
    q0 = _queues(pid, queues)
    stream = F.Trafgen(ctx.lab.res, ctx.stream_cfg, stream_n, stream_n / rate + 20, None, rate)
    time.sleep(0.5)
    flood = F.Trafgen(ctx.lab.bot, ctx.flood_cfg, ctx.s.flood_packets, ctx.s.flood_timeout, GEN_CPU)
    fsent = flood.wait()
    ssent = stream.wait()
    _drain(pid, queues)
    c1, i1 = F.rule_counters(rtr, ("raw",)), F.rule_counters(isp, ("raw",))
    q1 = _queues(pid, queues)
    at_rtr = F.counter(c1, "bench-stream-in") - F.counter(c0, "bench-stream-in")
    arrived = F.counter(i1, "bench-stream-sink") - F.counter(i0, "bench-stream-sink")
    qlost = sum(
        q1[q].queue_dropped
        + q1[q].user_dropped
        - (q0[q].queue_dropped + q0[q].user_dropped if q in q0 else 0)
        for q in q1
    )
    out = {
        "stream_sent": ssent.packets,
        "stream_pps": round(ssent.pps),
        "flood_sent": fsent.packets,
        "flood_pps": round(fsent.pps),
        "flood_to_stream": round(fsent.pps / ssent.pps, 1) if ssent.pps else 0,
        "at_rtr": at_rtr,
        "arrived": arrived,
        "lost_in_rtr": at_rtr - arrived,
        "lost_before_rtr": ssent.packets - at_rtr,
        "queue_overflow_lost_all": qlost,
    }
    ctx.say(
        f"allowed {ssent.packets:,} at {out['stream_pps']:,}/s under flood {out['flood_pps']:,}/s "
        f"(x{out['flood_to_stream']}): lost in rtr {out['lost_in_rtr']:,}, "
        f"before rtr {out['lost_before_rtr']:,}"
    )
    return out


def _probe_argv(extra: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "flood_probe.py"), F.RES_SRC, F.MTA, "25", *extra]


def _pct(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, round(p / 100 * (len(v) - 1)))]


def latency(ctx: Ctx, name: str) -> dict[str, Any]:
    """``connects`` sequential connects res -> MTA:25; median / p99 / max in ms."""
    res = run_in(
        ctx.lab.res,
        _probe_argv(["--count", str(ctx.s.connects), "--warmup", "10", "--timeout", "3"]),
        capture_output=True,
        text=True,
        timeout=ctx.s.connects * 3 + 30,
        check=True,
    )
    samples = json.loads(res.stdout)["samples"]
    ok = [s[1] * 1000 for s in samples if s[1] is not None]
    out = {
        "n": len(samples),
        "failed": len(samples) - len(ok),
        "median_ms": round(statistics.median(ok), 3) if ok else None,
        "p99_ms": round(_pct(ok, 99), 3) if ok else None,
        "max_ms": round(max(ok), 3) if ok else None,
    }
    ctx.say(
        f"latency {name}: median {out['median_ms']} ms, p99 {out['p99_ms']} ms,"
        f" failed {out['failed']}"
    )
    return out


_CONTROL_S = 8.0


def reload_pause(ctx: Ctx, op: Op25b) -> dict[str, Any]:
    """SIGHUP with queued connects in flight; the longest connect / gap during the reload."""
    proc = popen_in(
        ctx.lab.res,
        _probe_argv(["--until-signal", "--interval", "0.002", "--timeout", "3"]),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "READY":
            raise F.BenchError("reload prober did not start")
        # A control window of the same kind before the SIGHUP: on a shared box the gaps
        # the other jobs cause alone are the floor the reload's gaps compare against.
        time.sleep(_CONTROL_S)
        t_hup = time.monotonic()
        line = op.d.reload(timeout=600)
        t_done = time.monotonic()
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        out_text, _ = proc.communicate(timeout=30)
    samples = json.loads(out_text)["samples"]
    ends = [s[0] + (s[1] if s[1] is not None else 3.0) for s in samples]
    during = [i for i, s in enumerate(samples) if t_hup - 0.01 <= s[0] <= t_done]
    before = [s[1] * 1000 for s in samples if s[0] < t_hup and s[1] is not None]
    lat = [(samples[i][1] if samples[i][1] is not None else 3.0) * 1000 for i in during]
    gaps = [(ends[i] - ends[i - 1]) * 1000 for i in during if i > 0]
    control = [i for i, s in enumerate(samples) if t_hup - _CONTROL_S + 0.5 <= s[0] < t_hup]
    control_gaps = [(ends[i] - ends[i - 1]) * 1000 for i in control if i > 0]
    worst = max((i for i in during if i > 0), key=lambda i: ends[i] - ends[i - 1], default=None)
    seconds = None
    with contextlib.suppress(ValueError, IndexError):
        seconds = float(line.split(" in ")[-1].rstrip("s"))
    out = {
        "line": line,
        "reload_s": seconds,
        "wall_s": round(t_done - t_hup, 3),
        "probes_during": len(during),
        "failed_during": sum(1 for i in during if samples[i][1] is None),
        "max_connect_ms": round(max(lat), 2) if lat else None,
        "p99_connect_ms": round(_pct(lat, 99), 2) if lat else None,
        "max_gap_ms": round(max(gaps), 2) if gaps else None,
        "control_max_gap_ms": round(max(control_gaps), 2) if control_gaps else None,
        "control_probes": len(control),
        "max_gap_at_s": round(ends[worst] - t_hup, 3) if worst is not None else None,
        "baseline_median_ms": round(statistics.median(before), 3) if before else None,
    }
    ctx.say(
        f"reload {seconds}s: {len(during)} probes, max connect {out['max_connect_ms']} ms, "
        f"max gap {out['max_gap_ms']} ms (control window before: {out['control_max_gap_ms']} ms)"
    )
    return out


def profile_flood(
    ctx: Ctx, op: Op25b, bl: Baselines, results_dir: Path, stamp: str
) -> dict[str, Any]:
    """py-spy on the daemon during one extra flood (``--profile``); saves its raw output."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"skipped": "py-spy not installed (pip install py-spy into the venv)"}
    secs = max(2, int(ctx.s.flood_packets / max(ctx.flood_pps_hint, 1)) + 1)
    out = results_dir / f"flood-{stamp}-pyspy.txt"
    proc = subprocess.Popen(
        [
            spy,
            "record",
            "-p",
            str(op.pid),
            "-d",
            str(secs),
            "-r",
            "250",
            "-f",
            "raw",
            "--nonblocking",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    round_ = flood_round(ctx, "op25b (profiled)", bl.pid, {0})
    _, err = proc.communicate(timeout=secs + 30)
    top = _top_frames(out) if out.exists() else []
    return {"file": str(out), "round": round_, "top_self": top, "stderr": err[-300:]}


def _top_frames(path: Path, n: int = 12) -> list[tuple[str, float]]:
    """Share of samples per leaf frame, from py-spy's raw (collapsed stack) output."""
    leaf: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frame = stack.split(";")[-1]
        leaf[frame] = leaf.get(frame, 0) + int(count)
        total += int(count)
    return [(f, round(c / total, 3)) for f, c in sorted(leaf.items(), key=lambda x: -x[1])[:n]]


# ------------------------------------------------------------------ the run


def _skip(ctx: Ctx, what: str, exc: BaseException) -> dict[str, Any]:
    ctx.notes.append(f"{what}: {exc}")
    print(f"  SKIPPED {what}: {str(exc)[-400:]}", flush=True)
    return {"skipped": str(exc)[-1000:]}


def run_all(ctx: Ctx, results_dir: Path, stamp: str) -> dict[str, Any]:
    """Every measurement: four daemon sessions, baselines interleaved where compared."""
    r: dict[str, Any] = {"flood": {}, "allowed": {}, "latency": {}, "workers": {}, "memory": {}}
    listener = start_listener(ctx.lab.isp, [F.MTA], [25], name="isp-mta")
    bl: Baselines | None = None
    try:
        r["latency"]["no_filter"] = latency(ctx, "no rules")
        bl = Baselines(ctx)
        if "base" in ctx.s.sessions:
            _session_base(ctx, bl, r, results_dir, stamp)
        if "cache" in ctx.s.sessions:  # op25b + cache against the raw anchor only
            _session_cache(ctx, bl, r)
        if "fast" in ctx.s.sessions:
            _session_fast(ctx, bl, r)
        if "workers2" in ctx.s.sessions:
            _session_workers2(ctx, bl, r)
    finally:
        if bl is not None:
            bl.close()
        listener.stop()
    return r


# name -> OP25B_PURE_PYTHON for the daemon (op25b.native)
IMPLEMENTATIONS = {"compiled": "", "pure": "1"}


def run_goal3(ctx: Ctx, results_dir: Path, stamp: str) -> dict[str, Any]:
    """Goal 3 only: per implementation, op25b's rounds interleaved with the bare ones."""
    r: dict[str, Any] = {"flood": {}, "goal3": {}}
    bl = Baselines(ctx)
    try:
        for impl, pure in IMPLEMENTATIONS.items():
            tag = f"op25b_{impl}"
            op = _start(ctx, r, f"goal 3, {impl} hot path", tag, env={"OP25B_PURE_PYTHON": pure})
            if op is None:
                continue
            try:
                F.pin(op.pid, CONSUMER_CPU)
                print(f"[flood] bare drop / bare accept / op25b ({impl}), interleaved", flush=True)
                rounds = _base_rounds(ctx, bl, "bare_drop", "bare_accept")
                rounds[tag] = lambda tag=tag, op=op: flood_round(  # type: ignore[misc]
                    ctx, tag, bl.pid, {0}, consumer=op.pid
                )
                got = interleaved(ctx, rounds)
                r["goal3"][impl] = got
                r["flood"][tag] = got[tag]
                if ctx.s.profile:
                    print(f"[profile] py-spy during a flood ({impl})", flush=True)
                    r["goal3"][impl]["profile"] = profile_flood(
                        ctx, op, bl, results_dir, f"{stamp}-{impl}"
                    )
            finally:
                op.stop()
    finally:
        bl.close()
    return r


def summarise_goal3(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for --goal3: each implementation's rates and its paired ratios to bare."""
    rows: list[dict[str, Any]] = []
    for impl, got in r["goal3"].items():
        tag = f"op25b_{impl}"
        for key in ("bare_drop", "bare_accept", tag):
            lost = _lost(got, key)
            rows.append(
                {
                    "measure": f"[{impl}] SYN/s handled {key}",
                    "value": _num(got, key, "handled_pps"),
                    "target": str(got.get(key, {}).get("handled_pps_rounds", "")),
                    "pass": None,
                    "limit": f"queue overflow dropped {lost:,}" if lost else "",
                }
            )
        for base in ("bare_drop", "bare_accept"):
            cost = _paired_cost(got, base, tag)
            rows.append(
                {
                    "measure": f"[{impl}] CPU/verdict {base} / op25b",
                    "value": cost,
                    "target": ">= 0.90" if base == "bare_drop" else "(accept)",
                    "pass": None if cost is None or base != "bare_drop" else cost >= 0.9,
                    "limit": "the consumers' capacity ratio, generator-independent",
                }
            )
            v = _paired(got, tag, base)
            ok = None if v is None else v >= TARGETS["op25b_vs_bare"]
            target = ">= 0.90" if base == "bare_drop" else "(accept)"
            rows.append(
                {
                    "measure": f"[{impl}] op25b / {base}",
                    "value": v,
                    "target": target,
                    "pass": ok,
                    "limit": "",
                }
            )
    return rows


def _op_round(ctx: Ctx, bl: Baselines, label: str, queues: set[int]) -> Round:
    return lambda: flood_round(ctx, label, bl.pid, queues)


def _base_rounds(ctx: Ctx, bl: Baselines, *kinds: str) -> dict[str, Round]:
    return {k: (lambda k=k: bl.round(k)) for k in kinds}  # type: ignore[misc]


def _start(ctx: Ctx, r: dict[str, Any], what: str, tag: str, **kw: Any) -> Op25b | None:
    print(f"[op25b] {what}", flush=True)
    try:
        op = Op25b(ctx, tag, **kw)
    except (LabRunError, F.BenchError) as e:
        r["flood"][tag] = _skip(ctx, f"op25b {what}", e)
        return None
    ctx.say(f"started in {op.start_s:.1f}s, memory {op.memory()}")
    return op


def _session_base(
    ctx: Ctx, bl: Baselines, r: dict[str, Any], results_dir: Path, stamp: str
) -> None:
    op = _start(ctx, r, "base: 1 worker, no fast path, no block cache", "op25b")
    if op is None:
        return
    try:
        r["memory"]["start_s"] = round(op.start_s, 2)
        r["memory"]["after_start"] = op.memory()
        F.pin(op.pid, CONSUMER_CPU)
        print("[flood] kernel DROP / bare accept / bare drop / op25b, interleaved", flush=True)
        rounds = _base_rounds(ctx, bl, "kernel_drop", "bare_accept", "bare_drop")
        rounds["op25b"] = _op_round(ctx, bl, "op25b", {0})
        r["flood"].update(interleaved(ctx, rounds))
        F.pin(op.pid, None)
        print("[flood] op25b, workers 1, unpinned", flush=True)
        r["workers"]["1"] = interleaved(ctx, {"w1": _op_round(ctx, bl, "op25b w1 unpinned", {0})})[
            "w1"
        ]
        F.pin(op.pid, CONSUMER_CPU)
        print("[allowed] no fast path", flush=True)
        r["allowed"]["no_fast_path"] = allowed_under_flood(ctx, bl.pid, {0})
        r["latency"]["op25b"] = latency(ctx, "op25b (queued)")
        if ctx.s.profile:
            print("[profile] py-spy during a flood", flush=True)
            r["profile"] = profile_flood(ctx, op, bl, results_dir, stamp)
        r["memory"]["after_floods"] = op.memory()
        print("[reload]", flush=True)
        r["reload"] = reload_pause(ctx, op)
        r["memory"]["after_reload"] = op.memory()
        ctx.say(f"memory after reload {r['memory']['after_reload']}")
    finally:
        op.stop()


def _session_cache(ctx: Ctx, bl: Baselines, r: dict[str, Any]) -> None:
    op = _start(ctx, r, "block cache", "op25b_cache", cache=ctx.s.block_cache)
    if op is None:
        return
    try:
        F.pin(op.pid, CONSUMER_CPU)
        print("[flood] op25b + cache / raw DROP, interleaved (round 1 = cold cache)", flush=True)
        rounds = {"op25b_cache": _op_round(ctx, bl, "op25b + cache", {0})}
        # Not the mangle DROP here: with the bots cached, op25b's own raw drop would take
        # its rounds (the raw anchor's jump goes ahead of op25b's, the mangle one cannot).
        rounds[RAW_DROP] = lambda: bl.round(RAW_DROP)
        res = interleaved(ctx, rounds)
        cache = res["op25b_cache"]
        rates = cache["handled_pps_rounds"]
        cache["cold_pps"] = rates[0]
        cache["warm_pps"] = statistics.median(rates[1:]) if len(rates) > 1 else None
        entries, packets = F.ipset_entries(ctx.lab.rtr, "op25b-block4")
        cache["block_set_entries"], cache["block_set_packets"] = entries, packets
        ctx.say(f"op25b-block4: {entries} entries, {packets:,} packets counted")
        if entries <= 0:
            ctx.notes.append("block cache: the daemon put no source in op25b-block4")
        r["flood"].update(res)
        r["memory"]["cache_session"] = op.memory()
    finally:
        op.stop()
    if "op25b_cache" in r["flood"]:
        r["flood"]["op25b_cache"]["accounting"] = _accounting(op, r["flood"]["op25b_cache"])


def _accounting(op: Op25b, cache: dict[str, Any]) -> dict[str, Any]:
    """Goal: a cached bot's attempts in the abuse log within 1% of the SYNs rtr was
    offered (the cache session's op25b rounds are the only flood op25b saw), through
    its rotations; what the queue dropped at overflow is counted apart (no source)."""
    rounds = cache.get("rounds", [])
    entered = sum(int(x.get("offered", 0)) for x in rounds)
    logged = kernel = 0
    with contextlib.suppress(OSError):
        for line in op.abuse_log.read_text().splitlines():
            rec = json.loads(line)
            logged += int(rec.get("packets", 0))
            kernel += int(rec.get("kernel_packets", 0))
    lost = sum(int(x.get("queue_overflow_lost", 0)) for x in rounds)
    out = {
        "entered": entered,
        "abuse_log_packets": logged,
        "of_which_kernel": kernel,
        "queue_overflow_unattributed": lost,
        "logged_ratio": round(logged / entered, 4) if entered else None,
    }
    print(f"  accounting: {out}", flush=True)
    return out


def _session_fast(ctx: Ctx, bl: Baselines, r: dict[str, Any]) -> None:
    op = _start(ctx, r, "fast path", "op25b_fast_path", fast_path=True)
    if op is None:
        return
    try:
        F.pin(op.pid, CONSUMER_CPU)
        print("[flood] op25b + fast path", flush=True)
        rounds = {"op25b_fast_path": _op_round(ctx, bl, "op25b + fast path", {0})}
        r["flood"].update(interleaved(ctx, rounds))
        print("[allowed] fast path", flush=True)
        r["allowed"]["fast_path"] = allowed_under_flood(ctx, bl.pid, {0})
        r["latency"]["op25b_fast_path"] = latency(ctx, "op25b fast path")
    finally:
        op.stop()


def _session_workers2(ctx: Ctx, bl: Baselines, r: dict[str, Any]) -> None:
    op = _start(ctx, r, "workers 2, unpinned", "op25b_workers2", workers=2)
    if op is None:
        return
    try:
        print("[flood] op25b, workers 2, unpinned", flush=True)
        rounds = {"w2": _op_round(ctx, bl, "op25b w2 unpinned", {0, 1})}
        r["workers"]["2"] = interleaved(ctx, rounds)["w2"]
        r["memory"]["workers2"] = op.memory()
    finally:
        op.stop()


# ------------------------------------------------------------------ report


def _num(r: dict[str, Any], *path: str) -> float | None:
    cur: Any = r
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return float(cur) if isinstance(cur, int | float) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _paired(fl: dict[str, Any], a: str, b: str, skip_first: bool = False) -> float | None:
    """Median over rounds of a_i / b_i (rounds i ran back to back, so noise mostly cancels)."""
    ra = fl.get(a, {}).get("handled_pps_rounds", [])
    rb = fl.get(b, {}).get("handled_pps_rounds", [])
    pairs = list(zip(ra, rb, strict=False))[1 if skip_first else 0 :]
    ratios = [x / y for x, y in pairs if y]
    return round(statistics.median(ratios), 3) if ratios else None


def _paired_cost(fl: dict[str, Any], a: str, b: str) -> float | None:
    """Median over rounds of CPU-per-verdict a_i / b_i: b's capacity relative to a's."""
    ca = [x.get("consumer_cpu_us_per_verdict") for x in fl.get(a, {}).get("rounds", [])]
    cb = [x.get("consumer_cpu_us_per_verdict") for x in fl.get(b, {}).get("rounds", [])]
    ratios = [x / y for x, y in zip(ca, cb, strict=False) if x and y]
    return round(statistics.median(ratios), 3) if ratios else None


def _lost(fl: dict[str, Any], key: str) -> int:
    return sum(x.get("queue_overflow_lost", 0) for x in fl.get(key, {}).get("rounds", []))


def summarise(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the table: measurement, value, target, pass, what limits it."""
    fl = r["flood"]
    rows: list[dict[str, Any]] = []

    def row(name: str, value: Any, target: str = "", ok: bool | None = None, why: str = "") -> None:
        rows.append({"measure": name, "value": value, "target": target, "pass": ok, "limit": why})

    def check(v: float | None, good: Callable[[float], bool]) -> bool | None:
        return None if v is None else good(v)

    for key, label in (
        ("kernel_drop", "(d) kernel DROP"),
        ("bare_accept", "(c) bare consumer, accept"),
        ("bare_drop", "(c') bare consumer, drop"),
        ("op25b", "(a) op25b, log on, no cache"),
        ("op25b_cache", "(b) op25b + block cache"),
        (RAW_DROP, "(d') raw PREROUTING DROP, cache session"),
        ("op25b_fast_path", "(e) op25b + fast path"),
    ):
        lost = _lost(fl, key)
        row(
            f"SYN/s handled {label}",
            _num(fl, key, "handled_pps"),
            f"offered {_num(fl, key, 'offered_pps') or 0:,.0f}/s",
            why=f"queue overflow dropped {lost:,}" if lost else "",
        )
    row(
        "  (b) cold round / warm rounds",
        f"{_num(fl, 'op25b_cache', 'cold_pps') or 0:,.0f}/"
        f"{_num(fl, 'op25b_cache', 'warm_pps') or 0:,.0f}",
        "",
        None,
        f"{_num(fl, 'op25b_cache', 'block_set_entries')} bots in op25b-block4",
    )
    v = _paired(fl, "op25b", "bare_accept")
    row(
        "op25b / bare(accept)",
        v,
        ">= 0.90",
        check(v, lambda x: x >= 0.9),
        "Python per packet: parse+decide+count+abuse-aggregate, plus select/loop per batch",
    )
    row("op25b / bare(drop)", _paired(fl, "op25b", "bare_drop"), "(same verdict)")
    v = _paired(fl, "op25b_cache", RAW_DROP, skip_first=True)
    row(
        "op25b+cache / raw DROP (warm)",
        v,
        ">= 0.90",
        check(v, lambda x: x >= 0.9),
        "cache hits drop in raw PREROUTING after an MTA address compare and a block-set lookup",
    )
    acc = fl.get("op25b_cache", {}).get("accounting", {})
    v = acc.get("logged_ratio")
    row(
        "cache: abuse-log attempts / SYNs entered",
        v,
        "0.99-1.01",
        check(v, lambda x: 0.99 <= x <= 1.01),
        f"queue overflow (no source, counted apart): {acc.get('queue_overflow_unattributed')}",
    )
    cold = fl.get("op25b_cache", {}).get("handled_pps_rounds", [])[:1]
    kd = fl.get(RAW_DROP, {}).get("handled_pps_rounds", [])[:1]
    v = round(cold[0] / kd[0], 3) if cold and kd and kd[0] else None
    row(
        "op25b+cache / raw DROP (cold round)",
        v,
        "(info)",
        None,
        "new bots queue until the daemon's batched ipset add lands",
    )
    nofp = _num(r["allowed"], "no_fast_path", "lost_in_rtr")
    sent = _num(r["allowed"], "no_fast_path", "at_rtr")
    row(
        "allowed SYNs lost, no fast path",
        f"{nofp or 0:,.0f}/{sent or 0:,.0f}",
        "(info)",
        None,
        "allowed SYNs share the queue with the flood and overflow with it",
    )
    fp = _num(r["allowed"], "fast_path", "lost_in_rtr")
    sent = _num(r["allowed"], "fast_path", "at_rtr")
    row(
        "allowed SYNs lost, fast path",
        f"{fp or 0:,.0f}/{sent or 0:,.0f}",
        "0",
        check(fp, lambda x: x == 0),
        "MTA/allow/non-subscriber sets accept in the kernel ahead of the queue",
    )
    lat = r["latency"]
    for key, label in (
        ("no_filter", "no rules"),
        ("op25b", "op25b, queued"),
        ("op25b_fast_path", "op25b, fast path"),
    ):
        row(
            f"connect ms median/p99, {label}",
            f"{_num(lat, key, 'median_ms')}/{_num(lat, key, 'p99_ms')}",
        )
    w1, w2 = _num(r["workers"], "1", "handled_pps"), _num(r["workers"], "2", "handled_pps")
    q = r["workers"].get("2", {}).get("rounds", [{}])[0].get("verdicts_by_queue", {})
    row(
        "workers 2 / workers 1 (unpinned)",
        _ratio(w2, w1),
        "(info)",
        None,
        f"verdicts per queue {q}; both workers share 2 cores with the generator and"
        " the forwarding softirq, so a 2-core box cannot show scaling",
    )
    row(
        "reload seconds",
        _num(r, "reload", "reload_s"),
        "",
        None,
        "load + compile in a forked child, the sets in another beside the compile",
    )
    pause = _num(r, "reload", "max_gap_ms")
    row(
        "reload: longest verdict gap ms",
        pause,
        "<= 30",
        check(pause, lambda x: x <= 30),
        f"max connect {_num(r, 'reload', 'max_connect_ms')} ms, worst gap at +"
        f"{_num(r, 'reload', 'max_gap_at_s')} s into the reload; the same probe in the"
        f" {_CONTROL_S:.0f} s before it: {_num(r, 'reload', 'control_max_gap_ms')} ms",
    )
    mem = r["memory"]
    rss = max(
        (_num(mem, k, "VmRSS") or 0.0 for k in ("after_start", "after_floods", "after_reload")),
        default=0.0,
    )
    hwm = _num(mem, "after_reload", "VmHWM")
    row(
        "daemon MB: RSS max / HWM",
        f"{rss:.0f}/{hwm or 0:.0f}",
        "< 300",
        check(rss or None, lambda x: x < 300),
        f"after start {_num(mem, 'after_start', 'VmRSS') or 0:.0f} MB; a reload holds 2 policies",
    )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """The compact table: one line per measurement."""
    print("\n== results (targets next to measurements)")
    print(f"{'measurement':<40}{'value':>16}  {'target':<15}{'ok':<5}limited by")
    for row in rows:
        v = row["value"]
        if isinstance(v, float):
            v = f"{v:,.3f}" if v < 10 else f"{v:,.0f}"
        ok = {True: "yes", False: "NO", None: ""}[row["pass"]]
        print(f"{row['measure']:<40}{v!s:>16}  {row['target']:<15}{ok:<5}{row['limit']}")


# ------------------------------------------------------------------ main


_MAIN_PID = os.getpid()


def _sigterm_as_interrupt(signum: int, _frame: FrameType | None) -> None:
    # pyroute2 forks helpers that inherit this handler: they must just exit.
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt(f"signal {signum}")


def settings_from(args: argparse.Namespace) -> Settings:
    quick = bool(args.quick)
    return Settings(
        quick=quick,
        prefixes=args.prefixes or (100_000 if quick else 1_000_000),
        bots=args.bots or (256 if quick else 1024),
        flood_packets=args.flood_packets or (200_000 if quick else 1_000_000),
        rounds=args.rounds or (2 if quick else 3),
        stream_rate=args.stream_rate,
        connects=args.connects or (100 if quick else 300),
        block_cache=args.block_cache,
        seed=args.seed,
        profile=args.profile,
        sessions=tuple(args.only.split(",")) if args.only else Settings.sessions,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="100k prefixes, smaller floods")
    ap.add_argument("--prefixes", type=int, help="pool size (default 1M, quick 100k)")
    ap.add_argument("--bots", type=int, help="distinct flood sources (default 1024, quick 256)")
    ap.add_argument("--flood-packets", type=int, help="SYNs per flood (default 1M, quick 200k)")
    ap.add_argument("--rounds", type=int, help="floods per variant (default 3, quick 2)")
    ap.add_argument("--stream-rate", type=int, default=2000, help="allowed SYN/s (default 2000)")
    ap.add_argument("--connects", type=int, help="connects per latency sample (300, quick 100)")
    ap.add_argument("--block-cache", type=int, default=60, help="block_cache_timeout for (b)")
    ap.add_argument("--seed", type=int, default=25)
    ap.add_argument("--profile", action="store_true", help="py-spy the daemon during a flood")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results"))
    ap.add_argument(
        "--goal3",
        action="store_true",
        help="only op25b vs the bare consumer, compiled and pure-Python hot path",
    )
    ap.add_argument(
        "--only",
        help="daemon sessions to run, comma-separated, of base,cache,fast,workers2 (default"
        " all); e.g. --only cache: op25b + verdict cache against the raw DROP anchor",
    )
    args = ap.parse_args(argv)
    unknown = set(args.only.split(",")) - set(Settings.sessions) if args.only else set()
    if unknown:
        ap.error(f"--only: unknown session(s) {', '.join(sorted(unknown))}")
    if os.geteuid() != 0:
        print(
            "bench_flood: needs root (namespaces, veths, firewall rules inside them)",
            file=sys.stderr,
        )
        return 1
    for tool in ("trafgen", "iptables-save", "ipset", "conntrack", "taskset", "timeout"):
        if shutil.which(tool) is None:
            print(
                f"bench_flood: {tool} not found (scripts/bootstrap.sh installs it)", file=sys.stderr
            )
            return 1
    s = settings_from(args)
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    print(
        f"bench_flood: {'quick' if s.quick else 'full'} run, {s.prefixes:,} prefixes, "
        f"{s.bots} bots, {s.flood_packets:,} SYNs x {s.rounds} rounds per variant; "
        f"{os.cpu_count()} CPUs, kernel {platform.release()}",
        flush=True,
    )
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    t0 = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="op25b-flood-") as tmpd,
        lab_session(prefix="op25bf") as lab,
        SyslogReceiver() as syslog,
    ):
        tmp = Path(tmpd)
        ctx = Ctx(lab, tmp, s, syslog)
        ctx.pool = tmp / "pool.txt"
        n4 = F.write_pool(ctx.pool, s.prefixes)
        bots = F.pick_bots(n4, s.bots, s.seed)
        F.prepare_lab(lab.rtr, lab.isp, lab.net)
        ctx.flood_cfg = F.flood_config(
            tmp / "flood.cfg", F.mac_of(lab.rtr, "to-bot"), F.mac_of(lab.bot, "eth0"), bots
        )
        ctx.stream_cfg = F.stream_config(
            tmp / "stream.cfg", F.mac_of(lab.rtr, "to-res"), F.mac_of(lab.res, "eth0")
        )
        print(f"lab {lab.name} ready; pool {s.prefixes:,} prefixes in {tmp}", flush=True)
        results = (run_goal3 if args.goal3 else run_all)(ctx, results_dir, stamp)
        notes = ctx.notes
    rows = (summarise_goal3 if args.goal3 else summarise)(results)
    doc = {
        "when": stamp,
        "settings": asdict(s),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "targets": TARGETS,
        "wall_s": round(time.monotonic() - t0, 1),
        "results": results,
        "summary": rows,
        "notes": notes,
    }
    out = results_dir / f"flood-{stamp}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print_table(rows)
    for n in notes:
        print(f"note: {n}")
    print(f"\nfull results: {out} (wall {doc['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
