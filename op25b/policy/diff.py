"""Exactly which decisions a policy change changes: the computation behind ``op25b diff``.

Owns comparing two compiled policies. The answer is exact, not sampled: every
(source, destination, port) whose decision (verdict, reason, plan) differs lies in
exactly one ``Span`` of one ``Change``, and nothing else does. The deciding line may
move without the decision changing (every edit shifts the lines below it), so lines
are reported, not compared. Rendering is ``op25b.policy.difftext``'s.

How, without enumerating addresses: for one port and one destination, a policy either
answers the same for every source (port not guarded: ``not_guarded``; destination a
provider MTA: ``provider_mta``) or asks the source (plans, then exemptions). So
destinations fall into classes -- "any external MX" (no provider MTA in either file)
and each provider-MTA address of either file -- and ports into those guarded by either
file. The source-dependent part of each policy is flattened from its compiled interval
tables (the plan table overlaid with the exemption table at ``now``) into sorted runs
labelled with an outcome code, and the two policies' runs are walked together
boundary by boundary. Cost is linear in the number of intervals (measured in
``bench/bench_diff.py``).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from op25b.policy import addr
from op25b.policy.compiled import NO_MATCH, CompiledPolicy
from op25b.policy.decide import ACTION_VERDICT, Decision, Reason, Verdict
from op25b.policy.lpm import U32
from op25b.policy.model import Exemption, Location, Prefix

__all__ = [
    "Change",
    "Destination",
    "Outcome",
    "OutcomeSum",
    "PolicyDiff",
    "Side",
    "Span",
    "diff_policies",
]

DEFAULT_HORIZON = timedelta(days=7)
# Chunk size for skipping identical stretches of both policies in one C-level compare.
_CHUNK = 256


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
        return self.spans.summary() if isinstance(self.spans, _RunSpans) else []

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


def diff_policies(
    old: CompiledPolicy,
    new: CompiledPolicy,
    now: datetime,
    horizon: timedelta = DEFAULT_HORIZON,
) -> PolicyDiff:
    """Compare OLD and NEW with exemptions evaluated at ``now`` (aware)."""
    codes = _Codes()
    changes: list[Change] = []
    mtas: set[tuple[int, int]] = set()
    for version in (4, 6):
        changes += _version_changes(old, new, version, now, codes, mtas)
    changes.sort(key=_reading_order)
    expiring = tuple(
        sorted(
            (e for e in new.policy.exemptions if e.active(now) and e.expires <= now + horizon),
            key=lambda e: (e.expires, e.location.line),
        )
    )
    return PolicyDiff(
        old.policy.source,
        new.policy.source,
        now,
        horizon,
        tuple(changes),
        expiring,
        frozenset(mtas),
    )


def _version_changes(
    old: CompiledPolicy,
    new: CompiledPolicy,
    version: int,
    now: datetime,
    codes: _Codes,
    mtas: set[tuple[int, int]],
) -> list[Change]:
    """The changes for one IP version; adds its provider MTAs to ``mtas``."""
    old_mtas, new_mtas = _mta_addresses(old, version), _mta_addresses(new, version)
    mtas.update((version, a) for a in old_mtas | new_mtas)
    dests = [Destination(version, None, None, None)] + [
        Destination(version, a, old.provider_mta(version, a), new.provider_mta(version, a))
        for a in sorted(old_mtas | new_mtas)
    ]
    # (OLD's fixed decision or None, NEW's) -> the destinations and ports that get it
    groups: dict[tuple[Side | None, Side | None], tuple[list[Destination], set[int]]] = {}
    for port in sorted(old.guarded | new.guarded):
        for dest in dests:
            before, after = _fixed(old, dest, port), _fixed(new, dest, port)
            if before is not None and after is not None and before.outcome == after.outcome:
                continue
            ds, ports = groups.setdefault((before, after), ([], set()))
            if dest not in ds:
                ds.append(dest)
            ports.add(port)
    # The source-dependent runs of each file, built at most once and only if needed.
    cache: dict[bool, _Runs] = {}

    def runs(fixed: Side | None, is_new: bool) -> _Runs:
        if fixed is not None:
            return _fixed_runs(fixed, codes)
        if is_new not in cache:
            cache[is_new] = _source_runs(new if is_new else old, version, now, codes)
        return cache[is_new]

    out: list[Change] = []
    for (before, after), (ds, ports) in groups.items():
        scope = (version, tuple(ds), tuple(sorted(ports)))
        if before is not None and after is None:
            out += _against_fixed(scope, before, runs(None, True), codes, fixed_is_after=False)
        elif before is None and after is not None:
            out += _against_fixed(scope, after, runs(None, False), codes, fixed_is_after=True)
        else:
            out += _changes(scope, _spans(runs(before, False), runs(after, True), version))
    return out


def _reading_order(change: Change) -> tuple[bool, int, int, tuple[int, ...], int, int]:
    """Any external MX before single provider MTAs, IPv4 before IPv6; within one
    destination and port set, newly blocked sources first (mail that stops), then
    newly passing ones (mail that starts), then reason or plan changes; then address."""
    first = change.destinations[0]  # "any external MX" is listed first when present
    if any(b.verdict.passes for b in change.befores) and not all(
        a.verdict.passes for a in change.afters
    ):
        severity = 0
    elif not all(b.verdict.passes for b in change.befores) and any(
        a.verdict.passes for a in change.afters
    ):
        severity = 1
    else:
        severity = 2
    address = first.address if first.address is not None else -1
    return (
        first.address is not None,
        change.version,
        address,
        change.ports,
        severity,
        change.spans[0].first,
    )


def _mta_addresses(policy: CompiledPolicy, version: int) -> set[int]:
    return {a for m in policy.policy.provider_mtas for v, a in m.addresses if v == version}


def _fixed(policy: CompiledPolicy, dest: Destination, port: int) -> Side | None:
    """The decision when it does not depend on the source (decision steps 1 and 2)."""
    if port not in policy.guarded:
        return Side(Outcome(Verdict.ACCEPT, Reason.NOT_GUARDED, None), policy.guarded_location)
    if dest.address is not None:
        loc = policy.provider_mta(dest.version, dest.address)
        if loc is not None:
            return Side(Outcome(Verdict.ACCEPT, Reason.PROVIDER_MTA, None), loc)
    return None


Scope = tuple[int, tuple[Destination, ...], tuple[int, ...]]  # version, destinations, ports


def _changes(scope: Scope, spans: list[Span]) -> list[Change]:
    """One Change per (before, after) outcome pair, so each reads as one kind of change."""
    groups: dict[tuple[Outcome, Outcome], list[Span]] = {}
    for s in spans:
        groups.setdefault((s.before.outcome, s.after.outcome), []).append(s)
    return [
        Change(*scope, frozenset([b]), frozenset([a]), tuple(m), sum(s.size for s in m))
        for (b, a), m in groups.items()
    ]


def _against_fixed(
    scope: Scope, fixed: Side, runs: _Runs, codes: _Codes, *, fixed_is_after: bool
) -> list[Change]:
    """The one Change where one file decides the same for every source (``fixed``) and
    the other asks the source (``runs``): every run with another outcome."""
    version = scope[0]
    k = codes.of(fixed.outcome)
    rc = runs.codes
    picked = array(U32, (i for i in range(len(rc)) if rc[i] != k))
    if not picked:
        return []
    spans = _RunSpans(version, runs, picked, fixed, fixed_is_after)
    others = frozenset(codes.outcomes[rc[i]] for i in set(picked))
    fixed_set = frozenset([fixed.outcome])
    befores, afters = (others, fixed_set) if fixed_is_after else (fixed_set, others)
    return [Change(*scope, befores, afters, spans, spans.size())]


class _RunSpans(Sequence[Span]):
    """The spans of a change with one fixed side, built on access from the other
    file's runs (a million Span objects would cost hundreds of MB)."""

    def __init__(
        self, version: int, runs: _Runs, picked: array[int], fixed: Side, fixed_is_after: bool
    ) -> None:
        self._version = version
        self._runs = runs
        self._picked = picked
        self._fixed = fixed
        self._fixed_is_after = fixed_is_after
        self._end = 1 << addr.bits(version)

    def __len__(self) -> int:
        return len(self._picked)

    def _bounds(self, i: int) -> tuple[int, int]:
        starts = self._runs.starts
        return starts[i], (starts[i + 1] if i + 1 < len(starts) else self._end) - 1

    def __getitem__(self, k: int) -> Span:  # type: ignore[override]
        if isinstance(k, slice):
            raise TypeError("slices are not supported")
        i = self._picked[k]
        first, last = self._bounds(i)
        side = self._runs.side(i)
        before, after = (side, self._fixed) if self._fixed_is_after else (self._fixed, side)
        return Span(self._version, first, last, before, after)

    def summary(self) -> list[OutcomeSum]:
        """Sizes, range counts and lines per outcome, without building the spans
        (a million-prefix file gives about two million of them)."""
        runs = self._runs
        sizes: dict[int, list[int]] = {}  # code -> [addresses, ranges]
        refs: dict[int, dict[int, int]] = {}  # code -> {ref: first run}, address order
        for i in self._picked:
            code = runs.codes[i]
            first, last = self._bounds(i)
            acc = sizes.setdefault(code, [0, 0])
            acc[0] += last - first + 1
            acc[1] += 1
            refs.setdefault(code, {}).setdefault(runs.refs[i], i)
        out = []
        for code, (addresses, ranges) in sizes.items():
            firsts = list(refs[code].values())
            rules = [runs.side(i).rule for i in firsts[:MAX_RULES]]
            kept = tuple(r for r in rules if r is not None)
            outcome = runs.side(firsts[0]).outcome
            out.append(OutcomeSum(outcome, addresses, ranges, kept, len(firsts) - len(rules)))
        return out

    def size(self) -> int:
        """Addresses in all spans, without building them."""
        total = 0
        for i in self._picked:
            first, last = self._bounds(i)
            total += last - first + 1
        return total


