"""Building blocks of bench_flood.py: pools, policies, trafgen floods and kernel counters.

Everything that sends traffic or reads counters does it inside the lab's namespaces
(``ip netns exec`` or ``/proc/<pid>/net`` of a process that lives in the router), with
documentation/shared addresses only:

- flood sources ("bots"): IPv4 /32s from the benchmark pool inside 100.80.0.0/12
  (every other address, so no two pool prefixes are adjacent and no table can merge
  them), sent from the lab's ``bot`` namespace with spoofed sources; rtr gets an
  on-link route back for the range, so reverse-path checks see a sane path;
- flood destinations: the 65 MX addresses of the lab's ``net`` host, where a raw-table
  DROP (which also counts) sinks them: no RST, no SYN-ACK, no socket work;
- the allowed stream: res's own address 100.64.0.10 to the provider MTA 203.0.113.25:25
  from source ports 29952-30207 (kept clear of the kernel's ephemeral range, where the
  latency probes' ports live), sunk and counted in ``isp``'s raw table.

trafgen is always bounded twice: ``-n COUNT`` and a wall-clock ``timeout``. It runs with
``--no-sock-mem --notouch-irq``: without them it would rewrite socket memory sysctls
and IRQ affinities (the latter are machine-wide).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from op25b.lab.netns import popen_in, run_in

FLOOD_NET_V4 = "100.80.0.0/12"
_FLOOD_BASE_V4 = (100 << 24) | (80 << 16)
_POOL_BASE_V6 = 0x20010DB8_80000000  # 2001:db8:8000::/33, clear of the lab's v6 ranges
RES_SRC = "100.64.0.10"
MTA = "203.0.113.25"
STREAM_SPORTS = (29952, 30207)  # high byte 0x75, low byte 0..255
MX_RANGE = (25, 89)  # 192.0.2.25 .. 192.0.2.89 on the lab's net host
TRAFGEN = ["trafgen", "--no-sock-mem", "--notouch-irq", "-P", "1", "-o", "eth0"]


class BenchError(RuntimeError):
    """A benchmark step failed (a tool did not start, a counter is missing)."""


# ------------------------------------------------------------------ pool and policies


def v4_text(addr: int) -> str:
    """Dotted quad of an int."""
    return ".".join(str((addr >> s) & 0xFF) for s in (24, 16, 8, 0))


def write_pool(path: Path, prefixes: int) -> int:
    """Write *prefixes* disjoint pool prefixes (half v4 /32, half v6 /64); returns v4 count.

    Every other address / every other /64: disjoint and never adjacent, so the matcher
    and ipset see as many entries as the file has lines.
    """
    n4 = prefixes // 2
    if n4 > (1 << 19):
        raise BenchError(f"at most {1 << 20} prefixes fit the benchmark pool")
    with path.open("w") as fh:
        fh.write("# bench_flood.py pool: disjoint /32s and /64s\n")
        fh.writelines(f"{v4_text(_FLOOD_BASE_V4 + 2 * i)}/32\n" for i in range(n4))
        for i in range(prefixes - n4):
            v = _POOL_BASE_V6 + 2 * i
            fh.write(f"2001:db8:{(v >> 16) & 0xFFFF:x}:{v & 0xFFFF:x}::/64\n")
    return n4


def pick_bots(n4: int, bots: int, seed: int) -> list[str]:
    """*bots* distinct v4 sources out of the pool's first *n4* /32s (seeded)."""
    rng = random.Random(seed)
    return [v4_text(_FLOOD_BASE_V4 + 2 * i) for i in sorted(rng.sample(range(n4), bots))]


_POLICY = """\
version: 1
guarded_ports: [25]
action: drop
plans:
  residential:
    exempt: false
    prefixes: [100.64.0.0/16, "2001:db8:100::/40"]
  bench-pool:
    exempt: false
    prefixes_file: {pool}
  business-static:
    exempt: true
    prefixes: [198.51.100.0/24, "2001:db8:b00::/40"]
provider_mtas:
  smarthost:
    addresses: [203.0.113.25, "2001:db8:25::25"]
daemon:
  queue: 0
  workers: {workers}
  on_daemon_down: static
  counters_interval: 3600
  # The bench routes rounds to its baselines by inserting jumps ahead of op25b's; the
  # rule watchdog would "repair" that mid-round, so it checks once an hour here.
  rules_check_interval: 3600
{extra}"""


def write_policy(
    path: Path, pool: Path, workers: int = 1, fast_path: bool = False, block_cache: int = 0
) -> Path:
    """A drop policy over the pool; the fast path / cache keys only when asked for.

    Leaving the keys out when off keeps the harness usable against a daemon whose
    policy loader predates them.
    """
    extra = ""
    if fast_path:
        extra += "  fast_path: true\n"
    if block_cache:
        extra += f"  block_cache_timeout: {block_cache}\n"
    path.write_text(_POLICY.format(pool=pool, workers=workers, extra=extra))
    return path


