"""The short soak (bench/soak.py runs the 10-minute one): 60 s of mixed traffic while
the daemon is reloaded, its abuse log rotated and deleted, its syslog collector
restarted and the router's ruleset flushed. Its own lab: it runs real mail servers on
the MX addresses the session's listeners hold."""

from __future__ import annotations

import sys
from pathlib import Path

from op25b.lab.topology import lab_session

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import soak  # the benchmark's soak, run short (found via sys.path above)


def test_soak_60s(tmp_path: Path) -> None:
    with lab_session(prefix="op25bsk") as lab:
        r = soak.Soak(lab, tmp_path, 60.0).run()
    soak.print_results(r)
    f = r["faults"]
    assert r["reloads"]["valid"] >= 8 and r["reloads"]["invalid"] >= 8
    assert f["rotations"] >= 2 and f["deletions"] == 1
    assert f["collector_restarts"] >= 2 and f["flushes"] >= 1
    assert r["allowed"]["probes"] > 300 and r["allowed"]["mails_accepted"] >= 10
    assert r["bots"]["refused"] > 100 and r["bots"]["spray_sent"] > 10_000
    assert r["abuse"]["packets_in_records"] > 10_000
    assert r["daemon"]["rules_repaired"] == f["flushes"]
    failed = [name for name, ok in r["checks"].items() if not ok]
    assert failed == [], r["errors"]
