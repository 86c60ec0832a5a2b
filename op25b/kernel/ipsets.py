"""The kernel ipsets op25b keeps: what goes in them (pure) and how they are replaced.

Four sets per family, named ``op25b-<kind><4|6>``:

- ``mta``   hash:ip   provider MTA addresses (destinations every subscriber may reach);
- ``subs``  hash:net  every plan prefix of every plan (sources that are subscribers);
- ``allow`` hash:net  sources a decision accepts although they are subscribers, written
  so that ipset's own semantics (the most specific entry wins, a ``nomatch`` entry is a
  non-match) give exactly what ``decide()`` gives: see ``family_contents``;
- ``block`` hash:ip with timeout and counters, the kernel verdict cache of sources the
  daemon blocked (filled at run time, flushed on every reload).

So "accept" == ``mta(dst) or allow(src) or not subs(src)``, which is what the fail-static
fallback and the optional fast path in ``op25b.kernel.rules`` test.

Contents are computed by a pure function (``compute_sets``) from a Policy and ``now``;
``apply_sets`` loads them with ``ipset restore`` into temporary sets first and then swaps
them into place, so a reload never leaves a window in which a set is empty or half full.

This module is the lowest kernel-facing layer, so it also owns the one error type
(``RulesError``) and the command runner that ``op25b.kernel.rules`` shares.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress

from op25b.kernel.cachesets import MIN_HASHSIZE, block_set_line, family_word
from op25b.kernel.commands import RulesError, run_command
from op25b.kernel.names import SET_PREFIX, TMP_SUFFIX, all_set_names, set_name
from op25b.kernel.setcontents import DEFAULT_BLOCK_MAXELEM, FamilySets, SetContents, SubsKeys
from op25b.policy.addr import format_address, prefix_text

# The smallest sizes ipset would pick anyway; larger policies get sizes from their count
# so a 1M-prefix pool neither hits maxelem nor spends the load rehashing a tiny table.
_MIN_MAXELEM = 65536


# ---------------------------------------------------------------- restore text


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _sizes(count: int) -> tuple[int, int]:
    """(hashsize, maxelem) for ``count`` entries: ~2 entries per bucket, no resize."""
    hashsize = max(MIN_HASHSIZE, _pow2_at_least(count // 2))
    maxelem = max(_MIN_MAXELEM, _pow2_at_least(count))
    return hashsize, maxelem


def _create_line(name: str, settype: str, version: int, count: int, extra: str = "") -> str:
    hashsize, maxelem = _sizes(count)
    return (
        f"create {name} {settype} family {family_word(version)} "
        f"hashsize {hashsize} maxelem {maxelem}{extra}\n"
    )


# One family's static sets: (kind, ipset type), in load and swap order.
_STATIC_KINDS = (("mta", "hash:ip"), ("allow", "hash:net"), ("subs", "hash:net"))


def _static_sets(fam: FamilySets) -> list[tuple[str, str, list[str]]]:
    """(name, type, entry texts) of one family's static sets."""
    v = fam.version
    entries = {
        "mta": [format_address(v, a) for a in fam.mta],
        "allow": [prefix_text(p) + (" nomatch" if nm else "") for p, nm in fam.allow],
        "subs": fam.subs.texts(),
    }
    return [(set_name(kind, v), settype, entries[kind]) for kind, settype in _STATIC_KINDS]


def render_load(contents: SetContents, skip: Collection[str] = ()) -> str:
    """Phase 1 of a replace: create and fill every ``-tmp`` set. Touches no live set.

    Sets named in ``skip`` are left out (their live contents are already right).
    """
    return "".join(render_load_family(fam, skip) for fam in (contents.v4, contents.v6))


def render_load_family(fam: FamilySets, skip: Collection[str] = ()) -> str:
    """``render_load`` for one family's sets."""
    out: list[str] = []
    for name, settype, entries in _static_sets(fam):
        if name in skip:
            continue
        tmp = name + TMP_SUFFIX
        out.append(_create_line(tmp, settype, fam.version, len(entries)))
        if entries:  # one join, not an f-string per entry (~0.1 s per 500k entries)
            add = f"add {tmp} "
            out.append(add + f"\n{add}".join(entries) + "\n")
    return "".join(out)


def render_swap(
    contents: SetContents,
    existing: Iterable[str],
    destroy: bool = True,
    skip: Collection[str] = (),
) -> str:
    """Phase 2: create missing live sets, swap the temporaries in, destroy them.

    Swap exchanges the sets whole (entries and sizes) and keeps iptables references
    valid, so a live set is never empty or half loaded. The verdict cache is created if
    missing but not flushed here: the daemon invalidates it by rotation after a reload
    (a source blocked under the old policy may be exempt under the new one). Sets in
    ``skip`` (not loaded by ``render_load``) are not swapped.
    """
    return render_swap_names(
        contents.block_timeout, existing, destroy, skip, block_maxelem=contents.block_maxelem
    )


