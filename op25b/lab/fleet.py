"""Fleet labs: create, record, find and remove the N-router lab of ``op25b.lab.fleetplan``.

This module owns a fleet's identity (its name and namespace names, ``<name>-<role>``),
its state file next to the one-router labs' (``"kind": "fleet"``), and the fleet half
of ``op25b lab up --routers N | down | status``. Building and removing go through
``op25b.lab.wiring``; the one-router lab stays ``op25b.lab.topology``'s.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from op25b.lab import fleetplan as FP
from op25b.lab import topology as T
from op25b.lab import wiring
from op25b.lab.labstate import NamespaceState, summarise, write_state
from op25b.lab.netns import list_netns, netns_exists

DEFAULT_PREFIX = "op25bfleet"


@dataclass(frozen=True)
class Fleet:
    """A running (or remembered) fleet lab."""

    name: str
    routers: int

    @classmethod
    def new(cls, routers: int, prefix: str = DEFAULT_PREFIX) -> Fleet:
        """A fleet with a fresh random name (nothing built yet)."""
        FP.sites(routers)  # validates the count
        return cls(T.new_name(prefix), routers)

    @property
    def plan(self) -> FP.Plan:
        return FP.fleet_plan(self.routers)

    @property
    def sites(self) -> tuple[FP.Site, ...]:
        return FP.sites(self.routers)

    def ns(self, role: str) -> str:
        """Namespace name of *role* (``core``, ``isp``, ``net``, ``col``, ``r2``, ``r2bot`` ...)."""
        return f"{self.name}-{role}"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(self.ns(role) for role in self.plan.roles)


def create_fleet(routers: int, prefix: str = DEFAULT_PREFIX) -> Fleet:
    """Build a fleet of *routers* edge routers; undone on any failure or interrupt."""
    fleet = Fleet.new(routers, prefix)
    try:
        wiring.build(fleet.plan, fleet.ns)
    except BaseException:
        wiring.destroy(fleet.plan, fleet.ns)
        raise
    return fleet


def destroy_fleet(fleet: Fleet) -> None:
    """Remove every process, link and namespace of *fleet* (idempotent)."""
    wiring.destroy(fleet.plan, fleet.ns)


@contextlib.contextmanager
def fleet_session(routers: int, prefix: str = DEFAULT_PREFIX) -> Iterator[Fleet]:
    """``with fleet_session(3) as fleet:`` — always torn down on exit."""
    fleet = create_fleet(routers, prefix)
    try:
        yield fleet
    finally:
        destroy_fleet(fleet)


# --- the CLI's side: state files -------------------------------------------------------


def _states(state_dir: Path) -> list[tuple[Fleet, dict[str, Any]]]:
    out: list[tuple[Fleet, dict[str, Any]]] = []
    if not state_dir.is_dir():
        return out
    for path in sorted(state_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            if not (isinstance(data, dict) and data.get("kind") == "fleet"):
                continue
            fleet = Fleet(T.Lab.from_name(str(data.get("name"))).name, int(data["routers"]))
            FP.sites(fleet.routers)
        except (OSError, ValueError, KeyError, TypeError, T.LabError) as exc:
            raise T.LabError(f"{path}: unreadable fleet state: {exc}") from exc
        out.append((fleet, data))
    return out


def fleet_up(routers: int, state_dir: str = T.DEFAULT_STATE_DIR) -> Fleet:
    """Create a fleet that outlives this process and record it in *state_dir*."""
    sdir = Path(state_dir)
    sdir.mkdir(mode=0o755, parents=True, exist_ok=True)
    fleet = create_fleet(routers)
    try:
        body = {
            "kind": "fleet",
            "name": fleet.name,
            "routers": routers,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "namespaces": {role: fleet.ns(role) for role in fleet.plan.roles},
        }
        write_state(sdir, fleet.name, body)
    except BaseException:
        destroy_fleet(fleet)
        raise
    return fleet


def fleet_down(name: str | None, state_dir: str = T.DEFAULT_STATE_DIR) -> list[str]:
    """Remove fleet *name* (or every recorded fleet); the names removed.

    A name that is no recorded fleet is left for the one-router lab's ``lab_down``.
    """
    sdir = Path(state_dir)
    removed: list[str] = []
    for fleet, _ in _states(sdir):
        if name is None or fleet.name == name:
            destroy_fleet(fleet)
            (sdir / f"{fleet.name}.json").unlink(missing_ok=True)
            removed.append(fleet.name)
    return removed


@dataclass(frozen=True)
class FleetState:
    """A recorded fleet, as ``lab status`` shows it (namespaces in plan order)."""

    name: str
    created: str
    routers: int
    namespaces: tuple[NamespaceState, ...]


def fleet_states(state_dir: str = T.DEFAULT_STATE_DIR) -> tuple[FleetState, ...]:
    """Every recorded fleet with its namespaces' presence and addresses."""
    present = set(list_netns())
    out: list[FleetState] = []
    for fleet, data in _states(Path(state_dir)):
        spaces: list[NamespaceState] = []
        for role in fleet.plan.roles:
            ns = fleet.ns(role)
            here = ns in present and netns_exists(ns)
            addrs = tuple(T.ns_addresses(ns)) if here else ()
            spaces.append(NamespaceState(role, ns, here, addrs))
        out.append(FleetState(fleet.name, str(data.get("created", "?")), fleet.routers,
                              tuple(spaces)))  # fmt: skip
    return tuple(out)


def fleet_status(state_dir: str = T.DEFAULT_STATE_DIR) -> tuple[str, frozenset[str]]:
    """Status lines of the recorded fleets, and every namespace name they own."""
    fleets = fleet_states(state_dir)
    return render_fleets(fleets), owned_namespaces(fleets)


def owned_namespaces(fleets: tuple[FleetState, ...]) -> frozenset[str]:
    """The namespace names the fleets own (a lab's status must not call them strays)."""
    return frozenset(ns.namespace for f in fleets for ns in f.namespaces)


def render_fleets(fleets: tuple[FleetState, ...]) -> str:
    """The fleets as ``lab status`` prints them."""
    lines: list[str] = []
    for f in fleets:
        lines.append(f"fleet {f.name}: {f.routers} routers (created {f.created})")
        for ns in f.namespaces:
            shown = summarise(list(ns.addresses), 4) if ns.present else "MISSING"
            lines.append(f"  {ns.role:<6} {ns.namespace}  {shown}")
    return "".join(f"{line}\n" for line in lines)
