"""``op25b replay`` at capture speed: the raw reader vs the old scapy replay vs tshark.

Run: ``.venv/bin/python bench/bench_replay.py [--syns N] [--rounds R] [--slice K]``
(needs tshark: ``DEBIAN_FRONTEND=noninteractive apt-get install -y tshark``).

Writes a seeded capture into a temp dir (removed afterwards): ``--syns`` TCP SYNs to
port 25 (default 1,000,000) from residential, mobile-free business, bot and
non-subscriber sources, v4 and v6, mixed with the traffic around them on a real edge:
handshakes and data of accepted connections (provider MTA, business plan), DNS,
HTTPS, submission on 587, ARP, 802.1Q and QinQ tags. Both as classic pcap and pcapng.

Then, in one run, alternating round by round (``--rounds``, medians, per-round ratios):

- ``new``: ``op25b replay policies/example.yaml CAPTURE --json`` (a process, policy load
  included) on the pcap, and ``new-ng`` on the pcapng;
- ``tshark``: ``tshark -r CAPTURE -Y 'tcp.flags.syn==1 && tcp.flags.ack==0 &&
  tcp.dstport==25' -T fields -e ip.src -e ip.dst`` on the same pcap (output to a file);
- ``old``: the scapy replay that ``op25b replay`` used before (tests/unit/scapyref.py
  feeding the same ``replay_records``) on the first ``--slice`` records only, once:
  it dissects every frame and would take many minutes on the whole capture, so it is
  compared by its per-record rate.

Times are wall seconds and CPU seconds of the child process (user + system); rates
are records per CPU second. Cross-checks: tshark's line count equals the SYNs written,
and the new and old replays agree exactly on the slice.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "policies" / "example.yaml"
NOW = "2026-01-01T00:00:00Z"
TSHARK_FILTER = "tcp.flags.syn==1 && tcp.flags.ack==0 && tcp.dstport==25"

MAC = bytes.fromhex("020000000001020000000002")
MTA4, MTA6 = bytes([203, 0, 113, 25]), bytes.fromhex("20010db8002500000000000000000025")
SYN_OPTS = bytes.fromhex("020405b40402080a000000010000000001030307")  # MSS SACK TS WS


def _v4(a: int, b: int, c: int, d: int) -> bytes:
    return bytes((a, b, c, d))


def _v6(prefix: str, rnd: random.Random) -> bytes:
    return bytes.fromhex(prefix) + rnd.randbytes(16 - len(prefix) // 2)


def _tcp(sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    opts = SYN_OPTS if flags & 0x02 else b""
    doff = (20 + len(opts)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, doff << 4, flags, 64240, 0, 0) + (
        opts + payload
    )


def _ip(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    if len(src) == 4:
        hdr = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0)
        return hdr + src + dst + payload
    return struct.pack("!IHBB", 0x60000000, len(payload), proto, 64) + src + dst + payload


def _ether(ip: bytes, tags: int) -> bytes:
    vlan = b"".join(
        struct.pack("!HH", 0x88A8 if i < tags - 1 else 0x8100, 100 + i) for i in range(tags)
    )
    return MAC + vlan + (b"\x08\x00" if ip[0] >> 4 == 4 else b"\x86\xdd") + ip


def frames(syns: int, seed: int) -> Iterator[bytes]:
    """The capture's Ethernet frames; exactly ``syns`` SYN-only TCP segments to port 25."""
    rnd = random.Random(seed)
    res4 = [_v4(100, 64, rnd.randrange(0, 200), rnd.randrange(1, 255)) for _ in range(3000)]
    res6 = [_v6("20010db80100", rnd) for _ in range(1000)]
    biz = [_v4(198, 51, 100, rnd.randrange(1, 255)) for _ in range(200)]
    bots = [_v4(100, 64, rnd.randrange(0, 200), rnd.randrange(1, 255)) for _ in range(20)]
    outside = [_v4(203, 0, 113, rnd.randrange(100, 200)) for _ in range(200)]
    mx4 = [_v4(192, 0, 2, rnd.randrange(1, 255)) for _ in range(500)]
    mx6 = [_v6("20010db800ff", rnd) for _ in range(200)]
    for _ in range(syns):
        tags = 0 if rnd.random() < 0.88 else (1 if rnd.random() < 0.8 else 2)
        r = rnd.random()
        if r < 0.2:
            src, dst = rnd.choice(res6), rnd.choice(mx6) if rnd.random() < 0.9 else MTA6
        elif r < 0.5:  # bots: a few sources, most of the SYNs
            src, dst = rnd.choice(bots), rnd.choice(mx4)
        elif r < 0.85:
            src, dst = rnd.choice(res4), rnd.choice(mx4) if rnd.random() < 0.8 else MTA4
        elif r < 0.95:
            src, dst = rnd.choice(biz), rnd.choice(mx4)
        else:
            src, dst = rnd.choice(outside), rnd.choice(mx4)
        sport = rnd.randrange(32768, 61000)
        yield _ether(_ip(src, dst, 6, _tcp(sport, 25, 0x02)), tags)
        if dst in (MTA4, MTA6) or src in biz or src in outside:
            # an accepted connection: the answer, then the client's ACK and data
            yield _ether(_ip(dst, src, 6, _tcp(25, sport, 0x12)), tags)
            yield _ether(_ip(src, dst, 6, _tcp(sport, 25, 0x10)), tags)
            yield _ether(_ip(src, dst, 6, _tcp(sport, 25, 0x18, b"EHLO x\r\n")), tags)
        x = rnd.random()
        if x < 0.3:
            yield _ether(_ip(src, rnd.choice(mx4) if len(src) == 4 else dst, 17, b"\0" * 40), 0)
        elif x < 0.5:
            yield _ether(_ip(src, dst, 6, _tcp(sport + 1, 443, 0x18, b"\x17" * 100)), tags)
        elif x < 0.55:
            yield _ether(_ip(src, dst, 6, _tcp(sport + 2, 587, 0x02)), tags)
        elif x < 0.57:
            yield MAC + b"\x08\x06" + b"\0" * 28  # ARP


