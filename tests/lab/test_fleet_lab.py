"""The fleet lab and ``op25b demo --fleet`` on real namespaces, rsyslogd and Prometheus.

The demo runs in-process (as ``op25b demo --fleet`` calls it) with its files in a
pytest temp dir, so the test checks its claims against the files themselves: one
collector file per router named by the daemon's own host name, the abuse records at
the collector equal to each router's log line for line, the exempted subscriber's mail
in the MX's Maildir, and the three views' table all "yes". The fleet lab's CLI life
cycle (up, status, down) runs against a private state directory.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from op25b.lab import fleet as F
from op25b.lab import fleetdemo
from op25b.lab import fleetplan as FP
from op25b.lab.labstate import lab_status
from op25b.lab.mailservers import find_message
from op25b.lab.netns import netns_exists
from op25b.lab.tools import Probe, probe_many, start_listener

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("swaks", "prometheus")),
    reason="the fleet demo needs swaks and prometheus (scripts/bootstrap.sh)",
)


def test_fleet_demo_three_views_agree(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    opts = fleetdemo.FleetOptions(workdir=tmp_path)
    code = fleetdemo.run(out, err, options=opts)
    text = out.getvalue() + err.getvalue()
    assert code == 0, text
    assert re.search(r"^(\d+) of \1 checks passed$", text, re.M), text
    agree = re.findall(r"^(r\d|fleet)\s+router\s.*\s(yes|NO)$", text, re.M)
    assert agree == [("r1", "yes"), ("r2", "yes"), ("r3", "yes"), ("fleet", "yes")], text
    # the fleet is gone
    name = re.search(r"^  fleet (\S+): ", text, re.M)
    assert name is not None
    assert not any(netns_exists(f"{name.group(1)}-{role}") for role in ("core", "col", "r1"))

    collected = tmp_path / "collector"
    assert {p.name for p in collected.glob("r*.log")} == {"r1.log", "r2.log", "r3.log"}
    for r in ("r1", "r2", "r3"):
        lines = (collected / f"{r}.log").read_text().splitlines()
        assert lines and all(line.split()[1:3] == [r, "op25b"] for line in lines), lines
        own = (tmp_path / r / "blocked.jsonl").read_text().splitlines()
        assert own == (collected / "abuse" / f"{r}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in own]
        assert {rec["router"] for rec in records} == {r}
        bot = FP.Site(int(r[1])).bot[0]
        assert [rec["packets"] for rec in records if rec["source"] == bot] == [8 * int(r[1])]
    exempt = re.search(r"(<r2-exempt\.[0-9a-f]+@op25b\.demo>)", text)
    assert exempt is not None
    msg = find_message(tmp_path / "mx" / "Maildir", exempt.group(1))
    assert msg is not None and FP.Site(2).res[0] in str(msg["Received"])


def test_fleet_lab_up_status_down(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    fleet = F.fleet_up(2, state_dir=state)
    try:
        status, owned = F.fleet_status(state)
        assert f"fleet {fleet.name}: 2 routers" in status and "MISSING" not in status
        assert owned == set(fleet.namespaces)
        # a fleet's isp/net would look like a stray one-router lab's, but are known
        assert f"unrecorded lab {fleet.name}" in lab_status(state)
        assert fleet.name not in lab_status(state, others=owned)
        # `lab status --json` carries the fleets as data (the same facts as the text)
        (got,) = json.loads(json.dumps([asdict(f) for f in F.fleet_states(state)]))
        assert (got["name"], got["routers"]) == (fleet.name, 2)
        assert [ns["namespace"] for ns in got["namespaces"]] == list(fleet.namespaces)
        assert all(ns["present"] and ns["addresses"] for ns in got["namespaces"])
        # subscribers of both routers reach the shared MX through their router and the
        # core; the collector reaches every router's metrics address
        mx = start_listener(fleet.ns("net"), [FP.NET_MX_V4, FP.NET_MX_V6], [25])
        rtr = start_listener(fleet.ns("r2"), [fleet.sites[1].uplink_v4], [9125])
        try:
            for site in fleet.sites:
                ns = fleet.ns(FP.subscriber_role(site, "res"))
                got = probe_many(ns, [Probe(site.res[0], FP.NET_MX_V4, 25),
                                      Probe(site.res[1], FP.NET_MX_V6, 25)])  # fmt: skip
                assert [r.outcome for r in got] == ["connected", "connected"], got
            got = probe_many(fleet.ns("col"), [Probe(FP.COLLECTOR_V4, "100.127.0.2", 9125)])
            assert got[0].outcome == "connected", got
            assert {p.split(":")[0] for p, _ in mx.accepted()} >= {"100.64.1.10", "100.64.2.10"}
        finally:
            mx.stop()
            rtr.stop()
    finally:
        removed = F.fleet_down(None, state_dir=state)
    assert removed == [fleet.name]
    assert not any(netns_exists(ns) for ns in fleet.namespaces)
    assert F.fleet_status(state) == ("", frozenset())