# ------------------------------------------------------------------ lab plumbing


def sh(ns: str, argv: Sequence[str], input_text: str | None = None, timeout: float = 60) -> str:
    """Run *argv* in *ns*; stdout, or BenchError with stderr."""
    res = run_in(ns, argv, input=input_text, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise BenchError(f"{' '.join(argv)} in {ns}: {res.stderr.strip()}")
    return str(res.stdout)


def mac_of(ns: str, ifname: str) -> str:
    """MAC address of *ifname* in *ns*."""
    data = json.loads(sh(ns, ["ip", "-j", "link", "show", "dev", ifname]))
    return str(data[0]["address"])


def prepare_lab(rtr: str, isp: str, net: str) -> None:
    """Routes back to the flood range, sinks that count, conntrack timeouts. Lab only."""
    sh(rtr, ["ip", "route", "add", FLOOD_NET_V4, "via", "100.64.0.66", "dev", "to-bot", "onlink"])
    # Accepted flood SYNs (the bare-accept baseline) never see a reply and would sit in
    # conntrack as SYN_SENT for 120 s; 5 s keeps the table small between variants.
    sh(rtr, ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_syn_sent=5"])
    lo, hi = STREAM_SPORTS
    # Counters on the way in (what rtr was offered) in rtr's raw table: raw runs before
    # conntrack and op25b's mangle rules, and no rule here has a target.
    sh(
        rtr,
        ["iptables-restore", "--noflush"],
        "*raw\n"
        "-A PREROUTING -i to-bot -p tcp --dport 25 -m comment --comment bench-flood-in\n"
        f"-A PREROUTING -i to-res -s {RES_SRC} -p tcp --dport 25 --sport {lo}:{hi}"
        " -m comment --comment bench-stream-in\n"
        "COMMIT\n",
    )
    sh(
        net,
        ["iptables-restore", "--noflush"],
        f"*raw\n-A PREROUTING -s {FLOOD_NET_V4} -p tcp --dport 25 -m comment --comment "
        "bench-flood-sink -j DROP\nCOMMIT\n",
    )
    sh(
        isp,
        ["iptables-restore", "--noflush"],
        f"*raw\n-A PREROUTING -s {RES_SRC} -p tcp --dport 25 --sport {lo}:{hi}"
        " -m comment --comment bench-stream-sink -j DROP\nCOMMIT\n",
    )


# ------------------------------------------------------------------ trafgen


def _syn_frame(
    dmac: str, smac: str, src: str, dst: Sequence[str], sport: Sequence[str], flags: int = 0x02
) -> str:
    """One trafgen packet: Ethernet + IPv4 + TCP (a SYN unless ``flags`` says otherwise)."""

    def hexbytes(mac: str) -> str:
        return ",".join(f"0x{b}" for b in mac.split(":"))

    srcb = ",".join(src.split("."))
    return (
        "{ " + hexbytes(dmac) + ", " + hexbytes(smac) + ", 0x08,0x00,\n"
        "  0x45,0x00, 0x00,0x28, drnd(2), 0x40,0x00, 64, 6, csumip(14, 33),\n"
        f"  {srcb}, {', '.join(dst)},\n"
        f"  {', '.join(sport)}, 0x00,25, drnd(4), 0,0,0,0, 0x50,{flags:#04x}, 0xfa,0xf0,\n"
        "  csumtcp(14, 34), 0,0 }\n"
    )


def flood_config(path: Path, dmac: str, smac: str, bots: Iterable[str]) -> Path:
    """One packet template per bot (trafgen sends them round robin): every bot to every MX."""
    lo, hi = MX_RANGE
    dst = ["192", "0", "2", f"dinc({lo}, {hi})"]
    path.write_text("".join(_syn_frame(dmac, smac, b, dst, ["drnd(2)"]) for b in bots))
    return path


def stream_config(path: Path, dmac: str, smac: str, flags: int = 0x02) -> Path:
    """The allowed stream: res -> provider MTA, 256 cycling source ports (SYNs by default)."""
    dst = MTA.split(".")
    path.write_text(_syn_frame(dmac, smac, RES_SRC, dst, ["0x75", "dinc(0, 255)"], flags))
    return path


@dataclass(frozen=True)
class Sent:
    """What trafgen reports at exit: packets and the seconds its send loop ran."""

    packets: int
    seconds: float

    @property
    def pps(self) -> float:
        """Packets per second of the send loop."""
        return self.packets / self.seconds if self.seconds > 0 else 0.0


_CPU_LINE = re.compile(r"(\d+) sec, (\d+) usec on CPU\d+ \((\d+) packets\)")


def rx_packets(ns: str, ifname: str) -> int:
    """Packets *ifname* in *ns* received: what rtr was offered, counted before any table
    (op25b's verdict cache drops in raw PREROUTING, ahead of rule counters there)."""
    return int(sh(ns, ["cat", f"/sys/class/net/{ifname}/statistics/rx_packets"]).strip())


def parse_trafgen(text: str) -> Sent:
    """Sum the per-CPU lines; the loop time is the longest one."""
    found = _CPU_LINE.findall(text)
    if not found:
        raise BenchError(f"no statistics in trafgen output:\n{text[-500:]}")
    return Sent(sum(int(p) for _, _, p in found), max(int(s) + int(u) / 1e6 for s, u, _ in found))


class Trafgen:
    """One bounded trafgen run in a namespace (``-n`` packets, ``timeout`` seconds)."""

    def __init__(
        self, ns: str, cfg: Path, count: int, timeout: float, cpu: int | None, rate: int = 0
    ) -> None:
        argv = [
            "timeout",
            "-k",
            "2",
            str(int(timeout)),
            *(["taskset", "-c", str(cpu)] if cpu is not None else []),
        ]
        argv += [*TRAFGEN, "-i", str(cfg), "-n", str(count)]
        if rate:
            argv += ["-b", f"{rate}pps"]
        self.timeout = timeout
        self.proc = popen_in(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait(self) -> Sent:
        """Wait (bounded) and parse its statistics."""
        try:
            out, _ = self.proc.communicate(timeout=self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return parse_trafgen(out)


# ------------------------------------------------------------------ counters


def rule_counters(ns: str, tables: Sequence[str] = ("raw", "mangle")) -> dict[str, int]:
    """Packet counters per rule, keyed ``table:rule text`` (from ``iptables-save -c``)."""
    out: dict[str, int] = {}
    for table in tables:
        for line in sh(ns, ["iptables-save", "-c", "-t", table]).splitlines():
            m = re.match(r"^\[(\d+):\d+\] (-A .*)$", line)
            if m:
                out[f"{table}:{m.group(2)}"] = out.get(f"{table}:{m.group(2)}", 0) + int(m.group(1))
    return out


def counter(counters: dict[str, int], *needles: str) -> int:
    """Sum of the counters of every rule whose text contains all *needles*."""
    return sum(v for k, v in counters.items() if all(n in k for n in needles))


@dataclass(frozen=True)
class QueueStats:
    """One line of /proc/net/netfilter/nfnetlink_queue."""

    queue: int
    waiting: int
    queue_dropped: int
    user_dropped: int
    id_sequence: int

    @property
    def verdict_base(self) -> int:
        """Packets given to the socket and not lost there (id_sequence counts both)."""
        return self.id_sequence - self.user_dropped - self.waiting


def queue_stats(pid: int) -> dict[int, QueueStats]:
    """The queues of *pid*'s network namespace (read in-process: no fork, exact timing)."""
    try:
        text = Path(f"/proc/{pid}/net/netfilter/nfnetlink_queue").read_text()
    except FileNotFoundError:
        return {}
    out: dict[int, QueueStats] = {}
    for line in text.splitlines():
        f = [int(x) for x in line.split()]
        if len(f) >= 8:
            out[f[0]] = QueueStats(f[0], f[2], f[5], f[6], f[7])
    return out


def conntrack_stats(ns: str) -> dict[str, int]:
    """Sums of ``conntrack -S`` counters in *ns* (drop, early_drop, insert_failed...)."""
    totals: dict[str, int] = {}
    for line in sh(ns, ["conntrack", "-S"]).splitlines():
        for key, val in re.findall(r"(\w+)=(\d+)", line):
            if key != "cpu":
                totals[key] = totals.get(key, 0) + int(val)
    return totals


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of *pid* in MB (empty if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0]) / 1024
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid*, all threads (0.0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of *pid* (the daemon's forked workers)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return out


def pin(pid: int, cpu: int | None) -> None:
    """Pin every thread of *pid* (one of ours) to *cpu*; None allows all CPUs again."""
    cpus = str(cpu) if cpu is not None else "0-1023"
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True, check=False)


def ipset_entries(ns: str, name: str) -> tuple[int, int]:
    """(entries, packets counted) of set *name* in *ns*; (-1, 0) when it does not exist."""
    res = run_in(ns, ["ipset", "save", name], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return -1, 0
    entries = packets = 0
    for line in res.stdout.splitlines():
        if line.startswith("add "):
            entries += 1
            m = re.search(r" packets (\d+)", line)
            packets += int(m.group(1)) if m else 0
    return entries, packets
