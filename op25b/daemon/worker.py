"""``op25b run``: the daemon's lifecycle around the queue binding.

One process per queue. The leader (worker 0) owns the kernel side: it installs the
rules and sets at start, swaps the sets on reload and removes exactly its rules on exit.
With ``workers: N`` it forks N-1 followers bound to the next queues of the
``--queue-balance`` range; they only decide, log and count, and take their signals
from the leader.

Signals only set flags (and wake ``select`` through ``signal.set_wakeup_fd``); the
loop acts on them between batches:

- SIGHUP  reload: the policy is loaded and compiled in a background thread so verdicts
          keep flowing, then swapped in at once; an invalid policy is refused with its
          file:line error in syslog and the old one stays in force.
- SIGUSR1 reopen the abuse log (logrotate).
- SIGTERM/SIGINT  stop: answer what is queued, remove the rules, answer what arrived
          meanwhile, unbind, write the open abuse windows and the final counters.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import FrameType
from typing import TextIO

from op25b.daemon.abuselog import AbuseLogWriter
from op25b.daemon.countersline import CounterReporter
from op25b.daemon.sdnotify import Notifier
from op25b.daemon.syslog import Severity, SyslogSender
from op25b.dataplane.aggregator import AbuseAggregator, AbuseRecord
from op25b.dataplane.counters import Counters
from op25b.dataplane.enforcer import Enforcer
from op25b.dataplane.verdicts import VERDICT_ACCEPT, VERDICT_DROP
from op25b.kernel import rules
from op25b.kernel.blockcache import BlockCache, CachedHits
from op25b.kernel.commands import RulesError
from op25b.kernel.nfq import QueueBinding
from op25b.kernel.queuestats import kernel_queue_stats
from op25b.kernel.ruletext import RuleConfig
from op25b.kernel.setcontents import compute_sets, next_change
from op25b.policy.addr import format_address, parse_syslog_address
from op25b.policy.compiled import CompiledPolicy, compile_policy
from op25b.policy.loader import PolicyError, load_policy
from op25b.policy.model import DaemonConfig, Policy, SyslogConfig, SyslogTransport


@dataclass(frozen=True)
class Overrides:
    """Command-line settings that win over the policy's daemon section."""

    abuse_log: str | None = None
    syslog: str | None = None
    counters_interval: float | None = None
    abuse_window: float | None = None


def apply_overrides(cfg: DaemonConfig, ov: Overrides) -> DaemonConfig:
    """The daemon section with command-line overrides applied."""
    if ov.abuse_log is not None:
        cfg = replace(cfg, abuse_log=ov.abuse_log)
    if ov.syslog is not None:
        cfg = replace(cfg, syslog=syslog_address(ov.syslog, cfg.syslog.facility))
    if ov.counters_interval is not None:
        cfg = replace(cfg, counters_interval=ov.counters_interval)
    if ov.abuse_window is not None:
        cfg = replace(cfg, abuse_window=ov.abuse_window)
    return cfg


def syslog_address(text: str, facility: str) -> SyslogConfig:
    """``--syslog``: the same syntax as the policy's ``daemon.syslog.address``."""
    try:
        transport, host, port = parse_syslog_address(text)
    except ValueError as e:
        raise ValueError(f"--syslog: {e}") from None
    return SyslogConfig(transport, host, port, facility)


def _apply(policy: Policy, cfg: RuleConfig | None) -> None:
    """Swap in the sets for ``policy`` (and replace the rules when ``cfg`` is given)."""
    sets = compute_sets(policy, datetime.now(UTC))
    if cfg is None:
        rules.update_sets(sets)
    else:
        rules.install(cfg, sets)


