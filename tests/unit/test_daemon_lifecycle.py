"""The daemon's lifecycle through the kernel seam, without root: a fake kernel that
records every call and fails on demand (fakekernel.py), real policies, real syslog
lines read from a unix socket, real packets as bytes.

Covers start, reload (good, bad, rule settings changed, queue changed, kernel update
failing), the rule watchdog (flushed ruleset, moved jump, destroyed set, failed repair),
verdict-cache accounting across reads and rotations, the shutdown order, a loop that
dies of a bug, and the counters line carrying everything the daemon counts.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from fakekernel import FakeKernel
from test_engine import v4

from op25b.daemon.config import Overrides
from op25b.daemon.lock import NamespaceLock
from op25b.daemon.main import run
from op25b.daemon.sdnotify import Notifier
from op25b.daemon.worker import Worker
from op25b.dataplane.verdicts import VERDICT_ACCEPT, VERDICT_DROP, VERDICT_REJECT
from op25b.errors import EXIT_ENVIRONMENT, EXIT_INVALID
from op25b.policy.addr import parse_address
from op25b.policy.compiled import compile_policy
from op25b.policy.loader import load_policy

BOT, RES, BIZ = "100.64.0.66", "100.64.0.10", "198.51.100.10"
MX, MTA = "192.0.2.25", "203.0.113.25"

POLICY = """\
version: 1
guarded_ports: [25]
action: {action}
plans:
  residential:
    exempt: false
    prefixes: [100.64.0.0/16, "2001:db8:100::/40"]
  business:
    exempt: true
    prefixes: [198.51.100.0/24]
provider_mtas:
  smarthost:
    addresses: [203.0.113.25]
exemptions: {exemptions}
daemon:
  queue: {queue}
  abuse_log: {abuse_log}
  syslog: {{address: {syslog}, facility: local5}}
  counters_interval: 3600
  rules_check_interval: 0.05
  block_cache_timeout: {cache}
  fast_path: {fast}
"""


class Syslog:
    """A unix datagram socket standing in for /dev/log; collects the daemon's lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.lines: list[str] = []

    def read(self) -> list[str]:
        try:
            while True:
                self.lines.append(self.sock.recv(65536).decode())
        except BlockingIOError:
            pass
        return self.lines

    def having(self, needle: str) -> list[str]:
        return [line for line in self.read() if needle in line]


