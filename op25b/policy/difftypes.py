"""The values ``op25b diff`` answers with: outcomes, sides, spans and changes.

Owns the frozen types ``op25b.policy.diff`` builds and ``op25b.policy.difftext``
renders, and ``PolicyDiff.lookup`` (the change covering one connection attempt).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from op25b.policy import addr
from op25b.policy.decide import Decision, Reason, Verdict
from op25b.policy.model import Exemption, Location, Prefix


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a decision is, compared between the files: verdict, reason and plan."""

    verdict: Verdict
    reason: Reason
    plan: str | None

    @classmethod
    def of(cls, decision: Decision) -> Outcome:
        """The comparable part of a ``decide()`` result."""
        return cls(decision.verdict, decision.reason, decision.plan)

    def as_dict(self) -> dict[str, str | None]:
        """The keys of ``explain --json`` without the rule."""
        return {"verdict": self.verdict.value, "reason": self.reason.value, "plan": self.plan}


@dataclass(frozen=True, slots=True)
class Side:
    """One file's decision for a run of sources, with the line that decided it."""

    outcome: Outcome
    rule: Location | None


@dataclass(frozen=True, slots=True)
class Span:
    """Sources ``first..last`` (one IP version) decided ``before`` by OLD and ``after``
    by NEW, lines included; neighbouring spans differ in at least one of them."""

    version: int
    first: int
    last: int
    before: Side
    after: Side

    @property
    def size(self) -> int:
        """Number of source addresses."""
        return self.last - self.first + 1

    def blocks(self) -> list[Prefix]:
        """The sources as the fewest CIDR blocks."""
        return addr.range_prefixes(self.version, self.first, self.last)


@dataclass(frozen=True, slots=True)
class OutcomeSum:
    """The sources of a change with one fixed side that the other file decides
    ``outcome``: how many, in how many ranges, and (the first few of) its lines."""

    outcome: Outcome
    addresses: int
    ranges: int
    rules: tuple[Location, ...]  # the first MAX_RULES distinct lines, in address order
    more_rules: int  # distinct lines not in ``rules``


MAX_RULES = 3


@dataclass(frozen=True, slots=True)
class Destination:
    """A destination class: one provider-MTA address of either file, or (``address``
    None) any external MX, i.e. every destination that is a provider MTA in neither."""

    version: int
    address: int | None
    old_mta: Location | None  # where OLD lists it as a provider MTA, if it does
    new_mta: Location | None


class OneSidedSpans(Sequence[Span]):
    """The spans of a change with one fixed side, summarised per outcome of the other
    (``op25b.policy.diffruns`` builds them on access)."""

    def summary(self) -> list[OutcomeSum]:
        """Per outcome of the varying side: addresses, ranges and deciding lines."""
        raise NotImplementedError


@dataclass(frozen=True)
class Change:
    """Sources whose decision changes for every destination and port listed.

    ``before``/``after`` is the outcome every span shares on that side, or None when
    it depends on the source (e.g. a new provider MTA: before, each source was
    decided by its plan; after, every source gets ``provider_mta``); ``befores`` and
    ``afters`` are all outcomes of each side. Spans are in address order; for a
    change with one fixed side they are built on access (there is one per interval
    of the other file, up to millions).
    """

    version: int
    destinations: tuple[Destination, ...]
    ports: tuple[int, ...]
    befores: frozenset[Outcome]
    afters: frozenset[Outcome]
    spans: Sequence[Span]
    size: int  # number of source addresses that change

    @property
    def before(self) -> Outcome | None:
        """The one outcome of OLD for every span, or None if it varies."""
        return next(iter(self.befores)) if len(self.befores) == 1 else None

    @property
    def after(self) -> Outcome | None:
        """The one outcome of NEW for every span, or None if it varies."""
        return next(iter(self.afters)) if len(self.afters) == 1 else None

    def by_outcome(self) -> list[OutcomeSum]:
        """Per outcome of the varying side, for a change with one fixed side (else [])."""
        return self.spans.summary() if isinstance(self.spans, OneSidedSpans) else []

    def span_at(self, src: int) -> Span | None:
        """The span holding source ``src``, or None."""
        i = bisect_right(self.spans, src, key=lambda s: s.first) - 1
        return self.spans[i] if i >= 0 and self.spans[i].last >= src else None


@dataclass(frozen=True)
class PolicyDiff:
    """Every decision that differs between OLD and NEW at ``now``, plus NEW's
    exemptions that expire within ``horizon`` of it."""

    old: str
    new: str
    now: datetime
    horizon: timedelta
    changes: tuple[Change, ...]
    expiring: tuple[Exemption, ...]
    # (version, address) of every provider MTA of either file: the destination classes.
    mtas: frozenset[tuple[int, int]] = field(repr=False)

    @property
    def changed(self) -> bool:
        """True when some decision differs."""
        return bool(self.changes)

    def lookup(self, version: int, src: int, dst: int, port: int) -> tuple[Change, Span] | None:
        """The change and span covering one connection attempt, or None if unchanged."""
        key = dst if (version, dst) in self.mtas else None
        for change in self.changes:
            if change.version != version or port not in change.ports:
                continue
            if not any(d.address == key for d in change.destinations):
                continue
            span = change.span_at(src)
            if span is not None:
                return change, span
        return None