def in_child(work: Callable[[], None]) -> None:
    """Run ``work`` in a forked child and wait for it; its error is raised here.

    Computing a million set entries means building and freeing dicts and tuples of a
    million items, and CPython does each resize and each free in one C call that holds
    the interpreter: measured, up to 210 ms without a verdict. A forked child has the
    policy already (copy-on-write), does that work on its own interpreter, and the
    reload thread only waits, which holds nothing.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no return, no atexit handlers, no parent buffers flushed
        code = 0
        try:
            os.close(r)
            # Lowest CPU priority: on a busy router the verdict loop goes first, and
            # this child's kernel work (loading and swapping big sets) waits.
            with contextlib.suppress(OSError, AttributeError):
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            work()
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.write(w, str(e).encode("utf-8", "replace")[:8192])
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        message = f.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RulesError(["op25b-sets"], os.waitstatus_to_exitcode(status), message)


def trim_memory() -> None:
    """Hand freed heap memory back to the kernel (glibc); a no-op elsewhere.

    Loading a million-prefix policy leaves a few hundred MB of freed parse garbage
    that glibc keeps for reuse; trimming takes the daemon's RSS from ~370 MB back to
    ~120 MB (measured at 1M prefixes).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _dispose(holder: list[tuple[Policy, CompiledPolicy]]) -> None:
    for policy, _ in holder:
        for plan in policy.plans:
            plan.prefixes.release()
    holder.clear()
    trim_memory()


@dataclass(frozen=True)
class _Loaded:
    """A reload's result, handed from the reload thread to the loop."""

    policy: Policy | None
    compiled: CompiledPolicy | None
    error: str | None
    seconds: float
    sets_only: bool = False


