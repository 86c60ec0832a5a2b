"""What a cached bot's drop in raw PREROUTING costs, piece by piece (issue 13, goal 1).

bench_flood.py compares op25b's verdict cache with a hand-written raw DROP of the
same flood (``-p tcp -m multiport --dports 25`` -> a chain with ``-j DROP``). That
anchor tests the port only; op25b must also let provider MTAs by and drop only the
sources it cached. This script takes the difference apart: rule variants of the same
shape as the anchor (the same jump, a chain), each adding one piece, flooded in
interleaved rounds in its own lab (1024 bots, 1M SYNs per round; no daemon runs, the
sets are filled by hand):

- ``anchor``             the bench_flood anchor: port only;
- ``old_layout``         op25b before: the jump tests ``! mta-set dst`` and ``block-set src``;
- ``op25b``              op25b now (``op25b.kernel.ruletext``, one provider MTA): the
                         chain's rule ``! -d MTA -m set --match-set block src -j DROP``;
- ``bots_set``           like for like without the MTA: a hand-written drop of exactly
                         the cached sources (the same hash:ip set with timeout and
                         counters);
- ``bots_plain_set``     the same with a plain hash:ip (no timeout, no counters);
- ``mta_compare``        the MTA compare alone, no set.

Rates are SYNs the router took per second (its rx counter over trafgen's time, the
generator on CPU 0); ratios are medians of per-round ratios to the anchor.

    sudo .venv/bin/python bench/bench_rawcache.py [--rounds 6] [--packets 1000000]

Root only (its own namespaces, torn down whatever happens). Not part of pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import floodlab as F  # noqa: E402  (bench helper next to this file)

from op25b.kernel.cachesets import block_set_line  # noqa: E402
from op25b.kernel.ruletext import RuleConfig, render_rules  # noqa: E402
from op25b.lab.topology import lab_session  # noqa: E402
from op25b.policy.addr import parse_address  # noqa: E402

GEN_CPU = 0
JUMP = "PREROUTING -p tcp -m multiport --dports 25"
MTA = "203.0.113.25"


def op25b_raw_chain() -> list[str]:
    """op25b's own raw chain for one provider MTA, as ``op25b.kernel.ruletext`` renders it."""
    cfg = RuleConfig(guarded_ports=(25,), block_cache=True, raw_mtas=(parse_address(MTA),))
    raw = render_rules(cfg, 4).split("*raw\n", 1)[1].split("COMMIT", 1)[0]
    rules = [ln.removeprefix("-A OP25B ") for ln in raw.splitlines() if ln.startswith("-A OP25B ")]
    return [r.replace("op25b-block4", "rc-block4") for r in rules]


# name: (matches added to the jump, the chain's rules)
VARIANTS = {
    "anchor": ("", ["-j DROP"]),
    "old_layout": (
        "-m set ! --match-set rc-mta4 dst -m set --match-set rc-block4 src",
        ["-j DROP"],
    ),
    "op25b": ("", op25b_raw_chain()),
    "bots_set": ("", ["-m set --match-set rc-block4 src -j DROP"]),
    "bots_plain_set": ("", ["-m set --match-set rc-plain4 src -j DROP"]),
    "mta_compare": ("", [f"! -d {MTA}/32 -j DROP"]),
}


def chain(name: str) -> str:
    return f"RC-{name.replace('_', '-').upper()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--packets", type=int, default=1_000_000, help="SYNs per flood")
    ap.add_argument("--bots", type=int, default=1024)
    ap.add_argument("--json", action="store_true", help="print the rates as JSON too")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_rawcache: run as root (network namespaces)", file=sys.stderr)
        return 2
    rates: dict[str, list[float]] = {k: [] for k in VARIANTS}
    with tempfile.TemporaryDirectory() as tmpd, lab_session(prefix="op25brc") as lab:
        tmp = Path(tmpd)
        F.prepare_lab(lab.rtr, lab.isp, lab.net)
        bots = F.pick_bots(1 << 18, args.bots, 1)
        cfg = F.flood_config(
            tmp / "flood.cfg", F.mac_of(lab.rtr, "to-bot"), F.mac_of(lab.bot, "eth0"), bots
        )
        sets = f"create rc-mta4 hash:ip family inet\nadd rc-mta4 {MTA}\n"
        sets += block_set_line("rc-block4", 4, 3600)  # as op25b creates its cache set
        sets += "create rc-plain4 hash:ip family inet\n"
        sets += "".join(f"add rc-block4 {b}\nadd rc-plain4 {b}\n" for b in bots)
        F.sh(lab.rtr, ["ipset", "restore"], sets)
        text = "*raw\n"
        for name, (_, body) in VARIANTS.items():
            text += f":{chain(name)} - [0:0]\n" + "".join(f"-A {chain(name)} {r}\n" for r in body)
        F.sh(lab.rtr, ["iptables-restore", "--noflush"], text + "COMMIT\n")
        timeout = max(20.0, args.packets / 20_000)
        for r in range(args.rounds):
            for name, (match, _) in VARIANTS.items():
                rule = " ".join(x for x in (JUMP, match, f"-j {chain(name)}") if x)
                F.sh(lab.rtr, ["iptables-restore", "--noflush"], f"*raw\n-I {rule}\nCOMMIT\n")
                try:
                    rx0 = F.rx_packets(lab.rtr, "to-bot")
                    sent = F.Trafgen(lab.bot, cfg, args.packets, timeout, GEN_CPU).wait()
                    rx = F.rx_packets(lab.rtr, "to-bot") - rx0
                finally:
                    F.sh(lab.rtr, ["iptables-restore", "--noflush"], f"*raw\n-D {rule}\nCOMMIT\n")
                rate = rx / sent.seconds if sent.seconds else 0.0
                rates[name].append(rate)
                print(f"round {r + 1}/{args.rounds} {name:<15} {rate:>10,.0f} SYN/s", flush=True)
    anchor = rates["anchor"]
    print("\n| variant | SYN/s (median) | / anchor (median of rounds) | rounds, kSYN/s |")
    print("|---|---:|---:|---|")
    for name, v in rates.items():
        ratio = statistics.median(x / a for x, a in zip(v, anchor, strict=True) if a)
        per_round = " ".join(f"{x / 1000:.0f}" for x in v)
        print(f"| {name} | {statistics.median(v):,.0f} | {ratio:.3f} | {per_round} |")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    if args.json:
        print(json.dumps(rates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
