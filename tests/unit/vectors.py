"""Golden packet vectors for the ``op25b.dataplane.packet`` tests.

Two sources, on purpose:

* ``LITERAL_VECTORS`` -- bytes generated once with scapy 2.8 and pasted in as hex, so
  the parser is pinned down even where scapy is not installed (it is an optional
  extra) and cannot drift if a scapy release changes its defaults.
* ``scapy_vectors()`` -- built with scapy at test time, covering the variants (IP
  options, TCP options, extension-header chains, fragments, bad length fields) that
  are easier to read as scapy expressions than as hex.

Every vector carries either the exact ``Packet`` expected or a substring of the
``PacketError`` reason. Valid vectors also record where the TCP header starts, so
the truncation test knows the shortest prefix that must parse
(``tcp_offset + TCP_BYTES_NEEDED``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from op25b.dataplane.packet import TCP_BYTES_NEEDED, Packet

SYN, FIN, RST, PSH, ACK, ECE, CWR = 0x02, 0x01, 0x04, 0x08, 0x10, 0x40, 0x80


@dataclass(frozen=True)
class Vector:
    """One input and what ``parse()`` must make of it."""

    name: str
    data: bytes
    expected: Packet | None = None  # exact result for valid vectors
    error: str | None = None  # substring of the PacketError reason for invalid ones
    tcp_offset: int = -1  # valid vectors: offset of the TCP header in ``data``

    @property
    def min_len(self) -> int:
        """Shortest prefix of ``data`` that must still parse to ``expected``."""
        return self.tcp_offset + TCP_BYTES_NEEDED


def pkt(src: str, dst: str, sport: int, dport: int, flags: int) -> Packet:
    """The expected Packet, from address text (ipaddress is fine off the hot path)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    return Packet(s.version, int(s), int(d), sport, dport, flags)


def ok(name: str, data: bytes, expected: Packet, tcp_offset: int) -> Vector:
    """A vector that must parse to ``expected``."""
    return Vector(name, data, expected=expected, tcp_offset=tcp_offset)


def bad(name: str, data: bytes, error: str) -> Vector:
    """A vector that must raise PacketError whose reason contains ``error``."""
    return Vector(name, data, error=error)


def _hex(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts))


