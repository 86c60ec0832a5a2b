"""Enforcement that cannot be silently lost, on a real queue in the lab (root).

The firewall is shared: a flushed ruleset is repaired within the check interval; a
second daemon is refused before it touches anything; a reload whose kernel update
fails, a follower killed, a bug in the loop — in each case the kernel keeps enforcing
the last good policy. And `op25b rules status` tells a monitor what it sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from test_daemon import outcomes, probes, ruleset, write_policy

from op25b.lab import topology as L
from op25b.lab.netns import child_env, run_in
from op25b.lab.processes import DaemonProcess
from op25b.lab.topology import Lab

BOT_MX4 = (L.BOT_V4, L.NET_MX_V4, 25)
BOT_MX6 = (L.BOT_V6, L.NET_MX_V6, 25)


def op25b(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return run_in(
        lab.rtr,
        [sys.executable, "-m", "op25b", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )


def test_flushed_ruleset_is_repaired_within_two_seconds(start, lab: Lab, tmp_path: Path) -> None:
    r = start(write_policy(tmp_path / "p.yaml", "reject"))
    assert outcomes(probes(lab.bot, [BOT_MX4, BOT_MX6], timeout=5)) == ["refused", "refused"]
    t0 = time.monotonic()
    run_in(lab.rtr, ["nft", "flush", "ruleset"], check=True)
    # Probe until the bot is refused again; each attempt before that got through.
    leaked = 0
    while True:
        (got,) = outcomes(probes(lab.bot, [BOT_MX4], timeout=1))
        if got == "refused":
            break
        assert got == "connected", got
        leaked += 1
        assert time.monotonic() - t0 < 10, "not repaired within 10 s"
    elapsed = time.monotonic() - t0
    print(f"\nenforcement back {elapsed:.2f} s after nft flush ruleset ({leaked} probes leaked)")
    assert elapsed < 2.0
    assert outcomes(probes(lab.bot, [BOT_MX6], timeout=5)) == ["refused"]
    line = r.syslog.wait_for(lambda m: "kernel rules damaged, repaired" in m, what="repair")
    assert "chain OP25B is missing" in line
    status = op25b(lab, "rules", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["checked_against"] == "daemon record"
    assert r.stop() == 0
    c = r.final_counters()
    assert int(c["rules_repaired"]) >= 1 and c["rules_ok"] == "1"


def test_second_daemon_is_refused_and_touches_nothing(start, lab: Lab, tmp_path: Path) -> None:
    r = start(write_policy(tmp_path / "p.yaml", "reject"))
    before = ruleset(lab)
    second = DaemonProcess(lab.rtr, write_policy(tmp_path / "p2.yaml", "drop", down="open"))
    assert second.proc.wait(timeout=30) == 3
    second.stop()
    text = "\n".join(second.lines.snapshot())
    assert "another op25b daemon is running in this network namespace" in text
    assert f"(pid {r.daemon.proc.pid})" in text
    assert ruleset(lab) == before
    assert outcomes(probes(lab.bot, [BOT_MX4, BOT_MX6], timeout=5)) == ["refused", "refused"]
    assert r.stop() == 0


def failing_tool(tmp_path: Path, tool: str) -> tuple[dict[str, str], Path]:
    """A PATH where ``tool`` fails while a marker file exists (a transient failure)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    marker = tmp_path / "fail-now"
    real = subprocess.run(["which", tool], capture_output=True, text=True, check=True).stdout
    script = bindir / tool
    script.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{marker}" ]; then echo "injected failure" >&2; exit 4; fi\n'
        f'exec {real.strip()} "$@"\n'
    )
    script.chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}, marker


def test_failed_reload_install_keeps_the_last_good_rules(start, lab: Lab, tmp_path: Path) -> None:
    env, marker = failing_tool(tmp_path, "ip6tables-restore")
    policy = write_policy(tmp_path / "p.yaml", "reject")
    r = start(policy, env=env)
    marker.touch()
    # Changing the action changes the rules: the install meets the failing tool.
    write_policy(policy, "drop", down="open")
    assert "reload refused" in r.daemon.reload()
    # The old policy (reject) still decides; the watchdog puts the old rules back in
    # full, which fails while the tool fails, and succeeds once it works again.
    line = r.syslog.wait_for(lambda m: "repair failed" in m, what="failed repair")
    assert "iptables filter: chain OP25B changed" in line  # v4 got the new rules
    marker.unlink()
    # The repair's IPv4 half succeeded and IPv6 was never changed: the state is the
    # last good one again, which the monitoring check confirms.
    deadline = time.monotonic() + 10
    while op25b(lab, "rules", "status").returncode != 0:
        assert time.monotonic() < deadline, "kernel state not back to the last good one"
    assert outcomes(probes(lab.bot, [BOT_MX4, BOT_MX6], timeout=5)) == ["refused", "refused"]
    # The fallback in the kernel is the old one too: kill the daemon, the bot is still blocked.
    r.daemon.kill9()
    assert outcomes(probes(lab.bot, [BOT_MX4, BOT_MX6], timeout=5)) == ["refused", "refused"]
    assert op25b(lab, "rules", "status").returncode == 0


