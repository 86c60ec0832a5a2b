"""What a report asks of an engine, and what every engine answers with.

Owns the record filters (--since/--until, --router, --plan), the read totals, the
``Run`` interface both engines implement (``op25b.report.pyengine``, pure Python;
``op25b.report.duckengine``, DuckDB) and the choice between them. Scoring what a run
yields is ``op25b.report.botscore``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from op25b.report.abuseread import Record, ReportError
from op25b.report.botscore import Brief, SourceStats, WindowStat

ENGINES = ("auto", "duckdb", "python")


@dataclass(frozen=True, slots=True)
class Query:
    """Which records count; empty router/plan sets mean all."""

    since: int | None = None
    until: int | None = None
    routers: frozenset[str] = frozenset()
    plans: frozenset[str] = frozenset()
    by_day: bool = False  # also compute each source's DayStats (costs a pass more)

    def keeps(self, rec: Record) -> bool:
        """Whether a record is inside the query.

        Whole windows are kept when their activity overlaps [since, until): the log
        cannot split a window, and dropping a window that straddles the edge would
        hide its attempts from both sides.
        """
        if self.since is not None and rec.last_seen < self.since:
            return False
        if self.until is not None and rec.first_seen >= self.until:
            return False
        if self.routers and rec.router not in self.routers:
            return False
        return not self.plans or rec.plan in self.plans


@dataclass(frozen=True, slots=True)
class Totals:
    """What was read: records counted, exact duplicates ignored, records filtered out."""

    records: int
    duplicates: int
    filtered_out: int


class Run(Protocol):
    """One engine's pass over the logs."""

    @property
    def totals(self) -> Totals:
        """What was read (final once ``sources`` has been consumed)."""
        ...

    def briefs(self) -> Iterator[Brief]:
        """Every source's ranking facts, in no particular order, streamed."""
        ...

    def stats(self, sources: Sequence[str]) -> list[SourceStats]:
        """The full merged state of a few sources (the ones shown), in any order."""
        ...

    def windows(self, sources: Sequence[str]) -> dict[str, tuple[WindowStat, ...]]:
        """The merged windows of a few sources (for the chart), in window order."""
        ...

    def close(self) -> None:
        """Free what the run holds (temporary files included)."""
        ...


class ProgressSink(Protocol):
    """Where an engine says how far it got (``op25b.report.progress``)."""

    def update(self, text: str) -> None:
        """Show ``text`` (rate-limited by the sink)."""
        ...


def duckdb_available() -> bool:
    """Whether the optional DuckDB engine can be imported."""
    return importlib.util.find_spec("duckdb") is not None


def pick_engine(name: str) -> str:
    """``auto`` -> ``duckdb`` if installed, else ``python``; ReportError if asked for
    DuckDB without it."""
    if name == "auto":
        return "duckdb" if duckdb_available() else "python"
    if name == "duckdb" and not duckdb_available():
        raise ReportError(
            "--engine duckdb: DuckDB is not installed; install it with: "
            "pip install 'op25b[report-fast]' (or use --engine python)"
        )
    return name
