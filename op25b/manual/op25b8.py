"""op25b(8): generated from the argument parser, the help table and the exit codes.

Every subcommand, option, description and example comes from ``op25b.cli``'s parser
(through ``parserwalk``) and the exit codes from ``op25b.errors.EXIT_CODES``, so the
page says what the installed code does. The prose here is only what the parser cannot
know: signals, files, and the shapes of the JSON outputs.
"""

from __future__ import annotations

from op25b import __version__, clihelp
from op25b.cli import build_parser
from op25b.errors import EXIT_CODES
from op25b.manual import roff
from op25b.manual.parserwalk import Argument, Command, commands

SIGNALS: tuple[tuple[str, str], ...] = (
    (
        "SIGHUP",
        "reload: the policy is loaded and compiled in the background (verdicts keep "
        "flowing), the kernel sets are swapped, then the new policy takes over; an invalid "
        "policy is refused with its file:line error in syslog and the old one stays in "
        "force (systemctl reload op25b)",
    ),
    ("SIGUSR1", "reopen the abuse log (logrotate)"),
    (
        "SIGTERM, SIGINT",
        "answer what is queued, remove op25b's rules, write open abuse-log windows and a "
        "final counters line, exit 0",
    ),
)

FILES: tuple[tuple[str, str], ...] = (
    (clihelp.DEFAULT_POLICY, "the policy run and check read when given none; op25b-policy(5)"),
    ("/var/log/op25b/blocked.jsonl", "the abuse log (daemon.abuse_log), JSON lines"),
    ("/lib/systemd/system/op25b.service", "the systemd unit (installed, not enabled)"),
    ("/etc/logrotate.d/op25b", "rotates the abuse log and sends SIGUSR1"),
    ("/usr/share/doc/op25b/examples/example.yaml", "the annotated reference policy"),
    ("/run/op25b-lab", "state of labs built by op25b lab up"),
)

JSON_OUTPUTS: tuple[tuple[str, str], ...] = (
    (
        "op25b check --json",
        '{"ok": true|false, "policy": PATH, "summary": {"version", "guarded_ports", '
        '"action", "plans": [{"name", "exempt", "prefixes_v4", "prefixes_v6", '
        '"addresses_v4", "files"}], "prefixes", "provider_mta_addresses", "exemptions": '
        '{"active", "expired"}} or null, "warnings": [PROBLEM], "error": PROBLEM (only '
        'when ok is false)}, where PROBLEM is {"location": "file:line:col" or null, '
        '"path": "key.path", "message"}. Exit status 0 or 1 as without --json.',
    ),
    (
        "op25b explain --json",
        '{"verdict": "accept"|"drop"|"reject", "reason", "plan", "rule"}; reason is one '
        "of not_guarded, provider_mta, not_subscriber, exempt_plan, exemption, blocked.",
    ),
    (
        "op25b diff --json",
        "every changed range with both decisions and their policy lines: the format is "
        "/usr/share/doc/op25b/diff-format.md. Exit 0 no change, 1 changes.",
    ),
    (
        "op25b rules status --json",
        '{"ok", "installed", "checked_against": "daemon record"|"structure", "problems": '
        '[TEXT], "sets", "chains": [{"family", "table", "present", "rules", "jumps", ...}]}; '
        'exit 0 when ok, 2 when the rules are absent or damaged, 3 (and {"ok": false, '
        '"error"}) when the state cannot be read.',
    ),
    (
        "op25b lab status --json",
        '{"state_dir", "labs": [{"name", "created", "namespaces": [{"role", "namespace", '
        '"present", "addresses": ["address/len@ifname"]}]}], "unrecorded": [NAME], '
        '"fleets": [{"name", "created", "routers", "namespaces": [...as for labs]}]}.',
    ),
)


def render() -> str:
    """The whole op25b(8) page as roff text."""
    cmds = commands(build_parser())
    out = roff.header("op25b", 8, __version__, "System Administration")
    out += roff.section("NAME")
    out += ["op25b \\- Outbound Port 25 Blocking (OP25B) policy engine for ISP edge routers"]
    out += roff.section("SYNOPSIS")
    out += [".nf", *(roff.text(c.synopsis()) for c in cmds), "op25b \\-\\-version", ".fi"]
    out += roff.section("DESCRIPTION")
    out += roff.paragraph(clihelp.PROGRAM_DESCRIPTION)
    out += roff.paragraph(
        "The policy format is described in op25b-policy(5). Every error is one line on "
        "standard error (a policy error reads file:line:col: key.path: message) and a "
        "documented exit status; a traceback is a bug in op25b."
    )
    out += roff.section("COMMANDS")
    for cmd in cmds:
        out += _command(cmd)
    out += roff.section("JSON OUTPUT")
    out += roff.paragraph("Documents for scripts and monitoring; keys are only ever added.")
    out += roff.definitions(JSON_OUTPUTS, roff.bold)
    out += roff.section("EXIT STATUS")
    out += roff.definitions(tuple((str(c), m) for c, m in EXIT_CODES), roff.bold)
    out += roff.section("SIGNALS")
    out += roff.paragraph("op25b run (the systemd unit maps reload and stop to these):")
    out += roff.definitions(SIGNALS, roff.bold)
    out += roff.section("FILES")
    out += roff.definitions(FILES, roff.italic)
    out += roff.section("SEE ALSO")
    out += [
        "op25b\\-policy(5), iptables(8), ipset(8), systemd.service(5), logrotate(8), "
        "/usr/share/doc/op25b/README.md"
    ]
    return "\n".join(out) + "\n"


def _command(cmd: Command) -> list[str]:
    out = roff.subsection(cmd.synopsis())
    out += roff.paragraph(cmd.description or cmd.summary)
    for arg in cmd.arguments:
        out += roff.tagged(_tag(arg), arg.help or "")
    examples = clihelp.COMMANDS[cmd.name].examples if cmd.name in clihelp.COMMANDS else ()
    if examples:
        out += [".PP", "Examples:"]
        for line, what in examples:
            out += [*roff.example([line]), ".RS 8", roff.text(what), ".RE"]
    return out


def _tag(arg: Argument) -> str:
    if arg.positional:
        return roff.italic(arg.metavar)
    value = " " + roff.italic(arg.metavar) if arg.metavar else ""
    if arg.choices:
        value = " " + roff.text("{" + "|".join(arg.choices) + "}")
    return ", ".join(roff.bold(f) for f in arg.flags) + value
