"""Whole-policy overlap analysis: every plan's prefixes checked against each other.

Owns the rules that span plans: the same prefix twice is an error (one source, two
answers), a prefix whose nearest cover has the same exempt flag is a "redundant"
warning, and an active exemption that no subscriber source can reach is a "has no
effect" warning. It knows no YAML: ``op25b.policy.loader`` hands it the plans as
``PlanBuild`` columns and the parsed exemptions, plus two callbacks that raise an error
or record a warning at a location, so wording and locations stay the loader's format.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from typing import NoReturn

from op25b.policy import addr
from op25b.policy.model import Exemption, Location, Prefix, ProviderMta
from op25b.util.slices import release, sort_in_slices

_LOW32 = 0xFFFFFFFF
# A pool file nested wholesale under a plan prefix would otherwise produce a warning per
# line; past this many, one summary warning says how many more there are.
MAX_REDUNDANT_LISTED = 1000

# (location, key path, message): how an error or warning reaches the loader
Fail = Callable[[Location, str, str], NoReturn]
Warn = Callable[[Location, str, str], None]


@dataclass
class PlanBuild:
    """A plan while the loader assembles it; positions kept compactly (see PrefixList)."""

    name: str
    exempt: bool
    location: Location
    base: int  # global index of the plan's first prefix, across all plans
    inline_count: int = 0
    # The plan's prefixes as columns (see PrefixList): no object per prefix.
    versions: bytearray = field(default_factory=bytearray)
    networks: list[int] = field(default_factory=list)
    lengths: bytearray = field(default_factory=bytearray)
    files: list[str] = field(default_factory=list)
    file_index: bytearray = field(default_factory=bytearray)
    lines: array[int] = field(default_factory=lambda: array("I"))
    cols: array[int] = field(default_factory=lambda: array("I"))
    # per IP version: ((network << 8 | length) << 32 | global index), for overlap checks
    keys: dict[int, list[int]] = field(default_factory=lambda: {4: [], 6: []})

    def add_keys(self, versions: list[int], values: list[int], lengths: list[int]) -> None:
        """Record sort keys for prefixes just appended (the last len(values) ones)."""
        first = self.base + len(self.networks) - len(values)
        rows = zip(versions, values, lengths, range(first, first + len(values)), strict=True)
        if 6 not in versions:  # the common single-family pool file: no filtering pass
            self.keys[4].extend([(((v << 8) | n) << 32) | g for _, v, n, g in rows])
            return
        for version, v, n, g in rows:
            self.keys[version].append((((v << 8) | n) << 32) | g)


def check_overlaps(
    builds: Sequence[PlanBuild],
    exemptions: Sequence[Exemption],
    now: datetime,
    fail: Fail,
    warn: Warn,
    mtas: Sequence[ProviderMta] = (),
) -> None:
    """Duplicate prefixes -> ``fail``; redundant prefixes, no-op exemptions -> ``warn``.

    Warnings arrive in the order the loader always gave them: redundant prefixes
    first, then exemptions in policy order.
    """
    index = _Index(builds)
    try:
        index.check_plans(fail, warn)
        index.check_exemptions(exemptions, now, warn)
        index.check_mtas(mtas, exemptions, now, warn)
    finally:
        # A million fresh ints each: freed in slices so a reload thread never holds
        # the interpreter long (see op25b.util.slices).
        for table in index.sorted.values():
            release(table.keys)
        for build in builds:
            for keys in build.keys.values():
                release(keys)


@dataclass
class _Sorted:
    """One address family's plan prefixes as sorted ints: (net << 8 | len) << 32 | gidx."""

    width: int
    keys: list[int]


