"""What goes into op25b's ipsets for a policy at an instant: pure, no kernel.

So "accept" == ``mta(dst) or allow(src) or not subs(src)``, which is what the
fail-static fallback and the optional fast path in ``op25b.kernel.ruletext`` test,
and ``family_contents`` writes the ``allow`` set so that ipset's own semantics (the
most specific entry wins, a ``nomatch`` entry is a non-match) give exactly what
``decide()`` gives. A property test checks that equality.
"""

from __future__ import annotations

import socket
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import compress, islice
from typing import overload

from op25b.policy.addr import bits
from op25b.policy.model import Policy, Prefix, PrefixList

DEFAULT_BLOCK_MAXELEM = 1 << 20  # a botnet can be large; entries time out anyway


class SubsKeys(Sequence[Prefix]):
    """Every plan prefix of one family, sorted, as packed ints (``net << 8 | len``).

    The ``subs`` set holds every plan prefix: a million ``Prefix`` objects would cost
    more than computing all the sets; this keeps the ints and builds objects on access.
    """

    __slots__ = ("keys", "version")

    def __init__(self, version: int, keys: list[int]) -> None:
        self.version = version
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, i: int) -> Prefix: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Prefix]: ...
    def __getitem__(self, i: int | slice) -> Prefix | Sequence[Prefix]:
        if isinstance(i, slice):
            return tuple(_prefix(self.version, k) for k in self.keys[i])
        return _prefix(self.version, self.keys[i])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SubsKeys):
            return (self.version, self.keys) == (other.version, other.keys)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.version, len(self.keys)))

    def texts(self) -> list[str]:
        """Every entry as ipset writes it (``a.b.c.d/len``, ``x::/len``)."""
        af = socket.AF_INET if self.version == 4 else socket.AF_INET6
        size = 4 if self.version == 4 else 16
        ntop = socket.inet_ntop
        return [
            f"{ntop(af, (k >> _LEN_BITS).to_bytes(size, 'big'))}/{k & _LEN_MASK}" for k in self.keys
        ]


@dataclass(frozen=True)
class FamilySets:
    """The contents of one family's static sets."""

    version: int
    mta: tuple[int, ...]  # addresses
    allow: tuple[tuple[Prefix, bool], ...]  # (prefix, nomatch)
    subs: SubsKeys


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


# A prefix as one int: network << 8 | length. Sorting these orders by network, then
# shorter (enclosing) first; dicts and sets of them cost a third of (net, len) tuples.
_LEN_BITS = 8
_LEN_MASK = 0xFF


def _plan_keys(pl: PrefixList, version: int) -> list[int]:
    """One plan's prefixes of one IP version as packed keys, straight from its columns.

    ``itertools.compress`` picks the version's rows in C; only the packing is a
    comprehension (~0.1 s per 500k prefixes, against ~0.25 s through ``zip`` of the
    three columns, whose network column builds each 128-bit int in a generator).
    """
    mask = pl.versions.translate(_ONLY_V4 if version == 4 else _ONLY_V6)
    if not mask.count(1):
        return []
    lengths = compress(pl.lengths, mask)
    if version == 4:  # IPv4 networks fit the low half
        nets = compress(pl.networks.lo, mask)
        return [(n << _LEN_BITS) | ln for n, ln in zip(nets, lengths, strict=True)]
    his, los = compress(pl.networks.hi, mask), compress(pl.networks.lo, mask)
    return [(((h << 64) | n) << _LEN_BITS) | ln for h, n, ln in zip(his, los, lengths, strict=True)]


_ONLY_V4 = bytes.maketrans(b"\x04\x06", b"\x01\x00")
_ONLY_V6 = bytes.maketrans(b"\x04\x06", b"\x00\x01")


