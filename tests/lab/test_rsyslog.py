"""SyslogSender against a real rsyslogd: unix socket, UDP and TCP, parsed as RFC 5424.

The test starts its own rsyslogd with a private config, socket, ports and output file
in a temp directory (the system's syslog is never touched), sends through each
transport, and checks the fields rsyslog parsed out of our messages. Skipped only
when the rsyslogd binary is missing.
"""

from __future__ import annotations

import calendar
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from op25b.daemon.countersline import format_counters
from op25b.daemon.syslog import SyslogSender
from op25b.daemon.syslogformat import Severity
from op25b.dataplane.counters import Counters
from op25b.policy.decide import Decision, Reason, Verdict
from op25b.policy.model import SyslogConfig, SyslogTransport

RSYSLOGD = shutil.which("rsyslogd") or (
    "/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None
)
pytestmark = pytest.mark.skipif(RSYSLOGD is None, reason="rsyslogd not installed")

T = calendar.timegm((2026, 11, 23, 18, 0, 3)) + 0.412

# One line per message; fields rsyslog parsed from the RFC 5424 header and SD.
TEMPLATE = (
    "%syslogfacility-text%|%syslogseverity-text%|%timereported:::date-rfc3339%|"
    "%hostname%|%app-name%|%procid%|%msgid%|%structured-data%|%msg%\\n"
)


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Rsyslog:
    sock: str
    stock_sock: str  # imuxsock as stock /dev/log: the special (legacy-only) parser
    udp: int
    tcp: int
    out: Path

    def lines(self, count: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.out.exists():
                got = self.out.read_text().splitlines()
                if len(got) >= count:
                    return got
            time.sleep(0.05)
        return self.out.read_text().splitlines() if self.out.exists() else []


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    assert RSYSLOGD is not None
    r = Rsyslog(
        sock=str(tmp_path / "log.sock"),
        stock_sock=str(tmp_path / "stock.sock"),
        udp=free_port(socket.SOCK_DGRAM),
        tcp=free_port(socket.SOCK_STREAM),
        out=tmp_path / "out.log",
    )
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(
        f"""
global(workDirectory="{tmp_path}")
module(load="imuxsock" SysSock.Use="off")
# The special parser would ignore our header; the regular chain parses RFC 5424.
input(type="imuxsock" Socket="{r.sock}" UseSpecialParser="off" ParseHostname="on")
input(type="imuxsock" Socket="{r.stock_sock}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{r.udp}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{r.tcp}")
template(name="fields" type="string" string="{TEMPLATE}")
*.* action(type="omfile" file="{r.out}" template="fields")
"""
    )
    proc = subprocess.Popen(
        [RSYSLOGD, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"rsyslogd exited {proc.returncode}: {out}")
            try:
                with socket.create_connection(("127.0.0.1", r.tcp), timeout=0.2):
                    pass
                if Path(r.sock).exists() and Path(r.stock_sock).exists():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("rsyslogd did not start listening")
            time.sleep(0.05)
        yield r
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def counters_line() -> tuple[str, tuple[tuple[str, str], ...]]:
    c = Counters()
    loc = None
    for _ in range(12):
        c.record(Decision(Verdict.ACCEPT, Reason.NOT_GUARDED, None, loc))
    for _ in range(3):
        c.record(Decision(Verdict.DROP, Reason.BLOCKED, "residential", loc))
    return format_counters(c.snapshot(60.0), {})


@pytest.mark.parametrize("transport", ["unix", "udp", "tcp"])
def test_rsyslog_parses_our_messages(rsyslog: Rsyslog, transport: str) -> None:
    if transport == "unix":
        cfg = SyslogConfig(SyslogTransport.UNIX, rsyslog.sock, facility="local5")
    elif transport == "udp":
        cfg = SyslogConfig(SyslogTransport.UDP, "127.0.0.1", rsyslog.udp, "local5")
    else:
        cfg = SyslogConfig(SyslogTransport.TCP, "127.0.0.1", rsyslog.tcp, "local5")
    s = SyslogSender(cfg, hostname="edge1", procid="4242", wall=lambda: T)
    msg, params = counters_line()
    try:
        assert s.send(Severity.INFO, msg, msgid="counters", params=params)
        assert s.send(Severity.NOTICE, "new blocked source 100.64.0.66", msgid="blocked")
        assert s.send(Severity.ERR, "reload failed: p.yaml:3:5: bad prefix", msgid="reload")
        deadline = time.monotonic() + 5
        while s.pending and time.monotonic() < deadline:
            s.flush()
            time.sleep(0.01)
        lines = rsyslog.lines(3)
    finally:
        s.close()
    assert len(lines) == 3, lines
    fields = [line.split("|", 8) for line in lines]
    ts = "2026-11-23T18:00:03.412Z"
    sd = " ".join(f'{k}="{v}"' for k, v in params)
    # imuxsock stamps local messages with the receive time (its IgnoreTimestamp
    # default); the network inputs keep ours.
    for f in fields:
        if transport != "unix":
            assert f[2] in (ts, "2026-11-23T18:00:03.412+00:00"), f
        assert f[3:6] == ["edge1", "op25b", "4242"], f
    assert fields[0][0:2] == ["local5", "info"]
    assert fields[0][6:] == ["counters", f"[op25b@32473 {sd}]", msg]
    assert fields[1][0:2] == ["local5", "notice"]
    assert fields[1][6:] == ["blocked", "-", "new blocked source 100.64.0.66"]
    assert fields[2][1] == "err"
    assert fields[2][6:] == ["reload", "-", "reload failed: p.yaml:3:5: bad prefix"]


def test_stock_dev_log_needs_local_format(rsyslog: Rsyslog) -> None:
    """A stock imuxsock (like journald) reads only syslog(3)'s format: unix_format=local."""
    s = SyslogSender(
        SyslogConfig(SyslogTransport.UNIX, rsyslog.stock_sock),
        procid="4242",
        wall=lambda: T,
        unix_format="local",
    )
    msg, params = counters_line()
    try:
        assert s.send(Severity.INFO, msg, msgid="counters", params=params)
        lines = rsyslog.lines(1)
    finally:
        s.close()
    [f] = [line.split("|", 8) for line in lines]
    sd = " ".join(f'{k}="{v}"' for k, v in params)
    assert f[0:2] == ["local5", "info"]
    assert f[4:6] == ["op25b", "4242"]
    assert f[8].strip() == f"counters [op25b@32473 {sd}] {msg}"


def test_sender_with_syslog_away(tmp_path: Path) -> None:
    """Sending while rsyslog is away neither raises nor blocks."""
    s = SyslogSender(
        SyslogConfig(SyslogTransport.UNIX, str(tmp_path / "gone.sock")), hostname="edge1"
    )
    t0 = time.monotonic()
    for _ in range(100):
        assert s.send(Severity.INFO, "x") is False
    assert time.monotonic() - t0 < 1
    assert s.stats.dropped == 100 and s.stats.send_errors == 1
    s.close()
