"""The raw capture reader (``op25b.report.pcapread``) against scapy and against hostile files.

Equivalence: captures built with scapy in every supported link type and file variant
are read by the raw reader and by the scapy reading replay used before
(``scapyref.scapy_records``); records and whole replay results must be identical.
pcapng features scapy does not write (several sections, byte orders, interfaces,
``if_tsresol``, simple and obsolete packet blocks) are built by hand here and checked
against the bytes scapy serialised. Hostile files must end in one ``CaptureError``
naming the file and place, within a time bound (a loop would trip the alarm).
"""

from __future__ import annotations

import io
import json
import signal
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.layers.l2 import (
    ARP,
    CookedLinux,
    CookedLinuxV2,
    Dot1AD,
    Dot1Q,
    Ether,
    Loopback,
    LoopbackOpenBSD,
)
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw
from scapy.utils import wrpcap, wrpcapng
from scapyref import scapy_records

from op25b.cli import main
from op25b.policy.compiled import compile_policy
from op25b.policy.loader import load_policy
from op25b.report import pcapread
from op25b.report.pcapread import Capture, CaptureError
from op25b.report.replay import replay, replay_records

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "example.yaml"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
RES, BOT, BIZ, MTA = "100.64.0.10", "100.64.0.66", "198.51.100.10", "203.0.113.25"
RES6, MX6, MX = "2001:db8:100::10", "2001:db8:ff::25", "192.0.2.25"


