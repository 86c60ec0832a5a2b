"""Issue 17's hand-made faults, each put into a scratch copy and run against its named test.

mutmut (``scripts/mutation.sh``) mutates expressions inside functions; some faults that
once survived live in module constants and dataclass defaults it does not touch. This
runs each of them, one at a time, in a copy of the tree and reports whether the test
named for it fails (kills it). Exit 0 only if every fault is killed.

Usage: ``.venv/bin/python scripts/listed_faults.py`` (about a minute).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOUNDARY = "tests/unit/test_botscore.py::test_client_rule_boundaries"
ENGINE = "tests/unit/test_engine.py::"


@dataclass(frozen=True)
class Fault:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


FAULTS = (
    Fault(
        "client rule: at most 2 destinations becomes fewer than 2",
        "op25b/report/botscore.py",
        "distinct <= CLIENT_MAX_DESTINATIONS",
        "distinct < CLIENT_MAX_DESTINATIONS",
        (f"{BOUNDARY}[two-destinations-is-a-client]",),
    ),
    Fault(
        "client rule: destination limit raised from 2 to 5",
        "op25b/report/botscore.py",
        "CLIENT_MAX_DESTINATIONS = 2",
        "CLIENT_MAX_DESTINATIONS = 5",
        (f"{BOUNDARY}[three-destinations-is-not-a-client]",),
    ),
    Fault(
        "client rule: rate below 1/s becomes at most 1/s",
        "op25b/report/botscore.py",
        "rate < CLIENT_MAX_RATE",
        "rate <= CLIENT_MAX_RATE",
        (f"{BOUNDARY}[rate-1.0-is-not-a-client]",),
    ),
    Fault(
        "client rule: regularity condition removed",
        "op25b/report/botscore.py",
        "n_windows >= STEADY_MIN_WINDOWS and cv <= STEADY_MAX_CV",
        "n_windows >= STEADY_MIN_WINDOWS",
        (f"{BOUNDARY}[irregular-windows]",),
    ),
    Fault(
        "client rule: variation of exactly half the mean no longer steady",
        "op25b/report/botscore.py",
        "cv <= STEADY_MAX_CV",
        "cv < STEADY_MAX_CV",
        (f"{BOUNDARY}[variation-half-the-mean-is-steady]",),
    ),
    Fault(
        "client rule: 2 windows enough to be sure",
        "op25b/report/botscore.py",
        "STEADY_MIN_WINDOWS = 3",
        "STEADY_MIN_WINDOWS = 2",
        (f"{BOUNDARY}[two-windows-too-few]",),
    ),
    Fault(
        "bot score: retry-interval fallback for single-attempt windows removed",
        "op25b/report/botscore.py",
        "elif len(windows) >= 2:",
        "elif False:",
        (
            "tests/unit/test_botscore.py::"
            "test_retry_interval_falls_back_to_gaps_between_single_attempt_windows",
        ),
    ),
    Fault(
        "abuse aggregator: v4/v6 key bit removed",
        "op25b/dataplane/aggregator.py",
        "<< self._v6_shift) | V6_KEY_BIT",
        "<< self._v6_shift)",
        ("tests/unit/test_abuselog.py::test_v4_and_v6_sources_with_equal_bits_stay_apart",),
    ),
    Fault(
        "per-source memo: v4/v6 key bit removed",
        "op25b/dataplane/enforcer.py",
        "pkt.src | V6_KEY_BIT",
        "pkt.src",
        (f"{ENGINE}test_memo_keeps_v4_and_v6_sources_with_equal_bits_apart",),
    ),
    Fault(
        "daemon default on_error: accept becomes drop",
        "op25b/policy/model.py",
        'on_error: str = "accept"',
        'on_error: str = "drop"',
        ("tests/unit/test_loader.py::test_daemon_defaults_are_the_documented_values",),
    ),
    Fault(
        "daemon default v6_aggregate: 64 becomes 48",
        "op25b/policy/model.py",
        "v6_aggregate: int = 64",
        "v6_aggregate: int = 48",
        ("tests/unit/test_loader.py::test_daemon_defaults_are_the_documented_values",),
    ),
    Fault(
        "daemon default abuse_window: 300 becomes 60",
        "op25b/policy/model.py",
        "abuse_window: float = 300.0",
        "abuse_window: float = 60.0",
        ("tests/unit/test_loader.py::test_daemon_defaults_are_the_documented_values",),
    ),
    Fault(
        "monitor-mode blocks reach the kernel verdict cache",
        "op25b/dataplane/enforcer.py",
        "if self.cache is not None and d.verdict is not Verdict.MONITOR:",
        "if self.cache is not None:",
        (f"{ENGINE}test_monitor_blocks_never_reach_the_verdict_cache",),
    ),
    Fault(
        "memo not reset when the clock steps back",
        "op25b/dataplane/enforcer.py",
        "now >= self._memo_until) or now < self._memo_from:",
        "now >= self._memo_until):",
        (f"{ENGINE}test_memo_resets_when_the_clock_steps_back_past_its_start",),
    ),
    Fault(
        "memo not reset at an exemption's expiry",
        "op25b/dataplane/enforcer.py",
        "(self._memo_until is not None and now >= self._memo_until) or ",
        "",
        (f"{ENGINE}test_memo_resets_at_exemption_expiry_without_a_clock_step",),
    ),
    Fault(
        "enforcer ignores the injected clock",
        "op25b/dataplane/enforcer.py",
        "self.now = datetime.now(UTC) if now is None else now",
        "self.now = datetime.now(UTC)",
        (f"{ENGINE}test_memo_resets_at_exemption_expiry_without_a_clock_step",),
    ),
)


def run_tests(work: Path, tests: Sequence[str]) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    return subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=600, check=False)


def main() -> int:
    killed = 0
    with tempfile.TemporaryDirectory(prefix="op25b-faults-") as tmp:
        work = Path(tmp)
        for part in ("op25b", "tests", "policies"):
            shutil.copytree(REPO / part, work / part, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(REPO / "pyproject.toml", work / "pyproject.toml")
        # Control: unchanged, every named test passes, so a failure below is the fault's.
        control = run_tests(work, sorted({t for f in FAULTS for t in f.tests}))
        if control.returncode != 0:
            print(f"the named tests fail without any fault:\n{control.stdout}")
            return 1
        for fault in FAULTS:
            path = work / fault.file
            original = path.read_text()
            if original.count(fault.old) != 1:
                print(f"STALE     {fault.name}: {fault.old!r} is not in {fault.file} exactly once")
                continue
            path.write_text(original.replace(fault.old, fault.new))
            try:
                proc = run_tests(work, fault.tests)
            finally:
                path.write_text(original)
            # pytest exit 1 = a test failed; anything else (collection error, no test) is
            # not a kill by the named test.
            ok = proc.returncode == 1
            killed += ok
            print(f"{'killed' if ok else 'SURVIVED':9} {fault.name}  <- {' '.join(fault.tests)}")
    print(f"{killed} of {len(FAULTS)} listed faults killed")
    return 0 if killed == len(FAULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
