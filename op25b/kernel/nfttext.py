"""The nft table op25b owns (``table inet op25b``), as ``nft -f`` text: pure, no kernel.

What it is for: op25b's mark nibble must not be trusted on entry. The verdicts travel
as packet marks (``op25b.kernel.ruletext``), so a mark someone upstream sets -- an
admin's ``CONNMARK --restore-mark`` in mangle PREROUTING (the usual multi-WAN set-up),
a tc filter, a sloppy ``--set-mark`` -- could otherwise pass for "op25b accepted this".

Why a native nft base chain at forward priority -151, and not a rule in iptables:

- The daemon's accept is mark + NF_REPEAT, and NF_REPEAT re-runs only the *same hook
  entry* (iptables' mangle FORWARD, priority -150), not the ones before it. A clearing
  rule inside mangle FORWARD would therefore also wipe the verdict on the repeat pass.
- Clearing in mangle PREROUTING is undone by an admin's restore later in that chain.
- A base chain of our own at -151 runs once per packet, after every PREROUTING hook
  and just before mangle FORWARD (checked on this kernel: plain nft base chains and
  ``meta mark set`` work; only nft's ``queue`` statement is missing).

Only TCP to a guarded port is touched, and only op25b's bits: other mark bits stay.
op25b never runs ``flush ruleset``: install replaces exactly this table (declare,
delete, define, in one ``nft -f`` transaction) and removal deletes exactly it.
"""

from __future__ import annotations

from op25b.kernel.names import MARK_MASK, NFT_FAMILY, NFT_TABLE

PRIORITY = -151  # iptables' mangle is -150 (NF_IP_PRI_MANGLE); see the module docstring
CHAIN = "forward"
KEEP_MASK = ~MARK_MASK & 0xFFFFFFFF  # every bit but op25b's nibble

_TABLE = f"{NFT_FAMILY} {NFT_TABLE}"
# Declaring an empty table first makes the delete valid whether or not it exists, so
# install and removal are each one transaction that never fails on "no such table".
_DROP_OLD = f"table {_TABLE}\ndelete table {_TABLE}\n"


def _port_set(ports: tuple[int, ...]) -> str:
    if not ports:
        raise ValueError("guarded_ports is empty")
    if any(not 0 < p < 65536 for p in ports):
        raise ValueError(f"bad port in {ports}")
    unique = sorted(set(ports))
    if len(unique) == 1:  # nft prints a one-element set back as the bare value
        return str(unique[0])
    return "{ " + ", ".join(str(p) for p in unique) + " }"


def clear_rule(ports: tuple[int, ...]) -> str:
    """The one rule, in the form ``nft list`` prints it back (used to verify it)."""
    return f"tcp dport {_port_set(ports)} meta mark set meta mark & {KEEP_MASK:#010x}"


def render_table(ports: tuple[int, ...]) -> str:
    """``nft -f`` text that replaces (or creates) op25b's table for ``ports``."""
    return (
        _DROP_OLD
        + f"table {_TABLE} {{\n"
        + f"\tchain {CHAIN} {{\n"
        + f"\t\ttype filter hook forward priority {PRIORITY}; policy accept;\n"
        + f"\t\t{clear_rule(ports)}\n"
        + "\t}\n"
        + "}\n"
    )


def render_table_removal() -> str:
    """``nft -f`` text that deletes op25b's table, and a no-op when it is absent."""
    return _DROP_OLD


def table_present(list_tables: str) -> bool:
    """Whether ``nft list tables`` output names op25b's table."""
    return f"table {_TABLE}" in (line.strip() for line in list_tables.splitlines())


# How ``nft list`` prints the base chain's header back (it names the priority).
_HEADER = f"type filter hook forward priority mangle - {-PRIORITY - 150}; policy accept;"


def parse_table(listing: str) -> tuple[str, ...]:
    """The statements of ``nft list table inet op25b`` output (empty: no table)."""
    return tuple(
        line.strip()
        for line in listing.splitlines()
        if line.strip() and not line.strip().endswith("{") and line.strip() != "}"
    )


def expected_table(ports: tuple[int, ...]) -> tuple[str, ...]:
    """What ``parse_table`` reads back once ``render_table(ports)`` is installed."""
    return (_HEADER, clear_rule(ports))
