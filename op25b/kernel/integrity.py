"""What op25b's kernel state looks like, and what is wrong with it: pure, no kernel.

The firewall is shared: ``systemctl reload nftables`` (Debian's nftables.conf starts
with ``flush ruleset``), ``iptables -F``, a restore without ``--noflush``,
``netfilter-persistent reload`` or an ``ipset destroy`` can remove or move op25b's
rules while the daemon runs on. The daemon therefore takes a ``KernelState`` right
after it installs (the *expected* state, in the kernel's own canonical
``iptables-save`` form, so no text normalisation is needed) and compares a fresh
one against it every few seconds (``problems``); anything missing, moved or changed
is repaired at once.

What is compared, per family and table: the ``OP25B`` chain exists and its rules are
exactly the installed ones; the jumps to it are present, unchanged and first in
FORWARD. Per set: it exists, and a static set (mta/allow/subs) still holds the number
of entries it was loaded with and, up to ``DIGEST_MAX`` entries, the very same entries
(a digest of its members): a count alone missed ``ipset del`` + ``ipset add`` of one
prefix each, which made a bot "not a subscriber" for good while every check and
``op25b rules status`` said OK. The verdict cache changes by itself: presence only.
And op25b's nft table (``op25b.kernel.nfttext``, clearing op25b's mark bits on
entry) is there with exactly its installed statements.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise

from op25b.kernel.names import CHAIN, HOOK_OF, KINDS, NFT_FAMILY, NFT_TABLE, iptables_tool, set_name

# The verdict cache changes by itself: only its presence is checked.
VOLATILE_SETS = frozenset(set_name("block", v) for v in (4, 6))
# The sets op25b keeps. Others with its prefix are transient (a reload's "-tmp" sets,
# a cache rotation's "-old" ones): a state taken while they exist must not expect
# them later (found by bench/soak.py: an expected "op25b-block4-old" made every
# later check "repair" and fail, once a second, for good).
PERMANENT_SETS = frozenset(set_name(k, v) for k in KINDS for v in (4, 6))
# The sets whose members are compared (a digest), not only counted.
DIGESTED_SETS = PERMANENT_SETS - VOLATILE_SETS
# Above this many entries a set is only counted: reading and hashing it every check
# costs too much (measured, bench/README.md "rule watchdog": ~27 ms a check at 16,384
# entries, ~95 ms at 65,536, a 1M-prefix subs set far more); mta/allow sets and most
# subs sets are far below it. An empty set needs no digest: any add changes its count.
DIGEST_MAX = 16384


@dataclass(frozen=True)
class TableState:
    """op25b's part of one table of one family."""

    has_chain: bool
    body: tuple[str, ...]  # the chain's rules, as iptables-save prints them
    jumps: tuple[str, ...]  # FORWARD rules jumping to the chain, in order
    jumps_first: bool  # the jumps are FORWARD's first rules


@dataclass(frozen=True)
class KernelState:
    """op25b's rules and sets as found in one network namespace."""

    tables: Mapping[tuple[int, str], TableState]  # (4|6, "filter"|"mangle")
    sets: Mapping[str, int]  # op25b's set name -> number of entries
    nft: tuple[str, ...] = ()  # op25b's nft table's statements (nfttext.parse_table)
    # set name -> digest of its members (``member_digest``), for DIGESTED_SETS up to
    # DIGEST_MAX entries
    contents: Mapping[str, str] = field(default_factory=dict)

    @property
    def installed(self) -> bool:
        """True when anything of op25b's is in the kernel."""
        return (
            bool(self.sets)
            or bool(self.nft)
            or any(t.has_chain or t.jumps for t in self.tables.values())
        )


def parse_table(saved: str, hook: str = "FORWARD") -> TableState:
    """op25b's part of one table from ``iptables-save -t TABLE`` output.

    ``hook`` is the built-in chain the table's jumps live in (``names.HOOK_OF``).
    """
    body: list[str] = []
    forward: list[str] = []
    has_chain = False
    for line in saved.splitlines():
        if line.startswith(f":{CHAIN} "):
            has_chain = True
        elif line.startswith(f"-A {CHAIN} "):
            body.append(line[len(f"-A {CHAIN} ") :])
        elif line.startswith(f"-A {hook} "):
            forward.append(line[len(f"-A {hook} ") :])
    marks = [_jumps_to_chain(rule) for rule in forward]
    jumps = tuple(rule for rule, ours in zip(forward, marks, strict=True) if ours)
    first = all(marks[: len(jumps)])
    return TableState(has_chain, tuple(body), jumps, first)


def _jumps_to_chain(rule: str) -> bool:
    words = rule.split()
    return any(w in ("-j", "-g") and n == CHAIN for w, n in pairwise(words))


def parse_set_headers(listing: str) -> dict[str, int]:
    """``ipset list -t`` output -> {set name: number of entries}."""
    out: dict[str, int] = {}
    name = ""
    for line in listing.splitlines():
        if line.startswith("Name:"):
            name = line.split(":", 1)[1].strip()
            out[name] = 0
        elif line.startswith("Number of entries:") and name:
            try:
                out[name] = int(line.split(":", 1)[1])
            except ValueError:
                out[name] = -1
    return out


