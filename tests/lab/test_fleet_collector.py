"""The fleet's central collector taken away and brought back, on real rsyslogd.

A router's agent forwards the abuse log to the collector through a disk-assisted
queue (op25b/lab/rsyslog.py): while the collector is down the agent must keep what
the router writes and deliver it when the collector is back (at least once: a batch
in flight when the connection broke may come twice) — so the desk's ``op25b report``
over the collected files counts every attempt, each once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from op25b.lab import fleet as F
from op25b.lab import fleetplan as FP
from op25b.lab.rsyslog import (
    AGENT_PORT,
    COLLECTOR_PORT,
    Rsyslogd,
    agent_conf,
    await_file,
    collector_conf,
)
from op25b.report.desk import build_report

pytestmark = pytest.mark.skipif(
    shutil.which("rsyslogd") is None, reason="needs rsyslogd (scripts/bootstrap.sh)"
)


def _record(n: int) -> str:
    """The n-th abuse record of router r1, in the producer's form (one source each)."""
    minute = f"{n // 60:02d}:{n % 60:02d}"
    return json.dumps({
        "type": "blocked_source", "version": 1, "router": "r1",
        "source": f"100.64.1.{n % 250 + 1}", "family": 4, "plan": "residential",
        "action": "drop", "rule": "policy.yaml:12:9",
        "window_start": f"2026-11-29T{minute[:2]}:00:00.000Z",
        "window_end": f"2026-11-29T{minute[:2]}:05:00.000Z",
        "first_seen": f"2026-11-29T{minute[:2]}:00:{n % 60:02d}.000Z",
        "last_seen": f"2026-11-29T{minute[:2]}:00:{n % 60:02d}.000Z",
        "packets": n + 1, "distinct_destinations": 1,
        "destinations_sample": ["192.0.2.25"], "ports": {"25": n + 1},
        "distinct_destinations_capped": False, "kernel_packets": 0,
    })  # fmt: skip


def _append(path: Path, first: int, count: int) -> list[str]:
    lines = [_record(n) for n in range(first, first + count)]
    with path.open("a") as f:
        f.writelines(line + "\n" for line in lines)
    return lines


def test_a_collector_outage_delays_records_and_loses_none(tmp_path: Path) -> None:
    fleet = F.create_fleet(1)
    try:
        out = tmp_path / "collected"
        col_conf = collector_conf(tmp_path / "col", out, FP.COLLECTOR_V4)
        abuse = tmp_path / "blocked.jsonl"
        abuse.touch()  # the agent's imfile follows it from the first byte
        agent_work = tmp_path / "agent"
        conf = agent_conf(agent_work, "r1", tmp_path / "own.log", abuse, FP.COLLECTOR_V4)
        collected = out / "abuse" / "r1.jsonl"
        with Rsyslogd(fleet.ns("r1"), agent_work, conf, AGENT_PORT):
            with Rsyslogd(fleet.ns("col"), tmp_path / "col", col_conf, COLLECTOR_PORT):
                before = _append(abuse, 0, 40)
                await_file(collected, lambda got: got == before, 20, "the first 40 records")
            # The collector is gone: the router keeps writing its abuse log.
            during = _append(abuse, 40, 60)
            # The agent has tried to forward them and suspended its action (it says so
            # in its internal log): the records are in its queue, not yet delivered.
            await_file(
                agent_work / "rsyslogd-internal.log",
                lambda got: any("suspended" in line for line in got),
                30,
                "the agent's forwarding action suspended",
            )
            assert collected.read_text().splitlines() == before
            with Rsyslogd(fleet.ns("col"), tmp_path / "col", col_conf, COLLECTOR_PORT):
                want = before + during
                got = await_file(
                    collected, lambda got: set(want) <= set(got), 60, "all 100 records"
                )
        # At least once: every record arrives; the agent may resend the batch that was
        # in flight when the connection broke (a duplicate, never a loss), and the
        # desk's report counts a record read twice once.
        assert set(got) == set(want)
        assert got[: len(before)] == before
        report = build_report([str(collected)], lambda p: pytest.fail(str(p)))
        resent = len(got) - len(want)
        assert (report.records, report.duplicates, report.problems) == (100, resent, 0)
        assert (report.source_count, report.attempts) == (100, sum(range(1, 101)))
    finally:
        F.destroy_fleet(fleet)
