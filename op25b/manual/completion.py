"""bash completion for ``op25b``, generated from the argument parser.

The parser has one level of subcommands, so the script is small: a generic function
that finds the subcommand and counts positional words, plus per-command tables
(options, which options take a value, what each value or positional completes to:
choices, file names, or nothing). A test drives the generated script in a real bash.
shtab would do the same from the parser, but as one more dependency for 100 lines.
"""

from __future__ import annotations

from collections.abc import Callable

from op25b.cli import build_parser
from op25b.manual.parserwalk import Argument, Command, commands

_FUNCTION = r"""_op25b() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local cmd="" npos=0 skip=0 i w kind
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        if [[ -z $cmd ]]; then
            [[ $w == -* ]] || cmd=$w
        elif ((skip)); then
            skip=0
        elif [[ $w == -* ]]; then
            [[ $w == *=* || -z $(_op25b_value "$cmd" "$w") ]] || skip=1
        else
            ((npos++))
        fi
    done
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "$_op25b_commands -h --help --version" -- "$cur"))
        return
    fi
    if [[ $prev == -* ]]; then
        kind=$(_op25b_value "$cmd" "$prev")
        if [[ -n $kind ]]; then
            _op25b_reply "$kind"
            return
        fi
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_op25b_options "$cmd") -h --help" -- "$cur"))
        return
    fi
    _op25b_reply "$(_op25b_positional "$cmd" "$npos")"
}

_op25b_reply() {
    case "$1" in
        file)
            compopt -o filenames 2>/dev/null
            COMPREPLY=($(compgen -f -- "$cur"))
            ;;
        choices:*) COMPREPLY=($(compgen -W "${1#choices:}" -- "$cur")) ;;
        *) COMPREPLY=() ;;
    esac
}
"""


def render() -> str:
    """The bash completion script for /usr/share/bash-completion/completions/op25b."""
    cmds = commands(build_parser())
    out = [
        "# bash completion for op25b; generated from op25b's argument parser",
        "# (python -m op25b.manual), do not edit.",
        "",
        f'_op25b_commands="{" ".join(c.name for c in cmds)}"',
        "",
        _FUNCTION,
        _table("_op25b_options", "CMD: the options", cmds, _options),
        _table("_op25b_value", "CMD OPTION: what its value completes to", cmds, _values),
        _table("_op25b_positional", "CMD N: what positional N completes to", cmds, _positionals),
        "complete -F _op25b op25b",
    ]
    return "\n".join(out) + "\n"


def _table(name: str, what: str, cmds: tuple[Command, ...], body: Callable[[Command], str]) -> str:
    lines = [f"# {what}", f"{name}() {{", '    case "$1" in']
    for cmd in cmds:
        lines.append(f"        {cmd.name}) {body(cmd)} ;;")
    lines += ["    esac", "}", ""]
    return "\n".join(lines)


def _kind(arg: Argument) -> str:
    if arg.choices:
        return "choices:" + " ".join(arg.choices)
    return "file" if arg.is_path else "none"


def _options(cmd: Command) -> str:
    flags = [f for a in cmd.arguments for f in a.flags]
    return f'echo "{" ".join(flags)}"'


def _values(cmd: Command) -> str:
    taking = [a for a in cmd.arguments if a.flags and a.metavar]
    if not taking:
        return ":"
    arms = " ".join(f'{"|".join(a.flags)}) echo "{_kind(a)}" ;;' for a in taking)
    return f'case "$2" in {arms} esac'


def _positionals(cmd: Command) -> str:
    pos = [a for a in cmd.arguments if a.positional]
    if not pos:
        return ":"
    arms = [f'{i}) echo "{_kind(a)}" ;;' for i, a in enumerate(pos)]
    last = pos[-1]
    # A trailing ABUSE_LOG... takes every further word.
    rest = f'*) echo "{_kind(last)}" ;;' if last.nargs in ("*", "+") else "*) : ;;"
    return f'case "$2" in {" ".join(arms)} {rest} esac'
