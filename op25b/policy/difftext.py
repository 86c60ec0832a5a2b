"""How ``op25b diff`` shows a ``PolicyDiff``: the text a reviewer reads top-down, and
the stable ``--json`` document (``docs/diff-format.md``).

Owns only presentation; the computation is ``op25b.policy.diff``'s. The text keeps
each change short (a few source ranges, then a count of the rest); the JSON lists
every range.
"""

from __future__ import annotations

from typing import Any

from op25b.policy import addr
from op25b.policy.diff import Change, Destination, Outcome, PolicyDiff, Side, Span
from op25b.policy.summary import expiry_text

MAX_ROWS = 10  # source ranges shown per change in the text
MAX_BLOCKS = 3  # CIDR blocks shown per range in the text
FAMILY = {4: "IPv4", 6: "IPv6"}


def render_text(diff: PolicyDiff) -> str:
    """The human report: a title, then each change numbered, then expiring exemptions."""
    when = diff.now.strftime("%Y-%m-%d %H:%M:%S UTC")
    count = len(diff.changes)
    what = f"{count} change" + ("" if count == 1 else "s") if count else "no decision changes"
    lines = [f"{diff.old} -> {diff.new}: {what} (exemptions as of {when})"]
    for n, change in enumerate(diff.changes, 1):
        lines.append("")
        lines += _change(n, change, diff)
    if diff.expiring:
        days = diff.horizon.days
        lines += ["", f"exemptions of {diff.new} expiring within {days} days:"]
        for e in diff.expiring:
            reason = f"  ({e.reason})" if e.reason else ""
            lines.append(
                f"  {addr.prefix_text(e.prefix)}  {e.ticket}  {expiry_text(e.expires)}"
                f"  [{e.location}]{reason}"
            )
    return "\n".join(lines) + "\n"


def _change(n: int, change: Change, diff: PolicyDiff) -> list[str]:
    dests = ", ".join(_destination(d, diff) for d in change.destinations)
    ports = ", ".join(map(str, change.ports))
    plural = "s" if len(change.ports) > 1 else ""
    everyone = change.size == 1 << addr.bits(change.version)
    family = FAMILY[change.version]
    sources = f"every {family} source" if everyone else addr.size_text(change.version, change.size)
    lines = [f"{n}. {sources} -> {dests}, port{plural} {ports}"]
    if change.before is None or change.after is None:
        return lines + _by_outcome(change)
    # A side's line goes in the header when every range shares it, else on each row.
    before_rule = _shared_rule([s.before for s in change.spans])
    after_rule = _shared_rule([s.after for s in change.spans])
    lines.append(f"   before  {_outcome(change.before)}{_rule_suffix(before_rule)}")
    lines.append(f"   after   {_outcome(change.after)}{_rule_suffix(after_rule)}")
    shown = [change.spans[i] for i in range(min(MAX_ROWS, len(change.spans)))]
    rows = [_row(s, before_rule is _VARIES, after_rule is _VARIES) for s in shown]
    width = max(len(r[0]) for r in rows)
    label = "sources"
    for blocks, rest in rows:
        lines.append(f"   {label:<7} {blocks:<{width}}  {rest}".rstrip())
        label = ""
    if len(change.spans) > len(shown):
        more = addr.size_text(change.version, change.size - sum(s.size for s in shown))
        hidden = len(change.spans) - len(shown)
        lines.append(f"           ... and {hidden:,} more ranges ({more}); --json lists all")
    return lines


def _by_outcome(change: Change) -> list[str]:
    """A change with one side fixed (a provider MTA or guarded port added or removed):
    the fixed side, then the other side summed up per outcome, verdict changes first."""
    fixed_is_after = change.after is not None
    fixed = change.after if fixed_is_after else change.before
    assert fixed is not None
    fixed_rule = (change.spans[0].after if fixed_is_after else change.spans[0].before).rule
    sums = sorted(
        change.by_outcome(),
        key=lambda o: (o.outcome.verdict.passes == fixed.verdict.passes, _outcome(o.outcome)),
    )
    rows = []
    for o in sums:
        size = addr.size_text(change.version, o.addresses)
        ranges = f" in {o.ranges:,} ranges" if o.ranges > 1 else ""
        shown = ", ".join(map(str, o.rules)) + (f" +{o.more_rules:,}" if o.more_rules else "")
        rule_text = f"  [{shown}]" if shown else ""
        rows.append((_outcome(o.outcome), f"{size}{ranges}{rule_text}"))
    width = max(len(r[0]) for r in rows)
    fixed_line = f"{_outcome(fixed)}{_rule_suffix(fixed_rule)} for every one"
    varying = [f"     {what:<{width}}  {rest}" for what, rest in rows]
    if fixed_is_after:
        return ["   before  by source:", *varying, f"   after   {fixed_line}"]
    return [f"   before  {fixed_line}", "   after   by source:", *varying]


