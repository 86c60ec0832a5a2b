"""Longest-prefix-match tables: the data structure behind every policy lookup.

Owns ``PrefixTable``: a set of IPv4 or IPv6 prefixes compiled so that the longest
one containing an address is found in a few C-level probes. ``op25b.policy.compiled``
builds the policy's tables from it.

Design: sorted disjoint intervals + bucket index (``PrefixTable``)
-----------------------------------------------------------------
Nested prefixes are flattened once, at compile time, into the sorted start points of
disjoint address intervals, each labelled with the index of its most specific prefix
(or -1). IPv4 keys live in ``array('I')`` (4 bytes). IPv6 is split at bit 64: the
first level is keyed by the upper 64 bits (``array('Q')``); the rare prefixes longer
than /64 (host exemptions, /127 links) get a second level for their /64, reached
through a negative label, so no 128-bit Python int is stored per interval. A bucket
index (one bucket per one or two intervals) narrows each lookup to a C
``bisect_right`` over a few neighbouring starts.

Chosen by measurement (``bench/bench_matcher.py``, 1M mixed v4/v6 ISP-like prefixes,
this 2-vCPU box, CPU time; see bench/README.md) over:

- (a) per-prefix-length dicts ``{masked_int: index}`` probed longest first: ~3x the
  memory (a dict slot plus a boxed index per prefix: ~74 MB vs ~27 MB traced at 1M)
  for no lookup gain: every miss probes every length present, and ISP pools mix
  /16../32 and /32../128; the whole daemon must stay under 300 MB and the Policy's
  own ``Prefix`` objects already take ~75-100 MB;
- (b) the same intervals with one plain bisect over all of them: the same memory
  minus the bucket array (<= 4 bytes per interval) but 1.4-2x slower at 1M, because
  ~21 probes spread over megabytes of array miss the cache.

Compile is one ``list.sort()`` of packed integer keys plus one linear sweep; its only
per-prefix garbage is that list of ints.

Lookups take addresses as ints in ``[0, 2**width)`` as the packet parser produces
them; nothing on the lookup path allocates except the ``PlanHit`` that
``plan_of`` returns (the daemon's hot path can use ``plan_index`` instead).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, islice

from op25b.util.slices import SLICE, release, sort_in_slices

__all__ = ["NO_MATCH", "U32", "PrefixTable"]

_STRIDE = 64
_MASK64 = (1 << 64) - 1
# Bits reserved for the prefix length inside a packed sort key (lengths <= 129,
# the extra value marks a second-level pointer, see _sweep).
_LEN_BITS = 8
_LEN_MASK = (1 << _LEN_BITS) - 1
# Bits for the prefix index in a packed key: fixed, so keys are packed in the same
# pass that counts the prefixes; a v4 key still fits three 30-bit int digits (36 B).
_INDEX_BITS = 32
_INDEX_MASK = (1 << _INDEX_BITS) - 1
_MAX_PREFIXES = 2**31 - 2
NO_MATCH = -1
# array typecode of an unsigned 32-bit int ('I' is only guaranteed 2 bytes by C).
U32 = "I" if array("I").itemsize >= 4 else "L"


@dataclass(frozen=True, slots=True, eq=False)
class PrefixTable:
    """Longest-prefix match over ``width``-bit integers (32 for IPv4, 128 for IPv6).

    The value of prefix ``i`` is ``i``, its position in the input, so callers keep
    their own parallel arrays instead of a million boxed values. Build with
    :meth:`build`.
    """

    width: int
    size: int
    # First level: interval j starts at key _starts[j] (_starts[0] == 0, so every key
    # falls somewhere) and carries _labels[j]: a prefix index, NO_MATCH, or -2 - k
    # meaning "second-level group k decides, with the low 64 bits".
    _starts: array[int]
    _labels: array[int]
    # Bucket index over the first level: keys in [_base, _last) fall in bucket
    # (key - _base) >> _shift, whose intervals are _starts[_buckets[b]:_buckets[b + 1]]
    # (plus the one before), so bisect scans a handful of entries instead of ~21 probes
    # spread over megabytes: that halves lookup time at 1M prefixes (bench_matcher).
    _base: int
    _last: int
    _shift: int
    _buckets: array[int]
    # All second-level groups share two arrays (group k is the slice
    # _sub_bounds[k]:_sub_bounds[k + 1]) so thousands of /128s cost no per-group objects.
    _sub_starts: array[int]
    _sub_labels: array[int]
    _sub_bounds: array[int]
    _parents: array[int]

    @classmethod
    def build(cls, width: int, prefixes: Iterable[tuple[int, int]]) -> PrefixTable:
        """Compile ``(network, length)`` pairs; the value of the i-th pair is ``i``.

        Of identical prefixes the first one wins (the loader rejects such ties, but a
        lookup must still be deterministic). A network with host bits set is a
        programming error here (the loader refuses it) and raises ValueError, because
        a partially overlapping interval would corrupt the sweep silently.
        """
        if width not in (32, 128):
            raise ValueError(f"unsupported address width {width}")
        stride = min(width, _STRIDE)
        low_bits = width - stride  # bits handled by the second level (0 for v4)
        low_mask = (1 << low_bits) - 1
        len_bits, index_bits = _LEN_BITS, _INDEX_BITS
        # Pack (start, length, index) into one int so a plain list.sort() orders the
        # prefixes by start, then shorter (enclosing) first. One int per prefix is the
        # only per-prefix garbage of a compile; tuples would cost ~3x the memory.
        keys: list[int] = []
        append = keys.append
        # Prefixes longer than /stride (IPv6 only), kept in arrays rather than tuples:
        # small objects that outlive the loop would pin the keys' freed memory (pymalloc
        # returns an arena to the OS only when all of it is free), inflating RSS.
        long_tops: array[int] = array("Q")
        long_lows: array[int] = array("Q")
        long_lens: array[int] = array("B")
        long_ids: array[int] = array(U32)
        n = 0
        for network, length in prefixes:
            if not 0 <= length <= width or network < 0 or network >> width:
                raise ValueError(f"bad prefix {network:#x}/{length} for width {width}")
            if network & ((1 << (width - length)) - 1):
                raise ValueError(f"host bits set in {network:#x}/{length}")
            if length <= stride:
                append((((network >> low_bits) << len_bits | length) << index_bits) | n)
            else:
                long_tops.append(network >> low_bits)
                long_lows.append(network & low_mask)
                long_lens.append(length - stride)
                long_ids.append(n)
            n += 1
        groups = sorted(set(long_tops))
        if n + len(groups) > _MAX_PREFIXES:
            raise ValueError(f"too many prefixes: {n}")
        # A pointer to a second level is a single-key interval sorting after any
        # real prefix starting at that key, so it overrides a real /stride there.
        for k, t in enumerate(groups):
            append(((t << len_bits | (stride + 1)) << index_bits) | (n + k))
        sort_in_slices(keys)  # not keys.sort(): a reload thread must not stall verdicts
        parents = array("i", [NO_MATCH]) * n
        bases = [NO_MATCH] * len(groups)
        starts, labels = _sweep(keys, stride, n, NO_MATCH, parents, bases)
        release(keys)
        sub_starts: array[int] = array("Q")
        sub_labels: array[int] = array("i")
        sub_bounds: array[int] = array(U32, [0])
        # Members of each group, in group order (a stable sort keeps input order).
        order = sorted(range(len(long_ids)), key=long_tops.__getitem__)
        pos = 0
        for k, t in enumerate(groups):
            end = pos
            while end < len(order) and long_tops[order[end]] == t:
                end += 1
            members = order[pos:end]
            pos = end
            base = bases[k]
            if len(members) == 1:
                # The common case (one host route in its /64) without a sweep.
                m = members[0]
                low, length, i = long_lows[m], long_lens[m], long_ids[m]
                parents[i] = base
                if low:
                    sub_starts.append(0)
                    sub_labels.append(base)
                sub_starts.append(low)
                sub_labels.append(i)
                after = low + (1 << (low_bits - length))
                if after <= low_mask:
                    sub_starts.append(after)
                    sub_labels.append(base)
            else:
                sub_keys = [
                    ((long_lows[m] << len_bits | long_lens[m]) << index_bits) | long_ids[m]
                    for m in members
                ]
                sub_keys.sort()
                s_starts, s_labels = _sweep(sub_keys, low_bits, n, base, parents, [])
                sub_starts.extend(s_starts)
                sub_labels.extend(s_labels)
            sub_bounds.append(len(sub_starts))
        first, last, shift, buckets = _bucket_index(starts)
        return cls(
            width,
            n,
            starts,
            labels,
            first,
            last,
            shift,
            buckets,
            sub_starts,
            sub_labels,
            sub_bounds,
            parents,
        )

    def lookup(self, addr: int) -> int:
        """Index of the longest prefix containing ``addr``, or NO_MATCH (-1)."""
        starts = self._starts
        key = addr >> 64 if self.width == 128 else addr
        if key < self._base:
            j = 0
        elif key >= self._last:
            j = len(starts) - 1
        else:
            b = (key - self._base) >> self._shift
            buckets = self._buckets
            j = bisect_right(starts, key, buckets[b], buckets[b + 1]) - 1
        label = self._labels[j]
        if label >= NO_MATCH:
            return label
        k = -2 - label
        bounds = self._sub_bounds
        j = bisect_right(self._sub_starts, addr & _MASK64, bounds[k], bounds[k + 1])
        return self._sub_labels[j - 1]

    def segments(self) -> Iterator[tuple[int, int]]:
        """Every interval as ``(first address, label)``, in address order, full width.

        The intervals cover ``[0, 2**width)``; a label is a prefix index or NO_MATCH
        (second levels are expanded in place, so a neighbour may repeat a label). For
        whole-table walks such as ``op25b.policy.diff``; lookups never use it.
        """
        if self.width == 32:
            yield from zip(self._starts, self._labels, strict=True)
            return
        sub_starts, sub_labels, bounds = self._sub_starts, self._sub_labels, self._sub_bounds
        for key, label in zip(self._starts, self._labels, strict=True):
            top = key << 64
            if label >= NO_MATCH:
                yield top, label
            else:
                k = -2 - label
                for j in range(bounds[k], bounds[k + 1]):
                    yield top | sub_starts[j], sub_labels[j]

    def parent(self, i: int) -> int:
        """Index of the nearest prefix strictly enclosing prefix ``i``, or NO_MATCH.

        For a duplicate prefix this is the identical earlier one that wins lookups.
        """
        return self._parents[i]

    @property
    def intervals(self) -> int:
        """Number of stored intervals (for sizing and benchmarks)."""
        return len(self._starts) + len(self._sub_starts)

    @property
    def nbytes(self) -> int:
        """Bytes held in the table's arrays (excluding object headers)."""
        arrays = (
            self._starts,
            self._labels,
            self._sub_starts,
            self._sub_labels,
            self._buckets,
            self._sub_bounds,
            self._parents,
        )
        return sum(len(a) * a.itemsize for a in arrays)

    def __len__(self) -> int:
        return self.size