def test_killed_follower_is_restarted_and_enforcement_holds(
    start, lab: Lab, tmp_path: Path
) -> None:
    r = start(write_policy(tmp_path / "p.yaml", "reject", workers=2))
    leader = r.daemon.proc.pid
    children = run_in(lab.rtr, ["pgrep", "-P", str(leader)], capture_output=True, text=True)
    (follower,) = [int(p) for p in children.stdout.split()]
    os.kill(follower, 9)
    r.syslog.wait_for(lambda m: "died (killed by SIGKILL); restarting it" in m, what="restart")
    items = [(L.BOT_V4, mx, 25) for mx in L.NET_MX_EXTRA_V4[:12]]
    assert set(outcomes(probes(lab.bot, items, timeout=5))) == {"refused"}
    deadline = time.monotonic() + 10
    while True:
        out = run_in(lab.rtr, ["pgrep", "-P", str(leader)], capture_output=True, text=True)
        new = [int(p) for p in out.stdout.split()]
        if new and new != [follower]:
            break
        assert time.monotonic() < deadline, "follower not restarted"
        time.sleep(0.05)
    assert r.stop() == 0


CRASH_HOOK = """
import os, time
if os.environ.get("OP25B_TEST_CRASH_AFTER"):
    from op25b.daemon import worker as _w
    _limit = time.monotonic() + float(os.environ["OP25B_TEST_CRASH_AFTER"])
    _orig = _w.Worker._finish_reloads
    def _finish_reloads(self):
        if time.monotonic() > _limit:
            raise RuntimeError("injected fault in the loop")
        _orig(self)
    _w.Worker._finish_reloads = _finish_reloads
"""


def test_a_bug_in_the_loop_leaves_the_rules_enforcing(start, lab: Lab, tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CRASH_HOOK)
    env = {
        "OP25B_TEST_CRASH_AFTER": "1.0",
        "PYTHONPATH": f"{hook}:{child_env()['PYTHONPATH']}",
    }
    r = start(write_policy(tmp_path / "p.yaml", "reject"), env=env)
    assert r.daemon.proc.wait(timeout=30) == 1
    text = "\n".join(r.daemon.lines.snapshot())
    assert "RuntimeError: injected fault in the loop" in text
    # No daemon now: the static fallback (still installed) rejects the bot, v4 and v6.
    assert outcomes(probes(lab.bot, [BOT_MX4, BOT_MX6], timeout=5)) == ["refused", "refused"]
    assert outcomes(probes(lab.bot, [(L.BOT_V4, L.ISP_MTA_V4, 25)], timeout=5)) == ["connected"]


def test_rules_status_is_a_monitoring_check(start, lab: Lab, tmp_path: Path) -> None:
    assert op25b(lab, "rules", "status").returncode == 2  # nothing installed: CRITICAL
    r = start(write_policy(tmp_path / "p.yaml", "reject"))
    ok = op25b(lab, "rules", "status")
    assert ok.returncode == 0 and ok.stdout.startswith("OK:"), ok.stdout + ok.stderr
    r.daemon.kill9()  # no watchdog any more; the record of the install stays
    run_in(lab.rtr, ["iptables", "-t", "mangle", "-D", "FORWARD", "1"], check=True)
    bad = op25b(lab, "rules", "status", "--json")
    assert bad.returncode == 2
    doc = json.loads(bad.stdout)
    assert doc["ok"] is False
    assert "iptables mangle: the FORWARD jumps to OP25B changed" in doc["problems"]
    shown = op25b(lab, "rules", "show", str(tmp_path / "p.yaml"))
    assert shown.returncode == 0
    assert "-A OP25B -p tcp -m mark --mark 0xb00000/0xf00000 -j REJECT" in shown.stdout
    assert "meta mark set meta mark & 0xff0fffff" in shown.stdout  # the nft table
    assert shown.stdout.count("COMMIT") == 4  # filter and mangle, v4 and v6


def test_a_set_with_the_same_count_but_other_members_is_repaired(
    start, lab: Lab, tmp_path: Path
) -> None:
    # Found by the adversarial review: one prefix out, another in, the count unchanged:
    # the bot was "not a subscriber" for good and `rules status` said OK.
    tamper = [
        "sh",
        "-c",
        "ipset del op25b-subs4 100.64.0.0/16 && ipset add op25b-subs4 192.0.2.0/24",
    ]
    r = start(write_policy(tmp_path / "p.yaml", "reject"))
    assert outcomes(probes(lab.bot, [BOT_MX4], timeout=5)) == ["refused"]
    t0 = time.monotonic()
    run_in(lab.rtr, tamper, check=True)
    while outcomes(probes(lab.bot, [BOT_MX4], timeout=1)) != ["refused"]:
        assert time.monotonic() - t0 < 10, "not repaired within 10 s"
    elapsed = time.monotonic() - t0
    print(f"\nenforcement back {elapsed:.2f} s after a same-count change of op25b-subs4")
    assert elapsed < 3.0
    line = r.syslog.wait_for(lambda m: "kernel rules damaged, repaired" in m, what="repair")
    assert "ipset op25b-subs4 holds other entries than were loaded" in line
    assert op25b(lab, "rules", "status").returncode == 0
    r.daemon.kill9()  # no watchdog now: the monitoring check must see it on its own
    run_in(lab.rtr, tamper, check=True)
    bad = op25b(lab, "rules", "status", "--json")
    assert bad.returncode == 2, bad.stdout + bad.stderr
    problems = json.loads(bad.stdout)["problems"]
    assert any("op25b-subs4 holds other entries" in p for p in problems), problems
