"""Tests for issues 14 and 15 of ``op25b report``: windows split by a reload, questions
over days (--by-day, --min-days), router/plan filters, engines and their exactness,
progress on a terminal.

Every ``run`` (from test_report) runs both engines and asserts they print the same, and
checks the first implementation's answers where it had the options; the tests here add
what is new.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
import io
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from report_reference_check import reference_rows
from test_report import (
    BOT,
    CLIENT,
    T0,
    WINDOW,
    bot_records,
    client_records,
    lines,
    rec,
    run,
    run_json,
    ts,
    write,
)

from op25b.report import desk, query
from op25b.report.botscore import DAY_MS
from op25b.report.progress import Progress

REPO = Path(__file__).resolve().parents[2]


def split_pair(**over: Any) -> list[dict[str, Any]]:
    """Issue 15's case: 40 attempts dropped, a reload, 60 rejected, one 18:00 window."""
    first = rec(BOT, 0, packets=40, first_s=3, last_s=20, distinct=10, sample=["192.0.2.1"])
    second = rec(BOT, 0, packets=60, first_s=21, last_s=50, distinct=12, sample=["192.0.2.2"],
                 action="reject")  # fmt: skip
    return [dict(first, **over), second]


# ----------------------------------------------------------------- issue 15


def test_window_split_by_a_reload_counts_both_parts(tmp_path: Path) -> None:
    log = write(tmp_path / "blocked.jsonl", split_pair())
    (bot,), err = run_json(log)
    assert err == ""
    assert (bot["attempts"], bot["windows_active"], bot["action"]) == (100, 1, "drop,reject")
    assert bot["peak_window_attempts"] == 100
    assert bot["first_seen"] == "2026-11-23T18:00:03.000Z"
    assert bot["last_seen"] == "2026-11-23T18:00:50.000Z"
    assert bot["destinations_sample"] == ["192.0.2.1", "192.0.2.2"]
    _, out, _ = run(log)
    assert "duplicate" not in out
    assert " drop,reject\n" in out


def test_first_part_ends_at_the_reload_still_one_window(tmp_path: Path) -> None:
    # What the daemon writes: the first record's window_end is the reload time.
    log = write(tmp_path / "blocked.jsonl", split_pair(window_end=ts(T0 + timedelta(seconds=20))))
    (bot,), _ = run_json(log)
    assert (bot["attempts"], bot["windows_active"]) == (100, 1)


def test_same_records_read_twice_are_still_duplicates(tmp_path: Path) -> None:
    log = write(tmp_path / "blocked.jsonl", split_pair())
    (bot,), _ = run_json(log, log)
    assert bot["attempts"] == 100
    _, out, _ = run(log, log)
    assert "2 duplicate records ignored" in out
    rep = desk.build_report([str(log)] * 2, lambda p: None, engine="python")
    assert (rep.records, rep.duplicates) == (2, 2)


def test_the_reference_drops_the_second_part(tmp_path: Path) -> None:
    # Pins why the equivalence check skips such logs: the old code lost 60 attempts.
    log = write(tmp_path / "blocked.jsonl", split_pair())
    rows, totals, split = reference_rows([str(log)], None, None)
    assert split
    assert rows[0]["attempts"] == 40
    assert totals == (1, 1, 0)


# ----------------------------------------------------------- days over time


def day_records() -> list[dict[str, Any]]:
    """The bot is bot-like on days 0 and 2 and quiet on day 1; the client every day."""
    days = 288  # windows per day
    quiet = rec(BOT, days + 5, packets=3, first_s=0, last_s=200, distinct=1, sample=["192.0.2.9"])
    out = [*bot_records()[:3], quiet]
    out += [dict(r, **_shift(r, 2 * days)) for r in bot_records()[3:6]]
    out += [dict(r, **_shift(r, d * days)) for d in range(3) for r in client_records()[:4]]
    return out


def _shift(r: dict[str, Any], windows: int) -> dict[str, str]:
    delta = windows * WINDOW
    keys = ("window_start", "window_end", "first_seen", "last_seen")
    return {k: ts(_parse(r[k]) + delta) for k in keys}


def _parse(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text)


def test_by_day_lists_the_days_a_source_was_bot_like(tmp_path: Path) -> None:
    log = write(tmp_path / "b.jsonl", day_records())
    rows, _ = run_json(log, "--by-day")
    by = {r["source"]: r for r in rows}
    assert by[BOT]["bot_days"] == ["2026-11-23", "2026-11-25"]
    assert by[CLIENT]["bot_days"] == []
    assert list(by[BOT])[-1] == "bot_days"
    # Without --by-day the JSON keeps its old keys.
    rows, _ = run_json(log)
    assert "bot_days" not in rows[0]


