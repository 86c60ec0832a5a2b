"""The rule watchdog's comparison: transient sets in the expected state are no damage,
a static set with other members (even at the same count) is.

Found by bench/soak.py: the expected state was taken while a verdict-cache rotation
had its ``-old`` sets in the kernel; once the rotation destroyed them, every check
reported them missing, the "repair" could not bring them back, and the daemon said
"repair failed" once a second for good (rules_ok 0).
"""

from __future__ import annotations

import json

from op25b.kernel.integrity import (
    KernelState,
    TableState,
    from_json,
    member_digest,
    problems,
    to_json,
)

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


# Found by the adversarial review: `ipset del op25b-subs4 100.64.0.0/16; ipset add
# op25b-subs4 192.0.2.0/24` keeps the count, so the bot became "not a subscriber" for
# good while every check and `op25b rules status` said OK.
SUBS = "create op25b-subs4 hash:net family inet hashsize 1024 maxelem 65536\n"


def test_the_member_digest_ignores_the_kernels_listing_order() -> None:
    a = SUBS + "add op25b-subs4 100.64.0.0/16\nadd op25b-subs4 198.51.100.0/24\n"
    b = (
        SUBS.replace("1024", "2048")
        + "add op25b-subs4 198.51.100.0/24\nadd op25b-subs4 100.64.0.0/16\n"
    )
    assert member_digest(a, "op25b-subs4") == member_digest(b, "op25b-subs4")
    # One `ipset save` of every set: only the named set's members count.
    other = a + "add op25b-allow4 100.64.7.7\nadd op25b-subs6 2001:db8:100::/40\n"
    assert member_digest(other, "op25b-subs4") == member_digest(a, "op25b-subs4")
    assert member_digest(a, "op25b-subs4") != member_digest(
        a.replace("100.64.0.0/16", "192.0.2.0/24"), "op25b-subs4"
    )
    assert member_digest(a, "op25b-subs4") != member_digest(
        a + "add op25b-subs4 100.64.7.0/24 nomatch\n", "op25b-subs4"
    )


def test_same_count_other_members_is_damage() -> None:
    good = member_digest(SUBS + "add op25b-subs4 100.64.0.0/16\n", "op25b-subs4")
    bad = member_digest(SUBS + "add op25b-subs4 192.0.2.0/24\n", "op25b-subs4")
    expected = KernelState(TABLES, SETS, contents={"op25b-subs4": good})
    assert problems(expected, KernelState(TABLES, SETS, contents={"op25b-subs4": good})) == []
    assert problems(expected, KernelState(TABLES, SETS, contents={"op25b-subs4": bad})) == [
        "ipset op25b-subs4 holds other entries than were loaded (3 entries)"
    ]
    # A set too big to digest (none recorded) is compared by its count alone.
    assert problems(KernelState(TABLES, SETS), KernelState(TABLES, SETS, contents={})) == []


def test_the_record_keeps_the_digests_and_reads_an_older_record() -> None:
    state = KernelState(TABLES, SETS, ("x",), {"op25b-allow4": "ab" * 32})
    assert from_json(json.loads(json.dumps(to_json(state)))) == state
    older = to_json(state)
    del older["contents"]
    assert from_json(older).contents == {}
