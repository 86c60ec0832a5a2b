"""Tests for op25b.policy.addr: address/prefix text <-> (version, int), checked against the
standard library's ``ipaddress`` as the independent reference."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from op25b.policy.addr import (
    bits,
    contains,
    format_address,
    parse_address,
    parse_prefix,
    prefix_text,
)
from op25b.policy.model import Prefix

# ------------------------------------------------------------------------ addresses


@pytest.mark.parametrize(
    "text",
    [
        "0.0.0.0",
        "100.64.0.10",
        "255.255.255.255",
        "::",
        "::1",
        "2001:db8::25",
        "2001:db8:100::66",
        "2001:0db8:0000:0000:0000:0000:0000:0025",  # fully expanded, leading zeros
        "2001:DB8::AbCd",  # upper/mixed case
        "::ffff:192.0.2.1",  # embedded IPv4 (v4-mapped)
        "64:ff9b::192.0.2.33",  # NAT64 well-known prefix with dotted tail
        "fe80::",
        "1::",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ],
)
def test_parse_address_matches_ipaddress(text: str) -> None:
    ref = ipaddress.ip_address(text)
    assert parse_address(text) == (ref.version, int(ref))


def test_parse_address_strips_surrounding_whitespace() -> None:
    assert parse_address("  192.0.2.1\n") == (4, int(ipaddress.ip_address("192.0.2.1")))


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "10.1",  # inet_aton shorthand: refused on purpose
        "1.2.3",
        "1.2.3.4.5",
        "1.2.3.256",
        "203.0.113.256",
        "1.2.3.04",  # leading zero: octal in some parsers, refused
        "0x7f.0.0.1",
        "1.2.3.-1",
        ":::",
        "2001:db8::25::1",  # two '::'
        "2001:db8:1:2:3:4:5:6:7",  # nine groups
        "12345::",
        "g::1",
        "fe80::1%eth0",  # zone index
        "[2001:db8::1]",
        "100.64.0.0/16",  # a prefix is not an address
        "localhost",
        "é",
        "1.2.3.4\x00",  # NUL: must still read "not an IP address"
    ],
)
def test_parse_address_refuses_bad_text_with_one_message(text: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_address(text)
    assert str(exc.value) == f"not an IP address: {text!r}"


@pytest.mark.parametrize(
    ("version", "value", "text"),
    [
        (4, 0, "0.0.0.0"),
        (4, 0x64400042, "100.64.0.66"),
        (6, 0, "::"),
        (6, 1, "::1"),
        (6, 0x2001_0DB8_0000_0000_0000_0000_0000_0025, "2001:db8::25"),
        (6, 0x2001_0DB8_0100_0000_0000_0000_0000_0000, "2001:db8:100::"),
        # RFC 5952: the longest zero run is compressed, the first of equal runs
        (6, 0x2001_0DB8_0000_0000_0001_0000_0000_0001, "2001:db8::1:0:0:1"),
        (6, 0x2001_0000_0000_0001_0000_0000_0000_0001, "2001:0:0:1::1"),
        # a single zero group is not compressed
        (6, 0x2001_0DB8_0000_0001_0001_0001_0001_0001, "2001:db8:0:1:1:1:1:1"),
    ],
)
def test_format_address_canonical(version: int, value: int, text: str) -> None:
    assert format_address(version, value) == text
    assert parse_address(text) == (version, value)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_v4_round_trip(value: int) -> None:
    text = format_address(4, value)
    assert text == str(ipaddress.IPv4Address(value))
    assert parse_address(text) == (4, value)


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_v6_round_trip(value: int) -> None:
    text = format_address(6, value)
    assert parse_address(text) == (6, value)
    # Canonical form agrees with ipaddress except for the v4-mapped/compat tails,
    # which ipaddress renders differently across Python versions; compare integers.
    assert int(ipaddress.IPv6Address(text)) == value


def test_bits() -> None:
    assert (bits(4), bits(6)) == (32, 128)


# ------------------------------------------------------------------------- prefixes


@pytest.mark.parametrize(
    "text",
    [
        "100.64.0.0/16",
        "100.64.200.0/29",
        "0.0.0.0/0",
        "192.0.2.1/32",
        "2001:db8:100::/40",
        "2001:db8:b00::/40",
        "2001:db8::25/128",
        "::/0",
        "2001:0db8:0100:0000::/56",  # uncompressed input
        "2001:db8:100:7::/64",
    ],
)
def test_parse_prefix_matches_ipaddress(text: str) -> None:
    ref = ipaddress.ip_network(text)
    p = parse_prefix(text)
    assert p == Prefix(ref.version, int(ref.network_address), ref.prefixlen)
    assert prefix_text(p) == str(ref)


@pytest.mark.parametrize(("text", "length"), [("192.0.2.1", 32), ("2001:db8::1", 128)])
def test_bare_address_is_a_host_prefix(text: str, length: int) -> None:
    version, value = parse_address(text)
    assert parse_prefix(text) == Prefix(version, value, length)


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("100.64.1.0/16", "100.64.0.0/16"),
        ("192.0.2.1/24", "192.0.2.0/24"),
        ("100.64.200.3/29", "100.64.200.0/29"),
        ("2001:db8::1/64", "2001:db8::/64"),
        ("2001:db8:100:1::/40", "2001:db8:100::/40"),
        ("1.2.3.4/0", "0.0.0.0/0"),
    ],
)
def test_host_bits_error_suggests_the_network(text: str, suggestion: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_prefix(text)
    assert str(exc.value) == f"host bits set in {text!r} (did you mean {suggestion}?)"
    # non-strict masks to exactly the suggested network
    assert prefix_text(parse_prefix(text, strict=False)) == suggestion


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.2.3.0/33", "prefix length /33 is longer than /32"),
        ("2001:db8::/129", "prefix length /129 is longer than /128"),
        ("1.2.3.0/", "bad prefix length"),
        ("1.2.3.0/x", "bad prefix length"),
        ("1.2.3.0/-1", "bad prefix length"),
        ("1.2.3.0/+8", "bad prefix length"),
        ("1.2.3.0/ 8", "bad prefix length"),
        ("1.2.3.0/0024", "bad prefix length"),
        ("1.2.3.0/²", "bad prefix length"),  # a unicode digit int() would refuse
        ("1.2.3.0/24/8", "bad prefix length"),
        ("1.2.3/24", "not an IP address"),
        ("/24", "not an IP address"),
        ("2001:db8:::/48", "not an IP address"),
    ],
)
def test_parse_prefix_refuses_bad_text(text: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_prefix(text)
    assert message in str(exc.value)


@given(st.integers(min_value=0, max_value=2**128 - 1), st.integers(min_value=0, max_value=128))
def test_prefix_text_round_trips_v6(value: int, length: int) -> None:
    net = value & ~((1 << (128 - length)) - 1)
    p = Prefix(6, net, length)
    assert parse_prefix(prefix_text(p)) == p
    ref = ipaddress.IPv6Network(prefix_text(p))
    assert (int(ref.network_address), ref.prefixlen) == (net, length)


# ------------------------------------------------------------------------- contains


@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=0, max_value=32),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_contains_v4_agrees_with_ipaddress(base: int, length: int, probe: int) -> None:
    net = ipaddress.IPv4Network((base, length), strict=False)
    p = Prefix(4, int(net.network_address), length)
    assert contains(p, 4, probe) == (ipaddress.IPv4Address(probe) in net)


@given(
    st.integers(min_value=0, max_value=2**128 - 1),
    st.integers(min_value=0, max_value=128),
    st.integers(min_value=0, max_value=2**128 - 1),
)
def test_contains_v6_agrees_with_ipaddress(base: int, length: int, probe: int) -> None:
    net = ipaddress.IPv6Network((base, length), strict=False)
    p = Prefix(6, int(net.network_address), length)
    assert contains(p, 6, probe) == (ipaddress.IPv6Address(probe) in net)
    # the network's own first and last addresses are inside, one past the end is not
    assert contains(p, 6, int(net.network_address))
    assert contains(p, 6, int(net.broadcast_address))
    if int(net.broadcast_address) < 2**128 - 1:
        assert not contains(p, 6, int(net.broadcast_address) + 1)


def test_contains_boundaries_v4() -> None:
    p = parse_prefix("100.64.200.0/29")
    inside = [parse_address(f"100.64.200.{i}")[1] for i in range(8)]
    assert all(contains(p, 4, a) for a in inside)
    assert not contains(p, 4, parse_address("100.64.200.8")[1])
    assert not contains(p, 4, parse_address("100.64.199.255")[1])


def test_contains_never_matches_across_families() -> None:
    # ::/0 covers every IPv6 address, but an IPv4 address with the same integer is not one
    assert not contains(parse_prefix("::/0"), 4, parse_address("192.0.2.1")[1])
    assert not contains(parse_prefix("0.0.0.0/0"), 6, 1)
    assert contains(parse_prefix("0.0.0.0/0"), 4, 1)