def test_min_days_lists_repeat_offenders_only(tmp_path: Path) -> None:
    log = write(tmp_path / "b.jsonl", day_records())
    rows, _ = run_json(log, "--min-days", "2")
    assert [(r["source"], len(r["bot_days"])) for r in rows] == [(BOT, 2)]
    rows, _ = run_json(log, "--min-days", "3")
    assert rows == []
    code, out, _ = run(log, "--min-days", "2")
    assert code == 0
    assert out.startswith("1 source, ")
    assert "bot-like on 2 days: 2026-11-23, 2026-11-25" in out


def test_by_day_table_and_csv(tmp_path: Path) -> None:
    log = write(tmp_path / "b.jsonl", day_records())
    _, out, _ = run(log, "--by-day")
    assert "bot-like on no single day" in out  # the client
    _, text, _ = run(log, "--by-day", "--csv")
    table = {r["source"]: r for r in csv.DictReader(io.StringIO(text))}
    assert table[BOT]["bot_days"] == "2026-11-23 2026-11-25"
    assert table[CLIENT]["bot_days"] == ""


def test_chart_per_day_buckets_attempts_by_utc_day(tmp_path: Path) -> None:
    log = write(tmp_path / "b.jsonl", day_records())
    for engine in ("python", "duckdb"):
        rep = desk.build_report([str(log)], lambda p: None, by_day=True, chart=True,
                                engine=engine)  # fmt: skip
        assert rep.windows is not None
        data = desk.chart_data(rep.sources, rep.windows, per_day=True)
        assert data.bucket_ms == DAY_MS
        assert data.starts[0] == int(T0.replace(hour=0).timestamp() * 1000)
        series = dict(data.series)
        assert series[f"{BOT}: bot-like, score 99"] == (3600, 3, 3600)
        assert series[f"{CLIENT}: misconfigured client, score 0"] == (20, 20, 20)
        assert "per 1-day window" in data.title


# ------------------------------------------------------------------ filters


def test_router_and_plan_filters(tmp_path: Path) -> None:
    a = write(tmp_path / "edge1.jsonl", bot_records("edge1"))
    b = write(tmp_path / "edge2.jsonl", bot_records("edge2")[:3])
    c = write(tmp_path / "mobile.jsonl", [dict(r, plan="mobile") for r in client_records()])
    rows, _ = run_json(a, b, c, "--router", "edge2")
    assert [(r["source"], r["attempts"], r["routers"]) for r in rows] == [(BOT, 3600, ["edge2"])]
    rows, _ = run_json(a, b, c, "--plan", "mobile")
    assert [(r["source"], r["plan"]) for r in rows] == [(CLIENT, "mobile")]
    rows, _ = run_json(a, b, c, "--plan", "mobile", "--plan", "residential")
    assert len(rows) == 2
    _, out, _ = run(a, b, c, "--router", "edge2")
    assert "22 records outside the filters" in out


# ------------------------------------------------------------------ engines


def test_duckdb_takes_only_what_the_reader_would_read_the_same(tmp_path: Path) -> None:
    """Lines DuckDB would read differently go through the reader: same problems, totals."""
    recs = client_records()
    odd_ok = dict(recs[1], first_seen="2026-11-23T20:05:10.000+02:00")  # valid, not 'Z'
    bad = [dict(recs[2], plan=5), dict(recs[3], family=True), dict(recs[4], packets=5.0),
           dict(recs[5], destinations_sample=[1]), dict(recs[6], version=2)]  # fmt: skip
    gz = tmp_path / "blocked.jsonl.2.gz"
    gz.write_bytes(gzip.compress(lines([recs[0], odd_ok, *bad]).encode()))
    good = write(tmp_path / "blocked.jsonl.1", recs[7:])
    bz = tmp_path / "blocked.jsonl.3"
    bz.write_bytes(bz2.compress(lines(recs[:1]).encode()))
    code, out, err = run(gz, good, bz, "--json")  # both engines print exactly this
    assert code == 0
    problems = err.splitlines()
    assert [p.split(": ", 2)[1] for p in problems] == ["invalid record skipped"] * 5
    assert problems[0] == (
        f"{gz}:3: invalid record skipped: plan: expected a non-empty string, got 5"
    )
    (client,) = json.loads(out)
    assert client["attempts"] == 5 * (2 + 7)
    assert client["windows_active"] == 9


