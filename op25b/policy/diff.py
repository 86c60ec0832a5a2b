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
from datetime import datetime, timedelta

from op25b.policy.compiled import CompiledPolicy
from op25b.policy.decide import Reason, Verdict
from op25b.policy.diffruns import Codes, Runs, RunSpans, fixed_runs, source_runs, walk_spans
from op25b.policy.difftypes import Change, Destination, Outcome, OutcomeSum, PolicyDiff, Side, Span
from op25b.policy.lpm import U32

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


def diff_policies(
    old: CompiledPolicy,
    new: CompiledPolicy,
    now: datetime,
    horizon: timedelta = DEFAULT_HORIZON,
) -> PolicyDiff:
    """Compare OLD and NEW with exemptions evaluated at ``now`` (aware)."""
    codes = Codes()
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
    codes: Codes,
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
    cache: dict[bool, Runs] = {}

    def runs(fixed: Side | None, is_new: bool) -> Runs:
        if fixed is not None:
            return fixed_runs(fixed, codes)
        if is_new not in cache:
            cache[is_new] = source_runs(new if is_new else old, version, now, codes)
        return cache[is_new]

    out: list[Change] = []
    for (before, after), (ds, ports) in groups.items():
        scope = (version, tuple(ds), tuple(sorted(ports)))
        if before is not None and after is None:
            out += _against_fixed(scope, before, runs(None, True), codes, fixed_is_after=False)
        elif before is None and after is not None:
            out += _against_fixed(scope, after, runs(None, False), codes, fixed_is_after=True)
        else:
            out += _changes(scope, walk_spans(runs(before, False), runs(after, True), version))
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
    scope: Scope, fixed: Side, runs: Runs, codes: Codes, *, fixed_is_after: bool
) -> list[Change]:
    """The one Change where one file decides the same for every source (``fixed``) and
    the other asks the source (``runs``): every run with another outcome."""
    version = scope[0]
    k = codes.of(fixed.outcome)
    rc = runs.codes
    picked = array(U32, (i for i in range(len(rc)) if rc[i] != k))
    if not picked:
        return []
    spans = RunSpans(version, runs, picked, fixed, fixed_is_after)
    others = frozenset(codes.outcomes[rc[i]] for i in set(picked))
    fixed_set = frozenset([fixed.outcome])
    befores, afters = (others, fixed_set) if fixed_is_after else (fixed_set, others)
    return [Change(*scope, befores, afters, spans, spans.size())]
