"""The verdicts the per-packet path hands to the queue binding, as small integers.

Integers, not the ``Verdict`` enum, because the binding compares them once per packet
and an int comparison is the cheapest thing Python has; ``op25b.kernel.nfq`` turns
them into netfilter verdicts and marks.
"""

from __future__ import annotations

from op25b.policy.decide import Verdict

VERDICT_ACCEPT = 0
VERDICT_DROP = 1
VERDICT_REJECT = 2

# MONITOR lets the packet through: to the kernel it is an accept.
FOR_VERDICT = {
    Verdict.ACCEPT: VERDICT_ACCEPT,
    Verdict.MONITOR: VERDICT_ACCEPT,
    Verdict.DROP: VERDICT_DROP,
    Verdict.REJECT: VERDICT_REJECT,
}
