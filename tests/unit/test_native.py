"""The two implementations of the per-packet path (op25b.native): the compiled build is
in use when it is current, pure Python when asked or when the build is missing or
stale, and the data plane's tests pass on both (the other one in a subprocess: an
implementation is chosen once per process)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from op25b import native

REPO = Path(__file__).resolve().parents[2]
# The tests of every compiled module's behaviour, run again on the other implementation.
DATAPLANE_TESTS = [
    "tests/unit/test_engine.py",
    "tests/unit/test_counters.py",
    "tests/unit/test_aggregator_edges.py",
    "tests/unit/test_aggregator_overflow.py",
    "tests/unit/test_aggregator_once.py",
    "tests/unit/test_keys.py",
    "tests/unit/test_notices.py",
    "tests/unit/test_abuselog.py",
    "tests/unit/test_daemon_lifecycle.py",
    "tests/unit/test_native.py::test_running_implementation_is_the_one_asked_for",
]


def status_of(env: dict[str, str], cwd: Path = REPO) -> str:
    """``str(native.status())`` and the enforcer's file, as a fresh interpreter sees them."""
    code = (
        "import op25b.dataplane.enforcer as e; from op25b import native; "
        "print(native.status()); print(e.__file__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**os.environ, **env, "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def compiled_files() -> list[str]:
    return [importlib.import_module(m).__file__ or "" for m in native.COMPILED]


def test_running_implementation_is_the_one_asked_for() -> None:
    """Pure Python exactly when OP25B_PURE_PYTHON asks; otherwise the build that
    scripts/bootstrap.sh makes (a missing build fails here, it is not skipped)."""
    files = compiled_files()
    if os.environ.get(native.ENV_PURE, "") not in ("", "0"):
        assert not native.status().compiled
        assert all(f.endswith(".py") for f in files), files
    else:
        assert native.status().compiled, f"{native.status()}: run scripts/bootstrap.sh"
        assert all(f.startswith(str(native.NATIVE_DIR)) and f.endswith(".so") for f in files)


def test_the_data_plane_tests_pass_on_the_other_implementation() -> None:
    other = "0" if os.environ.get(native.ENV_PURE, "") not in ("", "0") else "1"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *DATAPLANE_TESTS],
        cwd=REPO,
        env={**os.environ, native.ENV_PURE: other},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout


def test_pure_python_when_asked() -> None:
    out = status_of({native.ENV_PURE: "1"})
    assert out.splitlines() == [
        f"hot path: pure Python, {native.ENV_PURE}=1",
        str(REPO / "op25b" / "dataplane" / "enforcer.py"),
    ]


def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(
        REPO / "op25b", tmp_path / "op25b", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


def test_a_stale_build_is_never_used(tmp_path: Path) -> None:
    """An edited source with the old build beside it: the edit runs, and status says why."""
    root = copy_of_the_package(tmp_path)
    assert status_of({native.ENV_PURE: ""}, root).startswith("hot path: mypyc-compiled")
    aggregator = root / "op25b" / "dataplane" / "aggregator.py"
    aggregator.write_text(aggregator.read_text() + "\n# edited after the build\n")
    out = status_of({native.ENV_PURE: ""}, root).splitlines()
    assert out == [
        "hot path: pure Python, compiled build is stale "
        "(op25b.dataplane.aggregator changed since)",
        str(root / "op25b" / "dataplane" / "enforcer.py"),
    ]


def test_no_build_means_pure_python(tmp_path: Path) -> None:
    root = copy_of_the_package(tmp_path)
    shutil.rmtree(root / "op25b" / "_native")
    out = status_of({native.ENV_PURE: ""}, root).splitlines()
    assert out[0] == "hot path: pure Python, no compiled build; scripts/build_native.py makes one"
