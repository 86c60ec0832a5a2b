"""Micro-benchmark of ``op25b.packet.parse`` against scapy dissection.

Run: ``.venv/bin/python bench/bench_parse.py [--number N] [--repeat R] [--json]``

Four cases that the daemon sees: an IPv4 SYN, an IPv4 SYN with IP and TCP options,
an IPv6 SYN, and an IPv6 SYN behind two extension headers (hop-by-hop + destination
options). Each is timed with ``timeit`` (best of R repeats of N calls, which is the
least noisy figure on a shared VM), next to scapy's ``IP(raw)``/``IPv6(raw)`` on the
same bytes, and next to two floors that explain where the time goes: one
``struct.unpack_from`` and one ``Packet(...)`` construction. The packets are built
with scapy when it is installed, else taken from the literal golden vectors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from op25b.packet import Packet, parse  # noqa: E402


def cases() -> dict[str, bytes]:
    """The benchmark packets, by name."""
    try:
        from scapy.layers.inet import IP, TCP, IPOption_NOP, IPOption_RR
        from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
        from vectors import LITERAL_VECTORS

        lit = {v.name: v.data for v in LITERAL_VECTORS}
        return {
            "v4 SYN": lit["lit_v4_syn"],
            "v4 SYN + options": lit["lit_v4_ip_and_tcp_options_syn"],
            "v6 SYN": lit["lit_v6_syn"],
            "v6 SYN + 2 ext hdrs": lit["lit_v6_hbh_dstopt_syn_ece_cwr"],
        }
    s4, d4, s6, d6 = "100.64.0.10", "192.0.2.25", "2001:db8:100::10", "2001:db8::25"
    syn = TCP(sport=40000, dport=25, flags="S")
    opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
    ip_opts = [IPOption_RR(routers=["0.0.0.0"] * 2), IPOption_NOP()]
    return {
        "v4 SYN": bytes(IP(src=s4, dst=d4) / syn),
        "v4 SYN + options": bytes(
            IP(src=s4, dst=d4, options=ip_opts)
            / TCP(sport=40000, dport=25, flags="S", options=opts)
        ),
        "v6 SYN": bytes(IPv6(src=s6, dst=d6) / syn),
        "v6 SYN + 2 ext hdrs": bytes(
            IPv6(src=s6, dst=d6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / syn
        ),
    }


def best_ns(stmt: Any, number: int, repeat: int) -> float:
    """Best-of-``repeat`` time per call in nanoseconds."""
    # CPU time, not wall time: the lab VM is shared, and preemption is not parse cost.
    times = timeit.repeat(stmt, number=number, repeat=repeat, timer=time.process_time)
    return min(times) / number * 1e9


def main(argv: list[str] | None = None) -> int:
    """Time every case; print a table (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=200_000, help="calls per repeat (op25b)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scapy-number", type=int, default=2_000, help="calls per repeat (scapy)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    try:
        from scapy.layers.inet import IP
        from scapy.layers.inet6 import IPv6
    except ImportError:
        IP = IPv6 = None  # noqa: N806 - scapy class names

    import struct

    st = struct.Struct("!HH8xBB")
    sample = cases()["v4 SYN"]
    floors = {
        "struct unpack_from (floor)": best_ns(
            lambda: st.unpack_from(sample, 20), args.number, args.repeat
        ),
        "Packet(...) construction (floor)": best_ns(
            lambda: Packet(4, 1, 2, 3, 25, 2), args.number, args.repeat
        ),
    }

    rows: list[dict[str, Any]] = []
    for name, data in cases().items():
        parse(data)  # fail loudly before timing if a case does not parse
        ours = best_ns(lambda d=data: parse(d), args.number, args.repeat)  # type: ignore[misc]
        row: dict[str, Any] = {
            "case": name,
            "bytes": len(data),
            "op25b_ns": round(ours, 1),
            "op25b_per_s": round(1e9 / ours),
        }
        if IP is not None:
            cls = IP if data[0] >> 4 == 4 else IPv6
            theirs = best_ns(lambda d=data, c=cls: c(d), args.scapy_number, args.repeat)  # type: ignore[misc]
            row.update(scapy_ns=round(theirs, 1), ratio=round(theirs / ours, 1))
        rows.append(row)

    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "floors_ns": floors, "cases": rows}))
        return 0
    print(f"python {sys.version.split()[0]}; best of {args.repeat}")
    for what, ns in floors.items():
        print(f"  {what:<34} {ns:8.1f} ns")
    print(
        f"{'case':<22}{'bytes':>6}{'parse ns':>10}{'parses/s':>12}{'scapy ns':>11}{'scapy/ours':>11}"
    )
    for r in rows:
        sc = f"{r['scapy_ns']:>11.0f}{r['ratio']:>10.0f}x" if "scapy_ns" in r else ""
        print(f"{r['case']:<22}{r['bytes']:>6}{r['op25b_ns']:>10.1f}{r['op25b_per_s']:>12,}{sc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