def render_swap_names(
    block_timeout: int,
    existing: Iterable[str],
    destroy: bool = True,
    skip: Collection[str] = (),
    *,
    block_maxelem: int = DEFAULT_BLOCK_MAXELEM,
) -> str:
    """``render_swap`` from what it needs besides the set names: no entry is rendered
    (at 1M prefixes rendering them again cost ~0.6 s of an install)."""
    have = set(existing)
    out: list[str] = []
    for v in (4, 6):
        for kind, settype in _STATIC_KINDS:
            name = set_name(kind, v)
            if name in skip:
                continue
            if name not in have:
                out.append(_create_line(name, settype, v, 0))
            out.append(f"swap {name}{TMP_SUFFIX} {name}\n")
            if destroy:
                out.append(f"destroy {name}{TMP_SUFFIX}\n")
        block = set_name("block", v)
        # An existing cache is left alone: the daemon rotates it right after a reload
        # (op25b.kernel.blockcache), reading its counters first so no count is lost.
        if block_timeout > 0 and block not in have:
            out.append(block_set_line(block, v, block_timeout, maxelem=block_maxelem))
    return "".join(out)


# A set is edited in place instead of replaced when it is big and the change is small:
# replacing a 1M-entry set costs loading 1M entries and draining 1M old ones (~20 s of
# a reload, measured), editing it costs the difference.
_EDIT_ABOVE = 50_000
_EDIT_FRACTION = 4  # at most 1/4 of the entries change


def plan_changes(
    contents: SetContents, previous: SetContents | None, existing: Collection[str]
) -> tuple[set[str], str]:
    """(sets needing no load, the in-place edit text) for a reload from ``previous``.

    A set whose entries are unchanged is left alone. The ``subs`` set (plain hash:net,
    no ``nomatch``), when big and changed a little, is edited in place: additions
    first, then deletions, so a source whose prefix moves between plans is a
    subscriber throughout. Every other changed set is replaced whole (tmp + swap).
    Compared as packed ints, not text: ~0.1 s for two 1M-entry sets.
    """
    if previous is None:
        return set(), ""
    skip: set[str] = set()
    edits: list[str] = []
    for new, old in ((contents.v4, previous.v4), (contents.v6, previous.v6)):
        v = new.version
        for kind, same in (("mta", new.mta == old.mta), ("allow", new.allow == old.allow)):
            if same and set_name(kind, v) in existing:
                skip.add(set_name(kind, v))
        name = set_name("subs", v)
        if name not in existing:
            continue
        if new.subs == old.subs:
            skip.add(name)
            continue
        size = len(old.subs)
        if size < _EDIT_ABOVE or len(new.subs) > _sizes(size)[1]:
            continue
        new_keys, old_keys = set(new.subs.keys), set(old.subs.keys)
        added, gone = sorted(new_keys - old_keys), sorted(old_keys - new_keys)
        if (len(added) + len(gone)) * _EDIT_FRACTION > size:
            continue
        skip.add(name)
        edits += [f"add {name} {e}\n" for e in SubsKeys(v, added).texts()]
        edits += [f"del {name} {e}\n" for e in SubsKeys(v, gone).texts()]
    return skip, "".join(edits)


# ---------------------------------------------------------------- kernel operations


def list_sets(cmd_prefix: Sequence[str] = ()) -> list[str]:
    """Names of all sets in the namespace (``ipset list -n``)."""
    return run_command(["ipset", "list", "-n"], cmd_prefix).split()


def destroy_sets(names: Iterable[str], cmd_prefix: Sequence[str] = ()) -> None:
    """Destroy the named sets that exist; the names must be op25b's own."""
    have = set(list_sets(cmd_prefix))
    todo = [n for n in names if n in have]
    for n in todo:
        if not n.startswith(SET_PREFIX):  # never someone else's set, whatever the caller says
            raise ValueError(f"refusing to destroy a set op25b does not own: {n!r}")
    if todo:
        run_command(["ipset", "restore"], cmd_prefix, "".join(f"destroy {n}\n" for n in todo))


