"""The generated manual and completion: op25b(8) carries every command, option and
exit code and formats without groff warnings; op25b-policy(5)'s key table is exactly
the loader's keys with the loader's defaults; the exit-code table is the same in
errors.py, the README and the man page; the bash completion works in a real bash."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from op25b import errors
from op25b.cli import build_parser
from op25b.errors import EXIT_CODES
from op25b.manual import __main__ as manual_main
from op25b.manual import completion, op25b8, policykeys
from op25b.manual.parserwalk import commands
from op25b.policy.loader import PolicyError, load_policy_text

REPO = Path(__file__).resolve().parents[2]


def roff_to_text(page: str) -> str:
    """What man shows, via groff (-ww: every warning); fails the test on any warning."""
    proc = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-rLL=200n"],
        input=page,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    # drop overstrike bold/underline so the text can be searched
    return re.sub(r".\x08", "", proc.stdout)


def normal(text: str) -> str:
    return " ".join(text.replace("``", "").replace("\u2010", "-").split())


# ---------------------------------------------------------------------------- op25b(8)


@pytest.fixture(scope="module")
def op25b_page() -> str:
    return roff_to_text(op25b8.render())


def test_man_page_has_every_command_and_option(op25b_page: str) -> None:
    text = normal(op25b_page)
    cmds = commands(build_parser())
    assert len(cmds) >= 8
    for cmd in cmds:
        assert normal(cmd.synopsis()) in text, cmd.name
        assert normal(cmd.description)[:60] in text, cmd.name
        for arg in cmd.arguments:
            for flag in arg.flags:
                assert re.search(rf"(^|[\s,\[]){re.escape(flag)}\b", op25b_page), (cmd.name, flag)
            if arg.help:
                assert normal(arg.help) in text, (cmd.name, arg.help)


def test_man_page_sections(op25b_page: str) -> None:
    heads = re.findall(r"^([A-Z][A-Z ]+)$", op25b_page, re.M)
    assert heads == [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "COMMANDS",
        "JSON OUTPUT",
        "EXIT STATUS",
        "SIGNALS",
        "FILES",
        "SEE ALSO",
    ]
    for signal in ("SIGHUP", "SIGUSR1", "SIGTERM"):
        assert signal in op25b_page
    assert "/etc/op25b/policy.yaml" in op25b_page


def test_exit_codes_are_one_table_everywhere(op25b_page: str) -> None:
    status = op25b_page[op25b_page.index("EXIT STATUS") : op25b_page.index("SIGNALS")]
    doc = normal(errors.__doc__ or "")
    readme = (REPO / "README.md").read_text()
    shown = re.findall(r"^\s{7}(\d+)\s", status, re.M)
    assert [int(c) for c in shown] == [code for code, _ in EXIT_CODES]
    for code, meaning in EXIT_CODES:
        assert normal(meaning) in normal(status), code
        assert f"{code} {normal(meaning)}" in doc, code  # the module docstring's table
        row = f"| {code} | {meaning.replace('``', '`')} |"
        assert row in readme, f"README exit-code table lacks: {row}"


def test_generator_writes_the_packaged_paths(tmp_path: Path) -> None:
    assert manual_main.main([str(tmp_path)]) == 0
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        "usr/share/bash-completion/completions/op25b",
        "usr/share/man/man5/op25b-policy.5",
        "usr/share/man/man8/op25b.8",
    ]
    assert (tmp_path / "usr/share/man/man8/op25b.8").read_text() == op25b8.render()
    assert manual_main.main([]) == 2


# --------------------------------------------------------------------- op25b-policy(5)


MINIMAL = """\
version: 1
guarded_ports: [25]
action: drop
plans:
  home:
    exempt: false
    prefixes: [100.64.0.0/16]
provider_mtas:
  smarthost:
    addresses: [203.0.113.25]
exemptions:
  - {prefix: 100.64.7.7/32, ticket: T-1, expires: 2027-01-31}
daemon:
  syslog: {address: /dev/log}
