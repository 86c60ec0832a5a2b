"""Tests for the systemd integration: the unit file (``systemd-analyze verify`` plus
the properties the daemon relies on), the logrotate snippet (``logrotate -d``), and
op25b.daemon.sdnotify against a real unix datagram socket standing in for systemd."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from op25b.daemon.sdnotify import Notifier

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "op25b.service"
LOGROTATE = REPO / "systemd" / "op25b.logrotate"
INSTALLED = "/usr/local/bin/op25b"


def op25b_entry_point() -> str:
    """The venv's real ``op25b`` console script (what ExecStart should run)."""
    candidate = Path(sys.prefix) / "bin" / "op25b"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("op25b")
    if found is None:
        pytest.skip("no op25b entry point installed (pip install -e .)")
    return found


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as section -> key -> values (keys may repeat); comments dropped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        m = re.fullmatch(r"\[([A-Za-z]+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), {})
            continue
        assert current is not None, f"key outside a section: {raw!r}"
        key, eq, value = line.partition("=")
        assert eq, f"not key=value: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


# ------------------------------------------------------------------------ the unit


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    text = UNIT.read_text()
    assert text.count(INSTALLED) >= 2  # ExecStartPre and ExecStart
    copy = tmp_path / "op25b.service"
    copy.write_text(text.replace(INSTALLED, op25b_entry_point()))
    # --man=no: Documentation= names op25b(8), which only the package installs (the
    # package test verifies the installed unit with the man check on).
    proc = subprocess.run(
        [tool, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # other units on this machine may have their own complaints; ours must have none
    ours = [line for line in output.splitlines() if "op25b" in line]
    assert ours == [], "\n".join(ours)


def test_systemd_analyze_verify_catches_a_broken_copy(tmp_path: Path) -> None:
    """The check above can fail: an unknown key in our unit is reported."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    copy = tmp_path / "op25b.service"
    text = UNIT.read_text().replace(INSTALLED, op25b_entry_point())
    copy.write_text(text.replace("[Service]\n", "[Service]\nWatchdogSecs=30s\n", 1))
    # --man=no: Documentation= names op25b(8), which only the package installs (the
    # package test verifies the installed unit with the man check on).
    proc = subprocess.run(
        [tool, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "WatchdogSecs" in proc.stdout + proc.stderr


def test_unit_service_properties(unit: dict[str, dict[str, list[str]]]) -> None:
    svc = unit["Service"]
    assert svc["Type"] == ["notify"]
    assert svc["Restart"] == ["on-failure"]
    assert svc["NoNewPrivileges"] == ["yes"]
    assert svc["ProtectSystem"] == ["strict"]
    (caps,) = svc["CapabilityBoundingSet"]
    assert sorted(caps.split()) == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    # the reload path the daemon implements: validate, then SIGHUP re-reads the policy
    check_cmd, reload_cmd = svc["ExecReload"]
    assert check_cmd.split()[1:] == svc["ExecStartPre"][0].split()[1:]
    assert reload_cmd.split() == ["/bin/kill", "-HUP", "$MAINPID"]
    # a watchdog interval the daemon can ping (it pings at half of it)
    (watchdog,) = svc["WatchdogSec"]
    m = re.fullmatch(r"(\d+)(s|min)?", watchdog)
    assert m and int(m.group(1)) > 0, watchdog
    assert svc["NotifyAccess"] == ["main"]


def test_unit_runs_check_then_run_on_the_same_policy(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    svc = unit["Service"]
    (pre,) = svc["ExecStartPre"]
    (start,) = svc["ExecStart"]
    pre_argv, start_argv = pre.split(), start.split()
    assert pre_argv[:2] == [INSTALLED, "check"]
    assert start_argv[:2] == [INSTALLED, "run"]
    policy = start_argv[start_argv.index("--policy") + 1]
    assert pre_argv[-1] == policy
    # the check must not print a summary into the journal on every start
    assert "--quiet" in pre_argv or "-q" in pre_argv


def test_reload_fails_visibly_on_a_broken_policy(
    unit: dict[str, dict[str, list[str]]], tmp_path: Path
) -> None:
    """ExecReload's first command, run as systemd would: non-zero with file:line."""
    check = unit["Service"]["ExecReload"][0].split()
    good = REPO / "policies" / "example.yaml"
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nguarded_ports: [25, 587]\n")

    def run(policy: Path) -> subprocess.CompletedProcess[str]:
        argv = [op25b_entry_point(), *check[1:-1], str(policy)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    ok, bad = run(good), run(broken)
    assert ok.returncode == 0, ok.stderr
    assert bad.returncode == 1
    assert re.match(rf"{re.escape(str(broken))}:\d+:\d+: ", bad.stderr), bad.stderr


def test_unit_can_write_its_abuse_log(unit: dict[str, dict[str, list[str]]]) -> None:
    # ProtectSystem=strict makes /var read-only: the default abuse_log dir must be writable
    from op25b.policy.model import DaemonConfig

    log_dir = str(Path(DaemonConfig().abuse_log).parent)
    writable = " ".join(unit["Service"].get("ReadWritePaths", [])).split()
    logs = ["/var/log/" + d for d in unit["Service"].get("LogsDirectory", [])]
    assert log_dir in writable + logs


# ------------------------------------------------------------------------ sd_notify


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    assert len(path) < 100, "AF_UNIX paths are limited to 108 bytes"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    # sendto on a unix datagram socket is synchronous: what was sent is already queued,
    # so non-blocking reads need no waiting and an empty queue raises at once.
    s.setblocking(False)
    try:
        yield s, path
    finally:
        s.close()


def receive(s: socket.socket) -> list[str]:
    return s.recv(4096).decode().split("\n")


def assert_empty(s: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        s.recv(4096)


def test_notifier_sends_each_state(notify_socket: tuple[socket.socket, str]) -> None:
    s, path = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    assert n.enabled
    assert n.watchdog_interval == 15.0

    n.ready("2 plans, queue 0")
    assert receive(s) == ["READY=1", "STATUS=2 plans, queue 0"]

    before = time.monotonic_ns() // 1000
    n.reloading()
    after = time.monotonic_ns() // 1000
    lines = receive(s)
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after

    n.watchdog()
    assert receive(s) == ["WATCHDOG=1"]
    n.status("reloaded")
    assert receive(s) == ["STATUS=reloaded"]
    n.stopping()
    assert receive(s) == ["STOPPING=1"]
    assert_empty(s)


def test_notifier_abstract_socket() -> None:
    name = f"op25b-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.setblocking(False)
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert receive(s) == ["READY=1", "STATUS=up"]


def test_notifier_without_systemd_is_a_no_op(tmp_path: Path) -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.watchdog_interval == 0.0
    n.ready("x")  # must not raise
    n.watchdog()


def test_notifier_ignores_a_vanished_socket(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.enabled
    n.ready("x")  # advisory: ENOENT is swallowed
    n.stopping()


@pytest.mark.parametrize("usec", ["", "0", "abc", "-5"])
def test_notifier_watchdog_disabled_for_bad_usec(usec: str) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": usec}).watchdog_interval == 0.0


# ------------------------------------------------------------------------ logrotate


def test_logrotate_config_parses(tmp_path: Path) -> None:
    tool = shutil.which("logrotate") or next(
        (p for p in ("/usr/sbin/logrotate", "/sbin/logrotate") if os.access(p, os.X_OK)), None
    )
    if tool is None:
        pytest.skip("logrotate is not installed (add it to APT_PACKAGES in scripts/bootstrap.sh)")
    conf = tmp_path / "op25b"
    conf.write_text(LOGROTATE.read_text())
    conf.chmod(0o644)  # logrotate refuses group/world-writable configs
    proc = subprocess.run(
        [tool, "-d", "-s", str(tmp_path / "state"), str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert not [line for line in output.splitlines() if line.startswith("error:")], output
    # it did read our stanza
    assert "rotating pattern: /var/log/op25b/*.jsonl" in output
    rotate = re.search(r"^\s*rotate\s+(\d+)\s*$", LOGROTATE.read_text(), re.M)
    assert rotate is not None
    assert f"({rotate.group(1)} rotations)" in output