def write_captures(pcap: BinaryIO, pcapng: BinaryIO, syns: int, seed: int) -> int:
    """Write both files; return the number of records."""
    pcap.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    shb = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
    idb = struct.pack("<IIHHI", 1, 20, 1, 0, 262144) + struct.pack("<I", 20)
    pcapng.write(shb + idb)
    t0 = 1_767_225_600_000_000  # 2026-01-01 in microseconds
    out1, out2 = bytearray(), bytearray()
    n = 0
    for n, frame in enumerate(frames(syns, seed), 1):
        ts = t0 + n * 37
        out1 += struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(frame), len(frame))
        out1 += frame
        pad = -len(frame) % 4
        blen = 32 + len(frame) + pad
        out2 += struct.pack(
            "<IIIIIII", 6, blen, 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)
        )
        out2 += frame + b"\0" * pad + struct.pack("<I", blen)
        if len(out1) > 1 << 22:
            pcap.write(out1)
            pcapng.write(out2)
            out1.clear()
            out2.clear()
    pcap.write(out1)
    pcapng.write(out2)
    return n


def slice_capture(src: Path, dst: Path, records: int) -> None:
    """The first ``records`` records of a classic pcap file."""
    data = src.read_bytes()
    off = 24
    for _ in range(records):
        (caplen,) = struct.unpack_from("<I", data, off + 8)
        off += 16 + caplen
    dst.write_bytes(data[:off])


