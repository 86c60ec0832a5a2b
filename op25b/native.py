"""Which implementation of the per-packet path runs: mypyc-compiled or pure Python.

Owns the choice, made once when ``op25b`` is imported, and the import hook behind it.
The data plane's hot modules (``COMPILED``) are plain, ``mypy --strict`` typed Python
and the reference; ``scripts/build_native.py`` (run by ``scripts/bootstrap.sh``)
compiles the very same files with mypyc into ``op25b/_native/``, next to a manifest
of the sources' SHA-256. The compiled extensions never sit beside the ``.py`` files,
so they cannot shadow them by accident: they are only used when this module puts its
finder first on ``sys.meta_path``, which it does when

* ``OP25B_PURE_PYTHON`` is unset, empty or ``0``, and
* the manifest exists, was built for this interpreter (its cache tag), and every
  source file still hashes as it did at build time (an edited ``.py`` is never
  silently served by a stale build: the pure module runs and ``status()`` says why).

All of ``COMPILED`` or none of it: the modules of one mypyc group call each other
directly, and one Decision/Packet type per process keeps ``is`` checks meaningful.
``status()`` is what ``op25b --version`` prints. The Debian package ships no build
(its venv is made by dh-virtualenv from the tracked sources): it runs pure Python.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

__all__ = ["COMPILED", "ENV_PURE", "GROUP", "NATIVE_DIR", "Status", "install", "status"]

#: The modules compiled together (one mypyc group): the per-packet path as the
#: profile found it (the memoised decision, counting, abuse aggregation). Not the
#: parser: its cost is struct's C calls either way (compiled it won ~40 ns of ~350),
#: and a compiled frozen dataclass is built through Python's dataclass __init__
#: (~0.6 us a Packet against the interpreted _PacketBuilder's ~0.15 us), which would
#: slow ``op25b replay`` down.
COMPILED = (
    "op25b.dataplane.keys",
    "op25b.dataplane.verdicts",
    "op25b.dataplane.counters",
    "op25b.dataplane.aggregator",
    "op25b.dataplane.enforcer",
)
#: mypyc's shared library for the group is the top-level module ``GROUP + "__mypyc"``.
GROUP = "op25b_native"
ENV_PURE = "OP25B_PURE_PYTHON"
PACKAGE_DIR = Path(__file__).resolve().parent
NATIVE_DIR = PACKAGE_DIR / "_native"
MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class Status:
    """The implementation in force and, for pure Python, why."""

    compiled: bool
    detail: str

    def __str__(self) -> str:
        if self.compiled:
            return "hot path: mypyc-compiled"
        return f"hot path: pure Python, {self.detail}"


def source_digest(module: str, package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 of a COMPILED module's source file (the manifest records these)."""
    rel = Path(*module.split(".")[1:]).with_suffix(".py")
    return hashlib.sha256((package_dir / rel).read_bytes()).hexdigest()


class _NativeFinder(MetaPathFinder):
    """Serves the COMPILED modules and the group library from NATIVE_DIR."""

    def __init__(self, files: dict[str, Path]) -> None:
        self._files = files

    def find_spec(
        self,
        fullname: str,
        path: object = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        file = self._files.get(fullname)
        if file is None:
            return None
        return importlib.util.spec_from_file_location(fullname, file)


def _check_build(native_dir: Path, package_dir: Path) -> tuple[dict[str, Path] | None, str]:
    """(module -> extension file, "") for a usable build, else (None, why not)."""
    try:
        manifest = json.loads((native_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return None, "no compiled build; scripts/build_native.py makes one"
    except (OSError, ValueError) as e:
        return None, f"unreadable compiled build manifest: {e}"
    if manifest.get("cache_tag") != sys.implementation.cache_tag:
        return None, f"compiled build is for {manifest.get('cache_tag')}"
    files: dict[str, Path] = {}
    for module in (*COMPILED, GROUP + "__mypyc"):
        entry = manifest.get("modules", {}).get(module)
        if entry is None:
            return None, f"compiled build lacks {module}"
        file = native_dir / entry["file"]
        if not file.is_file():
            return None, f"compiled build lacks {file.name}"
        if module != GROUP + "__mypyc" and entry.get("sha256") != source_digest(
            module, package_dir
        ):
            return None, f"compiled build is stale ({module} changed since)"
        files[module] = file
    return files, ""


_status: Status | None = None


def install() -> Status:
    """Choose the implementation (once per process); called by ``op25b/__init__``."""
    global _status
    if _status is not None:
        return _status
    if os.environ.get(ENV_PURE, "") not in ("", "0"):
        _status = Status(False, f"{ENV_PURE}={os.environ[ENV_PURE]}")
        return _status
    if any(m in sys.modules for m in COMPILED):
        # Too late to swap (something imported the data plane before op25b itself).
        _status = Status(False, "data plane imported before the choice")
        return _status
    files, why = _check_build(NATIVE_DIR, PACKAGE_DIR)
    if files is None:
        _status = Status(False, why)
        return _status
    sys.meta_path.insert(0, _NativeFinder(files))
    _status = Status(True, str(NATIVE_DIR))
    return _status


def status() -> Status:
    """The implementation this process runs (``install()`` has run by now)."""
    return install()
