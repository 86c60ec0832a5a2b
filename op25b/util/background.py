"""A call on a thread of its own whose exception is kept for whoever waits on it.

Owns the pattern the daemon uses where a kernel step waits on a forked child while the
main thread goes on (a reload's kernel update, start-up's set staging): start the
call, do other work, then ``join()`` — which returns what the call raised, so the
waiter decides how to report it (re-raise, wrap, or ignore on a failure path).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class BackgroundCall:
    """``fn(*args)`` started at once on a daemon thread named ``name``."""

    def __init__(self, name: str, fn: Callable[..., object], *args: Any) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except BaseException as e:  # handed to the waiter by join()
            self._error = e

    def join(self) -> BaseException | None:
        """Wait for the call; what it raised, or None."""
        self._thread.join()
        return self._error
