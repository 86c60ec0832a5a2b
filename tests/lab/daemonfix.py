"""The daemon as the lab tests start it: ``Running`` (``op25b run`` in the router with
its own syslog receiver and abuse log) and the ``start`` fixture (conftest.py) that
stops every daemon it started and leaves the router without op25b's rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from op25b.lab.processes import DaemonProcess, SyslogReceiver, sd_params
from op25b.lab.tools import Listener
from op25b.lab.topology import Lab


class Running:
    """A started daemon with its syslog receiver and abuse log."""

    def __init__(
        self, lab: Lab, policy: Path, tmp: Path, env: dict[str, str] | None = None
    ) -> None:
        self.lab = lab
        self.policy = policy
        self.abuse_log = tmp / "blocked.jsonl"
        self.syslog = SyslogReceiver()
        self.daemon = DaemonProcess(
            lab.rtr,
            policy,
            [
                "--abuse-log",
                str(self.abuse_log),
                "--syslog",
                self.syslog.path,
                "--abuse-window",
                "3600",
            ],
            env=env,
        )
        self.daemon.wait_started()

    def stop(self) -> int:
        code = self.daemon.stop()
        self.syslog.close()
        return code

    def final_counters(self) -> dict[str, str]:
        msg = self.syslog.wait_for(lambda m: 'final="1"' in m, what="final counters")
        return sd_params(msg)

    def abuse_records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.abuse_log.read_text().splitlines()]


@pytest.fixture
def start(lab: Lab, listeners: dict[str, Listener], tmp_path: Path) -> Iterator[object]:
    """start(policy_path) -> Running; every daemon started is stopped at teardown."""
    started: list[Running] = []

    def _start(policy: Path, env: dict[str, str] | None = None) -> Running:
        r = Running(lab, policy, tmp_path, env=env)
        started.append(r)
        return r

    yield _start
    for r in started:
        if r.daemon.proc.poll() is None:
            r.stop()
    # Whatever happened, leave the router without op25b rules for the next test.
    from op25b.kernel import rules

    rules.remove(cmd_prefix=["ip", "netns", "exec", lab.rtr])