class _Codes:
    """Outcomes interned as small ints, shared by both files so codes compare."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._ids: dict[Outcome, int] = {}

    def of(self, outcome: Outcome) -> int:
        code = self._ids.get(outcome)
        if code is None:
            code = self._ids[outcome] = len(self.outcomes)
            self.outcomes.append(outcome)
        return code


@dataclass(frozen=True, eq=False)
class _Runs:
    """One file's decision over all sources of one version, for one destination class
    and port: run i covers ``starts[i]`` up to the next start and is decided
    ``codes[i]``; ``side(i)`` adds the deciding line (built only for changed runs)."""

    starts: Sequence[int]
    codes: array[int]
    refs: array[int]  # what decided each run; equal refs mean the same line
    side: Callable[[int], Side]


def _fixed_runs(fixed: Side, codes: _Codes) -> _Runs:
    return _Runs([0], array("i", [codes.of(fixed.outcome)]), array("q", [0]), lambda _i: fixed)


def _source_runs(policy: CompiledPolicy, version: int, now: datetime, codes: _Codes) -> _Runs:
    """The source-dependent decision (steps 3 to 6) as runs, from the interval tables."""
    plans = policy.policy.plans
    table = policy.plan_table(version)
    # Outcome code per plan-table index, without and with an active exemption; the
    # extra last slot is for NO_MATCH (-1): a source in no plan.
    plain = array("i", bytes(4 * (len(table) + 1)))
    exempted = array("i", plain)
    for first, end, pid in policy.plan_ranges(version):
        plan = plans[pid]
        if plan.exempt:
            c = e = codes.of(Outcome(Verdict.ACCEPT, Reason.EXEMPT_PLAN, plan.name))
        else:
            verdict = ACTION_VERDICT[policy.action]
            c = codes.of(Outcome(verdict, Reason.BLOCKED, plan.name))
            e = codes.of(Outcome(Verdict.ACCEPT, Reason.EXEMPTION, plan.name))
        plain[first:end] = array("i", [c]) * (end - first)
        exempted[first:end] = array("i", [e]) * (end - first)
    plain[-1] = exempted[-1] = codes.of(Outcome(Verdict.ACCEPT, Reason.NOT_SUBSCRIBER, None))
    ex_table, chains = policy.exemption_table(version)
    # Per exemption-table index, the exemption that decides there at ``now``, as an
    # index into ``deciders``: one entry per exemption, so that two neighbouring
    # intervals decided by the same (enclosing) exemption get the same reference.
    deciders: list[Exemption] = []
    number: dict[int, int] = {}
    decider_of: list[int] = []
    for chain in chains:
        ex = next((e for e in chain if e.active(now)), None)
        if ex is None:
            decider_of.append(NO_MATCH)
        else:
            decider_of.append(number.setdefault(id(ex), len(deciders)))
            if decider_of[-1] == len(deciders):
                deciders.append(ex)
    active_at = [
        (start, decider_of[j] if j != NO_MATCH else NO_MATCH) for start, j in ex_table.segments()
    ]
    # IPv4 starts fit 32-bit array slots; IPv6 ones need Python ints.
    starts: array[int] | list[int] = array(U32) if version == 4 else []
    run_codes: array[int] = array("i")
    # What decided run i: a plan-table index (>= 0), NO_MATCH, or -2 - k for deciders[k].
    refs: array[int] = array("q")
    for start, g, j in _overlay(table.segments(), active_at):
        if j != NO_MATCH and exempted[g] != plain[g]:
            code, ref = exempted[g], -2 - j
        else:
            code, ref = plain[g], g
        if refs and code == run_codes[-1] and ref == refs[-1]:
            continue  # a boundary of the other table that changes nothing here
        starts.append(start)
        run_codes.append(code)
        refs.append(ref)

    def side(i: int) -> Side:
        ref = refs[i]
        outcome = codes.outcomes[run_codes[i]]
        if ref == NO_MATCH:
            return Side(outcome, None)
        if ref >= 0:
            return Side(outcome, policy.prefix_location(version, ref))
        return Side(outcome, deciders[-2 - ref].location)

    return _Runs(starts, run_codes, refs, side)


def _overlay(
    big: Iterable[tuple[int, int]], small: Sequence[tuple[int, int]]
) -> Iterator[tuple[int, int, int]]:
    """Overlay two interval labellings that both start at 0: ``(start, big label,
    small label)`` at every boundary of either. ``small`` is a list (it is the
    exemption table: short), ``big`` is streamed (the plan table: up to millions)."""
    if len(small) == 1:
        only = small[0][1]
        for start, label in big:
            yield start, label, only
        return
    k, label_b = 0, small[0][1]
    nxt = small[1][0]
    past = 1 << 129  # after every address
    label_a = NO_MATCH
    for start, label in big:
        while nxt <= start:
            k += 1
            if nxt < start:  # a small boundary inside the previous big interval
                yield nxt, label_a, small[k][1]
            label_b = small[k][1]
            nxt = small[k + 1][0] if k + 1 < len(small) else past
        yield start, label, label_b
        label_a = label
    for start, label in small[k + 1 :]:
        yield start, label_a, label


def _spans(old: _Runs, new: _Runs, version: int) -> list[Span]:
    """Walk both files' runs together; the maximal spans where the outcomes differ."""
    spans: list[Span] = []
    for first, last, i, j in _differing(old, new, 1 << addr.bits(version)):
        before, after = old.side(i), new.side(j)
        if spans and spans[-1].last + 1 == first:
            prev = spans[-1]
            if prev.before == before and prev.after == after:
                spans[-1] = Span(version, prev.first, last, before, after)
                continue
        spans.append(Span(version, first, last, before, after))
    return spans


