"""Progress on stderr: drawn on a terminal only, erased at the end, never in pipes."""

from __future__ import annotations

import io
import json
import os
import pty
from pathlib import Path

import pytest

from op25b.cli import main
from op25b.report import pcapread
from op25b.util import progress
from op25b.util.progress import Progress, human_bytes

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "example.yaml"


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (999, 1000, 1_234_567, 3.2e9, 5e12)] == [
        "999 B",
        "1.0 kB",
        "1.2 MB",
        "3.2 GB",
        "5.0 TB",
    ]


def test_line_on_a_terminal_then_erased(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "MIN_INTERVAL", 0.0)
    tty = FakeTty()
    p = Progress(tty, "op25b replay", total=2_000_000)
    p.update(500_000)
    line = tty.getvalue()
    assert line.startswith("\rop25b replay: 500.0 kB of 2.0 MB (25%), ")
    assert line.endswith("B/s\x1b[K")
    p.close()
    assert tty.getvalue() == line + "\r\x1b[K"


def test_nothing_off_a_terminal_or_before_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = io.StringIO()
    p = Progress(pipe, "x", total=10)
    p.update(5)
    p.close()
    assert pipe.getvalue() == ""
    tty = FakeTty()
    p = Progress(tty, "x", total=10)  # the default interval: a quick run shows nothing
    p.update(5)
    p.close()
    assert tty.getvalue() == ""


def test_replay_draws_progress_on_a_real_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_replay import capture_frames, write

    cap = tmp_path / "c.pcap"
    write(cap, capture_frames())
    monkeypatch.setattr(progress, "MIN_INTERVAL", 0.0)
    monkeypatch.setattr(pcapread, "_CHUNK", 256)  # several reads for a small file
    master, slave = pty.openpty()
    size = cap.stat().st_size
    with os.fdopen(slave, "w") as err:
        out = io.StringIO()
        code = main(["replay", str(EXAMPLE), str(cap), "--json", "--now", "2026-01-01"], out, err)
    # Everything was written before main returned: read what the terminal holds (once
    # it is drained, Linux answers EAGAIN, or EIO since the other side is closed).
    os.set_blocking(master, False)
    drawn = b""
    try:
        while chunk := os.read(master, 65536):
            drawn += chunk
    except OSError:
        pass
    os.close(master)
    assert drawn.endswith(b"\r\x1b[K")
    assert code == 0
    assert json.loads(out.getvalue())["packets_read"] == len(capture_frames())
    lines = [x for x in drawn.decode().split("\r") if x and x != "\x1b[K"]
    assert len(lines) >= 2
    assert all(x.startswith("op25b replay: ") and f"of {human_bytes(size)} (" in x for x in lines)
    assert f"{human_bytes(size)} of {human_bytes(size)} (100%)" in lines[-1]