"""

# Where an unknown key goes to make the loader list the keys allowed at each level.
_PROBES = {
    "": ("version: 1\n", "zz_unknown: 1\nversion: 1\n"),
    "plans.NAME": ("    exempt: false\n", "    exempt: false\n    zz_unknown: 1\n"),
    "provider_mtas.NAME": (
        "    addresses: [203.0.113.25]\n",
        "    addresses: [203.0.113.25]\n    zz_unknown: 1\n",
    ),
    "exemptions[]": ("expires: 2027-01-31}", "expires: 2027-01-31, zz_unknown: 1}"),
    "daemon": ("daemon:\n", "daemon:\n  zz_unknown: 1\n"),
    "daemon.syslog": ("{address: /dev/log}", "{address: /dev/log, zz_unknown: 1}"),
    "daemon.metrics": ("daemon:\n", "daemon:\n  metrics: {zz_unknown: 1}\n"),
}


def documented_children(parent: str) -> set[str]:
    """Keys the table lists directly under ``parent`` ("" = the top level)."""
    prefix = f"{parent}." if parent else ""
    rests = (k.path[len(prefix) :] for k in policykeys.KEYS if k.path.startswith(prefix))
    return {rest for rest in rests if rest and "." not in rest}


def allowed_by_loader(parent: str) -> set[str]:
    old, new = _PROBES[parent]
    assert MINIMAL.count(old) == 1, parent
    with pytest.raises(PolicyError) as info:
        load_policy_text(MINIMAL.replace(old, new))
    m = re.search(r"unknown key 'zz_unknown' \(allowed: ([^)]*)\)", info.value.message)
    assert m is not None, str(info.value)
    return set(m.group(1).split(", "))


def test_minimal_probe_policy_loads() -> None:
    load_policy_text(MINIMAL)


@pytest.mark.parametrize("parent", sorted(_PROBES))
def test_policy_page_documents_exactly_the_loaders_keys(parent: str) -> None:
    assert documented_children(parent) == allowed_by_loader(parent)


def test_every_mapping_level_is_probed() -> None:
    parents = {k.path.rsplit(".", 1)[0] for k in policykeys.KEYS if "." in k.path}
    assert parents | {""} == set(_PROBES)


DAEMON_DEFAULTS = [k for k in policykeys.KEYS if k.path.startswith("daemon.") and k.default]


@pytest.mark.parametrize("key", DAEMON_DEFAULTS, ids=lambda k: k.path)
def test_documented_daemon_defaults_are_the_loaders(key: policykeys.PolicyKey) -> None:
    without = load_policy_text(MINIMAL).policy.daemon
    name = key.path.split(".")[-1]
    if key.path.startswith("daemon.syslog."):
        text = MINIMAL.replace("{address: /dev/log}", f"{{{name}: {key.default}}}")
    elif key.path.startswith("daemon.metrics."):
        text = MINIMAL.replace("daemon:\n", f"daemon:\n  metrics: {{{name}: {key.default}}}\n")
    else:
        text = MINIMAL.replace("daemon:\n", f"daemon:\n  {name}: {key.default}\n")
    assert load_policy_text(text).policy.daemon == without


def test_policy_page_formats_and_carries_every_key() -> None:
    page = roff_to_text(policykeys.render())
    for key in policykeys.KEYS:
        assert re.search(rf"^\s+{re.escape(key.path)} \(", page, re.M), key.path
    assert "DECISION ORDER" in page and "blocked" in page


def test_policy_page_example_is_valid() -> None:
    load_policy_text(policykeys.EXAMPLE)


# ------------------------------------------------------------------------ completion


BASH = shutil.which("bash")


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "op25b"
    path.write_text(completion.render())
    return path


def complete(script: Path, line: str, cwd: Path | None = None) -> list[str]:
    """What bash offers for the last word of ``line`` (a trailing space: a new word)."""
    assert BASH is not None
    words = line.split(" ")
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_op25b\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(
        [BASH, "--norc", "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=cwd,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return sorted(w for w in proc.stdout.splitlines() if w)


def test_completion_is_valid_bash(script: Path) -> None:
    assert BASH is not None
    proc = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_completion_of_commands_and_options(script: Path) -> None:
    names = [c.name for c in commands(build_parser())]
    assert complete(script, "op25b ") == sorted([*names, "-h", "--help", "--version"])
    assert complete(script, "op25b re") == ["replay", "report"]
    assert complete(script, "op25b check --") == ["--help", "--json", "--now", "--quiet"]
    assert complete(script, "op25b lab st") == ["status"]
    assert complete(script, "op25b demo --action ") == ["drop", "reject"]
    assert complete(script, "op25b rules ") == ["remove", "show", "status"]
    assert complete(script, "op25b rules show --now ") == []


def test_completion_offers_files_where_paths_go(script: Path, tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("")
    (tmp_path / "capture.pcap").write_text("")
    assert complete(script, "op25b check po", tmp_path) == ["policy.yaml"]
    assert complete(script, "op25b run --policy p", tmp_path) == ["policy.yaml"]
    # replay POLICY CAPTURE: the second positional is a file too, after an option's value
    assert complete(script, "op25b replay --top 5 policy.yaml c", tmp_path) == ["capture.pcap"]
    # explain's addresses and --port take no file names
    assert complete(script, "op25b explain policy.yaml ", tmp_path) == []
    assert complete(script, "op25b explain --port ", tmp_path) == []
