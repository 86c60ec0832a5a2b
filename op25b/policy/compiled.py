"""A policy compiled for lookups: which plan a source is in, which exemptions cover
it, whether a destination is a provider MTA.

Owns turning a validated :class:`~op25b.policy.model.Policy` into the structures the
decision core asks on every connection attempt, built on ``op25b.policy.lpm``'s
``PrefixTable`` (the design and its measurements are documented there). Nothing on
the lookup path allocates except the ``PlanHit`` that ``plan_of`` returns (the
daemon's hot path can use ``plan_index`` instead).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from op25b.policy.lpm import NO_MATCH, U32, PrefixTable
from op25b.policy.model import Action, Exemption, Location, Plan, Policy

__all__ = ["NO_MATCH", "CompiledPolicy", "PlanHit", "compile_policy"]

@dataclass(frozen=True, slots=True)
class PlanHit:
    """The plan whose longest matching prefix covers a source, and where that prefix is."""

    plan: Plan
    location: Location


@dataclass(frozen=True, slots=True, eq=False)
class _PlanIndex:
    """One IP version's plan prefixes: the table plus where each index came from."""

    table: PrefixTable
    # Table index g belongs to plans[plan_ids[bisect_right(offsets, g) - 1]] and is
    # prefix local[g] of that plan's PrefixList (plans mix v4 and v6 prefixes).
    offsets: tuple[int, ...]
    plan_ids: tuple[int, ...]
    local: array[int]


@dataclass(frozen=True, eq=False)
class CompiledPolicy:
    """A Policy compiled for lookups. Build with ``compile_policy``."""

    policy: Policy
    guarded: frozenset[int]
    action: Action
    guarded_location: Location
    action_location: Location
    _plans4: _PlanIndex = field(repr=False)
    _plans6: _PlanIndex = field(repr=False)
    _mtas4: dict[int, Location] = field(repr=False)
    _mtas6: dict[int, Location] = field(repr=False)
    _exempt4: tuple[PrefixTable, tuple[tuple[Exemption, ...], ...]] = field(repr=False)
    _exempt6: tuple[PrefixTable, tuple[tuple[Exemption, ...], ...]] = field(repr=False)

    def provider_mta(self, version: int, addr: int) -> Location | None:
        """Location of the provider-MTA address equal to ``addr``, else None."""
        return (self._mtas4 if version == 4 else self._mtas6).get(addr)

    def plan_table(self, version: int) -> PrefixTable:
        """The raw plan LPM table for one IP version (index = per-version position)."""
        return (self._plans4 if version == 4 else self._plans6).table

    def plan_ranges(self, version: int) -> Iterator[tuple[int, int, int]]:
        """``(first, end, plan)``: plan-table indexes ``first..end-1`` belong to
        ``policy.plans[plan]`` (for whole-table walks; lookups never use it)."""
        idx = self._plans4 if version == 4 else self._plans6
        ends = (*idx.offsets[1:], len(idx.table)) if idx.offsets else ()
        return zip(idx.offsets, ends, idx.plan_ids, strict=True)

    def prefix_location(self, version: int, index: int) -> Location:
        """Where the plan prefix with plan-table index ``index`` is written."""
        idx = self._plans4 if version == 4 else self._plans6
        plan = self.policy.plans[idx.plan_ids[bisect_right(idx.offsets, index) - 1]]
        return plan.prefixes.location(idx.local[index])

    def exemption_table(
        self, version: int
    ) -> tuple[PrefixTable, tuple[tuple[Exemption, ...], ...]]:
        """The exemption LPM table and, per table index, the exemptions covering it
        (most specific first), as ``exemptions_of`` uses them."""
        return self._exempt4 if version == 4 else self._exempt6

    def plan_index(self, version: int, addr: int) -> int:
        """Index into ``policy.plans`` of the source's plan, or -1; allocation-free."""
        idx = self._plans4 if version == 4 else self._plans6
        g = idx.table.lookup(addr)
        if g < 0:
            return NO_MATCH
        return idx.plan_ids[bisect_right(idx.offsets, g) - 1]

    def plan_of(self, version: int, addr: int) -> PlanHit | None:
        """Longest-prefix match of ``addr`` across all plans."""
        idx = self._plans4 if version == 4 else self._plans6
        g = idx.table.lookup(addr)
        if g < 0:
            return None
        plan = self.policy.plans[idx.plan_ids[bisect_right(idx.offsets, g) - 1]]
        # Built per hit on purpose: one Location per prefix would cost ~100 MB at 1M.
        return PlanHit(plan, plan.prefixes.location(idx.local[g]))

    def exemptions_of(self, version: int, addr: int) -> Sequence[Exemption]:
        """All exemptions whose prefix covers ``addr``, most specific first.

        Exemptions for the same prefix keep their policy order.
        """
        table, chains = self._exempt4 if version == 4 else self._exempt6
        j = table.lookup(addr)
        return chains[j] if j >= 0 else ()


