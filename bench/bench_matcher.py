"""Benchmark op25b.policy.compiled's LPM table against the alternatives it was chosen over.

For 10k, 100k and 1M random ISP-like prefixes (half v4, half v6, nested, seeded RNG)
prints compile time (CPU seconds), memory (tracemalloc retained + peak, and the RSS growth measured
in a fresh subprocess so earlier runs cannot hide it) and lookups per CPU second for
hits and for random addresses, for each structure side by side:

- ``buckets``  op25b.policy.lpm.PrefixTable (chosen): disjoint intervals, bucket index,
               then a bisect over the few intervals of one bucket
- ``bisect``   the same intervals with one plain bisect over all of them
- ``dicts``    per-prefix-length dicts {masked_int: index}, longest length first

and then the whole ``compile_policy`` on a Policy of that size (Policy objects
included), with ``plan_of`` / ``plan_index`` rates.

    .venv/bin/python bench/bench_matcher.py            # 10k, 100k, 1M
    .venv/bin/python bench/bench_matcher.py --quick    # 10k, 100k

Not part of pytest (it takes about a minute at 1M).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from op25b.policy.compiled import CompiledPolicy, compile_policy
from op25b.policy.lpm import NO_MATCH, PrefixTable
from op25b.policy.model import (
    Action,
    DaemonConfig,
    Location,
    Plan,
    Policy,
    Prefix,
    PrefixList,
)

Pairs = list[tuple[int, int]]
QUERIES = 200_000


class Lpm(Protocol):
    def lookup(self, addr: int) -> int: ...


# --------------------------------------------------------------------------- data


def isp_prefixes(n: int, seed: int) -> tuple[Pairs, Pairs]:
    """``n`` distinct prefixes, half v4 and half v6, shaped like ISP subscriber pools.

    v4: dynamic pools (/16-/22) in a few /8s, /24 blocks, business /27-/30 and static
    /32 hosts, many of them carved out of the pools. v6: customer /48 and /56
    delegations and /64s inside one provider /32, plus some /128 hosts (these land in
    the second level).
    """
    rng = random.Random(seed)
    v4_eights = [rng.randrange(1, 224) << 24 for _ in range(8)]
    v6_base = 0x20010DB8 << 96
    v4_lengths = [16, 18, 20, 22, 24, 24, 24, 24, 27, 28, 29, 29, 30, 32, 32, 32]
    v6_lengths = [48, 48, 56, 56, 56, 56, 56, 64, 64, 64, 64, 128]

    def gen(count: int, width: int, lengths: list[int], base: Callable[[], int]) -> Pairs:
        seen: set[tuple[int, int]] = set()
        out: Pairs = []
        while len(out) < count:
            length = rng.choice(lengths)
            a = base()
            net = (a >> (width - length)) << (width - length)
            if (net, length) not in seen:
                seen.add((net, length))
                out.append((net, length))
        return out

    v4 = gen(n // 2, 32, v4_lengths, lambda: rng.choice(v4_eights) | rng.getrandbits(24))
    v6 = gen(n - n // 2, 128, v6_lengths, lambda: v6_base | rng.getrandbits(96))
    return v4, v6


def queries(pairs: Pairs, width: int, seed: int) -> tuple[list[int], list[int]]:
    """Addresses inside random prefixes (hits) and uniformly random addresses."""
    rng = random.Random(seed)
    hits = []
    for _ in range(QUERIES):
        net, length = rng.choice(pairs)
        hits.append(net | rng.getrandbits(width - length) if length < width else net)
    rand = [rng.getrandbits(width) for _ in range(QUERIES)]
    if width == 128:  # uniformly random v6 never gets near the pools: stay in the /32
        rand = [(0x20010DB8 << 96) | (a >> 32) for a in rand]
    return hits, rand


# --------------------------------------------------------------------------- alternatives


class DictLpm:
    """Option (a): {masked_int: index} per prefix length, probing longest first."""

    def __init__(self, width: int, pairs: Pairs) -> None:
        by_len: dict[int, dict[int, int]] = {}
        for i, (net, length) in enumerate(pairs):
            by_len.setdefault(length, {}).setdefault(net, i)
        full = (1 << width) - 1
        self.probes = tuple(
            (full ^ ((1 << (width - ln)) - 1), d) for ln, d in sorted(by_len.items(), reverse=True)
        )

    def lookup(self, addr: int) -> int:
        for mask, d in self.probes:
            v = d.get(addr & mask)
            if v is not None:
                return v
        return NO_MATCH


class BisectLpm:
    """Option (b): the same disjoint intervals with a plain bisect over all of them.

    Built by PrefixTable (identical intervals), keeping only its interval arrays, so
    the memory column shows what the bucket index adds on top.
    """

    def __init__(self, width: int, pairs: Pairs) -> None:
        t = PrefixTable.build(width, pairs)
        self.shift_in = 64 if width == 128 else 0
        self.starts, self.labels = t._starts, t._labels
        self.sub_starts, self.sub_labels, self.sub_bounds = (
            t._sub_starts,
            t._sub_labels,
            t._sub_bounds,
        )

    def lookup(self, addr: int) -> int:
        label = self.labels[bisect_right(self.starts, addr >> self.shift_in) - 1]
        if label >= NO_MATCH:
            return label
        k, bounds = -2 - label, self.sub_bounds
        j = bisect_right(self.sub_starts, addr & ((1 << 64) - 1), bounds[k], bounds[k + 1])
        return self.sub_labels[j - 1]


STRUCTURES: dict[str, Callable[[int, Pairs], Lpm]] = {
    "buckets": PrefixTable.build,  # chosen: op25b.policy.lpm.PrefixTable
    "bisect": BisectLpm,
    "dicts": DictLpm,
}


# --------------------------------------------------------------------------- policy


def make_policy(v4: Iterable[tuple[int, int]], v6: Iterable[tuple[int, int]]) -> Policy:
    """A 3-plan Policy holding every prefix, built the compact way a loader would."""
    plans = []
    all_prefixes = [Prefix(4, n, ln) for n, ln in v4]
    all_prefixes += [Prefix(6, n, ln) for n, ln in v6]
    random.Random(7).shuffle(all_prefixes)
    chunk = -(-len(all_prefixes) // 3)
    for k, name in enumerate(("residential", "mobile", "business-static")):
        items = tuple(all_prefixes[k * chunk : (k + 1) * chunk])
        plist = PrefixList.build(
            items,
            files=(f"pools/{name}.txt",),
            file_index=bytes(len(items)),
            lines=array("I", range(1, len(items) + 1)),
            cols=array("I", [1]) * len(items),
        )
        plans.append(Plan(name, name == "business-static", plist, Location("p.yaml", 5 + k, 3)))
    loc = Location("p.yaml", 1, 1)
    return Policy(
        "p.yaml", frozenset({25}), Action.DROP, tuple(plans), (), (), DaemonConfig(), loc, loc
    )


# --------------------------------------------------------------------------- measuring


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rate(fn: Callable[[int], object], qs: Sequence[int]) -> float:
    # CPU time of this process, not wall time: on a shared box other jobs steal the
    # CPU mid-loop and wall-clock rates swing by 2x between runs.
    t = time.process_time()
    for a in qs:
        fn(a)
    return len(qs) / (time.process_time() - t)


def traced(build: Callable[[], object]) -> tuple[object, float, float]:
    """Build under tracemalloc: (object, retained MB, peak MB)."""
    gc.collect()
    tracemalloc.start()
    obj = build()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return obj, current / 1e6, peak / 1e6


def save_data(v4: Pairs, v6: Pairs, path: str) -> None:
    """Prefixes as compact arrays, for the RSS children to load without garbage."""
    data = (
        array("Q", (n for n, _ in v4)),
        array("B", (ln for _, ln in v4)),
        array("Q", (n >> 64 for n, _ in v6)),
        array("Q", (n & ((1 << 64) - 1) for n, _ in v6)),
        array("B", (ln for _, ln in v6)),
    )
    with open(path, "wb") as f:
        pickle.dump(data, f)


def child_rss(what: str, data_path: str) -> float:
    """RSS growth (MB) of building ``what`` in a fresh interpreter.

    A fresh process loading compact arrays has no freed heap to recycle, so the RSS
    growth is what the structure really costs the daemon (tracemalloc misses
    allocator overhead and fragmentation).
    """
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", what, data_path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(json.loads(out)["rss_mb"])


def rss_child_main(what: str, data_path: str) -> None:
    with open(data_path, "rb") as f:
        n4, l4, h6, lo6, l6 = pickle.load(f)
    v4 = zip(n4, l4, strict=True)
    v6 = ((h << 64 | lo, ln) for h, lo, ln in zip(h6, lo6, l6, strict=True))
    obj: object
    if what == "policy":  # the Policy objects a loader would hand over
        gc.collect()
        before = rss_bytes()
        obj = make_policy(v4, v6)
    elif what == "compile":  # compile_policy on top of an existing Policy
        policy = make_policy(v4, v6)
        gc.collect()
        before = rss_bytes()
        obj = compile_policy(policy)
    else:  # one LPM structure (its input pairs built first, as the policy holds them)
        p4, p6 = list(v4), list(v6)
        gc.collect()
        before = rss_bytes()
        obj = (STRUCTURES[what](32, p4), STRUCTURES[what](128, p6))
    gc.collect()
    print(json.dumps({"rss_mb": (rss_bytes() - before) / 1e6}))
    del obj


def bench_size(n: int, seed: int) -> None:
    v4, v6 = isp_prefixes(n, seed)
    data_fd, data_path = tempfile.mkstemp(prefix="bench_matcher.", suffix=".pickle")
    os.close(data_fd)
    try:
        save_data(v4, v6, data_path)
        _bench_size(n, seed, v4, v6, data_path)
    finally:
        os.unlink(data_path)


def _bench_size(n: int, seed: int, v4: Pairs, v6: Pairs, data_path: str) -> None:
    q4 = queries(v4, 32, seed + 1)
    q6 = queries(v6, 128, seed + 2)
    print(f"\n== {n:,} prefixes ({len(v4):,} v4 + {len(v6):,} v6), seed {seed}")
    print(
        f"{'structure':<12}{'CPU s':>10}{'kept MB':>9}{'peak MB':>9}{'RSS MB':>8}"
        f"{'v4 hit/s':>11}{'v4 rnd/s':>11}{'v6 hit/s':>11}{'v6 rnd/s':>11}  intervals"
    )
    reference: tuple[list[int], ...] | None = None
    for name, build in STRUCTURES.items():
        gc.collect()
        t = time.process_time()
        t4, t6 = build(32, v4), build(128, v6)
        compile_s = time.process_time() - t
        rates = [rate(t4.lookup, q) for q in q4] + [rate(t6.lookup, q) for q in q6]
        # every structure must give the same answers, or the comparison is moot
        answers = tuple(
            [t.lookup(a) for a in q[:2000]] for t, qq in ((t4, q4), (t6, q6)) for q in qq
        )
        if reference is None:
            reference = answers
        elif answers != reference:
            raise SystemExit(f"{name} disagrees with {next(iter(STRUCTURES))}")
        if isinstance(t4, PrefixTable) and isinstance(t6, PrefixTable):
            intervals = f"{t4.intervals + t6.intervals:,}"
        else:
            intervals = "-"
        del t4, t6
        _, kept, peak = traced(lambda b=build: (b(32, v4), b(128, v6)))  # type: ignore[misc]
        rss = child_rss(name, data_path)
        print(
            f"{name:<12}{compile_s:>10.2f}{kept:>9.1f}{peak:>9.1f}{rss:>8.1f}"
            + "".join(f"{r:>11,.0f}" for r in rates)
            + f"  {intervals}"
        )
    if reference is not None:
        hit_rate = sum(a >= 0 for a in reference[1]) / len(reference[1])
        print(f"(v4 random addresses: {hit_rate:.1%} hits; v6 random stay in the /32)")

    policy, policy_kept, _ = traced(lambda: make_policy(v4, v6))
    assert isinstance(policy, Policy)
    gc.collect()
    t = time.process_time()
    wall = time.perf_counter()
    compiled = compile_policy(policy)
    compile_s = time.process_time() - t
    wall = time.perf_counter() - wall
    del compiled
    compiled_obj, kept, peak = traced(lambda: compile_policy(policy))
    assert isinstance(compiled_obj, CompiledPolicy)
    compiled = compiled_obj
    rss_policy = child_rss("policy", data_path)
    rss_compile = child_rss("compile", data_path)
    print(
        f"Policy objects: {policy_kept:.1f} MB traced, {rss_policy:.1f} MB RSS. "
        f"compile_policy: {compile_s:.2f} s CPU ({wall:.2f} s wall), {kept:.1f} MB kept, "
        f"{peak:.1f} MB peak, {rss_compile:.1f} MB RSS"
        f" => Policy + compiled {rss_policy + rss_compile:.1f} MB RSS"
    )
    hits4, rand4 = q4
    hits6, _ = q6
    print(
        f"plan_of/s v4 hit {rate(lambda a: compiled.plan_of(4, a), hits4):,.0f}"
        f"  v4 rnd {rate(lambda a: compiled.plan_of(4, a), rand4):,.0f}"
        f"  v6 hit {rate(lambda a: compiled.plan_of(6, a), hits6):,.0f}"
        f"   plan_index/s v4 hit {rate(lambda a: compiled.plan_index(4, a), hits4):,.0f}"
        f"  v6 hit {rate(lambda a: compiled.plan_index(6, a), hits6):,.0f}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="10k and 100k only")
    ap.add_argument("--seed", type=int, default=25)
    ap.add_argument("--rss-child", nargs=2, metavar=("WHAT", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        rss_child_main(*args.rss_child)
        return
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {QUERIES:,} queries per rate")
    sizes = (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000)
    for n in sizes:
        bench_size(n, args.seed)


if __name__ == "__main__":
    main()
