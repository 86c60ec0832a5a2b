"""What goes into op25b's ipsets for a policy at an instant: pure, no kernel.

So "accept" == ``mta(dst) or allow(src) or not subs(src)``, which is what the
fail-static fallback and the optional fast path in ``op25b.kernel.ruletext`` test,
and ``family_contents`` writes the ``allow`` set so that ipset's own semantics (the
most specific entry wins, a ``nomatch`` entry is a non-match) give exactly what
``decide()`` gives. A property test checks that equality.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from op25b.policy.addr import bits
from op25b.policy.model import Policy, Prefix

DEFAULT_BLOCK_MAXELEM = 1 << 20  # a botnet can be large; entries time out anyway


@dataclass(frozen=True)
class FamilySets:
    """The contents of one family's static sets."""

    version: int
    mta: tuple[int, ...]  # addresses
    allow: tuple[tuple[Prefix, bool], ...]  # (prefix, nomatch)
    subs: tuple[Prefix, ...]


@dataclass(frozen=True)
class SetContents:
    """Everything ``apply_sets`` loads; ``block_timeout`` 0 means no verdict cache set."""

    v4: FamilySets
    v6: FamilySets
    block_timeout: int = 0
    block_maxelem: int = DEFAULT_BLOCK_MAXELEM

    def family(self, version: int) -> FamilySets:
        """The sets of IP version 4 or 6."""
        return self.v4 if version == 4 else self.v6


_Key = tuple[int, int]  # (network, length)


def _covered_by(
    key: _Key,
    table: dict[_Key, bool] | set[_Key],
    lengths: Iterable[int],
    width: int,
    *,
    strict: bool,
) -> bool:
    """True when some entry of ``table`` (at one of ``lengths``) contains ``key``.

    Probing each distinct shorter length is O(distinct lengths) per key, which stays
    small for real policies even with a million pool prefixes.
    """
    network, length = key
    for ln in lengths:
        if ln > length or (strict and ln == length):
            continue
        shift = width - ln
        if ((network >> shift) << shift, ln) in table:
            return True
    return False


def _split_zero(entries: dict[_Key, bool], width: int) -> None:
    """hash:net cannot hold a /0: replace it by the two /1 halves.

    An existing /1 entry was more specific than the /0, so it keeps its own flag.
    """
    if (0, 0) in entries:
        flag = entries.pop((0, 0))
        for half in ((0, 1), (1 << (width - 1), 1)):
            entries.setdefault(half, flag)


def family_contents(policy: Policy, version: int, now: datetime) -> FamilySets:
    """The sets for one IP version, so that ipset semantics reproduce ``decide()``.

    ``decide()`` accepts a source that is no subscriber, whose longest-matching plan
    prefix is exempt, or that lies in an *active* exemption (exemptions override plans
    whatever their length). In ``allow`` (where the most specific entry wins and a
    ``nomatch`` entry is a non-match) that becomes:

    - exempt plan prefixes are entries, non-exempt plan prefixes are ``nomatch``;
      on an identical prefix in several plans the first plan listed wins;
    - active exemptions are entries and override an identical plan prefix;
    - a ``nomatch`` inside an active exemption is dropped: the exemption must win
      there although it is less specific;
    - a ``nomatch`` with no entry around it is dropped too: it changes nothing, and
      without this a plain residential pool would be stored twice.
    """
    width = bits(version)
    mta = sorted({addr for m in policy.provider_mtas for v, addr in m.addresses if v == version})

    plan_flags: dict[_Key, bool] = {}  # key -> exempt
    for plan in policy.plans:
        for p in plan.prefixes:
            if p.version == version:
                plan_flags.setdefault((p.network, p.length), plan.exempt)

    exemptions = {
        (e.prefix.network, e.prefix.length)
        for e in policy.exemptions
        if e.prefix.version == version and e.active(now)
    }
    exemption_lengths = sorted({ln for _, ln in exemptions})

    allow: dict[_Key, bool] = {}  # key -> nomatch
    for key, exempt in plan_flags.items():
        allow[key] = not exempt
    for key in exemptions:
        allow[key] = False

    # Both passes look at the original entries (before dropping), so they are
    # order-independent: an allow entry is never removed, only nomatch entries.
    positives = {k for k, nomatch in allow.items() if not nomatch}
    positive_lengths = sorted({ln for _, ln in positives})
    for key in [k for k, nomatch in allow.items() if nomatch]:
        if _covered_by(key, exemptions, exemption_lengths, width, strict=False) or not (
            _covered_by(key, positives, positive_lengths, width, strict=True)
        ):
            del allow[key]

    _split_zero(allow, width)
    subs_flags = dict.fromkeys(plan_flags, False)
    _split_zero(subs_flags, width)

    # Sorted for readable, deterministic restore text. A reload runs this in a forked
    # child (op25b.daemon.worker.in_child), so its long C calls never stall verdicts.
    return FamilySets(
        version=version,
        mta=tuple(mta),
        allow=tuple(
            (Prefix(version, n, ln), nomatch) for (n, ln), nomatch in sorted(allow.items())
        ),
        subs=tuple(Prefix(version, n, ln) for n, ln in sorted(subs_flags)),
    )


def compute_sets(policy: Policy, now: datetime) -> SetContents:
    """All set contents for a policy at instant ``now`` (exemptions may have expired)."""
    return SetContents(
        v4=family_contents(policy, 4, now),
        v6=family_contents(policy, 6, now),
        block_timeout=max(0, policy.daemon.block_cache_timeout),
    )


def next_change(policy: Policy, now: datetime) -> datetime | None:
    """When the set contents change by themselves: the next exemption expiry after now.

    The daemon schedules an ``update_sets`` for then, or the kernel fast path and the
    fail-static fallback would keep honouring an expired exemption.
    """
    future = [e.expires for e in policy.exemptions if e.expires > now]
    return min(future) if future else None