@pytest.fixture(scope="module")
def compiled():  # type: ignore[no-untyped-def]
    return compile_policy(load_policy(str(EXAMPLE)).policy)


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail a test that runs longer than 10 s instead of hanging the suite."""

    def expire(_sig: int, _frame: FrameType | None) -> None:
        raise TimeoutError("the reader did not finish: a loop on hostile input")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def ip_packets() -> list[ScapyPacket]:
    """IP packets replay must tell apart: attempts, answers, other transports."""
    s = TCP(sport=40001, dport=25, flags="S")
    return [
        IP(src=RES, dst=MX) / s,
        IP(src=BOT, dst="192.0.2.35") / TCP(sport=40002, dport=25, flags="S"),
        IP(src=RES, dst=MTA) / TCP(sport=40003, dport=25, flags="S"),
        IP(src=MTA, dst=RES) / TCP(sport=25, dport=40003, flags="SA"),
        IP(src=RES, dst=MTA) / TCP(sport=40003, dport=25, flags="PA") / Raw(b"EHLO x\r\n"),
        IP(src=BIZ, dst=MX) / TCP(sport=40004, dport=25, flags="S"),
        IP(src=RES, dst=MX, options=[]) / TCP(sport=40005, dport=587, flags="S"),
        IP(src=RES, dst="192.0.2.53") / UDP(sport=5353, dport=53),
        IPv6(src=RES6, dst=MX6) / s,
        IPv6(src=RES6, dst=MX6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / s,
        IP(src=RES, dst=MX, flags="MF") / TCP(sport=40006, dport=25, flags="S"),
        IP(src=RES, dst=MX, frag=3) / Raw(b"x" * 24),  # a non-first fragment
    ]


def link_frames(linktype: int) -> list[ScapyPacket]:
    """ip_packets() framed for one link type (Ethernet also tagged and with ARP)."""
    ips = ip_packets()
    if linktype == 1:
        e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        tagged = [e / Dot1Q(vlan=7) / p for p in ips[:4]]
        qinq = [e / Dot1AD(vlan=100) / Dot1Q(vlan=7) / p for p in ips[4:8]]
        return [e / p for p in ips] + tagged + qinq + [e / ARP(psrc=RES, pdst="100.64.0.1")]
    if linktype == 113:
        return [CookedLinux(proto=0x86DD if p.version == 6 else 0x800) / p for p in ips]
    if linktype == 276:
        return [CookedLinuxV2(proto=0x86DD if p.version == 6 else 0x800) / p for p in ips]
    # AF_INET6 as scapy knows it on Linux (10); the BSDs' values are tested below.
    if linktype == 0:
        return [Loopback(type=10 if p.version == 6 else 2) / p for p in ips]
    if linktype == 108:
        return [LoopbackOpenBSD(type=10 if p.version == 6 else 2) / p for p in ips]
    if linktype == 228:
        return [p for p in ips if p.version == 4]
    if linktype == 229:
        return [p for p in ips if p.version == 6]
    return ips  # 101: either version


LINKTYPES = [1, 0, 101, 108, 113, 228, 229, 276]


def stamp(frames: list[ScapyPacket]) -> list[ScapyPacket]:
    for i, f in enumerate(frames):
        f.time = 1_700_000_000 + i + 0.25
    return frames


def to_big_endian(data: bytes) -> bytes:
    """A little-endian classic pcap rewritten in big-endian byte order."""
    out = bytearray(struct.pack(">IHHiIII", *struct.unpack_from("<IHHiIII", data)))
    off = 24
    while off < len(data):
        hdr = struct.unpack_from("<IIII", data, off)
        out += struct.pack(">IIII", *hdr) + data[off + 16 : off + 16 + hdr[2]]
        off += 16 + hdr[2]
    return bytes(out)


def pcapng_linktype(data: bytes) -> int:
    """The link type of the first interface of a little-endian pcapng file."""
    idb = struct.unpack_from("<I", data, 4)[0]
    return int(struct.unpack_from("<H", data, idb + 8)[0])


def assert_same_records(path: Path) -> None:
    raw = list(Capture(str(path)).records())
    ref = list(scapy_records(str(path)))
    assert [r[1] for r in raw] == [r[1] for r in ref]
    assert [r[0] for r in raw] == pytest.approx([r[0] for r in ref], abs=1e-6)
    assert sum(r[1] is not None for r in raw) > 0


@pytest.mark.parametrize(
    ("variant", "linktype"),
    [
        (variant, lt)
        for variant in ("pcap", "pcap-nano", "pcap-be", "pcapng")
        for lt in LINKTYPES
        # scapy's pcapng writer takes the link type from the packet class, and an IP
        # packet says 228/229: raw 101 is covered by the three pcap variants.
        if (variant, lt) != ("pcapng", 101)
    ],
)
def test_same_records_and_replay_as_scapy(
    tmp_path: Path,
    compiled,
    linktype: int,
    variant: str,  # type: ignore[no-untyped-def]
) -> None:
    frames = stamp(link_frames(linktype))
    path = tmp_path / f"c.{variant}"
    if variant == "pcapng":
        wrpcapng(str(path), frames)
        assert pcapng_linktype(path.read_bytes()) == linktype
    else:
        wrpcap(str(path), frames, linktype=linktype, nano=variant == "pcap-nano")
    if variant == "pcap-be":
        path.write_bytes(to_big_endian(path.read_bytes()))
    assert_same_records(path)
    new = replay(compiled, str(path), NOW)
    old = replay_records(compiled, scapy_records(str(path)), NOW)
    assert new == old
    assert new.decided > 0 and new.truncated is None


def test_replay_test_capture_same_as_scapy(tmp_path: Path, compiled) -> None:  # type: ignore[no-untyped-def]
    """The capture test_replay.py builds, in both formats."""
    from test_replay import capture_frames, write

    for ng in (False, True):
        path = tmp_path / f"c{ng}.cap"
        write(path, capture_frames(), ng)
        assert_same_records(path)
        assert replay(compiled, str(path), NOW) == replay_records(
            compiled, scapy_records(str(path)), NOW
        )


# ------------------------------------------------------------ hand-built pcapng


def block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def shb(order: str) -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(order: str, linktype: int, tsresol: int | None = None, snaplen: int = 0) -> bytes:
    opts = b""
    if tsresol is not None:
        opts = struct.pack(order + "HHB3x", 9, 1, tsresol) + struct.pack(order + "HH", 0, 0)
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts)


def epb(order: str, iface: int, ts: int, data: bytes) -> bytes:
    head = struct.pack(order + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    return block(order, 6, head + data)


def test_pcapng_sections_interfaces_and_block_kinds(tmp_path: Path) -> None:
    syn4 = bytes(IP(src=RES, dst=MX) / TCP(sport=1, dport=25, flags="S"))
    syn6 = bytes(IPv6(src=RES6, dst=MX6) / TCP(sport=2, dport=25, flags="S"))
    eth = bytes(Ether() / IP(src=BOT, dst=MX) / TCP(sport=3, dport=25, flags="S"))
    data = (
        shb("<")
        + idb("<", 1, tsresol=9)  # Ethernet, nanoseconds
        + idb("<", 101)  # raw IP, default microseconds
        + epb("<", 0, 1_700_000_000_500_000_000, eth)
        + block("<", 4, b"\x00" * 8)  # a name resolution block: skipped
        + epb("<", 1, 1_700_000_001_000_000, syn4)
        + shb(">")  # a second section, big-endian: interfaces start again
        + idb(">", 229, tsresol=0x80 | 10)  # IPv6, 2**-10 s
        + epb(">", 0, 5 << 10, syn6)
        + block(">", 3, struct.pack(">I", len(syn6)) + syn6)  # simple packet block
        + block(">", 2, struct.pack(">HHIIII", 0, 0, 0, 7, len(syn6), len(syn6)) + syn6)
    )
    path = tmp_path / "s.pcapng"
    path.write_bytes(data)
    got = list(Capture(str(path)).records())
    assert [r[1] for r in got] == [eth[14:], syn4, syn6, syn6, syn6]
    assert [r[0] for r in got] == pytest.approx(
        [1_700_000_000.5, 1_700_000_001.0, 5.0, 0.0, 7 / 1024]
    )


@pytest.mark.parametrize("family", [24, 28, 30])
@pytest.mark.parametrize(("linktype", "layer"), [(0, Loopback), (108, LoopbackOpenBSD)])
def test_bsd_loopback_ipv6_families(
    tmp_path: Path, family: int, linktype: int, layer: type[ScapyPacket]
) -> None:
    """The BSDs' AF_INET6 values (which scapy on Linux does not decode), in both orders."""
    syn6 = IPv6(src=RES6, dst=MX6) / TCP(sport=2, dport=25, flags="S")
    path = tmp_path / "lo.pcap"
    wrpcap(str(path), [layer(type=family) / syn6, layer(type=7) / syn6], linktype=linktype)
    assert [r[1] for r in Capture(str(path)).records()] == [bytes(syn6), None]


