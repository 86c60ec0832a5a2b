"""Heavy kernel work (computing and loading a million set entries) in a forked child.

Computing and loading a million set entries means building and freeing dicts and
tuples of a million items, and CPython does each resize and each free in one C call
that holds the interpreter: measured, up to 210 ms without a verdict. The child
(``op25b.util.forked``: every inherited descriptor closed, killed with its parent, at a
lower CPU priority) has the policy already (copy-on-write) and does that work on its
own interpreter while the waiting thread holds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from op25b.kernel.commands import RulesError
from op25b.util.forked import ChildFailed, run_forked


def run_isolated(
    work: Callable[[], None], what: str = "op25b-kernel", *, background: bool = True
) -> None:
    """Run ``work`` in a forked child and wait for it; its error is raised here.

    ``background`` (the default: a verdict loop runs beside it) lowers the child's
    priority; at start-up nothing is there to protect and the child goes first.
    """

    def child(_out: BinaryIO) -> None:
        work()

    try:
        run_forked(child, lambda _pipe: None, background=background)
    except ChildFailed as e:
        raise RulesError([what], 1, str(e)) from None
