"""One line of the abuse log: ``AbuseRecord`` and its JSON, as docs/abuse-log-format.md fixes it.

The record shape is fixed (fields may be added, never renamed) and its key order is
stable, so readers diffing lines can rely on it. Building records -- windows, caps,
overflow -- is ``op25b.dataplane.aggregator``; writing them is
``op25b.daemon.abuselog``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from op25b.util.timefmt import format_seconds

RECORD_TYPE = "blocked_source"
FORMAT_VERSION = 1
SAMPLE_SIZE = 16  # fixed by the format: at most 16 destinations in first-seen order


@dataclass(frozen=True)
class AbuseRecord:
    """One line of the abuse log; ``as_dict()`` has the documented key order."""

    router: str
    source: str  # "100.64.0.66", "2001:db8:100::/64", or an overflow prefix
    family: int
    plan: str | None
    action: str
    rule: str | None
    window_start: float
    window_end: float
    first_seen: float
    last_seen: float
    packets: int
    distinct_destinations: int
    destinations_sample: tuple[str, ...]
    ports: tuple[tuple[int, int], ...]  # (port, packets), ascending port
    distinct_destinations_capped: bool = False
    kernel_packets: int = 0
    # An overflow record sums up the sources the memory caps kept from their own
    # records (see the aggregator): how many, and whether that count is a lower bound.
    overflow: bool = False
    overflow_sources: int = 0
    overflow_sources_capped: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The record as the JSON object of docs/abuse-log-format.md."""
        return {
            "type": RECORD_TYPE,
            "version": FORMAT_VERSION,
            "router": self.router,
            "source": self.source,
            "family": self.family,
            "plan": self.plan,
            "action": self.action,
            "rule": self.rule,
            "window_start": format_seconds(self.window_start),
            "window_end": format_seconds(self.window_end),
            "first_seen": format_seconds(self.first_seen),
            "last_seen": format_seconds(self.last_seen),
            "packets": self.packets,
            "distinct_destinations": self.distinct_destinations,
            "destinations_sample": list(self.destinations_sample),
            "ports": {str(p): n for p, n in self.ports},
            "distinct_destinations_capped": self.distinct_destinations_capped,
            "kernel_packets": self.kernel_packets,
            "overflow": self.overflow,
            "overflow_sources": self.overflow_sources,
            "overflow_sources_capped": self.overflow_sources_capped,
        }

    def to_json(self) -> str:
        """One JSON line, without the trailing newline."""
        return json.dumps(self.as_dict(), ensure_ascii=True)
