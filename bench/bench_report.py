"""``op25b report`` on a fleet's logs: the first implementation vs both engines.

Run by hand (never by pytest). For each log directory given (made by
``bench/gen_abuselog.py``), runs each variant in its own child process, one after the
other in the same run, and prints records/s (wall clock), CPU seconds and the child's
peak RSS (``getrusage`` of the child itself, DuckDB's threads included):

- ``reference``: ``op25b.report.reference`` (the code before issue 14: everything in
  memory, one record per router and window);
- ``python``: ``--engine python`` (pure-Python streaming aggregation);
- ``duckdb``: ``--engine duckdb`` (DuckDB reads and aggregates out of core);
- ``duckdb-days``: ``--engine duckdb --by-day``.

Every variant ranks the top 20; the script checks that all variants name the same top
20 sources with the same scores (the reference only where no window was split by a
reload: it drops those parts, issue 15).

    .venv/bin/python bench/gen_abuselog.py /work/tmp/logs-1m --records 1000000
    .venv/bin/python bench/bench_report.py /work/tmp/logs-1m [--only duckdb,python]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("reference", "python", "duckdb", "duckdb-days")
TOP = 20


def child(variant: str, root: str) -> None:
    """Run one variant in this process and print one JSON line of results."""
    from op25b.report import desk

    paths = sorted(str(p) for p in Path(root).rglob("blocked.jsonl*"))
    t0, c0 = time.monotonic(), time.process_time()
    if variant == "reference":
        from op25b.report.abuseread import read_logs
        from op25b.report.reference import ReferenceAggregator

        ref = ReferenceAggregator()
        read_logs(paths, ref.add, lambda p: None)
        sources = ref.sources()[:TOP]
        records = ref.records + ref.duplicates
    else:
        engine, _, days = variant.partition("-")
        rep = desk.build_report(paths, lambda p: None, top=TOP, engine=engine, by_day=bool(days))
        sources = list(rep.sources)
        records = rep.records + rep.duplicates
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    top = [(s.source, s.score.value, s.attempts) for s in sources]
    print(json.dumps({"wall": wall, "cpu": cpu, "rss_mb": rss_kb / 1024, "records": records,
                      "top": top}))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("logs", nargs="*", help="directories made by gen_abuselog.py")
    p.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    p.add_argument("--child", nargs=2, metavar=("VARIANT", "DIR"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        child(*a.child)
        return 0
    print("| log | variant | records | wall s | records/s | CPU s | peak RSS MB |")
    print("|-----|---------|--------:|-------:|----------:|------:|------------:|")
    for root in a.logs:
        tops: dict[str, list[list[object]]] = {}
        for variant in a.only.split(","):
            proc = subprocess.run(
                [sys.executable, __file__, "--child", variant, root],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                print(f"| {Path(root).name} | {variant} | failed: {proc.stderr.strip()[-200:]} |")
                continue
            r = json.loads(proc.stdout)
            tops[variant] = r["top"]
            print(f"| {Path(root).name} | {variant} | {r['records']:,} | {r['wall']:.1f} | "
                  f"{r['records'] / r['wall']:,.0f} | {r['cpu']:.1f} | {r['rss_mb']:.0f} |",
                  flush=True)  # fmt: skip
        engines = [v for v in tops if v != "reference"]
        same = all(tops[v] == tops[engines[0]] for v in engines) if engines else True
        print(f"\n{Path(root).name}: engines agree on the top {TOP}: {same}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
