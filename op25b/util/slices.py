"""Big-list work in slices, so a background reload never stalls the verdict loop.

A reload of a million-prefix policy runs in a thread beside the queue loop. CPython
lets the other thread run only between bytecodes, so a single C call over a million
items (``list.sort()``, ``str.split()``) holds the interpreter for 100 ms or more and
every packet waits that long for its verdict (measured: 108 ms gaps at 1M prefixes).
These helpers do the same work in slices of a few milliseconds each -- when another
thread exists to be stalled. A process with one thread (``op25b check``, the daemon's
forked loader child) does the work whole: slicing costs ~20% more CPU (measured at
1M prefixes: the merge of the sorted runs alone ~0.4 s).
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterator

SLICE = 1 << 16  # ~5 ms of sorting per slice on this class of machine


def _alone() -> bool:
    """True when no other thread could be waiting for the interpreter."""
    return threading.active_count() == 1


def sort_in_slices(items: list[int]) -> None:
    """Sort ``items`` in place, like ``items.sort()``, in bounded steps."""
    if len(items) <= SLICE or _alone():
        items.sort()
        return
    runs = [sorted(items[i : i + SLICE]) for i in range(0, len(items), SLICE)]
    # heapq.merge is a Python generator: the interpreter can switch threads between
    # its steps, unlike inside one long C-level sort.
    items[:] = heapq.merge(*runs)


def release(items: list[int]) -> None:
    """Empty ``items`` a slice at a time (freeing a million ints is one long C call)."""
    if _alone():
        items.clear()
        return
    while items:
        del items[-SLICE:]


def lines_in_slices(text: str, size: int = 1 << 20) -> Iterator[list[str]]:
    """``text.split("\\n")`` in pieces of about ``size`` characters (line-aligned)."""
    start, end = 0, len(text)
    while True:
        cut = text.find("\n", min(start + size, end))
        if cut < 0:
            yield text[start:].split("\n")
            return
        yield text[start:cut].split("\n")
        start = cut + 1
