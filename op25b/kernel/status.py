"""``op25b rules status`` and ``op25b rules show``: the kernel side, for people and monitors.

Status compares op25b's rules and sets as they are now with what the daemon of this
namespace recorded right after its own install (/run/op25b, see
``op25b.kernel.integrity.state_file``); without a record (no daemon, or one that
stopped) it checks the structure only: both chains, their jumps first in FORWARD, the
sets present. ``show`` prints the exact restore texts a policy would install.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from op25b.kernel import rules
from op25b.kernel.integrity import (
    VOLATILE_SETS,
    KernelState,
    from_json,
    problems,
    structural_problems,
)
from op25b.kernel.ipsets import render_load, render_swap
from op25b.kernel.names import iptables_tool
from op25b.kernel.nfttext import render_table
from op25b.kernel.ruletext import RuleConfig, render_rules
from op25b.kernel.setcontents import compute_sets
from op25b.policy.model import Policy


@dataclass(frozen=True)
class RulesStatus:
    """The verdict of a status check."""

    installed: bool
    problems: tuple[str, ...]
    recorded: bool  # compared with the daemon's record (else: structure only)
    state: KernelState

    @property
    def ok(self) -> bool:
        """Installed and intact."""
        return self.installed and not self.problems

    def as_dict(self) -> dict[str, object]:
        """The stable ``--json`` shape."""
        return {
            "ok": self.ok,
            "installed": self.installed,
            "checked_against": "daemon record" if self.recorded else "structure",
            "problems": list(self.problems),
            "sets": dict(sorted(self.state.sets.items())),
            "nft_table": bool(self.state.nft),
            "chains": [
                {
                    "family": v,
                    "table": t,
                    "present": s.has_chain,
                    "rules": len(s.body),
                    "jumps": len(s.jumps),
                    "jumps_first": s.jumps_first,
                }
                for (v, t), s in sorted(self.state.tables.items())
            ],
        }


def check(record_path: str, cmd_prefix: Sequence[str] = ()) -> RulesStatus:
    """Read the kernel (RulesError/OSError if that fails) and judge it."""
    state = rules.read_state(cmd_prefix)
    expected: KernelState | None = None
    try:
        with open(record_path, encoding="ascii") as f:
            expected = from_json(json.load(f))
    except (OSError, ValueError):
        expected = None
    if not state.installed:
        return RulesStatus(False, ("op25b's rules are not installed",), expected is not None, state)
    if expected is not None:
        found = problems(expected, state, VOLATILE_SETS)
    else:
        cache = any(name.startswith("op25b-block") for name in state.sets)
        found = structural_problems(state, block_cache=cache)
    return RulesStatus(True, tuple(found), expected is not None, state)


def show(policy: Policy, now: datetime) -> str:
    """The restore texts ``op25b run`` would install for ``policy`` at ``now``."""
    cfg = RuleConfig.from_policy(policy)
    sets = compute_sets(policy, now)
    parts = [
        "# ipset restore  (loaded into -tmp sets, then swapped in)",
        render_load(sets) + render_swap(sets, existing=()),
    ]
    parts += ["# nft -f -  (op25b's own table: clears its mark bits on entry)"]
    parts += [render_table(cfg.guarded_ports)]
    for v in (4, 6):
        binary = iptables_tool(v)
        parts += [f"# {binary}-restore --noflush", render_rules(cfg, v)]
    return "\n".join(p.rstrip("\n") for p in parts) + "\n"
