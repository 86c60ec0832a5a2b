"""Hostile files and failing loads: the loader and `op25b check` never hang, never trace back.

A FIFO, a device, a directory, an oversized (sparse) file, running out of memory or a
bug inside the loader: each ends in one PolicyError line naming the place, and the
daemon section is refused by `check` exactly when `run` could not use it.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from op25b import cli
from op25b.policy import loader, sourcefiles
from op25b.policy.loader import LoadResult, PolicyError, load_policy
from op25b.policy.sourcefiles import MAX_POLICY_BYTES, MAX_POOL_BYTES, ReadRefused

REPO = Path(__file__).resolve().parents[2]

POLICY = """\
version: 1
guarded_ports: [25]
action: drop
plans:
  mobile:
    exempt: false
    prefixes_file: pools/mobile.txt
"""
POOL_KEY = "p.yaml:7:20: plans.mobile.prefixes_file"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    Path("pools").mkdir()
    Path("p.yaml").write_text(POLICY)
    return tmp_path


def error() -> str:
    with pytest.raises(PolicyError) as info:
        load_policy("p.yaml")
    return str(info.value)


def check_in_subprocess(cwd: Path, policy: str) -> subprocess.CompletedProcess[str]:
    """`op25b check` as its own process; a hang shows as TimeoutExpired, not a stuck suite."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "op25b", "check", policy],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        # A blocked open() never returns; 30 s only keeps a loaded CI box from flaking.
        timeout=30,
        check=False,
    )


# ----------------------------------------------------------------- not regular files


def test_fifo_as_pool_file_is_refused_without_hanging(in_tmp: Path) -> None:
    os.mkfifo("pools/mobile.txt")  # nobody ever writes: a blocking open() waits forever
    proc = check_in_subprocess(in_tmp, "p.yaml")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        f"{POOL_KEY}: cannot read pools/mobile.txt: not a regular file (it is a FIFO)\n"
    )


def test_fifo_as_policy_file_is_refused_without_hanging(in_tmp: Path) -> None:
    os.mkfifo("fifo.yaml")
    proc = check_in_subprocess(in_tmp, "fifo.yaml")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == "fifo.yaml: cannot read policy: not a regular file (it is a FIFO)\n"


def test_device_and_directory_are_refused(in_tmp: Path) -> None:
    os.symlink("/dev/zero", "pools/mobile.txt")  # endless: reading it never finishes
    assert error() == (
        f"{POOL_KEY}: cannot read pools/mobile.txt: not a regular file (it is a character device)"
    )
    os.unlink("pools/mobile.txt")
    os.mkdir("pools/mobile.txt")
    assert error() == (
        f"{POOL_KEY}: cannot read pools/mobile.txt: not a regular file (it is a directory)"
    )


def test_policy_as_device_is_refused() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("/dev/zero")
    assert str(info.value) == (
        "/dev/zero: cannot read policy: not a regular file (it is a character device)"
    )


# ----------------------------------------------------------------------- size limits


def test_pool_file_over_the_limit_is_refused_by_its_size(in_tmp: Path) -> None:
    # Sparse: the test costs no disk and no memory; the loader must not read it.
    with open("pools/mobile.txt", "wb") as f:
        f.truncate(MAX_POOL_BYTES + 1)
    assert error() == (
        f"{POOL_KEY}: cannot read pools/mobile.txt: 256.0 MiB (268435457 bytes) is over"
        " the 256 MiB limit for pool files"
    )


def test_pool_limit_holds_for_all_pool_files_together(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "MAX_POOL_BYTES", 40)
    Path("pools/mobile.txt").write_text("100.64.0.0/16\n100.65.0.0/16\n")  # 28 bytes
    Path("pools/more.txt").write_text("100.66.0.0/16\n")  # 14 bytes: 42 in all
    Path("p.yaml").write_text(
        POLICY + "  more:\n    exempt: false\n    prefixes_file: pools/more.txt\n"
    )
    assert error() == (
        "p.yaml:10:20: plans.more.prefixes_file: cannot read pools/more.txt: 14 bytes is over"
        " the 40 bytes limit for pool files together (12 bytes left after the earlier ones)"
    )


