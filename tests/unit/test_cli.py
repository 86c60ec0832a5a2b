"""Tests for op25b.cli, in-process through ``main(argv, out, err)``: check, explain,
replay error paths, usage errors, and ``python -m op25b --version`` as a process."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import op25b
from op25b import native
from op25b.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "policies" / "example.yaml"
NOW = "2026-01-01T00:00:00Z"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def location_of(path: Path, needle: str) -> str:
    """``path:line:col`` of the one non-comment occurrence of ``needle`` (quote included)."""
    hits = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        col = line.find(needle)
        if col >= 0 and not line.lstrip().startswith("#"):
            if col > 0 and line[col - 1] in "\"'":
                col -= 1
            hits.append(f"{path}:{n}:{col + 1}")
    assert len(hits) == 1, hits
    return hits[0]


# --------------------------------------------------------------------------- check


def test_check_example_prints_a_summary() -> None:
    code, out, err = run("check", str(EXAMPLE), "--now", NOW)
    assert code == 0, err
    assert "Traceback" not in out + err
    assert str(EXAMPLE) in out
    for plan in ("residential", "mobile", "business-static"):
        assert re.search(rf"^\s+{plan}\s", out, re.M), plan
    assert "203.0.113.25" in out and "2001:db8:25::25" in out
    # the expired exemption is reported with where it is written
    assert location_of(EXAMPLE, "2024-06-30") in out
    assert "1 active, 1 expired" in out


def test_check_quiet_prints_only_warnings() -> None:
    code, out, err = run("check", "--quiet", str(EXAMPLE), "--now", NOW)
    assert code == 0
    assert out == ""
    assert err.strip().splitlines() == [err.strip()]  # one warning line
    assert err.startswith(location_of(EXAMPLE, "2024-06-30") + ": ")
    # before the 2024 expiry there is nothing to warn about
    code, out, err = run("check", "--quiet", str(EXAMPLE), "--now", "2024-06-30T23:00:00Z")
    assert (code, out, err) == (0, "", "")


BASE = "version: 1\nguarded_ports: [25]\naction: drop\n"
PLANS = "plans:\n  r:\n    exempt: false\n    prefixes: [100.64.0.0/16]\n"


def nth_location(path: Path, needle: str, nth: int) -> str:
    """``path:line:col`` of the nth (1-based) line containing ``needle``."""
    hits = [
        f"{path}:{n}:{line.find(needle) + 1}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if needle in line
    ]
    return hits[nth - 1]


@pytest.mark.parametrize(
    ("name", "text", "needle", "message"),
    [
        (
            "host-bits",
            BASE + PLANS.replace("100.64.0.0/16", "100.64.1.0/16"),
            ("100.64.1.0/16", 1),
            "host bits set in '100.64.1.0/16' (did you mean 100.64.0.0/16?)",
        ),
        ("submission", BASE.replace("[25]", "[25, 587]") + PLANS, ("587", 1), "port 587"),
        ("unknown-key", BASE + "bogus: 1\n" + PLANS, ("bogus", 1), "unknown key 'bogus'"),
        (
            "bad-mta",
            BASE + PLANS + "provider_mtas:\n  s:\n    addresses: [203.0.113.25, 203.0.113.256]\n",
            ("203.0.113.256", 1),
            "not an IP address: '203.0.113.256'",
        ),
        (
            "bad-action",
            BASE.replace("drop", "dorp") + PLANS,
            ("dorp", 1),
            "drop | reject | monitor",
        ),
        ("duplicate-plan", BASE + PLANS + "  r:\n    exempt: true\n", ("r:", 2), "duplicate"),
        ("version-2", BASE.replace("version: 1", "version: 2") + PLANS, ("2", 1), "version 2"),
    ],
)
def test_check_broken_policy_names_the_place(
    tmp_path: Path, name: str, text: str, needle: tuple[str, int], message: str
) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    code, out, err = run("check", str(path))
    assert code == 1
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    # file:line:col of the offending value, computed from the text we wrote
    expect = nth_location(path, *needle)
    assert lines[0].startswith(expect + ": "), (lines[0], expect)
    assert message in lines[0]


def test_check_yaml_syntax_error_has_a_position(tmp_path: Path) -> None:
    path = tmp_path / "syntax.yaml"
    path.write_text("version: 1\nguarded_ports: [25\naction: drop\n")
    code, _, err = run("check", str(path))
    assert code == 1
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: ", err), err
    assert "Traceback" not in err


def test_check_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    code, out, err = run("check", str(path))
    assert (code, out) == (1, "")
    assert str(path) in err and "No such file" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------------- explain

RES4, RES6 = ("100.64.0.66", "100.64.0.0/16"), ("2001:db8:100::66", "2001:db8:100::/40")
BIZ4, BIZ6 = ("198.51.100.10", "198.51.100.0/24"), ("2001:db8:b00::10", "2001:db8:b00::/40")
MX4, MX6 = "192.0.2.25", "2001:db8:ff::25"
MTA4, MTA6 = "203.0.113.25", "2001:db8:25::25"


def design_rows() -> list[tuple[str, str, int, dict[str, str | None]]]:
    """(src, dst, port, expected JSON) for every row of the README's picture, v4 and v6."""
    ex = EXAMPLE
    rows: list[tuple[str, str, int, dict[str, str | None]]] = []
    for (res, res_p), (biz, biz_p), mx, mta in [(RES4, BIZ4, MX4, MTA4), (RES6, BIZ6, MX6, MTA6)]:
        rows += [
            (res, mx, 25, dict(verdict="drop", reason="blocked", plan="residential",
                               rule=location_of(ex, res_p))),
            (res, mta, 25, dict(verdict="accept", reason="provider_mta", plan=None,
                                rule=location_of(ex, mta))),
            (res, mx, 587, dict(verdict="accept", reason="not_guarded", plan=None,
                                rule=location_of(ex, "[25]"))),
            (res, mx, 465, dict(verdict="accept", reason="not_guarded", plan=None,
                                rule=location_of(ex, "[25]"))),
            (biz, mx, 25, dict(verdict="accept", reason="exempt_plan", plan="business-static",
                               rule=location_of(ex, biz_p))),
            (mta, mx, 25, dict(verdict="accept", reason="not_subscriber", plan=None, rule=None)),
        ]  # fmt: skip
    rows += [
        ("100.64.200.3", MX4, 25, dict(verdict="accept", reason="exempt_plan",
                                       plan="business-static",
                                       rule=location_of(ex, "100.64.200.0/29"))),
        ("100.64.7.7", MX4, 25, dict(verdict="accept", reason="exemption", plan="residential",
                                     rule=location_of(ex, "prefix: 100.64.7.7/32"))),
        ("100.64.8.8", MX4, 25, dict(verdict="drop", reason="blocked", plan="residential",
                                     rule=location_of(ex, RES4[1]))),
    ]  # fmt: skip
    return rows


