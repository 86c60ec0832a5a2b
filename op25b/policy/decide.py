"""The pure decision core: one connection attempt in, one Decision out.

No I/O, no clock, no globals: the caller passes the compiled policy, the parsed
packet and ``now``. The order of checks and the reason strings are fixed by the
design (tools, logs and tests depend on them).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from op25b.policy.compiled import CompiledPolicy
from op25b.policy.model import Action, Location


class Attempt(Protocol):
    """What ``decide`` reads of a connection attempt (``op25b.dataplane.packet.Packet``
    is one); a protocol so the policy layer needs nothing from the data plane."""

    @property
    def version(self) -> int: ...
    @property
    def src(self) -> int: ...
    @property
    def dst(self) -> int: ...
    @property
    def dport(self) -> int: ...


class Verdict(enum.Enum):
    """What happens to the packet. MONITOR lets it through but counts it as blocked."""

    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"
    MONITOR = "monitor"

    @property
    def passes(self) -> bool:
        """True when the kernel should let the packet through."""
        return self is Verdict.ACCEPT or self is Verdict.MONITOR


class Reason(enum.Enum):
    """Why; the values are stable strings shown to users and written to logs."""

    NOT_GUARDED = "not_guarded"
    PROVIDER_MTA = "provider_mta"
    NOT_SUBSCRIBER = "not_subscriber"
    EXEMPT_PLAN = "exempt_plan"
    EXEMPTION = "exemption"
    BLOCKED = "blocked"


# The verdict of a blocked attempt under each policy action.
ACTION_VERDICT = {
    Action.DROP: Verdict.DROP,
    Action.REJECT: Verdict.REJECT,
    Action.MONITOR: Verdict.MONITOR,
}


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome, with the plan of the source and the policy line that decided."""

    verdict: Verdict
    reason: Reason
    plan: str | None
    rule: Location | None

    def as_dict(self) -> dict[str, str | None]:
        """The stable JSON shape used by ``explain --json`` and ``replay --json``."""
        return {
            "verdict": self.verdict.value,
            "reason": self.reason.value,
            "plan": self.plan,
            "rule": str(self.rule) if self.rule is not None else None,
        }


def decide_addresses(
    policy: CompiledPolicy, version: int, src: int, dst: int, dport: int, now: datetime
) -> Decision:
    """Decide for a (source, destination, port) triple; see the module docstring."""
    if dport not in policy.guarded:
        return Decision(Verdict.ACCEPT, Reason.NOT_GUARDED, None, policy.guarded_location)
    mta = policy.provider_mta(version, dst)
    if mta is not None:
        return Decision(Verdict.ACCEPT, Reason.PROVIDER_MTA, None, mta)
    hit = policy.plan_of(version, src)
    if hit is None:
        return Decision(Verdict.ACCEPT, Reason.NOT_SUBSCRIBER, None, None)
    plan_name = hit.plan.name
    if hit.plan.exempt:
        return Decision(Verdict.ACCEPT, Reason.EXEMPT_PLAN, plan_name, hit.location)
    for exemption in policy.exemptions_of(version, src):
        if exemption.active(now):
            return Decision(Verdict.ACCEPT, Reason.EXEMPTION, plan_name, exemption.location)
    # The rule of a block is the plan prefix that made the source a guarded subscriber:
    # that is what an abuse desk or a support engineer needs to look at.
    return Decision(ACTION_VERDICT[policy.action], Reason.BLOCKED, plan_name, hit.location)


def decide(policy: CompiledPolicy, packet: Attempt, now: datetime) -> Decision:
    """Decide one parsed connection attempt under the policy at instant ``now``."""
    return decide_addresses(policy, packet.version, packet.src, packet.dst, packet.dport, now)
