"""The running daemon when its files turn hostile: a FIFO for a pool, a deleted abuse log.

Real ``op25b run`` in the lab router, real TCP: a reload meeting a FIFO is refused
with its reason and the next reload still works (nothing wedged), enforcement goes
on throughout; an abuse log deleted without a signal is recreated and gets the
records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from op25b.lab import topology as L
from op25b.lab.processes import DaemonProcess, SyslogReceiver
from op25b.lab.tools import Listener, Probe, probe_many
from op25b.lab.topology import Lab

POLICY = """\
version: 1
guarded_ports: [25]
action: reject
plans:
  residential:
    exempt: false
    prefixes_file: pools/residential.txt
provider_mtas:
  smarthost:
    addresses: [203.0.113.25]
daemon:
  counters_interval: 3600
"""


@pytest.fixture
def daemon(
    lab: Lab, listeners: dict[str, Listener], tmp_path: Path
) -> Iterator[tuple[DaemonProcess, SyslogReceiver, Path]]:
    (tmp_path / "pools").mkdir()
    (tmp_path / "pools" / "residential.txt").write_text("100.64.0.0/16\n")
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    log = tmp_path / "blocked.jsonl"
    syslog = SyslogReceiver()
    extra = ["--abuse-log", str(log), "--syslog", syslog.path, "--abuse-window", "3600"]
    proc = DaemonProcess(lab.rtr, policy, extra)
    try:
        proc.wait_started()
        yield proc, syslog, log
    finally:
        if proc.proc.poll() is None:
            proc.stop()
        syslog.close()
        from op25b.kernel import rules

        rules.remove(cmd_prefix=["ip", "netns", "exec", lab.rtr])


def to_mx(lab: Lab) -> str:
    [result] = probe_many(lab.res, [Probe(L.RES_V4, L.NET_MX_V4, 25)], timeout=5)
    return result.outcome


def test_fifo_pool_on_reload_is_refused_and_the_next_reload_works(
    daemon: tuple[DaemonProcess, SyslogReceiver, Path], lab: Lab, tmp_path: Path
) -> None:
    proc, syslog, _ = daemon
    pool = tmp_path / "pools" / "residential.txt"
    pool.unlink()
    os.mkfifo(pool)  # nobody writes: a blocking open() would hang the reload for good
    line = proc.reload()
    assert "reload refused" in line
    assert f"cannot read {pool}: not a regular file (it is a FIFO)" in line
    syslog.wait_for(lambda m: "not a regular file (it is a FIFO)" in m, what="syslog ERR")
    assert to_mx(lab) == "refused"  # the old policy still enforces
    pool.unlink()
    pool.write_text("100.65.0.0/16\n")  # residential no longer a subscriber pool
    assert "reloaded" in proc.reload()  # not wedged: the next SIGHUP is served
    assert to_mx(lab) == "connected"
    assert proc.stop() == 0


def test_abuse_log_deleted_without_a_signal_is_recreated(
    daemon: tuple[DaemonProcess, SyslogReceiver, Path], lab: Lab
) -> None:
    proc, _, log = daemon
    assert log.exists()  # opened at start
    log.unlink()  # an admin's `rm`, no SIGUSR1
    assert to_mx(lab) == "refused"
    assert proc.stop() == 0  # the open window is written at shutdown
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(r["source"], r["packets"]) for r in records] == [(L.RES_V4, 1)]