def _covered(keys: list[int], table: Iterable[int], width: int, *, strict: bool) -> set[int]:
    """The keys contained in some entry of ``table`` (strictly: longer than it).

    ``keys`` sorted: each entry's keys are one ``bisect`` range (a key inside an entry
    lies between the entry's network and the end of its range, and sorts there), so
    the cost is the entries' ranges, not a pass over every key per entry length
    (~0.2 s per family at 1M). An entry nested in one already scanned is skipped: its
    keys are longer than the enclosing entry, so they were taken then.
    """
    out: set[int] = set()
    scanned_to = -1
    for entry in sorted(table):
        ln = entry & _LEN_MASK
        first = entry >> _LEN_BITS
        last = first + (1 << (width - ln)) - 1
        if last <= scanned_to:
            continue
        scanned_to = last
        lo = bisect_left(keys, first << _LEN_BITS)
        hi = bisect_right(keys, (last << _LEN_BITS) | _LEN_MASK)
        out.update(
            k
            for k in islice(keys, lo, hi)
            if (k & _LEN_MASK) > ln or (not strict and (k & _LEN_MASK) == ln)
        )
    return out


def _split_zero(entries: dict[int, bool], width: int) -> None:
    """hash:net cannot hold a /0: replace it by the two /1 halves.

    An existing /1 entry was more specific than the /0, so it keeps its own flag.
    """
    if 0 in entries:  # network 0, length 0
        flag = entries.pop(0)
        for half in (1, ((1 << (width - 1)) << _LEN_BITS) | 1):
            entries.setdefault(half, flag)


def _prefix(version: int, key: int) -> Prefix:
    return Prefix(version, key >> _LEN_BITS, key & _LEN_MASK)


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

    Works on packed ints from the policy's columns (no object per prefix but the few
    ``allow`` entries): ~0.3 s at 1M prefixes (~2.5 s with objects, ~0.9 s with a
    pass over every key per covering length).
    """
    width = bits(version)
    mta = sorted({addr for m in policy.provider_mtas for v, addr in m.addresses if v == version})

    # key -> exempt; the first plan listing a prefix wins, so the plans go in backwards
    # and each overwrites the later ones' flags.
    plan_flags: dict[int, bool] = {}
    for plan in reversed(policy.plans):
        plan_flags.update(dict.fromkeys(_plan_keys(plan.prefixes, version), plan.exempt))
    keys = sorted(plan_flags)  # every plan prefix: the subs set (pools come sorted: cheap)

    exemptions = {
        (e.prefix.network << _LEN_BITS) | e.prefix.length
        for e in policy.exemptions
        if e.prefix.version == version and e.active(now)
    }

    # Both filters look at the original entries (before dropping), so they are
    # order-independent: an allow entry is never removed, only nomatch entries.
    positives = {k for k, exempt in plan_flags.items() if exempt} | exemptions
    kept = {
        k
        for k in _covered(keys, positives, width, strict=True)
        if not plan_flags[k] and k not in exemptions
    }
    if kept and exemptions:
        kept -= _covered(sorted(kept), exemptions, width, strict=False)
    allow: dict[int, bool] = dict.fromkeys(positives, False)
    allow.update(dict.fromkeys(kept, True))

    _split_zero(allow, width)
    if keys and keys[0] == 0:  # a /0 plan prefix (network 0 sorts first)
        subs_flags = dict.fromkeys(keys, False)
        _split_zero(subs_flags, width)
        keys = sorted(subs_flags)

    # Sorted for readable, deterministic restore text. A reload runs this in a forked
    # child (op25b.kernel.isolate), so its long C calls never stall verdicts.
    return FamilySets(
        version=version,
        mta=tuple(mta),
        allow=tuple((_prefix(version, k), nm) for k, nm in sorted(allow.items())),
        subs=SubsKeys(version, keys),
    )


def compute_sets(policy: Policy, now: datetime) -> SetContents:
    """All set contents for a policy at instant ``now`` (exemptions may have expired)."""
    return SetContents(
        v4=family_contents(policy, 4, now),
        v6=family_contents(policy, 6, now),
        block_timeout=block_timeout(policy),
    )


def block_timeout(policy: Policy) -> int:
    """The verdict cache's entry timeout for ``policy`` (0: no cache sets)."""
    return max(0, policy.daemon.block_cache_timeout)


def next_change(policy: Policy, now: datetime) -> datetime | None:
    """When the set contents change by themselves: the next exemption expiry after now.

    The daemon schedules an ``update_sets`` for then, or the kernel fast path and the
    fail-static fallback would keep honouring an expired exemption.
    """
    future = [e.expires for e in policy.exemptions if e.expires > now]
    return min(future) if future else None
