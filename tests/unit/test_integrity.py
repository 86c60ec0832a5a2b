"""The rule watchdog's comparison: transient sets in the expected state are no damage.

Found by bench/soak.py: the expected state was taken while a verdict-cache rotation
had its ``-old`` sets in the kernel; once the rotation destroyed them, every check
reported them missing, the "repair" could not bring them back, and the daemon said
"repair failed" once a second for good (rules_ok 0).
"""

from __future__ import annotations

from op25b.kernel.integrity import KernelState, TableState, problems

TABLE = TableState(True, ("-j NFQUEUE --queue-num 0 --queue-bypass",), ("-p tcp -j OP25B",), True)
TABLES = {(v, t): TABLE for v in (4, 6) for t in ("filter", "mangle")}
SETS = {"op25b-mta4": 1, "op25b-allow4": 2, "op25b-subs4": 3, "op25b-block4": 0}


def test_transient_sets_in_the_expected_state_are_not_missing() -> None:
    expected = KernelState(TABLES, {**SETS, "op25b-block4-old": 5, "op25b-allow4-tmp": 2})
    assert problems(expected, KernelState(TABLES, SETS)) == []


def test_a_missing_permanent_set_is_still_damage() -> None:
    actual = {k: n for k, n in SETS.items() if k != "op25b-allow4"}
    assert problems(KernelState(TABLES, SETS), KernelState(TABLES, actual)) == [
        "ipset op25b-allow4 is missing"
    ]


def test_a_changed_static_set_is_damage_a_changed_cache_is_not() -> None:
    actual = {**SETS, "op25b-mta4": 0, "op25b-block4": 7}
    got = problems(
        KernelState(TABLES, SETS), KernelState(TABLES, actual), frozenset({"op25b-block4"})
    )
    assert got == ["ipset op25b-mta4 holds 0 entries, 1 were loaded"]
