"""The one-router lab's record for the CLI: ``op25b lab up|down|status`` across processes.

Owns the small JSON state files (one per lab, written atomically under
``DEFAULT_STATE_DIR``) that let another process find a lab again, and what
``lab status`` shows (text and ``--json``), including lab-like namespaces nobody
recorded. Building and tearing down a lab is ``op25b.lab.topology``'s.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from op25b.lab.netns import list_netns, netns_exists
from op25b.lab.topology import (
    DEFAULT_PREFIX,
    DEFAULT_STATE_DIR,
    HOSTS,
    NS_NAME_RE,
    ROLES,
    RTR_IFNAMES,
    Lab,
    LabError,
    create_lab,
    destroy_lab,
    ns_addresses,
)


def _state_file(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.json"


def _read_states(state_dir: Path) -> list[tuple[Lab, dict[str, Any]]]:
    out: list[tuple[Lab, dict[str, Any]]] = []
    if not state_dir.is_dir():
        return out
    for path in sorted(state_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and data.get("kind") == "fleet":
                continue  # a fleet's state (op25b.lab.fleet reads those)
            out.append((Lab.from_json(data), data))
        except (OSError, ValueError, LabError) as exc:
            raise LabError(f"{path}: unreadable lab state: {exc}") from exc
    return out


def write_state(state_dir: Path, name: str, body: dict[str, Any]) -> None:
    """Record *body* as *name*'s state file (a lab's or a fleet's) in *state_dir*.

    Atomic: a reader never sees half a state file.
    """
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, _state_file(state_dir, name))


def lab_up(state_dir: str = DEFAULT_STATE_DIR, prefix: str = DEFAULT_PREFIX) -> Lab:
    """Create a lab that outlives this process and record it in *state_dir*."""
    sdir = Path(state_dir)
    sdir.mkdir(mode=0o755, parents=True, exist_ok=True)
    lab = create_lab(prefix)
    try:
        body = {
            **lab.to_json(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "hosts": {role: list(h.addresses) for role, h in HOSTS.items()},
            "rtr_ifnames": RTR_IFNAMES,
        }
        write_state(sdir, lab.name, body)
    except BaseException:
        destroy_lab(lab)
        raise
    return lab


def lab_down(name: str | None = None, state_dir: str = DEFAULT_STATE_DIR) -> list[str]:
    """Tear down lab *name* (or every recorded lab when None); returns the names removed.

    A name without a state file is still torn down if its namespaces exist, so a lab
    whose state was lost (e.g. /run wiped by hand) can be removed by name.
    """
    sdir = Path(state_dir)
    if name is None:
        labs = [lab for lab, _ in _read_states(sdir)]
    else:
        lab = Lab.from_name(name)
        if not _state_file(sdir, name).exists() and not any(
            netns_exists(ns) for ns in lab.namespaces
        ):
            raise LabError(f"no lab named {name}")
        labs = [lab]
    done: list[str] = []
    for lab in labs:
        destroy_lab(lab)
        _state_file(sdir, lab.name).unlink(missing_ok=True)
        done.append(lab.name)
    return done


def summarise(addrs: list[str], limit: int = 8) -> str:
    """At most *limit* addresses on one line, then a count of the rest."""
    return _summarise(addrs, limit)


def _summarise(addrs: list[str], limit: int = 8) -> str:
    if len(addrs) <= limit:
        return " ".join(addrs)
    return " ".join(addrs[:limit]) + f" ... (+{len(addrs) - limit} more)"


def _lab_of(ns: str) -> str:
    """The lab name of a lab-like namespace name, or "" for any other namespace."""
    m = NS_NAME_RE.match(ns)
    return m.group("lab") if m is not None and m.group("role") in ROLES else ""


@dataclass(frozen=True)
class NamespaceState:
    """One namespace of a recorded lab: missing, or present with its addresses."""

    role: str
    namespace: str
    present: bool
    addresses: tuple[str, ...]  # "address/len@ifname", kernel link-locals left out


@dataclass(frozen=True)
class LabState:
    """A recorded lab, as ``lab status`` shows it."""

    name: str
    created: str
    namespaces: tuple[NamespaceState, ...]


@dataclass(frozen=True)
class LabsState:
    """Every recorded lab, and lab-like namespaces with no state file (``unrecorded``)."""

    state_dir: str
    labs: tuple[LabState, ...]
    unrecorded: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The ``op25b lab status --json`` document (documented in op25b(8))."""
        return asdict(self)


def labs_state(
    state_dir: str = DEFAULT_STATE_DIR, others: frozenset[str] = frozenset()
) -> LabsState:
    """The recorded labs with their namespaces' addresses, and stray lab namespaces.

    A stray namespace looks like a lab's but has no state file (e.g. a test run killed
    with SIGKILL); `lab down NAME` removes it. *others* are namespaces known to belong
    to something else (a fleet's, whose isp and net would look like a lab's).
    """
    labs: list[LabState] = []
    known: set[str] = set(others)
    for lab, data in _read_states(Path(state_dir)):
        spaces: list[NamespaceState] = []
        for role in ROLES:
            ns = lab.ns(role)
            known.add(ns)
            present = netns_exists(ns)
            addrs = tuple(ns_addresses(ns)) if present else ()
            spaces.append(NamespaceState(role, ns, present, addrs))
        labs.append(LabState(lab.name, str(data.get("created", "?")), tuple(spaces)))
    strays = sorted({_lab_of(ns) for ns in list_netns() if ns not in known and _lab_of(ns)})
    return LabsState(state_dir, tuple(labs), tuple(strays))


def lab_status(state_dir: str = DEFAULT_STATE_DIR, others: frozenset[str] = frozenset()) -> str:
    """Human-readable list of recorded labs, their namespaces and addresses."""
    state = labs_state(state_dir, others)
    lines: list[str] = []
    if not state.labs:
        lines.append(f"no labs recorded in {Path(state_dir)}")
    for lab in state.labs:
        lines.append(f"lab {lab.name} (created {lab.created})")
        for ns in lab.namespaces:
            shown = _summarise(list(ns.addresses)) if ns.present else "MISSING"
            lines.append(f"  {ns.role:<4} {ns.namespace}  {shown}")
    for name in state.unrecorded:
        lines.append(f"unrecorded lab {name} (no state file; `lab down {name}` removes it)")
    return "\n".join(lines) + "\n"
