"""The kernel's own count of what it did with queued packets.

``/proc/net/netfilter/nfnetlink_queue`` has one line per bound queue, where the kernel
admits the packets *it* dropped because the daemon was too slow (``queue_dropped``)
or its socket buffer was full (``user_dropped``). Those never reach the daemon's
counters, so without this a saturated daemon would report perfect numbers.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass

NFQUEUE_PROC = "/proc/net/netfilter/nfnetlink_queue"


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One line of /proc/net/netfilter/nfnetlink_queue (cumulative since the bind)."""

    queue_num: int
    peer_portid: int
    queue_total: int  # packets waiting for a verdict right now
    copy_mode: int
    copy_range: int
    queue_dropped: int  # kernel dropped: queue full (queue_maxlen reached)
    user_dropped: int  # kernel dropped: netlink send to our socket failed (rcvbuf full)
    id_sequence: int


_QUEUE_FIELDS = 8  # the kernel prints a 9th column, always 1 (historical use count)


def parse_queue_stats(text: str, queues: Iterable[int] | None = None) -> dict[int, QueueStats]:
    """Parse the proc file's text; lines that do not parse are skipped, not fatal.

    Robust on purpose: this runs in the daemon's reporting path, and a format change
    in some kernel must cost us the queue numbers, not the daemon.
    """
    wanted = None if queues is None else frozenset(queues)
    out: dict[int, QueueStats] = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < _QUEUE_FIELDS:
            continue
        try:
            nums = [int(c) for c in cols[:_QUEUE_FIELDS]]
        except ValueError:
            continue
        if any(n < 0 for n in nums):
            continue
        stats = QueueStats(*nums)
        if wanted is None or stats.queue_num in wanted:
            out[stats.queue_num] = stats
    return out


def kernel_queue_stats(
    path: str = NFQUEUE_PROC, queues: Iterable[int] | None = None
) -> dict[int, QueueStats]:
    """Read the kernel's per-queue stats; empty when no queue is bound or no such file.

    The file only exists once nfnetlink_queue is loaded and only lists bound queues, so
    absence is normal at start-up and after the daemon unbinds; other read errors are
    raised (a permission problem should be seen, not read as 'no drops').
    """
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return {}
        raise
    return parse_queue_stats(text, queues)


