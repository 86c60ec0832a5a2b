"""The architecture, enforced: import-linter contracts (pyproject.toml), a proof that a
broken contract is caught, and the pure layers importing with only PyYAML present."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_import_contracts_are_kept() -> None:
    proc = lint(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 kept, 0 broken" in proc.stdout


def test_a_dataplane_import_of_the_kernel_breaks_the_layers(tmp_path: Path) -> None:
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "op25b", tmp_path / "op25b", ignore=skip)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    packet = tmp_path / "op25b" / "dataplane" / "packet.py"
    packet.write_text(packet.read_text() + "\nimport op25b.kernel.rules  # noqa\n")
    proc = lint(tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cli > daemon > kernel > dataplane > policy > util > errors BROKEN" in proc.stdout
    assert "op25b.dataplane.packet -> op25b.kernel.rules" in proc.stdout


# Imports every module of the pure layers with the optional libraries made unimportable.
_ONLY_YAML = """
import importlib, pkgutil, sys
BLOCKED = {"netfilterqueue", "pyroute2", "scapy", "aiosmtpd", "matplotlib", "numpy"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked for this test: {name}")
        return None
sys.meta_path.insert(0, Block())
import op25b
names = []
for pkg in ("op25b.policy", "op25b.dataplane", "op25b.util"):
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        importlib.import_module(info.name)
        names.append(info.name)
importlib.import_module("op25b.errors")
print(len(names))
"""


def test_policy_and_dataplane_import_with_only_pyyaml() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _ONLY_YAML],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 15  # every module of the three packages was imported
