"""The fleet's inputs for docs/scale.md: what one router sends, what one collector takes.

Run (root): ``.venv/bin/python bench/bench_fleet.py [rates] [rsyslog] [prometheus] [--json]``

All traffic stays in a fleet lab the run creates (documentation prefixes only) and is
bounded in count; the lab is always torn down.

``rates``
    One edge router (daemon + rsyslog agent, the demo's path to the collector) with
    B = 1, 10, 100, 1000 bot addresses behind it, each making 3 blocked attempts in
    one abuse window (5 s here). Counted at the collector: syslog messages by kind
    (NOTICE per newly blocked source, counters lines, abuse records) and their bytes;
    the router's /metrics: series and bytes per scrape. Per-router rates at the
    defaults (300 s window, 60 s counters) follow from these per-window counts.
``rsyslog``
    The collector's rsyslogd (the demo's config: imtcp, one dynafile per host, abuse
    records as JSON lines) fed by N = 10, 100, 1000 simulated routers: one TCP
    connection each, replaying real op25b messages (a counters line, abuse records)
    octet-counted, 200k messages in all. Messages written per second of wall time and
    per rsyslogd CPU second.
``prometheus``
    Prometheus scraping N = 100, 1000 simulated routers every second: one process in
    the collector serving the body of a real op25b scrape on N ports. Over 20 s:
    samples ingested per second, head series, Prometheus CPU per second and RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from op25b.lab import fleetplan as FP
from op25b.lab.fleet import fleet_session
from op25b.lab.netns import child_env, own_hostname, popen_in, run_in, stop_process
from op25b.lab.processes import DaemonProcess
from op25b.lab.prometheus import METRICS_PORT, Prometheus, scrape_config
from op25b.lab.rsyslog import (
    AGENT_PORT,
    COLLECTOR_PORT,
    Rsyslogd,
    agent_conf,
    await_file,
    collector_conf,
)
from op25b.lab.tools import Probe, probe_many

WINDOW = 5
BOT_NET = "100.64.128.0/20"  # extra bot addresses on r1bot (inside the residential /10)
POLICY = f"""\
version: 1
guarded_ports: [25]
action: reject
plans:
  residential: {{exempt: false, prefixes: [100.64.0.0/10]}}
provider_mtas:
  smarthost: {{addresses: [{FP.ISP_MTA_V4}]}}
daemon:
  syslog: {{address: "tcp://127.0.0.1:{AGENT_PORT}"}}
  abuse_window: {WINDOW}
  counters_interval: {WINDOW}
  metrics: {{listen: "0.0.0.0:{METRICS_PORT}", interval: 1}}
