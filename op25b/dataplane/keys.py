"""One integer key per source for the data plane's dicts, IPv4 and IPv6 together.

An IPv4 address is its own key; an IPv6 key carries bit 128, which no address of
either family has, so ``0.0.0.0`` and ``::`` (or ``1.2.3.4`` and ``::1.2.3.4``) never
share a key. The per-source decision memo and the abuse aggregator both key this way.
"""

from __future__ import annotations

V6_KEY_BIT = 1 << 128


def source_key(version: int, address: int) -> int:
    """The dict key of an address (an IPv6 one may be pre-masked to its /N)."""
    return address if version == 4 else address | V6_KEY_BIT


def key_address(key: int) -> tuple[int, int]:
    """``(version, address)`` back from a key."""
    return (6, key ^ V6_KEY_BIT) if key & V6_KEY_BIT else (4, key)
