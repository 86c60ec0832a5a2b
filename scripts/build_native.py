#!/usr/bin/env python3
"""Compile op25b's per-packet path with mypyc into op25b/_native/ (see op25b/native.py).

Usage: .venv/bin/python scripts/build_native.py [--if-stale]

The modules in ``op25b.native.COMPILED`` are compiled from the very same typed sources
as one mypyc group, outside the source tree (a temporary build directory), and the
extensions are moved into ``op25b/_native/`` with a manifest of the sources' SHA-256:
``op25b.native`` uses them only while every source still matches. ``--if-stale``
returns at once when the build in place is current. Needs mypy (the venv's test
extra) and a C compiler (build-essential, python3-dev).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--if-stale", action="store_true", help="do nothing if the build is current")
    args = ap.parse_args(argv)
    os.environ["OP25B_PURE_PYTHON"] = "1"  # this process imports only the sources
    sys.path.insert(0, str(REPO))
    from op25b import native

    if args.if_stale and native._check_build(native.NATIVE_DIR, native.PACKAGE_DIR)[0]:
        print("build_native: compiled hot path is current")
        return 0
    from mypyc.build import mypycify
    from setuptools import setup

    warnings.simplefilter("ignore")  # setuptools' notes on pyproject.toml are not ours
    start = time.monotonic()
    paths = [str(Path(*m.split(".")).with_suffix(".py")) for m in native.COMPILED]
    with tempfile.TemporaryDirectory(prefix="op25b-mypyc-") as tmp:
        out, work = Path(tmp) / "out", Path(tmp) / "work"
        os.chdir(REPO)  # mypy reads pyproject.toml and resolves op25b.* from here
        extensions = mypycify(paths, group_name=native.GROUP, target_dir=str(work / "c"))
        setup(
            name="op25b-native",
            ext_modules=extensions,
            script_args=["-q", "build_ext", "--build-lib", str(out), "--build-temp", str(work)],
        )
        staged = Path(tmp) / "native"
        staged.mkdir()
        modules: dict[str, dict[str, str]] = {}
        for module in (*native.COMPILED, native.GROUP + "__mypyc"):
            parts = module.split(".")
            (built,) = (out / Path(*parts[:-1])).glob(parts[-1] + ".*.so")
            rel = built.relative_to(out)
            (staged / rel.parent).mkdir(parents=True, exist_ok=True)
            shutil.move(built, staged / rel)
            modules[module] = {"file": rel.as_posix()}
            if module in native.COMPILED:
                modules[module]["sha256"] = native.source_digest(module)
        manifest = {"cache_tag": sys.implementation.cache_tag, "modules": modules}
        (staged / native.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        # Replace the old build in one rename, so a running import never sees half of it.
        old = Path(tmp) / "old"
        if native.NATIVE_DIR.exists():
            native.NATIVE_DIR.rename(old)
        shutil.move(staged, native.NATIVE_DIR)
    took = time.monotonic() - start
    print(f"build_native: compiled {len(native.COMPILED)} modules in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