# Generated with scapy 2.8.0; the comment above each is the scapy expression.
LITERAL_VECTORS: tuple[Vector, ...] = (
    # IP(src='100.64.0.10',dst='192.0.2.25',id=1)
    #   /TCP(sport=40000,dport=25,seq=1000,flags='S',window=64240)
    ok(
        "lit_v4_syn",
        _hex(
            "45000028000100004006546c6440000ac00002199c400019000003e8000000005002faf0",
            "ee4c0000",
        ),
        pkt("100.64.0.10", "192.0.2.25", 40000, 25, SYN),
        20,
    ),
    # IP(src='100.64.0.66',dst='192.0.2.25',id=2,
    #    options=[IPOption_RR(routers=['0.0.0.0']*2),IPOption_NOP()])
    #   /TCP(sport=51515,dport=25,seq=7,flags='S',options=[('MSS',1460),('SAckOK',b''),
    #        ('Timestamp',(1,0)),('NOP',None),('WScale',7)])
    ok(
        "lit_v4_ip_and_tcp_options_syn",
        _hex(
            "48000048000200004006460764400042c0000219070b04000000000000000001c93b0019",
            "0000000700000000a002200038080000020405b40402080a000000010000000001030307",
        ),
        pkt("100.64.0.66", "192.0.2.25", 51515, 25, SYN),
        32,
    ),
    # IP(src='198.51.100.10',dst='203.0.113.25',id=3,flags='MF')
    #   /TCP(sport=33000,dport=587,flags='PA',seq=5,ack=9)/Raw(b'EHLO x\r\n')
    ok(
        "lit_v4_first_fragment_psh_ack",
        _hex(
            "45000030000320004006f46dc633640acb00711980e8024b000000050000000950182000",
            "e711000045484c4f20780d0a",
        ),
        pkt("198.51.100.10", "203.0.113.25", 33000, 587, PSH | ACK),
        20,
    ),
    # IPv6(src='2001:db8:100::10',dst='2001:db8::25')
    #   /TCP(sport=40000,dport=25,seq=1000,flags='S')
    ok(
        "lit_v6_syn",
        _hex(
            "600000000014064020010db801000000000000000000001020010db80000000000000000",
            "000000259c400019000003e8000000005002200092fa0000",
        ),
        pkt("2001:db8:100::10", "2001:db8::25", 40000, 25, SYN),
        40,
    ),
    # IPv6(src='2001:db8:100::66',dst='2001:db8::25')/IPv6ExtHdrHopByHop()
    #   /IPv6ExtHdrDestOpt(options=[PadN(optdata=b'\0'*4)])
    #   /TCP(sport=40001,dport=25,flags='SEC')
    ok(
        "lit_v6_hbh_dstopt_syn_ece_cwr",
        _hex(
            "600000000024004020010db801000000000000000000006620010db80000000000000000",
            "000000253c0001040000000006000104000000009c410019000000000000000050c22000",
            "95cb0000",
        ),
        pkt("2001:db8:100::66", "2001:db8::25", 40001, 25, SYN | ECE | CWR),
        56,
    ),
    # IPv6(src='2001:db8:b00::10',dst='2001:db8:25::25')
    #   /IPv6ExtHdrFragment(offset=0,m=1,id=77)
    #   /AH(nh=6,payloadlen=4,spi=0x100,seq=1,icv=b'\x11'*12)/TCP(sport=1025,dport=25,flags='FA')
    ok(
        "lit_v6_first_fragment_ah_fin_ack",
        _hex(
            "6000000000342c4020010db80b000000000000000000001020010db80025000000000000",
            "00000025330000010000004d060400000000010000000001111111111111111111111111",
            "0401001900000000000000005011200000000000",
        ),
        pkt("2001:db8:b00::10", "2001:db8:25::25", 1025, 25, FIN | ACK),
        72,
    ),
    # IP(src='100.64.0.10',dst='192.0.2.53',id=4)/UDP(sport=5353,dport=53)
    bad(
        "lit_v4_udp",
        _hex("4500001c000400004011544e6440000ac000023514e900350008c440"),
        "not TCP: protocol 17",
    ),
    # IP(src='100.64.0.10',dst='192.0.2.25',id=5,frag=3,proto=6)/Raw(b'\0'*16)
    bad(
        "lit_v4_second_fragment",
        _hex("4500002400050003400654696440000ac000021900000000000000000000000000000000"),
        "IPv4 non-first fragment: offset 24",
    ),
    # IPv6(src='2001:db8:100::10',dst='2001:db8::25')
    #   /IPv6ExtHdrFragment(nh=6,offset=3,m=0,id=77)/Raw(b'\0'*16)
    bad(
        "lit_v6_second_fragment",
        _hex(
            "6000000000182c4020010db801000000000000000000001020010db80000000000000000",
            "00000025060000180000004d00000000000000000000000000000000",
        ),
        "IPv6 non-first fragment: offset 24",
    ),
    # IPv6(src='2001:db8:100::10',dst='2001:db8::25')/ESP(spi=1,seq=1,data=b'\0'*24)
    bad(
        "lit_v6_esp",
        _hex(
            "600000000020324020010db801000000000000000000001020010db80000000000000000",
            "000000250000000100000001000000000000000000000000000000000000000000000000",
        ),
        "IPv6 ESP",
    ),
    # Hand-made edge cases that need no generator.
    bad("lit_empty", b"", "empty packet"),
    bad("lit_v4_12_bytes", _hex("45000028000100004006546c"), "truncated IPv4 header: 12 bytes"),
    bad("lit_v6_39_bytes", b"\x60" + bytes(38), "truncated IPv6 header: 39 bytes"),
    bad("lit_version_0", bytes(40), "not IPv4 or IPv6: version 0"),
    bad("lit_version_5", b"\x55" + bytes(39), "not IPv4 or IPv6: version 5"),
)


def _tcp_offset(p: Any) -> int:
    """Where scapy put the TCP header: everything before it is IP + extensions."""
    from scapy.layers.inet import TCP

    return len(bytes(p)) - len(bytes(p[TCP]))


