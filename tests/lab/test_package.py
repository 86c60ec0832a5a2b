"""The Debian package, for real: ``scripts/package.sh`` builds it (or finds it up to
date), ``apt-get install ./dist/op25b_*.deb`` installs it, the installed command, unit,
man pages and completion work, and removing it leaves no rules and no files but the
conffiles; purging leaves nothing.

apt runs inside a network namespace this test creates, so the maintainer scripts'
``op25b rules remove`` can only ever touch that namespace's firewall. The package is
purged again whatever happens. The service is never started (no systemd as PID 1).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from op25b import __version__
from op25b.lab.netns import run_in
from op25b.lab.processes import DaemonProcess, SyslogReceiver

REPO = Path(__file__).resolve().parents[2]
UNIT = "/lib/systemd/system/op25b.service"
COMPLETION = "/usr/share/bash-completion/completions/op25b"
# apt waits for a dpkg lock held by someone else instead of failing at once.
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"]


def sh(argv: list[str], ns: str | None = None, timeout: float = 600) -> str:
    """Run a command (in ``ns`` if given); its output, or the test fails with it."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    kw = {"capture_output": True, "text": True, "timeout": timeout, "check": False, "env": env}
    proc = run_in(ns, argv, **kw) if ns else subprocess.run(argv, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return str(proc.stdout)


def installed() -> bool:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "op25b"], capture_output=True, text=True, check=False
    )
    return "ok installed" in proc.stdout or "config-files" in proc.stdout


@dataclass(frozen=True)
class Installed:
    ns: str
    deb: Path
    files: tuple[str, ...]  # dpkg -L: every path the package owns
    conffiles: tuple[str, ...]


@pytest.fixture(scope="module")
def package() -> Iterator[Installed]:
    assert not installed(), "an op25b package is installed here already; the test would remove it"
    out = sh([str(REPO / "scripts" / "package.sh")], timeout=900)
    deb = REPO / out.strip().splitlines()[-1]
    assert deb.name == f"op25b_{__version__}_{sh(['dpkg', '--print-architecture']).strip()}.deb"
    ns = f"op25bpkg-{secrets.token_hex(3)}"
    sh(["ip", "netns", "add", ns])
    try:
        sh([*APT, "install", f"./{deb.relative_to(REPO)}"], ns)  # as the README says
        files = tuple(sh(["dpkg", "-L", "op25b"]).split("\n"))
        conf = sh(["dpkg-query", "-W", "-f=${Conffiles}", "op25b"])
        conffiles = tuple(line.split()[0] for line in conf.splitlines() if line.strip())
        yield Installed(ns, deb, tuple(f for f in files if f), conffiles)
    finally:
        if installed():
            subprocess.run(
                ["ip", "netns", "exec", ns, *APT, "purge", "op25b"],
                capture_output=True,
                timeout=600,
                check=False,
            )
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def test_installed_command_runs(package: Installed) -> None:
    assert os.path.realpath("/usr/bin/op25b") == "/opt/venvs/op25b/bin/op25b"
    # The package ships no compiled hot path (op25b.native): it says it runs pure Python.
    version = sh(["/usr/bin/op25b", "--version"]).strip()
    assert version.startswith(f"op25b {__version__} (hot path: pure Python, no compiled build")
    # the starter policy is valid, monitor-only, and `check` reads it by default
    summary = sh(["/usr/bin/op25b", "check", "/etc/op25b/policy.yaml"])
    assert "action         monitor" in summary and "no warnings" in summary
    assert sh(["/usr/bin/op25b", "check", "--quiet"]) == ""
    sh(["/usr/bin/op25b", "check", "-q", "/usr/share/doc/op25b/examples/example.yaml"])
    # the compiled netfilterqueue binding is in the package's venv
    sh(["/opt/venvs/op25b/bin/python", "-c", "import netfilterqueue, yaml"])


def test_installed_unit_verifies_and_points_at_the_command(package: Installed) -> None:
    text = Path(UNIT).read_text()
    execs = re.findall(r"^ExecStart(?:Pre)?=(\S+)", text, re.M)
    assert execs == ["/usr/bin/op25b", "/usr/bin/op25b"]
    assert all(os.access(e, os.X_OK) for e in execs)
    assert "/usr/local/bin" not in text.split("[Unit]", 1)[1]
    # with the man check on: Documentation=man:op25b(8) man:op25b-policy(5) must resolve
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=yes", UNIT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "op25b" in line]
    assert proc.returncode == 0 and ours == [], proc.stdout + proc.stderr
    # installed, not enabled: an operator writes the policy first
    assert not Path("/etc/systemd/system/multi-user.target.wants/op25b.service").exists()


def test_man_pages_completion_and_docs(package: Installed) -> None:
    assert sh(["man", "-w", "op25b"]).strip() == "/usr/share/man/man8/op25b.8.gz"
    assert sh(["man", "-w", "5", "op25b-policy"]).strip() == "/usr/share/man/man5/op25b-policy.5.gz"
    page = sh(["man", "-P", "cat", "8", "op25b"], timeout=60)
    assert "EXIT STATUS" in page and "op25b check" in page
    assert "complete -F _op25b op25b" in Path(COMPLETION).read_text()
    for doc in ("README.md", "abuse-log-format.md", "diff-format.md", "examples/example.yaml"):
        assert Path("/usr/share/doc/op25b", doc).is_file(), doc
    assert {"/etc/op25b/policy.yaml", "/etc/logrotate.d/op25b"} == set(package.conffiles)
    sh(["logrotate", "--debug", "/etc/logrotate.d/op25b"])


def ruleset(ns: str) -> str:
    """op25b's traces show as OP25B chains, op25b-* sets and the inet op25b table."""
    return "".join(
        sh(argv, ns)
        for argv in (
            ["iptables-save"],
            ["ip6tables-save"],
            ["ipset", "list", "-n"],
            ["nft", "list", "tables"],
        )
    )


def test_remove_leaves_no_rules_and_only_conffiles_then_purge_leaves_nothing(
    package: Installed, tmp_path: Path
) -> None:
    # A killed daemon leaves its on_daemon_down fallback in place on purpose ...
    with SyslogReceiver() as syslog:
        daemon = DaemonProcess(
            package.ns,
            "/etc/op25b/policy.yaml",
            ("--syslog", syslog.path, "--abuse-log", str(tmp_path / "blocked.jsonl")),
            command=("/usr/bin/op25b",),
        )
        try:
            daemon.wait_started()
        finally:
            daemon.kill9()
    assert "OP25B" in ruleset(package.ns) and "op25b-" in ruleset(package.ns)
    assert "table inet op25b" in ruleset(package.ns)
    # ... and removing the package takes it away with everything but the conffiles.
    sh([*APT, "remove", "op25b"], package.ns)
    assert "OP25B" not in ruleset(package.ns) and "op25b" not in ruleset(package.ns)
    left = [p for p in package.files if os.path.lexists(p) and not os.path.isdir(p)]
    assert sorted(left) == sorted(package.conffiles)
    for gone in ("/opt/venvs/op25b", "/usr/share/doc/op25b", COMPLETION, "/usr/bin/op25b"):
        assert not os.path.lexists(gone), gone
    sh([*APT, "purge", "op25b"], package.ns)
    assert not installed()
    assert [p for p in package.files if os.path.lexists(p) and p.startswith("/etc/op25b")] == []
    for gone in ("/etc/op25b", "/var/log/op25b", "/opt/venvs/op25b"):
        assert not os.path.lexists(gone), gone
