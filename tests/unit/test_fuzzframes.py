"""The fuzz frame builder keeps its promises: seeded, always TCP to port 25 by the
kernel's reading, never a mutated address or protocol, valid IPv4 header checksums."""

from __future__ import annotations

import struct
from collections import Counter

from op25b.dataplane.packet import PacketError, parse
from op25b.lab.fuzzframes import FRAGMENT, Fuzzer, Sources, chain6, checksum

SOURCES = Sources.from_text(
    ["100.64.64.1", "100.65.0.9"],
    ["2001:db8:100:6601::5", "2001:db8:200::9"],
    ["192.0.2.25", "192.0.2.26"],
    ["2001:db8:c0::25"],
)


def draws(seed: int, n: int) -> list[tuple[str, list[bytes]]]:
    f = Fuzzer(SOURCES, seed)
    return [f.frames() for _ in range(n)]


def test_same_seed_same_frames_other_seed_other_frames() -> None:
    assert draws(3, 200) == draws(3, 200)
    assert draws(3, 200) != draws(4, 200)


def test_every_kind_is_drawn() -> None:
    kinds = Counter(kind for kind, _ in draws(1, 2000))
    assert set(kinds) == {"tcp4", "tcp6", "mutated", "truncated", "frag4", "frag6"}


def test_addresses_and_protocol_are_never_fuzzed() -> None:
    for _, packets in draws(2, 3000):
        for pkt in packets:
            if pkt[0] >> 4 == 4:
                ihl = (pkt[0] & 0x0F) * 4
                assert pkt[9] == 6
                assert pkt[12:16] in SOURCES.v4 and pkt[16:20] in SOURCES.dst4
                assert checksum(pkt[:ihl]) == 0  # the kernel drops a bad one before netfilter
            else:
                assert pkt[0] >> 4 == 6
                assert pkt[8:24] in SOURCES.v6 and pkt[24:40] in SOURCES.dst6
                assert chain6(pkt)[2] in (6, FRAGMENT, None)


def test_well_formed_segments_parse_to_port_25_and_nothing_escapes_the_parser() -> None:
    f = Fuzzer(SOURCES, 5)
    ports: Counter[bool] = Counter()
    refused = 0
    for _ in range(2000):
        _, packets = f.frames()
        for pkt in packets:
            try:
                ports[parse(pkt).dport == 25] += 1
            except PacketError:
                refused += 1
    # Port 25 unless a mutation or a random fragment body hit the port bytes.
    assert ports[True] > 10 * ports[False] and ports[True] > 1000
    assert refused > 100


def test_a_plain_ipv4_syn_has_a_valid_tcp_checksum() -> None:
    f = Fuzzer(Sources.from_text(["100.64.64.1"], [], ["192.0.2.25"], []), 1)
    ok = 0
    for _ in range(200):
        pkt = f.tcp4()
        ihl = (pkt[0] & 0x0F) * 4
        seg = pkt[ihl:]
        pseudo = pkt[12:20] + b"\x00\x06" + struct.pack("!H", len(seg))
        ok += checksum(pseudo + seg) == 0
    assert 150 < ok < 200  # about 10% carry a deliberately bad checksum
