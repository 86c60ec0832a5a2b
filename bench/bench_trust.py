"""What "trust only what op25b let through" costs on the packets of accepted connections.

Kernel only (no daemon): the packets measured are those that never reach userspace --
the ACKs and data of a connection op25b already accepted -- so the rule layout is all
that differs. Three layouts, applied in turn to the same lab router and interleaved
round by round (ratios are medians of per-round ratios, so the shared cores' noise
mostly cancels):

- ``none``:  no op25b rules at all;
- ``old``:   the layout before issue 9: jump on the destination port alone, then
             ``--ctstate RELATED,ESTABLISHED -j RETURN`` in mangle and filter;
- ``trust``: the current layout (``op25b.kernel.rules.install``): the nft table that
             clears op25b's mark bits at forward -151, the jump restricted to
             subscriber sources, and the connmark + ESTABLISHED + ORIGINAL RETURN.

Diagnostics (``--layouts``): ``trust_nonft`` (without the nft table) and
``trust_inchain`` (the subscriber check moved from the jump to right after the trusted
RETURN: trusted packets skip a set lookup per table, non-subscribers pay a chain).

The stream: trafgen ACKs from res (100.64.0.10, 256 source ports) to the provider MTA
203.0.113.25:25, pinned to CPU 0 (with it, the forwarding softirq), at full speed.
Their 256 connections are put into the router's conntrack table by hand
(``conntrack -I``: ESTABLISHED, seen reply, op25b's trusted connmark), so every
packet is "established" for both layouts. Rate = packets that arrived in isp's sink /
trafgen's send-loop seconds. Every round checks, from the rule counters, that the
packets took the RETURN being measured.

    .venv/bin/python bench/bench_trust.py            # 7 rounds x 3 layouts, ~2 min
    .venv/bin/python bench/bench_trust.py --rounds 3 --packets 200000

Root only; all traffic stays in the lab's namespaces. Not part of pytest.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import floodlab as F  # noqa: E402  (bench helper next to this file)

from op25b.kernel import rules  # noqa: E402
from op25b.kernel.ipsets import apply_sets  # noqa: E402
from op25b.kernel.names import TRUSTED_CONNMARK  # noqa: E402
from op25b.kernel.ruletext import TRUST, TRUSTED_RETURN, RuleConfig, render_rules  # noqa: E402
from op25b.kernel.setcontents import compute_sets  # noqa: E402
from op25b.lab.netns import sysctl_in  # noqa: E402
from op25b.lab.topology import lab_session  # noqa: E402
from op25b.policy.loader import load_policy  # noqa: E402

LAYOUTS = ("none", "old", "trust")
# For finding where the cost is (--layouts): the trust layout minus one of its parts.
DIAGNOSTIC = ("trust_nonft", "trust_inchain")
SUBSCRIBERS = " -m set --match-set op25b-subs4 src"
NOT_SUBSCRIBER = "-m set ! --match-set op25b-subs4 src -j RETURN"
OLD_RETURN = "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
ACK = 0x10


def old_layout(cfg: RuleConfig) -> str:
    """The v4 restore text of the layout before issue 9, derived from the current one."""
    text = render_rules(cfg, 4).replace(f"-A OP25B {TRUST}\n", "")
    text = text.replace(TRUSTED_RETURN, OLD_RETURN)
    return text.replace(SUBSCRIBERS, "")


def apply_layout(rtr: str, layout: str, cfg: RuleConfig, policy_path: Path) -> None:
    prefix = ["ip", "netns", "exec", rtr]
    rules.remove(prefix)
    if layout == "none":
        return
    sets = compute_sets(load_policy(str(policy_path)).policy, datetime.now(UTC))
    if layout == "trust":
        rules.install(cfg, sets, prefix)
        return
    apply_sets(sets, prefix)
    text = render_rules(cfg, 4)
    if layout == "old":
        text = old_layout(cfg)
    elif layout == "trust_inchain":  # the subscriber check after the trusted RETURN
        text = text.replace(SUBSCRIBERS, "")
        text = text.replace(TRUSTED_RETURN, f"{TRUSTED_RETURN}\n-A OP25B {NOT_SUBSCRIBER}")
    F.sh(rtr, ["iptables-restore", "--noflush"], text)


def seed_connections(rtr: str) -> None:
    """The stream's 256 connections, established and trusted, in rtr's conntrack table."""
    lo, hi = F.STREAM_SPORTS
    for sport in range(lo, hi + 1):
        F.sh(
            rtr,
            [
                *("conntrack", "-I", "-p", "tcp", "-s", F.RES_SRC, "-d", F.MTA),
                *("--sport", str(sport), "--dport", "25", "-r", F.MTA, "-q", F.RES_SRC),
                *("--reply-port-src", "25", "--reply-port-dst", str(sport)),
                *("--state", "ESTABLISHED", "-u", "SEEN_REPLY,ASSURED", "-t", "3600"),
                *("--mark", str(TRUSTED_CONNMARK)),
            ],
        )


def returned(rtr: str, layout: str) -> int:
    """Packets the layout's skip rule RETURNed in mangle (0 for ``none``)."""
    if layout == "none":
        return 0
    rule = OLD_RETURN if layout == "old" else TRUSTED_RETURN
    return F.counter(F.rule_counters(rtr, ("mangle",)), "-A OP25B", rule)