def apply_sets(
    contents: SetContents,
    cmd_prefix: Sequence[str] = (),
    gentle: bool = False,
    previous: SetContents | None = None,
) -> None:
    """Load ``contents`` atomically per set (tmp set + swap); creates missing sets.

    Leftover temporaries of a crashed run are destroyed first. If loading fails no
    live set has changed; the temporaries are destroyed and RulesError raised.
    ``gentle`` (reloads) drains the replaced big sets in batches before destroying them.
    ``previous`` (what the live sets hold now) lets unchanged sets stay as they are and
    a big ``subs`` set be edited in place (``plan_changes``).
    """
    skip, edits = load_sets(contents, cmd_prefix, previous)
    if edits:
        run_command(["ipset", "restore", "-exist"], cmd_prefix, edits)
    swap_sets(contents.block_timeout, cmd_prefix, gentle, skip, contents.block_maxelem)


def load_sets(
    contents: SetContents, cmd_prefix: Sequence[str] = (), previous: SetContents | None = None
) -> tuple[set[str], str]:
    """Phase 1 alone: fill the ``-tmp`` sets (no live set changes); ``plan_changes``'s
    (skipped sets, in-place edits) for ``swap_sets``.

    Leftover temporaries of a crashed run are destroyed first; on a failure the
    temporaries are destroyed and RulesError raised.
    """
    discard_loaded(cmd_prefix)
    skip, edits = plan_changes(contents, previous, list_sets(cmd_prefix))
    _load_families((contents.v4, contents.v6), skip, cmd_prefix)
    return skip, edits


def load_families(families: Iterable[FamilySets], cmd_prefix: Sequence[str] = ()) -> None:
    """``load_sets`` of a whole install, each family's restore begun as soon as the
    family is there: a generator computing the v6 contents does so while the v4
    restore runs (~0.4 s at 1M prefixes)."""
    discard_loaded(cmd_prefix)
    _load_families(families, (), cmd_prefix)


def swap_sets(
    block_timeout: int,
    cmd_prefix: Sequence[str] = (),
    gentle: bool = False,
    skip: Collection[str] = (),
    block_maxelem: int = DEFAULT_BLOCK_MAXELEM,
) -> None:
    """Phase 2 alone: swap the loaded temporaries in (``render_swap_names``)."""
    swap = render_swap_names(
        block_timeout, list_sets(cmd_prefix), not gentle, skip, block_maxelem=block_maxelem
    )
    if swap:
        run_command(["ipset", "restore"], cmd_prefix, swap)
    if gentle:
        for tmp in (n for n in all_set_names() if n.endswith(TMP_SUFFIX)):
            drain_and_destroy(tmp, cmd_prefix)


def discard_loaded(cmd_prefix: Sequence[str] = ()) -> None:
    """Destroy the temporaries ``load_sets`` filled (a start refused before the swap)."""
    destroy_sets([n for n in all_set_names() if n.endswith(TMP_SUFFIX)], cmd_prefix)


def _load_families(
    families: Iterable[FamilySets], skip: Collection[str], cmd_prefix: Sequence[str]
) -> None:
    """Fill the v4 and v6 temporaries with two concurrent ``ipset restore`` runs.

    The v6 text is rendered while the v4 restore parses and loads (the tool's own
    parsing is ~40% of a load's CPU, measured at 1M entries), so on two cores the
    phase costs about its larger half. On a failure the temporaries are destroyed and
    the error raised.
    """
    futures = []
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for fam in families:
                text = render_load_family(fam, skip)
                if text:
                    futures.append(pool.submit(run_command, ["ipset", "restore"], cmd_prefix, text))
        for future in futures:
            future.result()  # the first failure
    except BaseException:
        with suppress(RulesError):  # the first failure is the one told
            discard_loaded(cmd_prefix)
        raise


# A big set destroyed at once is freed by the kernel in RCU callbacks, a burst of
# softirq work that stalled packet processing for ~90 ms at 1M entries (measured in
# bench/). Deleting the old entries in small batches first spreads that out.
_DRAIN_BATCH = 20_000
_DRAIN_PAUSE = 0.02
_DRAIN_ABOVE = 50_000


def drain_and_destroy(name: str, cmd_prefix: Sequence[str] = ()) -> None:
    """Destroy an op25b set, emptying a large one in small batches first."""
    if not name.startswith(SET_PREFIX):
        raise ValueError(f"refusing to destroy a set op25b does not own: {name!r}")
    if name not in list_sets(cmd_prefix):
        return
    saved = run_command(["ipset", "save", name], cmd_prefix).splitlines()
    dels = [f"del {name} {line.split()[2]}\n" for line in saved if line.startswith("add ")]
    if len(dels) > _DRAIN_ABOVE:
        for i in range(0, len(dels), _DRAIN_BATCH):
            batch = "".join(dels[i : i + _DRAIN_BATCH])
            run_command(["ipset", "restore", "-exist"], cmd_prefix, batch)
            time.sleep(_DRAIN_PAUSE)  # let the RCU frees of this batch run before the next
    run_command(["ipset", "destroy", name], cmd_prefix)