class Worker:
    """The loop of one queue."""

    def __init__(
        self,
        policy_path: str,
        policy: Policy,
        overrides: Overrides,
        index: int,
        leader: bool,
        notifier: Notifier,
        err: TextIO,
    ) -> None:
        self.policy_path = policy_path
        self.policy = policy
        self.overrides = overrides
        self.cfg = apply_overrides(policy.daemon, overrides)
        self.index = index
        self.queue_num = self.cfg.queue + index
        self.leader = leader
        self.notifier = notifier
        self.err = err
        self.followers: list[int] = []
        self.counters = Counters()
        self.reporter = CounterReporter()
        # A local unix socket (/dev/log) belongs to rsyslog/journald, whose stock socket
        # input parses the classic BSD header, not RFC 5424; network collectors get 5424.
        unix_format = "local" if self.cfg.syslog.transport is SyslogTransport.UNIX else "rfc5424"
        self.syslog = SyslogSender(
            self.cfg.syslog, procid=f"{os.getpid()}", unix_format=unix_format
        )
        self.aggregator = AbuseAggregator(
            window=self.cfg.abuse_window,
            v6_aggregate=self.cfg.v6_aggregate,
            # With several workers each writes its own records for the same source and
            # window; a distinct router tag per queue makes readers add them up instead
            # of taking one for a duplicate.
            router=socket.gethostname() + (f"#q{self.queue_num}" if self.cfg.workers > 1 else ""),
        )
        self.writer = AbuseLogWriter(self.cfg.abuse_log)
        on_error = VERDICT_ACCEPT if self.cfg.on_error == "accept" else VERDICT_DROP
        self.enforcer = Enforcer(compile_policy(policy), self.counters, self.aggregator, on_error)
        self.cache: BlockCache | None = None
        if RuleConfig.from_policy(policy).uses_block_cache:
            resolve = self.enforcer.decide_on_addresses if leader and self.cfg.workers > 1 else None
            self.cache = BlockCache(self.cfg.block_cache_timeout, resolve=resolve)
            self.enforcer.cache = self.cache
        self.binding: QueueBinding | None = None
        self._flags: set[str] = set()
        self._results: queue.Queue[_Loaded] = queue.Queue()
        self._reloading = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._next_set_refresh: datetime | None = None
        self._fast_final: dict[str, int] = {}  # read just before the rules go
        self._cache_errors = 0  # BlockCache.errors already reported

    # -- signals -------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only set a flag; the loop acts. set_wakeup_fd makes select() return.
        self._flags.add(
            {
                signal.SIGHUP: "reload",
                signal.SIGUSR1: "reopen",
                signal.SIGTERM: "stop",
                signal.SIGINT: "stop",
            }[signal.Signals(signum)]
        )

    def _install_signals(self) -> None:
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    # -- logging -------------------------------------------------------------------

    def log(self, severity: Severity, msg: str, msgid: str) -> None:
        """A syslog line, mirrored on stderr so `op25b run` in a terminal shows it."""
        self.syslog.send(severity, msg, msgid=msgid)
        print(f"op25b[{self.queue_num}]: {msg}", file=self.err, flush=True)

    def _send_counters(self, final: bool = False) -> None:
        snap = self.counters.snapshot(time.monotonic())
        stats = kernel_queue_stats(queues=[self.queue_num])
        msg, params = self.reporter.report(snap, stats)
        params = (("queue", str(self.queue_num)), *params)
        if self.leader and self.policy.daemon.fast_path:
            # Accepted in the kernel ahead of the queue: invisible to the counters above.
            fast = self._fast_final if final else self._read_fast_path()
            params = (*params, *((f"fast_{k}", str(n)) for k, n in fast.items()))
            if fast:
                msg += f"; fast path accepted {sum(fast.values())} in the kernel"
        if final:
            params = (("final", "1"), *params)
            msg = "final " + msg
        self.syslog.send(Severity.INFO, msg, msgid="counters", params=params)

    def _read_fast_path(self) -> dict[str, int]:
        try:
            return rules.fast_path_counters()
        except (RulesError, OSError):
            return {}

    def _notify_new_sources(self) -> None:
        for pkt, d in self.enforcer.new_sources:
            src = format_address(pkt.version, pkt.src)
            dst = format_address(pkt.version, pkt.dst)
            self.syslog.send(
                Severity.NOTICE,
                f"blocked source {src} plan={d.plan} action={d.verdict.value} "
                f"first_destination={dst if pkt.version == 4 else f'[{dst}]'}:{pkt.dport} "
                f"rule={d.rule}",
                msgid="blocked",
                params=(
                    ("src", src),
                    ("plan", d.plan or ""),
                    ("action", d.verdict.value),
                    ("dst", dst),
                    ("dport", str(pkt.dport)),
                ),
            )
        self.enforcer.new_sources.clear()

    def _rotate_cache(self) -> None:
        if self.cache is None:
            return
        if self.leader:
            self._account_cache(self.cache.rotate())
        else:
            self.cache.forget()
            self._report_cache_errors()

    def _report_cache_errors(self) -> None:
        # The cache never raises (the daemon still decides uncached sources); say so.
        if self.cache is not None and self.cache.errors != self._cache_errors:
            self._cache_errors = self.cache.errors
            self.log(Severity.ERR, f"verdict cache: {self.cache.last_error}", "block_cache")

    def _account_cache(self, hits: list[CachedHits]) -> None:
        # Packets the kernel handled for cached sources: into the counters and the
        # abuse log exactly as if the daemon had decided them.
        self._report_cache_errors()
        for h in hits:
            d = h.decision
            self.counters.add_block_cache_packets(h.packets)
            self.aggregator.add_kernel_count(
                h.version, h.src, h.packets, d.plan, d.verdict, d.rule, time.time()
            )

    def _write_abuse(self, records: list[AbuseRecord]) -> None:
        if not records:
            return
        errors = self.writer.errors
        self.writer.write(records)
        # The writer never raises (a full disk must not stop enforcement); say so in syslog.
        if self.writer.errors != errors:
            self.log(Severity.ERR, f"abuse log write failed: {self.writer.last_error}", "abuse_log")

    # -- reload --------------------------------------------------------------------

    def _start_reload(self, sets_only: bool = False) -> None:
        if self._reloading:
            self._flags.add("reload")  # run again when the current one finishes
            return
        self._reloading = True
        if not sets_only:
            self.notifier.reloading()
        threading.Thread(
            target=self._reload_thread, args=(sets_only,), name="op25b-reload", daemon=True
        ).start()

    def _reload_thread(self, sets_only: bool) -> None:
        t0 = time.monotonic()
        try:
            if sets_only:
                policy = self.policy
                compiled = None
            else:
                policy = load_policy(self.policy_path).policy
                compiled = compile_policy(policy)
                trim_memory()  # the loader's garbage is gone by now
            if self.leader:
                new_cfg = RuleConfig.from_policy(policy)
                same = sets_only or new_cfg == RuleConfig.from_policy(self.policy)
                in_child(lambda: _apply(policy, None if same else new_cfg))
            result = _Loaded(policy, compiled, None, time.monotonic() - t0, sets_only)
        except PolicyError as e:
            result = _Loaded(None, None, str(e), time.monotonic() - t0, sets_only)
        except (RulesError, OSError, ValueError) as e:
            result = _Loaded(None, None, f"kernel update failed: {e}", time.monotonic() - t0)
        self._results.put(result)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"r")

    def _finish_reload(self, result: _Loaded) -> None:
        self._reloading = False
        if result.sets_only:
            if result.error:
                self.log(Severity.ERR, f"allow-set refresh failed: {result.error}", "reload")
            self._schedule_set_refresh()
            return
        self.counters.record_reload(result.error is None)
        if result.error is not None or result.policy is None or result.compiled is None:
            self.log(
                Severity.ERR,
                f"reload refused, old policy stays in force: {result.error}",
                "reload",
            )
        else:
            # Free the old policy off the verdict path: the holder list is its last
            # reference and the thread empties it, so the deallocation (and handing the
            # memory back) happens there.
            holder = [(self.policy, self.enforcer.compiled)]
            self.policy = result.policy
            self.enforcer.compiled = result.compiled
            threading.Thread(target=_dispose, args=(holder,), name="op25b-free").start()
            # Invalidate: a source blocked under the old policy may be exempt now.
            self._rotate_cache()
            self.log(
                Severity.INFO,
                f"reloaded {self.policy_path} in {result.seconds:.3f}s",
                "reload",
            )
            self._schedule_set_refresh()
        for pid in self.followers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)
        self.notifier.ready(self._status())

    def _schedule_set_refresh(self) -> None:
        # The kernel allow-sets hold the exemptions active at load time; refresh them
        # when one expires so the fallback never honours an expired exemption.
        now = datetime.now(UTC)
        self._next_set_refresh = next_change(self.policy, now) if self.leader else None

    def _status(self) -> str:
        return f"enforcing {self.policy_path} on queue {self.queue_num}"

    # -- the loop ------------------------------------------------------------------

    def bind(self) -> None:
        """Bind the queue (the rules may already be sending packets to it)."""
        on_error = self.enforcer.on_error
        self.binding = QueueBinding(self.queue_num, self.enforcer.handle, on_error)

    def serve(self) -> int:
        """Run until stopped; returns the process exit code."""
        assert self.binding is not None
        binding = self.binding
        self._install_signals()
        self._schedule_set_refresh()
        interval = self.cfg.counters_interval
        next_counters = time.monotonic() + interval
        next_watchdog = time.monotonic()
        window_tick = min(1.0, self.cfg.abuse_window / 4)
        next_window = time.monotonic() + window_tick
        next_rotation = time.monotonic() + (self.cache.timeout if self.cache is not None else 0)
        if self.leader:
            self.notifier.ready(self._status())
        self.log(Severity.INFO, f"started: {self._status()}", "start")
        while True:
            now_m = time.monotonic()
            deadline = min(next_counters, next_window)
            if self.notifier.watchdog_interval and self.leader:
                deadline = min(deadline, next_watchdog)
            timeout = max(0.0, deadline - now_m)
            qfd, wfd = binding.fileno(), self._wake_r.fileno()
            ready, _, _ = select.select([qfd, wfd], [], [], timeout)
            self.enforcer.set_clock(datetime.now(UTC))
            if qfd in ready:
                binding.process()
                if self.cache is not None:
                    self.cache.flush()
            if wfd in ready:
                with contextlib.suppress(BlockingIOError):
                    while self._wake_r.recv(4096):
                        pass
            if self.enforcer.new_sources:
                self._notify_new_sources()
            while not self._results.empty():
                self._finish_reload(self._results.get_nowait())
            flags, self._flags = self._flags, set()
            if "stop" in flags:
                return self._shutdown()
            if "reopen" in flags:
                self.writer.reopen()
                self.log(Severity.INFO, f"reopened abuse log {self.cfg.abuse_log}", "abuse_log")
                for pid in self.followers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGUSR1)
            if "reload" in flags:
                self._start_reload()
            refresh = self._next_set_refresh
            if refresh is not None and self.enforcer.now >= refresh and not self._reloading:
                self._next_set_refresh = None
                self._start_reload(sets_only=True)
            now_m = time.monotonic()
            if self.cache is not None and now_m >= next_rotation:
                next_rotation = now_m + self.cache.timeout
                self._rotate_cache()
            if now_m >= next_window:
                next_window = now_m + window_tick
                if self.cache is not None and self.leader:
                    self._account_cache(self.cache.read())
                self._write_abuse(list(self.aggregator.due(time.time())))
            if now_m >= next_counters:
                next_counters = now_m + interval
                self._send_counters()
            if self.leader and self.notifier.watchdog_interval and now_m >= next_watchdog:
                next_watchdog = now_m + self.notifier.watchdog_interval
                self.notifier.watchdog()
            self.syslog.flush()

    def _shutdown(self) -> int:
        assert self.binding is not None
        self.notifier.stopping()
        for pid in self.followers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.enforcer.set_clock(datetime.now(UTC))
        # Answer what is queued before the rules go (bounded: a flood keeps queueing).
        for _ in range(64):
            if not self.binding.process():
                break
        code = 0
        if self.leader:
            for pid in self.followers:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
        if self.cache is not None:
            # Rotate rather than read (and only once the followers are gone and add
            # nothing more): after the swap the kernel no longer counts on the old
            # entries, so the final numbers are exact.
            if self.leader:
                self._account_cache(self.cache.rotate())
            self.cache.close()
        if self.leader:
            if self.policy.daemon.fast_path:
                self._fast_final = self._read_fast_path()
            try:
                rules.remove()
            except RulesError as e:
                self.log(Severity.ERR, f"removing rules failed: {e}", "stop")
                code = 1
        while self.binding.process():  # what arrived while the rules were being removed
            pass
        self.binding.close()
        self._notify_new_sources()
        self._write_abuse(list(self.aggregator.flush_all(time.time())))
        self.writer.close()
        self._send_counters(final=True)
        self.log(Severity.INFO, "stopped", "stop")
        self.syslog.close()
        return code


