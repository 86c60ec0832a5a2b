"""Per-module table of a mutmut run (what ``scripts/mutation.sh`` prints at the end).

Reads mutmut's result files (``mutants/<module>.py.meta``: exit code per mutant) and
prints one Markdown row per module -- mutants, killed, survived, the rest (timeouts,
mutants no unit test reaches, not run) and seconds -- then every survivor's name, so
each can be looked at with ``mutmut show NAME`` and either killed by a new test or
written down as equivalent in tests/README.md.

Usage: ``mutation_table.py MUTANTS_DIR NAME=op25b/x/y.py:SECONDS ...``
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

# mutmut's exit codes (mutmut/stats.py): 1 and 3 are a kill, 0 a survivor.
KILLED = {1, 3}
SURVIVED = {0}
TIMEOUT = {36, 24, -24, 152, 255}
NO_TESTS = {5, 33}


def classify(code: int | None) -> str:
    """One word for a mutant's exit code."""
    if code is None:
        return "not run"
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in TIMEOUT:
        return "timeout"
    if code in NO_TESTS:
        return "no tests"
    return f"exit {code}"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    mutants = Path(argv[0])
    rows = ["| module | mutants | killed | survived | other | killed % | s |", "|---" * 7 + "|"]
    survivors: list[str] = []
    for arg in argv[1:]:
        rest = arg.split("=", 1)[-1]  # NAME=op25b/x.py:SECONDS
        module, _, seconds = rest.rpartition(":")
        meta = mutants / f"{module}.meta"
        codes: dict[str, int | None] = (
            json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        )
        kinds = Counter(classify(c) for c in codes.values())
        total, killed, survived = len(codes), kinds["killed"], kinds["survived"]
        other = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())
                          if k not in ("killed", "survived")) or "-"  # fmt: skip
        pct = f"{100 * killed / (killed + survived):.1f}" if killed + survived else "-"
        rows.append(f"| {module} | {total} | {killed} | {survived} | {other} | {pct} | {seconds} |")
        survivors += sorted(k for k, c in codes.items() if classify(c) == "survived")
    print("\n".join(rows))
    print(f"\nsurvivors ({len(survivors)}):")
    for s in survivors:
        print(f"  {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
