"""The verdict loop's longest turn while slow things happen around it (issue: nothing
blocking on the verdict path).

Runs the real daemon in its own namespace lab with a steady stream of blocked SYNs
(a raw-socket sender in the bot namespace, bounded in rate and time) and reads the
daemon's own ``max_loop_ms`` (the longest the loop was away from the queue, reported in
every counters line) under four conditions, side by side in one run:

- ``baseline``: nothing else going on;
- ``cache-100k``: the verdict cache holds 100,000 sources (refilled after every
  rotation), so each read and rotation parses a 100k-entry ``ipset save``;
- ``tcp-syslog-stuck``: syslog goes to a TCP collector that accepts and never reads;
- ``slow-disk``: every fsync of the abuse log takes 300 ms (an LD_PRELOAD shim);

Usage (root): .venv/bin/python bench/bench_gaps.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from op25b.lab import topology as L  # noqa: E402
from op25b.lab.netns import popen_in, run_in  # noqa: E402
from op25b.lab.processes import DaemonProcess, SyslogReceiver, sd_params  # noqa: E402

POLICY = """\
version: 1
guarded_ports: [25]
action: drop
plans:
  residential: {{exempt: false, prefixes: [100.64.0.0/16, 100.80.0.0/12]}}
provider_mtas:
  smarthost: {{addresses: [203.0.113.25]}}
daemon:
  block_cache_timeout: {cache}
"""

# A bounded SYN sender: RATE packets/s from random 100.64.x.y sources for SECONDS.
SENDER = r"""
import random, socket, struct, sys, time
rate, seconds, dst = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
d = socket.inet_aton(dst)
end = time.monotonic() + seconds
sent = 0
while time.monotonic() < end:
    t = time.monotonic()
    for _ in range(max(1, rate // 100)):
        src = bytes([100, 64, random.randrange(256), random.randrange(1, 255)])
        tcp = struct.pack("!HHIIBBHHH", random.randrange(1024, 65535), 25, 1, 0, 80, 2, 65535, 0, 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, src, d)
        s.sendto(ip + tcp, (dst, 0))
        sent += 1
    time.sleep(max(0.0, 0.01 - (time.monotonic() - t)))
print(sent)
"""

STUCK_COLLECTOR = r"""
import socket, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(4)
conns = []
end = time.monotonic() + float(sys.argv[2])
srv.settimeout(0.5)
while time.monotonic() < end:
    try:
        c, _ = srv.accept()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conns.append(c)  # accepted, never read
    except OSError:
        pass
"""

SLOW_FSYNC_C = r"""
#define _GNU_SOURCE
#include <unistd.h>
#include <dlfcn.h>
static int (*real_fsync)(int);
int fsync(int fd) {
    if (!real_fsync) real_fsync = dlsym(RTLD_NEXT, "fsync");
    usleep(300000);
    return real_fsync(fd);
}
"""


def build_shim(tmp: Path) -> Path:
    src = tmp / "slowfsync.c"
    src.write_text(SLOW_FSYNC_C)
    out = tmp / "slowfsync.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(out), str(src), "-ldl"], check=True)
    return out


def refill_cache(lab: L.Lab, stop: threading.Event, entries: int) -> None:
    """Keep ~``entries`` sources in op25b-block4 (refilled when a rotation empties it)."""
    lines = "".join(
        f"add op25b-block4 100.{80 + (i >> 16)}.{(i >> 8) & 255}.{i & 255} timeout 600\n"
        for i in range(entries)
    )
    while not stop.is_set():
        out = run_in(lab.rtr, ["ipset", "list", "-t", "op25b-block4"], capture_output=True,
                     text=True, check=False).stdout
        have = next((int(x.split(":")[1]) for x in out.splitlines()
                     if x.startswith("Number of entries")), entries)
        if have < entries // 2:
            run_in(lab.rtr, ["ipset", "restore", "-exist"], input=lines, text=True, check=False)
        stop.wait(0.5)


def scenario(lab: L.Lab, tmp: Path, name: str, seconds: float, rate: int) -> dict[str, object]:
    policy = tmp / f"{name}.yaml"
    policy.write_text(POLICY.format(cache=2 if name == "cache-100k" else 0))
    syslog = SyslogReceiver()
    target = syslog.path
    env: dict[str, str] = {}
    helpers: list[subprocess.Popen[str]] = []
    if name == "tcp-syslog-stuck":
        helpers.append(popen_in(lab.rtr, [sys.executable, "-c", STUCK_COLLECTOR, "5514",
                                          str(seconds + 30)], text=True))
        time.sleep(0.3)  # the collector's listen() before the daemon connects
        target = "tcp://127.0.0.1:5514"
    if name == "slow-disk":
        env["LD_PRELOAD"] = str(build_shim(tmp))
    daemon = DaemonProcess(lab.rtr, policy, ["--abuse-log", str(tmp / f"{name}.jsonl"),
                                            "--syslog", target, "--counters-interval", "1",
                                            "--abuse-window", "1"], env=env)
    stop = threading.Event()
    refill = None
    try:
        daemon.wait_started()
        if name == "cache-100k":
            refill = threading.Thread(target=refill_cache, args=(lab, stop, 100_000))
            refill.start()
        sender = popen_in(lab.bot, [sys.executable, "-c", SENDER, str(rate), str(seconds),
                                    L.NET_MX_V4], stdout=subprocess.PIPE, text=True)
        sent = int((sender.communicate(timeout=seconds + 60)[0] or "0").strip() or 0)
    finally:
        stop.set()
        if refill is not None:
            refill.join()
        daemon.stop()
        for h in helpers:
            h.kill()
            h.wait()
    # The counters lines went to syslog (unix receiver) or, when syslog is stuck, only
    # the daemon's stderr mirror has them.
    lines = syslog.lines.snapshot() if name != "tcp-syslog-stuck" else daemon.lines.snapshot()
    syslog.close()
    gaps = [float(sd_params(m)["max_loop_ms"]) for m in lines if 'max_loop_ms="' in m]
    if not gaps:
        gaps = [float(x.split("max_loop_ms=")[1].split()[0]) for x in lines if "max_loop_ms=" in x]
    return {"scenario": name, "sent": sent, "lines": len(gaps),
            "max_loop_ms": max(gaps) if gaps else None,
            "median_loop_ms": sorted(gaps)[len(gaps) // 2] if gaps else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=int, default=2000, help="blocked SYNs per second")
    args = ap.parse_args()
    if shutil.which("cc") is None:
        print("bench_gaps: needs a C compiler for the slow-disk shim", file=sys.stderr)
        return 1
    results = []
    with tempfile.TemporaryDirectory(prefix="op25b-gaps-") as d, L.lab_session("op25bgap") as lab:
        for name in ("baseline", "cache-100k", "tcp-syslog-stuck", "slow-disk"):
            results.append(scenario(lab, Path(d), name, args.seconds, args.rate))
            print(json.dumps(results[-1]), flush=True)
    print("\n| condition | SYNs sent | counters lines | longest loop turn (ms) | median (ms) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['scenario']} | {r['sent']} | {r['lines']} | {r['max_loop_ms']} |"
              f" {r['median_loop_ms']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
