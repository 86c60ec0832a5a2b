"""Tests for ``op25b report``: synthetic abuse logs in, scores and outputs checked exactly.

The logs are written here line by line in the documented JSON-lines format
(docs/abuse-log-format.md) rather than by the producer, so these tests pin the format
contract from the reader's side.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import io
import json
import re
import struct
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from report_reference_check import assert_same_as_reference

from op25b.report import desk as report

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=300)
BOT = "100.64.0.66"
CLIENT = "100.64.0.10"
CLIENT_REASON = (
    "misconfigured client: 1 destination, steady retries every ~60 s over 14 windows"
    " — likely a mail client set to port 25 instead of 587"
)


def ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def rec(
    source: str,
    window: int,
    *,
    router: str = "edge1",
    packets: int,
    first_s: float,
    last_s: float,
    distinct: int,
    sample: list[str],
    plan: str = "residential",
    action: str = "drop",
) -> dict[str, Any]:
    """One record for window number ``window`` after T0; times are seconds into it."""
    ws = T0 + window * WINDOW
    return {
        "type": "blocked_source",
        "version": 1,
        "router": router,
        "source": source,
        "family": 6 if ":" in source else 4,
        "plan": plan,
        "action": action,
        "rule": "policies/example.yaml:4:9",
        "window_start": ts(ws),
        "window_end": ts(ws + WINDOW),
        "first_seen": ts(ws + timedelta(seconds=first_s)),
        "last_seen": ts(ws + timedelta(seconds=last_s)),
        "packets": packets,
        "distinct_destinations": distinct,
        "destinations_sample": sample[:16],
        "ports": {"25": packets},
    }


def bot_records(router: str = "edge1") -> list[dict[str, Any]]:
    """6 windows, 1200 attempts in 30 s each (40/s), 57 MXes over all samples."""
    mxes = [f"192.0.2.{i}" for i in range(1, 58)]
    out = []
    for w in range(6):
        sample = [mxes[(w * 10 + j) % 57] for j in range(16)]
        out.append(
            rec(
                BOT,
                w,
                router=router,
                packets=1200,
                first_s=3,
                last_s=33,
                distinct=40,
                sample=sample,
            )
        )
    # Two more windows so the 16-address samples can cover all 57 destinations.
    for w, start in ((6, 32), (7, 48)):
        sample = [mxes[(start + j) % 57] for j in range(16)]
        out.append(
            rec(
                BOT,
                w,
                router=router,
                packets=1200,
                first_s=3,
                last_s=33,
                distinct=40,
                sample=sample,
            )
        )
    return out


def client_records() -> list[dict[str, Any]]:
    """14 windows, 5 attempts 60 s apart in each, always the same server."""
    return [
        rec(CLIENT, w, packets=5, first_s=10, last_s=250, distinct=1, sample=["198.51.100.77"])
        for w in range(14)
    ]


def lines(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def write(path: Path, records: Iterable[dict[str, Any]], *, tail: str = "") -> Path:
    path.write_text(lines(records) + tail, encoding="utf-8")
    return path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="op25b report")
    report.add_arguments(p)
    return p


def run_engine(engine: str, *argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = parser().parse_args([str(a) for a in argv] + ["--engine", engine])
    code = report.run(args, out, err, now=NOW)
    return code, out.getvalue(), err.getvalue()


def run(*argv: str | Path) -> tuple[int, str, str]:
    """Run the report with each engine: both must print exactly the same."""
    result = run_engine("python", *argv)
    assert run_engine("duckdb", *argv) == result
    if result[0] == 0:
        assert_same_as_reference(parser().parse_args([str(a) for a in argv]))
    return result


def run_json(*argv: str | Path) -> tuple[list[dict[str, Any]], str]:
    code, out, err = run(*argv, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert isinstance(data, list)
    return data, err


def by_source(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["source"]: r for r in rows}


# ------------------------------------------------------------------ scoring


def test_bot_scores_above_misconfigured_client_and_says_why(tmp_path: Path) -> None:
    log = write(tmp_path / "blocked.jsonl", client_records() + bot_records())
    rows, err = run_json(log)
    assert err == ""
    assert [r["source"] for r in rows] == [BOT, CLIENT]  # sorted by score
    bot, client = rows
    assert bot["score"] > client["score"]
    assert bot["score"] >= report.BOT_THRESHOLD
    assert bot["verdict"] == "bot-like"
    assert bot["reason"] == "bot-like: 57 distinct MX destinations, bursts of 40 attempts/s"
    assert bot["distinct_destinations"] == 57  # union of samples beats per-window 40
    assert bot["peak_rate"] == 40.0
    assert client["verdict"] == "misconfigured client"
    assert client["reason"] == CLIENT_REASON
    assert client["score"] == 0
    assert client["retry_interval_s"] == 60.0


def test_distinct_destinations_uses_per_window_count_when_larger(tmp_path: Path) -> None:
    log = write(
        tmp_path / "b.jsonl",
        [rec(BOT, 0, packets=500, first_s=0, last_s=10, distinct=300, sample=["192.0.2.1"])],
    )
    rows, _ = run_json(log)
    assert rows[0]["distinct_destinations"] == 300
    assert rows[0]["destinations_sample"] == ["192.0.2.1"]


def test_single_window_client_is_only_likely() -> None:
    s = report.score_source(
        distinct=1, peak_rate=0.02, peak_window_attempts=5, window_counts=[5],
        retry_interval_s=60.0,
    )  # fmt: skip
    assert s.verdict == "likely misconfigured client"
    assert "too few windows" in s.reason


def test_one_destination_flood_is_suspicious_not_client() -> None:
    s = report.score_source(
        distinct=1, peak_rate=50.0, peak_window_attempts=5000, window_counts=[5000] * 4,
        retry_interval_s=0.02,
    )  # fmt: skip
    assert s.value == 50
    assert s.verdict == "suspicious"


@given(
    d=st.integers(0, 10_000),
    r=st.one_of(st.none(), st.floats(0, 1e6)),
    p=st.integers(0, 10**7),
    extra=st.integers(1, 1000),
)
def test_score_is_bounded_and_monotone(d: int, r: float | None, p: int, extra: int) -> None:
    def score(d: int, r: float | None, p: int) -> int:
        return report.score_source(
            distinct=d, peak_rate=r, peak_window_attempts=p, window_counts=[p],
            retry_interval_s=None,
        ).value  # fmt: skip

    base = score(d, r, p)
    assert 0 <= base <= 100
    assert score(d + extra, r, p) >= base
    assert score(d, (r or 0) + extra, p) >= base
    assert score(d, r, p + extra) >= base


# ------------------------------------------------------------------ reading


def test_rotated_and_compressed_files_detected_by_magic(tmp_path: Path) -> None:
    recs = client_records()
    write(tmp_path / "blocked.jsonl", recs[10:])
    write(tmp_path / "blocked.jsonl.1", recs[6:10])
    (tmp_path / "blocked.jsonl.2.gz").write_bytes(gzip.compress(lines(recs[3:6]).encode()))
    # Names lie: gzip data without .gz, bzip2 under .gz. The magic bytes decide.
    (tmp_path / "blocked.jsonl.3").write_bytes(gzip.compress(lines(recs[1:3]).encode()))
    (tmp_path / "blocked.jsonl.4.gz").write_bytes(bz2.compress(lines(recs[:1]).encode()))
    files = sorted(tmp_path.iterdir())
    rows, err = run_json(*files)
    assert err == ""
    (client,) = rows
    assert client["attempts"] == 5 * 14
    assert client["windows_active"] == 14
    assert client["reason"] == CLIENT_REASON


def test_truncated_gzip_keeps_what_decompressed(tmp_path: Path) -> None:
    # Stored (level 0) so that half the file holds about half the records: compressed,
    # these 14 repetitive lines fit in so few bytes that half of them decompresses nothing.
    data = gzip.compress(lines(client_records()).encode(), compresslevel=0)
    log = tmp_path / "blocked.jsonl.2.gz"
    log.write_bytes(data[: len(data) // 2])
    code, out, err = run(log, "--json")
    assert code == 0
    assert "Traceback" not in err
    match = re.fullmatch(
        rf"{re.escape(str(log))}: unreadable after line (\d+), rest of file skipped: .*\n", err
    )
    assert match, err
    kept = int(match.group(1))
    assert 0 < kept < 14
    (client,) = json.loads(out)
    # exactly the records before the cut: windows 0..kept-1, five attempts each
    assert (client["windows_active"], client["attempts"]) == (kept, 5 * kept)
    assert client["first_seen"] == ts(T0 + timedelta(seconds=10))
    assert client["last_seen"] == ts(T0 + (kept - 1) * WINDOW + timedelta(seconds=250))


def test_two_routers_merge_and_duplicate_files_count_once(tmp_path: Path) -> None:
    a = write(tmp_path / "edge1.jsonl", bot_records("edge1"))
    b = write(tmp_path / "edge2.jsonl", bot_records("edge2")[:3])
    rows, err = run_json(a, b, a)  # edge1's log given twice: no double counting
    assert err == ""
    (bot,) = rows
    assert bot["attempts"] == 1200 * 8 + 1200 * 3
    assert bot["windows_active"] == 8  # the same windows, seen on two routers
    assert bot["routers"] == ["edge1", "edge2"]
    assert bot["peak_window_attempts"] == 2400
    _, out, _ = run(a, b, a)
    assert "8 duplicate records ignored" in out


def test_file_order_does_not_change_the_result(tmp_path: Path) -> None:
    a = write(tmp_path / "edge1.jsonl", bot_records("edge1") + client_records())
    b = write(tmp_path / "edge2.jsonl", bot_records("edge2")[::-1])
    assert run_json(a, b) == run_json(b, a)


def test_truncated_last_line_reported_rest_counted_exactly(tmp_path: Path) -> None:
    recs = client_records()
    cut = json.dumps(recs[0])[:57]  # a crash mid-write: no closing brace, no newline
    log = write(tmp_path / "blocked.jsonl", recs, tail=cut)
    rows, err = run_json(log)
    assert err == f"{log}:15: truncated record skipped\n"
    assert rows[0]["attempts"] == 70
    assert rows[0]["windows_active"] == 14


def test_malformed_and_invalid_lines_in_the_middle(tmp_path: Path) -> None:
    recs = client_records()
    bad_type = dict(recs[1], packets="5")
    text = (
        lines(recs[:1])
        + "{not json\n"
        + lines([bad_type])
        + '{"type": "counters", "version": 1}\n'  # another record type: ignored quietly
        + "\n"
        + lines(recs[2:])
    )
    log = tmp_path / "blocked.jsonl"
    log.write_text(text, encoding="utf-8")
    rows, err = run_json(log)
    problems = err.splitlines()
    assert len(problems) == 2
    assert problems[0].startswith(f"{log}:2: malformed record skipped:")
    assert problems[1] == (
        f"{log}:3: invalid record skipped: packets: expected a non-negative integer, got '5'"
    )
    assert rows[0]["attempts"] == 5 * 13


def test_record_glued_after_a_crash_stub_is_recovered(tmp_path: Path) -> None:
    recs = client_records()
    stub = json.dumps(recs[0])[:40]  # crashed mid-write; the restarted daemon appended
    text = stub + lines(recs[1:2]) + lines(recs[2:])
    log = tmp_path / "blocked.jsonl"
    log.write_text(text, encoding="utf-8")
    rows, err = run_json(log)
    assert err.startswith(f"{log}:1: truncated record skipped")
    assert rows[0]["attempts"] == 5 * 13


def test_problem_lines_are_capped_per_file(tmp_path: Path) -> None:
    log = tmp_path / "junk.jsonl"
    log.write_text("garbage\n" * 100, encoding="utf-8")
    code, out, err = run(log)
    assert code == 0
    assert len(err.splitlines()) == report.MAX_PROBLEMS_PER_FILE + 1
    assert err.endswith(f"{log}: 80 more skipped lines not shown\n")
    assert out.startswith("0 sources, 0 blocked attempts, no activity, 1 file read\n")


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_unusable_file_is_a_clear_error(tmp_path: Path, make: str) -> None:
    good = write(tmp_path / "ok.jsonl", client_records())
    bad = tmp_path / "nope"
    if make == "directory":
        bad.mkdir()
    code, out, err = run(good, bad)
    assert code == 2
    assert out == ""
    assert err.startswith(f"op25b report: error: {bad}: ")
    assert "Traceback" not in err


# ------------------------------------------------------------------ outputs


def test_json_keys_are_stable_and_numbers_exact(tmp_path: Path) -> None:
    log = write(tmp_path / "b.jsonl", bot_records() + client_records())
    rows, _ = run_json(log)
    assert all(list(r) == list(report.JSON_KEYS) for r in rows)
    client = by_source(rows)[CLIENT]
    assert client == {
        "source": CLIENT,
        "family": 4,
        "plan": "residential",
        "score": 0,
        "verdict": "misconfigured client",
        "reason": CLIENT_REASON,
        "attempts": 70,
        "distinct_destinations": 1,
        "destinations_sample": ["198.51.100.77"],
        "first_seen": "2026-11-23T18:00:10.000Z",
        "last_seen": "2026-11-23T19:09:10.000Z",
        "windows_active": 14,
        "peak_window_attempts": 5,
        "peak_rate": 0.02,
        "retry_interval_s": 60.0,
        "routers": ["edge1"],
        "action": "drop",
    }


def test_csv_parses_back_with_exact_numbers(tmp_path: Path) -> None:
    log = write(tmp_path / "b.jsonl", bot_records() + client_records())
    code, out, err = run(log, "--csv")
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert list(table[0]) == list(report.JSON_KEYS)
    rows = {r["source"]: r for r in table}
    assert int(rows[BOT]["attempts"]) == 9600
    assert int(rows[BOT]["distinct_destinations"]) == 57
    assert int(rows[CLIENT]["windows_active"]) == 14
    assert rows[CLIENT]["reason"] == CLIENT_REASON
    assert rows[BOT]["routers"] == "edge1"


def test_table_has_totals_and_reasons(tmp_path: Path) -> None:
    log = write(tmp_path / "b.jsonl", bot_records() + client_records())
    code, out, err = run(log)
    assert (code, err) == (0, "")
    first = out.splitlines()[0]
    assert first == (
        "2 sources, 9670 blocked attempts, 2026-11-23 18:00:03Z to 2026-11-23 19:09:10Z"
        " (1h09m), 1 file read"
    )
    assert CLIENT_REASON in out
    assert "bot-like: 57 distinct MX destinations" in out


def test_top_limits_every_format(tmp_path: Path) -> None:
    log = write(tmp_path / "b.jsonl", bot_records() + client_records())
    rows, _ = run_json(log, "--top", "1")
    assert [r["source"] for r in rows] == [BOT]
    _, out, _ = run(log, "--top", "1")
    assert "top 1 of 2 by bot score" in out
    assert CLIENT not in out


# ------------------------------------------------------------------ time filters


def test_since_until_iso_and_dates(tmp_path: Path) -> None:
    log = write(tmp_path / "b.jsonl", client_records())
    # Windows 2..4 are active 18:10:10-18:24:10; the edges are inclusive/exclusive.
    rows, _ = run_json(log, "--since", "2026-11-23T18:10:00Z", "--until", "2026-11-23T18:25:00")
    assert rows[0]["windows_active"] == 3
    assert rows[0]["attempts"] == 15
    rows, _ = run_json(log, "--since", "2026-11-24")
    assert rows == []
    rows, _ = run_json(log, "--until", "2026-11-24")
    assert rows[0]["windows_active"] == 14


def test_since_relative_to_injected_now(tmp_path: Path) -> None:
    old = rec(BOT, 0, packets=9, first_s=0, last_s=9, distinct=1, sample=["192.0.2.1"])
    recent = dict(old, source="100.64.0.99")
    recent["first_seen"] = ts(NOW - timedelta(hours=2))
    recent["last_seen"] = ts(NOW - timedelta(hours=1))
    log = write(tmp_path / "b.jsonl", [old, recent])
    rows, _ = run_json(log, "--since", "24h")  # NOW - 24h = 11-23 12:00: both
    assert len(rows) == 2
    rows, _ = run_json(log, "--since", "3h")
    assert [r["source"] for r in rows] == ["100.64.0.99"]
    rows, _ = run_json(log, "--since", "7d", "--until", "3h")
    assert [r["source"] for r in rows] == [BOT]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "yesterday"], "--since: not an ISO 8601 time"),
        (["--until", "24x"], "--until: not an ISO 8601 time"),
        (["--since", "1h", "--until", "2h"], "--since must be before --until"),
    ],
)
def test_bad_time_arguments(tmp_path: Path, argv: list[str], message: str) -> None:
    log = write(tmp_path / "b.jsonl", client_records())
    code, out, err = run(log, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith(f"op25b report: error: {message}")


def test_parse_time_arg_forms() -> None:
    ms = report.parse_time_arg
    assert ms("2026-11-23", NOW) == ms("2026-11-23T00:00:00Z", NOW)
    assert ms("2026-11-23T02:00:00+02:00", NOW) == ms("2026-11-23T00:00:00Z", NOW)
    assert ms("90m", NOW) == ms("1.5h", NOW) == ms("2026-11-24T10:30:00Z", NOW)
    assert ms("1w", NOW) == ms("7d", NOW)


# ------------------------------------------------------------------ chart


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_chart_is_a_png_of_the_configured_size(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from op25b.report import chart

    log = write(tmp_path / "b.jsonl", bot_records() + client_records())
    png = tmp_path / "ticket.png"
    code, _, err = run(log, "--chart", png)
    assert (code, err) == (0, "")
    assert png_size(png.read_bytes()) == (chart.WIDTH_PX, chart.HEIGHT_PX) == (1200, 600)


def test_chart_data_buckets_windows_and_fills_gaps(tmp_path: Path) -> None:
    recs = client_records()
    log = write(tmp_path / "b.jsonl", [recs[0], recs[5], *bot_records()])
    rep = report.build_report([str(log)], lambda p: None, chart=True)
    assert rep.windows is not None
    data = report.chart_data(rep.sources, rep.windows)
    assert data.bucket_ms == 300_000
    assert len(data.starts) == 8  # windows 0..7, gaps filled with zeros
    series = dict(data.series)
    assert series[f"{CLIENT}: likely misconfigured client, score 0"] == (5, 0, 0, 0, 0, 5, 0, 0)
    assert "2026-11-23 18:00:03Z to 2026-11-23 18:35:33Z" in data.title


def test_empty_chart_still_renders(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    log = write(tmp_path / "b.jsonl", [])
    png = tmp_path / "empty.png"
    code, _, err = run(log, "--chart", png)
    assert (code, err) == (0, "")
    assert png_size(png.read_bytes()) == (1200, 600)


def test_chart_without_matplotlib_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    log = write(tmp_path / "b.jsonl", client_records())
    code, out, err = run(log, "--chart", tmp_path / "x.png")
    assert code == 2
    assert out == ""
    assert err.startswith("op25b report: error: --chart needs matplotlib")
    assert "pip install 'op25b[report]'" in err


def test_chart_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    log = write(tmp_path / "b.jsonl", client_records())
    code, _, err = run(log, "--chart", tmp_path / "no" / "such" / "dir.png")
    assert code == 2
    assert err.startswith("op25b report: error: --chart: cannot write")


def test_report_does_not_import_matplotlib() -> None:
    code = (
        "import sys, op25b.report.desk, op25b.report.chart\n"
        "sys.exit('matplotlib' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@given(st.integers(0, 253_402_300_799_999))  # up to 9999-12-31T23:59:59.999Z
def test_timestamps_round_trip_to_the_millisecond(ms: int) -> None:
    assert report.parse_timestamp(report.format_ms(ms)) == ms