@pytest.mark.parametrize(("src", "dst", "port", "expected"), design_rows())
def test_explain_json_design_rows(
    src: str, dst: str, port: int, expected: dict[str, str | None]
) -> None:
    code, out, err = run(
        "explain", str(EXAMPLE), src, dst, "--port", str(port), "--json", "--now", NOW
    )
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert list(doc) == ["verdict", "reason", "plan", "rule"]
    assert doc == expected


def test_explain_text_names_verdict_reason_plan_and_rule() -> None:
    code, out, err = run("explain", str(EXAMPLE), RES4[0], MX4, "--now", NOW)
    assert (code, err) == (0, "")
    rule = location_of(EXAMPLE, RES4[1])
    assert out.strip() == f"{RES4[0]} -> {MX4}:25: DROP, blocked (plan residential)  [{rule}]"


def test_explain_now_moves_across_the_exemption_expiry() -> None:
    def reason(now: str) -> str:
        code, out, err = run("explain", str(EXAMPLE), "100.64.7.7", MX4, "--json", "--now", now)
        assert (code, err) == (0, "")
        return str(json.loads(out)["reason"])

    assert reason("2027-01-31T23:59:59Z") == "exemption"
    assert reason("2027-02-01T00:00:00Z") == "blocked"
    assert reason("2027-02-01T00:30:00+01:00") == "exemption"  # 23:30 UTC
    assert reason("2027-02-01T00:00:00") == "blocked"  # naive means UTC


