"""The DuckDB engine's fast reading (op25b.report.ducksql) takes a line as it is only
when the reader would read it the same: the edge cases, one by one.

For each odd line the test checks two things: which way the DuckDB engine read its file
(its own SQL, or the reader's normalised copy), and that both engines then print exactly
the same (``run`` from test_report). A line the fast path wrongly took would show up in
the first check even where the printed report happens to agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_report import BOT, CLIENT, bot_records, client_records, run, write

from op25b.report import duckengine

GOOD = client_records()[0]
TS = GOOD["first_seen"]  # e.g. 2026-11-23T18:00:10.000Z


@pytest.fixture
def normalised(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files the DuckDB engine handed to the reader instead of reading them itself."""
    seen: list[str] = []
    real = duckengine.DuckRun._normalise

    def spy(self: duckengine.DuckRun, index: int, path: str, on_problem: Any) -> str:
        seen.append(path)
        return real(self, index, path, on_problem)

    monkeypatch.setattr(duckengine.DuckRun, "_normalise", spy)
    return seen


def check(tmp_path: Path, odd: dict[str, Any] | str, normalised: list[str], *, fast: bool) -> str:
    """Write the good client log plus one odd line, run both engines, check the path."""
    line = odd if isinstance(odd, str) else json.dumps(odd)
    log = write(tmp_path / "blocked.jsonl", client_records()[1:], tail=line + "\n")
    code, _, err = run(log, "--json")
    assert code == 0, err
    assert set(normalised) == (set() if fast else {str(log)})
    return err


def test_producer_form_is_read_by_duckdb_itself(tmp_path: Path, normalised: list[str]) -> None:
    records = [*client_records(), *bot_records("edge2"), dict(GOOD, rule=None)]
    no_rule = {k: v for k, v in GOOD.items() if k != "rule"}
    log = write(tmp_path / "blocked.jsonl", records, tail=json.dumps(no_rule) + "\n")
    code, out, _ = run(log, "--json")
    assert code == 0
    assert normalised == []
    assert [r["source"] for r in json.loads(out)] == [BOT, CLIENT]


CERTAIN = {
    "compact separators": json.dumps(GOOD, separators=(",", ":")),
    "other key order": json.dumps(dict(reversed(list(GOOD.items())))),
    "empty sample": dict(GOOD, destinations_sample=[]),
    "empty rule": dict(GOOD, rule=""),
    "escape that decodes plain": json.dumps(GOOD).replace('"drop"', '"\\u0064rop"'),
    "non-ASCII plan": dict(GOOD, plan="résidentiel"),
    "leap day": dict(
        GOOD, window_start="2024-02-29T23:55:00.000Z", window_end="2024-02-29T23:59:59.999Z"
    ),
    "zero packets": dict(GOOD, packets=0),
    "minus zero": json.dumps(GOOD).replace('"packets": 5', '"packets": -0'),
}


@pytest.mark.parametrize("odd", CERTAIN.values(), ids=CERTAIN.keys())
def test_lines_duckdb_takes_as_they_are(
    tmp_path: Path, normalised: list[str], odd: dict[str, Any] | str
) -> None:
    assert check(tmp_path, odd, normalised, fast=True) == ""