def test_policy_file_over_the_limit_is_refused(in_tmp: Path) -> None:
    with open("big.yaml", "wb") as f:
        f.write(POLICY.encode())
        f.truncate(MAX_POLICY_BYTES + 1)
    with pytest.raises(PolicyError) as info:
        load_policy("big.yaml")
    assert str(info.value) == (
        "big.yaml: cannot read policy: 16.0 MiB (16777217 bytes) is over the 16 MiB limit"
        " for a policy file (big pools go in a prefixes_file)"
    )


def test_a_file_growing_past_the_limit_while_read_is_refused() -> None:
    # A pipe stands in for a file that grows after fstat: more bytes than the limit.
    r, w = os.pipe()
    try:
        os.write(w, b"x" * 11)
        os.close(w)
        with pytest.raises(ReadRefused) as info:
            sourcefiles._read_at_most(r, 10, "the limit")
        assert str(info.value) == "grew past the limit while being read"
    finally:
        os.close(r)


def test_file_at_the_limit_is_read(in_tmp: Path) -> None:
    Path("exact").write_bytes(b"y" * 10)
    assert sourcefiles.read_regular_file("exact", 10, "the limit") == b"y" * 10


# ------------------------------------------------------- memory and unexpected errors


def test_memory_error_in_the_pool_parser_is_a_clear_error(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("pools/mobile.txt").write_text("100.64.0.0/16\n")

    def exhausted(text: str, progress: object = None) -> object:
        raise MemoryError

    monkeypatch.setattr(loader, "parse_pool", exhausted)
    assert error() == f"{POOL_KEY}: cannot load pools/mobile.txt: out of memory while parsing it"


def test_memory_error_anywhere_else_is_a_clear_error(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(text: str, source: str) -> object:
        raise MemoryError

    monkeypatch.setattr(loader, "compose", exhausted)
    assert error() == "p.yaml: out of memory while loading the policy"


def test_a_bug_in_the_loader_is_one_line_too(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Path("pools/mobile.txt").write_text("100.64.0.0/16\n")

    def broken(*args: object) -> None:
        raise TypeError("unexpected thing")

    monkeypatch.setattr(loader, "check_overlaps", broken)
    assert error() == (
        "p.yaml: cannot load policy: internal error TypeError: unexpected thing"
        " (please report this as an op25b bug)"
    )


def test_check_prints_one_line_for_memory_error(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("pools/mobile.txt").write_text("100.64.0.0/16\n")
    monkeypatch.setattr(
        loader, "parse_pool", lambda text, progress=None: (_ for _ in ()).throw(MemoryError())
    )
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["check", "p.yaml"], out, err) == 1
    assert out.getvalue() == ""
    assert (
        err.getvalue()
        == f"{POOL_KEY}: cannot load pools/mobile.txt: out of memory while parsing it\n"
    )


# ------------------------------------------------ the daemon section as `run` uses it

INLINE = POLICY.replace("prefixes_file: pools/mobile.txt", "prefixes: [100.64.0.0/16]")


def daemon_error(lines: str) -> str:
    Path("p.yaml").write_text(INLINE + "daemon:\n" + lines)
    return error()


def daemon_ok(lines: str) -> LoadResult:
    Path("p.yaml").write_text(INLINE + "daemon:\n" + lines)
    return load_policy("p.yaml")


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            "  queue: 65535\n  workers: 2\n",
            "p.yaml:10:12: daemon.workers: workers 2 from queue 65535 need queues 65535..65536,"
            " but queue numbers end at 65535 (queue + workers - 1 <= 65535)",
        ),
        (  # the key written last is not the one blamed: workers is what overflows
            "  workers: 64\n  queue: 65500\n",
            "p.yaml:9:12: daemon.workers: workers 64 from queue 65500 need queues 65500..65563,"
            " but queue numbers end at 65535 (queue + workers - 1 <= 65535)",
        ),
        (
            "  block_cache_timeout: 1073742\n",
            "p.yaml:9:24: daemon.block_cache_timeout: 1073742 is out of range (0..1073741)",
        ),
        (
            "  abuse_window: 86401\n",
            "p.yaml:9:17: daemon.abuse_window: 86401 is out of range (1..86400 seconds)",
        ),
        (
            "  counters_interval: 0.001\n",
            "p.yaml:9:22: daemon.counters_interval: 0.001 is out of range (1..86400 seconds)",
        ),
        (
            '  abuse_log: "/var/log/x\\0y"\n',
            "p.yaml:9:14: daemon.abuse_log: a file path cannot contain a NUL byte:"
            " '/var/log/x\\x00y'",
        ),
        (
            "  abuse_log: /var/log/op25b/\n",
            "p.yaml:9:14: daemon.abuse_log: expected a file path, got a directory:"
            " '/var/log/op25b/'",
        ),
        (
            "  abuse_log: p.yaml\n",
            "p.yaml:9:14: daemon.abuse_log: 'p.yaml' is p.yaml, a file this policy is read from",
        ),
        (
            "  syslog: {address: /" + "s" * 107 + "}\n",
            "p.yaml:9:21: daemon.syslog.address: not a usable socket path (108 bytes; at most"
            " 107, no NUL): '/" + "s" * 107 + "'",
        ),
    ],
)
def test_daemon_section_refused_as_run_would_fail(in_tmp: Path, lines: str, expected: str) -> None:
    assert daemon_error(lines) == expected


