"""Every key of policy format version 1, as data, and op25b-policy(5) made from it.

The loader is the authority on which keys exist; a test asks it for the allowed keys
at every level (by feeding it an unknown one) and compares them with ``KEYS``, and
checks every documented default by loading a policy with and without the key. So a
key added to the loader without a line here, or a default changed in one place only,
fails the tests instead of leaving the manual wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from op25b import __version__
from op25b.manual import roff


@dataclass(frozen=True)
class PolicyKey:
    """One key: its dotted path (NAME = any name, [] = every list item) and meaning."""

    path: str
    kind: str  # what the value is, as the reader should write it
    default: str  # YAML text of the default; "required" or "" (optional, no default)
    text: str


REQUIRED = "required"

KEYS: tuple[PolicyKey, ...] = (
    PolicyKey("version", "integer", REQUIRED, "Format version of the file; only 1 exists."),
    PolicyKey(
        "guarded_ports",
        "list of ports",
        REQUIRED,
        "Destination TCP ports under OP25B, non-empty, e.g. [25]. 587 (submission) and 465 "
        "(submissions) are refused: they are how blocked subscribers still send mail, "
        "through their provider's MTA with SMTP AUTH.",
    ),
    PolicyKey(
        "action",
        "drop | reject | monitor",
        REQUIRED,
        "What happens to a blocked connection attempt: drop silently drops it (the bot "
        "retries and times out); reject answers with a TCP reset (mail clients fail at "
        "once); monitor lets it through but logs and counts it as would-block.",
    ),
    PolicyKey(
        "plans",
        "mapping of NAME to a plan",
        REQUIRED,
        "Subscriber plans: named pools of source prefixes, at least one. A source in no "
        "plan is not a subscriber and is never blocked. When plans overlap the longest "
        "matching prefix decides the plan. NAME: letters, digits, - and _, up to 32.",
    ),
    PolicyKey(
        "plans.NAME.exempt",
        "boolean",
        REQUIRED,
        "true: the plan's subscribers may reach any MX on guarded ports (business/static "
        "plans); false: guarded.",
    ),
    PolicyKey(
        "plans.NAME.prefixes",
        "list of prefixes",
        "",
        "IPv4 and IPv6 source prefixes without host bits; quote IPv6 prefixes inside "
        "[flow lists]. A plan needs prefixes, prefixes_file or both, and at least one "
        "prefix in the end. The same prefix in two plans is an error.",
    ),
    PolicyKey(
        "plans.NAME.prefixes_file",
        "path",
        "",
        "A pool file relative to the policy file: one prefix per line, # comments, blank "
        "lines ignored. A million-line file loads in seconds.",
    ),
    PolicyKey(
        "provider_mtas",
        "mapping of NAME to an MTA",
        "",
        "Destinations every subscriber may always reach on guarded ports: the ISP's "
        "smarthosts and relays.",
    ),
    PolicyKey(
        "provider_mtas.NAME.addresses",
        "list of addresses",
        REQUIRED,
        "Single IPv4/IPv6 addresses (not prefixes), at least one; an address may appear "
        "once in the whole section.",
    ),
    PolicyKey(
        "exemptions",
        "list of exemptions",
        "",
        "Single subscribers let through despite a guarded plan, each with an audit trail. "
        "Expired entries are ignored and op25b check warns about them, as it does about "
        "an exemption that covers no guarded subscriber.",
    ),
    PolicyKey("exemptions[].prefix", "prefix", REQUIRED, "The source, usually a /32 or a /64."),
    PolicyKey(
        "exemptions[].ticket",
        "text",
        REQUIRED,
        "The abuse-desk or support ticket that approved it.",
    ),
    PolicyKey(
        "exemptions[].expires",
        "date or timestamp",
        REQUIRED,
        "A date (2027-01-31) means active through that whole UTC day; a timestamp must "
        "carry a timezone (2027-01-31T18:00:00+01:00 or ...Z).",
    ),
    PolicyKey("exemptions[].reason", "text", "", "Free text for the next engineer."),
    PolicyKey("daemon", "mapping", "", "Settings only op25b run reads."),
    PolicyKey(
        "daemon.queue",
        "integer 0..65535",
        "0",
        "NFQUEUE number; with workers: N the queues queue..queue+N-1.",
    ),
    PolicyKey(
        "daemon.workers",
        "integer 1..64",
        "1",
        "Queue reader processes, balanced by the kernel (--queue-balance, by address).",
    ),
    PolicyKey(
        "daemon.on_daemon_down",
        "static | open | closed",
        "static",
        "What the kernel does with guarded traffic while no daemon listens: static = the "
        "allow-sets (provider MTAs, exempt plans, active exemptions) accept and the rest "
        "gets action; open = accept everything; closed = drop everything guarded.",
    ),
    PolicyKey(
        "daemon.abuse_log",
        "path",
        "/var/log/op25b/blocked.jsonl",
        "The abuse-review log: one JSON line per blocked source per window.",
    ),
    PolicyKey(
        "daemon.syslog",
        "mapping",
        "",
        "Where the blocked-source notices and counters lines go.",
    ),
    PolicyKey(
        "daemon.syslog.address",
        "/path | udp://host:port | tcp://host:port",
        "/dev/log",
        "A unix socket, or RFC 5424 over UDP or TCP (octet-counted); IPv6 hosts in "
        "brackets, quoted inside {...}.",
    ),
    PolicyKey(
        "daemon.syslog.facility",
        "kern | user | mail | daemon | auth | local0..local7",
        "local5",
        "The syslog facility of every line.",
    ),
    PolicyKey(
        "daemon.counters_interval",
        "seconds > 0",
        "60",
        "Seconds between counters lines.",
    ),
    PolicyKey(
        "daemon.on_error",
        "accept | drop",
        "accept",
        "A packet that cannot be decided at all: accept keeps mail flowing through a bug, "
        "drop keeps a bot from slipping through one.",
    ),
    PolicyKey(
        "daemon.abuse_window",
        "seconds > 0",
        "300",
        "How long one abuse-log aggregation window stays open.",
    ),
    PolicyKey(
        "daemon.v6_aggregate",
        "integer 0..128",
        "64",
        "IPv6 sources are aggregated per /N in the abuse log.",
    ),
    PolicyKey(
        "daemon.rules_check_interval",
        "seconds > 0",
        "1",
        "Seconds between checks that op25b's rules and sets are still intact in the "
        "shared firewall; missing or moved ones are repaired at once.",
    ),
    PolicyKey(
        "daemon.metrics",
        "mapping",
        "",
        "Prometheus metrics, off unless listen or textfile is set (docs/metrics.md lists "
        "them). Opened at start: a reload that changes this mapping is refused.",
    ),
    PolicyKey(
        "daemon.metrics.listen",
        "address:port",
        "",
        "Serve HTTP /metrics here: an IP address, never a name; IPv6 in brackets, quoted "
        '("[2001:db8::1]:9125"). A port that cannot be bound makes op25b run exit 3.',
    ),
    PolicyKey(
        "daemon.metrics.textfile",
        "path ending in .prom",
        "",
        "Also write the metrics here for node_exporter's textfile collector, replaced "
        "atomically every interval and removed on a clean stop.",
    ),
    PolicyKey(
        "daemon.metrics.interval",
        "seconds 0.1..3600",
        "1",
        "Seconds between the workers' snapshots (and textfile writes).",
    ),
    PolicyKey(
        "daemon.fast_path",
        "boolean",
        "false",
        "true: kernel allow-sets ahead of the queue, so allowed traffic never waits on the daemon.",
    ),
    PolicyKey(
        "daemon.block_cache_timeout",
        "integer seconds",
        "0",
        "Seconds a blocked source's further attempts are handled in the kernel without "
        "the daemon (0 = off); counting stays exact.",
    ),
)

DECISION_ORDER: tuple[tuple[str, str], ...] = (
    ("not_guarded", "the destination port is not in guarded_ports: accept"),
    ("provider_mta", "the destination is a provider MTA address: accept"),
    ("not_subscriber", "the source is in no plan: accept"),
    ("exempt_plan", "the source's plan (longest prefix across all plans) is exempt: accept"),
    ("exemption", "an active exemption covers the source: accept"),
    ("blocked", "otherwise: the policy's action"),
)


def render() -> str:
    """The whole op25b-policy(5) page as roff text."""
    out = roff.header("op25b-policy", 5, __version__, "File Formats")
    out += roff.section("NAME")
    out += ["op25b\\-policy \\- the op25b policy file, format version 1"]
    out += roff.section("SYNOPSIS")
    out += [roff.italic("/etc/op25b/policy.yaml")]
    out += roff.section("DESCRIPTION")
    out += roff.paragraph(
        "A YAML document that says which sources are subscribers (plans), which "
        "destinations they may always reach (provider MTAs), who is let through "
        "(exempt plans, exemptions), and what happens to everyone else on the guarded "
        "ports. op25b check validates it; op25b run enforces it."
    )
    out += roff.paragraph(
        "Validation is strict and names the place (file:line:col: key.path: message): "
        "unknown keys, wrong types, yes/no as booleans, host bits set, duplicate plan "
        "names or keys, the same prefix in two plans, a guarded 587/465, bad dates, "
        "timestamps without a timezone and IPv4-mapped IPv6 prefixes are errors. "
        "Expired exemptions, redundant prefixes, exemptions that cover no guarded "
        "subscriber and a provider MTA that is itself a guarded subscriber are warnings."
    )
    out += roff.section("DECISION ORDER")
    out += roff.paragraph("Each new connection to a guarded port; the first match wins:")
    for i, (reason, what) in enumerate(DECISION_ORDER, 1):
        out += roff.tagged(f"{i}. {roff.bold(reason)}", what)
    out += roff.section("KEYS")
    for key in KEYS:
        out += roff.tagged(f"{roff.bold(key.path)} ({roff.text(key.kind)})", _with_default(key))
    out += roff.section("EXAMPLE")
    out += roff.example(EXAMPLE.splitlines())
    out += roff.paragraph(
        "An annotated example with every key is "
        "/usr/share/doc/op25b/examples/example.yaml (policies/example.yaml in the source)."
    )
    out += roff.section("SEE ALSO")
    out += ["op25b(8)"]
    return "\n".join(out) + "\n"


def _with_default(key: PolicyKey) -> str:
    if key.default == REQUIRED:
        return f"Required. {key.text}"
    if key.default:
        return f"{key.text} Default: {key.default}."
    return f"Optional. {key.text}"


EXAMPLE = """\
version: 1
guarded_ports: [25]
action: reject
plans:
  residential:
    exempt: false
    prefixes: [100.64.0.0/16, "2001:db8:100::/40"]
  business-static:
    exempt: true
    prefixes: [198.51.100.0/24]
provider_mtas:
  smarthost:
    addresses: [203.0.113.25, "2001:db8:25::25"]
exemptions:
  - prefix: 100.64.7.7/32
    ticket: ABUSE-1234
    expires: 2027-01-31
    reason: verified own MX
daemon:
  fast_path: true
  block_cache_timeout: 60"""
