"""A real Prometheus scrapes the daemon in the lab, and its numbers match syslog's.

The daemon serves ``/metrics`` on the router's provider-side address; Debian's
``prometheus`` binary runs in the ``isp`` namespace (where a NOC's collector would
sit) with a temporary config and TSDB, scraping every second. Real TCP connection
attempts go through the router; then a PromQL query over the Prometheus HTTP API must
equal the ``blocked`` totals of the daemon's own syslog counters lines, with one
worker and with two (including a reload that replaces the follower: the sum must
never reset). The textfile is checked by ``promtool check metrics`` and by parsing it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_daemon import outcomes, probes, with_daemon_keys, write_policy

from op25b.lab import topology as L
from op25b.lab.netns import child_env, popen_in, run_in, stop_process
from op25b.lab.processes import sd_params
from op25b.lab.topology import Lab

if shutil.which("prometheus") is None or shutil.which("promtool") is None:
    pytest.skip("needs Debian's prometheus package (scripts/bootstrap.sh)", allow_module_level=True)

RTR_ISP_SIDE = "203.0.113.1"  # the router's address on the isp link
METRICS = f"{RTR_ISP_SIDE}:9125"
PROMETHEUS = f"{L.ISP_MTA_V4}:9090"  # the isp host; mail ports are 25/587/465
BLOCKED = 'sum(op25b_decisions_total{reason="blocked"})'

# Run in the isp namespace: one Prometheus HTTP API query, its JSON on stdout.
_QUERY = """\
import sys, urllib.parse, urllib.request
url = sys.argv[1] + "?" + urllib.parse.urlencode({"query": sys.argv[2]})
print(urllib.request.urlopen(url, timeout=5).read().decode())
"""


class Prometheus:
    """Debian's prometheus in a namespace, temporary config and storage."""

    def __init__(self, ns: str, tmp: Path) -> None:
        self.ns = ns
        config = tmp / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: op25b\n"
            f"    static_configs: [{{targets: ['{METRICS}']}}]\n"
        )
        self.log = (tmp / "prometheus.log").open("w")
        self.proc = popen_in(
            ns,
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address={PROMETHEUS}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=child_env(),
        )

    def get(self, path: str, query: str) -> dict[str, object]:
        out = run_in(
            self.ns,
            [sys.executable, "-c", _QUERY, f"http://{PROMETHEUS}{path}", query],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode != 0:
            raise ConnectionError(out.stderr.strip().splitlines()[-1:])
        doc: dict[str, object] = json.loads(out.stdout)
        return doc

    def value(self, promql: str) -> float | None:
        """The instant value of a one-series query, None while it has no result."""
        doc = self.get("/api/v1/query", promql)
        assert doc["status"] == "success", doc
        result = doc["data"]["result"]  # type: ignore[index]
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def await_value(
        self, promql: str, wanted: Callable[[float | None], bool], timeout: float = 60.0
    ) -> float | None:
        """Poll the query until ``wanted(value)`` (a scrape is at most 1 s away)."""
        deadline = time.monotonic() + timeout
        value: float | None = None
        while True:
            assert self.proc.poll() is None, "prometheus exited"
            try:
                value = self.value(promql)
            except ConnectionError:  # still starting
                value = None
            if wanted(value):
                return value
            assert time.monotonic() < deadline, f"{promql} stayed at {value}"
            time.sleep(0.25)  # polling a remote API: there is no event to wait on

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


@pytest.fixture
def prometheus(lab: Lab, tmp_path: Path) -> Iterator[Prometheus]:
    p = Prometheus(lab.isp, tmp_path)
    try:
        yield p
    finally:
        p.stop()


def metrics_policy(tmp: Path, workers: int) -> tuple[Path, Path]:
    textfile = tmp / "op25b.prom"
    policy = with_daemon_keys(
        write_policy(tmp / "p.yaml", "reject", workers=workers),
        metrics=f'{{listen: "{METRICS}", textfile: {textfile}, interval: 0.2}}',
    )
    return policy, textfile


def blocked_in_textfile(textfile: Path) -> float:
    for family in text_string_to_metric_families(textfile.read_text()):
        if family.name == "op25b_decisions":
            return sum(s.value for s in family.samples if s.labels["reason"] == "blocked")
    raise AssertionError("no op25b_decisions_total in the textfile")


@pytest.mark.parametrize("workers", [1, 2])
def test_prometheus_sees_what_syslog_counts(
    start, lab: Lab, prometheus: Prometheus, tmp_path: Path, workers: int
) -> None:
    policy, textfile = metrics_policy(tmp_path, workers)
    r = start(policy)
    mxes = L.NET_MX_EXTRA_V4
    first = [(L.BOT_V4, mx, 25) for mx in mxes[:12]]
    assert set(outcomes(probes(lab.bot, first, timeout=5))) == {"refused"}
    allowed = [(L.RES_V4, L.ISP_MTA_V4, 25), (L.BIZ_V4, L.NET_MX_V4, 25)]
    assert outcomes(probes(lab.res, allowed[:1], timeout=5)) == ["connected"]
    assert outcomes(probes(lab.biz, allowed[1:], timeout=5)) == ["connected"]
    prometheus.await_value(BLOCKED, lambda v: v == 12)
    if workers > 1:
        # A reload replaces the follower; its counts must stay in the sum.
        assert "reloaded " in r.daemon.reload()
    second = [(L.BOT_V4, mx, 25) for mx in mxes[12:20]]
    assert set(outcomes(probes(lab.bot, second, timeout=5))) == {"refused"}
    total = prometheus.await_value(BLOCKED, lambda v: v == 20)
    assert prometheus.value("sum(op25b_workers_reporting)") == workers
    assert prometheus.value("op25b_rules_ok") == 1
    assert prometheus.value('sum(op25b_decisions_total{reason="exempt_plan"})') == 1
    assert prometheus.value('sum(op25b_decisions_total{reason="provider_mta"})') == 1
    assert prometheus.value("op25b_reloads_total{result='ok'}") == (1 if workers > 1 else 0)
    # never a reset in the scraped sum, reload or not
    assert prometheus.value(f"resets(({BLOCKED})[1m:1s])") == 0
    loaded = prometheus.value("op25b_policy_loaded_timestamp_seconds")
    assert loaded is not None and abs(loaded - time.time()) < 300
    # the textfile: valid for node_exporter, and the same numbers
    check = subprocess.run(
        ["promtool", "check", "metrics"],
        input=textfile.read_text(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    deadline = time.monotonic() + 10
    while blocked_in_textfile(textfile) != 20:  # rewritten every 0.2 s
        assert time.monotonic() < deadline, "the textfile never caught up"
        time.sleep(0.05)
    assert r.stop() == 0
    # one final line per worker process (a follower replaced by the reload wrote its own)
    finals = [sd_params(m) for m in r.syslog.lines.snapshot() if 'final="1"' in m]
    assert {f["queue"] for f in finals} == {str(q) for q in range(workers)}
    assert len(finals) == (workers + 1 if workers > 1 else 1)
    assert sum(int(f["blocked"]) for f in finals) == total == 20
    assert not textfile.exists()  # clean stop: no stale op25b_rules_ok 1 left behind
