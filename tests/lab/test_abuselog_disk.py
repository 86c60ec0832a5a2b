"""The abuse-log writer on a really full disk: a 256 KiB tmpfs in a private mount namespace.

The tmpfs is mounted inside ``unshare --mount`` (root), so nobody else sees it and it
disappears with the namespace; the kernel itself answers ENOSPC. The writer must
count it, say it once, keep the records, and write them all once space is back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

INSIDE = textwrap.dedent(
    """
    import errno, json, os, sys
    from op25b.daemon.abuselog import AbuseLogWriter
    from op25b.dataplane.aggregator import AbuseAggregator
    from op25b.policy.decide import Verdict

    d = sys.argv[1]
    os.makedirs(d + "/log")
    w = AbuseLogWriter(d + "/log/blocked.jsonl")
    w.open()

    def batch(first, n):
        a = AbuseAggregator(window=300, router="edge1")
        for i in range(first, first + n):
            a.observe(4, 0x64400000 + i, 0xC0000219, 25, "r", Verdict.DROP, None, 1.8e9)
        return a.due(1.8e9 + 300)

    w.write(batch(0, 2))
    fd = os.open(d + "/filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    os.close(fd)
    full = [w.write(batch(2, 20)), w.write(batch(22, 20))]
    during = w.stats
    events = [e.message for e in w.pop_events()]
    os.unlink(d + "/filler")
    after = w.retry()
    w.close()
    lines = open(d + "/log/blocked.jsonl").read().splitlines()

    def source(line):
        try:
            return json.loads(line)["source"]
        except ValueError:
            return None  # the fragment a full disk cut

    print(json.dumps({
        "full": full, "after": after, "errors": during.errors, "pending": during.pending,
        "failing": during.failing, "events": events + [e.message for e in w.pop_events()],
        "sources": [s for s in map(source, lines) if s is not None],
        "lines": len(lines), "lost": w.stats.lost,
    }))
    """
)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_real_enospc_is_counted_reported_once_and_recovered(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    script = (
        f'mount -t tmpfs -o size=256k,mode=0700 op25b-test {mnt} && exec "$0" -c "$1" {mnt}/disk'
    )
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            sys.executable,
            INSIDE,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    # The log's last page had room left: the first batch gets partly out, then ENOSPC.
    first, second = out["full"]
    assert first < 20 and second == 0 and out["failing"] is True
    assert out["errors"] == 2 and out["pending"] == 40 - first
    assert out["after"] == 40 - first and out["lost"] == 0
    expected = [f"100.64.0.{i}" for i in range(42)]
    assert out["sources"] == expected  # all of them, in order
    # One partial line at most (a fragment the full disk cut), never a merged record.
    assert out["lines"] in (42, 43)
    log = f"{mnt}/disk/log/blocked.jsonl"
    assert out["events"] == [
        f"abuse log {log}: No space left on device; keeping records and retrying",
        f"abuse log {log} is written again after 2 failed attempt(s); 0 record(s) lost",
    ]
    assert list(mnt.iterdir()) == []  # the tmpfs was private to the namespace
