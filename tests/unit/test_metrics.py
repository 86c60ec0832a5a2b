"""Prometheus metrics without root: the policy keys, the hub's monotonic sums over
workers and their restarts, the follower channel across a real fork, the exposition
parsed back with prometheus_client's own parser, and the daemon (fake kernel, real
packets as bytes, real syslog socket) writing its textfile while it enforces.

The HTTP endpoint is scraped by a real Prometheus in tests/lab/test_metrics.py (it
needs a network namespace: no test traffic in the root namespace).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from io import StringIO
from pathlib import Path

import pytest
import test_daemon_lifecycle
from prometheus_client.parser import text_string_to_metric_families
from test_daemon_lifecycle import BOT, MX, RES, Env
from test_engine import v4

from op25b import cli
from op25b.daemon.config import Overrides
from op25b.daemon.lock import NamespaceLock
from op25b.daemon.main import run
from op25b.daemon.metrics import render
from op25b.daemon.metricshub import Channel, MetricsHub, Sample, take_sample
from op25b.daemon.sdnotify import Notifier
from op25b.dataplane.counters import Counters
from op25b.errors import EXIT_ENVIRONMENT
from op25b.kernel.queuestats import QueueStats
from op25b.policy.decide import Decision, Reason, Verdict
from op25b.policy.loader import load_policy
from op25b.policy.problems import PolicyError

env = test_daemon_lifecycle.env  # the fake-kernel daemon environment (a fixture)

POLICY = """\
version: 1
guarded_ports: [25]
action: drop
plans:
  residential:
    exempt: false
    prefixes: [100.64.0.0/16]
daemon:
  abuse_log: /var/log/op25b/blocked.jsonl