def _differing(a: _Runs, b: _Runs, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(first, last, i, j)`` for each stretch where run i of ``a`` and run j of ``b``
    overlap with different outcome codes, in address order."""
    sa, ca, sb, cb = a.starts, a.codes, b.starts, b.codes
    na, nb = len(sa), len(sb)
    i = j = 0
    pos = 0
    retry_at = 0
    while True:
        # Where both files are unchanged, their runs line up one to one: skip such a
        # stretch in one C-level compare instead of a Python step per run. After a
        # failed try, step a chunk's worth first, so a stretch that really differs
        # (an action change, say) costs one compare per chunk, not one per run.
        if i >= retry_at and sa[i] == sb[j]:
            if (
                i + _CHUNK < na
                and j + _CHUNK < nb
                and sa[i + _CHUNK] == sb[j + _CHUNK]
                and ca[i : i + _CHUNK] == cb[j : j + _CHUNK]
                and sa[i : i + _CHUNK] == sb[j : j + _CHUNK]
            ):
                i += _CHUNK
                j += _CHUNK
                pos = sa[i]
                continue
            retry_at = i + _CHUNK
        next_a = sa[i + 1] if i + 1 < na else end
        next_b = sb[j + 1] if j + 1 < nb else end
        nxt = min(next_a, next_b)
        if ca[i] != cb[j]:
            yield pos, nxt - 1, i, j
        if nxt == end:
            return
        if next_a == nxt:
            i += 1
        if next_b == nxt:
            j += 1
        pos = nxt
