"""The source-dependent half of ``op25b diff``: each file's decisions as sorted runs.

Owns flattening a compiled policy's interval tables (the plan table overlaid with the
exemption table at ``now``) into runs labelled with an outcome code (``source_runs``),
walking two files' runs together boundary by boundary (``walk_spans``, skipping identical
stretches ``CHUNK`` boundaries at a time in one C-level compare), and the spans of a
change with one fixed side, built on access (``RunSpans``).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from op25b.policy import addr
from op25b.policy.compiled import NO_MATCH, CompiledPolicy
from op25b.policy.decide import ACTION_VERDICT, Reason, Verdict
from op25b.policy.difftypes import MAX_RULES, OneSidedSpans, Outcome, OutcomeSum, Side, Span
from op25b.policy.lpm import U32
from op25b.policy.model import Exemption

# Chunk size for skipping identical stretches of both policies in one C-level compare.
CHUNK = 256


class RunSpans(OneSidedSpans):
    """The spans of a change with one fixed side, built on access from the other
    file's runs (a million Span objects would cost hundreds of MB)."""

    def __init__(
        self, version: int, runs: Runs, picked: array[int], fixed: Side, fixed_is_after: bool
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


class Codes:
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
class Runs:
    """One file's decision over all sources of one version, for one destination class
    and port: run i covers ``starts[i]`` up to the next start and is decided
    ``codes[i]``; ``side(i)`` adds the deciding line (built only for changed runs)."""

    starts: Sequence[int]
    codes: array[int]
    refs: array[int]  # what decided each run; equal refs mean the same line
    side: Callable[[int], Side]


def fixed_runs(fixed: Side, codes: Codes) -> Runs:
    return Runs([0], array("i", [codes.of(fixed.outcome)]), array("q", [0]), lambda _i: fixed)


def source_runs(policy: CompiledPolicy, version: int, now: datetime, codes: Codes) -> Runs:
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

    return Runs(starts, run_codes, refs, side)


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


def walk_spans(old: Runs, new: Runs, version: int) -> list[Span]:
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


def _differing(a: Runs, b: Runs, end: int) -> Iterator[tuple[int, int, int, int]]:
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
                i + CHUNK < na
                and j + CHUNK < nb
                and sa[i + CHUNK] == sb[j + CHUNK]
                and ca[i : i + CHUNK] == cb[j : j + CHUNK]
                and sa[i : i + CHUNK] == sb[j : j + CHUNK]
            ):
                i += CHUNK
                j += CHUNK
                pos = sa[i]
                continue
            retry_at = i + CHUNK
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