def run(policy_path: str, overrides: Overrides, err: TextIO = sys.stderr) -> int:
    """Load, install, serve, clean up. Exit codes: 0 clean stop, 1 could not start."""
    try:
        policy = load_policy(policy_path).policy
    except PolicyError as e:
        print(f"op25b run: {e}", file=err)
        return 1
    try:
        cfg = apply_overrides(policy.daemon, overrides)
    except ValueError as e:
        print(f"op25b run: {e}", file=err)
        return 1
    notifier = Notifier()
    try:
        worker = Worker(policy_path, policy, overrides, 0, True, notifier, err)
        worker.writer.open()
        trim_memory()
    except OSError as e:
        print(f"op25b run: cannot open abuse log {cfg.abuse_log}: {e}", file=err)
        return 1
    try:
        rules.install(RuleConfig.from_policy(policy), compute_sets(policy, datetime.now(UTC)))
    except (RulesError, OSError) as e:
        hint = " (op25b run needs root or CAP_NET_ADMIN)" if os.geteuid() != 0 else ""
        print(f"op25b run: installing kernel rules failed{hint}: {e}", file=err)
        return 1
    try:
        worker.followers = _fork_followers(policy_path, policy, overrides, notifier, err, cfg)
        worker.bind()
    except OSError as e:
        print(f"op25b run: binding queue {cfg.queue} failed: {e}", file=err)
        for pid in worker.followers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(RulesError):
            rules.remove()
        return 1
    try:
        return worker.serve()
    except BaseException:
        # Unexpected: leave no rules that point at a dead queue behind except the
        # configured down-behaviour, which is what the kernel does without us anyway.
        with contextlib.suppress(RulesError):
            rules.remove()
        raise


def _fork_followers(
    policy_path: str,
    policy: Policy,
    overrides: Overrides,
    notifier: Notifier,
    err: TextIO,
    cfg: DaemonConfig,
) -> list[int]:
    """Fork the followers and return once every one has bound its queue.

    Until a follower is bound, packets hashed to its queue meet the fallback rules; so
    the leader says "started" (and READY=1) only after all of them reported in.
    """
    pids: list[int] = []
    ready_r, ready_w = os.pipe()
    for index in range(1, cfg.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(ready_r)
                w = Worker(policy_path, policy, overrides, index, False, Notifier({}), err)
                w.writer.open()
                w.bind()
                os.write(ready_w, b"1")
                os.close(ready_w)
                code = w.serve()
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(ready_w)
    with os.fdopen(ready_r, "rb") as ready:
        # EOF before N-1 bytes: a follower died before binding (its error is on stderr).
        got = ready.read(len(pids)) if pids else b""
    if len(got) != len(pids):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        raise OSError(f"{len(pids) - len(got)} of {len(pids)} follower(s) failed to bind")
    return pids
