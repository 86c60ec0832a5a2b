"""The abuse-log writer under a hostile environment: files vanish, symlinks, full disks.

Every case shows the writer never raises, says what happened once (``pop_events``),
counts it (``stats``) and gets the records into the file when it can, in order. The
real-kernel ENOSPC case (a tiny tmpfs) is tests/lab/test_abuselog_disk.py.
"""

from __future__ import annotations

import calendar
import errno
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from op25b.daemon.abuselog import AbuseLogEvent, AbuseLogStats, AbuseLogWriter
from op25b.dataplane.aggregator import AbuseAggregator, AbuseRecord
from op25b.policy.decide import Verdict

T0 = float(calendar.timegm((2026, 11, 23, 18, 0, 0)))


def records(n: int, first: int = 0) -> list[AbuseRecord]:
    a = AbuseAggregator(window=300, router="edge1")
    for i in range(first, first + n):
        a.observe(4, 0x64400000 + i, 0xC0000219, 25, "residential", Verdict.DROP, None, T0)
    return a.due(T0 + 300)


def sources(path: Path) -> list[str]:
    return [json.loads(line)["source"] for line in path.read_text().splitlines()]


def addr(i: int) -> str:
    return f"100.64.{i >> 8}.{i & 255}"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "log" / "blocked.jsonl"


# ------------------------------------------------------ the file changes under us


def test_deleted_log_is_recreated_at_the_next_write(log: Path) -> None:
    w = AbuseLogWriter(str(log))
    assert w.write(records(1)) == 1
    log.unlink()  # no SIGUSR1 follows
    assert w.write(records(2, 1)) == 2
    assert sources(log) == [addr(1), addr(2)]
    assert w.stats == AbuseLogStats(3, 0, 1, 0, 0, False)
    assert w.pop_events() == [
        AbuseLogEvent(False, f"abuse log {log} was deleted or replaced; reopening it")
    ]
    assert w.pop_events() == []  # told once


def test_replaced_log_is_followed(log: Path) -> None:
    w = AbuseLogWriter(str(log))
    w.write(records(1))
    fresh = log.with_name("new")
    fresh.write_text("")
    os.rename(fresh, log)  # someone put another file in place, without a signal
    w.write(records(1, 1))
    assert sources(log) == [addr(1)]
    assert w.stats.reopens == 1


def test_symlink_at_the_path_is_refused(log: Path, tmp_path: Path) -> None:
    target = tmp_path / "shadow"
    target.write_text("precious\n")
    log.parent.mkdir()
    log.symlink_to(target)
    w = AbuseLogWriter(str(log))
    with pytest.raises(OSError, match="symbolic link, refused"):
        w.open()  # what `op25b run` calls at start: refuses to start
    assert w.write(records(1)) == 0  # while running: counted, kept, never raised
    assert target.read_text() == "precious\n"
    assert (w.stats.errors, w.stats.pending, w.stats.failing) == (1, 1, True)
    [event] = w.pop_events()
    assert event == AbuseLogEvent(
        True, f"abuse log {log}: a symbolic link, refused; keeping records and retrying"
    )
    log.unlink()  # the admin removes it: the next attempt writes everything
    assert w.retry() == 1
    assert sources(log) == [addr(0)]


def test_symlink_swapped_in_while_open_is_refused(log: Path, tmp_path: Path) -> None:
    w = AbuseLogWriter(str(log))
    w.write(records(1))
    target = tmp_path / "shadow"
    target.write_text("")
    log.unlink()
    log.symlink_to(target)
    assert w.write(records(1, 1)) == 0
    assert target.read_text() == ""
    assert (w.stats.reopens, w.stats.errors, w.stats.pending) == (1, 1, 1)


def test_fifo_at_the_path_is_refused_without_blocking(log: Path) -> None:
    log.parent.mkdir()
    os.mkfifo(log)
    w = AbuseLogWriter(str(log))
    assert w.write(records(1)) == 0  # a blocking open would wait for a reader forever
    assert w.last_error == f"{log}: not a regular file (a FIFO), refused"


