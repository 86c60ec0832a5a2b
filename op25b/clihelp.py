"""The words of the command line: what each subcommand is for, with examples.

One table feeds ``op25b --help``, ``op25b COMMAND --help`` (description and an
"examples:" epilog) and the generated op25b(8), so the help and the manual say the
same thing. ``op25b.cli`` owns the options themselves; a test checks that every
subcommand it defines has an entry here.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from op25b.errors import EXIT_CODES

# Where the package installs the policy; `run` and `check` read it when given none.
DEFAULT_POLICY = "/etc/op25b/policy.yaml"

PROGRAM_DESCRIPTION = (
    "Outbound Port 25 Blocking (OP25B) policy engine for ISP edge routers: a daemon on a "
    "netfilter queue that decides every new connection from subscriber pools to a guarded "
    "port (25) from a YAML policy, and the tools around it."
)


@dataclass(frozen=True)
class CommandHelp:
    """One subcommand's help: a one-line summary, a paragraph, and examples."""

    summary: str
    description: str
    examples: tuple[tuple[str, str], ...]  # (command line, what it does)


COMMANDS: dict[str, CommandHelp] = {
    "check": CommandHelp(
        "validate a policy and summarise it",
        "Load and validate POLICY (default: " + DEFAULT_POLICY + ") and print a summary: "
        "ports, action, plan sizes, provider MTAs, exemptions, daemon settings, then the "
        "warnings. An invalid policy prints one line file:line:col: key.path: message and "
        "exits 1. --json prints one JSON object instead (see op25b(8), JSON OUTPUT).",
        (
            ("op25b check", "validate " + DEFAULT_POLICY),
            ("op25b check --quiet policies/example.yaml", "only errors and warnings"),
            ("op25b check --json new.yaml | jq .ok", "for scripts: ok, summary, warnings"),
        ),
    ),
    "explain": CommandHelp(
        "decide one connection attempt and say why",
        "Decide a connection from SRC to DST:PORT as the daemon would and name the reason "
        "and the policy line that decided.",
        (
            ("op25b explain policy.yaml 100.64.0.66 192.0.2.25", "blocked or not, and why"),
            (
                "op25b explain policy.yaml 2001:db8:100::10 2001:db8:25::25 --json",
                'prints {"verdict", "reason", "plan", "rule"}',
            ),
        ),
    ),
    "replay": CommandHelp(
        "run a pcap capture through the policy",
        "Decide every new TCP connection attempt in a pcap or pcapng capture with POLICY "
        "and count the verdicts; lists the sources that would be blocked.",
        (
            ("op25b replay policy.yaml edge.pcap", "verdict counts and the blocked sources"),
            ("op25b replay policy.yaml edge.pcap --json", "the same as one JSON object"),
            (
                "op25b replay new.yaml edge.pcap --against policy.yaml",
                "the captured connections a policy change would decide differently",
            ),
        ),
    ),
    "diff": CommandHelp(
        "which decisions a policy change changes (exit 1 if any)",
        "List exactly the sources, destinations and ports whose decision differs between "
        "OLD and NEW, with the deciding line of each file. Exit 0: no change, 1: changes "
        "(or an invalid policy), 2: usage.",
        (
            (
                "op25b diff /etc/op25b/policy.yaml new.yaml --now 2026-01-01T00:00:00Z",
                "what the new policy would decide differently",
            ),
            ("op25b diff /etc/op25b/policy.yaml new.yaml --json", "the same for a review bot"),
        ),
    ),
    "run": CommandHelp(
        "the daemon: enforce a policy on a netfilter queue",
        "Install op25b's iptables/ip6tables and ipset rules in this network namespace, "
        "decide queued connection attempts with the policy (default: "
        + DEFAULT_POLICY
        + "), log blocked sources and counters, and remove exactly those rules on exit. "
        "Usually started by the systemd unit op25b.service. SIGHUP reloads the policy, "
        "SIGUSR1 reopens the abuse log, SIGTERM stops.",
        (
            ("op25b run", "enforce " + DEFAULT_POLICY),
            (
                "ip netns exec LAB-rtr op25b run --policy policies/example.yaml "
                "--syslog udp://127.0.0.1:514",
                "in a lab router, counters to a syslog receiver",
            ),
        ),
    ),
    "report": CommandHelp(
        "abuse-desk summary of blocked sources",
        "Merge abuse logs (rotated, compressed, from several routers) and rank blocked "
        "sources by a bot score that tells a spambot from a misconfigured mail client.",
        (
            ("op25b report /var/log/op25b/blocked.jsonl*", "the top sources, all windows"),
            (
                "op25b report --since 24h --top 5 --chart top.png blocked.jsonl",
                "last day, top five, with a chart for the ticket",
            ),
        ),
    ),
    "lab": CommandHelp(
        "the network-namespace lab",
        "Build (up), list (status) or remove (down) the lab: network namespaces for a "
        "router, subscribers, a provider MTA and external MXes, joined by veth pairs, "
        "with documentation addresses only. status --json prints the labs as JSON.",
        (
            ("op25b lab up", "build a lab and leave it running"),
            ("op25b lab status --json", "recorded labs, their namespaces and addresses"),
            ("op25b lab down", "remove every lab"),
        ),
    ),
    "demo": CommandHelp(
        "OP25B end to end in a lab with real SMTP traffic",
        "Build a lab, start a provider MTA, an external MX and op25b run on the router, "
        "play the OP25B story with real mail over IPv4 and IPv6, print a pass/fail table "
        "and tear the lab down.",
        (
            ("op25b demo", "blocked attempts get a TCP reset"),
            ("op25b demo --action drop --keep", "drop instead, and leave the lab up"),
        ),
    ),
    "rules": CommandHelp(
        "check, show or remove op25b's kernel rules in this namespace",
        "status: are op25b's rules and sets intact? (exit 0 intact, 2 absent or damaged, "
        "3 cannot tell: usable as a Nagios/Icinga check); show POLICY: the exact "
        "iptables/ip6tables/ipset restore text the policy would install (a dry run); "
        "remove: remove op25b's rules and sets by hand.",
        (
            ("op25b rules status --json", "intact or not, for monitoring (exit 0/2/3)"),
            ("op25b rules show /etc/op25b/policy.yaml", "what the policy would install"),
            ("op25b rules remove", "remove exactly op25b's rules and sets"),
        ),
    ),
}


def description(name: str) -> str:
    """The paragraph under ``op25b NAME --help``, wrapped (the formatter keeps it raw)."""
    return textwrap.fill(COMMANDS[name].description, 78)


def epilog(name: str) -> str:
    """The "examples:" block under ``op25b NAME --help``."""
    lines = ["examples:"]
    for command, what in COMMANDS[name].examples:
        lines += [f"  {command}", f"      {what}"]
    return "\n".join(lines)


def program_epilog() -> str:
    """Under ``op25b --help``: where to read more, and the exit codes."""
    lines = ["exit codes:"]
    for code, meaning in EXIT_CODES:
        lines += textwrap.wrap(
            _plain(meaning), 78, initial_indent=f"  {code:<4}", subsequent_indent=" " * 6
        )
    lines += ["", "op25b COMMAND --help shows a command's options and examples; see op25b(8)."]
    return "\n".join(lines)


def _plain(text: str) -> str:
    """reStructuredText literals (``x``) as plain text."""
    return text.replace("``", "")
