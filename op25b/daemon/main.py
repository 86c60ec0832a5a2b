"""``op25b run``: start-up, the followers, and how the daemon ends.

Start-up order, each step refusing cleanly before the next touches anything:
load and check the policy (exit 1 with file:line), take the namespace lock (a second
daemon exits 3 before touching the kernel), open the abuse log, load the kernel sets
beside the live ones while the policy compiles (``op25b.daemon.startsteps``), swap
them in and install the rules, fork and bind the followers, bind the leader's queue,
then READY=1.

Never fail open: no error path removes op25b's rules. If binding fails or the loop
dies of a bug, the daemon exits non-zero with its rules in place, the kernel's
``--queue-bypass`` sends guarded traffic to the ``on_daemon_down`` fallback, and
systemd restarts the daemon. Rules go only on a clean stop (SIGTERM/SIGINT) or with
``op25b rules remove``.

Followers (``workers: N``) are forked with the leader's compiled policy (so every
worker enforces the same policy), die with the leader, are restarted when they die
(and after every reload, to take the new policy), and a follower crash loop makes
the leader exit non-zero so systemd restarts the whole daemon — never a silent,
permanent fallback for a share of the traffic.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
import traceback
from contextlib import ExitStack
from typing import NoReturn, TextIO

from op25b.daemon.config import Overrides
from op25b.daemon.lock import NamespaceLock
from op25b.daemon.reload import pin_mmap_threshold, trim_memory
from op25b.daemon.sdnotify import Notifier
from op25b.daemon.startsteps import Metrics, StagingFailed, Startup
from op25b.daemon.startup import INSTALL_PER_MILLION, Progress, budget, prefix_count
from op25b.daemon.syslogformat import Severity
from op25b.daemon.worker import Worker
from op25b.errors import EXIT_ENVIRONMENT, EXIT_INVALID, EnvironmentFailure, Op25bError
from op25b.kernel import integrity
from op25b.kernel.ruletext import RuleConfig
from op25b.kernel.seam import Kernel, SystemKernel
from op25b.policy.compiled import CompiledPolicy
from op25b.policy.model import Policy
from op25b.policy.problems import PolicyError

EXIT_CRASHED = 1
# More unexpected follower deaths than this within the window: stop and let systemd
# restart the whole daemon instead of restarting one worker for ever.
CRASH_LIMIT = 5
CRASH_WINDOW = 60.0
_PR_SET_PDEATHSIG = 1


def run(
    policy_path: str,
    overrides: Overrides,
    err: TextIO = sys.stderr,
    *,
    kernel: Kernel | None = None,
    notifier: Notifier | None = None,
    lock: NamespaceLock | None = None,
    state_file: str | None = None,
) -> int:
    """Load, install, serve, clean up; the exit code (see op25b.errors and above).

    ``state_file`` (default: /run/op25b/kernel-state-<netns>.json with the real
    kernel, none with an injected one) records the installed state for
    ``op25b rules status``.
    """
    pin_mmap_threshold()
    notifier = Notifier() if notifier is None else notifier
    if state_file is None:
        state_file = integrity.state_file() if kernel is None else ""
    kernel = SystemKernel() if kernel is None else kernel
    lock = NamespaceLock() if lock is None else lock
    # The lock and the metrics exporter, from when start-up takes them until exit.
    with ExitStack() as held:
        start = Startup(overrides, kernel, lock, Progress(notifier), held)
        try:
            # In a child: the loader's garbage never enters the daemon's heap (start-up
            # RSS and high-water mark stay at what the compiled policy needs). The
            # kernel sets load beside the compile (op25b.daemon.startsteps).
            policy, compiled = start.load(policy_path)
        except PolicyError as e:
            print(e, file=err)
            return _abandon(start, EXIT_INVALID, err)
        except Op25bError as e:
            print(f"op25b run: {e}", file=err)
            return _abandon(start, e.exit_code, err)
        try:
            code = _run_locked(policy_path, policy, compiled, start, err, state_file)
        except EnvironmentFailure as e:
            print(f"op25b run: {e}", file=err)
            return e.exit_code
        assert start.metrics is not None  # begin() ran before the compiled policy came
        start.metrics.clean = code == 0
        return code


def _abandon(start: Startup, code: int, err: TextIO) -> int:
    problem = start.abandon()
    if problem is not None:
        print(f"op25b run: {problem}", file=err)
    return code


def _run_locked(
    policy_path: str,
    policy: Policy,
    compiled: CompiledPolicy,
    start: Startup,
    err: TextIO,
    state_file: str,
) -> int:
    assert start.cfg is not None and start.metrics is not None and start.now is not None
    cfg, kernel, metrics, progress = start.cfg, start.kernel, start.metrics, start.progress
    notifier = progress.notifier
    size = prefix_count(policy)
    worker = Worker(
        policy_path, policy, compiled, cfg, index=0, kernel=kernel, notifier=notifier, err=err
    )
    try:
        worker.writer.open()
    except OSError as e:
        print(f"op25b run: cannot open abuse log {cfg.abuse_log}: {e.strerror or e}", file=err)
        return _abandon(start, EXIT_ENVIRONMENT, err)
    worker.watchdog.state_file = state_file
    trim_memory()
    try:
        text = f"installing kernel rules and sets ({size:,} prefixes)"
        with progress.phase(text, budget(INSTALL_PER_MILLION, size)):
            start.staged()
            kernel.install(RuleConfig.from_policy(policy), policy, start.now)
        worker.watchdog.take_expected_state()
    except (Op25bError, OSError, ValueError, StagingFailed) as e:
        hint = " (op25b run needs root or CAP_NET_ADMIN)" if os.geteuid() != 0 else ""
        print(f"op25b run: installing kernel rules failed{hint}: {e}", file=err)
        return EXIT_ENVIRONMENT
    notifier.status(f"binding {cfg.workers} queue(s) from {cfg.queue}")
    followers = Followers(worker, start.lock, metrics)
    try:
        followers.start_all()
        worker.bind()
    except (Op25bError, OSError) as e:
        # The rules stay: with no reader the kernel applies the on_daemon_down fallback.
        print(f"op25b run: binding queue {worker.queue_num} failed: {e}", file=err)
        followers.stop_all()
        return EXIT_ENVIRONMENT
    worker.on_reloaded = followers.restart_all
    worker.on_tick = followers.reap
    worker.on_stopping = followers.stop_all
    metrics.attach(worker)
    try:
        return worker.serve()
    except FollowerCrashLoop as e:
        worker.log(Severity.ERR, f"{e}; exiting, the kernel fallback enforces", "stop")
        followers.stop_all()
        return EXIT_CRASHED
    except Exception:
        # A bug: say where, keep every rule in place (the fallback enforces the last
        # good policy while systemd restarts us), exit non-zero.
        detail = traceback.format_exc(limit=6)
        with contextlib.suppress(Exception):
            worker.log(Severity.CRIT, "internal error, exiting with the rules in place", "crash")
        print(detail, file=err)
        followers.stop_all()
        return EXIT_CRASHED


class FollowerCrashLoop(Exception):
    """Followers keep dying; the leader gives up so systemd restarts the daemon."""


class Followers:
    """The leader's forked workers: started, restarted, stopped."""

    def __init__(self, leader: Worker, lock: NamespaceLock, metrics: Metrics) -> None:
        self.leader = leader
        self.lock = lock
        self.metrics = metrics
        self.pids: dict[int, int] = {}  # pid -> worker index
        self._expected_exits: set[int] = set()
        self._deaths: list[float] = []
        self._stopping = False

    def start_all(self) -> None:
        """Fork every follower and return once each has bound its queue.

        Until a follower is bound, packets hashed to its queue meet the fallback
        rules; so the leader says READY only after all of them reported in.
        """
        indexes = range(1, self.leader.cfg.workers)
        ready_r, ready_w = os.pipe()
        for index in indexes:
            self._fork(index, ready_w)
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as ready:
            # EOF before N-1 bytes: a follower died before binding (its error is on stderr).
            got = ready.read(len(indexes)) if indexes else b""
        if len(got) != len(indexes):
            raise OSError(f"{len(indexes) - len(got)} of {len(indexes)} follower(s) failed to bind")

    def _fork(self, index: int, ready_w: int | None) -> None:
        w = self.leader
        policy, compiled = w.policy, w.enforcer.compiled
        leader_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            _follower_main(w, index, policy, compiled, self, ready_w, leader_pid)
        self.pids[pid] = index

    def restart_all(self) -> None:
        """After a reload: each follower is replaced by one with the new policy."""
        for pid in list(self.pids):
            self._expected_exits.add(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def reap(self) -> None:
        """Collect dead followers and start their replacements (each loop tick)."""
        for pid in list(self.pids):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            index = self.pids.pop(pid)
            if self._stopping:
                continue
            if pid in self._expected_exits:
                self._expected_exits.discard(pid)
            else:
                now = time.monotonic()
                self._deaths = [t for t in self._deaths if now - t < CRASH_WINDOW] + [now]
                self.leader.log(
                    Severity.ERR,
                    f"follower for queue {self.leader.cfg.queue + index} died"
                    f" ({_describe(status)}); restarting it",
                    "follower",
                )
                if len(self._deaths) > CRASH_LIMIT:
                    raise FollowerCrashLoop(
                        f"{len(self._deaths)} follower deaths within {CRASH_WINDOW:.0f}s"
                    )
            self._fork(index, None)

    def stop_all(self) -> None:
        """SIGTERM every follower and wait for it (each drains its queue first)."""
        self._stopping = True
        for pid in list(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in list(self.pids):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.pids.pop(pid, None)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


def _follower_main(
    leader: Worker,
    index: int,
    policy: Policy,
    compiled: CompiledPolicy,
    followers: Followers,
    ready_w: int | None,
    leader_pid: int,
) -> NoReturn:
    """A forked follower's whole life; never returns."""
    code = 1
    try:
        _die_with(signal.SIGTERM, leader_pid)
        # The lock is the leader's alone: a follower holding it would block a restart.
        with contextlib.suppress(OSError):
            os.close(followers.lock.fileno())
        w = Worker(
            leader.policy_path,
            policy,
            compiled,
            leader.cfg,
            index=index,
            kernel=leader.kernel,
            notifier=Notifier({}),
            err=leader.err,
            clock=leader.clock,
        )
        followers.metrics.in_follower(w)
        w.writer.open()
        w.bind()
        if ready_w is not None:
            os.write(ready_w, b"1")
            os.close(ready_w)
        code = w.serve()
    except BaseException:
        traceback.print_exc(limit=4, file=leader.err)
    finally:
        os._exit(code)


def _die_with(sig: int, leader_pid: int) -> None:
    """Ask the kernel to send ``sig`` when the leader dies (exit at once if it has)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != leader_pid:
        os._exit(0)
