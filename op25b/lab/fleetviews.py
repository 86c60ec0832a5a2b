"""The fleet demo's three views of the same counters, side by side (pure).

This module owns what "the views agree" means: per router, the decision counters as
the router's own log has them (the daemon's final counters line), as the central
collector's file has them (the same line after shipping), and as Prometheus has them
(a PromQL sum by router); the fleet total of each, Prometheus's taken as one PromQL
sum over the fleet. Every column of every row must be equal, exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from op25b.policy.decide import Reason, Verdict

VERDICTS: tuple[str, ...] = tuple(v.value for v in Verdict)
REASONS: tuple[str, ...] = tuple(r.value for r in Reason)
COLUMNS: tuple[str, ...] = ("packets", *VERDICTS, *REASONS, "reloads")
VIEWS: tuple[str, ...] = ("router", "collector", "prometheus")
FLEET = "fleet"

Counts = dict[str, int]


def from_syslog(params: Mapping[str, str]) -> Counts:
    """The columns from a counters line's structured data (missing ones are -1)."""
    return {c: int(params.get(c, "-1")) for c in COLUMNS}


def from_prometheus(
    verdicts: Mapping[str, float], reasons: Mapping[str, float], reloads: float
) -> Counts:
    """The columns from PromQL sums by verdict, by reason, and of ok reloads."""
    out = {v: int(verdicts.get(v, 0)) for v in VERDICTS}
    out |= {r: int(reasons.get(r, 0)) for r in REASONS}
    out["packets"] = sum(out[v] for v in VERDICTS)
    out["reloads"] = int(reloads)
    return out


def total(rows: Sequence[Counts]) -> Counts:
    """Column sums."""
    return {c: sum(r[c] for r in rows) for c in COLUMNS}


@dataclass(frozen=True)
class Comparison:
    """The table: (router or "fleet", view) -> counts, and the cells that differ."""

    routers: tuple[str, ...]
    cells: dict[tuple[str, str], Counts]
    mismatches: tuple[str, ...]  # "r2 blocked: router 9, collector 9, prometheus 8"

    @property
    def agree(self) -> bool:
        return not self.mismatches


def compare(views: Mapping[str, Mapping[str, Counts]], fleet_prometheus: Counts) -> Comparison:
    """*views*: view -> router -> counts; the fleet rows are sums (Prometheus: its own sum)."""
    routers = tuple(sorted({r for per in views.values() for r in per}, key=_router_order))
    cells: dict[tuple[str, str], Counts] = {}
    for view in VIEWS:
        per = views.get(view, {})
        for router in routers:
            cells[(router, view)] = dict(per.get(router, {c: -1 for c in COLUMNS}))
        cells[(FLEET, view)] = total([cells[(r, view)] for r in routers])
    cells[(FLEET, "prometheus")] = dict(fleet_prometheus)
    mismatches = []
    for name in (*routers, FLEET):
        for c in COLUMNS:
            values = [cells[(name, view)][c] for view in VIEWS]
            if len(set(values)) != 1 or values[0] < 0:
                shown = ", ".join(f"{v} {n}" for v, n in zip(VIEWS, values, strict=True))
                mismatches.append(f"{name} {c}: {shown}")
    return Comparison(routers, cells, tuple(mismatches))


def _router_order(name: str) -> tuple[int, str]:
    digits = name.lstrip("r")
    return (int(digits), name) if digits.isdigit() else (1 << 30, name)


SHOWN: tuple[str, ...] = (
    "packets",
    "accept",
    "reject",
    "drop",
    "blocked",
    "exemption",
    "exempt_plan",
    "provider_mta",
    "not_subscriber",
    "reloads",
)


def rows(cmp: Comparison) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Header and rows for printing: every router's three views, then the fleet's."""
    header = ("ROUTER", "VIEW", *(c.upper() for c in SHOWN), "AGREE")
    out: list[tuple[str, ...]] = []
    for name in (*cmp.routers, FLEET):
        agree = all(len({cmp.cells[(name, v)][c] for v in VIEWS}) == 1 for c in COLUMNS)
        for i, view in enumerate(VIEWS):
            label = f"{view} (PromQL sum)" if name == FLEET and view == "prometheus" else view
            cells = tuple(str(cmp.cells[(name, view)][c]) for c in SHOWN)
            mark = ("yes" if agree else "NO") if i == 0 else ""
            out.append((name if i == 0 else "", label, *cells, mark))
    return header, out
