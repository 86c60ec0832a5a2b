"""House-style checks (docs/architecture.md): ruff and mypy --strict clean, a docstring
atop every module, each third-party import owned by one module, no giant modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "op25b"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 1100

# third-party top-level package -> the only module allowed to import it (None: no
# module of the package may; scapy builds the tests' captures, replay reads them raw)
IMPORT_OWNERS: dict[str, str | None] = {
    "yaml": "policy/yamlnodes.py",
    "netfilterqueue": "kernel/nfq.py",
    "pyroute2": "lab/topology.py",
    "scapy": None,
    "mypyc": None,  # scripts/build_native.py compiles the hot path; the package never imports it
    "aiosmtpd": "lab/mailservers.py",
    "matplotlib": "report/chart.py",
    "numpy": "report/chart.py",
    "prometheus_client": "daemon/metrics.py",
    "duckdb": "report/duckengine.py",
}


def rel(module: Path) -> str:
    return module.relative_to(PACKAGE).as_posix()


def tool(name: str) -> list[str]:
    """Run a tool from this interpreter's environment (the venv), not from PATH."""
    exe = Path(sys.executable).parent / name
    return [str(exe)] if exe.exists() else [sys.executable, "-m", name]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_clean() -> None:
    proc = run([*tool("ruff"), "check", "op25b", "tests", "bench"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_clean() -> None:
    proc = run([sys.executable, "-m", "mypy", "--strict", "op25b"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_has_modules() -> None:
    # guards the checks below against silently scanning nothing
    names = {rel(m) for m in MODULES}
    assert {"policy/decide.py", "policy/loader.py", "kernel/nfq.py", "cli.py"} <= names


@pytest.mark.parametrize("module", MODULES, ids=rel)
def test_module_docstring(module: Path) -> None:
    doc = ast.get_docstring(ast.parse(module.read_text(), str(module)))
    assert doc and doc.strip(), f"{module.name} has no module docstring"


def imported_roots(module: Path) -> set[str]:
    """Top-level package names a module imports anywhere (also inside functions)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text(), str(module))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(("package", "owner"), sorted(IMPORT_OWNERS.items()))
def test_third_party_import_has_one_owner(package: str, owner: str | None) -> None:
    importers = sorted(rel(m) for m in MODULES if package in imported_roots(m))
    assert importers == ([owner] if owner else [])


def test_import_scan_sees_function_level_imports(tmp_path: Path) -> None:
    # optional libraries are imported inside functions; a top-level scan would miss them
    sample = tmp_path / "m.py"
    sample.write_text(
        '"""x"""\ndef f():\n    from scapy.utils import PcapReader\n    import yaml\n'
    )
    assert imported_roots(sample) == {"scapy", "yaml"}


def test_no_module_over_the_size_limit() -> None:
    sizes = {rel(m): len(m.read_text().splitlines()) for m in MODULES}
    too_big = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert too_big == {}, f"modules over {MAX_LINES} lines: {too_big}"
