"""What the argument parser defines, as plain data for op25b(8) and the completion.

Both generated documents read the parser through this module only, so they cannot
disagree with ``op25b --help`` or with each other. argparse offers no public way to
list a parser's arguments; ``_actions`` and ``_SubParsersAction`` are what
argparse-manpage and shtab read too.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

# Arguments whose values are files or paths; completion offers file names for them.
_PATH_WORDS = ("policy", "capture", "abuse_log", "log", "chart", "file")


@dataclass(frozen=True)
class Argument:
    """One option or positional argument of a command."""

    flags: tuple[str, ...]  # empty for a positional
    metavar: str  # "" for an option that takes no value
    help: str
    choices: tuple[str, ...]
    nargs: str  # "1", "?", "*" or "+"
    is_path: bool

    @property
    def positional(self) -> bool:
        return not self.flags

    def usage(self) -> str:
        """How the argument appears in a synopsis: ``[--port PORT]``, ``[POLICY]``."""
        value = "{" + "|".join(self.choices) + "}" if self.choices else self.metavar
        if self.positional:
            shown = {"?": f"[{value}]", "*": f"[{value}...]", "+": f"{value}..."}
            return shown.get(self.nargs, value)
        flag = self.flags[-1] if self.flags[-1].startswith("--") else self.flags[0]
        return f"[{flag} {value}]" if value else f"[{flag}]"


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, help texts and arguments (``-h`` left out)."""

    name: str
    summary: str
    description: str
    epilog: str
    arguments: tuple[Argument, ...]

    def synopsis(self) -> str:
        options = [a.usage() for a in self.arguments if not a.positional]
        positionals = [a.usage() for a in self.arguments if a.positional]
        return " ".join(["op25b", self.name, *options, *positionals])


def commands(parser: argparse.ArgumentParser) -> tuple[Command, ...]:
    """The parser's subcommands in the order ``op25b --help`` lists them."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {c.dest: c.help or "" for c in sub._choices_actions}
    out: list[Command] = []
    for name, cmd in sub.choices.items():
        out.append(
            Command(
                name=name,
                summary=summaries.get(name, ""),
                description=cmd.description or "",
                epilog=cmd.epilog or "",
                arguments=tuple(_argument(a) for a in cmd._actions if not _is_help(a)),
            )
        )
    return tuple(out)


def _is_help(action: argparse.Action) -> bool:
    return isinstance(action, argparse._HelpAction)


def _argument(action: argparse.Action) -> Argument:
    takes_value = action.nargs != 0
    if action.option_strings:
        metavar = (action.metavar or action.dest.upper()) if takes_value else ""
    else:
        metavar = action.metavar or action.dest.upper()
    nargs = action.nargs if isinstance(action.nargs, str) else "1"
    help_text = action.help or ""
    if "%(" in help_text:
        help_text = help_text % {**vars(action), "prog": "op25b"}
    dest = action.dest.lower()
    return Argument(
        flags=tuple(action.option_strings),
        metavar=str(metavar) if not isinstance(metavar, tuple) else " ".join(metavar),
        help=help_text,
        choices=tuple(str(c) for c in action.choices) if action.choices else (),
        nargs=nargs,
        is_path=takes_value and not action.choices and any(w in dest for w in _PATH_WORDS),
    )
