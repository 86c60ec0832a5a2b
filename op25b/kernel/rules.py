"""Installing, verifying and removing op25b's rules and sets in the kernel.

The rule text is ``op25b.kernel.ruletext`` (pure); this module runs it through
``iptables-restore --noflush`` / ``ip6tables-restore --noflush`` (one kernel
transaction per table) and ``ipset restore``. Sets are created before rules that
reference them and destroyed after the rules are gone. op25b's nft table (which clears
its mark bits on entry, ``op25b.kernel.nfttext``) goes in before the rules that rely on
it and comes out after them, each with one ``nft -f`` transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from op25b.kernel.commands import run_command
from op25b.kernel.integrity import (
    DIGEST_MAX,
    DIGESTED_SETS,
    KernelState,
    member_digest,
    parse_set_headers,
    parse_table,
)
from op25b.kernel.ipsets import (
    apply_sets,
    destroy_sets,
    discard_loaded,
    list_sets,
    load_families,
    swap_sets,
)
from op25b.kernel.names import (
    CHAIN,
    HOOK_OF,
    NFT_FAMILY,
    NFT_TABLE,
    SET_PREFIX,
    all_set_names,
    iptables_tool,
    set_name,
)
from op25b.kernel.nfttext import parse_table as parse_nft_table
from op25b.kernel.nfttext import render_table, render_table_removal, table_present
from op25b.kernel.ruletext import ALL_TABLES, RuleConfig, render_removal, render_rules
from op25b.kernel.setcontents import FamilySets, SetContents


def _save(version: int, cmd_prefix: Sequence[str]) -> str:
    return run_command([iptables_tool(version, "-save")], cmd_prefix)


def _restore(version: int, text: str, cmd_prefix: Sequence[str]) -> None:
    if text:
        run_command([iptables_tool(version, "-restore"), "--noflush"], cmd_prefix, text)


def _nft(text: str, cmd_prefix: Sequence[str]) -> None:
    run_command(["nft", "-f", "-"], cmd_prefix, text)


def nft_table(cmd_prefix: Sequence[str] = ()) -> str:
    """``nft list table`` of op25b's table, or "" when it is absent."""
    if not table_present(run_command(["nft", "list", "tables"], cmd_prefix)):
        return ""
    return run_command(["nft", "list", "table", NFT_FAMILY, NFT_TABLE], cmd_prefix)


def install(cfg: RuleConfig, sets: SetContents, cmd_prefix: Sequence[str] = ()) -> None:
    """Install (or replace) sets and rules in the namespace ``cmd_prefix`` runs in.

    Idempotent: leftovers of a crashed run are replaced, not doubled. Never fails
    open: on failure nothing is removed. Each table is one kernel transaction, so it
    holds either the old or the new rules; sets are swapped whole. RulesError says
    what failed, and the caller decides (a reload keeps the old policy; the watchdog
    tries again).
    """
    _check_cache(cfg, sets.block_timeout)
    apply_sets(sets, cmd_prefix)
    _finish_install(cfg, cmd_prefix)


def stage(families: Iterable[FamilySets], cmd_prefix: Sequence[str] = ()) -> None:
    """The slow half of ``install`` alone: load the sets into temporaries beside the
    live ones, each family as soon as it is computed. Nothing in force changes:
    ``install_staged`` swaps them in, ``discard_staged`` drops them."""
    load_families(families, cmd_prefix)


def install_staged(cfg: RuleConfig, block_timeout: int, cmd_prefix: Sequence[str] = ()) -> None:
    """The quick half of ``install`` after ``stage``: swap the sets in, then the rules."""
    _check_cache(cfg, block_timeout)
    swap_sets(block_timeout, cmd_prefix)
    _finish_install(cfg, cmd_prefix)


def discard_staged(cmd_prefix: Sequence[str] = ()) -> None:
    """Drop what ``stage`` loaded; the live sets and rules stay as they are."""
    discard_loaded(cmd_prefix)


def _check_cache(cfg: RuleConfig, block_timeout: int) -> None:
    if cfg.uses_block_cache and block_timeout <= 0:
        raise ValueError("block cache rules need a block_timeout in the set contents")


def _finish_install(cfg: RuleConfig, cmd_prefix: Sequence[str]) -> None:
    install_rules(cfg, cmd_prefix)
    if not cfg.uses_block_cache:
        # Safe only now: the old rules that may have referenced them are replaced.
        destroy_sets([set_name("block", 4), set_name("block", 6)], cmd_prefix)


def install_rules(cfg: RuleConfig, cmd_prefix: Sequence[str] = ()) -> None:
    """Replace the rules only (their sets must exist): what a repair of moved rules needs.

    op25b's nft table goes first: the rules rely on it to clear op25b's mark bits.
    """
    _nft(render_table(cfg.guarded_ports), cmd_prefix)
    for v in (4, 6):
        _restore(v, render_rules(cfg, v, _save(v, cmd_prefix)), cmd_prefix)


