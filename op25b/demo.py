"""The end-to-end demo (placeholder until the mail lab lands)."""

from __future__ import annotations

from typing import TextIO


def run(out: TextIO, err: TextIO, keep: bool = False, action: str = "reject") -> int:
    """Run the demo; returns the exit code."""
    print("demo: not built yet", file=err)
    return 1