def test_unsupported_link_type_is_counted_and_warned(tmp_path: Path) -> None:
    path = tmp_path / "wifi.pcap"
    wrpcap(str(path), [Raw(b"\x00" * 40)] * 3, linktype=105)
    code, out, err = run("replay", str(EXAMPLE), str(path), "--json")
    assert code == 0
    doc = json.loads(out)
    assert (doc["packets_read"], doc["ip_packets"]) == (3, 0)
    assert doc["unsupported_link_types"] == {"105": 3}
    assert err == f"op25b replay: warning: {path}: 3 frames of link type 105 skipped " + (
        "(replay reads link types 0, 1, 101, 108, 113, 228, 229, 276)\n"
    )


# ------------------------------------------------------------------ hostile files


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out, err), out.getvalue(), err.getvalue()


_THREE: dict[bool, bytes] = {}


def three_syns(tmp_path: Path, ng: bool = False) -> tuple[Path, bytes]:
    """A capture of three Ethernet SYNs to an MX (pcapng: SHB, IDB, three EPBs)."""
    path = tmp_path / ("three.pcapng" if ng else "three.pcap")
    if ng not in _THREE:
        e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        frames = [e / IP(src=RES, dst=MX) / TCP(sport=40001 + i, dport=25) for i in range(3)]
        (wrpcapng if ng else wrpcap)(str(path), stamp(frames))
        _THREE[ng] = path.read_bytes()
    path.write_bytes(_THREE[ng])
    return path, _THREE[ng]


def pcap_record_offsets(data: bytes) -> list[int]:
    offs, off = [], 24
    while off < len(data):
        offs.append(off)
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    return offs


def pcapng_block_offsets(data: bytes) -> list[int]:
    offs, off = [], 0
    while off < len(data):
        offs.append(off)
        off += struct.unpack_from("<I", data, off + 4)[0]
    return offs


def patched(data: bytes, at: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, at, value)
    return bytes(b)


def hostile_pcap(data: bytes) -> list[tuple[str, bytes, str]]:
    second = pcap_record_offsets(data)[1]
    return [
        (
            "absurd-caplen",
            patched(data, second + 8, "<I", 0xFFFFFFFF),
            (f"record 2 at offset {second}: captured length 4294967295 exceeds 262144 bytes"),
        ),
        (
            "wrong-magic",
            b"\x00\x01\x02\x03" + data[4:],
            "cannot read capture: not a pcap or pcapng file (magic 00010203)",
        ),
        (
            "cut-file-header",
            data[:20],
            "cannot read capture: pcap file header cut short (20 of 24 bytes)",
        ),
    ]


