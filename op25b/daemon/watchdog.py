"""The rule watchdog: op25b's kernel state kept intact in a shared firewall.

The firewall is shared with nftables.service, netfilter-persistent and admins:
``systemctl reload nftables`` (Debian's nftables.conf starts with ``flush ruleset``),
``iptables -F``, a restore without ``--noflush`` or an ``ipset destroy`` removes or
moves op25b's rules while the daemon runs on. Right after each of its own installs
the leader records the kernel state (``take_expected_state``); every
``rules_check_interval`` seconds the kernel thread compares a fresh read with it
(``op25b.kernel.integrity.problems``) and repairs at once: the rules alone when only
rules are damaged, sets and rules when a set is. The loop reports the outcome (an
ERR line naming what was wrong; ``rules_repaired``/``rules_ok`` in the counters).

A check never runs while a reload updates the kernel (they share ``lock``): it would
otherwise "repair" the sets the reload is swapping. After a reload whose kernel update
failed, ``force()`` makes the next check reinstall the last good policy in full.

The expected state is only ever a whole one. A flush that lands between op25b's install
and the read that records it would otherwise become the norm: every later check would
find the damaged kernel "as expected" and enforcement would stay lost without a word.
So a state read for the record must pass ``structural_problems`` (chains, first jumps,
sets, the nft table, as ``op25b rules status`` checks without a record); if it does
not, the target is reinstalled and read again (``REINSTALLS`` times), the damage is
reported like a check's, and a state that is still not whole is recorded again by the
next check instead of being compared against.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from op25b.daemon.syslogformat import Severity
from op25b.kernel.integrity import (
    VOLATILE_SETS,
    KernelState,
    problems,
    structural_problems,
    to_json,
)
from op25b.kernel.ruletext import RuleConfig
from op25b.kernel.seam import Kernel
from op25b.policy.model import Policy

LogFn = Callable[[Severity, str, str], None]
Outcome = tuple[list[str], str | None]  # (problems found, repair error)
REINSTALLS = 2  # reinstalls when the state read for the record is not whole


@dataclass
class Health:
    """What went wrong around the verdicts; every field reaches the counters line."""

    rules_checks: int = 0
    rules_repaired: int = 0
    rules_repair_failures: int = 0
    kernel_errors: int = 0  # kernel reads (fast-path counters, state) that failed
    rules_ok: bool = True
    last_problems: list[str] = field(default_factory=list)


class RuleWatchdog:
    """Checks and repairs on the kernel thread; ``finish`` reports in the loop."""

    def __init__(
        self,
        kernel: Kernel,
        io: ThreadPoolExecutor,
        log: LogFn,
        clock: Callable[[], datetime],
    ) -> None:
        self.kernel = kernel
        self.io = io
        self.log = log
        self.clock = clock
        self.health = Health()
        self.expected: KernelState | None = None  # op25b's state right after its install
        self.state_file = ""  # where it is recorded for `op25b rules status`
        self.lock = threading.Lock()  # held by a check and by a reload's kernel update
        self.reloading = False
        self.target: tuple[RuleConfig, Policy] | None = None  # what a repair installs
        self._check: Future[Outcome] | None = None
        self._force = False
        self._unrecorded = False  # the last record was not whole: record again

    @property
    def busy(self) -> bool:
        """A check is in flight (the loop should look again soon)."""
        return self._check is not None

    def take_expected_state(self) -> None:
        """Record the state right after our own install (at start-up, before the loop).

        Damage found while recording is repaired and reported at once (see the module
        docstring); also written to /run/op25b for ``op25b rules status`` (best
        effort: the watchdog works from the copy in memory).
        """
        found, error = self._record()
        if found:
            self._report(found, error)

    def record_later(self) -> None:
        """After a reload: record the new state on the kernel thread, reported like a check."""
        if self._check is None:
            self._check = self.io.submit(self._record_locked)
        else:  # a check is in flight: the one after it records
            self._unrecorded = True

    def _record_locked(self) -> Outcome:
        with self.lock:
            return self._record()

    def _record(self) -> Outcome:
        """Read the state for the record; reinstall while it is not whole."""
        state = self.kernel.state()
        found = broken = self._broken(state)
        error: str | None = None
        if broken and self.target is not None:
            rule_cfg, policy = self.target
            for _ in range(REINSTALLS):
                try:
                    self.kernel.install(rule_cfg, policy, self.clock())
                    state = self.kernel.state()
                except Exception as e:  # the next check records again; the loop reports it
                    error = f"{type(e).__name__}: {e}"
                    break
                broken = self._broken(state)
                if not broken:
                    break
        self._unrecorded = bool(broken) or error is not None
        if self._unrecorded and error is None:
            error = "still damaged after repair: " + "; ".join(broken)
        self.expected = state
        self._write_state_file(state)
        return found, error

    def _broken(self, state: KernelState) -> list[str]:
        cache = self.target is not None and self.target[0].block_cache
        return structural_problems(state, block_cache=cache)

    def _write_state_file(self, state: KernelState) -> None:
        if not self.state_file:
            return
        try:
            os.makedirs(os.path.dirname(self.state_file), mode=0o755, exist_ok=True)
            tmp = f"{self.state_file}.{os.getpid()}"
            with open(tmp, "w", encoding="ascii") as f:
                json.dump(to_json(state), f)
            os.replace(tmp, self.state_file)
        except OSError as e:
            self.log(Severity.WARNING, f"cannot record kernel state: {e}", "rules")

    def force(self) -> None:
        """The next check reinstalls the last good policy whatever it finds."""
        self._force = True

    def start(self) -> None:
        """Begin a check (unless one runs, a reload runs, or nothing was recorded)."""
        if self._check is None and not self.reloading and self.expected is not None:
            force, self._force = self._force, False
            self._check = self.io.submit(self._check_rules, force)

    def _check_rules(self, force: bool) -> Outcome:
        with self.lock:
            if self.reloading:
                return [], None
            return self._check_and_repair(force)

    def _check_and_repair(self, force: bool) -> Outcome:
        expected, target = self.expected, self.target
        if expected is None or target is None:
            return [], None
        if self._unrecorded:
            return self._record()
        found = problems(expected, self.kernel.state(), VOLATILE_SETS)
        if force and not found:
            found = ["reinstating the last good ruleset after a failed kernel update"]
        if not found:
            return [], None
        rule_cfg, policy = target
        try:
            if force or any(p.startswith("ipset ") for p in found):
                self.kernel.install(rule_cfg, policy, self.clock())
            else:
                self.kernel.install_rules(rule_cfg)
            left = problems(expected, self.kernel.state(), VOLATILE_SETS)
            if left:
                return found, "still damaged after repair: " + "; ".join(left)
        except Exception as e:  # the next check tries again; the loop reports it
            return found, f"{type(e).__name__}: {e}"
        return found, None

    def finish(self) -> None:
        """In the loop: report a finished check."""
        future = self._check
        if future is None or not future.done():
            return
        self._check = None
        h = self.health
        h.rules_checks += 1
        try:
            found, repair_error = future.result()
        except Exception as e:  # reading the state failed: count it, try again later
            h.kernel_errors += 1
            h.rules_ok = False
            self.log(Severity.ERR, f"kernel rules check failed: {e}", "rules")
            return
        self._report(found, repair_error)

    def _report(self, found: list[str], repair_error: str | None) -> None:
        h = self.health
        h.last_problems = found
        if not found:  # a repair error comes only with something found
            h.rules_ok = True
        elif repair_error is None:
            h.rules_repaired += 1
            h.rules_ok = True
            self.log(Severity.ERR, f"kernel rules damaged, repaired: {'; '.join(found)}", "rules")
        else:
            h.rules_repair_failures += 1
            h.rules_ok = False
            self.log(
                Severity.ERR,
                f"kernel rules damaged, repair failed ({repair_error}): {'; '.join(found)}",
                "rules",
            )