def _plan_indexes(plans: Sequence[Plan]) -> tuple[_PlanIndex, _PlanIndex]:
    """The v4 and v6 plan tables, from one pass over every plan prefix."""
    # Per version: networks (shared int objects, no copies), lengths, and where each
    # came from; parallel arrays rather than tuples keep a 1M compile's garbage small.
    nets: dict[int, list[int]] = {4: [], 6: []}
    lens: dict[int, array[int]] = {4: array("B"), 6: array("B")}
    local: dict[int, array[int]] = {4: array(U32), 6: array(U32)}
    offsets: dict[int, list[int]] = {4: [], 6: []}
    plan_ids: dict[int, list[int]] = {4: [], 6: []}
    for pid, plan in enumerate(plans):
        before = {v: len(nets[v]) for v in (4, 6)}
        pl = plan.prefixes
        for i, (v, net, length) in enumerate(
            zip(pl.versions, pl.networks, pl.lengths, strict=True)
        ):
            nets[v].append(net)
            lens[v].append(length)
            local[v].append(i)
        for v in (4, 6):
            if len(nets[v]) > before[v]:
                offsets[v].append(before[v])
                plan_ids[v].append(pid)
    v4, v6 = (
        _PlanIndex(
            PrefixTable.build(32 if v == 4 else 128, zip(nets[v], lens[v], strict=True)),
            tuple(offsets[v]),
            tuple(plan_ids[v]),
            local[v],
        )
        for v in (4, 6)
    )
    return v4, v6


def _exemption_index(
    exemptions: Sequence[Exemption], version: int
) -> tuple[PrefixTable, tuple[tuple[Exemption, ...], ...]]:
    groups: dict[tuple[int, int], list[Exemption]] = {}
    for e in exemptions:
        if e.prefix.version == version:
            groups.setdefault((e.prefix.network, e.prefix.length), []).append(e)
    keys = list(groups)
    table = PrefixTable.build(32 if version == 4 else 128, keys)
    # Parents are shorter than their children, so visiting by length builds each
    # chain after its parent's: chain = own exemptions + the enclosing chain.
    chains: list[tuple[Exemption, ...]] = [()] * len(keys)
    for j in sorted(range(len(keys)), key=lambda j: keys[j][1]):
        parent = table.parent(j)
        chains[j] = tuple(groups[keys[j]]) + (chains[parent] if parent >= 0 else ())
    return table, tuple(chains)


def compile_policy(policy: Policy) -> CompiledPolicy:
    """Compile once per policy load."""
    mtas: dict[int, dict[int, Location]] = {4: {}, 6: {}}
    for mta in policy.provider_mtas:
        for (version, addr), loc in zip(mta.addresses, mta.locations, strict=True):
            # setdefault: the first listing of an address names it, deterministically.
            mtas[version].setdefault(addr, loc)
    plans4, plans6 = _plan_indexes(policy.plans)
    return CompiledPolicy(
        policy=policy,
        guarded=policy.guarded_ports,
        action=policy.action,
        guarded_location=policy.guarded_ports_location,
        action_location=policy.action_location,
        _plans4=plans4,
        _plans6=plans6,
        _mtas4=mtas[4],
        _mtas6=mtas[6],
        _exempt4=_exemption_index(policy.exemptions, 4),
        _exempt6=_exemption_index(policy.exemptions, 6),
    )
