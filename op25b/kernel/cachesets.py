"""The verdict cache's ipsets (``op25b-block4/6``): created, filled, read, rotated.

hash:ip with a timeout and per-entry packet counters; the daemon's side of the cache
(what is added when, exact accounting across rotations) is ``op25b.kernel.blockcache``,
the rules that drop cached sources are ``op25b.kernel.ruletext``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from op25b.kernel.commands import run_command
from op25b.kernel.names import set_name
from op25b.kernel.setcontents import DEFAULT_BLOCK_MAXELEM
from op25b.policy.addr import format_address, parse_address

MIN_HASHSIZE = 1024  # the smallest size ipset would pick anyway


def family_word(version: int) -> str:
    """ipset's name for an IP version's family."""
    return "inet" if version == 4 else "inet6"


def block_set_line(
    name: str,
    version: int,
    timeout: int,
    hashsize: int = MIN_HASHSIZE,
    maxelem: int = DEFAULT_BLOCK_MAXELEM,
) -> str:
    """The ``ipset restore`` line creating a verdict-cache set (hash:ip, counters)."""
    return (
        f"create {name} hash:ip family {family_word(version)} "
        f"hashsize {hashsize} maxelem {maxelem} timeout {timeout} counters\n"
    )


def block_add_line(version: int, addr: int, timeout: int) -> str:
    """The ``ipset restore`` line putting a source in the verdict cache for ``timeout`` s."""
    return f"add {set_name('block', version)} {format_address(version, addr)} timeout {timeout}\n"


def block_cache_add(
    entries: Sequence[tuple[int, int]], timeout: int, cmd_prefix: Sequence[str] = ()
) -> None:
    """Put blocked sources ``(version, address)`` in the verdict cache for ``timeout`` s."""
    text = "".join(block_add_line(v, a, timeout) for v, a in entries)
    if text:
        run_command(["ipset", "restore", "-exist"], cmd_prefix, text)


_ROTATE_SUFFIX = "-old"
_ROTATE_HASHSIZE = 4096


def block_cache_counts(
    cmd_prefix: Sequence[str] = (), suffix: str = ""
) -> dict[tuple[int, int], int]:
    """Packet counters of the verdict cache's entries, ``(version, address) -> packets``."""
    counts: dict[tuple[int, int], int] = {}
    for version in (4, 6):
        for entry in block_cache_read(version, cmd_prefix, set_name("block", version) + suffix):
            counts[(version, parse_address(entry.address)[1])] = entry.packets
    return counts


def block_cache_rotate(timeout: int, cmd_prefix: Sequence[str] = ()) -> dict[tuple[int, int], int]:
    """Swap empty verdict-cache sets in, return the old ones' final counters, destroy them.

    After the swap the kernel no longer counts on the old entries, so these counts
    are final: nothing is counted twice or lost (see ``op25b.kernel.blockcache``).
    """
    names = {v: set_name("block", v) for v in (4, 6)}
    olds = {v: n + _ROTATE_SUFFIX for v, n in names.items()}
    create = "".join(block_set_line(olds[v], v, timeout, hashsize=_ROTATE_HASHSIZE) for v in (4, 6))
    # -exist + flush: a leftover from a crashed daemon must not be swapped back in.
    flush = "".join(f"flush {olds[v]}\n" for v in (4, 6))
    swap = "".join(f"swap {olds[v]} {names[v]}\n" for v in (4, 6))
    run_command(["ipset", "restore", "-exist"], cmd_prefix, create + flush + swap)
    try:
        return block_cache_counts(cmd_prefix, _ROTATE_SUFFIX)
    finally:
        run_command(
            ["ipset", "restore"], cmd_prefix, "".join(f"destroy {olds[v]}\n" for v in (4, 6))
        )


@dataclass(frozen=True, slots=True)
class BlockEntry:
    """One verdict-cache entry: packets/bytes the kernel dropped for it without asking."""

    address: str
    timeout: int
    packets: int
    bytes: int


def parse_block_save(text: str) -> list[BlockEntry]:
    """Parse ``ipset save`` lines ``add SET ADDR timeout T packets P bytes B``."""
    out: list[BlockEntry] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or words[0] != "add":
            continue
        opts = dict(zip(words[3::2], words[4::2], strict=False))
        out.append(
            BlockEntry(
                words[2],
                int(opts.get("timeout", "0")),
                int(opts.get("packets", "0")),
                int(opts.get("bytes", "0")),
            )
        )
    return out


def block_cache_read(
    version: int, cmd_prefix: Sequence[str] = (), name: str | None = None
) -> list[BlockEntry]:
    """The verdict cache of one family (or the set ``name``) with its counters."""
    name = set_name("block", version) if name is None else name
    return parse_block_save(run_command(["ipset", "save", name], cmd_prefix))
