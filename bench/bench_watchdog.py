"""What one rule-watchdog read costs (``op25b.kernel.rules.read_state``), with and
without the member digests of op25b's static sets, side by side.

The watchdog reads the kernel state every ``rules_check_interval`` (1 s) on the kernel
thread. Since the adversarial review it also reads and hashes the members of each
static set up to ``integrity.DIGEST_MAX`` entries (a same-count change of a set went
unnoticed before). This measures the price per check at a few subs-set sizes, in a
namespace of its own: the sets op25b would have (mta, allow, subs for v4 and v6; subs4
sized N), no rules needed. Baseline and digest reads alternate round by round;
wall and CPU (this process + children: ipset, iptables-save, nft) are medians.

    .venv/bin/python bench/bench_watchdog.py                 # ~30 s
    .venv/bin/python bench/bench_watchdog.py --sizes 1000,16384 --rounds 21

Root only; nothing leaves the namespace it creates. Not part of pytest.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import statistics
import subprocess
import sys
import time

from op25b.kernel import integrity, rules


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _load(prefix: list[str], n: int) -> None:
    lines = []
    for name, fam, entries in (
        ("op25b-mta4", "inet", ["203.0.113.25"]),
        ("op25b-allow4", "inet", ["198.51.100.0/24", "100.64.7.7"]),
        ("op25b-mta6", "inet6", ["2001:db8:25::25"]),
        ("op25b-allow6", "inet6", ["2001:db8:b00::/40"]),
        ("op25b-subs6", "inet6", ["2001:db8:100::/40"]),
        (
            "op25b-subs4",
            "inet",
            [f"100.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}" for i in range(n)],
        ),
    ):
        lines.append(f"create {name} hash:net family {fam} hashsize 1024 maxelem {max(n, 1) * 2}")
        lines += [f"add {name} {e}" for e in entries]
    subprocess.run([*prefix, "ipset", "destroy"], check=True)
    subprocess.run(
        [*prefix, "ipset", "restore"], input="\n".join(lines) + "\n", text=True, check=True
    )


def _time(prefix: list[str], digest_max: int) -> tuple[float, float]:
    rules.DIGEST_MAX = digest_max  # type: ignore[misc]  (read_state reads the module name)
    c0, t0 = _cpu(), time.perf_counter()
    state = rules.read_state(prefix)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    assert bool(state.contents) == (digest_max > 0), state.contents
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,4096,16384")
    ap.add_argument("--rounds", type=int, default=11)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_watchdog: run as root (it creates a network namespace)")
    ns = f"op25b-bw-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    prefix = ["ip", "netns", "exec", ns]
    try:
        print(
            "| subs4 entries | counts only: wall / CPU ms | with digests: wall / CPU ms"
            " | ratio (CPU) |"
        )
        print("|---:|---:|---:|---:|")
        for n in (int(s) for s in args.sizes.split(",")):
            _load(prefix, n)
            base, dig = [], []
            for _ in range(args.rounds):
                base.append(_time(prefix, 0))
                dig.append(_time(prefix, integrity.DIGEST_MAX))
            bw, bc = (statistics.median(x[i] for x in base) * 1000 for i in (0, 1))
            dw, dc = (statistics.median(x[i] for x in dig) * 1000 for i in (0, 1))
            print(f"| {n:,} | {bw:.1f} / {bc:.1f} | {dw:.1f} / {dc:.1f} | {dc / bc:.2f}x |")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