def _destination(dest: Destination, diff: PolicyDiff) -> str:
    if dest.address is None:
        return "any external MX"
    text = addr.format_address(dest.version, dest.address)
    if dest.old_mta is not None and dest.new_mta is not None:
        return f"{text} (provider MTA in both)"
    only = diff.old if dest.old_mta is not None else diff.new
    return f"{text} (provider MTA in {only} only)"


def _outcome(outcome: Outcome) -> str:
    plan = f" (plan {outcome.plan})" if outcome.plan else ""
    return f"{outcome.verdict.value.upper()}, {outcome.reason.value}{plan}"


class _Varies:
    """Marker: the sides of a change's ranges do not share one rule."""


_VARIES = _Varies()


def _shared_rule(sides: list[Side]) -> object:
    """The rule every side shares (None if that is "no rule"), or ``_VARIES``."""
    rules = {s.rule for s in sides}
    return rules.pop() if len(rules) == 1 else _VARIES


def _rule_suffix(rule: object) -> str:
    return f"  [{rule}]" if rule is not None and rule is not _VARIES else ""


def _row(span: Span, before_rule: bool, after_rule: bool) -> tuple[str, str]:
    """(blocks, size and the lines the header does not carry) of one source range."""
    blocks = span.blocks()
    shown = ", ".join(addr.prefix_text(p) for p in blocks[:MAX_BLOCKS])
    if len(blocks) > MAX_BLOCKS:
        shown += f" +{len(blocks) - MAX_BLOCKS} blocks"
    rules = [
        f"[{side.rule}]" if side.rule is not None else "[no rule]"
        for side, show in ((span.before, before_rule), (span.after, after_rule))
        if show
    ]
    if before_rule and after_rule:
        detail = " -> ".join(rules)
    else:
        detail = ("was " if before_rule else "now ") + rules[0] if rules else ""
    return shown, f"{addr.size_text(span.version, span.size)}  {detail}".rstrip()


# --------------------------------------------------------------------------- JSON


def as_json(diff: PolicyDiff) -> dict[str, Any]:
    """The ``--json`` document; its shape is documented in docs/diff-format.md."""
    return {
        "old": diff.old,
        "new": diff.new,
        "now": diff.now.isoformat(),
        "horizon_days": diff.horizon.days,
        "changed": diff.changed,
        "changes": [_change_json(c) for c in diff.changes],
        "expiring_exemptions": [
            {
                "prefix": addr.prefix_text(e.prefix),
                "ticket": e.ticket,
                "expires": e.expires.isoformat(),
                "reason": e.reason,
                "rule": str(e.location),
            }
            for e in diff.expiring
        ],
    }


def _change_json(change: Change) -> dict[str, Any]:
    sums = change.by_outcome()
    return {
        "family": change.version,
        "destinations": [
            {
                "address": addr.format_address(d.version, d.address)
                if d.address is not None
                else None,
                "old_provider_mta": _loc(d.old_mta),
                "new_provider_mta": _loc(d.new_mta),
            }
            for d in change.destinations
        ],
        "ports": list(change.ports),
        "before": change.before.as_dict() if change.before is not None else None,
        "after": change.after.as_dict() if change.after is not None else None,
        "addresses": change.size,
        "by_outcome": [
            {
                **o.outcome.as_dict(),
                "addresses": o.addresses,
                "ranges": o.ranges,
                "rules": [str(r) for r in o.rules],
                "more_rules": o.more_rules,
            }
            for o in sums
        ]
        or None,
        "sources": None
        if sums
        else [
            {
                "first": addr.format_address(s.version, s.first),
                "last": addr.format_address(s.version, s.last),
                "blocks": [addr.prefix_text(p) for p in s.blocks()],
                "addresses": s.size,
                "before": _side_json(s.before),
                "after": _side_json(s.after),
            }
            for s in change.spans
        ],
    }


def _side_json(side: Side) -> dict[str, str | None]:
    return {**side.outcome.as_dict(), "rule": _loc(side.rule)}


def _loc(location: object) -> str | None:
    return str(location) if location is not None else None