"""
_FETCH = (
    "import sys, urllib.request; "
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())"
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bot_addresses(n: int) -> list[str]:
    return [f"100.64.{128 + i // 250}.{1 + i % 250}" for i in range(n)]


# --- rates ----------------------------------------------------------------------------------


def rates(work: Path, populations: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"window_s": WINDOW, "points": []}
    work.mkdir(parents=True)
    with fleet_session(1, "op25bbench") as fleet:
        site = fleet.sites[0]
        bot_ns, rtr = fleet.ns("r1bot"), fleet.ns("r1")
        addrs = bot_addresses(max(populations))
        batch = "".join(f"addr add {a}/32 dev eth0\n" for a in addrs)
        run_in(bot_ns, ["ip", "-batch", "-"], input=batch, text=True, check=True)
        run_in(rtr, ["ip", "route", "add", BOT_NET, "dev", "to-bot"], check=True)
        run_in(fleet.ns("core"), ["ip", "route", "add", BOT_NET, "via", site.uplink_v4], check=True)
        col_dir = work / "collector"
        colw = work / "col-rsyslog"
        conf = collector_conf(colw, col_dir, FP.COLLECTOR_V4)
        with Rsyslogd(fleet.ns("col"), colw, conf, COLLECTOR_PORT):
            for n in populations:
                home = work / f"r1-{n}"
                home.mkdir()
                abuse = home / "blocked.jsonl"
                abuse.touch()
                policy = home / "policy.yaml"
                policy.write_text(POLICY)
                aconf = agent_conf(home / "rs", f"b{n}", home / "own.log", abuse, FP.COLLECTOR_V4)
                with Rsyslogd(rtr, home / "rs", aconf, AGENT_PORT):
                    d = DaemonProcess(
                        rtr, policy, ["--abuse-log", str(abuse)], wrapper=own_hostname(f"b{n}")
                    )
                    d.wait_started()
                    probes = [
                        Probe(a, FP.NET_MX_EXTRA_V4[i % 60], 25)
                        for a in addrs[:n]
                        for i in range(3)
                    ]
                    got = [
                        r
                        for i in range(0, len(probes), 500)  # argv stays < 128 KiB
                        for r in probe_many(bot_ns, probes[i : i + 500], timeout=5.0)
                    ]
                    outcomes: dict[str, int] = {}
                    for r in got:
                        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
                    body = run_in(
                        fleet.ns("col"),
                        [
                            sys.executable,
                            "-c",
                            _FETCH,
                            f"http://{site.uplink_v4}:{METRICS_PORT}/metrics",
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                    d.stop()
                    records = abuse.read_text().splitlines()
                    want = len(records)
                    await_file(
                        col_dir / "abuse" / f"b{n}.jsonl",
                        lambda lines: len(lines) >= want,  # noqa: B023 - used at once
                        60,
                        "records",
                    )
                    lines = await_file(
                        col_dir / f"b{n}.log",
                        lambda ls: any('final="1"' in x for x in ls),
                        60,
                        "final",
                    )
                (work / "metrics.txt").write_text(body)
                kinds: dict[str, list[int]] = {}
                for line in lines:
                    kinds.setdefault(line.split()[4], []).append(len(line) + 1)
                kinds["abuse_record"] = [len(r) + 1 for r in records]
                series = [x for x in body.splitlines() if x and not x.startswith("#")]
                out["points"].append(
                    {
                        "bots": n,
                        "attempts": len(probes),
                        "outcomes": outcomes,
                        "messages": {k: len(v) for k, v in kinds.items()},
                        "bytes": {k: sum(v) for k, v in kinds.items()},
                        "metrics_series": len(series),
                        "metrics_bytes": len(body),
                    }
                )
                print(json.dumps(out["points"][-1]), flush=True)
    return out


# --- rsyslog ----------------------------------------------------------------------------------


def sample_messages(work: Path) -> list[bytes]:
    """Real op25b messages in RFC 5424 (a counters line, a NOTICE, abuse records)."""
    from op25b.daemon.countersline import format_counters
    from op25b.daemon.syslogformat import SD_ID, Severity, format_rfc5424
    from op25b.dataplane.counters import Counters

    msg, params = format_counters(Counters().snapshot(60.0), {})
    record = json.dumps(
        {
            "type": "blocked_source",
            "version": 1,
            "router": "HOST",
            "source": "100.64.1.66",
            "family": 4,
            "plan": "residential",
            "action": "reject",
            "rule": "/etc/op25b/policy.yaml:9:7",
            "window_start": "2026-11-23T18:00:00.000Z",
            "window_end": "2026-11-23T18:05:00.000Z",
            "first_seen": "2026-11-23T18:00:03.412Z",
            "last_seen": "2026-11-23T18:00:09.901Z",
            "packets": 120,
            "distinct_destinations": 40,
            "destinations_sample": [f"192.0.2.{n}" for n in range(25, 41)],
            "ports": {"25": 120},
            "distinct_destinations_capped": False,
            "kernel_packets": 0,
            "overflow": False,
            "overflow_sources": 0,
            "overflow_sources_capped": False,
        }
    )
    common = {"facility": 21, "timestamp": time.time(), "hostname": "HOST", "procid": "4242"}
    return [
        format_rfc5424(
            severity=Severity.INFO,
            app_name="op25b",
            msgid="counters",
            structured_data=((SD_ID, params),),
            msg=msg,
            **common,
        ),  # type: ignore[arg-type]
        format_rfc5424(
            severity=Severity.NOTICE,
            app_name="op25b",
            msgid="blocked",
            msg="blocked source 100.64.1.66 plan=residential action=reject",
            **common,
        ),  # type: ignore[arg-type]
        *[
            format_rfc5424(
                severity=Severity.INFO, app_name="op25b-abuse", msgid=None, msg=record, **common
            )
        ]
        * 8,  # type: ignore[arg-type]
    ]


def sender(args: argparse.Namespace) -> None:
    """Child side (in the collector's namespace): N connections, M messages each."""
    samples = [bytes.fromhex(h) for h in json.loads(Path(args.samples).read_text())]

    async def one(i: int) -> None:
        host = f"sim{i:04d}".encode()
        frames = []
        for j in range(args.per):
            m = samples[j % len(samples)].replace(b"HOST", host)
            frames.append(b"%d %s" % (len(m), m))
        _, writer = await asyncio.open_connection(args.host, args.port)
        writer.write(b"".join(frames))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        sem = asyncio.Semaphore(200)  # bounded concurrency of connects

        async def guarded(i: int) -> None:
            async with sem:
                await one(i)

        await asyncio.gather(*(guarded(i) for i in range(args.conns)))

    asyncio.run(main())


def rsyslog(work: Path, senders: list[int], total: int) -> dict[str, Any]:
    work.mkdir(parents=True)
    samples = work / "samples.json"
    samples.write_text(json.dumps([m.hex() for m in sample_messages(work)]))
    out: dict[str, Any] = {"messages": total, "points": []}
    with fleet_session(1, "op25bbench") as fleet:
        col = fleet.ns("col")
        for n in senders:
            outdir, rw = work / f"col-{n}", work / f"colrs-{n}"
            conf = collector_conf(rw, outdir, FP.COLLECTOR_V4)
            with Rsyslogd(col, rw, conf, COLLECTOR_PORT) as rs:
                per = total // n
                cpu0, t0 = cpu_seconds(rs.proc.pid), time.monotonic()
                run_in(
                    col,
                    [
                        sys.executable,
                        __file__,
                        "--sender",
                        "--samples",
                        str(samples),
                        "--conns",
                        str(n),
                        "--per",
                        str(per),
                        "--host",
                        FP.COLLECTOR_V4,
                        "--port",
                        str(COLLECTOR_PORT),
                    ],
                    check=True,
                    env=child_env(),
                )
                sent = time.monotonic() - t0
                want = per * n
                while True:  # every message on disk: count lines in all files
                    got = sum(_lines(p) for p in outdir.rglob("*") if p.is_file())
                    if got >= want or time.monotonic() - t0 > 300:
                        break
                    time.sleep(0.1)
                wall, cpu = time.monotonic() - t0, cpu_seconds(rs.proc.pid) - cpu0
                files = sum(1 for p in outdir.rglob("*") if p.is_file())
            point = {
                "senders": n,
                "messages": got,
                "wanted": want,
                "files": files,
                "send_s": round(sent, 2),
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "msg_per_s": round(got / wall),
                "msg_per_cpu_s": round(got / max(cpu, 1e-3)),
            }
            out["points"].append(point)
            print(json.dumps(point), flush=True)
    return out


def _lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


# --- prometheus -------------------------------------------------------------------------------


def targets_server(args: argparse.Namespace) -> None:
    """Child side: serve one /metrics body on ports BASE..BASE+N-1."""
    body = Path(args.body).read_bytes()
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                req = await reader.readuntil(b"\r\n\r\n")
                if not req:
                    break
                writer.write(head + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def main() -> None:
        servers = [
            await asyncio.start_server(handle, args.host, args.base + i) for i in range(args.conns)
        ]
        print("READY", flush=True)
        await asyncio.gather(*(s.serve_forever() for s in servers))

    asyncio.run(main())


def prometheus(work: Path, counts: list[int], body: Path, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"scrape_interval_s": 1, "points": []}
    work.mkdir(parents=True)
    with fleet_session(1, "op25bbench") as fleet:
        col = fleet.ns("col")
        for n in counts:
            server = popen_in(
                col,
                [
                    sys.executable,
                    __file__,
                    "--targets",
                    "--body",
                    str(body),
                    "--conns",
                    str(n),
                    "--host",
                    FP.COLLECTOR_V4,
                    "--base",
                    "20000",
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=child_env(),
            )
            assert server.stdout is not None and server.stdout.readline().startswith("READY")
            targets = {f"sim{i:04d}": f"{FP.COLLECTOR_V4}:{20000 + i}" for i in range(n)}
            try:
                config = scrape_config(targets, 1.0) + (  # and itself, for its TSDB counters
                    "  - job_name: self\n"
                    f"    static_configs: [{{targets: ['{FP.COLLECTOR_V4}:9090']}}]\n"
                )
                with Prometheus(col, FP.COLLECTOR_V4, work / f"prom-{n}", config) as prom:
                    prom.await_query('up{job="op25b"} == 1', lambda r: len(r) == n, 120)  # noqa: B023
                    pid = prom.proc.pid
                    cpu0, t0 = cpu_seconds(pid), time.monotonic()
                    time.sleep(seconds)  # the measurement interval itself
                    cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - t0

                    def one(q: str) -> float:
                        r = prom.query(q)
                        return float(r[0]["value"][1]) if r else float("nan")

                    point = {
                        "targets": n,
                        "up": one('sum(up{job="op25b"})'),
                        "samples_per_s": round(
                            one(
                                f"rate(prometheus_tsdb_head_samples_appended_total[{int(seconds)}s])"
                            )
                        ),
                        "scraped_per_scrape": one('sum(scrape_samples_scraped{job="op25b"})'),
                        "head_series": one("prometheus_tsdb_head_series"),
                        "cpu_per_s": round(cpu / wall, 3),
                        "rss_mb": round(rss_mb(pid)),
                        "scrape_s_avg": round(one('avg(scrape_duration_seconds{job="op25b"})'), 4),
                    }
            finally:
                stop_process(server)
            out["points"].append(point)
            print(json.dumps(point), flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("parts", nargs="*", default=["rates", "rsyslog", "prometheus"])
    p.add_argument("--json", action="store_true")
    p.add_argument("--work", default="")
    for hidden in ("--sender", "--targets"):
        p.add_argument(hidden, action="store_true", help=argparse.SUPPRESS)
    for opt, kind in (
        ("--samples", str),
        ("--body", str),
        ("--host", str),
        ("--conns", int),
        ("--per", int),
        ("--port", int),
        ("--base", int),
    ):
        p.add_argument(opt, type=kind, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.sender:
        sender(args)
        return 0
    if args.targets:
        targets_server(args)
        return 0
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="op25b-bench-fleet-"))
    results: dict[str, Any] = {}
    if "rates" in args.parts:
        results["rates"] = rates(work / "rates", [1, 10, 100, 1000])
    if "rsyslog" in args.parts:
        results["rsyslog"] = rsyslog(work / "rsyslog", [10, 100, 1000], 200_000)
    if "prometheus" in args.parts:
        body = work / "rates" / "metrics.txt"
        results["prometheus"] = prometheus(work / "prom", [100, 1000], body, 20.0)
    if args.json:
        print(json.dumps(results, indent=2))
    print(f"files in {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
