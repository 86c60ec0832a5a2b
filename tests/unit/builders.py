"""Build ``op25b.policy.model`` objects directly in unit tests, without YAML or the loader.

Every object gets a distinct synthetic Location (file ``test.yaml``, one line per
element, in the order given) so tests can assert *which* rule decided. Defaults
mirror policies/example.yaml; pass an empty mapping/list to get none::

    policy = make_policy(
        plans={"residential": (False, ["100.64.0.0/16"]), "biz": (True, ["100.64.9.0/29"])},
        mtas=["203.0.113.25"],
        exemptions=[("100.64.7.7/32", datetime(2027, 1, 31, tzinfo=UTC))],
        action=Action.DROP,
    )
    compiled = compile_policy(policy)  # or: make_compiled(...)
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta

from op25b.policy.addr import parse_address, parse_prefix
from op25b.policy.compiled import CompiledPolicy, compile_policy
from op25b.policy.model import (
    Action,
    DaemonConfig,
    Exemption,
    Location,
    Plan,
    Policy,
    Prefix,
    PrefixList,
    ProviderMta,
)

TEST_FILE = "test.yaml"

# A plan spec: (exempt, prefixes), bare prefixes (not exempt), or a ready Plan.
PlanSpec = tuple[bool, Iterable[str | Prefix]] | Iterable[str | Prefix] | Plan
# An exemption spec: (prefix, expires[, ticket[, reason]]) or a ready Exemption.
ExemptionSpec = (
    tuple[str | Prefix, datetime | date]
    | tuple[str | Prefix, datetime | date, str]
    | tuple[str | Prefix, datetime | date, str, str]
    | Exemption
)

DEFAULT_PLANS: Mapping[str, PlanSpec] = {
    "residential": (False, ["100.64.0.0/16", "2001:db8:100::/40"]),
    "business-static": (True, ["198.51.100.0/24", "2001:db8:b00::/40"]),
}
DEFAULT_MTAS: Sequence[str] = ("203.0.113.25", "2001:db8:25::25")
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


class _Lines:
    """Hands out consecutive line numbers so every built Location is distinct."""

    def __init__(self, file: str = TEST_FILE, first: int = 1) -> None:
        self.file = file
        self._next = itertools.count(first)

    def next(self, col: int = 1) -> Location:
        return Location(self.file, next(self._next), col)


def as_prefix(p: str | Prefix) -> Prefix:
    """A Prefix from text (strict: host bits refused) or unchanged."""
    return p if isinstance(p, Prefix) else parse_prefix(p)


def make_prefix_list(
    prefixes: Iterable[str | Prefix], *, file: str = TEST_FILE, first_line: int = 1, col: int = 7
) -> PrefixList:
    """A PrefixList whose prefix i sits at ``file:first_line+i:col``."""
    items = tuple(as_prefix(p) for p in prefixes)
    n = len(items)
    return PrefixList.build(
        items,
        files=(file,),
        file_index=bytes(n),
        lines=array("I", range(first_line, first_line + n)),
        cols=array("I", [col]) * n,
    )


def make_plan(
    name: str,
    prefixes: Iterable[str | Prefix],
    *,
    exempt: bool = False,
    location: Location | None = None,
    file: str = TEST_FILE,
    first_line: int = 1,
) -> Plan:
    """One plan; its own Location defaults to the line before its first prefix."""
    loc = location or Location(file, max(1, first_line - 1), 3)
    return Plan(name, exempt, make_prefix_list(prefixes, file=file, first_line=first_line), loc)


def expiry(when: datetime | date) -> datetime:
    """Aware UTC expiry: a date expires at the end of that UTC day (as the loader does)."""
    if isinstance(when, datetime):
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return datetime.combine(when, time(), tzinfo=UTC) + timedelta(days=1)


def make_policy(
    plans: Mapping[str, PlanSpec] | None = None,
    mtas: Mapping[str, Iterable[str]] | Iterable[str] | None = None,
    exemptions: Iterable[ExemptionSpec] = (),
    *,
    action: Action = Action.DROP,
    guarded_ports: Iterable[int] = (25,),
    daemon: DaemonConfig | None = None,
    source: str = TEST_FILE,
) -> Policy:
    """A Policy built in code. ``plans`` and ``mtas`` default to policies/example.yaml's.

    ``mtas`` is either ``{"name": [addresses]}`` or a flat list of addresses (one MTA
    called ``smarthost``). Locations are allocated in the order: guarded_ports,
    action, then each plan (its line, then one line per prefix), MTAs, exemptions.
    """
    lines = _Lines(source)
    guarded_loc = lines.next(16)
    action_loc = lines.next(9)
    built_plans: list[Plan] = []
    for name, spec in (DEFAULT_PLANS if plans is None else plans).items():
        if isinstance(spec, Plan):
            built_plans.append(spec)
            continue
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], bool):
            exempt, prefixes = spec
        else:
            exempt, prefixes = False, spec
        plan_loc = lines.next(3)
        items = list(prefixes)
        first = plan_loc.line + 1
        built_plans.append(
            make_plan(name, items, exempt=exempt, location=plan_loc, file=source, first_line=first)
        )
        for _ in items:
            lines.next()  # keep later Locations distinct from the prefixes' lines
    mta_map: Mapping[str, Iterable[str]]
    if mtas is None:
        mta_map = {"smarthost": DEFAULT_MTAS}
    elif isinstance(mtas, Mapping):
        mta_map = mtas
    else:
        mta_map = {"smarthost": list(mtas)}
    built_mtas = []
    for name, addresses in mta_map.items():
        mta_loc = lines.next(3)
        parsed = tuple(parse_address(a) for a in addresses)
        locs = tuple(lines.next(17) for _ in parsed)
        built_mtas.append(ProviderMta(name, parsed, locs, mta_loc))
    built_exemptions = []
    for n, ex in enumerate(exemptions):
        if isinstance(ex, Exemption):
            built_exemptions.append(ex)
            continue
        prefix, when, *rest = ex
        ticket = str(rest[0]) if rest else f"ABUSE-{n + 1}"
        reason = str(rest[1]) if len(rest) > 1 else "test"
        built_exemptions.append(
            Exemption(as_prefix(prefix), ticket, expiry(when), reason, lines.next(5))
        )
    return Policy(
        source=source,
        guarded_ports=frozenset(guarded_ports),
        action=action,
        plans=tuple(built_plans),
        provider_mtas=tuple(built_mtas),
        exemptions=tuple(built_exemptions),
        daemon=daemon or DaemonConfig(),
        guarded_ports_location=guarded_loc,
        action_location=action_loc,
    )


def make_compiled(*args: object, **kwargs: object) -> CompiledPolicy:
    """``compile_policy(make_policy(...))`` in one call."""
    return compile_policy(make_policy(*args, **kwargs))  # type: ignore[arg-type]


def addr(text: str) -> tuple[int, int]:
    """``(version, int)`` from address text; shorthand for tests."""
    return parse_address(text)
