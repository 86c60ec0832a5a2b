"""``python -m op25b.manual ROOT``: write the man pages and completion under ROOT.

The package build runs it with the packaged venv's interpreter, so the pages describe
exactly the code in the package; ``man -l ROOT/usr/share/man/man8/op25b.8`` previews.
"""

from __future__ import annotations

import sys
from pathlib import Path

from op25b.manual import completion, op25b8, policykeys

FILES = {
    "usr/share/man/man8/op25b.8": op25b8.render,
    "usr/share/man/man5/op25b-policy.5": policykeys.render,
    "usr/share/bash-completion/completions/op25b": completion.render,
}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m op25b.manual ROOT", file=sys.stderr)
        return 2
    root = Path(argv[0])
    for rel, render in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
