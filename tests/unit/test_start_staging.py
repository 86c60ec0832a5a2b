"""Start-up's pipelining through the fake kernel: the kernel sets load while the loader
child compiles, and nothing of the new policy is in force before all of it is ready.

The loader child is a real forked process; the tests replace its compile step (the
module global is inherited by the fork) to order it against the parent's staging or
to make it fail after the policy was sent.
"""

from __future__ import annotations

import os
import select
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from test_daemon_lifecycle import Env, env, run_in_background_until_bound

from op25b.daemon import loadchild
from op25b.daemon.config import Overrides
from op25b.daemon.lock import NamespaceLock
from op25b.daemon.main import run
from op25b.errors import EXIT_ENVIRONMENT, EXIT_INVALID
from op25b.kernel.ruletext import RuleConfig
from op25b.policy.compiled import CompiledPolicy
from op25b.policy.loader import load_policy
from op25b.policy.model import Policy

__all__ = ["env"]  # the fixture, shared with the lifecycle tests


def lock() -> NamespaceLock:
    return NamespaceLock(b"\0op25b-test-" + os.urandom(6).hex().encode())


def previous_run(env: Env) -> object:
    """Rules and sets a previous daemon left in force (a crash, a restart)."""
    old = load_policy(env.policy).policy
    env.kernel.install(RuleConfig.from_policy(old), old, datetime.now(UTC))
    env.kernel.calls.clear()
    return env.kernel.current


def test_kernel_sets_load_while_the_policy_compiles(
    env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fifo = tmp_path / "staging-began"
    os.mkfifo(fifo)
    compile_policy = loadchild.compile_policy

    def compile_once_staging_began(policy: Policy) -> CompiledPolicy:
        # In the loader child: refuse to compile unless the daemon is staging meanwhile.
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        ready, _, _ = select.select([fd], [], [], 10)
        if not ready or os.read(fd, 1) != b"s":
            raise RuntimeError("the kernel sets were not loading during the compile")
        return compile_policy(policy)

    stage_sets = env.kernel.stage_sets

    def stage(policy: Policy, now: datetime) -> None:
        with open(fifo, "wb") as began:  # waits for the child to be in its compile
            began.write(b"s")
        stage_sets(policy, now)

    monkeypatch.setattr(loadchild, "compile_policy", compile_once_staging_began)
    monkeypatch.setattr(env.kernel, "stage_sets", stage)
    codes, err = run_in_background_until_bound(env, lock())
    assert codes == [0], err.getvalue()
    assert env.kernel.names()[:2] == ["stage_sets", "install"]
    assert env.kernel.calls[1][1].endswith(" staged")


def test_compile_failing_after_the_sets_were_staged_leaves_the_previous_rules(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = previous_run(env)

    def compile_fails(policy: Policy) -> CompiledPolicy:
        raise MemoryError("injected in the loader child")

    monkeypatch.setattr(loadchild, "compile_policy", compile_fails)
    err = StringIO()
    code = run(str(env.policy), Overrides(), err, kernel=env.kernel, lock=lock())
    assert code == EXIT_INVALID  # a load failure, as documented (out of memory included)
    assert f"{env.policy}: cannot load policy" in err.getvalue()
    # Staged beside the live sets, then dropped: nothing installed, nothing removed.
    assert env.kernel.names() == ["stage_sets", "discard_staged"]
    assert env.kernel.current is before
    assert env.kernel.staged is None


def test_failed_staging_exits_3_and_leaves_the_previous_rules(env: Env) -> None:
    before = previous_run(env)
    env.kernel.fail["stage_sets"] = 1
    err = StringIO()
    code = run(str(env.policy), Overrides(), err, kernel=env.kernel, lock=lock())
    assert code == EXIT_ENVIRONMENT
    assert "installing kernel rules failed" in err.getvalue()
    assert "stage_sets failed (injected)" in err.getvalue()
    assert env.kernel.names() == ["stage_sets"]
    assert env.kernel.current is before


def test_unusable_abuse_log_exits_3_before_touching_the_kernel(env: Env) -> None:
    (env.tmp / "not-a-dir").write_text("")
    err = StringIO()
    ov = Overrides(abuse_log=str(env.tmp / "not-a-dir" / "blocked.jsonl"))
    code = run(str(env.policy), ov, err, kernel=env.kernel, lock=lock())
    assert code == EXIT_ENVIRONMENT
    assert "cannot open abuse log" in err.getvalue()
    assert env.kernel.calls == []