"""


def metrics_policy(tmp: Path, lines: str) -> Path:
    path = tmp / "p.yaml"
    path.write_text(POLICY + "  metrics:\n" + lines)
    return path


def metrics_error(tmp: Path, lines: str) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(metrics_policy(tmp, lines))
    return str(info.value).replace(str(tmp) + "/", "")


# -- policy keys -----------------------------------------------------------------------


def test_metrics_keys_are_read(tmp_path: Path) -> None:
    path = metrics_policy(
        tmp_path,
        '    listen: "[2001:db8::9]:9125"\n    textfile: /var/lib/n/op25b.prom\n'
        "    interval: 0.5\n",
    )
    m = load_policy(path).policy.daemon.metrics
    assert (m.listen_host, m.listen_port, m.textfile, m.interval) == (
        "2001:db8::9",
        9125,
        "/var/lib/n/op25b.prom",
        0.5,
    )
    assert m.enabled
    out = StringIO()
    assert cli.main(["check", str(path)], out, StringIO()) == 0
    assert ", metrics http://[2001:db8::9]:9125/metrics + textfile /var/lib/n/op25b.prom" in (
        out.getvalue()
    )
    plain = tmp_path / "plain.yaml"
    plain.write_text(POLICY)
    assert not load_policy(plain).policy.daemon.metrics.enabled


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            "    listen: localhost:9125\n",
            "p.yaml:11:13: daemon.metrics.listen: expected address:port like 127.0.0.1:9125"
            " or [::1]:9125 (an IP address, not a name), got 'localhost:9125'",
        ),
        (
            '    listen: "2001:db8::9:9125"\n',
            "p.yaml:11:13: daemon.metrics.listen: write IPv6 hosts in brackets"
            " ([2001:db8::1]:9125)",
        ),
        (
            '    listen: "127.0.0.1:99999"\n',
            "p.yaml:11:13: daemon.metrics.listen: expected a port 1..65535 after the host,"
            " got '127.0.0.1:99999'",
        ),
        (
            "    listen: 9125\n",
            "p.yaml:11:13: daemon.metrics.listen: expected address:port like 127.0.0.1:9125"
            " or [::1]:9125, got '9125'",
        ),
        (
            "    textfile: /var/lib/n/op25b.txt\n",
            "p.yaml:11:15: daemon.metrics.textfile: '/var/lib/n/op25b.txt': node_exporter's"
            " textfile collector only reads *.prom files",
        ),
        (
            "    textfile: /var/lib/n/\n",
            "p.yaml:11:15: daemon.metrics.textfile: expected a file path, got a directory:"
            " '/var/lib/n/'",
        ),
        (
            "    interval: 0.05\n",
            "p.yaml:11:15: daemon.metrics.interval: 0.05 is out of range (0.1..3600 seconds)",
        ),
        (
            "    listne: 127.0.0.1:9125\n",
            "p.yaml:11:5: daemon.metrics.listne: unknown key 'listne'"
            " (allowed: listen, textfile, interval)",
        ),
    ],
)
def test_bad_metrics_keys_name_their_place(tmp_path: Path, lines: str, expected: str) -> None:
    assert metrics_error(tmp_path, lines) == expected


def test_textfile_cannot_be_the_abuse_log(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        POLICY.replace("blocked.jsonl", "x.prom")
        + "  metrics: {textfile: /var/log/op25b/../op25b/x.prom}\n"
    )
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == (
        f"{path}:10:23: daemon.metrics.textfile: '/var/log/op25b/../op25b/x.prom' is also"
        " daemon.abuse_log; give the metrics their own file"
    )


# -- the hub ---------------------------------------------------------------------------


def sample(index: int, pid: int, **counters: int) -> Sample:
    return Sample(index, pid, counters, {"queue_waiting": float(index + 1)})


def test_hub_sums_workers_and_keeps_a_restarted_followers_totals() -> None:
    hub = MetricsHub()
    hub.publish(sample(0, 100, blocked=5))
    hub.publish(sample(1, 200, blocked=7))
    assert hub.view().counters["blocked"] == 12
    hub.publish(sample(1, 200, blocked=9))  # same incarnation: latest value wins
    assert hub.view().counters["blocked"] == 14
    hub.publish(sample(1, 300, blocked=2))  # replaced follower starts from 0 again
    assert hub.view().counters["blocked"] == 5 + 9 + 2
    hub.publish(sample(1, 300, blocked=11))  # a new one that is already past the old
    assert hub.view().counters["blocked"] == 5 + 9 + 11
    view = hub.view()
    assert view.workers == 2
    assert view.gauges["queue_waiting"] == 3.0  # levels: the latest of each, summed


def test_hub_never_goes_backwards_on_a_counter_restart_or_a_vanished_key() -> None:
    hub = MetricsHub()
    hub.publish(sample(0, 1, fast=40, errors=3))
    hub.publish(sample(0, 1, fast=4, errors=3))  # fast-path rules reinstalled: reset
    assert hub.view().counters == {"fast": 44, "errors": 3}
    hub.publish(sample(0, 1, errors=3))  # fast path switched off by a reload
    assert hub.view().counters == {"fast": 44, "errors": 3}
    seen = []
    for n in (0, 5, 2, 8, 1):  # whatever a worker reports, the sum only grows
        hub.publish(sample(0, 1, fast=n))
        seen.append(hub.view().counters["fast"])
    assert seen == sorted(seen)


def test_sample_takes_every_counters_line_source() -> None:
    counters = Counters()
    counters.record(Decision(Verdict.DROP, Reason.BLOCKED, "residential", "r"))
    counters.record_reload(True)
    counters.record_reload(False)
    stats = {0: QueueStats(0, 1, 3, 2, 0xFFFF, 17, 4, 99)}
    health = {"rules_ok": 1, "syslog_dropped": 2, "abuse_records_pending": 5}
    s = take_sample(0, counters.snapshot(0.0), stats, health, {"exempt": 8}, {"g": 2})
    c, g = s.counters, s.gauges
    assert c["decisions:drop:blocked"] == 1 and c["decisions:accept:exemption"] == 0
    assert (c["reloads_ok"], c["reloads_failed"]) == (1, 1)
    assert (c["queue_dropped"], c["user_dropped"], g["queue_waiting"]) == (17, 4, 3)
    assert (c["syslog_dropped"], c["fast:exempt"]) == (2, 8)
    assert (g["rules_ok"], g["abuse_records_pending"], g["g"]) == (1, 5, 2)
    assert "rules_ok" not in c
    assert Sample.decode(s.encode()) == s


def test_channel_carries_samples_from_a_forked_follower() -> None:
    channel = Channel()
    pid = os.fork()
    if pid == 0:  # the follower: sends two samples and its last words, then exits
        code = 1
        try:
            channel.in_follower()
            for n in (1, 2, 3):
                channel.send(Sample(1, os.getpid(), {"blocked": n}))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    hub = MetricsHub()
    got = [channel.receive(5.0) for _ in range(3)]
    assert [s.counters["blocked"] for s in got if s] == [1, 2, 3]
    assert {s.pid for s in got if s} == {pid}
    assert channel.receive(0.0) is None  # nothing more, no wait
    channel._tx.send(b"not json")  # never fatal, just skipped
    channel.drain(hub)
    assert hub.published == 0
    channel.close()


# -- the exposition ----------------------------------------------------------------------


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_exposition_names_follow_prometheus_conventions() -> None:
    counters = Counters()
    for _ in range(3):
        counters.record(Decision(Verdict.DROP, Reason.BLOCKED, "residential", "r"))
    counters.record(Decision(Verdict.ACCEPT, Reason.EXEMPT_PLAN, "business", "r"))
    counters.record_reload(False)
    health = {
        "rules_ok": 1,
        "rules_repaired": 2,
        "syslog_dropped": 4,
        "abuse_records_lost": 5,
        "abuse_records_written": 6,
        "new_health_counter": 7,
        "block_cache_adds": 2,
    }
    hub = MetricsHub()
    hub.publish(
        take_sample(
            0,
            counters.snapshot(0.0),
            {},
            health,
            {"provider_mta": 9},
            {"policy_loaded": 1.7e9, "block_cache_entries": 2},
        )
    )
    m = parse(render(hub).decode())
    drop = (("reason", "blocked"), ("verdict", "drop"))
    assert m["op25b_decisions_total"][drop] == 3
    assert m["op25b_decisions_total"][(("reason", "exempt_plan"), ("verdict", "accept"))] == 1
    assert len(m["op25b_decisions_total"]) == len(Verdict) * len(Reason)
    assert m["op25b_reloads_total"] == {(("result", "ok"),): 0, (("result", "failed"),): 1}
    assert m["op25b_rules_ok"][()] == 1
    assert m["op25b_policy_loaded_timestamp_seconds"][()] == 1.7e9
    assert m["op25b_queue_dropped_total"][()] == 0
    assert m["op25b_rules_repaired_total"][()] == 2
    assert m["op25b_syslog_messages_dropped_total"][()] == 4
    assert m["op25b_abuse_records_lost_total"][()] == 5
    assert m["op25b_abuse_records_written_total"][()] == 6
    assert m["op25b_block_cache_packets_total"][()] == 0
    assert m["op25b_block_cache_adds_total"][()] == 2
    assert m["op25b_block_cache_entries"][()] == 2
    assert m["op25b_fast_path_accepted_total"] == {(("reason", "provider_mta"),): 9}
    assert m["op25b_new_health_counter_total"][()] == 7  # added later: still exported
    assert m["op25b_workers_reporting"][()] == 1
    assert all(n.startswith("op25b_") for n in m)
    for family in text_string_to_metric_families(render(hub).decode()):
        names = {s.name for s in family.samples}
        if family.type == "counter":
            assert names == {family.name + "_total"}
        else:
            assert family.type == "gauge" and not family.name.endswith("_total"), family.name


# -- the daemon, fake kernel ---------------------------------------------------------------


def with_metrics(env: Env, textfile: Path, extra: str = "") -> None:
    env.policy.write_text(
        env.policy.read_text() + f"  metrics: {{textfile: {textfile}, interval: 0.1{extra}}}\n"
    )


def read_metrics(path: Path) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    return parse(path.read_text())


def test_daemon_writes_the_textfile_while_it_enforces_and_removes_it_on_stop(
    env: Env, tmp_path: Path
) -> None:
    textfile = tmp_path / "op25b.prom"
    with_metrics(env, textfile)
    seen: list[dict[str, dict[tuple[tuple[str, str], ...], float]]] = []
    failures: list[str] = []
    blocked = (("reason", "blocked"), ("verdict", "reject"))

    def drive() -> None:
        try:
            deadline = time.monotonic() + 10
            while 0 not in env.kernel.queues:
                assert time.monotonic() < deadline, "queue never bound"
                time.sleep(0.005)
            env.kernel.queues[0].feed(v4(BOT, MX), v4(BOT, MX, sport=1), v4(RES, MX))
            while True:  # the file is replaced atomically: every read parses whole
                assert time.monotonic() < deadline, "textfile never showed the packets"
                if textfile.exists():
                    m = read_metrics(textfile)
                    if m.get("op25b_decisions_total", {}).get(blocked) == 3:
                        seen.append(m)
                        break
                time.sleep(0.02)
        except AssertionError as e:
            failures.append(str(e))
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    t = threading.Thread(target=drive)
    t.start()
    code = run_env(env)
    t.join()
    assert failures == []
    assert code == 0
    (m,) = seen
    (final,) = env.syslog.having("final counters")
    assert 'blocked="3"' in final  # the textfile agreed with the counters line
    assert m["op25b_rules_ok"][()] == 1
    assert not textfile.exists()  # clean stop: rules gone, so is the textfile
    assert not list(tmp_path.glob("op25b.prom.*"))  # no temporary left behind


def run_env(env: Env, err: StringIO | None = None, notifier: Notifier | None = None) -> int:
    """``op25b run`` in this thread on the fake kernel, with a lock of its own."""
    name = b"\0op25b-test-" + os.urandom(6).hex().encode()
    return run(
        str(env.policy),
        Overrides(),
        err or StringIO(),
        kernel=env.kernel,
        notifier=notifier,
        lock=NamespaceLock(name),
    )


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (  # the directory does not exist
            "",
            "daemon.metrics.textfile: cannot write {tmp}/missing/op25b.prom:"
            " No such file or directory",
        ),
        (  # 192.0.2.1 (documentation) is on no interface: the bind fails, nothing is sent
            ', listen: "192.0.2.1:9125"',
            "daemon.metrics.listen: cannot listen on 192.0.2.1:9125:"
            " Cannot assign requested address",
        ),
    ],
)
def test_unusable_metrics_output_exits_3_before_touching_the_kernel(
    env: Env, tmp_path: Path, setting: str, expected: str
) -> None:
    textfile = tmp_path / ("missing" if not setting else "") / "op25b.prom"
    with_metrics(env, textfile, setting)
    err = StringIO()
    assert run_env(env, err) == EXIT_ENVIRONMENT
    assert env.kernel.calls == []
    assert err.getvalue() == "op25b run: " + expected.format(tmp=tmp_path) + "\n"
    assert not textfile.exists()


def test_a_reload_that_changes_the_metrics_is_refused(env: Env, tmp_path: Path) -> None:
    from test_daemon_lifecycle import reload

    w = env.worker()
    with_metrics(env, tmp_path / "op25b.prom")
    reload(w)
    assert w.counters.reload_failures == 1
    (line,) = env.syslog.having("reload refused")
    assert "daemon.metrics changed; restart op25b to apply (systemctl restart op25b)" in line