class Env:
    """A policy file, a syslog socket, a fake kernel, and ways to run the daemon."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.syslog = Syslog(tmp / "log.sock")
        self.kernel = FakeKernel()
        self.policy = tmp / "policy.yaml"
        self.write()

    def write(
        self,
        action: str = "reject",
        exemptions: str = "[]",
        queue: int = 0,
        cache: int = 0,
        fast: str = "false",
    ) -> None:
        self.policy.write_text(
            POLICY.format(
                action=action,
                exemptions=exemptions,
                queue=queue,
                abuse_log=self.tmp / "blocked.jsonl",
                syslog=self.syslog.path,
                cache=cache,
                fast=fast,
            )
        )

    def installed(self) -> Worker:
        """A leader whose rules the fake kernel holds, its state not yet recorded."""
        policy = load_policy(self.policy).policy
        w = Worker(
            str(self.policy), policy, compile_policy(policy), policy.daemon, index=0,
            kernel=self.kernel, notifier=Notifier({}), err=StringIO(),
        )
        w.writer.open()
        self.kernel.install(w.rule_cfg, policy, w.clock())
        return w

    def worker(self) -> Worker:
        """A leader, installed and bound on the fake kernel, loop not started."""
        w = self.installed()
        w.watchdog.take_expected_state()
        w.bind()
        w.start()
        return w

    def queue(self, num: int = 0):  # type: ignore[no-untyped-def]
        return self.kernel.queues[num]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM,
                                               signal.SIGINT, signal.SIGCHLD)}
    wakeup = signal.set_wakeup_fd(-1)
    yield Env(tmp_path)
    for s, h in saved.items():
        signal.signal(s, h)
    signal.set_wakeup_fd(wakeup)


def steps_until(w: Worker, done: Callable[[], bool], limit: float = 5.0) -> None:
    """Turn the loop until ``done()`` (bounded; fails with the condition unmet)."""
    deadline = time.monotonic() + limit
    while not done():
        assert time.monotonic() < deadline, "condition not reached"
        assert w.step(max_wait=0.02) is None


def decide(w: Worker, env: Env, packet: bytes) -> int:
    q = env.queue()
    before = len(q.verdicts)
    q.feed(packet)
    steps_until(w, lambda: len(q.verdicts) > before)
    return q.verdicts[-1]


# -- start ---------------------------------------------------------------------------


def run_in_background_until_bound(env: Env, lock: NamespaceLock) -> tuple[list[int], StringIO]:
    """``run()`` in this (main) thread; a helper thread SIGTERMs us once the queue is bound."""
    err = StringIO()
    codes: list[int] = []

    def stopper() -> None:
        deadline = time.monotonic() + 10
        while 0 not in env.kernel.queues and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGTERM)

    t = threading.Thread(target=stopper)
    t.start()
    codes.append(run(str(env.policy), Overrides(), err, kernel=env.kernel, lock=lock))
    t.join()
    return codes, err


def test_start_installs_then_binds_and_a_clean_stop_removes(env: Env) -> None:
    lock = NamespaceLock(b"\0op25b-test-" + os.urandom(6).hex().encode())
    codes, err = run_in_background_until_bound(env, lock)
    assert codes == [0], err.getvalue()
    names = env.kernel.names()
    # The sets were staged while the policy compiled; the install only swapped them in.
    assert names[:4] == ["stage_sets", "install", "state", "bind_queue"]
    assert env.kernel.calls[1][1].endswith(" staged")
    assert names[-1] == "remove"
    assert env.kernel.queues[0].closed
    final = env.syslog.having("final counters")
    assert len(final) == 1 and 'final="1"' in final[0]


def test_second_daemon_is_refused_before_touching_the_kernel(env: Env) -> None:
    name = b"\0op25b-test-" + os.urandom(6).hex().encode()
    holder = NamespaceLock(name)
    holder.acquire()
    try:
        err = StringIO()
        code = run(str(env.policy), Overrides(), err, kernel=env.kernel, lock=NamespaceLock(name))
    finally:
        holder.release()
    assert code == EXIT_ENVIRONMENT
    assert env.kernel.calls == []
    assert f"(pid {os.getpid()})" in err.getvalue()
    assert "another op25b daemon is running" in err.getvalue()


def test_start_with_a_broken_policy_touches_nothing(env: Env) -> None:
    env.policy.write_text(env.policy.read_text().replace("action: reject", "action: bounce"))
    err = StringIO()
    code = run(str(env.policy), Overrides(), err, kernel=env.kernel,
               lock=NamespaceLock(b"\0op25b-test-broken"))
    assert code == EXIT_INVALID
    assert env.kernel.calls == []
    assert err.getvalue().startswith(f"{env.policy}:3:9: action: expected one of")


def test_failed_install_exits_3_and_removes_nothing(env: Env) -> None:
    env.kernel.fail["install"] = 1
    err = StringIO()
    code = run(str(env.policy), Overrides(), err, kernel=env.kernel,
               lock=NamespaceLock(b"\0op25b-test-install"))
    assert code == EXIT_ENVIRONMENT
    assert "installing kernel rules failed" in err.getvalue()
    assert "remove" not in env.kernel.names()


def test_failed_bind_keeps_the_rules_for_the_fallback(env: Env) -> None:
    env.kernel.fail["bind_queue"] = 1
    err = StringIO()
    code = run(str(env.policy), Overrides(), err, kernel=env.kernel,
               lock=NamespaceLock(b"\0op25b-test-bind"))
    assert code == EXIT_ENVIRONMENT
    assert "binding queue 0 failed" in err.getvalue()
    assert env.kernel.names() == ["stage_sets", "install", "state", "bind_queue"]
    assert env.kernel.current.installed  # the fail-static fallback stays in the kernel


def test_a_bug_in_the_loop_exits_1_with_the_rules_in_place(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: Worker) -> None:
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(Worker, "_finish_reloads", boom)
    err = StringIO()
    code = run(str(env.policy), Overrides(), err, kernel=env.kernel,
               lock=NamespaceLock(b"\0op25b-test-bug"))
    assert code == 1
    assert "remove" not in env.kernel.names()
    assert env.kernel.current.installed
    assert "ZeroDivisionError: injected" in err.getvalue()
    assert env.syslog.having("internal error, exiting with the rules in place")


# -- verdicts and reloads --------------------------------------------------------------


def test_verdicts_follow_the_policy(env: Env) -> None:
    w = env.worker()
    assert decide(w, env, v4(BOT, MX)) == VERDICT_REJECT
    assert decide(w, env, v4(BOT, MTA)) == VERDICT_ACCEPT
    assert decide(w, env, v4(BIZ, MX)) == VERDICT_ACCEPT


def reload(w: Worker) -> None:
    before = w.counters.reloads
    w.flags.raise_flag("reload")
    steps_until(w, lambda: w.counters.reloads > before)


def test_good_reload_swaps_sets_only_and_the_new_policy_decides(env: Env) -> None:
    w = env.worker()
    assert decide(w, env, v4(BOT, MX)) == VERDICT_REJECT
    env.write(exemptions=f"[{{prefix: {BOT}/32, ticket: T-1, expires: 2999-01-01}}]")
    reload(w)
    assert w.counters.reload_failures == 0
    assert env.kernel.names().count("update_sets") == 1
    assert env.kernel.names().count("install") == 1  # same rule settings: sets only
    assert decide(w, env, v4(BOT, MX)) == VERDICT_ACCEPT
    assert env.syslog.having("reloaded")


def test_reload_that_changes_rule_settings_reinstalls_the_rules(env: Env) -> None:
    w = env.worker()
    env.write(action="drop")
    reload(w)
    installs = [d for n, d in env.kernel.calls if n == "install"]
    assert installs == ["reject fast_path=False", "drop fast_path=False"]
    assert decide(w, env, v4(BOT, MX)) == VERDICT_DROP


def test_broken_reload_keeps_the_old_policy_and_kernel(env: Env) -> None:
    w = env.worker()
    calls = len(env.kernel.calls)
    env.policy.write_text(env.policy.read_text().replace("action: reject", "action: bounce"))
    reload(w)
    assert w.counters.reload_failures == 1
    assert [n for n in env.kernel.names()[calls:] if n != "state"] == []
    assert decide(w, env, v4(BOT, MX)) == VERDICT_REJECT
    (line,) = env.syslog.having("reload refused")
    assert "action: expected one of drop | reject | monitor" in line


def test_refused_load_is_not_reported_as_a_kernel_repair(env: Env) -> None:
    # A typo in the policy never reached the kernel: no "reinstating" repair, no
    # rules_repaired (found by bench/soak.py: every invalid reload counted a repair).
    w = env.worker()
    env.policy.write_text(env.policy.read_text().replace("action: reject", "action: bounce"))
    reload(w)
    checks = w.health.rules_checks
    steps_until(w, lambda: w.health.rules_checks >= checks + 3)
    assert env.kernel.names().count("install") == 1
    assert w.health.rules_repaired == 0
    assert not env.syslog.having("reinstating the last good ruleset")


def test_reload_that_moves_the_queue_is_refused(env: Env) -> None:
    w = env.worker()
    env.write(queue=7)
    reload(w)
    assert w.counters.reload_failures == 1
    (line,) = env.syslog.having("reload refused")
    assert "daemon.queue/workers changed (0/1 -> 7/1)" in line


def test_failed_kernel_update_keeps_the_old_policy_and_restores_the_last_good_state(
    env: Env,
) -> None:
    w = env.worker()
    env.write(exemptions=f"[{{prefix: {BOT}/32, ticket: T-1, expires: 2999-01-01}}]")
    env.kernel.fail["update_sets"] = 1
    reload(w)
    assert w.counters.reload_failures == 1
    assert decide(w, env, v4(BOT, MX)) == VERDICT_REJECT  # old policy still decides
    # The watchdog reinstalls the old policy in full (sets and rules).
    steps_until(w, lambda: bool(env.syslog.having("reinstating the last good ruleset")))
    assert env.kernel.names().count("install") == 2
    assert w.health.rules_repaired == 1


# -- the rule watchdog -------------------------------------------------------------------


def test_flushed_ruleset_is_repaired_and_reported(env: Env) -> None:
    w = env.worker()
    env.kernel.flush_ruleset()
    steps_until(w, lambda: w.health.rules_repaired == 1)
    assert "install_rules" in env.kernel.names()
    assert env.kernel.current.tables == env.kernel._model(w.rule_cfg, env.kernel.sets).tables  # type: ignore[arg-type]
    (line,) = env.syslog.having("kernel rules damaged, repaired")
    assert "iptables filter: chain OP25B is missing" in line
    assert "ip6tables mangle: the FORWARD jump to OP25B is missing" in line


def test_a_flush_before_the_start_up_record_is_repaired_not_recorded(env: Env) -> None:
    # nftables.service's `flush ruleset` landing between op25b's install and the read
    # that records the expected state: recorded as it is, the damage would be "as
    # expected" and never repaired.
    w = env.installed()
    env.kernel.flush_ruleset()
    w.watchdog.take_expected_state()
    whole = env.kernel._model(w.rule_cfg, env.kernel.sets)  # type: ignore[arg-type]
    assert env.kernel.current.tables == whole.tables and env.kernel.current.nft == whole.nft
    assert w.watchdog.expected == env.kernel.current
    (line,) = env.syslog.having("kernel rules damaged, repaired")
    assert "iptables filter: chain OP25B is missing" in line
    assert w.health.rules_repaired == 1 and w.health.rules_ok
    w.bind()
    w.start()
    # and the damage that follows is measured against the whole state
    env.kernel.flush_ruleset()
    steps_until(w, lambda: w.health.rules_repaired == 2)


def test_a_flush_between_a_reload_and_its_record_is_repaired(env: Env) -> None:
    w = env.worker()
    update = env.kernel.update_sets

    def update_then_flush(policy: Any, now: Any) -> None:
        update(policy, now)
        env.kernel.flush_ruleset()  # lands before the reload's record is read

    env.kernel.update_sets = update_then_flush  # type: ignore[method-assign]
    env.write(exemptions=f"[{{prefix: {BOT}/32, ticket: T-1, expires: 2999-01-01}}]")
    reload(w)
    steps_until(w, lambda: w.health.rules_repaired == 1)
    whole = env.kernel._model(w.rule_cfg, env.kernel.sets)  # type: ignore[arg-type]
    assert env.kernel.current.tables == whole.tables
    assert w.watchdog.expected is not None and w.watchdog.expected.tables == whole.tables
    assert env.syslog.having("kernel rules damaged, repaired")


def test_a_record_that_cannot_be_made_whole_is_retried_by_the_next_check(env: Env) -> None:
    w = env.installed()
    env.kernel.flush_ruleset()
    env.kernel.fail["install"] = 1
    w.watchdog.take_expected_state()
    assert w.health.rules_repair_failures == 1 and not w.health.rules_ok
    assert env.syslog.having("repair failed (KernelFailure: install failed (injected))")
    w.bind()
    w.start()
    steps_until(w, lambda: w.health.rules_repaired == 1 and w.health.rules_ok)
    whole = env.kernel._model(w.rule_cfg, env.kernel.sets)  # type: ignore[arg-type]
    assert env.kernel.current.tables == whole.tables
    assert w.watchdog.expected == env.kernel.current


def test_moved_jump_is_repaired(env: Env) -> None:
    w = env.worker()
    env.kernel.move_jump(6, "mangle")
    steps_until(w, lambda: w.health.rules_repaired == 1)
    assert env.syslog.having("ip6tables mangle: the FORWARD jump to OP25B is no longer first")


def test_destroyed_set_triggers_a_full_reinstall(env: Env) -> None:
    w = env.worker()
    env.kernel.destroy_set("op25b-allow4")
    steps_until(w, lambda: w.health.rules_repaired == 1)
    assert env.kernel.names().count("install") == 2
    assert "op25b-allow4" in env.kernel.current.sets


def test_failed_repair_is_reported_and_retried(env: Env) -> None:
    w = env.worker()
    env.kernel.fail["install_rules"] = 1
    env.kernel.flush_ruleset()
    steps_until(w, lambda: w.health.rules_repair_failures == 1)
    assert not w.health.rules_ok
    assert env.syslog.having("repair failed (KernelFailure: install_rules failed (injected))")
    steps_until(w, lambda: w.health.rules_repaired == 1)
    assert w.health.rules_ok


def test_failed_state_read_is_counted_not_fatal(env: Env) -> None:
    w = env.worker()
    env.kernel.fail["state"] = 1
    steps_until(w, lambda: w.health.kernel_errors == 1)
    assert env.syslog.having("kernel rules check failed")
    steps_until(w, lambda: w.health.rules_ok and w.health.rules_checks >= 3)


# -- the verdict cache -------------------------------------------------------------------


def test_cache_reads_and_rotations_account_every_kernel_packet(env: Env) -> None:
    env.write(cache=3600)
    w = env.worker()
    assert w.cache is not None
    assert decide(w, env, v4(BOT, MX)) == VERDICT_REJECT
    steps_until(w, lambda: "cache_add" in env.kernel.names())
    bot = parse_address(BOT)
    env.kernel.hit(*bot, 5)
    w.cache.start_read()
    steps_until(w, lambda: w.counters.snapshot(0).block_cache_packets == 5)
    env.kernel.hit(*bot, 3)  # after the read, before the rotation
    w.cache.start_rotation()
    steps_until(w, lambda: w.counters.snapshot(0).block_cache_packets == 8)
    assert env.kernel.cache == {}
    # After the rotation the source is decided again (and cached again).
    assert decide(w, env, v4(BOT, MX)) == VERDICT_REJECT
    w.flags.raise_flag("stop")
    assert w.step(max_wait=0.0) == 0
    records = [line for line in (env.tmp / "blocked.jsonl").read_text().splitlines()]
    assert len(records) == 1
    assert '"packets": 10' in records[0] and '"kernel_packets": 8' in records[0]


def test_cache_kernel_errors_are_counted_and_reported_not_raised(env: Env) -> None:
    env.write(cache=3600)
    w = env.worker()
    env.kernel.fail["cache_add"] = 1
    assert decide(w, env, v4(BOT, MX)) == VERDICT_REJECT
    assert w.cache is not None
    steps_until(w, lambda: w.cache is not None and w.cache.errors == 1)
    steps_until(w, lambda: bool(env.syslog.having("verdict cache: add")))


def test_monitor_never_fills_the_cache(env: Env) -> None:
    env.write(action="monitor", cache=3600)
    w = env.worker()
    assert w.cache is None
    assert decide(w, env, v4(BOT, MX)) == VERDICT_ACCEPT
    assert "cache_add" not in env.kernel.names()


# -- shutdown and counters ---------------------------------------------------------------


def test_shutdown_order_rotates_the_cache_before_removing_the_rules(env: Env) -> None:
    env.write(cache=3600)
    w = env.worker()
    decide(w, env, v4(BOT, MX))
    steps_until(w, lambda: "cache_add" in env.kernel.names())
    env.kernel.hit(*parse_address(BOT), 4)
    w.flags.raise_flag("stop")
    assert w.step(max_wait=0.0) == 0
    names = env.kernel.names()
    assert names.index("cache_rotate") < names.index("remove")
    assert env.kernel.queues[0].closed
    (final,) = env.syslog.having("final counters")
    assert 'block_cache="4"' in final and 'reject="1"' in final


def test_counters_line_carries_every_health_counter(env: Env) -> None:
    w = env.worker()
    w.aggregator.max_sources = 1
    decide(w, env, v4(BOT, MX))
    decide(w, env, v4(RES, MX))  # a second source: over the cap, counted as untracked
    env.kernel.flush_ruleset()
    steps_until(w, lambda: w.health.rules_repaired == 1)
    w.send_counters()
    (line,) = [x for x in env.syslog.having("counters:") if "final" not in x]
    for name in ("abuse_overflow_sources", "syslog_dropped", "callback_errors",
                 "rules_repaired", "rules_ok", "abuse_write_errors", "abuse_records_lost"):
        assert f'{name}="' in line, name
    assert 'abuse_overflow_sources="1"' in line and 'abuse_overflow_packets="1"' in line
    assert 'rules_repaired="1"' in line and 'rules_ok="1"' in line
    assert line.endswith("abuse overflow sources 1, abuse overflow packets 1, rules repaired 1")


def test_overrides_are_validated_like_the_policy(env: Env) -> None:
    err = StringIO()
    code = run(str(env.policy), Overrides(syslog="udp://nowhere"), err, kernel=env.kernel,
               lock=NamespaceLock(b"\0op25b-test-ov"))
    assert code == 2
    assert "--syslog: expected" in err.getvalue()
    assert env.kernel.calls == []


def test_worker_config_is_the_policy_daemon_section(env: Env) -> None:
    w = env.worker()
    assert w.cfg == replace(load_policy(env.policy).policy.daemon)
    assert w.cfg.rules_check_interval == 0.05


def test_under_systemd_each_line_goes_to_the_journal_once(tmp_path: Path) -> None:
    from op25b.daemon.worker import journal_owns_stderr

    with open(tmp_path / "stream", "w") as f:
        st = os.fstat(f.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journal_owns_stderr(f.fileno(), env)
        assert not journal_owns_stderr(f.fileno(), {})  # a terminal or a pipe: mirror
        assert not journal_owns_stderr(f.fileno(), {"JOURNAL_STREAM": "1:2"})
        assert not journal_owns_stderr(f.fileno(), {"JOURNAL_STREAM": "garbage"})
