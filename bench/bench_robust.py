"""Costs of the hostile-input defences: the aggregator's caps, the writer's checks, the loader's.

Run: ``.venv/bin/python bench/bench_robust.py [--spray N] [--json]``

Side by side in one run (CPU time of this process; best of 3 where it is a rate):

- the abuse aggregator under an IPv6 spray (N sources, one /48, each its own /64, then
  one IPv4 bot), with the caps as shipped versus the caps off (no group cap, no family
  reserve: what the aggregator did before) -- observe cost per spray packet, peak
  memory (tracemalloc, a separate pass), records written, and whether the v4 bot kept
  its record; plus observe on an already-known source (the hot path);
- the abuse-log writer: one ``lstat`` (the deleted/replaced check done per write)
  next to a whole one-record ``write()`` (write + fsync) on this disk;
- the loader refusing a FIFO, ``/dev/zero`` and a sparse 256 MiB + 1 byte pool file.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import sys
import tempfile
import time
import timeit
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from op25b.daemon.abuselog import AbuseLogWriter
from op25b.dataplane.aggregator import AbuseAggregator
from op25b.policy.decide import Verdict
from op25b.policy.loader import PolicyError, load_policy
from op25b.policy.model import Location
from op25b.policy.sourcefiles import MAX_POOL_BYTES

T0 = float(calendar.timegm((2026, 11, 23, 18, 0, 0)))
RULE = Location("p.yaml", 6, 9)
SPRAY_48 = 0x20010DB8_0100_0000 << 64
MX6 = (0x20010DB8_00C0_0000 << 64) | 0x25
BOT, MX = 0x64400042, 0xC0000219


def make(caps: bool) -> AbuseAggregator:
    a = AbuseAggregator(window=300, router="bench")
    if not caps:
        a.group_cap = 1 << 62
        a.family_cap = a.max_sources
    return a


def spray(a: AbuseAggregator, n: int) -> bool:
    obs = a.observe
    for i in range(n):
        src = SPRAY_48 | ((i & 0xFFFF) << 64) | 1
        obs(6, src, MX6, 25, "residential", Verdict.DROP, RULE, T0 + 1)
    obs(4, BOT, MX, 25, "residential", Verdict.DROP, RULE, T0 + 2)
    return any(r.source == "100.64.0.66" for r in a.due(T0 + 300))


def bench_aggregator(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, caps in (("caps", True), ("caps off", False)):
        best = float("inf")
        for _ in range(3):
            a = make(caps)
            t = time.process_time()
            spray(a, n)
            best = min(best, time.process_time() - t)
        a = make(caps)
        tracemalloc.start()
        spray_obs = a.observe
        for i in range(n):
            src = SPRAY_48 | ((i & 0xFFFF) << 64) | 1
            spray_obs(6, src, MX6, 25, "residential", Verdict.DROP, RULE, T0 + 1)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        spray_obs(4, BOT, MX, 25, "residential", Verdict.DROP, RULE, T0 + 2)
        records = a.due(T0 + 300)
        known = make(caps)
        known.observe(4, BOT, MX, 25, "r", Verdict.DROP, RULE, T0)
        hot = min(
            timeit.repeat(
                lambda k=known: k.observe(4, BOT, MX, 25, "r", Verdict.DROP, RULE, T0 + 1),
                number=200_000,
                repeat=3,
            )
        )
        out[label] = {
            "us_per_spray_packet": best / (n + 1) * 1e6,
            "peak_mib": peak / 2**20,
            "records": len(records),
            "overflow_records": sum(r.overflow for r in records),
            "v4_bot_recorded": any(r.source == "100.64.0.66" for r in records),
            "us_per_known_observe": hot / 200_000 * 1e6,
        }
    return out


def bench_writer() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "blocked.jsonl")
        w = AbuseLogWriter(path)
        a = AbuseAggregator(window=300)
        a.observe(4, BOT, MX, 25, "r", Verdict.DROP, RULE, T0)
        [rec] = a.due(T0 + 300)
        w.write([rec])
        lstat = min(
            timeit.repeat(lambda: os.stat(path, follow_symlinks=False), number=20_000, repeat=3)
        )
        write = min(timeit.repeat(lambda: w.write([rec]), number=200, repeat=3))
        w.close()
    return {"us_per_lstat": lstat / 20_000 * 1e6, "us_per_write_call": write / 200 * 1e6}


def bench_loader() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        (base / "pools").mkdir()
        policy = base / "p.yaml"
        policy.write_text(
            "version: 1\nguarded_ports: [25]\naction: drop\nplans:\n  m:\n"
            "    exempt: false\n    prefixes_file: pools/m.txt\n"
        )
        pool = base / "pools" / "m.txt"
        for label in ("fifo", "/dev/zero", "sparse 256 MiB + 1"):
            if pool.exists() or pool.is_symlink():
                pool.unlink()
            if label == "fifo":
                os.mkfifo(pool)
            elif label == "/dev/zero":
                pool.symlink_to("/dev/zero")
            else:
                with open(pool, "wb") as f:
                    f.truncate(MAX_POOL_BYTES + 1)
            t = time.perf_counter()
            try:
                load_policy(policy)
            except PolicyError as e:
                out[f"ms_refuse_{label}"] = (time.perf_counter() - t) * 1e3
                out[f"why_{label}"] = str(e).rpartition(": ")[2]
            else:
                raise SystemExit(f"{label}: was not refused")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spray", type=int, default=70_000, help="IPv6 sources in the spray")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = {
        "aggregator": bench_aggregator(args.spray),
        "writer": bench_writer(),
        "loader": bench_loader(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"aggregator, {args.spray} v6 sources from one /48 then one v4 bot:")
    for label, r in result["aggregator"].items():
        print(
            f"  {label:9} {r['us_per_spray_packet']:6.2f} us/spray pkt"
            f"  peak {r['peak_mib']:6.2f} MiB"
            f"  records {r['records']:6d} (overflow {r['overflow_records']})"
            f"  v4 bot recorded: {r['v4_bot_recorded']}"
            f"  known source {r['us_per_known_observe']:.2f} us/observe"
        )
    w = result["writer"]
    print(
        f"writer: lstat {w['us_per_lstat']:.2f} us;"
        f" one-record write() {w['us_per_write_call']:.0f} us"
    )
    for key, ms in result["loader"].items():
        if key.startswith("ms_refuse_"):
            label = key[len("ms_refuse_") :]
            why = result["loader"][f"why_{label}"]
            print(f"loader: {label} refused in {ms:.2f} ms ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
