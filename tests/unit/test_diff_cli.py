"""``op25b diff`` through ``main()``: the README example of issue 16 (an exemption
added, a /25 moved between plans, a provider MTA added) gives exactly those three
changes with the right lines, as text and as JSON; exit codes; bad input.

The expected locations are found in the files themselves, not typed in, so the test
follows edits of policies/example.yaml; everything else is compared exactly.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from op25b.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "policies" / "example.yaml"
NOW = "2026-01-01T00:00:00Z"

# The three edits of the review, applied to a copy of the example as NEW.
EDITS = [
    (
        "      - 100.64.200.0/29        # a business customer inside the residential /16\n",
        "      - 100.64.50.128/25       # moved from residential (SALES-77)\n",
    ),
    (
        '    addresses: [203.0.113.25, "2001:db8:25::25"]\n',
        "  relay2:\n    addresses: [203.0.113.26]\n",
    ),
    (
        "    reason: verified own MX\n",
        "  - prefix: 100.64.9.9/32\n    ticket: ABUSE-2001\n    expires: 2026-01-05\n"
        "    reason: own MX during a migration\n",
    ),
]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def review(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """old.yaml (the example) and new.yaml (with EDITS) in a fresh working directory."""
    shutil.copytree(EXAMPLE.parent / "pools", tmp_path / "pools")
    text = EXAMPLE.read_text()
    (tmp_path / "old.yaml").write_text(text)
    for after, added in EDITS:
        assert text.count(after) == 1, after
        text = text.replace(after, after + added)
    (tmp_path / "new.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def loc(file: str, needle: str) -> str:
    """``file:line:col`` of the one line starting (after indentation) with ``needle``;
    the column is that of the item after a list dash, as the loader reports it."""
    hits = []
    for n, line in enumerate(Path(file).read_text().splitlines(), 1):
        text = line.lstrip()
        if text.startswith(needle):
            col = len(line) - len(text) + (3 if text.startswith("- ") else 1)
            hits.append(f"{file}:{n}:{col}")
    assert len(hits) == 1, (file, needle, hits)
    return hits[0]


def value_loc(file: str, needle: str) -> str:
    """``file:line:col`` where the one occurrence of ``needle`` starts."""
    (hit,) = [
        f"{file}:{n}:{line.index(needle) + 1}"
        for n, line in enumerate(Path(file).read_text().splitlines(), 1)
        if needle in line and not line.lstrip().startswith("#")
    ]
    return hit


def test_the_review_example_shows_exactly_its_three_changes(review: Path) -> None:
    code, out, err = run("diff", "old.yaml", "new.yaml", "--now", NOW)
    assert (code, err) == (1, "")
    residential = loc("old.yaml", "- 100.64.0.0/16")
    pgws = [loc("pools/mobile.txt", f"100.65.{n}.0/20") for n in (0, 16, 32)]
    mobile = ", ".join(pgws) + " +1"
    biz = loc("old.yaml", "- 100.64.200.0/29") + ", " + loc("old.yaml", "- 198.51.100.0/24")
    ex77 = loc("old.yaml", "- prefix: 100.64.7.7/32")
    ex99 = loc("new.yaml", "- prefix: 100.64.9.9/32")
    moved = loc("new.yaml", "- 100.64.50.128/25")
    relay = value_loc("new.yaml", "203.0.113.26")
    assert (
        out
        == f"""\
old.yaml -> new.yaml: 3 changes (exemptions as of 2026-01-01 00:00:00 UTC)

1. 1 address -> any external MX, port 25
   before  DROP, blocked (plan residential)  [{residential}]
   after   ACCEPT, exemption (plan residential)  [{ex99}]
   sources 100.64.9.9/32  1 address

2. 128 addresses -> any external MX, port 25
   before  DROP, blocked (plan residential)  [{residential}]
   after   ACCEPT, exempt_plan (plan business-static)  [{moved}]
   sources 100.64.50.128/25  128 addresses

3. every IPv4 source -> 203.0.113.26 (provider MTA in new.yaml only), port 25
   before  by source:
     DROP, blocked (plan mobile)                 28,672 addresses in 4 ranges  [{mobile}]
     DROP, blocked (plan residential)            65,527 addresses in 3 ranges  [{residential}]
     ACCEPT, exempt_plan (plan business-static)  264 addresses in 2 ranges  [{biz}]
     ACCEPT, exemption (plan residential)        1 address  [{ex77}]
     ACCEPT, not_subscriber                      4,294,872,832 addresses in 4 ranges
   after   ACCEPT, provider_mta  [{relay}] for every one

exemptions of new.yaml expiring within 7 days:
  100.64.9.9/32  ABUSE-2001  through 2026-01-05 UTC  [{ex99}]  (own MX during a migration)