def read_state(cmd_prefix: Sequence[str] = ()) -> KernelState:
    """op25b's rules and sets as they are now (see ``op25b.kernel.integrity``)."""
    tables = {}
    for v in (4, 6):
        # One save of the tables that exist: ``-t raw`` would create a raw table (and
        # its hook) in a namespace that has none when the verdict cache is off.
        sections = _sections(_save(v, cmd_prefix))
        for table in ALL_TABLES:
            tables[(v, table)] = parse_table(sections.get(table, ""), HOOK_OF[table])
    listing = run_command(["ipset", "list", "-t"], cmd_prefix)
    every = parse_set_headers(listing)
    sets = {name: n for name, n in every.items() if name.startswith(SET_PREFIX)}
    return KernelState(
        tables, sets, parse_nft_table(nft_table(cmd_prefix)), _digests(sets, every, cmd_prefix)
    )


def _digests(
    sets: dict[str, int], every: dict[str, int], cmd_prefix: Sequence[str]
) -> dict[str, str]:
    """Member digests of op25b's static sets up to DIGEST_MAX entries (integrity.py).

    One ``ipset save`` of everything when all sets together are small (the usual case:
    one process per check, not one per set), else one per set digested.
    """
    names = [n for n, count in sets.items() if n in DIGESTED_SETS and 0 < count <= DIGEST_MAX]
    if not names:
        return {}
    if sum(every.values()) <= DIGEST_MAX:
        saved = run_command(["ipset", "save"], cmd_prefix)
        return {name: member_digest(saved, name) for name in names}
    return {
        name: member_digest(run_command(["ipset", "save", name], cmd_prefix), name)
        for name in names
    }


def _sections(saved: str) -> dict[str, str]:
    """``iptables-save`` output split per table (``*name`` .. ``COMMIT``)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in saved.splitlines():
        if line.startswith("*"):
            current = out.setdefault(line[1:].strip(), [])
        elif current is not None:
            current.append(line)
    return {t: "\n".join(lines) + "\n" for t, lines in out.items()}


def update_sets(
    sets: SetContents, cmd_prefix: Sequence[str] = (), previous: SetContents | None = None
) -> None:
    """Reload: swap new set contents in (rules untouched; the daemon rotates the cache).

    The replaced sets are drained in batches before they go (see ``drain_and_destroy``);
    with ``previous`` (the live contents) unchanged sets stay and a big ``subs`` set is
    edited in place (``op25b.kernel.ipsets.plan_changes``).
    """
    apply_sets(sets, cmd_prefix, gentle=True, previous=previous)


def remove(cmd_prefix: Sequence[str] = ()) -> None:
    """Remove exactly op25b's jumps, chains and sets; a no-op when nothing is installed."""
    for v in (4, 6):
        _restore(v, render_removal(_save(v, cmd_prefix)), cmd_prefix)
    _nft(render_table_removal(), cmd_prefix)
    destroy_sets(all_set_names(), cmd_prefix)


_COUNTED = re.compile(r"^\[(\d+):\d+\] -A " + CHAIN + r" (.*)$")
_FAST_PATH_RULES = (
    ("provider_mta", re.compile(r"--match-set op25b-mta[46] dst -j MARK")),
    ("exempt", re.compile(r"--match-set op25b-allow[46] src -j MARK")),
)


def fast_path_counters(cmd_prefix: Sequence[str] = ()) -> dict[str, int]:
    """Packets the fast path accepted in the kernel, per reason, v4+v6, since install.

    These never reach the daemon, so its own counters cannot see them; the counters
    line adds them from the rule counters (``iptables-save -c`` of the mangle table).
    """
    out = dict.fromkeys((name for name, _ in _FAST_PATH_RULES), 0)
    for v in (4, 6):
        text = run_command([iptables_tool(v, "-save"), "-c", "-t", "mangle"], cmd_prefix)
        for line in text.splitlines():
            m = _COUNTED.match(line)
            if not m:
                continue
            for name, pattern in _FAST_PATH_RULES:
                if pattern.search(m.group(2)):
                    out[name] += int(m.group(1))
    return out


def status(cmd_prefix: Sequence[str] = ()) -> str:
    """Human-readable state: our rules (with counters) per family and our sets' sizes."""
    out: list[str] = []
    for v in (4, 6):
        text = run_command([iptables_tool(v, "-save"), "-c"], cmd_prefix)
        table = ""
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif CHAIN in line.split():
                out.append(f"{iptables_tool(v, '')} {table}: {line}")
    out += [f"nft: {ln.strip()}" for ln in nft_table(cmd_prefix).splitlines() if ln.strip()]
    for name in list_sets(cmd_prefix):
        if not name.startswith(SET_PREFIX):
            continue
        header = run_command(["ipset", "list", "-t", name], cmd_prefix)
        count = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in header.splitlines()
                if ln.startswith("Number of entries")
            ),
            "?",
        )
        out.append(f"ipset {name}: {count} entries")
    return "\n".join(out) + ("\n" if out else "")