class _Index:
    """Every plan prefix by global index (plans in policy order), for the checks."""

    def __init__(self, builds: Sequence[PlanBuild]) -> None:
        self.plan_builds = builds
        self.plan_base = [build.base for build in builds]  # global index of first prefix
        self.exempt_flags = bytearray()  # by global prefix index
        for build in builds:
            self.exempt_flags.extend(bytes([build.exempt]) * len(build.networks))
        self.sorted: dict[int, _Sorted] = {}  # filled by check_plans

    def plan_and_index(self, gidx: int) -> tuple[PlanBuild, int]:
        plan_no = max(0, bisect_left(self.plan_base, gidx + 1) - 1)
        return self.plan_builds[plan_no], gidx - self.plan_base[plan_no]

    def describe(self, gidx: int) -> tuple[Location, str, str]:
        """(location, key path, prefix text) of a plan prefix by global index."""
        build, i = self.plan_and_index(gidx)
        where = Location(build.files[build.file_index[i]], build.lines[i], build.cols[i])
        if i < build.inline_count:
            path = f"plans.{build.name}.prefixes[{i}]"
        else:
            path = f"plans.{build.name}.prefixes_file"
        prefix = Prefix(build.versions[i], build.networks[i], build.lengths[i])
        return where, path, addr.prefix_text(prefix)

    def check_plans(self, fail: Fail, warn: Warn) -> None:
        """Duplicate prefixes are errors; redundant ones are warnings.

        A prefix is redundant when the nearest less specific prefix that covers it
        (across all plans) has the same exempt flag: deleting it changes no decision.
        The nearest one matters: residential /16 > business /29 (exempt) > mobile /30
        keeps the /30 meaningful. One sort per family and a stack sweep, so a million
        pool prefixes cost about a second, not n^2.
        """
        flags = self.exempt_flags
        redundant: list[tuple[int, int]] = []
        for version, width in ((4, 32), (6, 128)):
            keys = [k for build in self.plan_builds for k in build.keys[version]]
            sort_in_slices(keys)
            self.sorted[version] = _Sorted(width, keys)
            start = _first_nested(keys, width)
            if start is None:
                continue  # all prefixes disjoint: no duplicates, nothing redundant
            # Everything before `start` is disjoint, so the sweep can begin at its
            # predecessor with an empty stack of enclosing prefixes.
            stack: list[tuple[int, int, int]] = []  # (end of range, net << 8 | len, gidx)
            for key in keys[start - 1 :]:
                gidx = key & _LOW32
                net_len = key >> 32
                net = net_len >> 8
                while stack and net >= stack[-1][0]:
                    stack.pop()
                if stack:
                    _, top_net_len, top_gidx = stack[-1]
                    if top_net_len == net_len:
                        self.duplicate(gidx, top_gidx, fail)
                    if flags[top_gidx] == flags[gidx]:
                        redundant.append((gidx, top_gidx))
                stack.append((net + (1 << (width - (net_len & 0xFF))), net_len, gidx))
        redundant.sort()  # only the redundant ones: few
        for gidx, parent in redundant[:MAX_REDUNDANT_LISTED]:
            where, path, text = self.describe(gidx)
            other_where, _, other_text = self.describe(parent)
            build, _ = self.plan_and_index(gidx)
            other, _ = self.plan_and_index(parent)
            state = "exempt" if build.exempt else "not exempt"
            warn(
                where,
                path,
                f"{text} is redundant: plan {other.name!r} already covers it with"
                f" {other_text} at {other_where} (both {state})",
            )
        if len(redundant) > MAX_REDUNDANT_LISTED:
            where, path, _ = self.describe(redundant[MAX_REDUNDANT_LISTED][0])
            more = len(redundant) - MAX_REDUNDANT_LISTED
            warn(where, path, f"{more} more redundant prefixes from here on")

    def duplicate(self, gidx: int, first: int, fail: Fail) -> NoReturn:
        where, path, text = self.describe(gidx)
        other_where, _, _ = self.describe(first)
        other, _ = self.plan_and_index(first)
        mine, _ = self.plan_and_index(gidx)
        if other is mine:
            fail(where, path, f"duplicate prefix {text} (first at {other_where})")
        fail(where, path, f"{text} is already in plan {other.name!r} at {other_where}")

    def cover(self, p: Prefix) -> int | None:
        """The plan prefix (its index) ``p`` falls into by longest match, or None."""
        table = self.sorted[p.version]
        keys, width = table.keys, table.width
        for length in range(p.length, -1, -1):
            net = p.network & ~((1 << (width - length)) - 1)
            want = (net << 8) | length
            j = bisect_left(keys, want << 32)
            if j < len(keys) and keys[j] >> 32 == want:
                return keys[j] & _LOW32
        return None

    def check_mtas(
        self,
        mtas: Sequence[ProviderMta],
        exemptions: Sequence[Exemption],
        now: datetime,
        warn: Warn,
    ) -> None:
        """Warn about a provider MTA whose own address is a guarded subscriber.

        Subscribers may reach it, but its relaying out to other MXes on a guarded
        port (the step that gets their mail delivered) would be blocked.
        """
        for mta in mtas:
            pairs = zip(mta.addresses, mta.locations, strict=True)
            for i, ((version, value), where) in enumerate(pairs):
                host = Prefix(version, value, 32 if version == 4 else 128)
                cover = self.cover(host)
                if cover is None or self.exempt_flags[cover]:
                    continue
                if any(e.active(now) and _covers(e.prefix, host) for e in exemptions):
                    continue
                plan, _ = self.plan_and_index(cover)
                warn(
                    where,
                    f"provider_mtas.{mta.name}.addresses[{i}]",
                    f"provider MTA {addr.format_address(version, value)} is a subscriber"
                    f" of non-exempt plan {plan.name!r}: its own mail out to other MXes"
                    " would be blocked",
                )

    def check_exemptions(self, exemptions: Sequence[Exemption], now: datetime, warn: Warn) -> None:
        """Warn about active exemptions no subscriber source can ever reach.

        Runs after ``check_plans``, which sorts the keys it searches.
        """
        flags = self.exempt_flags
        for i, exemption in enumerate(exemptions):
            if not exemption.active(now):
                continue  # already warned as expired
            p = exemption.prefix
            table = self.sorted[p.version]
            keys, width = table.keys, table.width
            # (a) the plan prefix an address of the exemption falls into, by LPM
            cover = self.cover(p)
            if cover is not None and not flags[cover]:
                continue
            # (b) a more specific non-exempt plan prefix inside the exemption
            lo = bisect_left(keys, ((p.network << 8) | (p.length + 1)) << 32)
            hi = bisect_left(keys, ((p.network + (1 << (width - p.length))) << 8) << 32)
            if any(not flags[k & _LOW32] for k in keys[lo:hi]):
                continue
            text = addr.prefix_text(p)
            if cover is None:
                why = "no plan covers it, so its sources are not subscribers"
            else:
                plan, _ = self.plan_and_index(cover)
                why = f"its sources are in exempt plan {plan.name!r} already"
            warn(
                exemption.location,
                f"exemptions[{i}]",
                f"exemption for {text} has no effect: {why}",
            )


def _covers(outer: Prefix, inner: Prefix) -> bool:
    shift = addr.bits(outer.version) - outer.length
    return (
        outer.version == inner.version
        and outer.length <= inner.length
        and inner.network >> shift == outer.network >> shift
    )


def _first_nested(keys: list[int], width: int) -> int | None:
    """Index of the first sorted key whose prefix lies inside an earlier one, or None.

    Sorted by (network, length), prefix i is nested in some earlier prefix exactly when
    its network is below the furthest range end seen so far; a running max in C makes
    the common all-disjoint pool file cost one pass instead of a Python-level sweep.
    """
    ends = [(k >> 40) + (1 << (width - ((k >> 32) & 0xFF))) for k in keys]
    try:
        reach = accumulate(ends, max)
        # reach is one longer than keys[1:]; its last element is never needed
        for i, (key, furthest) in enumerate(zip(keys[1:], reach, strict=False), 1):
            if key >> 40 < furthest:
                return i
        return None
    finally:
        release(ends)
