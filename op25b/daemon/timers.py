"""The daemon loop's periodic jobs: when each is next due, and its period.

One place for every "every N seconds" of the loop (counters line, abuse windows,
verdict-cache rotation, rule checks, fast-path counter reads, the systemd watchdog,
metrics snapshots), so ``select`` always waits exactly until the earliest one.
"""

from __future__ import annotations

from dataclasses import dataclass

from op25b.kernel.blockcache import BlockCache
from op25b.policy.model import DaemonConfig


@dataclass
class Timers:
    """When each periodic job of the loop is next due, and its period."""

    period: dict[str, float]
    next: dict[str, float]

    @classmethod
    def starting(cls, now: float, cfg: DaemonConfig, cache: BlockCache | None) -> Timers:
        period = {
            "counters": cfg.counters_interval,
            "window": min(1.0, cfg.abuse_window / 4),
            "check": cfg.rules_check_interval,
            "fast": cfg.counters_interval,
            "watchdog": 0.0,
        }
        if cache is not None:
            period["rotation"] = float(cache.timeout)
        if cfg.metrics.enabled:
            period["metrics"] = cfg.metrics.interval
        first = {"watchdog": now, "fast": now}
        return cls(period, {k: first.get(k, now + p) for k, p in period.items()})

    def due(self, name: str, now: float) -> bool:
        """True (and rescheduled) when ``name`` is due."""
        if now < self.next[name]:
            return False
        self.next[name] = now + self.period[name]
        return True

    def set_period(self, name: str, seconds: float) -> None:
        """Change a period (the systemd watchdog's is known only at start)."""
        self.period[name] = seconds

    def next_deadline(self, watchdog: bool) -> float:
        """The earliest instant a job is due."""
        names = [n for n in self.next if n != "watchdog" or watchdog]
        return min(self.next[n] for n in names)