"""
    )


def test_the_review_example_as_json(review: Path) -> None:
    code, out, _ = run("diff", "old.yaml", "new.yaml", "--now", NOW, "--json")
    assert code == 1
    doc = json.loads(out)
    assert (doc["old"], doc["new"], doc["changed"], doc["horizon_days"]) == (
        "old.yaml",
        "new.yaml",
        True,
        7,
    )
    assert doc["now"] == "2026-01-01T00:00:00+00:00"
    first, second, third = doc["changes"]
    assert first["sources"] == [
        {
            "first": "100.64.9.9",
            "last": "100.64.9.9",
            "blocks": ["100.64.9.9/32"],
            "addresses": 1,
            "before": {
                "verdict": "drop",
                "reason": "blocked",
                "plan": "residential",
                "rule": loc("old.yaml", "- 100.64.0.0/16"),
            },
            "after": {
                "verdict": "accept",
                "reason": "exemption",
                "plan": "residential",
                "rule": loc("new.yaml", "- prefix: 100.64.9.9/32"),
            },
        }
    ]
    assert first["destinations"] == [
        {"address": None, "old_provider_mta": None, "new_provider_mta": None}
    ]
    assert (first["family"], first["ports"], first["addresses"]) == (4, [25], 1)
    assert second["after"] == {
        "verdict": "accept",
        "reason": "exempt_plan",
        "plan": "business-static",
    }
    assert [s["blocks"] for s in second["sources"]] == [["100.64.50.128/25"]]
    assert third["before"] is None
    assert third["after"] == {"verdict": "accept", "reason": "provider_mta", "plan": None}
    assert third["destinations"] == [
        {
            "address": "203.0.113.26",
            "old_provider_mta": None,
            "new_provider_mta": value_loc("new.yaml", "203.0.113.26"),
        }
    ]
    assert third["addresses"] == 2**32  # every source, summed up per outcome
    assert third["sources"] is None
    by = {(o["verdict"], o["reason"], o["plan"]): o for o in third["by_outcome"]}
    assert sum(o["addresses"] for o in by.values()) == 2**32
    assert by[("drop", "blocked", "residential")] == {
        "verdict": "drop",
        "reason": "blocked",
        "plan": "residential",
        "addresses": 65527,
        "ranges": 3,
        "rules": [loc("old.yaml", "- 100.64.0.0/16")],
        "more_rules": 0,
    }
    assert first["by_outcome"] is None
    assert [e["ticket"] for e in doc["expiring_exemptions"]] == ["ABUSE-2001"]


def test_no_change_exits_0(review: Path) -> None:
    code, out, err = run("diff", "old.yaml", "old.yaml", "--now", NOW)
    assert (code, err) == (0, "")
    assert out == (
        "old.yaml -> old.yaml: no decision changes (exemptions as of 2026-01-01 00:00:00 UTC)\n"
    )
    code, out, _ = run("diff", "old.yaml", "old.yaml", "--now", NOW, "--json")
    assert code == 0
    assert json.loads(out)["changes"] == []


def test_an_expiry_edit_is_a_change_at_now(review: Path) -> None:
    # The example's 100.64.7.7 exemption runs through 2027-01-31; NEW ends it in 2025.
    text = Path("old.yaml").read_text().replace("expires: 2027-01-31", "expires: 2025-12-31")
    Path("new.yaml").write_text(text)
    code, out, _ = run("diff", "old.yaml", "new.yaml", "--now", NOW)
    assert code == 1
    assert "1 change " in out and "sources 100.64.7.7/32  1 address" in out
    assert "before  ACCEPT, exemption (plan residential)" in out
    # ... but before 2026 both files exempt it: nothing changes
    assert run("diff", "old.yaml", "new.yaml", "--now", "2025-12-01T00:00:00Z")[0] == 0


def test_horizon_lists_exemptions_expiring_in_new(review: Path) -> None:
    code, out, _ = run("diff", "old.yaml", "old.yaml", "--now", "2027-01-30T00:00:00Z")
    assert code == 0
    assert "exemptions of old.yaml expiring within 7 days:\n  100.64.7.7/32  ABUSE-1234" in out
    _, out, _ = run("diff", "old.yaml", "old.yaml", "--now", NOW, "--horizon", "400")
    assert "100.64.7.7/32  ABUSE-1234  through 2027-01-31 UTC" in out
    _, out, _ = run("diff", "old.yaml", "old.yaml", "--now", NOW)
    assert "expiring" not in out


def test_bad_input_is_one_line_never_a_traceback(review: Path) -> None:
    Path("broken.yaml").write_text(Path("old.yaml").read_text().replace("[25]", "[25, 587]"))
    code, out, err = run("diff", "old.yaml", "broken.yaml")
    assert (code, out) == (1, "")
    assert err.startswith(value_loc("broken.yaml", "587")) and err.count("\n") == 1
    code, _, err = run("diff", "old.yaml", "missing.yaml")
    assert code == 1 and "missing.yaml" in err and "Traceback" not in err
    code, _, err = run("diff", "old.yaml", "old.yaml", "--horizon", "-1")
    assert code == 2 and err == "op25b diff: --horizon must be 0 or more days: -1\n"
    code, _, err = run("diff", "old.yaml", "old.yaml", "--now", "yesterday")
    assert code == 2 and "not an ISO 8601 time" in err
    code, _, err = run("diff", "old.yaml")
    assert code == 2 and "usage" in err