def member_digest(saved: str, name: str) -> str:
    """A digest of set ``name``'s members in ``ipset save`` output, whatever their order.

    The kernel lists a hash set in bucket order, which differs between two loads of
    the same members, so the ``add`` lines are sorted first.
    """
    head = f"add {name} "
    members = sorted(line for line in saved.splitlines() if line.startswith(head))
    return hashlib.sha256("\n".join(members).encode()).hexdigest()


def problems(
    expected: KernelState, actual: KernelState, volatile_sets: frozenset[str] = frozenset()
) -> list[str]:
    """What differs, one readable line each; empty when op25b's state is intact.

    ``volatile_sets`` change by themselves (the verdict cache): only their presence
    counts.
    """
    out: list[str] = []
    for (version, table), want in sorted(expected.tables.items()):
        have = actual.tables.get((version, table), TableState(False, (), (), True))
        where = f"{iptables_tool(version)} {table}"
        hook = HOOK_OF.get(table, "FORWARD")
        if want.has_chain and not have.has_chain:
            out.append(f"{where}: chain {CHAIN} is missing")
        elif have.body != want.body:
            out.append(
                f"{where}: chain {CHAIN} changed ({len(have.body)} rules,"
                f" {len(want.body)} installed)"
            )
        if want.jumps and not have.jumps:
            out.append(f"{where}: the {hook} jump to {CHAIN} is missing")
        elif have.jumps != want.jumps:
            out.append(f"{where}: the {hook} jumps to {CHAIN} changed")
        elif not have.jumps_first:
            out.append(f"{where}: the {hook} jump to {CHAIN} is no longer first")
    out += _nft_problems(expected.nft, actual.nft)
    for name, count in sorted(expected.sets.items()):
        if name not in PERMANENT_SETS:
            continue
        if name not in actual.sets:
            out.append(f"ipset {name} is missing")
        elif name not in volatile_sets and actual.sets[name] != count:
            out.append(f"ipset {name} holds {actual.sets[name]} entries, {count} were loaded")
        elif name in expected.contents and actual.contents.get(name) != expected.contents[name]:
            out.append(f"ipset {name} holds other entries than were loaded ({count} entries)")
    return out


_NFT = f"nft table {NFT_FAMILY} {NFT_TABLE}"


def _nft_problems(want: tuple[str, ...], have: tuple[str, ...]) -> list[str]:
    if want and not have:
        return [f"{_NFT} is missing"]
    if have != want:
        return [f"{_NFT} changed"]
    return []


# -- the daemon's record of what it installed, for `op25b rules status` ----------------

STATE_DIR = "/run/op25b"


def state_file(directory: str = STATE_DIR) -> str:
    """Where the daemon of *this* network namespace records its installed state.

    /run is shared by every namespace of the machine, so the file is named after the
    namespace's inode (what ``ip netns identify`` compares).
    """
    return os.path.join(directory, f"kernel-state-{os.stat('/proc/self/ns/net').st_ino}.json")


def to_json(state: KernelState) -> dict[str, object]:
    """A JSON-ready form of a state (round-trips through ``from_json``)."""
    return {
        "tables": [
            {
                "family": v,
                "table": t,
                "has_chain": s.has_chain,
                "body": list(s.body),
                "jumps": list(s.jumps),
                "jumps_first": s.jumps_first,
            }
            for (v, t), s in sorted(state.tables.items())
        ],
        "sets": dict(sorted(state.sets.items())),
        "nft": list(state.nft),
        "contents": dict(sorted(state.contents.items())),
    }


def from_json(doc: dict[str, object]) -> KernelState:
    """The inverse of ``to_json``; ValueError on a malformed document."""
    try:
        tables = {
            (int(t["family"]), str(t["table"])): TableState(
                bool(t["has_chain"]),
                tuple(map(str, t["body"])),
                tuple(map(str, t["jumps"])),
                bool(t["jumps_first"]),
            )
            for t in doc["tables"]  # type: ignore[attr-defined]
        }
        sets = {str(k): int(v) for k, v in doc["sets"].items()}  # type: ignore[attr-defined]
        nft = tuple(map(str, doc.get("nft", [])))  # type: ignore[call-overload]
        contents = {str(k): str(v) for k, v in doc.get("contents", {}).items()}  # type: ignore[attr-defined]
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"malformed kernel state record: {e}") from None
    return KernelState(tables, sets, nft, contents)


def structural_problems(actual: KernelState, block_cache: bool = False) -> list[str]:
    """What is wrong without a record of the install: chains, first jumps, sets present."""
    out: list[str] = []
    for version in (4, 6):
        for table in ("filter", "mangle"):
            have = actual.tables.get((version, table), TableState(False, (), (), True))
            where = f"{iptables_tool(version)} {table}"
            if not have.has_chain:
                out.append(f"{where}: chain {CHAIN} is missing")
            elif not have.body:
                out.append(f"{where}: chain {CHAIN} is empty")
            if not have.jumps:
                out.append(f"{where}: the FORWARD jump to {CHAIN} is missing")
            elif not have.jumps_first:
                out.append(f"{where}: the FORWARD jump to {CHAIN} is no longer first")
        for kind in KINDS:
            if kind == "block" and not block_cache:
                continue
            if set_name(kind, version) not in actual.sets:
                out.append(f"ipset {set_name(kind, version)} is missing")
    if not actual.nft:
        out.append(f"{_NFT} is missing")
    return out
