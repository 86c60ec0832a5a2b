"""What the Prometheus metrics and the start-up progress cost the daemon.

Run: ``.venv/bin/python bench/bench_metrics.py [--prefixes N] [--json]``

Side by side in one run (best of 5 repeats, CPU-bound, so noise from other jobs
mostly shows as a slower repeat that ``min`` drops):

- ``packet``: one ``Enforcer.handle`` of a blocked v4 SYN (the verdict path, for scale);
- ``tick``: what a worker does once per ``daemon.metrics.interval``: counters
  snapshot, ``take_sample`` with a realistic health dict and queue stats, and for a
  follower the JSON encode and the datagram send (received and published here too);
- ``/proc``: reading the kernel's queue stats (part of a tick);
- ``scrape`` at 1, 8 and 64 workers: ``MetricsHub.view`` plus the text exposition,
  i.e. what one HTTP scrape or one textfile write costs the leader process;
- ``load`` with and without the progress callback, on a generated pool file of
  ``--prefixes`` lines (the callback fires once per 65536 lines).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from op25b.daemon.metrics import render
from op25b.daemon.metricshub import Channel, MetricsHub, Sample, take_sample
from op25b.dataplane.aggregator import AbuseAggregator
from op25b.dataplane.counters import Counters
from op25b.dataplane.enforcer import Enforcer
from op25b.dataplane.verdicts import VERDICT_ACCEPT
from op25b.kernel.queuestats import QueueStats, kernel_queue_stats
from op25b.policy.compiled import compile_policy
from op25b.policy.loader import load_policy, load_policy_text

POLICY = """\
version: 1
guarded_ports: [25]
action: drop
plans:
  residential: {exempt: false, prefixes: [100.64.0.0/16]}
"""
HEALTH = {  # the leader's health_counters() keys, with a block cache
    name: 3
    for name in [
        "abuse_overflow_records",
        "abuse_overflow_sources",
        "abuse_overflow_packets",
        "abuse_capped_records",
        "abuse_records_written",
        "abuse_records_pending",
        "abuse_records_lost",
        "abuse_write_errors",
        "abuse_log_reopens",
        "syslog_dropped",
        "syslog_errors",
        "callback_errors",
        "block_cache_errors",
        "block_cache_unattributed",
        "block_cache_adds",
        "rules_ok",
        "rules_checks",
        "rules_repaired",
        "rules_repair_failures",
        "kernel_errors",
    ]
}


def best(fn: object, number: int) -> float:
    """Seconds per call: best of 5 repeats of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number  # type: ignore[arg-type]


def syn() -> bytes:
    src, dst = socket.inet_aton("100.64.0.66"), socket.inet_aton("192.0.2.25")
    tcp = (40000).to_bytes(2, "big") + (25).to_bytes(2, "big") + bytes(8) + b"\x50\x02" + bytes(6)
    head = b"\x45\x00" + (40).to_bytes(2, "big") + bytes(4) + b"\x40\x06" + bytes(2)
    return head + src + dst + tcp


def measure(prefixes: int) -> dict[str, float]:
    out: dict[str, float] = {}
    policy = load_policy_text(POLICY).policy
    counters = Counters()
    agg = AbuseAggregator(window=300, v6_aggregate=64, router="bench")
    enforcer = Enforcer(compile_policy(policy), counters, agg, VERDICT_ACCEPT)
    packet = syn()
    out["packet_us"] = best(lambda: enforcer.handle(packet), 20000) * 1e6
    stats = {0: QueueStats(0, 1, 0, 2, 0xFFFF, 5, 0, 123)}
    fast = {"provider_mta": 1, "exempt": 2, "not_subscriber": 3}

    def leader_tick() -> None:
        snap = counters.snapshot(0.0)
        take_sample(0, snap, stats, HEALTH, fast, {"policy_loaded": 1})

    out["tick_leader_us"] = best(leader_tick, 2000) * 1e6
    channel = Channel()
    hub = MetricsHub()

    def follower_tick() -> None:
        channel.send(take_sample(1, counters.snapshot(0.0), stats, HEALTH, {}))
        received = channel.receive(1.0)
        assert received is not None
        hub.publish(received)

    out["tick_follower_us"] = best(follower_tick, 2000) * 1e6
    out["sample_bytes"] = len(take_sample(1, counters.snapshot(0.0), stats, HEALTH, {}).encode())
    out["proc_read_us"] = best(kernel_queue_stats, 2000) * 1e6
    for workers in (1, 8, 64):
        hub = MetricsHub()
        for i in range(workers):
            hub.publish(
                Sample(
                    i,
                    1000 + i,
                    take_sample(i, counters.snapshot(0.0), stats, HEALTH, fast).counters,
                )
            )
        out[f"scrape_{workers}_ms"] = best(lambda h=hub: render(h), 50) * 1e3  # type: ignore[misc]
        out[f"scrape_{workers}_bytes"] = len(render(hub))
    with tempfile.TemporaryDirectory() as tmp:
        pool = Path(tmp) / "pool.txt"
        pool.write_text(
            "".join(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32\n" for i in range(prefixes))
        )
        path = Path(tmp) / "p.yaml"
        path.write_text(
            "version: 1\nguarded_ports: [25]\naction: drop\nplans:\n"
            "  big: {exempt: false, prefixes_file: pool.txt}\n"
        )
        calls: list[int] = []
        plain, with_cb = [], []
        for _ in range(3):  # alternate, so a noisy moment hits both
            t = time.process_time()
            load_policy(path)
            plain.append(time.process_time() - t)
            t = time.process_time()
            load_policy(path, progress=calls.append)
            with_cb.append(time.process_time() - t)
        out["load_s"] = min(plain)
        out["load_progress_s"] = min(with_cb)
        out["progress_calls"] = len(calls) / 3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefixes", type=int, default=1_000_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = measure(args.prefixes)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"verdict path, one blocked SYN       {r['packet_us']:8.2f} us")
    print(
        f"metrics tick, leader                {r['tick_leader_us']:8.2f} us"
        f"  (= {r['tick_leader_us'] / r['packet_us']:.1f} packets)"
    )
    print(
        f"metrics tick, follower (+send/recv) {r['tick_follower_us']:8.2f} us"
        f"  (= {r['tick_follower_us'] / r['packet_us']:.1f} packets;"
        f" {r['sample_bytes']:.0f} B datagram)"
    )
    print(f"queue stats /proc read              {r['proc_read_us']:8.2f} us")
    for w in (1, 8, 64):
        print(
            f"scrape, {w:2d} worker(s)               {r[f'scrape_{w}_ms']:8.2f} ms"
            f"  ({r[f'scrape_{w}_bytes']:.0f} B)"
        )
    ratio = r["load_progress_s"] / r["load_s"]
    print(
        f"load {args.prefixes:,} prefixes: {r['load_s']:.2f} s plain,"
        f" {r['load_progress_s']:.2f} s with progress ({ratio:.3f}x,"
        f" {r['progress_calls']:.0f} callbacks)"
    )


if __name__ == "__main__":
    main()
