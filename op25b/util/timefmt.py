"""The one timestamp format of op25b's outputs: RFC 3339 UTC with milliseconds.

``2026-11-23T18:00:03.412Z`` is what syslog lines (RFC 5424 TIMESTAMP), abuse-log
records and report outputs all carry, so a grep for one instant finds it everywhere.
"""

from __future__ import annotations

import time


def format_ms(ms: int) -> str:
    """Epoch milliseconds -> ``2026-11-23T18:00:03.412Z``."""
    secs, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:03d}Z"


def format_seconds(t: float) -> str:
    """Epoch seconds -> the same format, to the nearest millisecond.

    Nearest, not truncated: 1795456803.412 is stored as ...803.41199994, and truncating
    would print .411 for a time the caller wrote as .412.
    """
    return format_ms(round(t * 1000))
