"""Shared pieces of fuzz_queue.py and soak.py: counting sinks, queue totals, process samples.

Everything here acts inside the lab's namespaces (``ip netns exec``) or reads
``/proc/<pid>`` of a process that lives in one; nothing touches the root namespace.

- ``Sink``: raw-table PREROUTING rules (iptables and ip6tables) in a far-side
  namespace that count what arrives from given sources, optionally dropping it;
  removed again by exact rule text.
- ``queue_totals``: the kernel's per-queue line for the daemon's namespace.
- ``Sampler``: VmRSS and open descriptors of a process, once a second, on a thread.
- ``finish``: save a run's results as JSON and turn its checks into an exit code.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from floodlab import QueueStats, queue_stats, sh


@dataclass(frozen=True)
class SinkRule:
    """One counting rule: its family, comment (the counter's name) and match."""

    family: int
    name: str
    match: str
    drop: bool = True

    def spec(self) -> str:
        """The rule as iptables-save prints it after ``-A PREROUTING``."""
        target = " -j DROP" if self.drop else ""
        return f"{self.match} -m comment --comment {self.name}{target}"


class Sink:
    """Counting (and dropping) rules in one namespace's raw PREROUTING."""

    def __init__(self, ns: str, rules: Sequence[SinkRule]) -> None:
        self.ns = ns
        self.rules = tuple(rules)

    def _restore(self, family: int, verb: str) -> None:
        lines = [f"{verb} PREROUTING {r.spec()}" for r in self.rules if r.family == family]
        if lines:
            tool = "iptables-restore" if family == 4 else "ip6tables-restore"
            sh(self.ns, [tool, "--noflush"], "*raw\n" + "\n".join(lines) + "\nCOMMIT\n")

    def install(self) -> None:
        """Append the rules (v4 and v6)."""
        for family in (4, 6):
            self._restore(family, "-A")

    def remove(self) -> None:
        """Delete exactly these rules (errors ignored: teardown must go on)."""
        for family in (4, 6):
            try:
                self._restore(family, "-D")
            except Exception as e:  # teardown reports and goes on
                print(f"sink removal in {self.ns}: {e}")

    def counts(self) -> dict[str, int]:
        """Packets per rule name, summed over both families."""
        out = {r.name: 0 for r in self.rules}
        for tool in ("iptables-save", "ip6tables-save"):
            for line in sh(self.ns, [tool, "-c", "-t", "raw"]).splitlines():
                m = re.match(r"^\[(\d+):\d+\] -A PREROUTING .*--comment (\S+)", line)
                if m and m.group(2) in out:
                    out[m.group(2)] += int(m.group(1))
        return out


def queue_totals(pid: int, queue: int = 0) -> QueueStats:
    """The kernel's line for ``queue`` in the namespace of ``pid`` (zeros if unbound)."""
    return queue_stats(pid).get(queue, QueueStats(queue, 0, 0, 0, 0))


def rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` in MB (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0.0
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def open_fds(pid: int) -> int:
    """Open descriptors of ``pid`` (0 when it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return 0


@dataclass
class Sampler:
    """Samples RSS (MB) and open fds of ``pid`` every ``period`` s until stopped."""

    pid: int
    period: float = 1.0
    rss: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        """Take the first sample now and keep sampling on a thread."""
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        self.rss.append(rss_mb(self.pid))
        self.fds.append(open_fds(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def stop(self) -> dict[str, float]:
        """Stop, take a last sample; start/end/max of both series."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sample()
        return {
            "rss_start_mb": round(self.rss[0], 1),
            # Warm-up (first allocations, caches filling) is over by the half-way mark;
            # growth after it is what a leak would show.
            "rss_half_mb": round(self.rss[len(self.rss) // 2], 1),
            "rss_end_mb": round(self.rss[-1], 1),
            "rss_max_mb": round(max(self.rss), 1),
            "fds_start": self.fds[0],
            "fds_end": self.fds[-1],
            "fds_max": max(self.fds),
            "samples": len(self.rss),
        }


def finish(kind: str, r: dict[str, Any]) -> int:
    """Write ``r`` to bench/results/KIND-<UTC time>.json; 0 if every check passed."""
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(r, indent=1))
    print(f"results: {path}")
    return 0 if all(r["checks"].values()) else 1
