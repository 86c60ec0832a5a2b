"""Source keys (``op25b.dataplane.keys``): one int per source, the two families apart."""

from __future__ import annotations

import pytest

from op25b.dataplane.keys import V6_KEY_BIT, key_address, source_key
from op25b.policy.addr import parse_address


@pytest.mark.parametrize(
    ("v4", "v6"),
    [("0.0.0.0", "::"), ("0.0.0.1", "::1"), ("100.64.0.66", "::100.64.0.66")],
)
def test_equal_bits_of_the_two_families_get_different_keys(v4: str, v6: str) -> None:
    (f4, a4), (f6, a6) = parse_address(v4), parse_address(v6)
    assert a4 == a6
    assert source_key(f4, a4) != source_key(f6, a6)
    assert key_address(source_key(f4, a4)) == (4, a4)
    assert key_address(source_key(f6, a6)) == (6, a6)


def test_v6_key_bit_is_above_every_address() -> None:
    top = (1 << 128) - 1
    assert V6_KEY_BIT == 1 << 128
    assert source_key(6, top) == top | V6_KEY_BIT
    assert key_address(source_key(6, top)) == (6, top)
    assert source_key(4, 0xFFFFFFFF) == 0xFFFFFFFF
