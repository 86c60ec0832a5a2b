"""Seeded generator of realistic abuse logs for ``bench_report.py`` (never run by pytest).

Writes one directory per router holding a logrotate-shaped series, one file per day:
``blocked.jsonl`` (today, plain), ``blocked.jsonl.1`` (yesterday, plain: delaycompress)
and ``blocked.jsonl.N.gz`` (older, gzip level 6 like logrotate's default). Records follow
docs/abuse-log-format.md and come from a mix of sources behind each router:

- bots: active on ~30% of days, in bursts of 1-12 windows of 200-3000 attempts to
  20-400 MXes; one in ten roams (mobile) and shows up on a second router too;
- misconfigured clients: on most days, 12-100 consecutive windows of ~5 attempts to
  one or two servers;
- one-off sources: a fresh address each, 1-3 attempts in one window;
- now and then a policy reload splits a window into two records (drop, then reject).

The same ``--seed`` and sizes give byte-identical files.

    python bench/gen_abuselog.py /work/tmp/logs-1m --records 1000000
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

WINDOW_S = 300
WINDOWS_PER_DAY = 86_400 // WINDOW_S
START = datetime(2026, 9, 1, tzinfo=UTC)
# Share of records per kind; one-offs fill what bots and clients leave.
BOT_SHARE, CLIENT_SHARE = 0.25, 0.45
MX_POOL = [f"192.0.2.{i}" for i in range(1, 255)] + [f"203.0.113.{i}" for i in range(1, 200)]


def _ts(day: datetime, ms: int) -> str:
    t = day + timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _line(
    router: str,
    src: str,
    day: datetime,
    window: int,
    first_ms: int,
    last_ms: int,
    packets: int,
    distinct: int,
    sample: list[str],
    action: str = "drop",
) -> str:
    ws = window * WINDOW_S * 1000
    fam = 6 if ":" in src else 4
    dests = ", ".join(f'"{d}"' for d in sample)
    return (
        f'{{"type": "blocked_source", "version": 1, "router": "{router}", "source": "{src}", '
        f'"family": {fam}, "plan": "residential", "action": "{action}", '
        f'"rule": "policies/isp.yaml:12:9", "window_start": "{_ts(day, ws)}", '
        f'"window_end": "{_ts(day, ws + WINDOW_S * 1000)}", '
        f'"first_seen": "{_ts(day, ws + first_ms)}", "last_seen": "{_ts(day, ws + last_ms)}", '
        f'"packets": {packets}, "distinct_destinations": {distinct}, '
        f'"destinations_sample": [{dests}], "ports": {{"25": {packets}}}, '
        f'"distinct_destinations_capped": false, "kernel_packets": 0}}\n'
    )


class Fleet:
    """Sources and their habits; draws one router-day of records at a time."""

    def __init__(
        self, rng: random.Random, routers: int, days: int, records: int, reload_split: float
    ) -> None:
        self.rng = rng
        self.reload_split = reload_split
        self.routers = [f"edge{i + 1}" for i in range(routers)]
        per_day = records / days / routers
        # A bot-day yields ~6.5 records, a client-day ~56 (see day()).
        self.bots = [max(1, round(per_day * BOT_SHARE / 6.5 / 0.3)) for _ in self.routers]
        self.clients = [max(1, round(per_day * CLIENT_SHARE / 56 / 0.8)) for _ in self.routers]
        self.oneoffs_per_day = max(1, round(per_day * (1 - BOT_SHARE - CLIENT_SHARE)))
        self.next_oneoff = 0

    def addr(self, r: int, kind: int, n: int) -> str:
        if n % 7 == 6:  # some IPv6 subscribers, aggregated per /64 by the producer
            return f"2001:db8:{100 + r:x}:{kind:x}{n // 65536:03x}:{n % 65536:x}::/64"
        return f"100.{64 + r * 3 + kind}.{(n // 256) % 256}.{n % 256}"

    def day(self, r: int, day: datetime) -> list[tuple[int, str]]:
        rng = self.rng
        router = self.routers[r]
        out: list[tuple[int, str]] = []
        for b in range(self.bots[r]):
            if rng.random() >= 0.3:
                continue
            src = self.addr(r, 0, b)
            routers = [router]
            if b % 10 == 0:  # roaming: the neighbour router sees it too
                routers.append(self.routers[(r + 1) % len(self.routers)])
            w0 = rng.randrange(WINDOWS_PER_DAY - 12)
            for w in range(w0, w0 + rng.randint(1, 12)):
                for rt in routers:
                    pk = rng.randint(200, 3000)
                    dist = rng.randint(20, 400)
                    first = rng.randint(0, 60_000)
                    last = first + rng.randint(5_000, 200_000)
                    sample = rng.sample(MX_POOL, 16)
                    out.append((w, _line(rt, src, day, w, first, last, pk, dist, sample)))
        for c in range(self.clients[r]):
            if rng.random() >= 0.8:
                continue
            src = self.addr(r, 1, c)
            server = [MX_POOL[c % len(MX_POOL)]] + ([MX_POOL[-1]] if c % 5 == 0 else [])
            w0 = rng.randrange(WINDOWS_PER_DAY - 100)
            for w in range(w0, w0 + rng.randint(12, 100)):
                first = rng.randint(0, 50_000)
                pk = rng.randint(4, 6)
                last = first + (pk - 1) * 60_000
                if rng.random() < self.reload_split:  # a reload changed the action
                    cut = first + 60_000
                    out.append((w, _line(router, src, day, w, first, first, 1, 1, server)))
                    out.append(
                        (w, _line(router, src, day, w, cut, last, pk - 1, 1, server, "reject"))
                    )
                else:
                    out.append(
                        (w, _line(router, src, day, w, first, last, pk, len(server), server))
                    )
        for _ in range(self.oneoffs_per_day):
            n = self.next_oneoff = self.next_oneoff + 1
            src = self.addr(r, 2, n)
            w = rng.randrange(WINDOWS_PER_DAY)
            first = rng.randint(0, 290_000)
            pk = rng.randint(1, 3)
            out.append(
                (
                    w,
                    _line(
                        router,
                        src,
                        day,
                        w,
                        first,
                        first + (pk - 1) * 3000,
                        pk,
                        1,
                        [rng.choice(MX_POOL)],
                    ),
                )
            )
        out.sort(key=lambda x: x[0])  # a log is written window by window
        return out


def generate(
    root: Path, records: int, routers: int, days: int, seed: int, reload_split: float = 0.002
) -> int:
    """Write the logs under ``root``; return the number of records written.

    ``reload_split``: the share of client windows split in two by a reload.
    """
    rng = random.Random(seed)
    fleet = Fleet(rng, routers, days, records, reload_split)
    total = 0
    for router in fleet.routers:
        (root / router).mkdir(parents=True, exist_ok=True)
    for d in range(days):
        day = START + timedelta(days=d)
        age = days - 1 - d  # 0 = today
        for r, router in enumerate(fleet.routers):
            lines = "".join(line for _, line in fleet.day(r, day)).encode()
            total += lines.count(b"\n")
            name = "blocked.jsonl" + ("" if age == 0 else f".{age}")
            path = root / router / name
            if age >= 2:
                path = path.with_name(name + ".gz")
                with gzip.open(path, "wb", compresslevel=6) as f:
                    f.write(lines)
            else:
                path.write_bytes(lines)
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="directory to create (must not exist)")
    p.add_argument("--records", type=int, default=1_000_000, help="about this many records")
    p.add_argument("--routers", type=int, default=3)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--seed", type=int, default=25)
    a = p.parse_args(argv)
    if a.out.exists():
        p.error(f"{a.out}: exists; pick a new directory")
    n = generate(a.out, a.records, a.routers, a.days, a.seed)
    size = sum(f.stat().st_size for f in a.out.rglob("*") if f.is_file())
    print(f"{a.out}: {n} records, {size / 1e6:.0f} MB on disk", file=sys.stderr)
    return 0 if os.path.isdir(a.out) else 1


if __name__ == "__main__":
    sys.exit(main())
