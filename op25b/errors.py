"""The root of op25b's exceptions and the exit codes every subcommand uses.

Every error op25b raises on purpose derives from ``Op25bError`` and carries the exit
code the command line returns for it, so ``op25b.cli`` needs one ``except`` and every
subcommand answers the same way: one line on stderr, ``op25b COMMAND: message`` (a
policy error is ``file:line:col: key.path: message``), and the code below. A
traceback means a bug in op25b, never bad input.

Exit codes (``EXIT_CODES`` below is the same table as data: op25b(8) is generated
from it, and a test keeps this docstring and the README's table equal to it):

==  =========================================================================
0   success; ``diff``: no decision changes; ``rules status``: rules intact
1   the input is invalid (policy, capture, abuse log, address, port);
    ``diff``: some decision changes (usable as a CI gate)
2   usage error (unknown option, missing argument); ``rules status``: op25b's
    rules are absent or damaged (CRITICAL, for Nagios/Icinga-style checks)
3   the environment refused: a kernel command failed, no permission, a
    missing optional dependency, another daemon holds the lock;
    ``rules status``: the state could not be read (UNKNOWN)
130 interrupted (Ctrl-C)
==  =========================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130

# (code, meaning): the table above, for the man page, the README test and --help.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success; ``diff``: no decision changes; ``rules status``: rules intact"),
    (
        EXIT_INVALID,
        "the input is invalid (policy, capture, abuse log, address, port); "
        "``diff``: some decision changes (usable as a CI gate)",
    ),
    (
        EXIT_USAGE,
        "usage error (unknown option, missing argument); ``rules status``: op25b's "
        "rules are absent or damaged (CRITICAL, for Nagios/Icinga-style checks)",
    ),
    (
        EXIT_ENVIRONMENT,
        "the environment refused: a kernel command failed, no permission, a "
        "missing optional dependency, another daemon holds the lock; "
        "``rules status``: the state could not be read (UNKNOWN)",
    ),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)

# `op25b diff` and `op25b rules status` reuse the codes with a check's meaning.
EXIT_CHANGED = EXIT_INVALID
EXIT_CRITICAL = EXIT_USAGE
EXIT_UNKNOWN = EXIT_ENVIRONMENT


class Op25bError(Exception):
    """Base of every error op25b reports to a user; ``exit_code`` is what the CLI returns."""

    exit_code = EXIT_INVALID


class InputError(Op25bError):
    """Bad input from the user: a file, an address, a time, a capture."""

    exit_code = EXIT_INVALID


class UsageError(Op25bError):
    """Arguments that do not fit together (argparse reports the rest itself)."""

    exit_code = EXIT_USAGE


class EnvironmentFailure(Op25bError):
    """The machine refused: a command failed, a permission, a lock, a dependency."""

    exit_code = EXIT_ENVIRONMENT


class MissingDependency(EnvironmentFailure):
    """An optional Python package a subcommand needs is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed: pip install 'op25b[{extra}]'")
        self.package = package
        self.extra = extra
