"""What ``op25b check`` prints: the human summary, or the ``--json`` document.

Owns only presentation: what an engineer wants to confirm before deploying a policy
(which ports, what action, how big each plan is, what is exempt and until when), then
the loader's warnings. No validation happens here. The JSON document's shape is
documented in op25b(8) (JSON OUTPUT) and kept stable: keys are only ever added.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from op25b.policy import addr
from op25b.policy.loader import LoadResult, PolicyError
from op25b.policy.model import DaemonConfig, Exemption, Plan, Policy, Prefix, SyslogTransport

MAX_WARNINGS_SHOWN = 50


def summarize(result: LoadResult, now: datetime | None = None) -> str:
    """Multi-line summary of a loaded policy; ``now`` decides active vs expired."""
    when = now if now is not None else datetime.now(UTC)
    policy = result.policy
    out: list[str] = []
    out += _header(policy)
    out += _plans(policy.plans)
    out += _mtas(policy)
    out += _exemptions(policy.exemptions, when)
    out += _daemon(policy.daemon)
    out += _warnings(result)
    return "\n".join(out) + "\n"


def check_document(
    source: str, result: LoadResult | None, error: PolicyError | None, now: datetime
) -> dict[str, Any]:
    """``op25b check --json``: {"ok", "policy", "summary", "warnings"[, "error"]}.

    ``summary`` is null when the policy did not load; problems are
    {"location": "file:line:col" or null, "path": "key.path", "message"}.
    """
    doc: dict[str, Any] = {
        "ok": error is None,
        "policy": source,
        "summary": _counts(result.policy, now) if result is not None else None,
        "warnings": [_problem(w.location, w.path, w.message) for w in result.warnings]
        if result is not None
        else [],
    }
    if error is not None:
        doc["error"] = _problem(error.location, error.path, error.message)
    return doc


def _problem(location: object, path: str, message: str) -> dict[str, Any]:
    return {
        "location": str(location) if location is not None else None,
        "path": path,
        "message": message,
    }


def _counts(policy: Policy, now: datetime) -> dict[str, Any]:
    plans: list[dict[str, Any]] = []
    total = 0
    for plan in policy.plans:
        v4 = [p for p in plan.prefixes if p.version == 4]
        v6 = [p for p in plan.prefixes if p.version == 6]
        plans.append(
            {
                "name": plan.name,
                "exempt": plan.exempt,
                "prefixes_v4": len(v4),
                "prefixes_v6": len(v6),
                "addresses_v4": _covered(v4, 32),
                "files": list(plan.prefixes.files[1:]),  # files[0] is the policy itself
            }
        )
        total += len(v4) + len(v6)
    active = sum(1 for e in policy.exemptions if e.active(now))
    return {
        "version": 1,
        "guarded_ports": sorted(policy.guarded_ports),
        "action": policy.action.value,
        "plans": plans,
        "prefixes": total,
        "provider_mta_addresses": sum(len(m.addresses) for m in policy.provider_mtas),
        "exemptions": {"active": active, "expired": len(policy.exemptions) - active},
    }


def _header(policy: Policy) -> list[str]:
    ports = ", ".join(str(p) for p in sorted(policy.guarded_ports))
    return [
        f"policy {policy.source} (format version 1)",
        f"  guarded ports  {ports}  (587/465 submission is never touched)",
        f"  action         {policy.action.value}",
        "",
    ]


def _plans(plans: tuple[Plan, ...]) -> list[str]:
    lines = [f"plans ({len(plans)}; the longest matching prefix across plans decides)"]
    width = max(len(p.name) for p in plans)
    for plan in plans:
        status = "EXEMPT " if plan.exempt else "guarded"
        v4 = [p for p in plan.prefixes if p.version == 4]
        v6 = [p for p in plan.prefixes if p.version == 6]
        parts = []
        if v4:
            size = addr.size_text(4, _covered(v4, 32))
            parts.append(f"{_count(len(v4), 'IPv4 prefix')} ({size})")
        if v6:
            size = addr.size_text(6, _covered(v6, 128))
            parts.append(f"{_count(len(v6), 'IPv6 prefix')} ({size})")
        files = plan.prefixes.files[1:]  # files[0] is the policy itself
        origin = f"  from {', '.join(files)}" if files else ""
        lines.append(f"  {plan.name:<{width}}  {status}  {', '.join(parts)}{origin}")
    lines.append("")
    return lines


def _mtas(policy: Policy) -> list[str]:
    if not policy.provider_mtas:
        return ["provider MTAs: none (every guarded destination is blocked for guarded plans)", ""]
    lines = [f"provider MTAs ({len(policy.provider_mtas)})"]
    width = max(len(m.name) for m in policy.provider_mtas)
    for mta in policy.provider_mtas:
        shown = ", ".join(addr.format_address(v, a) for v, a in mta.addresses)
        lines.append(f"  {mta.name:<{width}}  {shown}")
    lines.append("")
    return lines


def _exemptions(exemptions: tuple[Exemption, ...], now: datetime) -> list[str]:
    if not exemptions:
        return ["exemptions: none", ""]
    active = sum(1 for e in exemptions if e.active(now))
    lines = [f"exemptions ({active} active, {len(exemptions) - active} expired)"]
    texts = [addr.prefix_text(e.prefix) for e in exemptions]
    pw = max(len(t) for t in texts)
    tw = max(len(e.ticket) for e in exemptions)
    for e, text in zip(exemptions, texts, strict=True):
        state = "active " if e.active(now) else "EXPIRED"
        reason = f"  {e.reason}" if e.reason else ""
        lines.append(f"  {state}  {text:<{pw}}  {e.ticket:<{tw}}  {expiry_text(e.expires)}{reason}")
    lines.append("")
    return lines


def _daemon(d: DaemonConfig) -> list[str]:
    if d.syslog.transport is SyslogTransport.UNIX:
        syslog = f"{d.syslog.address}"
    else:
        host = f"[{d.syslog.address}]" if ":" in d.syslog.address else d.syslog.address
        syslog = f"{d.syslog.transport.value}://{host}:{d.syslog.port}"
    cache = f"{d.block_cache_timeout}s" if d.block_cache_timeout else "off"
    m = d.metrics
    outputs = [f"textfile {m.textfile}"] if m.textfile else []
    if m.listen_host:
        host = f"[{m.listen_host}]" if ":" in m.listen_host else m.listen_host
        outputs.insert(0, f"http://{host}:{m.listen_port}/metrics")
    metrics = f", metrics {' + '.join(outputs)} every {_secs(m.interval)}" if outputs else ""
    return [
        "daemon (read by `op25b run` only)",
        f"  queue {d.queue}, workers {d.workers}, on_daemon_down {d.on_daemon_down.value},"
        f" on_error {d.on_error}",
        f"  abuse_log {d.abuse_log}, window {_secs(d.abuse_window)},"
        f" IPv6 sources per /{d.v6_aggregate}",
        f"  syslog {syslog} facility {d.syslog.facility}, counters every"
        f" {_secs(d.counters_interval)}",
        f"  fast_path {'on' if d.fast_path else 'off'}, block cache {cache}{metrics}",
        "",
    ]


def _warnings(result: LoadResult) -> list[str]:
    if not result.warnings:
        return ["no warnings"]
    lines = [f"warnings ({len(result.warnings)})"]
    lines += [f"  {w}" for w in result.warnings[:MAX_WARNINGS_SHOWN]]
    if len(result.warnings) > MAX_WARNINGS_SHOWN:
        lines.append(f"  ... and {len(result.warnings) - MAX_WARNINGS_SHOWN} more")
    return lines


def _covered(prefixes: list[Prefix], width: int) -> int:
    """Addresses in the union of the prefixes (nested ones are counted once)."""
    # One int per prefix sorts much faster than tuples for million-line pools.
    keys = sorted((p.network << 8) | p.length for p in prefixes)
    total = 0
    reach = -1  # end of the merged range so far
    for key in keys:
        start = key >> 8
        end = start + (1 << (width - (key & 0xFF)))
        if start >= reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"1 {noun}"
    return f"{n:,} {noun}es" if noun.endswith("x") else f"{n:,} {noun}s"


def expiry_text(expires: datetime) -> str:
    """``through 2027-01-31 UTC`` for a date, ``until ... UTC`` for an instant."""
    if expires.timetz() == time(0, tzinfo=UTC):
        last_day = datetime.fromordinal(expires.toordinal() - 1)
        return f"through {last_day:%Y-%m-%d} UTC"
    return f"until {expires:%Y-%m-%d %H:%M:%S} UTC"


def _secs(value: float) -> str:
    return f"{value:g}s"