def scapy_vectors() -> list[Vector]:
    """Vectors built with scapy now; import scapy lazily (optional dependency)."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR
    from scapy.layers.inet6 import (
        ICMPv6EchoRequest,
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
        IPv6ExtHdrRouting,
        Jumbo,
        PadN,
    )
    from scapy.layers.ipsec import AH
    from scapy.packet import Raw

    s4, d4 = "100.64.0.10", "192.0.2.25"
    s6, d6 = "2001:db8:100::10", "2001:db8::25"
    mss = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
    vs: list[Vector] = []

    def good(name: str, p: Any, expected: Packet, pad: bytes = b"") -> None:
        vs.append(ok(name, bytes(p) + pad, expected, _tcp_offset(p)))

    def fail(name: str, p: Any, error: str) -> None:
        vs.append(bad(name, bytes(p), error))

    # --- IPv4, valid -------------------------------------------------------------
    good(
        "v4_syn",
        IP(src=s4, dst=d4) / TCP(sport=40000, dport=25, flags="S"),
        pkt(s4, d4, 40000, 25, SYN),
    )
    good(
        "v4_syn_df",
        IP(src=s4, dst=d4, flags="DF") / TCP(sport=1, dport=25, flags="S"),
        pkt(s4, d4, 1, 25, SYN),
    )
    good(
        "v4_ip_options",
        IP(src=s4, dst=d4, options=[IPOption_RR(routers=["0.0.0.0"] * 2), IPOption_NOP()])
        / TCP(sport=40000, dport=25, flags="S"),
        pkt(s4, d4, 40000, 25, SYN),
    )
    # IHL 15: 40 bytes of options, the most an IPv4 header can carry.
    good(
        "v4_ihl_15",
        IP(src=s4, dst=d4, options=[IPOption_RR(routers=["0.0.0.0"] * 9)])
        / TCP(sport=40000, dport=25, flags="S"),
        pkt(s4, d4, 40000, 25, SYN),
    )
    good(
        "v4_tcp_options",
        IP(src=s4, dst=d4) / TCP(sport=2, dport=25, flags="S", options=mss),
        pkt(s4, d4, 2, 25, SYN),
    )
    good(
        "v4_syn_ece_cwr",
        IP(src=s4, dst=d4) / TCP(sport=3, dport=25, flags="SEC"),
        pkt(s4, d4, 3, 25, SYN | ECE | CWR),
    )
    good(
        "v4_all_flags",
        IP(src=s4, dst=d4) / TCP(sport=4, dport=25, flags=0xFF),
        pkt(s4, d4, 4, 25, 0xFF),
    )
    # NS (low bit of byte 12) and the reserved bits are not part of ``flags``.
    good(
        "v4_ns_bit_ignored",
        IP(src=s4, dst=d4) / TCP(sport=5, dport=25, flags=0x1FF, reserved=7),
        pkt(s4, d4, 5, 25, 0xFF),
    )
    good(
        "v4_bare_ack",
        IP(src=s4, dst=d4) / TCP(sport=6, dport=25, flags="A"),
        pkt(s4, d4, 6, 25, ACK),
    )
    good(
        "v4_payload",
        IP(src=s4, dst=d4) / TCP(sport=7, dport=25, flags="PA") / Raw(b"EHLO bot\r\n" * 20),
        pkt(s4, d4, 7, 25, PSH | ACK),
    )
    good(
        "v4_first_fragment_mf",
        IP(src=s4, dst=d4, flags="MF") / TCP(sport=8, dport=25, flags="S") / Raw(b"x" * 8),
        pkt(s4, d4, 8, 25, SYN),
    )
    good(
        "v4_link_padding",
        IP(src=s4, dst=d4) / TCP(sport=9, dport=25, flags="S"),
        pkt(s4, d4, 9, 25, SYN),
        pad=b"\x00" * 6,
    )
    good(
        "v4_extremes",
        IP(src="255.255.255.255", dst="0.0.0.0") / TCP(sport=65535, dport=0, flags=0),
        pkt("255.255.255.255", "0.0.0.0", 65535, 0, 0),
    )

    # --- IPv4, invalid -----------------------------------------------------------
    fail("v4_udp", IP(src=s4, dst=d4) / UDP(sport=1, dport=25), "not TCP: protocol 17")
    fail("v4_icmp", IP(src=s4, dst=d4) / ICMP(), "not TCP: protocol 1")
    fail(
        "v4_second_fragment",
        IP(src=s4, dst=d4, frag=185, proto=6) / Raw(bytes(40)),
        "IPv4 non-first fragment",
    )
    fail(
        "v4_last_fragment",
        IP(src=s4, dst=d4, flags="MF", frag=1, proto=6) / Raw(bytes(40)),
        "IPv4 non-first fragment: offset 8",
    )
    fail("v4_ihl_4", IP(src=s4, dst=d4, ihl=4) / TCP(dport=25), "IPv4 IHL 4 < 5")
    fail("v4_ihl_0", IP(src=s4, dst=d4, ihl=0) / TCP(dport=25), "IPv4 IHL 0 < 5")
    fail(
        "v4_total_below_header",
        IP(src=s4, dst=d4, len=19) / TCP(dport=25),
        "IPv4 total length 19 < header length 20",
    )
    fail(
        "v4_total_zero",
        IP(src=s4, dst=d4, len=0) / TCP(dport=25),
        "IPv4 total length 0 < header length 20",
    )
    fail(
        "v4_total_no_room_for_tcp",
        IP(src=s4, dst=d4, len=39) / TCP(dport=25),
        "IPv4 total length 39 leaves 19 bytes for a TCP header",
    )
    # RFC 1858 tiny fragment: ports visible, rest of the TCP header in fragment 2.
    fail(
        "v4_tiny_first_fragment",
        IP(src=s4, dst=d4, flags="MF", proto=6) / Raw(bytes(TCP(dport=25))[:8]),
        "IPv4 total length 28 leaves 8 bytes",
    )
    fail(
        "v4_options_truncated",
        IP(src=s4, dst=d4, ihl=15, len=80, proto=6) / Raw(bytes(4)),
        "truncated IPv4 options: 24 of 60 header bytes",
    )
    fail(
        "v4_tcp_truncated",
        IP(src=s4, dst=d4, len=40, proto=6) / Raw(bytes(TCP(dport=25))[:13]),
        "truncated TCP header: 13 of 14 bytes needed",
    )
    fail("v4_tcp_doff_4", IP(src=s4, dst=d4) / TCP(dport=25, dataofs=4), "TCP data offset 4 < 5")
    fail(
        "v4_tcp_doff_beyond_total",
        IP(src=s4, dst=d4) / TCP(dport=25, dataofs=15),
        "TCP header length 60 exceeds IPv4 payload 20",
    )
    # A version nibble of 6 sends the bytes down the IPv6 path, whatever follows.
    fail(
        "v4_header_with_version_6",
        IP(src=s4, dst=d4, version=6) / TCP(dport=25),
        "truncated IPv6 extension header 0 at offset 40",
    )

    # --- IPv6, valid -------------------------------------------------------------
    good(
        "v6_syn",
        IPv6(src=s6, dst=d6) / TCP(sport=40000, dport=25, flags="S"),
        pkt(s6, d6, 40000, 25, SYN),
    )
    good(
        "v6_tcp_options",
        IPv6(src=s6, dst=d6) / TCP(sport=1, dport=25, flags="S", options=mss),
        pkt(s6, d6, 1, 25, SYN),
    )
    good(
        "v6_hbh_dstopt",
        IPv6(src=s6, dst=d6)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / TCP(sport=2, dport=25, flags="S"),
        pkt(s6, d6, 2, 25, SYN),
    )
    good(
        "v6_long_dstopt",
        IPv6(src=s6, dst=d6)
        / IPv6ExtHdrDestOpt(options=[PadN(optdata=bytes(200))])
        / TCP(sport=3, dport=25, flags="S"),
        pkt(s6, d6, 3, 25, SYN),
    )
    good(
        "v6_routing",
        IPv6(src=s6, dst=d6)
        / IPv6ExtHdrRouting(addresses=["2001:db8::1"])
        / TCP(sport=4, dport=25, flags="S"),
        pkt(s6, d6, 4, 25, SYN),
    )
    good(
        "v6_first_fragment",
        IPv6(src=s6, dst=d6)
        / IPv6ExtHdrFragment(offset=0, m=1, id=9)
        / TCP(sport=5, dport=25, flags="S")
        / Raw(b"x" * 8),
        pkt(s6, d6, 5, 25, SYN),
    )
    good(
        "v6_atomic_fragment",
        IPv6(src=s6, dst=d6)
        / IPv6ExtHdrFragment(offset=0, m=0, id=9)
        / TCP(sport=5, dport=25, flags="S"),
        pkt(s6, d6, 5, 25, SYN),
    )
    good(
        "v6_ah",
        IPv6(src=s6, dst=d6)
        / AH(nh=6, payloadlen=4, spi=1, icv=bytes(12))
        / TCP(sport=6, dport=25, flags="S"),
        pkt(s6, d6, 6, 25, SYN),
    )
    good(
        "v6_five_headers",
        IPv6(src=s6, dst=d6)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting()
        / IPv6ExtHdrFragment(offset=0, m=1)
        / AH(nh=60, payloadlen=4, spi=1, icv=bytes(12))
        / IPv6ExtHdrDestOpt()
        / TCP(sport=7, dport=25, flags="S"),
        pkt(s6, d6, 7, 25, SYN),
    )
    good(
        "v6_eight_headers_max",
        IPv6(src=s6, dst=d6)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt()
        / TCP(sport=8, dport=25, flags="S"),
        pkt(s6, d6, 8, 25, SYN),
    )
    good(
        "v6_link_padding",
        IPv6(src=s6, dst=d6) / TCP(sport=9, dport=25, flags="S"),
        pkt(s6, d6, 9, 25, SYN),
        pad=b"\xff" * 10,
    )
    good(
        "v6_jumbogram",
        IPv6(src=s6, dst=d6, plen=0)
        / IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=70000)])
        / TCP(sport=10, dport=25, flags="S"),
        pkt(s6, d6, 10, 25, SYN),
    )
    good(
        "v6_extremes",
        IPv6(src="ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", dst="::")
        / TCP(sport=0, dport=65535, flags=0xFF),
        pkt("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::", 0, 65535, 0xFF),
    )

    # --- IPv6, invalid -----------------------------------------------------------
    fail("v6_udp", IPv6(src=s6, dst=d6) / UDP(dport=25), "not TCP: next header 17")
    fail("v6_icmp", IPv6(src=s6, dst=d6) / ICMPv6EchoRequest(), "not TCP: next header 58")
    fail(
        "v6_udp_after_hbh",
        IPv6(src=s6, dst=d6) / IPv6ExtHdrHopByHop() / UDP(dport=25),
        "not TCP: next header 17",
    )
    fail("v6_no_next_header", IPv6(src=s6, dst=d6, nh=59) / Raw(bytes(20)), "IPv6 no next header")
    fail("v6_esp", IPv6(src=s6, dst=d6, nh=50) / Raw(bytes(40)), "IPv6 ESP")
    fail(
        "v6_second_fragment",
        IPv6(src=s6, dst=d6) / IPv6ExtHdrFragment(nh=6, offset=1, m=1) / Raw(bytes(40)),
        "IPv6 non-first fragment: offset 8",
    )
    fail(
        "v6_nine_headers",
        IPv6(src=s6, dst=d6)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrDestOpt()
        / TCP(dport=25, flags="S"),
        "IPv6 extension header chain too long",
    )
    fail(
        "v6_hbh_not_first",
        IPv6(src=s6, dst=d6) / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / TCP(dport=25),
        "IPv6 hop-by-hop header not first",
    )
    fail(
        "v6_ext_beyond_plen",
        IPv6(src=s6, dst=d6, plen=8, nh=60) / Raw(b"\x06\x05" + bytes(60)),
        "IPv6 extension header 60 ends at 88, beyond payload length 8",
    )
    fail(
        "v6_plen_no_room_for_tcp",
        IPv6(src=s6, dst=d6, plen=19) / TCP(dport=25),
        "IPv6 payload length 19 leaves 19 bytes for a TCP header",
    )
    fail(
        "v6_ext_truncated",
        IPv6(src=s6, dst=d6, plen=64, nh=0) / Raw(b"\x06"),
        "truncated IPv6 extension header 0 at offset 40",
    )
    fail(
        "v6_frag_truncated",
        IPv6(src=s6, dst=d6, plen=64, nh=44) / Raw(b"\x06\x00\x00"),
        "truncated IPv6 fragment header at offset 40",
    )
    fail(
        "v6_tcp_truncated",
        IPv6(src=s6, dst=d6, plen=20, nh=6) / Raw(bytes(10)),
        "truncated TCP header: 10 of 14 bytes needed",
    )
    fail("v6_tcp_doff_2", IPv6(src=s6, dst=d6) / TCP(dport=25, dataofs=2), "TCP data offset 2 < 5")
    fail(
        "v6_tcp_doff_beyond_plen",
        IPv6(src=s6, dst=d6) / TCP(dport=25, dataofs=6),
        "TCP header length 24 exceeds IPv6 payload 20",
    )
    return vs
