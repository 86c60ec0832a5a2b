"""Pure tests for ``op25b.kernel.nfttext`` (the text of op25b's own nft table) and for
how the integrity check sees that table."""

from __future__ import annotations

import pytest

from op25b.kernel.integrity import (
    KernelState,
    from_json,
    problems,
    structural_problems,
    to_json,
)
from op25b.kernel.names import ACCEPT_MARK, MARK_MASK, REJECT_MARK, TRUSTED_CONNMARK
from op25b.kernel.nfttext import (
    KEEP_MASK,
    PRIORITY,
    clear_rule,
    expected_table,
    parse_table,
    render_table,
    render_table_removal,
    table_present,
)


def test_table_replaces_itself_in_one_transaction() -> None:
    text = render_table((2525, 25, 25))
    lines = [ln.strip() for ln in text.splitlines()]
    # declare + delete first: valid whether or not an old table exists
    assert lines[:2] == ["table inet op25b", "delete table inet op25b"]
    assert "type filter hook forward priority -151; policy accept;" in lines
    assert "tcp dport { 25, 2525 } meta mark set meta mark & 0xff0fffff" in lines
    assert "tcp dport 25 meta mark" in render_table((25,))  # as `nft list` prints it
    assert "flush ruleset" not in text  # never someone else's tables


def test_clearing_runs_before_iptables_mangle_and_keeps_other_bits() -> None:
    assert PRIORITY == -151 and PRIORITY < -150  # NF_IP_PRI_MANGLE
    for ours in (ACCEPT_MARK, REJECT_MARK, TRUSTED_CONNMARK, MARK_MASK):
        assert (0x12345678 | ours) & KEEP_MASK & MARK_MASK == 0
    assert 0xFF0FFFFF & KEEP_MASK == 0xFF0FFFFF


def test_removal_deletes_exactly_our_table() -> None:
    assert render_table_removal() == "table inet op25b\ndelete table inet op25b\n"


def test_table_present_reads_nft_list_tables() -> None:
    assert table_present("table ip filter\ntable inet op25b\n")
    assert not table_present("table ip filter\ntable inet op25b-other\ntable ip op25b\n")
    assert not table_present("")


@pytest.mark.parametrize("ports", [(), (0,), (65536,)])
def test_bad_ports_are_refused(ports: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        clear_rule(ports)


LISTING = """table inet op25b {
\tchain forward {
\t\ttype filter hook forward priority mangle - 1; policy accept;
\t\ttcp dport { 25, 2525 } meta mark set meta mark & 0xff0fffff
\t}
}
"""


def test_the_listing_reads_back_as_expected() -> None:
    assert parse_table(LISTING) == expected_table((2525, 25))
    assert parse_table("") == ()


def test_the_watchdog_sees_the_table_go_or_change() -> None:
    want = KernelState({}, {}, expected_table((25,)))
    assert problems(want, want) == []
    assert problems(want, KernelState({}, {})) == ["nft table inet op25b is missing"]
    changed = KernelState({}, {}, expected_table((25, 2525)))
    assert problems(want, changed) == ["nft table inet op25b changed"]
    assert "nft table inet op25b is missing" in structural_problems(KernelState({}, {}))
    assert "nft table inet op25b is missing" not in structural_problems(want)
    assert from_json(to_json(want)) == want
    assert KernelState({}, {}, expected_table((25,))).installed