NOT_CERTAIN = {
    # valid for the reader, in a form the fast path does not vouch for
    "offset time": dict(GOOD, first_seen=TS.replace("Z", "+00:00")),
    "no milliseconds": dict(GOOD, first_seen=TS.replace(".000Z", "Z")),
    "microseconds": dict(GOOD, first_seen=TS.replace(".000Z", ".000000Z")),
    "year before 1000": dict(
        GOOD, window_start="0999-01-01T00:00:00.000Z", first_seen="0999-01-01T00:00:00.000Z"
    ),
    "version 1.0": json.dumps(GOOD).replace('"version": 1', '"version": 1.0'),
    "version true": json.dumps(GOOD).replace('"version": 1', '"version": true'),
    "quote in the router": dict(GOOD, router='edge"1'),
    "backslash in the rule": dict(GOOD, rule="a\\b"),
    "newline in a sample": dict(GOOD, destinations_sample=["198.51.100.77\n"]),
    "huge count": dict(GOOD, distinct_destinations=10**19),
    # invalid for the reader: it prints why, both engines count the rest the same
    "month without zero": dict(GOOD, first_seen=TS.replace("-11-", "-9-")),
    "31 September": dict(GOOD, window_start="2026-09-31T00:00:00.000Z"),
    "hour 24": dict(GOOD, last_seen=TS.replace("T18:", "T24:")),
    "lowercase z": dict(GOOD, first_seen=TS.replace("Z", "z")),
    "no zone": dict(GOOD, first_seen=TS.replace("Z", "")),
    "five-digit year": dict(GOOD, first_seen="1" + TS),
    "time a number": dict(GOOD, first_seen=1700000000),
    "empty router": dict(GOOD, router=""),
    "router a number": dict(GOOD, router=5),
    "family as text": dict(GOOD, family="4"),
    "family 4.0": json.dumps(GOOD).replace('"family": 4', '"family": 4.0'),
    "family true": json.dumps(GOOD).replace('"family": 4', '"family": true'),
    "action unknown": dict(GOOD, action="allow"),
    "rule a number": dict(GOOD, rule=7),
    "packets negative": dict(GOOD, packets=-1),
    "packets 1e2": json.dumps(GOOD).replace('"packets": 5', '"packets": 1e2'),
    "packets 5.5": dict(GOOD, packets=5.5),
    "packets as text": dict(GOOD, packets="5"),
    "sample with a number": dict(GOOD, destinations_sample=["198.51.100.77", 5]),
    "sample with null": dict(GOOD, destinations_sample=[None]),
    "sample nested": dict(GOOD, destinations_sample=[["198.51.100.77"]]),
    "sample a string": dict(GOOD, destinations_sample="198.51.100.77"),
    "type missing": {k: v for k, v in GOOD.items() if k != "type"},
    "type a number": dict(GOOD, type=1),
    "last before first": dict(GOOD, last_seen=GOOD["window_start"]),
    "missing source": {k: v for k, v in GOOD.items() if k != "source"},
    # hostile lines: the reader skips them with a reason, DuckDB hands the file over
    "a JSON array": "[1, 2]",
    "nested past the stack": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("odd", NOT_CERTAIN.values(), ids=NOT_CERTAIN.keys())
def test_lines_duckdb_leaves_to_the_reader(
    tmp_path: Path, normalised: list[str], odd: dict[str, Any] | str
) -> None:
    check(tmp_path, odd, normalised, fast=False)


def test_another_record_type_is_skipped_quietly(tmp_path: Path, normalised: list[str]) -> None:
    assert check(tmp_path, dict(GOOD, type="counters"), normalised, fast=True) == ""


def test_a_count_beyond_duckdb_is_a_clear_error(tmp_path: Path) -> None:
    from test_report import run_engine

    log = write(tmp_path / "blocked.jsonl", [dict(GOOD, packets=2**127)])
    assert run_engine("python", log)[0] == 0
    code, out, err = run_engine("duckdb", log)
    assert (code, out) == (2, "")
    assert err == (
        f"op25b report: error: {CLIENT}: a count beyond 2**127 does not fit DuckDB; "
        "use --engine python\n"
    )


def test_a_hash_collision_never_merges_two_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row given the same hash: only rows equal in every field count once."""
    from op25b.report import desk, ducksql

    real = ducksql.create_read
    monkeypatch.setattr(
        ducksql,
        "create_read",
        lambda union, keep: real(union, keep).replace(f"hash({ducksql._RECORD})", "0::UBIGINT"),
    )
    a = write(tmp_path / "a.jsonl", [*client_records(), *bot_records()])
    b = write(tmp_path / "b.jsonl", [*bot_records("edge2"), *client_records()[:3]])
    paths = [str(a), str(b), str(a)]
    reps = [desk.build_report(paths, lambda p: None, engine=e) for e in ("python", "duckdb")]
    assert [s.as_dict() for s in reps[1].sources] == [s.as_dict() for s in reps[0].sources]
    assert (reps[1].records, reps[1].duplicates) == (reps[0].records, reps[0].duplicates)
    assert reps[0].duplicates == 22 + 3  # a again, and the client windows b repeats


def test_every_source_shown_is_merged_a_few_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--top 0 (every source's lists): merged in chunks, the same as in one piece."""
    from op25b.report import desk

    monkeypatch.setattr(duckengine, "DETAIL_SOURCES", 1)
    log = write(tmp_path / "a.jsonl", [*client_records(), *bot_records(), dict(GOOD, source=BOT)])
    reps = [desk.build_report([str(log)], lambda p: None, engine=e, chart=True, by_day=True)
            for e in ("python", "duckdb")]  # fmt: skip
    assert len(reps[1].sources) == 2
    assert [s.as_dict() for s in reps[1].sources] == [s.as_dict() for s in reps[0].sources]
    assert reps[1].windows == reps[0].windows
