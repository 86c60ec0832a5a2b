"""The daemon's metrics as plain numbers: each worker's snapshot, and one sum of them all.

Owns ``Sample`` (what a worker publishes once per ``daemon.metrics.interval``, built
by ``take_sample`` from what the counters line already reads), its wire form between
forked workers (``Channel``: one JSON datagram per sample), and ``MetricsHub``, the
leader's consistent, never-decreasing sum over its workers. Names, help texts, HTTP
and the textfile are ``op25b.daemon.metrics`` (the only prometheus_client user).

Why samples pushed per tick rather than prometheus_client's multiprocess mode: that
mode keeps one mmap file per process and pid, and a restarted follower's file must be
merged by hand to keep counters monotonic; it also puts prometheus_client calls on the
per-packet path. Here the verdict path stays as it is (a dict increment), a worker
spends ~50 us per tick on a snapshot (bench/bench_metrics.py), a follower never blocks
on the leader (a full socket drops the sample; the next one carries the same
cumulative totals), and a scrape only copies the hub's numbers under a lock.

Monotonic sums: counters are cumulative per worker *incarnation*. When a follower is
replaced (after a reload, after a crash) or a kernel counter restarts (a queue
rebound, fast-path rules reinstalled by the watchdog), the last value seen is kept as
an offset, so the sum never goes backwards. A follower publishes a last sample as it
stops, so a clean restart loses nothing; a follower killed outright loses what it
counted since its last sample (at most one interval; its syslog line for that
interval dies with it too).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from op25b.dataplane.counters import CounterSnapshot
from op25b.kernel.queuestats import QueueStats

# Health counters that are levels, not counts: never summed into offsets.
GAUGE_KEYS = frozenset({"rules_ok", "abuse_records_pending"})
_MAX_DATAGRAM = 1 << 16  # a sample is ~2 KB; the socket allows far more


@dataclass(frozen=True)
class Sample:
    """One worker's numbers at one instant: cumulative counters and current levels."""

    index: int  # worker index: 0 is the leader, its queue is daemon.queue + index
    pid: int  # the incarnation: a restarted follower has a new pid
    counters: Mapping[str, int]
    gauges: Mapping[str, float] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The datagram a follower sends."""
        doc = {"i": self.index, "p": self.pid, "c": dict(self.counters), "g": dict(self.gauges)}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Sample:
        """The inverse of ``encode``; ValueError (or a subclass) for anything else."""
        doc = json.loads(data)
        counters = {str(k): int(v) for k, v in doc["c"].items()}
        gauges = {str(k): float(v) for k, v in doc["g"].items()}
        return cls(int(doc["i"]), int(doc["p"]), counters, gauges)


def take_sample(
    index: int,
    snap: CounterSnapshot,
    queue: Mapping[int, QueueStats],
    health: Mapping[str, int],
    fast: Mapping[str, int],
    gauges: Mapping[str, float] | None = None,
) -> Sample:
    """A worker's sample from the same sources as its counters line (no I/O here)."""
    counters: dict[str, int] = {f"decisions:{v}:{r}": n for (v, r), n in snap.pairs.items()}
    counters["parse_errors"] = snap.parse_errors
    counters["undecidable"] = snap.undecidable
    counters["reloads_ok"] = snap.reloads - snap.reload_failures
    counters["reloads_failed"] = snap.reload_failures
    counters["block_cache_packets"] = snap.block_cache_packets
    counters["queue_dropped"] = sum(s.queue_dropped for s in queue.values())
    counters["user_dropped"] = sum(s.user_dropped for s in queue.values())
    levels: dict[str, float] = {"queue_waiting": sum(s.queue_total for s in queue.values())}
    for name, n in health.items():
        if name in GAUGE_KEYS:
            levels[name] = n
        else:
            counters[name] = n
    counters.update((f"fast:{k}", n) for k, n in fast.items())
    levels.update(gauges or {})
    return Sample(index, os.getpid(), counters, levels)


@dataclass(frozen=True)
class View:
    """The sum over every worker at one instant, as a scrape sees it."""

    counters: Mapping[str, int]
    gauges: Mapping[str, float]
    workers: int  # workers that have published at least once


@dataclass
class _Slot:
    pid: int
    last: dict[str, int]  # the incarnation's latest cumulative counters
    offset: dict[str, int]  # what earlier incarnations (and counter restarts) added up to
    gauges: Mapping[str, float]


class MetricsHub:
    """The leader's view of all workers; ``publish`` from any thread, ``view`` too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[int, _Slot] = {}
        self.published = 0

    def publish(self, sample: Sample) -> None:
        """Take a worker's latest sample (an older incarnation's totals are kept)."""
        with self._lock:
            self.published += 1
            slot = self._slots.get(sample.index)
            if slot is None:
                self._slots[sample.index] = _Slot(
                    sample.pid, dict(sample.counters), {}, sample.gauges
                )
                return
            restarted = slot.pid != sample.pid
            for name, before in slot.last.items():
                now = sample.counters.get(name, 0)
                if restarted or now < before:  # a new process, or a counter restarted
                    slot.offset[name] = slot.offset.get(name, 0) + before
            slot.pid = sample.pid
            slot.last = dict(sample.counters)
            slot.gauges = sample.gauges

    def view(self) -> View:
        """One consistent copy: every worker's counters summed, levels summed."""
        counters: dict[str, int] = {}
        gauges: dict[str, float] = {}
        with self._lock:
            for slot in self._slots.values():
                for part in (slot.offset, slot.last):
                    for name, n in part.items():
                        counters[name] = counters.get(name, 0) + n
                for name, g in slot.gauges.items():
                    gauges[name] = gauges.get(name, 0.0) + g
            workers = len(self._slots)
        return View(counters, gauges, workers)


class Channel:
    """Followers to leader: a datagram socketpair made before the first fork."""

    def __init__(self) -> None:
        self._rx, self._tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._tx.setblocking(False)
        self.dropped = 0  # samples a follower could not send (leader behind): harmless

    def in_follower(self) -> None:
        """After fork, in the follower: it only sends."""
        self._rx.close()

    def send(self, sample: Sample) -> None:
        """A follower's publish; never blocks (a full socket drops this sample)."""
        try:
            self._tx.send(sample.encode())
        except OSError:
            self.dropped += 1

    def receive(self, timeout: float) -> Sample | None:
        """The next sample (leader), or None after ``timeout`` seconds or a bad datagram."""
        self._rx.settimeout(max(timeout, 0.0))
        try:
            return _decoded(self._rx.recv(_MAX_DATAGRAM))
        except (TimeoutError, BlockingIOError):
            return None

    def drain(self, hub: MetricsHub) -> None:
        """Publish whatever is already waiting (at stop, after the followers' last words)."""
        self._rx.setblocking(False)
        while True:
            try:
                sample = _decoded(self._rx.recv(_MAX_DATAGRAM))
            except BlockingIOError:
                return
            if sample is not None:
                hub.publish(sample)

    def close(self) -> None:
        """Both ends (leader, at stop)."""
        self._rx.close()
        self._tx.close()


def _decoded(data: bytes) -> Sample | None:
    try:
        return Sample.decode(data)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # only our followers write here; a bad datagram is never fatal