def test_explain_bad_now_is_a_usage_error() -> None:
    code, out, err = run("explain", str(EXAMPLE), RES4[0], MX4, "--now", "yesterday")
    assert (code, out) == (2, "")
    assert "not an ISO 8601 time: 'yesterday'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["1.2.3", MX4], "not an IP address: '1.2.3'"),
        ([RES4[0], "203.0.113.256"], "not an IP address: '203.0.113.256'"),
        (["100.64.0.0/16", MX4], "not an IP address: '100.64.0.0/16'"),
        (["2001:db8:::1", MX6], "not an IP address: '2001:db8:::1'"),
        ([RES4[0], MX6], "source and destination must both be IPv4 or both IPv6"),
        ([RES6[0], MX4], "source and destination must both be IPv4 or both IPv6"),
        ([RES4[0], MX4, "--port", "0"], "port out of range: 0"),
        ([RES4[0], MX4, "--port", "65536"], "port out of range: 65536"),
        ([RES4[0], MX4, "--port", "-25"], "port out of range: -25"),
    ],
)
def test_explain_bad_input_exits_1_with_a_clear_message(argv: list[str], message: str) -> None:
    code, out, err = run("explain", str(EXAMPLE), *argv)
    assert (code, out) == (1, "")
    assert err == f"op25b explain: {message}\n"
    assert "Traceback" not in err


def test_explain_non_numeric_port_is_a_usage_error() -> None:
    code, out, err = run("explain", str(EXAMPLE), RES4[0], MX4, "--port", "smtp")
    assert (code, out) == (2, "")
    assert "--port" in err and "'smtp'" in err


def test_explain_broken_policy_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE + "plans: {}\n")
    code, out, err = run("explain", str(path), RES4[0], MX4)
    assert (code, out) == (1, "")
    assert err.startswith(f"{path}:") and "Traceback" not in err


# ---------------------------------------------------------------- usage and replay


def test_unknown_command_exits_2() -> None:
    code, out, err = run("frobnicate")
    assert (code, out) == (2, "")
    assert "invalid choice: 'frobnicate'" in err


def test_version_in_process_goes_to_out() -> None:
    code, out, err = run("--version")
    assert (code, err) == (0, "")
    assert out.strip() == f"op25b {op25b.__version__} ({native.status()})"


def test_no_command_exits_2() -> None:
    code, _, err = run()
    assert code == 2
    assert "usage:" in err


def test_replay_missing_capture_exits_1_cleanly(tmp_path: Path) -> None:
    cap = tmp_path / "missing.pcap"
    code, out, err = run("replay", str(EXAMPLE), str(cap))
    assert (code, out) == (1, "")
    assert err.startswith(f"op25b replay: {cap}: cannot read capture")
    assert "Traceback" not in err


def test_replay_broken_policy_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE + PLANS.replace("100.64.0.0/16", "100.64.0.0/33"))
    code, out, err = run("replay", str(path), str(tmp_path / "x.pcap"))
    assert (code, out) == (1, "")
    assert err.startswith(nth_location(path, "100.64.0.0/33", 1) + ": ")
    assert "Traceback" not in err


def test_version_as_a_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "op25b", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"op25b {op25b.__version__} ({native.status()})"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", op25b.__version__)
