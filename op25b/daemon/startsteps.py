"""The steps of ``op25b run``'s start that need only the policy: done while it compiles.

Owns ``Startup``: the loader child sends the policy as soon as it is loaded and then
compiles it (``op25b.daemon.loadchild``); meanwhile the daemon applies the command
line's overrides, takes the namespace lock, opens the metrics outputs, tries the abuse
log, and begins the kernel install's slow half, loading the sets into temporaries
beside the live ones (``Kernel.stage_sets``; a million entries took ~2.5 s here, the
compile ~1 s). Only once the compiled policy has arrived are the sets swapped in and
the rules installed (``Kernel.install``, a few commands). So:

- each step still refuses before the next touches anything: a second daemon, an
  unusable metrics output or abuse log exit 3 before the kernel is touched;
- nothing of the new policy is in force before the whole of it is ready: until the
  swap, the previous run's rules and sets (if any) enforce, fallback included; a
  compile that fails after the sets were staged drops the temporaries and exits 1
  (as any load failure), the previous rules untouched; a staging that fails exits 3
  (as a failed install), nothing removed.

Also owns ``Metrics`` (``daemon.metrics``: the exporter from start to exit).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from op25b.daemon.abuselog import AbuseLogWriter
from op25b.daemon.config import Overrides, apply_overrides
from op25b.daemon.loadchild import load_compiled
from op25b.daemon.lock import NamespaceLock
from op25b.daemon.metricshub import Channel, MetricsHub
from op25b.daemon.startup import (
    COMPILE_PER_MILLION,
    INSTALL_PER_MILLION,
    Progress,
    budget,
    prefix_count,
)
from op25b.daemon.worker import Worker
from op25b.errors import EnvironmentFailure, Op25bError
from op25b.kernel.seam import Kernel
from op25b.policy.compiled import CompiledPolicy
from op25b.policy.model import DaemonConfig, Policy
from op25b.util.background import BackgroundCall

if TYPE_CHECKING:  # prometheus_client is needed only when daemon.metrics is set
    from op25b.daemon.metrics import Exporter


class Metrics:
    """``daemon.metrics``: the exporter (if configured) from start to exit.

    prometheus_client is imported only when a policy asks for metrics, so a daemon
    without them runs without the library.
    """

    def __init__(self, cfg: DaemonConfig) -> None:
        self.cfg = cfg.metrics
        self.hub = MetricsHub()
        self.exporter: Exporter | None = None
        self.clean = False  # exit 0: the rules are gone, so is the textfile

    def __enter__(self) -> Metrics:
        if self.cfg.enabled:
            try:
                from op25b.daemon.metrics import Exporter
            except ImportError:
                raise EnvironmentFailure(
                    "daemon.metrics needs prometheus-client (pip install 'op25b[daemon]')"
                ) from None
            self.exporter = Exporter(self.cfg, self.hub, Channel())
            try:
                self.exporter.open()  # before the kernel is touched: exit 3 if it fails
            except EnvironmentFailure:
                self.exporter.stop(clean=True)
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.exporter is not None:
            self.exporter.stop(self.clean)

    def attach(self, worker: Worker) -> None:
        """The leader publishes into the hub; the exporter's thread starts."""
        if self.exporter is not None:
            worker.on_metrics = self.hub.publish
            self.exporter.start()

    def in_follower(self, worker: Worker) -> None:
        """A forked follower: drop the leader's sockets, send samples to the leader."""
        if self.exporter is not None:
            self.exporter.in_follower()
            worker.on_metrics = self.exporter.channel.send


class StagingFailed(Exception):
    """Loading the kernel sets failed (``cause`` says why); start-up exits 3."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Startup:
    """A start's steps around the loader child (see the module docstring).

    ``held`` keeps the lock and the metrics exporter from when they are taken until
    the daemon exits.
    """

    def __init__(
        self,
        overrides: Overrides,
        kernel: Kernel,
        lock: NamespaceLock,
        progress: Progress,
        held: ExitStack,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.overrides = overrides
        self.kernel = kernel
        self.lock = lock
        self.progress = progress
        self.held = held
        self.clock = clock
        self.cfg: DaemonConfig | None = None
        self.metrics: Metrics | None = None
        self.now: datetime | None = None  # the instant the staged sets are for
        self._phases = ExitStack()
        self._staging: BackgroundCall | None = None

    def load(self, path: str) -> tuple[Policy, CompiledPolicy]:
        """Load and compile ``path`` in the loader child, running ``begin`` between.

        Raises what the load or ``begin`` raised (PolicyError, Op25bError).
        """
        with self._phases:
            self._phases.enter_context(self.progress.phase(f"loading {path}"))
            return load_compiled(
                path, background=False, on_policy=self.begin, progress=self.progress.loaded
            )

    def begin(self, policy: Policy) -> None:
        """The loader's on_policy hook: every step before the kernel, then the staging."""
        size = prefix_count(policy)
        self._phases.close()  # the load phase ends here
        cfg = apply_overrides(policy.daemon, self.overrides)
        self.lock.acquire()
        self.held.callback(self.lock.release)
        self.metrics = self.held.enter_context(Metrics(cfg))
        trial = AbuseLogWriter(cfg.abuse_log)
        try:
            trial.open()
        except OSError as e:
            raise EnvironmentFailure(
                f"cannot open abuse log {cfg.abuse_log}: {e.strerror or e}"
            ) from None
        trial.close()
        self.cfg = cfg
        allowed = budget(COMPILE_PER_MILLION + INSTALL_PER_MILLION, size)
        text = f"compiling {size:,} prefixes, loading the kernel sets"
        self._phases.enter_context(self.progress.phase(text, allowed))
        self.now = self.clock()
        self._staging = BackgroundCall("op25b-stage", self.kernel.stage_sets, policy, self.now)

    def staged(self) -> None:
        """Wait for the staging; raises StagingFailed if it failed."""
        error = self._staging.join() if self._staging is not None else None
        if error is not None:
            raise StagingFailed(error)

    def abandon(self) -> str | None:
        """A start refused after ``begin``: wait for the staging (never cut half-way),
        then drop the staged sets; what went wrong dropping them, or None."""
        if self._staging is None:
            return None
        if self._staging.join() is not None:
            return None  # a failed staging destroyed its temporaries itself
        try:
            self.kernel.discard_staged()
        except (Op25bError, OSError) as e:
            return f"could not drop the staged kernel sets (the next start does): {e}"
        return None
