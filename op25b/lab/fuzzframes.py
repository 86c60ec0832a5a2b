"""Randomized and mutated TCP-to-port-25 frames for fuzzing the daemon through the queue.

This module owns the frame side of ``bench/fuzz_queue.py``: it builds Ethernet frames
with ``struct`` (scapy costs ~100 µs a packet; a million frames must be cheap) and sends
them from inside a lab namespace with an AF_PACKET socket at a bounded rate.

What a frame can be (``Fuzzer.frames`` picks one kind per call, seeded):

* ``tcp4`` / ``tcp6`` -- a TCP segment with random flags (all 256 values, plus the
  reserved/AE bits), random options (well-formed, bad lengths, unknown kinds, cut
  short), a random data offset now and then, a bad checksum now and then; IPv4 with
  random options (NOP, EOL, record route, timestamp, router alert, unknown ones);
  IPv6 behind an extension-header chain of 0-12 headers (hop-by-hop, routing,
  fragment, destination options, AH), past the parser's limit of 8 on purpose;
* ``mutated`` -- one of the above with 1-6 random bytes changed in the mutable
  fields (TOS/flow label, TTL, IPv4 flags and fragment offset, extension-header
  bodies, the whole TCP header and payload), checksums recomputed half of the time;
* ``truncated`` -- cut at a random byte, the IP length fixed to match (so the
  kernel's own length check passes and its TCP match sees the short segment) or
  left to claim more than there is;
* ``frag4`` / ``frag6`` -- the segment split into IP fragments: complete (in order or
  shuffled), one piece missing, overlapping pieces, or a first fragment too small
  to hold the TCP header.

The IP protocol, next-header bytes and addresses are never mutated: every frame stays
a TCP segment to port 25 by the kernel's reading (or a fragment of one), so what
reaches the far side from a blocked source is a real leak, not a fuzzed header that
made it some other protocol.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

GUARDED_PORT = 25
ETH_IPV4 = b"\x08\x00"
ETH_IPV6 = b"\x86\xdd"
# Extension header numbers this module chains (never 59/no-next-header or unknown
# types: those would not be TCP for any stack, see the module docstring).
HOP, ROUTING, FRAGMENT, DSTOPTS, AUTH = 0, 43, 44, 60, 51
# Never mutated: version/IHL, lengths, protocol or next header, header checksum, addresses.
_FIXED4 = frozenset((0, 2, 3, 9, 10, 11, *range(12, 20)))
_FIXED6 = frozenset((0, 4, 5, 6, *range(8, 40)))
KINDS: tuple[tuple[str, int], ...] = (
    ("tcp4", 25),
    ("tcp6", 25),
    ("mutated", 25),
    ("truncated", 9),
    ("frag4", 4),
    ("frag6", 4),
)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@dataclass(frozen=True)
class Sources:
    """Address pools (packed) the fuzzer sends from, and the destinations it sends to."""

    v4: tuple[bytes, ...]
    v6: tuple[bytes, ...]
    dst4: tuple[bytes, ...]
    dst6: tuple[bytes, ...]

    @classmethod
    def from_text(
        cls, v4: Sequence[str], v6: Sequence[str], dst4: Sequence[str], dst6: Sequence[str]
    ) -> Sources:
        """Pools from address strings."""

        def pack(family: socket.AddressFamily, items: Sequence[str]) -> tuple[bytes, ...]:
            return tuple(socket.inet_pton(family, a) for a in items)

        af4, af6 = socket.AF_INET, socket.AF_INET6
        return cls(pack(af4, v4), pack(af6, v6), pack(af4, dst4), pack(af6, dst6))


class Fuzzer:
    """Builds IP packets (no link layer) from a seeded generator; see the module docstring."""

    def __init__(self, sources: Sources, seed: int) -> None:
        self.src = sources
        self.rng = random.Random(seed)
        self._ip_id = 0

    # -- TCP ---------------------------------------------------------------------------

    def _tcp_options(self) -> bytes:
        r = self.rng
        opts = b""
        for _ in range(r.randrange(0, 6)):
            pick = r.randrange(10)
            if pick == 0:
                opts += b"\x02\x04" + struct.pack("!H", r.randrange(65536))  # MSS
            elif pick == 1:
                opts += b"\x03\x03" + bytes([r.randrange(256)])  # window scale
            elif pick == 2:
                opts += b"\x04\x02"  # SACK permitted
            elif pick == 3:
                opts += b"\x08\x0a" + r.randbytes(8)  # timestamps
            elif pick == 4:
                opts += b"\x01"  # NOP
            elif pick == 5:
                opts += b"\x00"  # EOL (and whatever follows)
            elif pick == 6:
                n = r.randrange(1, 4)
                opts += bytes([5, 2 + 8 * n]) + r.randbytes(8 * n)  # SACK blocks
            else:  # unknown kind, any claimed length (0, 1 and past the end included)
                body = r.randbytes(r.randrange(0, 12))
                opts += bytes([r.randrange(9, 256), r.randrange(0, 40)]) + body
        return opts[:40]

    def tcp(self, src: bytes, dst: bytes, proto_pseudo: bytes) -> bytes:
        """A TCP segment to port 25; ``proto_pseudo`` is the pseudo-header less length."""
        r = self.rng
        opts = self._tcp_options()
        opts += b"\x00" * (-len(opts) % 4)
        doff = 5 + len(opts) // 4
        if r.random() < 0.05:
            doff = r.randrange(16)  # a lie, either way
        flags = r.randrange(256) if r.random() < 0.7 else 0x02
        payload = r.randbytes(r.randrange(0, 48)) if r.random() < 0.3 else b""
        head = struct.pack(
            "!HHIIBBHHH",
            r.randrange(1024, 65536),
            GUARDED_PORT,
            r.getrandbits(32),
            r.getrandbits(32),
            (doff << 4) | r.choice((0, 0, 0, 1, r.randrange(16))),
            flags,
            r.randrange(65536),
            0,
            r.randrange(65536) if flags & 0x20 else 0,
        )
        seg = head + opts + payload
        pseudo = proto_pseudo + struct.pack("!I", len(seg))
        csum = checksum(pseudo + seg)
        if r.random() < 0.1:
            csum ^= 1 + r.randrange(0xFFFF)
        return seg[:16] + struct.pack("!H", csum) + seg[18:]

    # -- IPv4 ----------------------------------------------------------------------------

    def _ip4_options(self) -> bytes:
        r = self.rng
        pick = r.randrange(6)
        if pick == 0:
            opts = b"\x01" * r.randrange(1, 4) + b"\x00"  # NOPs, EOL
        elif pick == 1:
            opts = b"\x07\x0b\x04" + b"\0" * 8  # record route, two free slots
        elif pick == 2:
            opts = b"\x44\x0c\x05\x00" + b"\0" * 8  # timestamp, room for two
        elif pick == 3:
            opts = b"\x94\x04\x00\x00"  # router alert
        elif pick == 4:
            n = r.randrange(0, 10)
            opts = bytes([r.choice((0x19, 0x1E, 0x5E, 0x9E)), 2 + n]) + r.randbytes(n)
        else:
            opts = r.randbytes(r.randrange(1, 12))  # garbage (the kernel drops most)
        return (opts + b"\x00" * (-len(opts) % 4))[:40]

    def ip4(self, payload: bytes, src: bytes, dst: bytes, frag: int = 0, ip_id: int = 0) -> bytes:
        """An IPv4 header (valid checksum) around ``payload``; ``frag`` = flags|offset."""
        r = self.rng
        opts = self._ip4_options() if r.random() < 0.15 else b""
        ihl = 5 + len(opts) // 4
        head = struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            r.randrange(256) if r.random() < 0.2 else 0,
            ihl * 4 + len(payload),
            ip_id or r.randrange(65536),
            frag or (0x4000 if r.random() < 0.8 else 0),
            r.randrange(2, 256),
            6,
            0,
            src,
            dst,
        )
        head += opts
        return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + payload

    def tcp4(self) -> bytes:
        """One IPv4 TCP packet."""
        src, dst = self.rng.choice(self.src.v4), self.rng.choice(self.src.dst4)
        return self.ip4(self.tcp(src, dst, src + dst + b"\x00\x06"), src, dst)

    # -- IPv6 ----------------------------------------------------------------------------

    def _ext(self, kind: int, nxt: int) -> bytes:
        r = self.rng
        if kind == FRAGMENT:  # an atomic fragment: offset 0, M clear
            return struct.pack("!BBHI", nxt, 0, 0, r.getrandbits(32))
        if kind == AUTH:
            n = r.randrange(1, 4)  # payload length in 4-octet units minus 2
            return struct.pack("!BBH", nxt, n, 0) + r.randbytes(4 * (n + 2) - 4)
        units = r.randrange(0, 3)
        if kind == ROUTING:  # an unknown routing type with segments left 0: skipped
            body = bytes([r.choice((253, 254)), 0]) + r.randbytes(4 + 8 * units)
        else:  # hop-by-hop / destination options: PadN filling the header
            body = b"\x01" + bytes([4 + 8 * units]) + b"\0" * (4 + 8 * units)
        return bytes([nxt, units]) + body

    def chain(self, count: int, last: int) -> tuple[int, bytes]:
        """``count`` extension headers ending in ``last``: (first next-header, bytes)."""
        r = self.rng
        kinds = [r.choice((ROUTING, DSTOPTS, DSTOPTS, AUTH, FRAGMENT)) for _ in range(count)]
        if kinds and r.random() < 0.5:
            kinds[0] = HOP  # hop-by-hop belongs first; elsewhere only netfilter walks it
        out = b""
        nxt = last
        for kind in reversed(kinds):
            out = self._ext(kind, nxt) + out
            nxt = kind
        return nxt, out

    def ip6(self, first: int, payload: bytes, src: bytes, dst: bytes) -> bytes:
        """An IPv6 header around an already chained ``payload``."""
        r = self.rng
        vtf = (6 << 28) | (r.getrandbits(28) if r.random() < 0.2 else 0)
        return (
            struct.pack("!IHBB16s16s", vtf, len(payload), first, r.randrange(2, 256), src, dst)
            + payload
        )

    def tcp6(self) -> bytes:
        """One IPv6 TCP packet behind 0-12 extension headers."""
        r = self.rng
        src, dst = r.choice(self.src.v6), r.choice(self.src.dst6)
        n = r.choice((0, 0, 1, 2, 3)) if r.random() < 0.8 else r.randrange(4, 13)
        first, exts = self.chain(n, 6)
        seg = self.tcp(src, dst, src + dst + b"\x00\x00\x00\x06")
        return self.ip6(first, exts + seg, src, dst)

    # -- mutations, truncations, fragments ---------------------------------------------

    def mutated(self) -> bytes:
        """A packet with random bytes changed outside protocol, next-header and addresses."""
        r = self.rng
        v6 = r.random() < 0.5
        pkt = bytearray(self.tcp6() if v6 else self.tcp4())
        if v6:
            tcp_at, heads, _ = chain6(pkt)
            fixed = _FIXED6 | heads
        else:
            tcp_at, fixed = (pkt[0] & 0x0F) * 4, _FIXED4
        for _ in range(r.randrange(1, 7)):
            i = r.randrange(len(pkt))
            if i not in fixed:
                pkt[i] = r.randrange(256)
        if not v6:
            pkt[10:12] = b"\0\0"
            pkt[10:12] = struct.pack("!H", checksum(bytes(pkt[: (pkt[0] & 0x0F) * 4])))
        if r.random() < 0.5 and tcp_at + 18 <= len(pkt):
            src, dst = (
                (bytes(pkt[8:24]), bytes(pkt[24:40]))
                if v6
                else (bytes(pkt[12:16]), bytes(pkt[16:20]))
            )
            seg = bytearray(pkt[tcp_at:])
            seg[16:18] = b"\0\0"
            pseudo = src + dst + (b"\x00\x00\x00\x06" if v6 else b"\x00\x06")
            seg[16:18] = struct.pack(
                "!H", checksum(pseudo + struct.pack("!I", len(seg)) + bytes(seg))
            )
            pkt[tcp_at:] = seg
        return bytes(pkt)

    def truncated(self) -> bytes:
        """A packet cut short; its IP length field fixed to match 70% of the time."""
        r = self.rng
        pkt = bytearray(self.tcp6() if r.random() < 0.5 else self.tcp4())
        v6 = pkt[0] >> 4 == 6
        pkt = pkt[: r.randrange(21 if not v6 else 41, len(pkt))]
        if r.random() < 0.7:
            if v6:
                pkt[4:6] = struct.pack("!H", len(pkt) - 40)
            else:
                pkt[2:4] = struct.pack("!H", len(pkt))
                pkt[10:12] = b"\0\0"
                pkt[10:12] = struct.pack("!H", checksum(bytes(pkt[: (pkt[0] & 0x0F) * 4])))
        return bytes(pkt)

    def _pieces(self, size: int) -> list[tuple[int, int]]:
        """(offset, length) pieces of a ``size``-byte payload, 8-byte aligned except the last."""
        r = self.rng
        first = 8 if r.random() < 0.2 else 8 * r.randrange(1, max(2, size // 8))
        out, off = [], 0
        step = first
        while off < size:
            n = min(step, size - off)
            out.append((off, n))
            off += n
            step = 8 * r.randrange(1, 4)
        return out

    def _arrange(self, pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
        r = self.rng
        pick = r.randrange(4)
        if pick == 1:
            r.shuffle(pieces)
        elif pick == 2 and len(pieces) > 1:
            del pieces[r.randrange(len(pieces))]  # never completes
        elif pick == 3:
            off, n = r.choice(pieces)
            pieces.append((off, n))  # a duplicate (overlap), possibly other bytes
        return pieces

    def frag4(self) -> list[bytes]:
        """One IPv4 TCP segment as fragments (see the module docstring)."""
        r = self.rng
        src, dst = r.choice(self.src.v4), r.choice(self.src.dst4)
        seg = self.tcp(src, dst, src + dst + b"\x00\x06") + r.randbytes(r.randrange(8, 64))
        ip_id = r.randrange(1, 65536)
        pieces = self._pieces(len(seg))
        out = []
        for off, n in self._arrange(pieces):
            more = 0x2000 if off + n < len(seg) else 0
            body = seg[off : off + n] if r.random() < 0.9 else r.randbytes(n)
            out.append(self.ip4(body, src, dst, frag=more | (off // 8), ip_id=ip_id))
        return out

    def frag6(self) -> list[bytes]:
        """One IPv6 TCP segment (maybe behind a chain) as fragments."""
        r = self.rng
        src, dst = r.choice(self.src.v6), r.choice(self.src.dst6)
        seg = self.tcp(src, dst, src + dst + b"\x00\x00\x00\x06") + r.randbytes(r.randrange(8, 64))
        inner_first, inner = self.chain(r.randrange(0, 3), 6)
        fragmentable = inner + seg
        ident = r.getrandbits(32)
        out = []
        for off, n in self._arrange(self._pieces(len(fragmentable))):
            more = 1 if off + n < len(fragmentable) else 0
            fh = struct.pack("!BBHI", inner_first, 0, off | more, ident)
            out.append(self.ip6(FRAGMENT, fh + fragmentable[off : off + n], src, dst))
        return out

    def syn(self) -> bytes:
        """A plain SYN (no options, valid checksums) from the pools: for sprays, not fuzz."""
        r = self.rng
        v6 = bool(self.src.v6) and (not self.src.v4 or r.random() < 0.5)
        pool, dsts = (self.src.v6, self.src.dst6) if v6 else (self.src.v4, self.src.dst4)
        src, dst = r.choice(pool), r.choice(dsts)
        seg = struct.pack(
            "!HHIIBBHHH",
            r.randrange(1024, 65536),
            GUARDED_PORT,
            r.getrandbits(32),
            0,
            0x50,
            0x02,
            65535,
            0,
            0,
        )
        pseudo = src + dst + (b"\x00\x00\x00\x06" if v6 else b"\x00\x06")
        csum = checksum(pseudo + struct.pack("!I", len(seg)) + seg)
        seg = seg[:16] + struct.pack("!H", csum) + seg[18:]
        if v6:
            return struct.pack("!IHBB16s16s", 6 << 28, len(seg), 6, 64, src, dst) + seg
        head = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), r.randrange(65536), 0x4000, 64, 6, 0, src, dst
        )
        return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + seg

    def frames(self, plain: bool = False) -> tuple[str, list[bytes]]:
        """(kind, IP packets) for one draw; fragments come as several packets.

        ``plain``: a well-formed SYN every time (``syn``), for a spray of sources.
        """
        if plain:
            return "syn", [self.syn()]
        kind = self.rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
        if kind in ("frag4", "frag6"):
            return kind, self.frag4() if kind == "frag4" else self.frag6()
        return kind, [getattr(self, kind)()]


def chain6(pkt: bytes | bytearray) -> tuple[int, set[int], int | None]:
    """Walk an IPv6 packet's extension headers: (where the last header's body starts,
    the offsets of the next-header bytes, that last header or None if the packet ends
    inside the chain). A later fragment ends the walk: the rest is the middle of a
    datagram, not headers.
    """
    nxt, off = pkt[6], 40
    heads: set[int] = set()
    while nxt in (0, 43, 60, AUTH, FRAGMENT):
        if off + 4 > len(pkt):
            return off, heads, None
        heads.add(off)
        if nxt == FRAGMENT:
            if struct.unpack_from("!H", pkt, off + 2)[0] >> 3:
                return off, heads, FRAGMENT
            size = 8
        elif nxt == AUTH:
            size = (pkt[off + 1] + 2) * 4
        else:
            size = (pkt[off + 1] + 1) * 8
        nxt, off = pkt[off], off + size
    return off, heads, nxt


# -- sending (runs inside a lab namespace) ---------------------------------------------


def send(
    ifname: str,
    dmac: bytes,
    fuzzer: Fuzzer,
    count: int,
    rate: int,
    max_seconds: float,
    plain: bool = False,
) -> dict[str, object]:
    """Send about ``count`` packets at ``rate``/s (bounded by ``max_seconds``)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((ifname, 0))
    smac = sock.getsockname()[4]
    heads = {4: dmac + smac + ETH_IPV4, 6: dmac + smac + ETH_IPV6}
    kinds: Counter[str] = Counter()
    sent = errors = 0
    start = time.monotonic()
    deadline = start + max_seconds
    while sent < count:
        now = time.monotonic()
        if now >= deadline:
            break
        ahead = sent - (now - start) * rate
        if ahead > 0:
            time.sleep(ahead / rate)  # pacing: the budget is the point, not a wait for state
        for _ in range(64):
            kind, packets = fuzzer.frames(plain)
            kinds[kind] += len(packets)
            for pkt in packets:
                try:
                    sock.send(heads[pkt[0] >> 4] + pkt)
                    sent += 1
                except OSError:
                    errors += 1  # e.g. ENOBUFS: counted, and the kernel never saw it
    sock.close()
    return {
        "sent": sent,
        "send_errors": errors,
        "seconds": round(time.monotonic() - start, 3),
        "kinds": dict(kinds),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m op25b.lab.fuzzframes send ...`` (in a namespace); prints one JSON line."""
    p = argparse.ArgumentParser(prog="python -m op25b.lab.fuzzframes")
    p.add_argument("cmd", choices=["send"])
    p.add_argument("--ifname", default="eth0")
    p.add_argument("--dmac", required=True)
    p.add_argument("--src4", action="append", default=[])
    p.add_argument("--src6", action="append", default=[])
    p.add_argument("--dst4", action="append", default=[])
    p.add_argument("--dst6", action="append", default=[])
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=int, default=20000)
    p.add_argument("--max-seconds", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--plain", action="store_true", help="well-formed SYNs only (a spray)")
    a = p.parse_args(argv)
    sources = Sources.from_text(a.src4, a.src6, a.dst4, a.dst6)
    dmac = bytes.fromhex(a.dmac.replace(":", ""))
    fuzzer = Fuzzer(sources, a.seed)
    result = send(a.ifname, dmac, fuzzer, a.count, a.rate, a.max_seconds, a.plain)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
