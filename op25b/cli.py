"""The ``op25b`` command line: argument parsing and output, nothing else.

``main(argv)`` is testable in-process (it returns the exit code and never calls
``sys.exit`` itself). Every user error is one line on stderr and exit 1 or 2; a
traceback means a bug in op25b.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import TextIO

from op25b import __version__, clihelp, native
from op25b.errors import (
    EXIT_CRITICAL,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_UNKNOWN,
    EXIT_USAGE,
    MissingDependency,
    Op25bError,
)


def _parse_now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="op25b",
        description=textwrap.fill(clihelp.PROGRAM_DESCRIPTION, 78),
        epilog=clihelp.program_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The implementation of the per-packet path too: a support question's first fact.
    version = f"op25b {__version__} ({native.status()})"
    p.add_argument("--version", action="version", version=version)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str) -> argparse.ArgumentParser:
        h = clihelp.COMMANDS[name]
        return sub.add_parser(
            name,
            help=h.summary,
            description=clihelp.description(name),
            epilog=clihelp.epilog(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    c = command("check")
    c.add_argument(
        "policy",
        nargs="?",
        default=clihelp.DEFAULT_POLICY,
        help=f"the policy file (default {clihelp.DEFAULT_POLICY})",
    )
    c.add_argument("--now", help="evaluate exemption expiry at this ISO time (default: now)")
    c.add_argument("--quiet", "-q", action="store_true", help="only errors and warnings")
    c.add_argument(
        "--json", action="store_true", help='print {"ok", "policy", "summary", "warnings", ...}'
    )

    e = command("explain")
    e.add_argument("policy", help="the policy file")
    e.add_argument("src", help="source address")
    e.add_argument("dst", help="destination address")
    e.add_argument("--port", type=int, default=25, help="destination port (default 25)")
    e.add_argument("--now", help="decide at this ISO time (default: now)")
    e.add_argument("--json", action="store_true", help='print {"verdict","reason","plan","rule"}')

    r = command("replay")
    r.add_argument("policy", help="the policy file")
    r.add_argument("capture", help="pcap or pcapng file")
    r.add_argument("--now", help="decide at this ISO time (default: now)")
    r.add_argument("--json", action="store_true", help="print the counts and sources as JSON")
    r.add_argument(
        "--top", type=int, default=20, help="blocked sources (or pairs per change) to list"
    )
    r.add_argument(
        "--against",
        metavar="OLD",
        help="also decide under policy OLD and list the connections whose decision "
        "changes (exit 1 if any)",
    )

    d = command("diff")
    d.add_argument("old", help="the policy in force")
    d.add_argument("new", help="the proposed policy")
    d.add_argument("--now", help="evaluate exemptions at this ISO time (default: now)")
    d.add_argument(
        "--horizon",
        type=int,
        default=7,
        help="also list NEW's exemptions expiring within this many days (default 7)",
    )
    d.add_argument("--json", action="store_true", help="the JSON document of docs/diff-format.md")

    run = command("run")
    run.add_argument(
        "--policy",
        default=clihelp.DEFAULT_POLICY,
        help=f"the policy file (default {clihelp.DEFAULT_POLICY})",
    )
    run.add_argument("--abuse-log", help="override daemon.abuse_log")
    run.add_argument("--syslog", help="override daemon.syslog.address")
    run.add_argument("--counters-interval", type=float, help="override daemon.counters_interval")
    run.add_argument("--abuse-window", type=float, help="override daemon.abuse_window")

    rep = command("report")
    from op25b.report import desk as report

    report.add_arguments(rep)

    lab = command("lab")
    lab.add_argument("action", choices=("up", "down", "status"), help="what to do")
    lab.add_argument("name", nargs="?", help="lab name for 'down' (default: all labs)")
    lab.add_argument("--json", action="store_true", help="status: print the labs as JSON")
    lab.add_argument(
        "--routers",
        type=int,
        default=1,
        help="up: edge routers (default 1: the one-router lab; more: a fleet with a "
        "core, a collector running rsyslogd and Prometheus)",
    )

    demo = command("demo")
    demo.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    demo.add_argument(
        "--action",
        choices=("drop", "reject"),
        default="reject",
        help="the policy's action in the demo (default reject)",
    )
    demo.add_argument(
        "--fleet",
        action="store_true",
        help="the fleet demo: edge routers with one policy, a central rsyslogd and "
        "Prometheus, a policy rollout, three views of the counters that must agree",
    )
    demo.add_argument("--routers", type=int, default=3, help="--fleet: edge routers (2..14)")

    rules = command("rules")
    rules.add_argument("action", choices=("status", "show", "remove"))
    rules.add_argument("policy", nargs="?", help="the policy (for 'show')")
    rules.add_argument("--json", action="store_true", help="status as JSON")
    rules.add_argument("--now", help="show: evaluate exemption expiry at this ISO time")
    return p


def _cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from op25b.policy.loader import PolicyError, load_policy
    from op25b.policy.summary import check_document, summarize

    now = _parse_now(args.now)
    try:
        result = load_policy(args.policy, now=now)
    except PolicyError as e:
        if args.json:
            print(json.dumps(check_document(args.policy, None, e, now), indent=2), file=out)
        else:
            print(e, file=err)
        return EXIT_INVALID
    if args.json:
        print(json.dumps(check_document(args.policy, result, None, now), indent=2), file=out)
    elif args.quiet:
        for w in result.warnings:
            print(f"{w} (warning)", file=err)
    else:
        print(summarize(result, now), file=out)  # the summary ends with the warnings
    return EXIT_OK


def _cmd_explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from op25b.policy.addr import parse_address
    from op25b.policy.compiled import compile_policy
    from op25b.policy.decide import decide_addresses
    from op25b.policy.loader import PolicyError, load_policy

    try:
        src_v, src = parse_address(args.src)
        dst_v, dst = parse_address(args.dst)
    except ValueError as e:
        print(f"op25b explain: {e}", file=err)
        return EXIT_INVALID
    if src_v != dst_v:
        print("op25b explain: source and destination must both be IPv4 or both IPv6", file=err)
        return EXIT_INVALID
    if not 0 < args.port < 65536:
        print(f"op25b explain: port out of range: {args.port}", file=err)
        return EXIT_INVALID
    try:
        policy = load_policy(args.policy).policy
    except PolicyError as e:
        print(e, file=err)
        return EXIT_INVALID
    d = decide_addresses(compile_policy(policy), src_v, src, dst, args.port, _parse_now(args.now))
    if args.json:
        print(json.dumps(d.as_dict()), file=out)
    else:
        plan = f" (plan {d.plan})" if d.plan else ""
        rule = f"  [{d.rule}]" if d.rule else ""
        print(
            f"{args.src} -> {args.dst}:{args.port}: {d.verdict.value.upper()}, "
            f"{d.reason.value}{plan}{rule}",
            file=out,
        )
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from op25b.errors import EXIT_CHANGED
    from op25b.policy.compiled import compile_policy
    from op25b.policy.loader import PolicyError, load_policy
    from op25b.report import replay, replaydiff
    from op25b.util.progress import Progress

    now = _parse_now(args.now)
    try:
        compiled = [
            compile_policy(load_policy(p, now=now).policy)
            for p in (args.policy, *([args.against] if args.against else []))
        ]
    except PolicyError as e:
        print(e, file=err)
        return EXIT_INVALID
    progress = Progress(err, "op25b replay")
    with contextlib.suppress(OSError):
        progress.total = os.stat(args.capture).st_size
    try:
        if args.against:
            diff = replaydiff.replay_against(
                compiled[1], compiled[0], args.capture, now, progress.update
            )
            totals: replay.WalkTotals = diff
        else:
            res = replay.replay(compiled[0], args.capture, now, progress.update)
            totals = res
    except replay.CaptureError as e:
        progress.close()  # before the message, which must start its own line
        print(f"op25b replay: {e}", file=err)
        return EXIT_INVALID
    finally:
        progress.close()  # also on Ctrl-C: the shell prompt starts on a clean line
    for note in totals.notes(args.capture):
        print(f"op25b replay: warning: {note}", file=err)
    if args.against:
        if args.json:
            print(json.dumps(replaydiff.as_json(diff), indent=2), file=out)
        else:
            replaydiff.write_text(diff, args.capture, args.top, out)
        return EXIT_CHANGED if diff.changes else EXIT_OK
    if args.json:
        print(json.dumps(replay.as_json(res), indent=2), file=out)
    else:
        replay.write_text(res, args.capture, args.top, out)
    return EXIT_OK


def _cmd_diff(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from op25b.errors import EXIT_CHANGED
    from op25b.policy.compiled import compile_policy
    from op25b.policy.diff import diff_policies
    from op25b.policy.difftext import as_json, render_text
    from op25b.policy.loader import PolicyError, load_policy

    if args.horizon < 0:
        raise argparse.ArgumentTypeError(f"--horizon must be 0 or more days: {args.horizon}")
    now = _parse_now(args.now)
    try:
        old, new = (compile_policy(load_policy(p, now=now).policy) for p in (args.old, args.new))
    except PolicyError as e:
        print(e, file=err)
        return EXIT_INVALID
    diff = diff_policies(old, new, now, timedelta(days=args.horizon))
    if args.json:
        print(json.dumps(as_json(diff), indent=2), file=out)
    else:
        out.write(render_text(diff))
    return EXIT_CHANGED if diff.changed else EXIT_OK


def _missing(err: TextIO, what: str, exc: ImportError, extra: str) -> int:
    problem = MissingDependency(str(exc.name or exc), extra)
    print(f"op25b {what}: {problem}", file=err)
    return problem.exit_code


def _cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        from op25b.daemon.config import Overrides
        from op25b.daemon.main import run
    except ImportError as e:
        return _missing(err, "run", e, "daemon")

    return run(
        args.policy,
        Overrides(
            abuse_log=args.abuse_log,
            syslog=args.syslog,
            counters_interval=args.counters_interval,
            abuse_window=args.abuse_window,
        ),
        err,
    )


def _cmd_report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from op25b.report import desk as report

    return report.run(args, out, err)


def _cmd_lab(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        from op25b.lab import fleet, labstate
        from op25b.lab import topology as lab
        from op25b.lab.fleetplan import MAX_ROUTERS
    except ImportError as e:
        return _missing(err, "lab", e, "lab")

    if args.json and args.action != "status":
        print("op25b lab: --json goes with status only", file=err)
        return EXIT_USAGE
    try:
        if args.action == "up" and args.routers != 1:
            if not 1 <= args.routers <= MAX_ROUTERS:
                print(f"op25b lab: --routers must be 1..{MAX_ROUTERS}", file=err)
                return EXIT_USAGE
            the_fleet = fleet.fleet_up(args.routers)
            print(f"fleet {the_fleet.name} is up; run commands in a router with", file=out)
            print(f"  ip netns exec {the_fleet.ns('r1')} op25b run --policy POLICY", file=out)
            print(fleet.fleet_status()[0], file=out)
        elif args.action == "up":
            the_lab = labstate.lab_up()
            print(f"lab {the_lab.name} is up; run commands in it with", file=out)
            print(f"  ip netns exec {the_lab.rtr} op25b run --policy POLICY", file=out)
            print(labstate.lab_status(), file=out)
        elif args.action == "down":
            removed = fleet.fleet_down(args.name)
            if args.name is None or not removed:
                removed += labstate.lab_down(args.name)
            print(f"removed: {', '.join(removed) or 'nothing'}", file=out)
        elif args.json:
            states = fleet.fleet_states()
            doc = labstate.labs_state(others=fleet.owned_namespaces(states)).as_dict()
            doc["fleets"] = [asdict(f) for f in states]
            print(json.dumps(doc, indent=2), file=out)
        else:
            fleets, owned = fleet.fleet_status()
            print(fleets + labstate.lab_status(others=owned), file=out)
    except lab.LabError as e:
        print(f"op25b lab: {e}", file=err)
        return e.exit_code
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        from op25b.lab import demo
    except ImportError as e:
        return _missing(err, "demo", e, "lab")

    if args.fleet:
        from op25b.lab import fleetdemo
        from op25b.lab.fleetplan import MAX_ROUTERS

        if not 2 <= args.routers <= MAX_ROUTERS:
            print(f"op25b demo: --routers must be 2..{MAX_ROUTERS}", file=err)
            return EXIT_USAGE
        options = fleetdemo.FleetOptions(routers=args.routers)
        return fleetdemo.run(out, err, keep=args.keep, options=options)
    return demo.run(out, err, keep=args.keep, action=args.action)


def _cmd_rules(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from op25b.kernel import rules, status
    from op25b.kernel.integrity import state_file

    if args.action == "show":
        if not args.policy:
            print("op25b rules show: which policy? (op25b rules show POLICY)", file=err)
            return EXIT_USAGE
        from op25b.policy.loader import load_policy

        policy = load_policy(args.policy).policy
        print(status.show(policy, _parse_now(args.now)), end="", file=out)
        return EXIT_OK
    if args.action == "remove":
        rules.remove()
        print("op25b's rules and sets removed", file=out)
        return EXIT_OK
    try:
        result = status.check(state_file())
    except (Op25bError, OSError) as e:
        if args.json:
            print(json.dumps({"ok": False, "error": str(e)}), file=out)
        print(f"op25b rules: UNKNOWN: cannot read the kernel state: {e}", file=err)
        return EXIT_UNKNOWN
    if args.json:
        print(json.dumps(result.as_dict(), indent=2), file=out)
    else:
        basis = "the daemon's record" if result.recorded else "the expected structure"
        if result.ok:
            print(f"OK: op25b's rules and sets are intact (checked against {basis})", file=out)
        else:
            print(f"CRITICAL: {'; '.join(result.problems)}", file=out)
        print(rules.status(), end="", file=out)
    return EXIT_OK if result.ok else EXIT_CRITICAL


_COMMANDS = {
    "check": _cmd_check,
    "explain": _cmd_explain,
    "replay": _cmd_replay,
    "diff": _cmd_diff,
    "run": _cmd_run,
    "report": _cmd_report,
    "lab": _cmd_lab,
    "demo": _cmd_demo,
    "rules": _cmd_rules,
}


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Entry point; returns the exit code."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    parser = build_parser()
    try:
        # argparse prints usage errors, --help and --version to sys.stderr/stdout itself;
        # send them to the streams the caller gave us instead.
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as e:  # argparse reports usage errors by exiting
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    try:
        return _COMMANDS[args.command](args, out, err)
    except argparse.ArgumentTypeError as e:
        print(f"op25b {args.command}: {e}", file=err)
        return EXIT_USAGE
    except Op25bError as e:
        # One shape for every subcommand; a policy error already names its place.
        from op25b.policy.problems import PolicyError

        prefix = "" if isinstance(e, PolicyError) else f"op25b {args.command}: "
        print(f"{prefix}{e}", file=err)
        return e.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `op25b report ... | head`: the reader left; not an error worth a traceback.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps interpreter exit quiet
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
