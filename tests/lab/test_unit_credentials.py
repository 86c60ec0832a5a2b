"""The systemd unit as deployed: ``op25b run`` with exactly the credentials it grants.

The credential lines of ``systemd/op25b.service`` (CapabilityBoundingSet,
AmbientCapabilities, SecureBits, NoNewPrivileges, User/Group) are read from the file
and applied with ``setpriv`` inside the lab router; the daemon must then install its
rules, nft table and sets, enforce on a real queue, and remove them on a clean stop.
So a change to the unit cannot silently leave the daemon powerless. systemd itself is
never started (booting it as PID 1 in a namespace that shares this filesystem would
empty the real /tmp), so the unit's sandboxing (ProtectSystem, SystemCallFilter, ...)
is not applied here; ``systemd-analyze verify`` (tests/unit/test_systemd.py) lints it.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_daemon import outcomes, probes, write_policy

from op25b.kernel import rules
from op25b.lab import topology as L
from op25b.lab.processes import DaemonProcess, SyslogReceiver
from op25b.lab.topology import Lab

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_systemd import UNIT, parse_unit

if shutil.which("setpriv") is None:
    pytest.skip("needs setpriv (util-linux)", allow_module_level=True)

_YES = ("yes", "true", "on", "1")
# Linux capability numbers, for reading /proc/<pid>/status back.
_CAP_BITS = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21}


def _list(service: dict[str, list[str]], key: str) -> list[str]:
    """A list setting as systemd reads it: lines add up, an empty assignment resets."""
    out: list[str] = []
    for value in service.get(key, []):
        out = [*out, *value.split()] if value else []
    return out


def _last(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key, [])
    return values[-1] if values else ""


def _caps(names: list[str]) -> str:
    if any(n.startswith("~") for n in names):
        raise ValueError(f"inverted capability lists are not supported here: {names}")
    return ",".join(["-all", *(f"+{n.removeprefix('CAP_').lower()}" for n in names)])


def setpriv_argv(service: dict[str, list[str]]) -> list[str]:
    """The ``setpriv`` command line that gives exactly the unit's credentials."""
    argv = ["setpriv", "--bounding-set", _caps(_list(service, "CapabilityBoundingSet"))]
    ambient = _caps(_list(service, "AmbientCapabilities"))
    argv += ["--inh-caps", ambient, "--ambient-caps", ambient]
    bits = _list(service, "SecureBits")
    if bits:
        argv += ["--securebits", ",".join(f"+{b.replace('-', '_')}" for b in bits)]
    if _last(service, "NoNewPrivileges").lower() in _YES:
        argv.append("--no-new-privs")
    if _last(service, "User"):
        argv += ["--reuid", _last(service, "User"), "--init-groups"]
    if _last(service, "Group"):
        argv += ["--regid", _last(service, "Group")]
    return [*argv, "--"]


def cap_mask(names: list[str]) -> int:
    return sum(1 << _CAP_BITS[n] for n in names)


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in lines)}


@pytest.fixture
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


@pytest.fixture
def cleanup(lab: Lab) -> Iterator[None]:
    yield
    rules.remove(cmd_prefix=["ip", "netns", "exec", lab.rtr])


def test_setpriv_argv_from_the_unit(service: dict[str, list[str]]) -> None:
    argv = setpriv_argv(service)
    assert argv[:3] == ["setpriv", "--bounding-set", "-all,+net_admin,+net_raw"]
    assert argv[5:7] == ["--ambient-caps", "-all"]
    assert "--no-new-privs" in argv and argv[-1] == "--"
    assert setpriv_argv({"CapabilityBoundingSet": ["CAP_NET_RAW", ""]})[2] == "-all"


def test_the_daemon_enforces_with_the_units_credentials(
    lab: Lab, listeners: object, tmp_path: Path, service: dict[str, list[str]], cleanup: None
) -> None:
    policy = write_policy(tmp_path / "p.yaml", "reject")
    with SyslogReceiver() as syslog:
        extra = ["--abuse-log", str(tmp_path / "a.jsonl"), "--syslog", syslog.path]
        daemon = DaemonProcess(lab.rtr, policy, extra, wrapper=setpriv_argv(service))
        try:
            daemon.wait_started()
            # The daemon really runs with the unit's credentials, nothing more.
            status = proc_status(daemon.proc.pid)
            bounding = cap_mask(_list(service, "CapabilityBoundingSet"))
            assert int(status["CapBnd"], 16) == bounding
            assert int(status["CapEff"], 16) == bounding
            assert status["NoNewPrivs"] == "1"
            assert "nft: " in rules.status(["ip", "netns", "exec", lab.rtr])
            blocked = probes(lab.res, [(L.RES_V4, L.NET_MX_V4, 25)], timeout=5)
            allowed = probes(lab.biz, [(L.BIZ_V4, L.NET_MX_V4, 25)], timeout=5)
            assert outcomes(blocked + allowed) == ["refused", "connected"]
        finally:
            code = daemon.stop()
    assert code == 0
    # A clean stop removed everything, with the same credentials.
    assert rules.status(["ip", "netns", "exec", lab.rtr]) == ""


def test_a_unit_without_net_admin_cannot_start_the_daemon(
    lab: Lab, tmp_path: Path, service: dict[str, list[str]], cleanup: None
) -> None:
    """The check above can fail: with CAP_NET_ADMIN taken out, op25b run refuses."""
    weakened = {**service, "CapabilityBoundingSet": ["CAP_NET_RAW"]}
    policy = write_policy(tmp_path / "p.yaml", "reject")
    extra = ["--abuse-log", str(tmp_path / "a.jsonl"), "--syslog", "udp://127.0.0.1:9"]
    daemon = DaemonProcess(lab.rtr, policy, extra, wrapper=setpriv_argv(weakened))
    assert daemon.proc.wait(60) != 0
    daemon.stop()
    assert any("installing kernel rules failed" in ln for ln in daemon.lines.snapshot())