def _sweep(
    keys: list[int],
    key_bits: int,
    n: int,
    default: int,
    parents: array[int],
    bases: list[int],
) -> tuple[array[int], array[int]]:
    """Flatten sorted packed prefix keys into disjoint intervals.

    Prefixes either nest or are disjoint, so a stack of open prefixes suffices:
    entering a prefix starts an interval labelled with it, and leaving one resumes
    the label of the enclosing prefix (or ``default``). Labels of indexes ``>= n``
    are second-level pointers ``-2 - (index - n)``; their enclosing label is recorded
    in ``bases`` so the second level can fall back to it.
    """
    end_of_space = 1 << key_bits
    starts: array[int] = array(U32 if key_bits <= 32 else "Q", [0])
    labels: array[int] = array("i", [default])
    # The bottom entry stands for "outside every prefix" and is never popped: its end
    # lies past the key space, so the loops below need no emptiness checks.
    stack_end: list[int] = [end_of_space]
    stack_label: list[int] = [default]
    index_mask, index_bits, len_bits, len_mask = _INDEX_MASK, _INDEX_BITS, _LEN_BITS, _LEN_MASK
    prev_start_len = -1
    kept = NO_MATCH

    def resume(pos: int, label: int) -> None:
        # Leaving a prefix: from ``pos`` on the enclosing label applies again.
        if starts[-1] == pos:
            # an inner prefix ended at the same key as this one: the outer label wins
            labels[-1] = label
            if len(labels) > 1 and labels[-2] == label:
                starts.pop()
                labels.pop()
        elif labels[-1] != label and pos < end_of_space:
            starts.append(pos)
            labels.append(label)

    # The compile-time hot loop (one pass per prefix): kept flat on purpose.
    for key in keys:
        i = key & index_mask
        start_len = key >> index_bits
        if start_len == prev_start_len:
            parents[i] = kept  # duplicate: the first one stays the match
            continue
        prev_start_len = start_len
        start = start_len >> len_bits
        while stack_end[-1] < start:
            # leaving a prefix: inlined resume(), this runs once per prefix
            pos = stack_end.pop() + 1
            stack_label.pop()
            label = stack_label[-1]
            if starts[-1] == pos:
                labels[-1] = label
                if labels[-2] == label:  # len >= 2: something was entered before
                    starts.pop()
                    labels.pop()
            elif labels[-1] != label and pos < end_of_space:
                starts.append(pos)
                labels.append(label)
        if i >= n:
            bases[i - n] = stack_label[-1]
            label = -2 - (i - n)
            end = start  # a pointer covers one key of this level
        else:
            parents[i] = stack_label[-1]
            label = kept = i
            end = start + (1 << (key_bits - (start_len & len_mask))) - 1
        # Entering a prefix: its label is fresh, so no merge with the previous one.
        if starts[-1] == start:
            labels[-1] = label  # a longer prefix starting at the same key wins
        else:
            starts.append(start)
            labels.append(label)
        stack_end.append(end)
        stack_label.append(label)
    while len(stack_end) > 1:
        end = stack_end.pop()
        stack_label.pop()
        resume(end + 1, stack_label[-1])
    return starts, labels


def _bucket_index(starts: array[int]) -> tuple[int, int, int, array[int]]:
    """(base, last, shift, buckets) for PrefixTable.lookup, about 2 intervals a bucket.

    buckets[b] is the number of starts below ``base + (b << shift)``, so a key in
    bucket b lies in an interval among ``starts[buckets[b] - 1 : buckets[b + 1]]``.
    Clustered pools leave many buckets empty and a few full; that only degrades
    towards a plain bisect, never below it.
    """
    count = len(starts)
    base = starts[1] if count > 1 else 0
    last = starts[-1]
    if count < 3:
        return base, last, 0, array(U32)  # every key is below base or at/after last
    span = last - base
    shift = max(0, span.bit_length() - (count // 2).bit_length())
    counts = array(U32, [0]) * ((span >> shift) + 2)
    for s in islice(starts, 1, None):
        counts[((s - base) >> shift) + 1] += 1
    # Prefix sums, built a slice at a time: array(accumulate(...)) over a million
    # counts is one C call that would hold the interpreter ~50 ms during a reload.
    buckets: array[int] = array(U32)
    sums = accumulate(counts, initial=1)
    next(sums)
    while piece := array(U32, islice(sums, SLICE)):
        buckets.extend(piece)
    return base, last, shift, buckets