def one_round(lab_rtr: str, isp: str, res: str, cfg_path: Path, count: int) -> tuple[float, int]:
    before = F.counter(F.rule_counters(isp, ("raw",)), "bench-stream-sink")
    sent = F.Trafgen(res, cfg_path, count, timeout=60, cpu=0).wait()
    arrived = F.counter(F.rule_counters(isp, ("raw",)), "bench-stream-sink") - before
    return arrived / sent.seconds if sent.seconds > 0 else 0.0, arrived


POLICY = """\
version: 1
guarded_ports: [25]
action: drop
plans:
  residential: {exempt: false, prefixes: [100.64.0.0/16]}
provider_mtas:
  smarthost: {addresses: [203.0.113.25]}
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help=f"also: {DIAGNOSTIC}")
    args = ap.parse_args(argv)
    layouts = tuple(args.layouts.split(","))
    if not {"trust", "old", "none"} <= set(layouts) or not set(layouts) <= {*LAYOUTS, *DIAGNOSTIC}:
        ap.error(f"--layouts: none, old and trust, plus any of {DIAGNOSTIC}")
    rates: dict[str, list[float]] = {k: [] for k in layouts}
    with (
        tempfile.TemporaryDirectory(prefix="op25b-bench-trust-") as tmpdir,
        lab_session(prefix="op25bk") as lab,
    ):
        tmp = Path(tmpdir)
        policy = tmp / "policy.yaml"
        policy.write_text(POLICY)
        cfg = RuleConfig.from_policy(load_policy(str(policy)).policy)
        F.prepare_lab(lab.rtr, lab.isp, lab.net)
        # Lab router only: trafgen's ACKs carry no real sequence numbers.
        sysctl_in(lab.rtr, {"net.netfilter.nf_conntrack_tcp_be_liberal": "1"})
        stream = F.stream_config(
            tmp / "acks.cfg", F.mac_of(lab.rtr, "to-res"), F.mac_of(lab.res, "eth0"), ACK
        )
        seed_connections(lab.rtr)
        for r in range(args.rounds):
            for layout in layouts:
                apply_layout(lab.rtr, layout, cfg, policy)
                pps, arrived = one_round(lab.rtr, lab.isp, lab.res, stream, args.packets)
                skipped = returned(lab.rtr, layout)
                if layout != "none" and skipped < arrived:
                    raise F.BenchError(f"{layout}: only {skipped} of {arrived} took the RETURN")
                rates[layout].append(pps)
                print(f"round {r + 1} {layout:5s} {pps / 1000:8.1f}k pps", flush=True)
        rules.remove(["ip", "netns", "exec", lab.rtr])
    med = {k: statistics.median(v) for k, v in rates.items()}

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))

    print()
    print("| layout | median ACK pps (established, kernel only) |")
    print("|---|---:|")
    for k in layouts:
        print(f"| {k} | {med[k] / 1000:.1f}k |")
    print(f"\ntrust / old : {paired('trust', 'old'):.3f}x (median of per-round ratios)")
    print(f"trust / none: {paired('trust', 'none'):.3f}x")
    print(f"old / none  : {paired('old', 'none'):.3f}x")
    for k in layouts:
        if k in DIAGNOSTIC:
            print(f"trust / {k}: {paired('trust', k):.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
