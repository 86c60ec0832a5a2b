"""Tests for ``op25b.dataplane.packet``: golden vectors, every truncation, fuzzing, input types.

The contract under test: for *any* byte string ``parse()`` either returns a Packet
or raises PacketError -- never struct.error, IndexError or anything else -- and a
valid packet parses exactly when its first ``TCP_BYTES_NEEDED`` TCP bytes are there.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors import LITERAL_VECTORS, Vector, scapy_vectors  # tests/unit, as builders.py

from op25b.dataplane.packet import (
    MAX_EXTENSION_HEADERS,
    TCP_BYTES_NEEDED,
    Packet,
    PacketError,
    parse,
)

try:
    import scapy  # noqa: F401

    HAVE_SCAPY = True
except ImportError:  # pragma: no cover - scapy is an optional extra
    HAVE_SCAPY = False

HERE = Path(__file__).resolve().parent
NO_SCAPY = "scapy not installed: the scapy-built packet vectors were not run"
needs_scapy = pytest.mark.skipif(not HAVE_SCAPY, reason=NO_SCAPY)

SCAPY_VECTORS: list[Vector] = scapy_vectors() if HAVE_SCAPY else []
ALL_VECTORS: list[Vector] = [*LITERAL_VECTORS, *SCAPY_VECTORS]
VALID: list[Vector] = [v for v in ALL_VECTORS if v.expected is not None]
INVALID: list[Vector] = [v for v in ALL_VECTORS if v.expected is None]


def _ids(vs: list[Vector] | tuple[Vector, ...]) -> list[str]:
    return [v.name for v in vs]


def vector_params(vs: Sequence[Vector]) -> list[Any]:
    """``vs`` as test parameters; without scapy, a skipped stand-in for the vectors it
    would have built, so a run without it shows a skip instead of quietly testing less."""
    params: list[Any] = [pytest.param(v, id=v.name) for v in vs]
    if not HAVE_SCAPY:
        params.append(pytest.param(None, id="scapy-vectors", marks=pytest.mark.skip(NO_SCAPY)))
    return params


def check(v: Vector, data: bytes | bytearray | memoryview | None = None) -> None:
    """Assert ``parse`` gives exactly what the vector says."""
    data = v.data if data is None else data
    if v.expected is not None:
        assert parse(data) == v.expected
    else:
        assert v.error is not None
        with pytest.raises(PacketError) as exc:
            parse(data)
        assert v.error in str(exc.value)


def outcome(data: bytes | bytearray | memoryview) -> Packet | str:
    """Result or error reason; anything other than PacketError propagates and fails."""
    try:
        return parse(data)
    except PacketError as e:
        return f"PacketError: {e}"


# --- golden vectors -------------------------------------------------------------


@pytest.mark.parametrize("v", LITERAL_VECTORS, ids=_ids(LITERAL_VECTORS))
def test_literal_vector(v: Vector) -> None:
    check(v)


@pytest.mark.parametrize("v", vector_params(SCAPY_VECTORS))
def test_scapy_vector(v: Vector) -> None:
    check(v)


def test_vector_names_unique() -> None:
    names = _ids(ALL_VECTORS)
    assert len(names) == len(set(names))


def test_without_scapy_its_vectors_show_as_skipped(tmp_path: Path) -> None:
    """Run this file where ``import scapy`` fails: every vector-driven test must report
    a skip for the scapy-built vectors, not pass quietly on the literal ones alone."""
    fake = tmp_path / "scapy"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise ImportError("scapy hidden by the test")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(HERE)]))
    tests = {
        "test_scapy_vector",
        "test_every_prefix_of_valid_vector",
        "test_every_prefix_of_invalid_vector",
        "test_exact_minimum_reason",
        "test_input_types_agree",
    }
    argv = [sys.executable, "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider"]
    argv += [f"{__file__}::{name}" for name in sorted(tests)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    # -v lines: "tests/unit/test_packet.py::test_x[scapy-vectors] SKIPPED [ 9%]"
    skipped = {
        line.split("::")[1].split("[")[0]
        for line in out.splitlines()
        if "[scapy-vectors] SKIPPED" in line
    }
    assert skipped == tests, out
    assert out.count(NO_SCAPY) == len(tests), out  # -rs: one reason line per skip


def test_packet_error_is_value_error() -> None:
    assert issubclass(PacketError, ValueError)
    with pytest.raises(ValueError, match="empty packet"):
        parse(b"")


def test_parsed_packet_is_a_real_frozen_packet() -> None:
    # parse() builds Packets without the dataclass __init__ (see _PacketBuilder):
    # the result must be indistinguishable from one built the ordinary way.
    from op25b.dataplane import packet as packet_module

    assert packet_module._new_packet is not Packet, "fast Packet construction fell back"
    # the import-time self-check itself, run again (a broken check could pass a broken builder)
    assert packet_module._fast_packet_ok() is True
    v = LITERAL_VECTORS[3]
    got = parse(v.data)
    assert type(got) is Packet
    assert got == v.expected and hash(got) == hash(v.expected) and repr(got) == repr(v.expected)
    assert {got: 1}[v.expected] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.dport = 587  # type: ignore[misc]
    # A new attribute fails the same way on both; on CPython 3.11 that is a TypeError
    # from the frozen+slots dataclass __setattr__ (its super() names the pre-slots
    # class), not the AttributeError one might expect.
    errors = []
    for obj in (got, Packet(*dataclasses.astuple(got))):
        with pytest.raises((AttributeError, TypeError)) as exc:
            obj.extra = 1  # type: ignore[attr-defined]
        errors.append(type(exc.value))
    assert errors[0] is errors[1]
    assert dataclasses.astuple(got) == dataclasses.astuple(v.expected)


def test_literal_fields_spelled_out() -> None:
    # One vector checked field by field, independent of the helper that builds
    # expected Packets from address text.
    p = parse(LITERAL_VECTORS[0].data)
    assert (p.version, p.src, p.dst, p.sport, p.dport, p.flags) == (
        4,
        0x6440000A,  # 100.64.0.10
        0xC0000219,  # 192.0.2.25
        40000,
        25,
        0x02,
    )


# --- truncation -----------------------------------------------------------------


@pytest.mark.parametrize("v", vector_params(VALID))
def test_every_prefix_of_valid_vector(v: Vector) -> None:
    assert v.expected is not None and v.tcp_offset >= 20
    for i in range(len(v.data) + 1):
        prefix = v.data[:i]
        if i < v.min_len:
            with pytest.raises(PacketError):
                parse(prefix)
        else:
            # Copy range may cut TCP options and payload: still the same packet.
            assert parse(prefix) == v.expected, i


@pytest.mark.parametrize("v", vector_params(INVALID))
def test_every_prefix_of_invalid_vector(v: Vector) -> None:
    for i in range(len(v.data) + 1):
        with pytest.raises(PacketError):
            parse(v.data[:i])


@pytest.mark.parametrize("v", vector_params(VALID))
def test_exact_minimum_reason(v: Vector) -> None:
    with pytest.raises(PacketError, match=f"truncated TCP header: {TCP_BYTES_NEEDED - 1} of"):
        parse(v.data[: v.min_len - 1])


# --- input types ----------------------------------------------------------------


def _views(data: bytes) -> dict[str, Any]:  # Any: also views typed memoryview[bytes]
    big = bytearray(b"\xaa" * 7 + data + b"\xbb" * 5)
    doubled = bytes(b for x in data for b in (x, 0))
    views: dict[str, Any] = {
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "memoryview_bytearray_slice": memoryview(big)[7 : 7 + len(data)],
        "memoryview_readonly": memoryview(bytearray(data)).toreadonly(),
        "memoryview_noncontiguous": memoryview(doubled)[::2],
        "memoryview_char": memoryview(data).cast("c"),
    }
    if len(data) % 2 == 0 and data:
        views["memoryview_u16"] = memoryview(data).cast("H")
        views["memoryview_2d"] = memoryview(data).cast("B", shape=[2, len(data) // 2])
    return views


@pytest.mark.parametrize("v", vector_params(ALL_VECTORS))
def test_input_types_agree(v: Vector) -> None:
    want = outcome(v.data)
    for kind, data in _views(v.data).items():
        assert outcome(data) == want, kind
    check(v, bytearray(v.data))
    check(v, memoryview(v.data))


def test_input_is_not_modified() -> None:
    buf = bytearray(VALID[0].data)
    before = bytes(buf)
    parse(buf)
    parse(memoryview(buf))
    assert buf == before


# --- hand-built chains (no scapy needed) ------------------------------------------


def _v6(nh: int, payload: bytes, plen: int | None = None) -> bytes:
    src = ipaddress.IPv6Address("2001:db8:100::10").packed
    dst = ipaddress.IPv6Address("2001:db8::25").packed
    n = len(payload) if plen is None else plen
    return b"\x60\x00\x00\x00" + n.to_bytes(2, "big") + bytes((nh, 64)) + src + dst + payload


_TCP_SYN = bytes.fromhex("9c400019000003e8000000005002200092fa0000")


def _dstopts(k: int) -> tuple[int, bytes]:
    """k destination-options headers (8 bytes each) ending in TCP."""
    chain = b"".join(bytes((60 if i < k - 1 else 6, 0)) + bytes(6) for i in range(k))
    return (60 if k else 6), chain


@pytest.mark.parametrize("k", range(MAX_EXTENSION_HEADERS + 3))
def test_extension_header_bound(k: int) -> None:
    nh, chain = _dstopts(k)
    data = _v6(nh, chain + _TCP_SYN)
    if k <= MAX_EXTENSION_HEADERS:
        p = parse(data)
        assert (p.version, p.sport, p.dport, p.flags) == (6, 40000, 25, 0x02)
    else:
        with pytest.raises(PacketError, match="chain too long"):
            parse(data)


def test_huge_extension_chain_is_refused_cheaply() -> None:
    # 4000 bytes of 8-byte headers: refused after MAX_EXTENSION_HEADERS, not 500.
    nh, chain = _dstopts(500)
    with pytest.raises(PacketError, match="chain too long"):
        parse(_v6(nh, chain + _TCP_SYN))


def test_ah_length_units() -> None:
    # AH payload length 1 -> (1 + 2) * 4 = 12 bytes: RFC 4302 units, not 8-octet ones.
    ah = bytes((6, 1)) + bytes(10)
    assert parse(_v6(51, ah + _TCP_SYN)).dport == 25


@pytest.mark.parametrize("nh", [17, 58, 132, 135, 139, 140, 253, 255])
def test_unknown_next_header_is_not_tcp(nh: int) -> None:
    with pytest.raises(PacketError, match=f"not TCP: next header {nh}"):
        parse(_v6(nh, _TCP_SYN))


@pytest.mark.parametrize("proto", [0, 1, 17, 41, 47, 50, 132, 255])
def test_v4_protocols_other_than_tcp(proto: int) -> None:
    data = bytearray(LITERAL_VECTORS[0].data)
    data[9] = proto
    with pytest.raises(PacketError, match=f"not TCP: protocol {proto}"):
        parse(data)


# --- fuzzing --------------------------------------------------------------------

FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _must_not_crash(data: bytes) -> None:
    result = outcome(data)
    if isinstance(result, Packet):
        assert result.version in (4, 6)
        width = 32 if result.version == 4 else 128
        assert 0 <= result.src < 1 << width and 0 <= result.dst < 1 << width
        assert 0 <= result.sport <= 0xFFFF and 0 <= result.dport <= 0xFFFF
        assert 0 <= result.flags <= 0xFF


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    _must_not_crash(data)


@FUZZ
@given(
    st.sampled_from([0x40, 0x60]),
    st.integers(0, 15),
    st.binary(max_size=150),
)
def test_fuzz_random_bytes_with_plausible_version(first: int, low: int, rest: bytes) -> None:
    # Random bytes almost never start with 4/6: force the nibble to reach deeper code.
    _must_not_crash(bytes((first | low,)) + rest)


@st.composite
def mutated(draw: Callable[..., Any]) -> bytes:
    """A valid vector with random byte overwrites, then cut or extended."""
    v: Vector = draw(st.sampled_from(VALID))
    data = bytearray(v.data)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    tail = draw(st.one_of(st.none(), st.integers(0, len(data)), st.binary(max_size=64)))
    if isinstance(tail, int):
        del data[tail:]
    elif isinstance(tail, bytes):
        data += tail
    return bytes(data)


@FUZZ
@given(mutated())
def test_fuzz_mutated_valid_packets(data: bytes) -> None:
    _must_not_crash(data)


# --- differential check against scapy --------------------------------------------


def _scapy_fields(data: bytes) -> tuple[int, int, int, int, int, int] | str | None:
    """What scapy's dissector sees, or None when it finds no TCP layer."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import AH

    p = (IP if data[0] >> 4 == 4 else IPv6)(data)
    if AH in p:
        # scapy's AH swallows the TCP header into its ICV field; the AH vectors
        # pin that case instead.
        return "AH"
    if TCP not in p:
        return None
    ip, tcp = p, p[TCP]
    return (
        ip.version,
        int(ipaddress.ip_address(ip.src)),
        int(ipaddress.ip_address(ip.dst)),
        tcp.sport,
        tcp.dport,
        int(tcp.flags) & 0xFF,
    )


