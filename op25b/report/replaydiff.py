"""``op25b replay NEW CAPTURE --against OLD``: which connections of real traffic a
policy change would decide differently.

Every attempt ``op25b.report.replay.walk`` selects (under the guarded ports of either
policy) is decided under both; a decision *changes* when the verdict, the reason or
the plan differs (the deciding lines always differ between two files, so they are
shown, not compared). A flow counts as established once either policy let its SYN
through and the peer answered: the capture was taken under one of them, and neither
would have decided the rest of such a connection.

Changes are grouped by (before, after) decision, deciding lines included, biggest
first; in each, the (source, destination, port) pairs with their connections (distinct
source ports) and attempts (decided packets).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from op25b.dataplane.packet import Packet
from op25b.policy.addr import format_address
from op25b.policy.compiled import CompiledPolicy
from op25b.policy.decide import Decision, Reason, Verdict
from op25b.report.pcapread import ProgressFn, Record
from op25b.report.replay import Decider, WalkTotals, read_capture, walk

# (version, source, destination, destination port)
Pair = tuple[int, int, int, int]


@dataclass
class Change:
    """Attempts whose decision goes from ``before`` to ``after``."""

    before: Decision
    after: Decision
    attempts: int = 0
    # pair -> [source ports seen, attempts]
    pairs: dict[Pair, list[Any]] = field(default_factory=dict)

    @property
    def connections(self) -> int:
        """Distinct connections (source port included) of the change."""
        return sum(len(ports) for ports, _ in self.pairs.values())

    def merge(self, other: Change) -> None:
        """Add another tally of the same change (memo refills make equal decisions)."""
        self.attempts += other.attempts
        for pair, (ports, n) in other.pairs.items():
            mine = self.pairs.setdefault(pair, [set(), 0])
            mine[0] |= ports
            mine[1] += n

    def rows(self) -> list[tuple[str, str, int, int, int]]:
        """(source, destination, port, connections, attempts), most attempts first."""
        rows = [
            (format_address(v, src), format_address(v, dst), port, len(ports), n)
            for (v, src, dst, port), (ports, n) in self.pairs.items()
        ]
        rows.sort(key=lambda r: (-r[4], -r[3], r[0], r[1], r[2]))
        return rows


@dataclass
class ReplayDiff(WalkTotals):
    """A capture decided under two policies."""

    changes: list[Change] = field(default_factory=list)

    @property
    def changed_attempts(self) -> int:
        """Attempts whose decision changes."""
        return sum(c.attempts for c in self.changes)


# A placeholder decision for the tally of unchanged attempts.
_ANY = Decision(Verdict.ACCEPT, Reason.NOT_GUARDED, None, None)


def _same(a: Decision, b: Decision) -> bool:
    return a.verdict is b.verdict and a.reason is b.reason and a.plan == b.plan


def replay_against(
    old: CompiledPolicy,
    new: CompiledPolicy,
    path: str,
    now: datetime,
    progress: ProgressFn | None = None,
) -> ReplayDiff:
    """Decide the capture file's attempts under ``old`` and ``new``; list what changes."""
    res = ReplayDiff()
    return _compare(old, new, read_capture(path, res, progress), now, res)


def compare_records(
    old: CompiledPolicy, new: CompiledPolicy, records: Iterable[Record], now: datetime
) -> ReplayDiff:
    """``replay_against`` for records from elsewhere."""
    return _compare(old, new, records, now, ReplayDiff())


def _compare(
    old: CompiledPolicy,
    new: CompiledPolicy,
    records: Iterable[Record],
    now: datetime,
    res: ReplayDiff,
) -> ReplayDiff:
    before_of, after_of = Decider(old, now), Decider(new, now)
    # Keyed by the memoised Decision objects: one dict lookup per attempt. Unchanged
    # decisions map to the one ``unchanged`` tally, which is never reported.
    tallies: dict[tuple[int, int], Change] = {}
    unchanged = Change(_ANY, _ANY)

    def attempt(_ts: float, pkt: Packet) -> bool:
        before, after = before_of(pkt), after_of(pkt)
        key = (id(before), id(after))
        change = tallies.get(key)
        if change is None:
            change = tallies[key] = unchanged if _same(before, after) else Change(before, after)
        if change is not unchanged:
            change.attempts += 1
            pair = (pkt.version, pkt.src, pkt.dst, pkt.dport)
            tally = change.pairs.get(pair)
            if tally is None:
                change.pairs[pair] = [{pkt.sport}, 1]
            else:
                tally[0].add(pkt.sport)
                tally[1] += 1
        return before.verdict.passes or after.verdict.passes

    walk(records, old.guarded | new.guarded, res, attempt)
    merged: dict[tuple[Decision, Decision], Change] = {}
    for change in tallies.values():
        if change is unchanged:
            continue
        same = merged.get((change.before, change.after))
        if same is None:
            merged[(change.before, change.after)] = change
        else:
            same.merge(change)
    res.changes = sorted(
        merged.values(),
        key=lambda c: (
            -c.attempts,
            -c.connections,
            str(c.before.as_dict()),
            str(c.after.as_dict()),
        ),
    )
    return res


def _decision_text(d: Decision) -> str:
    plan = f" (plan {d.plan})" if d.plan else ""
    rule = f"  [{d.rule}]" if d.rule else ""
    return f"{d.verdict.value}, {d.reason.value}{plan}{rule}"


def write_text(res: ReplayDiff, capture: str, top: int, out: TextIO) -> None:
    """The reviewer's table: one block per change, its busiest pairs first."""
    print(
        f"{capture}: {res.packets_read} packets read, {res.decided} attempts decided under "
        f"both policies, {res.changed_attempts} change "
        f"({sum(c.connections for c in res.changes)} connections)",
        file=out,
    )
    for i, c in enumerate(res.changes, 1):
        print(f"\nchange {i}: {c.attempts} attempts, {c.connections} connections", file=out)
        print(f"  before: {_decision_text(c.before)}", file=out)
        print(f"  after:  {_decision_text(c.after)}", file=out)
        rows = c.rows()
        print(
            f"    {'source':<40} {'destination':<40} {'port':>5} {'conns':>6} {'attempts':>8}",
            file=out,
        )
        for src, dst, port, conns, n in rows[:top]:
            print(f"    {src:<40} {dst:<40} {port:>5} {conns:>6} {n:>8}", file=out)
        if len(rows) > top:
            print(f"    ... {len(rows) - top} more (--top, --json)", file=out)


def as_json(res: ReplayDiff) -> dict[str, Any]:
    """``replay --against --json``: the totals, then every change with all its pairs."""
    return {
        **res.as_dict(),
        "changed_attempts": res.changed_attempts,
        "changed_connections": sum(c.connections for c in res.changes),
        "changes": [
            {
                "before": c.before.as_dict(),
                "after": c.after.as_dict(),
                "attempts": c.attempts,
                "connections": c.connections,
                "pairs": [
                    {
                        "source": src,
                        "destination": dst,
                        "port": port,
                        "connections": conns,
                        "attempts": n,
                    }
                    for src, dst, port, conns, n in c.rows()
                ],
            }
            for c in res.changes
        ],
    }
