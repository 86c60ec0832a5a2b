"""The loop of one queue: verdicts first, everything else between batches.

One ``Worker`` per queue. The leader (worker 0) owns the kernel side through the
``Kernel`` seam: it keeps the rules intact (the rule watchdog), swaps sets on reload,
rotates the verdict cache and removes its rules on a clean stop. Followers
(``workers: N``) only decide, count and log; ``op25b.daemon.main`` supervises them.

Signals only set flags (``op25b.daemon.signals``); the loop acts on them. Nothing slow
runs on the loop: reloads, kernel reads and repairs, verdict-cache I/O and abuse-log
writes (with their fsync) run on threads, and their results are collected here.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TextIO

from op25b.daemon.abuselog import AbuseLogWriter
from op25b.daemon.abuselogthread import AbuseLogThread
from op25b.daemon.countersline import CounterReporter
from op25b.daemon.metricshub import Sample, take_sample
from op25b.daemon.notices import NewSourceNotices
from op25b.daemon.reload import Loaded, dispose, reload_policy
from op25b.daemon.sdnotify import Notifier
from op25b.daemon.signals import SignalFlags
from op25b.daemon.startup import Progress
from op25b.daemon.syslog import SyslogSender
from op25b.daemon.syslogformat import Severity
from op25b.daemon.timers import Timers
from op25b.daemon.watchdog import RuleWatchdog
from op25b.dataplane.aggregator import AbuseAggregator, AbuseRecord
from op25b.dataplane.counters import Counters
from op25b.dataplane.enforcer import Enforcer
from op25b.dataplane.verdicts import VERDICT_ACCEPT, VERDICT_DROP
from op25b.kernel.blockcache import BlockCache, CachedHits
from op25b.kernel.queuestats import QueueStats
from op25b.kernel.ruletext import RuleConfig
from op25b.kernel.seam import Kernel, QueueReader
from op25b.kernel.setcontents import next_change
from op25b.policy.compiled import CompiledPolicy
from op25b.policy.model import DaemonConfig, Policy, SyslogTransport


def journal_owns_stderr(fd: int = 2, environ: Mapping[str, str] = os.environ) -> bool:
    """True when ``fd`` is systemd's journal stream: syslog already gets every line.

    systemd sets JOURNAL_STREAM to the device and inode of the stream it connected to
    stdout/stderr; under it, mirroring each syslog line on stderr would put every line
    in the journal twice (once without its severity).
    """
    stream = environ.get("JOURNAL_STREAM", "")
    dev, _, ino = stream.partition(":")
    try:
        st = os.fstat(fd)
        return bool(stream) and (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


class Worker:
    """The loop of one queue (see the module docstring)."""

    def __init__(
        self,
        policy_path: str,
        policy: Policy,
        compiled: CompiledPolicy,
        cfg: DaemonConfig,
        *,
        index: int,
        kernel: Kernel,
        notifier: Notifier,
        err: TextIO,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.policy_path = policy_path
        self.policy = policy
        self.cfg = cfg
        self.index = index
        self.leader = index == 0
        self.queue_num = cfg.queue + index
        self.kernel = kernel
        self.notifier = notifier
        self.err = err
        self.clock = clock
        self.rule_cfg = RuleConfig.from_policy(policy)
        self.counters = Counters()
        self.reporter = CounterReporter()
        # A local unix socket (/dev/log) belongs to rsyslog/journald, whose stock socket
        # input parses the classic BSD header, not RFC 5424; network collectors get 5424.
        unix_format = "local" if cfg.syslog.transport is SyslogTransport.UNIX else "rfc5424"
        self.syslog = SyslogSender(cfg.syslog, procid=f"{os.getpid()}", unix_format=unix_format)
        self.mirror_stderr = not journal_owns_stderr()
        self.notices = NewSourceNotices(self.syslog)
        self.aggregator = AbuseAggregator(
            window=cfg.abuse_window,
            v6_aggregate=cfg.v6_aggregate,
            # With several workers each writes its own records for the same source and
            # window; a distinct router tag per queue makes readers add them up instead
            # of taking one for a duplicate.
            router=socket.gethostname() + (f"#q{self.queue_num}" if cfg.workers > 1 else ""),
        )
        self.writer = AbuseLogWriter(cfg.abuse_log)
        on_error = VERDICT_ACCEPT if cfg.on_error == "accept" else VERDICT_DROP
        self.enforcer = Enforcer(compiled, self.counters, self.aggregator, on_error)
        self.cache: BlockCache | None = None
        if self.rule_cfg.uses_block_cache:
            several = cfg.workers > 1
            self.cache = BlockCache(
                cfg.block_cache_timeout,
                kernel,
                reader=self.leader,
                resolve=self.enforcer.decide_on_addresses if self.leader and several else None,
            )
            self.enforcer.cache = self.cache
        self.binding: QueueReader | None = None
        self.flags = SignalFlags()
        self.on_reloaded: Callable[[], None] | None = None  # main restarts followers
        self.on_tick: Callable[[], None] | None = None  # main reaps followers
        self.on_stopping: Callable[[], None] | None = None  # main stops the followers
        self.on_metrics: Callable[[Sample], None] | None = None  # main: the metrics hub
        self.policy_loaded_at = time.time()  # op25b_policy_loaded_timestamp_seconds
        self._results: list[Loaded] = []
        self._results_lock = threading.Lock()
        self._next_set_refresh: datetime | None = None
        self._fast: dict[str, int] = {}  # fast-path accepts, refreshed off the loop
        self._cache_errors = 0
        # Kernel reads, checks and repairs: one thread, so they never overlap each
        # other; abuse-log writes: another, so an fsync never stalls a verdict.
        self._kernel_io = ThreadPoolExecutor(1, thread_name_prefix="op25b-kernel")
        self.abuse_log = AbuseLogThread(self.writer, self.log)
        self.watchdog = RuleWatchdog(kernel, self._kernel_io, self.log, clock)
        self.watchdog.target = (self.rule_cfg, policy)
        self.health = self.watchdog.health
        self._fast_read: Future[dict[str, int]] | None = None
        self.max_busy = 0.0  # seconds; the longest loop turn since the last counters line
        # Restarted by start(): the periods count from the first turn of the loop.
        self._timers = Timers.starting(time.monotonic(), cfg, self.cache)

    # -- logging -------------------------------------------------------------------

    def log(self, severity: Severity, msg: str, msgid: str) -> None:
        """A syslog line, mirrored on stderr unless systemd's journal already has it."""
        self.syslog.send(severity, msg, msgid=msgid)
        if self.mirror_stderr:
            print(f"op25b[{self.queue_num}]: {msg}", file=self.err, flush=True)

    def health_counters(self) -> dict[str, int]:
        """Everything counted besides the verdicts, for the counters line and metrics."""
        agg = self.aggregator.stats
        syslog = self.syslog.stats
        log = self.writer.stats
        h = self.health
        out = {
            "abuse_overflow_records": agg.overflow_records,
            "abuse_overflow_sources": agg.overflow_sources,
            "abuse_overflow_packets": agg.overflow_packets,
            "abuse_capped_records": agg.capped_records,
            "abuse_records_written": log.lines_written,
            "abuse_records_pending": log.pending,
            "abuse_records_lost": log.lost,
            "abuse_write_errors": log.errors,
            "abuse_log_reopens": log.reopens,
            "syslog_dropped": syslog.dropped,
            "new_source_notices_summarised": self.notices.limiter.summarised,
            "syslog_errors": syslog.send_errors,
            "callback_errors": self.binding.callback_errors if self.binding else 0,
        }
        if self.cache is not None:
            out["block_cache_adds"] = self.cache.adds
            out["block_cache_errors"] = self.cache.errors
            out["block_cache_unattributed"] = self.cache.unattributed
        if self.leader:
            out["rules_ok"] = int(h.rules_ok)
            out["rules_checks"] = h.rules_checks
            out["rules_repaired"] = h.rules_repaired
            out["rules_repair_failures"] = h.rules_repair_failures
            out["kernel_errors"] = h.kernel_errors
        return out

    def _queue_stats(self) -> dict[int, QueueStats]:
        try:
            return self.kernel.queue_stats([self.queue_num])
        except OSError:
            self.health.kernel_errors += 1
            return {}

    def publish_metrics(self) -> None:
        """Hand main's metrics hub a snapshot of everything counted (once per interval).

        The same sources as the counters line; the hub sums the workers and keeps
        their counters monotonic across restarts (op25b.daemon.metricshub).
        """
        if self.on_metrics is None:
            return
        gauges: dict[str, float] = {}
        if self.leader:
            gauges["policy_loaded"] = self.policy_loaded_at
            if self.cache is not None:
                gauges["block_cache_entries"] = self.cache.entries
        snap = self.counters.snapshot(time.monotonic())
        fast = self._fast if self.leader else {}
        sample = take_sample(
            self.index, snap, self._queue_stats(), self.health_counters(), fast, gauges
        )
        self.on_metrics(sample)

    def send_counters(self, final: bool = False) -> None:
        """One counters line (RFC 5424 structured data) for this worker's queue."""
        snap = self.counters.snapshot(time.monotonic())
        stats = self._queue_stats()
        msg, params = self.reporter.report(snap, stats, self.health_counters())
        params = (
            ("queue", str(self.queue_num)),
            *params,
            ("max_loop_ms", f"{self.max_busy * 1000:.1f}"),
        )
        self.max_busy = 0.0
        if self.leader and self.policy.daemon.fast_path:
            # Accepted in the kernel ahead of the queue: invisible to the counters above.
            params = (*params, *((f"fast_{k}", str(n)) for k, n in self._fast.items()))
            if self._fast:
                msg += f"; fast path accepted {sum(self._fast.values())} in the kernel"
        if final:
            params = (("final", "1"), *params)
            msg = "final " + msg
        self.syslog.send(Severity.INFO, msg, msgid="counters", params=params)
        if self.mirror_stderr:  # a terminal (not the journal) sees the counters too
            busiest = dict(params)["max_loop_ms"]
            print(f"op25b[{self.queue_num}]: {msg}; max_loop_ms={busiest}", file=self.err)

    def _notify_new_sources(self, final: bool = False) -> None:
        self.notices.send(self.enforcer.new_sources, time.monotonic())
        if final:
            self.notices.flush(time.monotonic(), final=True)

    # -- verdict cache and abuse log -------------------------------------------------

    def _account_cache(self, hits: list[CachedHits]) -> None:
        # Packets the kernel handled for cached sources: into the counters and the
        # abuse log exactly as if the daemon had decided them.
        cache = self.cache
        if cache is not None and cache.errors != self._cache_errors:
            self._cache_errors = cache.errors
            self.log(Severity.ERR, f"verdict cache: {cache.last_error}", "block_cache")
        now = self.clock().timestamp()
        for h in hits:
            d = h.decision
            self.counters.add_block_cache_packets(h.packets)
            self.aggregator.add_kernel_count(
                h.version, h.src, h.packets, d.plan, d.verdict, d.rule, now
            )

    def _write_abuse(self, records: list[AbuseRecord]) -> None:
        self.abuse_log.write(records)

    # -- kernel reads (leader) --------------------------------------------------------

    def _start_fast_read(self) -> None:
        if self.leader and self.policy.daemon.fast_path and self._fast_read is None:
            self._fast_read = self._kernel_io.submit(self.kernel.fast_path_counters)

    def _finish_fast_read(self) -> None:
        future = self._fast_read
        if future is not None and future.done():
            self._fast_read = None
            try:
                self._fast = future.result()
            except Exception:
                self.health.kernel_errors += 1

    # -- reload ------------------------------------------------------------------------

    def start_reload(self, sets_only: bool = False) -> None:
        """Begin a reload in a background thread (queued if one is running)."""
        if self.watchdog.reloading:
            self.flags.raise_flag("reload")  # run again when the current one finishes
            return
        self.watchdog.reloading = True
        if not sets_only:
            self.notifier.reloading()  # the reload thread tells its phases (STATUS=)

        def work() -> None:
            with self.watchdog.lock:
                result = reload_policy(
                    self.policy_path,
                    self.policy,
                    self.kernel,
                    leader=self.leader,
                    sets_only=sets_only,
                    clock=self.clock,
                    progress=None if sets_only else Progress(self.notifier),
                )
            with self._results_lock:
                self._results.append(result)
            self.flags.wake()

        threading.Thread(target=work, name="op25b-reload", daemon=True).start()

    def _finish_reloads(self) -> None:
        with self._results_lock:
            results, self._results = self._results, []
        for result in results:
            self._finish_reload(result)

    def _finish_reload(self, result: Loaded) -> None:
        self.watchdog.reloading = False
        if result.sets_only:
            if result.error:
                self.log(Severity.ERR, f"allow-set refresh failed: {result.error}", "reload")
                self.watchdog.force()
            else:
                self.watchdog.record_later()
            self._schedule_set_refresh()
            return
        self.counters.record_reload(result.error is None)
        if result.error is not None or result.policy is None or result.compiled is None:
            self.log(
                Severity.ERR, f"reload refused, old policy stays in force: {result.error}", "reload"
            )
            # A kernel update may have failed half-way: put the last good state back.
            if self.leader and result.kernel_touched:
                self.watchdog.force()
        else:
            holder = [(self.policy, self.enforcer.compiled)]
            self.policy_loaded_at = time.time()
            self.policy = result.policy
            self.rule_cfg = RuleConfig.from_policy(result.policy)
            self.watchdog.target = (self.rule_cfg, result.policy)
            self.enforcer.compiled = result.compiled
            threading.Thread(target=dispose, args=(holder,), name="op25b-free").start()
            if self.cache is not None:
                # Invalidate: a source blocked under the old policy may be exempt now.
                self.cache.start_rotation()
            if self.leader:
                self.watchdog.record_later()
            self.log(
                Severity.INFO, f"reloaded {self.policy_path} in {result.seconds:.3f}s", "reload"
            )
            self._schedule_set_refresh()
            if self.on_reloaded is not None:
                self.on_reloaded()
        self.notifier.ready(self.status())

    def _schedule_set_refresh(self) -> None:
        # The kernel allow-sets hold the exemptions active at load time; refresh them
        # when one expires so the fallback never honours an expired exemption.
        self._next_set_refresh = next_change(self.policy, self.clock()) if self.leader else None

    def status(self) -> str:
        """One line for ``systemctl status``."""
        snap = self.counters.snapshot(0.0)
        return (
            f"enforcing {self.policy_path} on queue {self.queue_num}:"
            f" {snap.blocked} blocked, {snap.decided - snap.blocked} allowed"
        )

    # -- the loop ----------------------------------------------------------------------

    def bind(self) -> None:
        """Bind the queue (the rules may already be sending packets to it)."""
        self.binding = self.kernel.bind_queue(
            self.queue_num, self.enforcer.handle, self.enforcer.on_error
        )

    def serve(self) -> int:
        """Run until stopped; returns the process exit code."""
        self.start()
        while True:
            code = self.step()
            if code is not None:
                return code

    def start(self) -> None:
        """Signals, timers and READY: what ``serve`` does before its first step."""
        assert self.binding is not None
        self.flags.install()
        self._schedule_set_refresh()
        self._timers = Timers.starting(time.monotonic(), self.cfg, self.cache)
        self._timers.set_period("watchdog", self.notifier.watchdog_interval or 3600.0)
        if self.leader:
            self.notifier.ready(self.status())
        self.publish_metrics()  # scrapes see every worker from the start
        # "started" is the leader's word alone: it is said once every queue is bound.
        word = "started" if self.leader else "follower ready"
        self.log(Severity.INFO, f"{word}: {self.status()}", "start")

    def step(self, max_wait: float | None = None) -> int | None:
        """One turn of the loop: wait for packets or a timer, then act.

        Returns the exit code once stopped, else None. Tests drive the loop with it.
        """
        binding = self.binding
        assert binding is not None
        t = self._timers
        now_m = time.monotonic()
        deadline = t.next_deadline(self.leader and bool(self.notifier.watchdog_interval))
        if (
            self.watchdog.busy
            or self._fast_read is not None
            or (self.cache is not None and self.cache.busy)
        ):
            deadline = min(deadline, now_m + 0.05)  # results to collect soon
        wait = max(0.0, deadline - now_m)
        if max_wait is not None:
            wait = min(wait, max_wait)
        qfd, wfd = binding.fileno(), self.flags.fileno()
        ready, _, _ = select.select([qfd, wfd], [], [], wait)
        woke = time.monotonic()
        code = self._turn(binding, ready, qfd, wfd)
        # The longest the loop was away from the queue: every packet queued meanwhile
        # waited at least this long for its verdict (reported per counters line).
        self.max_busy = max(self.max_busy, time.monotonic() - woke)
        return code

    def _turn(self, binding: QueueReader, ready: list[int], qfd: int, wfd: int) -> int | None:
        self.enforcer.set_clock(self.clock())
        if qfd in ready:
            binding.process()
            if self.cache is not None:
                self.cache.flush()
        if wfd in ready:
            self.flags.drain_wakeups()
        if self.enforcer.new_sources or self.notices.limiter.held:
            self._notify_new_sources()
        if self.cache is not None:
            self._account_cache(self.cache.poll())
        self._finish_reloads()
        self.abuse_log.collect()
        self.watchdog.finish()
        self._finish_fast_read()
        flags = self.flags.take()
        if "stop" in flags:
            return self.shutdown()
        if "reopen" in flags:
            self.abuse_log.reopen()
        if "reload" in flags and self.leader:
            self.start_reload()
        if self.on_tick is not None:
            self.on_tick()
        refresh = self._next_set_refresh
        if refresh is not None and self.enforcer.now >= refresh and not self.watchdog.reloading:
            self._next_set_refresh = None
            self.start_reload(sets_only=True)
        self._run_timers(time.monotonic())
        self.syslog.flush()
        return None

    def _run_timers(self, now_m: float) -> None:
        t = self._timers
        if self.cache is not None and t.due("rotation", now_m):
            self.cache.start_rotation()
        if t.due("window", now_m):
            if self.cache is not None:
                self.cache.start_read()
            self._write_abuse(self.aggregator.due(self.clock().timestamp()))
        if self.leader and t.due("check", now_m):
            self.watchdog.start()
        if t.due("fast", now_m):
            self._start_fast_read()
        if "metrics" in t.period and t.due("metrics", now_m):
            self.publish_metrics()
        if t.due("counters", now_m):
            self.send_counters()
            if self.leader:
                self.notifier.status(self.status())
        if self.leader and self.notifier.watchdog_interval and t.due("watchdog", now_m):
            self.notifier.watchdog()

    def shutdown(self) -> int:
        """Answer what is queued, remove the rules (leader), drain, write, say goodbye.

        Leader order: (1) the followers stop (each drains its queue; until the rules go,
        their share meets the fallback, which enforces the same policy); (2) the final
        verdict-cache rotation, once nobody adds to it any more, so its counts are
        exact; (3) the rules go, so nothing new is queued; (4) what is queued, and what
        arrived meanwhile, is answered; then the records and the final counters.
        """
        binding = self.binding
        assert binding is not None
        self.notifier.stopping()
        self.enforcer.set_clock(self.clock())
        code = 0
        while binding.process():  # answer what is queued before anything goes
            pass
        if self.leader and self.on_stopping is not None:
            self.on_stopping()
        if self.cache is not None:
            self._account_cache(self.cache.close())
            self.enforcer.cache = None  # decisions from here on are the daemon's alone
        if self.leader:
            self._kernel_io.shutdown(wait=True)
            if self.policy.daemon.fast_path:
                try:
                    self._fast = self.kernel.fast_path_counters()
                except Exception:
                    self.health.kernel_errors += 1
            try:
                self.kernel.remove()
            except Exception as e:
                self.log(Severity.ERR, f"removing rules failed: {e}", "stop")
                code = 1
            else:
                if self.watchdog.state_file:
                    with contextlib.suppress(OSError):
                        os.unlink(self.watchdog.state_file)
        while binding.process():  # what arrived while the rules were being removed
            pass
        binding.close()
        self._notify_new_sources(final=True)
        self._write_abuse(self.aggregator.flush_all(self.clock().timestamp()))
        self.abuse_log.close()
        self.send_counters(final=True)
        self.publish_metrics()  # the last numbers, so a replaced follower loses none
        self.log(Severity.INFO, "stopped", "stop")
        self.syslog.close()
        return code
