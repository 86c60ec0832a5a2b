"""Writing man(7) roff: escaping and the few macros op25b's manual pages use.

Text from the argument parser and the key table goes through ``text()`` so a
backslash, a leading dot or a hyphen in an option name cannot turn into a roff request
or a typographic dash (``man -l`` then shows what the code says).
"""

from __future__ import annotations

from collections.abc import Callable


def text(s: str) -> str:
    """Escape running text for roff: backslashes, hyphens, and control characters."""
    out = s.replace("\\", "\\e").replace("-", "\\-").replace("``", "")
    lines = [("\\&" + line) if line[:1] in (".", "'") else line for line in out.split("\n")]
    return "\n".join(lines)


def bold(s: str) -> str:
    return f"\\fB{text(s)}\\fR"


def italic(s: str) -> str:
    return f"\\fI{text(s)}\\fR"


def header(name: str, section: int, version: str, manual: str) -> list[str]:
    # No date: the page must be the same bytes whenever it is generated from the same code.
    return [
        f'.TH {name.upper()} {section} "" "op25b {version}" "{manual}"',
        ".nh",  # no hyphenation: option names and paths must stay whole
        ".ad l",
    ]


def section(title: str) -> list[str]:
    return [f".SH {title}"]


def subsection(title: str) -> list[str]:
    return [f'.SS "{text(title)}"']


def paragraph(body: str) -> list[str]:
    return [".PP", text(body)]


def tagged(tag: str, body: str) -> list[str]:
    """A .TP item: ``tag`` is already roff (e.g. bold()), ``body`` is plain text."""
    return [".TP", tag, text(body)]


def definitions(pairs: tuple[tuple[str, str], ...], tag: Callable[[str], str]) -> list[str]:
    """A list of .TP items: each (term, plain text) with the term styled by ``tag``."""
    return [line for term, body in pairs for line in tagged(tag(term), body)]


def example(lines: list[str]) -> list[str]:
    """Literal lines (commands, YAML), indented and not filled."""
    return [".RS 4", ".nf", *(text(line) for line in lines), ".fi", ".RE"]
