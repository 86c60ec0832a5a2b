"""The names op25b owns in the kernel: its chain, its mark bits, its ipsets.

Everything op25b installs is recognisable by these, so it can verify, repair and
remove exactly its own state and never someone else's.
"""

from __future__ import annotations

CHAIN = "OP25B"
COMMENT = "-m comment --comment op25b"
# op25b owns one nibble of the packet mark. Bits 20-23 are clear of the low bits that
# policy routing, tc and most distributions' scripts use, and of the high byte that
# Kubernetes/Calico-style tooling claims (0x4000/0x8000, 0xffff0000 regions vary; pick
# another nibble here if a site clashes). Values: 0xa/0xb so an all-ones or "1"
# mark set by someone else's sloppy --set-mark is never mistaken for ours.
MARK_MASK = 0x00F00000
ACCEPT_MARK = 0x00A00000
REJECT_MARK = 0x00B00000
# The conntrack mark (same nibble) of a connection op25b let through: only packets of
# such connections skip the decision. 0xc, not 0xa: an admin's ``CONNMARK
# --restore-mark`` copies the connmark into the packet mark, and that copy must never
# read as a verdict.
TRUSTED_CONNMARK = 0x00C00000

# The one nft table op25b owns (family inet: v4 and v6 in one table). It clears op25b's
# mark nibble on entry to FORWARD; see ``op25b.kernel.nfttext`` for why nft and why there.
NFT_FAMILY = "inet"
NFT_TABLE = "op25b"


# The built-in chain each of op25b's tables jumps from. ``raw`` (before conntrack and
# routing) holds only the verdict cache's drop, and only while it is in use.
HOOK_OF = {"filter": "FORWARD", "mangle": "FORWARD", "raw": "PREROUTING"}

SET_PREFIX = "op25b-"
KINDS = ("mta", "allow", "subs", "block")
TMP_SUFFIX = "-tmp"


def verdict_mark(current: int, mark: int) -> int:
    """The mark a queue verdict sets: ``mark`` in op25b's nibble, other bits kept."""
    return (current & ~MARK_MASK & 0xFFFFFFFF) | mark


def set_name(kind: str, version: int) -> str:
    """``op25b-mta4`` and friends."""
    return f"{SET_PREFIX}{kind}{version}"


def all_set_names() -> tuple[str, ...]:
    """Every set name op25b may own, temporaries included (for cleanup)."""
    names = [set_name(k, v) for v in (4, 6) for k in KINDS]
    return (*names, *(n + TMP_SUFFIX for n in names))


def iptables_tool(version: int, suffix: str = "") -> str:
    """``iptables``/``ip6tables`` (+ ``-save``, ``-restore``) for IP version 4 or 6."""
    return ("iptables" if version == 4 else "ip6tables") + suffix