def test_daemon_section_limits_are_inclusive(in_tmp: Path) -> None:
    cfg = daemon_ok(
        "  queue: 65534\n  workers: 2\n  block_cache_timeout: 1073741\n"
        "  abuse_window: 86400\n  counters_interval: 1\n  abuse_log: /var/log/op25b/b.jsonl\n"
        "  syslog: {address: /" + "s" * 106 + "}\n"
    ).policy.daemon
    assert (cfg.queue, cfg.workers, cfg.block_cache_timeout) == (65534, 2, 1073741)
    assert (cfg.abuse_window, cfg.counters_interval) == (86400.0, 1.0)
    assert daemon_ok("  queue: 65535\n").policy.daemon.queue == 65535


def test_abuse_log_must_not_be_a_pool_file(in_tmp: Path) -> None:
    Path("pools/mobile.txt").write_text("100.64.0.0/16\n")
    Path("p.yaml").write_text(POLICY + "daemon:\n  abuse_log: ./pools/../pools/mobile.txt\n")
    assert error() == (
        "p.yaml:9:14: daemon.abuse_log: './pools/../pools/mobile.txt' is pools/mobile.txt,"
        " a file this policy is read from"
    )


def test_relative_abuse_log_is_a_warning(in_tmp: Path) -> None:
    result = daemon_ok("  abuse_log: blocked.jsonl\n")
    [warning] = result.warnings
    assert str(warning) == (
        "p.yaml:9:14: daemon.abuse_log: relative path 'blocked.jsonl': the daemon opens it"
        " relative to its working directory (/ under systemd); give an absolute path"
    )


def test_run_refuses_what_check_refuses(in_tmp: Path) -> None:
    # `run` used to die with a traceback on this one after `check` had accepted it.
    Path("p.yaml").write_text(INLINE + "daemon:\n  queue: 65535\n  workers: 2\n")
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["check", "p.yaml"], out, err) == 1
    checked = err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["run", "--policy", "p.yaml"], out, err) == 1
    assert err.getvalue() == checked  # the same message, the same shape, as `check`
    assert "queue numbers end at 65535" in checked