def test_truncated_and_glued_lines_in_a_fast_file(tmp_path: Path) -> None:
    recs = client_records()
    stub = json.dumps(recs[0])[:40]
    glued = write(tmp_path / "a.jsonl", [], tail=stub + lines(recs[1:3]))
    cut = write(tmp_path / "b.jsonl", recs[3:], tail=json.dumps(recs[0])[:57])
    code, out, err = run(glued, cut, "--json")
    assert code == 0
    assert err.splitlines()[-1] == f"{cut}:12: truncated record skipped"
    assert json.loads(out)[0]["attempts"] == 5 * 13


def test_engine_duckdb_without_duckdb_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(query, "duckdb_available", lambda: False)
    log = write(tmp_path / "b.jsonl", client_records())
    code, out, err = _run_one(log, "--engine", "duckdb")
    assert (code, out) == (2, "")
    assert err.startswith("op25b report: error: --engine duckdb: DuckDB is not installed")
    assert _run_one(log, "--engine", "auto", "--json")[0] == 0  # auto falls back


def _run_one(*argv: str | Path) -> tuple[int, str, str]:
    import argparse

    p = argparse.ArgumentParser()
    desk.add_arguments(p)
    out, err = io.StringIO(), io.StringIO()
    code = desk.run(p.parse_args([str(a) for a in argv]), out, err)
    return code, out.getvalue(), err.getvalue()


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_abuselog", REPO / "bench/gen_abuselog.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_abuselog"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_generated_fleet_logs_match_the_reference(tmp_path: Path) -> None:
    """A few thousand records of bots, clients and one-offs on three routers, rotated
    and gzip-compressed: every source, score and total as the first implementation."""
    n = _generator().generate(tmp_path, 3000, routers=3, days=4, seed=7, reload_split=0.0)
    assert n > 2000
    paths = sorted(str(p) for p in tmp_path.rglob("blocked.jsonl*"))
    assert any(p.endswith(".gz") for p in paths)
    rows, totals, split = reference_rows(paths, None, None)
    assert not split
    assert sum(1 for r in rows if r["verdict"] == "bot-like") > 5
    for engine in ("python", "duckdb"):
        rep = desk.build_report(paths, lambda p: None, engine=engine)
        assert [s.as_dict() for s in rep.sources] == rows
        assert (rep.records, rep.duplicates, rep.filtered_out) == totals
        top = desk.build_report(paths, lambda p: None, engine=engine, top=5)
        assert [s.as_dict() for s in top.sources] == rows[:5]
        assert (top.source_count, top.attempts) == (rep.source_count, rep.attempts)


def test_generated_reload_splits_add_up_in_both_engines(tmp_path: Path) -> None:
    _generator().generate(tmp_path, 3000, routers=2, days=2, seed=3, reload_split=0.2)
    paths = sorted(str(p) for p in tmp_path.rglob("blocked.jsonl*"))
    _, _, split = reference_rows(paths, None, None)
    assert split
    reps = [desk.build_report(paths, lambda p: None, engine=e, by_day=True)
            for e in ("python", "duckdb")]  # fmt: skip
    assert [s.as_dict() for s in reps[0].sources] == [s.as_dict() for s in reps[1].sources]
    assert reps[0].duplicates == reps[1].duplicates == 0
    assert any(s.actions == ("drop", "reject") for s in reps[0].sources)


# ----------------------------------------------------------------- progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_after_two_seconds() -> None:
    now = [100.0]
    out = Tty()
    p = Progress(out, enabled=True, clock=lambda: now[0])
    p.update("reading: 10%")
    assert out.getvalue() == ""  # too early: small logs never show it
    now[0] += 2.5
    p.update("reading: 40%")
    now[0] += 0.1
    p.update("reading: 41%")  # rate-limited
    assert out.getvalue() == "\rop25b report: reading: 40%"
    p.finish()
    assert out.getvalue().endswith("\r" + " " * len("op25b report: reading: 40%") + "\r")
    assert Progress.for_stream(Tty())._enabled
    assert not Progress.for_stream(io.StringIO())._enabled


def test_progress_shows_while_the_python_engine_reads(tmp_path: Path) -> None:
    from op25b.report import pyengine

    log = write(tmp_path / "b.jsonl", client_records() * 10)
    seen: list[str] = []

    class Sink:
        def update(self, text: str) -> None:
            seen.append(text)

    old = pyengine.PROGRESS_EVERY
    pyengine.PROGRESS_EVERY = 50
    try:
        pyengine.run_python([str(log)], lambda p: None, query.Query(), Sink())
    finally:
        pyengine.PROGRESS_EVERY = old
    assert seen == ["read 50 records, file 1 of 1", "read 100 records, file 1 of 1"]
