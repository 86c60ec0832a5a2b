"""The link layers in front of IP in a capture: which bytes of a frame are the packet.

Owns the per-link-type framing ``op25b.report.pcapread`` hands over: Ethernet (1, with
any number of 802.1Q/802.1ad/QinQ tags), raw IP (101, and 228/229 for one version),
Linux cooked captures SLL (113) and SLL2 (276), BSD null/loopback (0, in the writer's
byte order; 108, in network order). ``ip_bytes`` reads only header fields it has
checked the frame holds, and answers None for a frame that carries no IP.
"""

from __future__ import annotations

import struct

__all__ = ["SUPPORTED_LINKS", "ip_bytes"]

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_IP_ETHERTYPES = frozenset((_ETHERTYPE_IPV4, _ETHERTYPE_IPV6))
# 802.1Q, 802.1ad (QinQ outer), and the pre-standard QinQ tag some switches still send.
_VLAN_ETHERTYPES = frozenset((0x8100, 0x88A8, 0x9100))
# BSD loopback address families: AF_INET everywhere; AF_INET6 is 24, 28 or 30 on the
# BSDs and macOS, 10 on Linux.
_AF_INET = 2
_AF_INET6 = frozenset((10, 24, 28, 30))

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKS = frozenset(
    (
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    )
)

_U16 = struct.Struct("!H")
_u16 = _U16.unpack_from
_U32_LE = struct.Struct("<I")


def _after_vlans(buf: bytes, ethertype: int, p: int, stop: int) -> bytes | None:
    """IP bytes after the tags at ``p`` (ethertype already read), or None."""
    while ethertype in _VLAN_ETHERTYPES:
        if stop - p < 4:
            return None
        (ethertype,) = _u16(buf, p + 2)
        p += 4
    return buf[p:stop] if ethertype in _IP_ETHERTYPES else None


def ip_bytes(linktype: int, buf: bytes, start: int, stop: int) -> bytes | None:
    """The IP packet inside one frame ``buf[start:stop]``, or None if it carries none."""
    if linktype == LINKTYPE_ETHERNET:
        if stop - start < 14:
            return None
        (ethertype,) = _u16(buf, start + 12)
        if ethertype in _IP_ETHERTYPES:  # the common case, without the loop
            return buf[start + 14 : stop]
        return _after_vlans(buf, ethertype, start + 14, stop)
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        # 101 may carry either version: the first nibble says which (parse checks it).
        if stop <= start or buf[start] >> 4 not in (4, 6):
            return None
        return buf[start:stop]
    if linktype == LINKTYPE_LINUX_SLL:
        if stop - start < 16:
            return None
        (proto,) = _u16(buf, start + 14)
        return _after_vlans(buf, proto, start + 16, stop)
    if linktype == LINKTYPE_LINUX_SLL2:
        if stop - start < 20:
            return None
        (proto,) = _u16(buf, start)
        return _after_vlans(buf, proto, start + 20, stop)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if stop - start < 4:
            return None
        (family,) = _U32_LE.unpack_from(buf, start)
        # NULL is in the writer's byte order, LOOP in network order: a family is a
        # small number, so a value above 0xFFFF was read in the wrong order.
        if linktype == LINKTYPE_LOOP or family > 0xFFFF:
            family = int.from_bytes(buf[start : start + 4], "big")
        if family == _AF_INET or family in _AF_INET6:
            return buf[start + 4 : stop]
        return None
    return None
