"""The command line as scripts and monitoring use it: ``check --json`` (shape, exit
codes, errors), the /etc/op25b/policy.yaml default of ``check`` and ``run``,
``lab status --json`` usage, and help with a description and examples everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import run  # tests/unit, as builders.py

from op25b import clihelp
from op25b.cli import build_parser
from op25b.errors import EXIT_INVALID, EXIT_OK, EXIT_USAGE
from op25b.manual.parserwalk import commands

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "policies" / "example.yaml"
STARTER = REPO / "policies" / "starter.yaml"
NOW = "2026-01-01T00:00:00Z"


def check_json(*argv: str) -> tuple[int, dict[str, object], str]:
    code, out, err = run("check", "--json", *argv)
    return code, json.loads(out), err


# ---------------------------------------------------------------------- check --json


def test_check_json_of_the_example() -> None:
    code, doc, err = check_json(str(EXAMPLE), "--now", NOW)
    assert (code, err) == (EXIT_OK, "")
    assert doc["ok"] is True and doc["policy"] == str(EXAMPLE) and "error" not in doc
    summary = doc["summary"]
    assert isinstance(summary, dict)
    assert summary["guarded_ports"] == [25] and summary["action"] == "drop"
    plans = {p["name"]: p for p in summary["plans"]}
    assert list(plans) == ["residential", "mobile", "business-static"]
    assert plans["residential"] == {
        "name": "residential",
        "exempt": False,
        "prefixes_v4": 1,
        "prefixes_v6": 1,
        "addresses_v4": 65536,
        "files": [],
    }
    assert plans["business-static"]["exempt"] is True
    assert plans["mobile"]["files"] == [str(REPO / "policies" / "pools" / "mobile.txt")]
    assert summary["prefixes"] == sum(p["prefixes_v4"] + p["prefixes_v6"] for p in plans.values())
    assert summary["provider_mta_addresses"] == 2
    assert summary["exemptions"] == {"active": 1, "expired": 1}
    # the expired exemption, with the place it is written
    (warning,) = doc["warnings"]  # type: ignore[misc]
    assert warning["path"] == "exemptions[1].expires"
    assert warning["location"].startswith(f"{EXAMPLE}:")
    assert "expired" in warning["message"]


def test_check_json_now_decides_what_is_expired() -> None:
    _, doc, _ = check_json(str(EXAMPLE), "--now", "2028-01-01T00:00:00Z")
    assert doc["summary"]["exemptions"] == {"active": 0, "expired": 2}  # type: ignore[index]
    assert len(doc["warnings"]) == 2  # type: ignore[arg-type]


def test_check_json_of_an_invalid_policy(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(STARTER.read_text().replace("guarded_ports: [25]", "guarded_ports: [25, 587]"))
    code, doc, err = check_json(str(bad))
    assert code == EXIT_INVALID and err == ""
    assert doc == {
        "ok": False,
        "policy": str(bad),
        "summary": None,
        "warnings": [],
        "error": {
            "location": doc["error"]["location"],  # type: ignore[index]
            "path": "guarded_ports[1]",
            "message": doc["error"]["message"],  # type: ignore[index]
        },
    }
    line = next(
        n for n, t in enumerate(bad.read_text().splitlines(), 1) if t.startswith("guarded_ports")
    )
    assert doc["error"]["location"].startswith(f"{bad}:{line}:")  # type: ignore[index]
    assert "587" in doc["error"]["message"]  # type: ignore[index]


def test_check_json_of_an_unreadable_file(tmp_path: Path) -> None:
    code, doc, _ = check_json(str(tmp_path / "missing.yaml"))
    assert code == EXIT_INVALID
    assert doc["ok"] is False and doc["summary"] is None
    assert doc["error"]["location"] is None  # type: ignore[index]
    assert "cannot read policy" in doc["error"]["message"]  # type: ignore[index]


# ------------------------------------------------------------ the default policy path


def test_check_and_run_default_to_etc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert clihelp.DEFAULT_POLICY == "/etc/op25b/policy.yaml"
    assert build_parser().parse_args(["run"]).policy == clihelp.DEFAULT_POLICY
    assert build_parser().parse_args(["check"]).policy == clihelp.DEFAULT_POLICY
    # `check` with no argument reads the default file (here pointed at a copy)
    policy = tmp_path / "policy.yaml"
    policy.write_text(STARTER.read_text())
    monkeypatch.setattr(clihelp, "DEFAULT_POLICY", str(policy))
    code, doc, _ = check_json()
    assert code == EXIT_OK and doc["policy"] == str(policy)


def test_check_without_a_policy_names_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clihelp, "DEFAULT_POLICY", "/nonexistent/op25b/policy.yaml")
    code, out, err = run("check")
    assert code == EXIT_INVALID and out == ""
    assert err.strip() == (
        "/nonexistent/op25b/policy.yaml: cannot read policy: No such file or directory"
    )


def test_starter_policy_is_monitor_only() -> None:
    code, doc, _ = check_json(str(STARTER))
    assert code == EXIT_OK and doc["warnings"] == []
    assert doc["summary"]["action"] == "monitor"  # type: ignore[index]


# ----------------------------------------------------------------- lab status --json


def test_lab_json_goes_with_status_only() -> None:
    code, out, err = run("lab", "up", "--json")
    assert code == EXIT_USAGE and out == ""
    assert err.strip() == "op25b lab: --json goes with status only"


# ------------------------------------------------------------------------------ help


def test_every_subcommand_has_help_with_examples() -> None:
    cmds = commands(build_parser())
    assert {c.name for c in cmds} == set(clihelp.COMMANDS), "add the command to op25b/clihelp.py"
    for cmd in cmds:
        assert cmd.summary and "\n" not in cmd.summary, cmd.name
        code, out, _ = run(cmd.name, "--help")
        assert code == EXIT_OK
        assert (
            clihelp.COMMANDS[cmd.name].description.split()[:4]
            == out.split("\n\n", 1)[1].split()[:4]
        ), cmd.name
        examples = out[out.index("\nexamples:\n") :]
        for line, _what in clihelp.COMMANDS[cmd.name].examples:
            assert f"\n  {line}\n" in examples
            assert line.split()[:2] == ["op25b", cmd.name] or " op25b " in line


def test_program_help_lists_commands_and_exit_codes() -> None:
    code, out, _ = run("--help")
    assert code == EXIT_OK
    for name, h in clihelp.COMMANDS.items():
        assert f"    {name:<10}{h.summary}" in out
    assert "exit codes:\n  0   success" in out and "\n  3   the environment refused" in out
