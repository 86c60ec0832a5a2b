"""Pure tests for ``op25b.kernel.nfttext``: the text of op25b's own nft table."""

from __future__ import annotations

import pytest

from op25b.kernel.names import ACCEPT_MARK, MARK_MASK, REJECT_MARK, TRUSTED_CONNMARK
from op25b.kernel.nfttext import (
    KEEP_MASK,
    PRIORITY,
    clear_rule,
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
