"""Issue 15 with the real daemon: a reload splits a source's window, the report adds both.

The daemon runs on a real netfilter queue in the lab router (see test_daemon.py) with a
one-hour abuse window, so everything below happens inside one window: a bot is
dropped, the policy is reloaded with ``action: reject`` (SIGHUP), the bot tries again
and is refused, the daemon stops. The abuse log then holds two records for the bot
and that window, and ``op25b report`` must count both: its total equals the daemon's
own final counters, and both actions are shown.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from test_daemon import outcomes, probes, write_policy

from op25b.lab import topology as L
from op25b.lab.topology import Lab
from op25b.report import desk


@pytest.mark.parametrize("engine", ["python", "duckdb"])
def test_reload_split_window_counts_both_parts(
    start,  # the conftest fixture: a daemon per test, always stopped
    lab: Lab,
    tmp_path: Path,
    engine: str,
) -> None:
    policy = write_policy(tmp_path / "p.yaml", "drop")
    r = start(policy)
    targets = list(L.NET_MX_EXTRA_V4[:4])
    assert set(outcomes(probes(lab.bot, [(L.BOT_V4, mx, 25) for mx in targets]))) == {"timeout"}
    write_policy(policy, "reject")
    assert "reloaded" in r.daemon.reload()
    after = probes(lab.bot, [(L.BOT_V4, mx, 25) for mx in targets * 2], timeout=5)
    assert set(outcomes(after)) == {"refused"}
    assert r.stop() == 0
    counters = r.final_counters()
    blocked = int(counters["blocked"])
    assert int(counters["reject"]) == 8  # a refused SYN is one packet, never retried

    records = [x for x in r.abuse_records() if x["source"] == L.BOT_V4]
    assert [x["action"] for x in records] == ["drop", "reject"]
    # One window: the same aligned start; the drop part ends at the reload, the reject
    # part at the shutdown.
    assert records[0]["window_start"] == records[1]["window_start"]
    assert str(records[0]["window_end"]) <= str(records[1]["first_seen"])
    assert sum(int(str(x["packets"])) for x in records) == blocked

    out, err = io.StringIO(), io.StringIO()
    args = _parse([str(r.abuse_log), "--json", "--engine", engine])
    assert desk.run(args, out, err) == 0, err.getvalue()
    (bot,) = json.loads(out.getvalue())
    assert bot["source"] == L.BOT_V4
    assert bot["attempts"] == blocked  # 8 refused + the dropped SYNs and their retries
    assert bot["windows_active"] == 1
    assert bot["action"] == "drop,reject"
    rep = desk.build_report([str(r.abuse_log)], lambda p: None, engine=engine)
    assert (rep.attempts, rep.duplicates) == (blocked, 0)


def _parse(argv: list[str]) -> object:
    import argparse

    p = argparse.ArgumentParser()
    desk.add_arguments(p)
    return p.parse_args(argv)
