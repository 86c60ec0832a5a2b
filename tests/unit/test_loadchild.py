"""Loading in a forked child (op25b.daemon.loadchild, op25b.util.forked): the daemon gets
exactly the policy and tables an in-process load gives, errors keep their one-line
wording, and a failing child or hook never hangs or leaks a traceback."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest

from op25b.daemon.loadchild import load_compiled
from op25b.policy.compiled import compile_policy
from op25b.policy.loader import load_policy
from op25b.policy.model import NetworkColumn, Policy
from op25b.policy.problems import PolicyError
from op25b.util.forked import ChildFailed, run_forked

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "example.yaml"


def _big_policy(tmp: Path) -> Path:
    """The example policy plus a pool file big enough to cross the pipe out of band."""
    pool = tmp / "pool.txt"
    rng = random.Random(3)
    v4 = sorted(rng.sample(range(1 << 16), 40_000))
    lines = [f"100.{96 + (n >> 14)}.{(n >> 6) & 255}.{(n & 63) << 2}/30" for n in v4]
    lines += [f"2001:db8:{0x8000 + n:x}::/48" for n in range(30_000)]
    pool.write_text("# test pool\n" + "\n".join(lines) + "\n")
    text = EXAMPLE.read_text().replace(
        "plans:\n", f"plans:\n  big:\n    exempt: false\n    prefixes_file: {pool}\n", 1
    )
    (tmp / "pools").symlink_to(EXAMPLE.parent / "pools")
    path = tmp / "policy.yaml"
    path.write_text(text)
    return path


def test_child_load_equals_in_process_load(tmp_path: Path) -> None:
    path = _big_policy(tmp_path)
    seen: list[Policy] = []
    policy, compiled = load_compiled(str(path), background=True, on_policy=seen.append)
    assert seen == [policy] and compiled.policy is policy  # one policy, shared
    here = load_policy(path).policy
    ref = compile_policy(here)
    assert [p.name for p in policy.plans] == [p.name for p in here.plans]
    for mine, theirs in zip(policy.plans, here.plans, strict=True):
        assert list(mine.prefixes) == list(theirs.prefixes)
        assert [mine.prefixes.location(i) for i in range(0, len(mine.prefixes), 997)] == [
            theirs.prefixes.location(i) for i in range(0, len(theirs.prefixes), 997)
        ]
    rng = random.Random(7)
    for _ in range(3000):
        a4, a6 = rng.getrandbits(32) | (100 << 24), rng.getrandbits(128)
        a6 = (0x20010DB8 << 96) | (a6 >> 32)
        for version, a in ((4, a4), (6, a6)):
            mine, theirs = compiled.plan_of(version, a), ref.plan_of(version, a)
            assert (mine is None) == (theirs is None)
            if mine is not None and theirs is not None:
                assert (mine.plan.name, mine.location) == (theirs.plan.name, theirs.location)
    assert policy.exemptions == here.exemptions and policy.daemon == here.daemon


def test_bad_policy_keeps_its_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("action: drop", "action: bounce", 1))
    with pytest.raises(PolicyError) as info:
        load_compiled(str(bad), background=False)
    with pytest.raises(PolicyError) as direct:
        load_policy(bad)
    assert str(info.value) == str(direct.value) and "\n" not in str(info.value)


def test_a_hook_error_is_raised_once_the_child_is_gone(tmp_path: Path) -> None:
    class Refused(Exception):
        pass

    def hook(_policy: Policy) -> None:
        raise Refused("lock held")

    with pytest.raises(Refused, match="lock held"):
        load_compiled(str(_big_policy(tmp_path)), background=False, on_policy=hook)


def test_forked_child_failures() -> None:
    def raises(_out: object) -> None:
        raise ValueError("no such thing")

    with pytest.raises(ChildFailed) as info:
        run_forked(raises, lambda pipe: pipe.read(), background=True)
    assert (info.value.kind, info.value.message) == ("ValueError", "no such thing")

    def dies(_out: object) -> None:
        os._exit(3)  # like a child killed before it could say anything

    with pytest.raises(ChildFailed, match="child exited with 3"):
        run_forked(dies, lambda pipe: pipe.read(), background=False)

    def half(out: object) -> None:
        out.write(b"\x05\x00")  # type: ignore[attr-defined]
        out.flush()  # type: ignore[attr-defined]
        os._exit(9)

    def strict(pipe: object) -> bytes:
        data: bytes = pipe.read(8)  # type: ignore[attr-defined]
        if len(data) < 8:
            raise EOFError("short")
        return data

    with pytest.raises(ChildFailed, match="child exited with 9"):
        run_forked(half, strict, background=False)
    ok = run_forked(lambda out: out.write(b"ok"), lambda pipe: pipe.read(), background=False)
    assert ok == b"ok"


def test_network_column_round_trips_v4_and_v6() -> None:
    values = [0, 1, (1 << 32) - 1, 1 << 64, (1 << 128) - 1, 0x20010DB8 << 96]
    col = NetworkColumn.of(values)
    assert list(col) == values and [col[i] for i in range(len(col))] == values
    assert list(NetworkColumn.of([5, 7])) == [5, 7]  # the v4-only path
    again = pickle.loads(pickle.dumps(col))
    assert list(again) == values
    col.release()
    assert len(col) == 0


def test_a_background_child_steps_off_the_loops_cpu() -> None:
    mine = os.sched_getaffinity(0)
    first = min(mine)
    os.sched_setaffinity(0, {first})  # like a daemon pinned to one CPU
    try:

        def report(out: object) -> None:
            out.write(repr(sorted(os.sched_getaffinity(0))).encode())  # type: ignore[attr-defined]

        got = run_forked(report, lambda pipe: pipe.read(), background=True)
        same = run_forked(report, lambda pipe: pipe.read(), background=False)
    finally:
        os.sched_setaffinity(0, mine)
    others = sorted(set(range(os.cpu_count() or 1)) - {first})
    assert got == repr(others or [first]).encode()  # a 1-CPU machine keeps its one CPU
    assert same == repr([first]).encode()  # start-up is not background work