# ------------------------------------------------------------ full disk and EIO


def failing_write(
    monkeypatch: pytest.MonkeyPatch, w: AbuseLogWriter, err: int, partial: int = 0
) -> Callable[[], None]:
    """Make os.write fail with ``err`` on the writer's descriptor only (after writing
    ``partial`` bytes once); returns the function that heals the disk."""
    real = os.write
    state = {"partial": partial, "on": True}

    def fake(fd: int, data: bytes | memoryview) -> int:
        if state["on"] and fd == w._fd:
            if state["partial"]:
                n, state["partial"] = state["partial"], 0
                return real(fd, bytes(data[:n]))
            raise OSError(err, os.strerror(err))
        return real(fd, data)

    monkeypatch.setattr(os, "write", fake)
    return lambda: state.update(on=False)


def test_disk_full_is_counted_reported_once_and_retried(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = AbuseLogWriter(str(log))
    w.write(records(1))
    heal = failing_write(monkeypatch, w, errno.ENOSPC)
    assert w.write(records(2, 1)) == 0
    assert w.write(records(1, 3)) == 0
    assert w.stats == AbuseLogStats(1, 2, 0, 3, 0, True)
    assert w.pop_events() == [
        AbuseLogEvent(
            True, f"abuse log {log}: No space left on device; keeping records and retrying"
        )
    ]  # once, not once per failed attempt
    heal()
    assert w.retry() == 3
    assert sources(log) == [addr(i) for i in range(4)]
    assert w.stats == AbuseLogStats(4, 2, 0, 0, 0, False)
    assert w.pop_events() == [
        AbuseLogEvent(
            False, f"abuse log {log} is written again after 2 failed attempt(s); 0 record(s) lost"
        )
    ]


def test_line_cut_short_by_a_full_disk_stays_one_bad_line(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = AbuseLogWriter(str(log))
    heal = failing_write(monkeypatch, w, errno.ENOSPC, partial=40)
    assert w.write(records(2)) == 0
    assert len(log.read_bytes()) == 40  # a fragment of the first line
    heal()
    assert w.write(records(1, 2)) == 3
    lines = log.read_text().splitlines()
    assert len(lines) == 4
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])  # the fragment, alone on its line: readers skip it
    assert [json.loads(x)["source"] for x in lines[1:]] == [addr(0), addr(1), addr(2)]


def test_pending_is_bounded_and_losses_are_counted(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = len(records(1)[0].to_json()) + 1
    w = AbuseLogWriter(str(log), max_pending_bytes=3 * one)
    w.open()
    heal = failing_write(monkeypatch, w, errno.EIO)
    w.write(records(2))
    w.write(records(3, 2))  # 5 records, room for 3: the 2 oldest go
    assert (w.stats.pending, w.stats.lost) == (3, 2)
    events = w.pop_events()
    assert [e.error for e in events] == [True, True]
    assert events[1].message == f"abuse log {log}: records are being lost (2 so far)"
    heal()
    w.retry()
    assert sources(log) == [addr(2), addr(3), addr(4)]
    assert w.pop_events()[0].message.endswith("2 record(s) lost")


def test_fsync_error_is_counted_and_lines_not_written_twice(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = AbuseLogWriter(str(log))

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", eio)
    assert w.write(records(2)) == 2
    assert (w.stats.errors, w.stats.pending, w.stats.failing) == (1, 0, True)
    monkeypatch.undo()
    w.write(records(1, 2))
    assert sources(log) == [addr(0), addr(1), addr(2)]
    assert not w.stats.failing


def test_close_counts_what_never_got_out(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = AbuseLogWriter(str(log))
    w.open()
    failing_write(monkeypatch, w, errno.ENOSPC)
    w.write(records(2))
    w.close()  # shutdown with the disk still full
    assert (w.stats.pending, w.stats.lost) == (0, 2)
