"""Benchmark ``op25b diff`` on two 1,000,000-prefix policies that differ in a few places.

Writes an ISP-like policy (bench_matcher's seeded prefixes, half v4 / half v6, in
three pool files of three plans) and a NEW copy with a review's three edits: one v4
/24 moved from residential into the exempt business plan, one exemption added, one
provider MTA added. Then, side by side in this one run:

- ``op25b diff OLD NEW`` end to end in a fresh process: wall seconds and peak RSS
  (``wait4`` rusage), and that it found the edits;
- the same steps in-process, timed apart: load both, compile both, the diff itself
  with the walk's skipping of identical stretches, and with it disabled (the ratio is
  what the skip buys); and NEW with ``action: reject`` (every blocked source
  changes: the walk's worst case).

    .venv/bin/python bench/bench_diff.py              # 1M prefixes
    .venv/bin/python bench/bench_diff.py --size 100000

Not part of pytest. Nothing here touches the network.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_matcher import isp_prefixes

from op25b.policy import diff as diffmod
from op25b.policy import diffruns
from op25b.policy.addr import format_address
from op25b.policy.compiled import compile_policy
from op25b.policy.diff import diff_policies
from op25b.policy.loader import load_policy

NOW = "2026-01-01T00:00:00Z"
PLANS = ("residential", "mobile", "business-static")
POLICY = """\
version: 1
guarded_ports: [25]
action: {action}
plans:
  residential:
    exempt: false
    prefixes_file: {dir}/residential.txt
  mobile:
    exempt: false
    prefixes_file: {dir}/mobile.txt
  business-static:
    exempt: true
    prefixes_file: {dir}/business-static.txt
provider_mtas:
  smarthost:
    addresses: [203.0.113.25, "2001:db8:25::25"]
{extra_mta}exemptions:
  - prefix: 100.64.7.7/32
    ticket: ABUSE-1234
    expires: 2027-01-31
{extra_exemption}"""


def write_policies(root: Path, n: int) -> tuple[Path, Path, Path, str]:
    """OLD, NEW (three edits), NEW with action reject; and the moved /24 as text."""
    v4, v6 = isp_prefixes(n, seed=1)
    lines = [f"{format_address(4, a)}/{ln}" for a, ln in v4]
    lines += [f"{format_address(6, a)}/{ln}" for a, ln in v6]
    pools = {name: lines[k::3] for k, name in enumerate(PLANS)}
    v4_24s = (p for p in pools["residential"] if "." in p and p.endswith("/24"))
    moved, exempted = next(v4_24s), next(v4_24s)
    host = exempted.replace(".0/24", ".9/32")
    for variant, plans in (
        ("old", pools),
        ("new", {**pools, "residential": [p for p in pools["residential"] if p != moved]}),
    ):
        d = root / variant
        d.mkdir()
        for name, prefixes in plans.items():
            extra = [moved] if variant == "new" and name == "business-static" else []
            (d / f"{name}.txt").write_text("\n".join(prefixes + extra) + "\n")
    old = root / "old.yaml"
    old.write_text(POLICY.format(action="drop", dir="old", extra_mta="", extra_exemption=""))
    # The review's three edits: the moved /24 (pool files above), an MTA, an exemption.
    edits = {
        "extra_mta": "  relay2:\n    addresses: [203.0.113.26]\n",
        "extra_exemption": f"  - prefix: {host}\n    ticket: ABUSE-2001\n"
        "    expires: 2027-01-31\n",
    }
    new = root / "new.yaml"
    new.write_text(POLICY.format(action="drop", dir="new", **edits))
    reject = root / "reject.yaml"
    reject.write_text(POLICY.format(action="reject", dir="old", extra_mta="", extra_exemption=""))
    return old, new, reject, moved


def end_to_end(root: Path, old: Path, new: Path) -> dict[str, float]:
    """``op25b diff`` as a user runs it, in a fresh process."""
    argv = [sys.executable, "-m", "op25b", "diff", old.name, new.name, "--now", NOW, "--json"]
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=root, stdout=out_f, stderr=err_f)
        # wait4, not wait(): the child's own peak RSS, not the max over all children
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if proc.returncode != 1:
        raise SystemExit(f"op25b diff exited {proc.returncode}: {err.decode()[-500:]}")
    doc = json.loads(out)
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "changes": len(doc["changes"])}


def in_process(old: Path, new: Path, reject: Path) -> dict[str, float]:
    now = datetime.fromisoformat(NOW.replace("Z", "+00:00"))
    t = time.perf_counter()
    p_old, p_new, p_rej = (load_policy(p, now=now).policy for p in (old, new, reject))
    t_load = (time.perf_counter() - t) / 3
    t = time.perf_counter()
    c_old, c_new, c_rej = (compile_policy(p) for p in (p_old, p_new, p_rej))
    t_compile = (time.perf_counter() - t) / 3
    t = time.perf_counter()
    d = diff_policies(c_old, c_new, now)
    t_diff = time.perf_counter() - t
    chunk = diffruns.CHUNK
    diffruns.CHUNK = 1 << 62  # disables the skip: every run is stepped in Python
    try:
        t = time.perf_counter()
        d_noskip = diff_policies(c_old, c_new, now)
        t_noskip = time.perf_counter() - t
    finally:
        diffruns.CHUNK = chunk
    def key(c: diffmod.Change) -> tuple[object, ...]:
        spans = tuple(c.spans) if c.by_outcome() == [] else tuple(c.by_outcome())
        return (c.destinations, c.ports, c.befores, c.afters, c.size, spans)

    assert [key(c) for c in d_noskip.changes] == [key(c) for c in d.changes]
    t = time.perf_counter()
    d_rej = diff_policies(c_old, c_rej, now)
    t_rej = time.perf_counter() - t
    return {
        "load_s_each": t_load,
        "compile_s_each": t_compile,
        "diff_s": t_diff,
        "diff_noskip_s": t_noskip,
        "reject_diff_s": t_rej,
        "reject_changed_ranges": sum(len(c.spans) for c in d_rej.changes),
        "intervals_v4": len(list(c_old.plan_table(4).segments())),
        "intervals_v6": len(list(c_old.plan_table(6).segments())),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1_000_000, help="prefixes per policy")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="op25b-bench-diff-") as tmp:
        root = Path(tmp)
        old, new, reject, moved = write_policies(root, args.size)
        print(f"{args.size:,} prefixes per policy; moved {moved}", flush=True)
        e2e = end_to_end(root, old, new)
        print(
            f"op25b diff end to end: {e2e['wall_s']:.1f} s wall, "
            f"peak RSS {e2e['peak_rss_mb']:.0f} MB, {e2e['changes']:.0f} changes",
            flush=True,
        )
        r = in_process(old, new, reject)
        print(
            f"in process: load {r['load_s_each']:.2f} s and compile {r['compile_s_each']:.2f} s "
            f"per policy; intervals v4 {r['intervals_v4']:,.0f}, v6 {r['intervals_v6']:,.0f}"
        )
        print(
            f"diff (three edits): {r['diff_s']:.2f} s with the skip, "
            f"{r['diff_noskip_s']:.2f} s without ({r['diff_noskip_s'] / r['diff_s']:.1f}x)"
        )
        print(
            f"diff (action drop -> reject): {r['reject_diff_s']:.2f} s, "
            f"{r['reject_changed_ranges']:,.0f} changed ranges; "
            f"peak RSS of the in-process run {r['peak_rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