def hostile_pcapng(data: bytes) -> list[tuple[str, bytes, str]]:
    offs = pcapng_block_offsets(data)
    epb1, epb2 = offs[2], offs[3]  # SHB, IDB, then the packets
    return [
        (
            "zero-block-length",
            patched(data, epb2 + 4, "<I", 0),
            (f"block 4 at offset {epb2}: bad block length 0"),
        ),
        (
            "unaligned-block-length",
            patched(data, epb1 + 4, "<I", 37),
            (f"block 3 at offset {epb1}: bad block length 37"),
        ),
        (
            "huge-block-length",
            patched(data, epb1 + 4, "<I", 0xFFFFFFF0),
            (f"block 3 at offset {epb1}: bad block length 4294967280"),
        ),
        (
            "trailer-mismatch",
            patched(data, epb2 - 4, "<I", 4096),
            (f"block 3 at offset {epb1}: block length {epb2 - epb1} but trailing length 4096"),
        ),
        (
            "caplen-beyond-block",
            patched(data, epb1 + 20, "<I", 4000),
            (
                f"block 3 at offset {epb1}: captured length 4000 does not fit block length "
                f"{epb2 - epb1}"
            ),
        ),
        (
            "unknown-interface",
            patched(data, epb1 + 8, "<I", 9),
            (f"block 3 at offset {epb1}: packet on interface 9, which was never described"),
        ),
        (
            "bad-byte-order",
            patched(data, 8, "<I", 0x01020304),
            ("block 1 at offset 0: bad byte-order magic 04030201"),
        ),
    ]


def check_one_line_error(path: Path, message: str) -> None:
    code, out, err = run("replay", str(EXAMPLE), str(path), "--now", "2026-01-01T00:00:00Z")
    assert (code, out) == (1, "")
    assert err == f"op25b replay: {path}: {message}\n"


def test_hostile_pcap_one_line_errors(tmp_path: Path, alarm: None) -> None:
    _path, data = three_syns(tmp_path)
    for name, content, message in hostile_pcap(data):
        bad = tmp_path / f"{name}.pcap"
        bad.write_bytes(content)
        check_one_line_error(bad, message)


def test_hostile_pcapng_one_line_errors(tmp_path: Path, alarm: None) -> None:
    _path, data = three_syns(tmp_path, ng=True)
    for name, content, message in hostile_pcapng(data):
        bad = tmp_path / f"{name}.pcapng"
        bad.write_bytes(content)
        check_one_line_error(bad, message)


@pytest.mark.parametrize("ng", [False, True], ids=["pcap", "pcapng"])
@pytest.mark.parametrize("cut", ["in-data", "in-header"])
def test_truncated_last_record_reported_rest_counted(tmp_path: Path, ng: bool, cut: str) -> None:
    path, data = three_syns(tmp_path, ng)
    last = (pcapng_block_offsets if ng else pcap_record_offsets)(data)[-1]
    # in-data: the record's header and the frame up to its TCP ports survive
    keep = last + (28 + 14 + 20 + 4 if ng else 16 + 14 + 20 + 4) if cut == "in-data" else last + 6
    path.write_bytes(data[:keep])
    code, out, err = run("replay", str(EXAMPLE), str(path), "--json", "--now", "2026-01-01")
    assert code == 0, err
    doc = json.loads(out)
    kind = "block 5" if ng else "record 3"
    assert doc["truncated"].startswith(f"{kind} at offset {last}: ")
    assert err == f"op25b replay: warning: {path}: {doc['truncated']} (the capture ends early)\n"
    if cut == "in-data":
        # what is left of the cut frame is yielded: too short for parse(), so unparsable
        assert (doc["packets_read"], doc["decided"], doc["parse_errors"]) == (3, 2, 1)
    else:
        assert (doc["packets_read"], doc["decided"], doc["parse_errors"]) == (2, 2, 0)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_any_damage_is_a_capture_error_or_a_clean_read(
    tmp_path: Path, alarm: None, data: st.DataObject
) -> None:
    """Cut, overwrite or splice a valid file anywhere: the reader ends, and only with
    CaptureError (never struct.error, IndexError, a hang)."""
    ng = data.draw(st.booleans())
    path, good = three_syns(tmp_path, ng)
    b = bytearray(good[: data.draw(st.integers(0, len(good)))])
    for _ in range(data.draw(st.integers(0, 4))):
        if b:
            at = data.draw(st.integers(0, len(b) - 1))
            b[at : at + 4] = data.draw(st.binary(min_size=1, max_size=4))
    path.write_bytes(bytes(b))
    try:
        records = list(Capture(str(path)).records())
    except CaptureError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
    else:
        assert len(records) <= 3 * 2 + 4  # never more records than bytes allow


def test_chunk_boundaries_do_not_matter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for ng in (False, True):
        path, _ = three_syns(tmp_path, ng)
        whole = list(Capture(str(path)).records())
        for chunk in (1, 7, 13, 64):
            monkeypatch.setattr(pcapread, "_CHUNK", chunk)
            assert list(Capture(str(path)).records()) == whole
            monkeypatch.undo()
