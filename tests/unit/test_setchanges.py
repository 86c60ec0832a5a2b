"""Reloads touch only the kernel sets that change (op25b.kernel.ipsets.plan_changes):
unchanged sets are left alone, a big ``subs`` set changed a little is edited in place
(additions before deletions), everything else is replaced whole; and the packed-int
set contents agree with the Prefix view they replace."""

from __future__ import annotations

from datetime import UTC, datetime

from builders import make_policy

from op25b.kernel.ipsets import plan_changes, render_load
from op25b.kernel.names import set_name
from op25b.kernel.setcontents import SubsKeys, compute_sets
from op25b.policy.addr import parse_prefix

NOW = datetime(2026, 6, 1, tzinfo=UTC)
ALL = [set_name(k, v) for k in ("mta", "allow", "subs") for v in (4, 6)]


def _pool(n: int, skip: int = -1, extra: int = 0) -> list[str]:
    """n /32s in 100.80.0.0/12 (every other address), minus index ``skip``, plus ``extra``."""
    base = 0x64500000
    out = [f"{(base + 2 * i) >> 24}.{((base + 2 * i) >> 16) & 255}.{((base + 2 * i) >> 8) & 255}"
           f".{(base + 2 * i) & 255}/32" for i in range(n + extra) if i != skip]
    return out


def _contents(pool: list[str], exemptions: tuple[tuple[str, str], ...] = ()):  # type: ignore[no-untyped-def]
    policy = make_policy(
        {"residential": ["100.64.0.0/16"], "pool": pool, "business": (True, ["198.51.100.0/24"])},
        exemptions=[(p, datetime(2027, 1, 1, tzinfo=UTC)) for p, _ in exemptions],
    )
    return compute_sets(policy, NOW)


def test_unchanged_sets_are_left_alone() -> None:
    a = _contents(_pool(100))
    skip, edits = plan_changes(a, _contents(_pool(100)), ALL)
    assert skip == set(ALL) and edits == ""
    assert render_load(a, skip) == ""  # nothing to load, nothing to swap
    # A set missing from the kernel is loaded whatever the previous contents say.
    skip, _ = plan_changes(a, a, [n for n in ALL if n != set_name("subs", 4)])
    assert set_name("subs", 4) not in skip


def test_an_exemption_replaces_allow_only() -> None:
    old = _contents(_pool(100))
    new = _contents(_pool(100), (("100.64.7.7/32", "T-1"),))
    skip, edits = plan_changes(new, old, ALL)
    assert set_name("allow", 4) not in skip and edits == ""
    assert skip == set(ALL) - {set_name("allow", 4)}


def test_a_big_subs_set_changed_a_little_is_edited_in_place() -> None:
    old = _contents(_pool(60_000))
    new = _contents(_pool(60_000, skip=7, extra=2))
    skip, edits = plan_changes(new, old, ALL)
    assert set_name("subs", 4) in skip
    lines = edits.splitlines()
    assert lines == [
        "add op25b-subs4 100.81.212.192/32",
        "add op25b-subs4 100.81.212.194/32",
        "del op25b-subs4 100.80.0.14/32",
    ]  # additions first: a moving source stays a subscriber throughout
    # The same change on a small set: replaced whole, no edit.
    skip, edits = plan_changes(_contents(_pool(100, skip=7)), _contents(_pool(100)), ALL)
    assert set_name("subs", 4) not in skip and edits == ""


def test_a_big_change_replaces_the_set() -> None:
    old = _contents(_pool(60_000))
    new = _contents(_pool(30_000))
    skip, edits = plan_changes(new, old, ALL)
    assert set_name("subs", 4) not in skip and edits == ""


def test_subs_keys_read_like_prefixes() -> None:
    keys = SubsKeys(6, [(parse_prefix("2001:db8::/32").network << 8) | 32])
    assert keys[0] == parse_prefix("2001:db8::/32") and len(keys) == 1
    assert keys.texts() == ["2001:db8::/32"] and list(keys[0:1]) == [keys[0]]
    assert keys == SubsKeys(6, list(keys.keys)) and keys != SubsKeys(4, list(keys.keys))
