"""Start and reload at scale: how long until op25b enforces a 1M-prefix policy, and its memory.

Builds its own namespace lab (op25b.lab.topology; torn down whatever happens), writes
bench_flood's policy (a ``bench-pool`` plan of N disjoint prefixes in a pool file,
half v4 /32, half v6 /64) and, per round, side by side in one run:

- **start**: ``op25b run`` spawned -> its ``started:`` line (rules and sets installed,
  queue bound: enforcing); wall time, and the CPU seconds the daemon and its reaped
  children used (``/proc/PID/stat`` utime+stime+cutime+cstime), which the other jobs on
  a shared box disturb less than wall time;
- **reload**: SIGHUP -> the ``reloaded ... in X s`` line (the new policy in force:
  sets swapped, policy swapped in the loop); wall and CPU as above;
- **memory**: the daemon's VmRSS once started, VmRSS after each reload (steady, after
  a second's settling), and VmHWM (the high-water mark over its whole life, so the
  last value covers every load and reload so far).

The verdict gap during a reload under a flood is bench_flood.py's step 5 (it needs the
flood and the probe); this script answers "how fast and how big" in ~1 minute.

    .venv/bin/python bench/bench_start.py                  # 1M prefixes, 2 reloads
    .venv/bin/python bench/bench_start.py --prefixes 100000 --reloads 1

Root only. Not part of pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import floodlab as F  # noqa: E402  (bench helper next to this file)

from op25b.lab.processes import DaemonProcess, SyslogReceiver  # noqa: E402
from op25b.lab.topology import lab_session  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` plus what its reaped children used, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime, stime, cutime, cstime are fields 14-17
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICK


def one_session(ns: str, policy: Path, tmp: Path, syslog: str, reloads: int) -> dict[str, Any]:
    """Start, ``reloads`` SIGHUPs, stop; times and memory."""
    out: dict[str, Any] = {"reloads": []}
    t0 = time.monotonic()
    d = DaemonProcess(ns, policy, ["--abuse-log", str(tmp / "abuse.jsonl"), "--syslog", syslog])
    try:
        d.wait_started(timeout=600)
        out["start_s"] = round(time.monotonic() - t0, 3)
        pid = d.proc.pid
        out["start_cpu_s"] = round(cpu_seconds(pid), 2)
        time.sleep(1.0)
        out["after_start"] = F.proc_memory(pid)
        for _ in range(reloads):
            c0, w0 = cpu_seconds(pid), time.monotonic()
            line = d.reload(timeout=600)
            wall = time.monotonic() - w0
            if "reloaded " not in line:
                raise F.BenchError(f"reload failed: {line}")
            cpu = cpu_seconds(pid) - c0
            time.sleep(1.0)
            out["reloads"].append(
                {"wall_s": round(wall, 3), "cpu_s": round(cpu, 2), "memory": F.proc_memory(pid)}
            )
            print(f"  reload: {wall:.2f}s wall, {cpu:.2f}s CPU, {out['reloads'][-1]['memory']}")
    finally:
        d.proc.send_signal(signal.SIGTERM)
        d.stop(timeout=120)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--prefixes", type=int, default=1_000_000)
    ap.add_argument("--reloads", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=2, help="daemon starts (default 2)")
    ap.add_argument("--json", action="store_true", help="print the full results as JSON")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_start: run as root (network namespaces)", file=sys.stderr)
        return 2
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="op25b-bench-start-") as tmp_name:
        tmp = Path(tmp_name)
        pool = tmp / "pool.txt"
        F.write_pool(pool, args.prefixes)
        policy = F.write_policy(tmp / "policy.yaml", pool)
        with lab_session() as lab, SyslogReceiver() as syslog:
            for i in range(args.sessions):
                print(f"[session {i + 1}/{args.sessions}] {args.prefixes:,} prefixes", flush=True)
                run = one_session(lab.rtr, policy, tmp, syslog.path, args.reloads)
                print(
                    f"  start: {run['start_s']:.2f}s wall, {run['start_cpu_s']:.2f}s CPU,"
                    f" {run['after_start']}",
                    flush=True,
                )
                runs.append(run)
    starts = [r["start_s"] for r in runs]
    reload_walls = [x["wall_s"] for r in runs for x in r["reloads"]]
    rss = [x["memory"].get("VmRSS", 0.0) for r in runs for x in r["reloads"]]
    rss += [r["after_start"].get("VmRSS", 0.0) for r in runs]
    hwm = [x["memory"].get("VmHWM", 0.0) for r in runs for x in r["reloads"]]
    summary = {
        "prefixes": args.prefixes,
        "start_s_median": statistics.median(starts),
        "start_cpu_s_median": statistics.median(r["start_cpu_s"] for r in runs),
        "reload_s_median": statistics.median(reload_walls) if reload_walls else None,
        "reload_cpu_s_median": (
            statistics.median(x["cpu_s"] for r in runs for x in r["reloads"])
            if reload_walls
            else None
        ),
        "rss_mb_max": max(rss),
        "hwm_mb_max": max(hwm) if hwm else max(r["after_start"].get("VmHWM", 0.0) for r in runs),
        "loadavg": os.getloadavg()[0],
    }
    print("| measurement | value | target |")
    print("|---|---:|---|")
    print(
        f"| start to enforcing, s (median wall / CPU) | {summary['start_s_median']:.2f}"
        f" / {summary['start_cpu_s_median']:.2f} | <= 5 |"
    )
    if reload_walls:
        print(
            f"| SIGHUP to new policy in force, s (median wall / CPU) |"
            f" {summary['reload_s_median']:.2f} / {summary['reload_cpu_s_median']:.2f} | <= 5 |"
        )
    print(f"| RSS steady, MB (max) | {summary['rss_mb_max']:.0f} | <= 150 |")
    print(f"| VmHWM over start and reloads, MB (max) | {summary['hwm_mb_max']:.0f} | <= 300 |")
    print(f"(load average {summary['loadavg']:.1f} on {os.cpu_count()} CPUs)")
    if args.json:
        print(json.dumps({"summary": summary, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