def timed(argv: list[str], stdout: Any = subprocess.PIPE) -> tuple[float, float, str]:
    """(wall s, child CPU s, stdout) of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout or ""


def old_replay(capture: str) -> None:
    """The scapy path, as a process of its own: prints the replay JSON."""
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tests" / "unit"))
    from scapyref import scapy_records  # type: ignore[import-not-found]

    from op25b.cli import _parse_now
    from op25b.policy.compiled import compile_policy
    from op25b.policy.loader import load_policy
    from op25b.report.replay import as_json, replay_records

    compiled = compile_policy(load_policy(str(POLICY)).policy)
    res = replay_records(compiled, scapy_records(capture), _parse_now(NOW))
    print(json.dumps(as_json(res)))


def main(argv: list[str] | None = None) -> int:
    """Generate, time, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--syns", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slice", type=int, default=20_000, help="records for the scapy replay")
    ap.add_argument("--seed", type=int, default=25)
    ap.add_argument("--old-replay", metavar="CAPTURE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.old_replay:
        old_replay(args.old_replay)
        return 0
    tshark = shutil.which("tshark")
    if tshark is None:
        raise SystemExit("bench_replay: needs tshark (apt-get install -y tshark)")
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="op25b-bench-replay-") as tmp:
        cap, capng, part = Path(tmp, "c.pcap"), Path(tmp, "c.pcapng"), Path(tmp, "part.pcap")
        t0 = time.perf_counter()
        with cap.open("wb") as f1, capng.open("wb") as f2:
            records = write_captures(f1, f2, args.syns, args.seed)
        print(
            f"capture: {records:,} records, {args.syns:,} SYNs to :25, "
            f"{cap.stat().st_size / 1e6:.0f} MB pcap, {capng.stat().st_size / 1e6:.0f} MB pcapng "
            f"(written in {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        new = [py, "-m", "op25b", "replay", str(POLICY), "--now", NOW, "--json"]
        runs: dict[str, list[tuple[float, float]]] = {"new": [], "new-ng": [], "tshark": []}
        docs: dict[str, Any] = {}
        for rnd in range(args.rounds):
            for name, cmd in (
                ("new", [*new[:5], str(cap), *new[5:]]),
                ("new-ng", [*new[:5], str(capng), *new[5:]]),
                (
                    "tshark",
                    [
                        tshark,
                        "-n",
                        "-r",
                        str(cap),
                        "-Y",
                        TSHARK_FILTER,
                        "-T",
                        "fields",
                        "-e",
                        "ip.src",
                        "-e",
                        "ip.dst",
                    ],
                ),
            ):
                if name == "tshark":
                    with Path(tmp, "tshark.txt").open("w") as sink:
                        wall, cpu, _ = timed(cmd, stdout=sink)
                    docs[name] = Path(tmp, "tshark.txt").read_bytes().count(b"\n")
                else:
                    wall, cpu, out = timed(cmd)
                    docs[name] = json.loads(out)
                runs[name].append((wall, cpu))
                print(f"round {rnd + 1}: {name:<7} {wall:6.2f} s wall {cpu:6.2f} s CPU", flush=True)
        assert docs["tshark"] == args.syns, (docs["tshark"], args.syns)
        assert docs["new"] == docs["new-ng"], "pcap and pcapng replays differ"
        slice_capture(cap, part, args.slice)
        old_wall, old_cpu, old_out = timed([py, __file__, "--old-replay", str(part)])
        part_wall, part_cpu, part_out = timed([*new[:5], str(part), *new[5:]])
        assert json.loads(old_out) == json.loads(part_out), "old and new replay differ on the slice"

    def med(name: str, i: int) -> float:
        return statistics.median(r[i] for r in runs[name])

    ratio = statistics.median(t[1] / n[1] for n, t in zip(runs["new"], runs["tshark"], strict=True))
    print(f"\n{records:,} records ({args.syns:,} SYNs), medians of {args.rounds} rounds:\n")
    print("| replay | records | wall s | CPU s | records/CPU s |")
    print("|---|---:|---:|---:|---:|")
    for name in ("new", "new-ng", "tshark"):
        print(
            f"| {name} | {records:,} | {med(name, 0):.2f} | {med(name, 1):.2f} | "
            f"{records / med(name, 1) / 1e3:,.0f}k |"
        )
    print(
        f"| old (scapy), slice | {args.slice:,} | {old_wall:.2f} | {old_cpu:.2f} | "
        f"{args.slice / old_cpu / 1e3:,.1f}k |"
    )
    print(
        f"| new, same slice | {args.slice:,} | {part_wall:.2f} | {part_cpu:.2f} | "
        f"{args.slice / part_cpu / 1e3:,.0f}k |"
    )
    print(f"\ntshark CPU / new CPU (median of per-round ratios): {ratio:.2f}x")
    print(f"new vs old per record: {(old_cpu / args.slice) / (med('new', 1) / records):.0f}x")
    print(
        f"decided {docs['new']['decided']:,}, skipped {docs['new']['established_skipped']:,}; "
        f"tshark lines {docs['tshark']:,}"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