@needs_scapy
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_agrees_with_scapy_when_it_parses(data: bytes) -> None:
    """Whenever we accept a packet, scapy (an independent dissector) reads the same."""
    result = outcome(data)
    if not isinstance(result, Packet):
        return
    ours = (result.version, result.src, result.dst, result.sport, result.dport, result.flags)
    # Zero-fill stands in for what a copy range cut off: scapy wants a whole TCP
    # header, and both parsers ignore bytes past the declared length anyway.
    theirs = _scapy_fields(data + bytes(64))
    if theirs is None:
        # scapy also validates the option TLVs inside hop-by-hop/destination headers
        # and gives up on a malformed one; the kernel's ip6tables (ipv6_find_hdr) does
        # not, and queues the packet, so we must decide it from the header chain alone.
        return
    if theirs != "AH":
        assert theirs == ours


@st.composite
def built(draw: Callable[..., Any]) -> tuple[Any, Packet]:
    """A random well-formed TCP packet built with scapy, and the Packet it must give."""
    from scapy.layers.inet import IP, TCP, IPOption_NOP
    from scapy.layers.inet6 import (
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
        IPv6ExtHdrRouting,
    )
    from scapy.packet import Raw

    version = draw(st.sampled_from([4, 6]))
    width = 32 if version == 4 else 128
    src, dst = draw(st.integers(0, (1 << width) - 1)), draw(st.integers(0, (1 << width) - 1))
    sport, dport = draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF))
    flags = draw(st.integers(0, 0xFF))
    tcp_opts = draw(st.sampled_from([[], [("MSS", 1460)], [("NOP", None)] * 7]))
    tcp = TCP(sport=sport, dport=dport, flags=flags, options=tcp_opts)
    payload = Raw(draw(st.binary(max_size=40)))
    if version == 4:
        a, b = str(ipaddress.IPv4Address(src)), str(ipaddress.IPv4Address(dst))
        nops = draw(st.integers(0, 40))
        ip = IP(
            src=a, dst=b, options=[IPOption_NOP()] * nops, flags=draw(st.sampled_from([0, 1, 2]))
        )
        return ip / tcp / payload, Packet(version, src, dst, sport, dport, flags)
    a, b = str(ipaddress.IPv6Address(src)), str(ipaddress.IPv6Address(dst))
    p: Any = IPv6(src=a, dst=b)
    if draw(st.booleans()):
        p = p / IPv6ExtHdrHopByHop()
    mids = [IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(), IPv6ExtHdrFragment(m=1)]
    for ext in draw(st.lists(st.sampled_from(range(3)), max_size=MAX_EXTENSION_HEADERS - 1)):
        p = p / mids[ext].copy()
    return p / tcp / payload, Packet(version, src, dst, sport, dport, flags)


@needs_scapy
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(built())
def test_random_built_packets(case: tuple[Any, Packet]) -> None:
    p, want = case
    data = bytes(p)
    assert parse(data) == want
    assert _scapy_fields(data) == (
        want.version,
        want.src,
        want.dst,
        want.sport,
        want.dport,
        want.flags,
    )
