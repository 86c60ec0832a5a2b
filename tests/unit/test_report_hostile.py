"""Hostile abuse logs: lines no producer writes, read in bounded memory and time.

Both engines must print the same (``run`` from test_report checks it); the reader's
limits are exercised here directly where the engines' output cannot show them.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from test_report import client_records, run, write

from op25b.report import abuseread


def test_an_endless_line_is_skipped_in_pieces(tmp_path: Path) -> None:
    # A gzip bomb of one line: the reader must not hold it whole (it reads at most
    # MAX_LINE_BYTES + 1 at a time), and both engines skip it the same way.
    good = [json.dumps(r) + "\n" for r in client_records()]
    log = tmp_path / "bomb.jsonl.gz"
    with gzip.open(log, "wt", compresslevel=1) as f:
        f.write(good[0])
        f.write("x" * (abuseread.MAX_LINE_BYTES + 5) + "\n")
        f.writelines(good[1:])
    longest: list[int] = []
    real = gzip.GzipFile.readline

    def spy(self: gzip.GzipFile, size: int | None = -1) -> bytes:
        line = real(self, size)
        longest.append(len(line))
        return line

    code, out, err = run(log, "--json")
    assert code == 0
    assert err == f"{log}:2: line longer than {abuseread.MAX_LINE_BYTES} bytes skipped\n"
    assert len(json.loads(out)) == 1  # the client's records around it all counted
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gzip.GzipFile, "readline", spy)
        lines = abuseread.read_log(str(log), lambda r: None, lambda p: None)
    assert lines == len(good) + 1
    assert max(longest) <= abuseread.MAX_LINE_BYTES + 1


def test_a_line_of_nested_starts_is_tried_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each '{"' is a place a record glued after a crash stub might start; trying all
    # of a hostile line's million starts (each a deep parse) never ended.
    tries: list[int] = []
    real = json.JSONDecoder.raw_decode

    def counting(self: json.JSONDecoder, s: str, idx: int = 0) -> tuple[object, int]:
        tries.append(idx)
        return real(self, s, idx)

    monkeypatch.setattr(json.JSONDecoder, "raw_decode", counting)
    line = ('{"a":' * 50 + "0" + "}" * 50 + " ") * 2000
    assert abuseread._recover_tail(line.encode()) is None
    assert 0 < len(tries) <= 16


def test_a_record_glued_after_a_stub_is_still_recovered(tmp_path: Path) -> None:
    first, second = (json.dumps(r) for r in client_records()[:2])
    log = write(tmp_path / "blocked.jsonl", [], tail=first[:40] + second + "\n")
    kept: list[abuseread.Record] = []
    abuseread.read_log(str(log), kept.append, lambda p: None)
    assert [r.source for r in kept] == [json.loads(second)["source"]]
