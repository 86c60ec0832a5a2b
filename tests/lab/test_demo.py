"""`op25b demo` end to end: real SMTP servers, swaks, the daemon, syslog and the report.

The demo is run in-process (as `op25b demo` calls it) with its files kept in a pytest
temp dir, so the test can check the demo's claims against the MX's Maildir itself.
One run goes through the real command line, with the drop action.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from op25b.lab import demo
from op25b.lab import topology as L
from op25b.lab.labstate import lab_down
from op25b.lab.mailservers import find_message, received_chain
from op25b.lab.netns import netns_exists
from op25b.lab.topology import Lab

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None, reason="the demo needs swaks")

SCENARIOS = 11  # 9 traffic scenarios + the counters check + the report check
ROW = re.compile(r"^(\d+)\s{2,}(.+?)\s{2,}.*\s(PASS|FAIL)$")


def table(text: str) -> dict[str, str]:
    """Scenario title -> PASS/FAIL, from the demo's result table."""
    rows = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(2)] = m.group(3)
    return rows


def lab_name(text: str) -> str:
    m = re.search(r"^  lab (\S+): namespaces", text, re.M)
    assert m, text
    return m.group(1)


def run_demo(tmp_path: Path, keep: bool = False, **options: int) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    opts = demo.DemoOptions(workdir=tmp_path, **options)
    code = demo.run(out, err, keep=keep, action="reject", options=opts)
    return code, out.getvalue() + err.getvalue()


def test_demo_passes_with_the_mail_really_in_the_mailbox(tmp_path: Path) -> None:
    code, text = run_demo(tmp_path)
    assert code == 0, text
    rows = table(text)
    assert len(rows) == SCENARIOS, text
    assert set(rows.values()) == {"PASS"}, text
    assert f"{SCENARIOS} of {SCENARIOS} checks passed" in text

    # Every Message-ID the demo shows is in the MX's Maildir on disk, with the hops
    # the story says: relayed mail via the provider MTA, business mail direct.
    shown = re.findall(r"Message-ID: (<[^>]+>)", text)
    assert len(shown) == 5, text
    for mid in shown:
        msg = find_message(tmp_path / "mx" / "Maildir", mid)
        assert msg is not None, mid
        hops = received_chain(msg)
        assert "by mx.example.net" in hops[0]
        if mid.startswith(("<res-", "<res25-")):
            assert len(hops) == 2 and "by smtp.isp.example" in hops[1]
            assert L.ISP_MTA_V4 in hops[0] or L.ISP_MTA_V6 in hops[0]
            assert L.RES_V4 in hops[1] or L.RES_V6 in hops[1]
        else:
            assert len(hops) == 1 and (L.BIZ_V4 in hops[0] or L.BIZ_V6 in hops[0])

    # The bot tops the abuse report (first row under the header).
    report = text.split("op25b report ", 1)[1].splitlines()
    header = next(i for i, line in enumerate(report) if "SCORE" in line and "SOURCE" in line)
    assert report[header + 1].split()[1] == L.BOT_V4

    # Counters came from the daemon's real final syslog line.
    assert re.search(r"^\s+reject\s+62$", text, re.M), text
    assert not any(netns_exists(ns) for ns in Lab.from_name(lab_name(text)).namespaces)


def test_a_misrouted_smarthost_fails_the_demo(tmp_path: Path) -> None:
    # The provider MTA relays to a port nothing listens on: it still accepts (and
    # queues) the subscriber's mail, but the mail never reaches the MX.
    code, text = run_demo(tmp_path, relay_port=2525)
    assert code == 1, text
    rows = table(text)
    via_mta = {title for title in rows if "provider MTA" in title and "no AUTH" not in title}
    assert len(via_mta) == 3
    assert {rows[t] for t in via_mta} == {"FAIL"}, text
    assert {v for t, v in rows.items() if t not in via_mta} == {"PASS"}, text
    assert "relay deferred" in text and "FAILED:" in text
    assert not any(netns_exists(ns) for ns in Lab.from_name(lab_name(text)).namespaces)


def test_keep_leaves_the_lab_up_and_says_how_to_remove_it(tmp_path: Path) -> None:
    code, text = run_demo(tmp_path, keep=True)
    name = lab_name(text)
    try:
        assert code == 0, text
        assert f"op25b lab down {name}" in text
        assert all(netns_exists(ns) for ns in Lab.from_name(name).namespaces)
    finally:
        lab_down(name)


def test_the_command_line_demo_with_drop() -> None:
    exe = Path(sys.executable).with_name("op25b")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "op25b"]
    done = subprocess.run(
        [*argv, "demo", "--action", "drop"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{SCENARIOS} of {SCENARIOS} checks passed" in done.stdout
    assert "blocked: no answer (SYN dropped)" in done.stdout
    assert not any(netns_exists(ns) for ns in Lab.from_name(lab_name(done.stdout)).namespaces)
