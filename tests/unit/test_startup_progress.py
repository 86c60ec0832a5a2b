"""What systemd hears while op25b starts and reloads (issue 11 item 6): STATUS= per
phase, EXTEND_TIMEOUT_USEC= while a phase progresses, and none once it stalls; read
from a real unix datagram socket standing in for NOTIFY_SOCKET. Also the loader's
progress callback that feeds the "N prefixes" status."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_daemon_lifecycle
from test_daemon_lifecycle import Env
from test_metrics import run_env

from op25b.daemon.sdnotify import Notifier
from op25b.daemon.startup import STALL, Progress, budget
from op25b.policy.loader import load_policy
from op25b.policy.pools import parse_pool

env = test_daemon_lifecycle.env  # the fake-kernel daemon environment (a fixture)


class Systemd:
    """A NOTIFY_SOCKET: collects every datagram (each a list of KEY=VALUE lines)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[list[str]] = []

    def notifier(self) -> Notifier:
        return Notifier({"NOTIFY_SOCKET": self.path})

    def read(self, timeout: float = 0.0) -> list[list[str]]:
        """What has arrived; with ``timeout``, first wait up to that long for one more."""
        if timeout:
            self.sock.settimeout(timeout)
            try:
                self.messages.append(self.sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                return self.messages
        self.sock.setblocking(False)
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            pass
        return self.messages

    def statuses(self) -> list[str]:
        return [line[7:] for m in self.read() for line in m if line.startswith("STATUS=")]

    def extensions(self) -> list[int]:
        return [
            int(line.split("=", 1)[1])
            for m in self.read()
            for line in m
            if line.startswith("EXTEND_TIMEOUT_USEC=")
        ]


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[Systemd]:
    s = Systemd(tmp_path / "notify")
    yield s
    s.sock.close()


def test_start_tells_each_phase_then_ready(env: Env, systemd: Systemd) -> None:
    def stopper() -> None:
        deadline = time.monotonic() + 10
        while not any("READY=1" in m for m in systemd.read(0.05)):
            assert time.monotonic() < deadline
        os.kill(os.getpid(), signal.SIGTERM)

    t = threading.Thread(target=stopper)
    t.start()
    code = run_env(env, notifier=systemd.notifier())
    t.join()
    assert code == 0
    statuses = systemd.statuses()
    assert statuses[:4] == [
        f"loading {env.policy}",
        "compiling 3 prefixes, loading the kernel sets",
        "installing kernel rules and sets (3 prefixes)",
        "binding 1 queue(s) from 0",
    ]
    assert statuses[4].startswith(f"enforcing {env.policy} on queue 0: 0 blocked")
    # every phase asked for more time as it began (2 ticks of 5 s)
    assert systemd.extensions()[:3] == [10_000_000] * 3
    ready = [m for m in systemd.read() if "READY=1" in m]
    assert len(ready) == 1


def test_a_phase_keeps_extending_while_it_progresses_and_stops_when_it_stalls(
    systemd: Systemd,
) -> None:
    now = [1000.0]
    progress = Progress(systemd.notifier(), tick=0.01, clock=lambda: now[0])
    with progress.phase("loading p.yaml", allowed=STALL):
        assert systemd.extensions() == [20_000]  # 2 ticks, at once
        # the ticker renews while inside the allowed time
        deadline = time.monotonic() + 5
        while len(systemd.extensions()) < 3:
            assert time.monotonic() < deadline, "the ticker never renewed"
            systemd.read(0.1)
        progress.loaded(500_000)
        assert progress.text == "loading p.yaml: 500,000 prefixes"
        now[0] += STALL - 1  # still within the stall limit counted from that report
        before = len(systemd.extensions())
        while len(systemd.extensions()) == before:
            assert time.monotonic() < deadline, "no renewal after progress"
            systemd.read(0.1)
        assert "STATUS=loading p.yaml: 500,000 prefixes" in systemd.read()[-1]
        now[0] += 2  # past it: a stalled phase gets no more time
        start = progress.ticks + 1  # a tick may be half-way: count from the next one
        stalled = len(systemd.extensions())
        while progress.ticks < start + 3:
            assert time.monotonic() < deadline, "the ticker stopped ticking"
            systemd.read(0.01)
        assert len(systemd.extensions()) <= stalled + 1  # at most the half-way one
    # the ticker thread is gone once the phase ends
    assert not [t for t in threading.enumerate() if t.name == "op25b-progress"]


def test_without_systemd_no_thread_is_started() -> None:
    progress = Progress(Notifier({}))
    with progress.phase("loading"):
        assert not [t for t in threading.enumerate() if t.name == "op25b-progress"]


def test_budgets_grow_with_the_prefix_count() -> None:
    assert budget(10.0, 0) == STALL
    assert budget(10.0, 17_000_000) == STALL + 170.0


def test_loader_reports_prefixes_as_it_parses(tmp_path: Path) -> None:
    lines = [f"10.{i >> 16}.{i >> 8 & 255}.{i & 255}/32" for i in range(150_000)]
    (tmp_path / "pool.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "p.yaml").write_text(
        "version: 1\nguarded_ports: [25]\naction: drop\nplans:\n"
        "  small:\n    exempt: false\n    prefixes: [100.64.0.0/16, 100.65.0.0/16]\n"
        "  big:\n    exempt: false\n    prefixes_file: pool.txt\n"
    )
    seen: list[int] = []
    policy = load_policy(tmp_path / "p.yaml", progress=seen.append).policy
    assert sum(len(p.prefixes) for p in policy.plans) == 150_002
    assert seen[0] == 2  # the inline plan
    assert seen == sorted(seen) and seen[-1] == 150_002
    assert len(seen) >= 4  # the big file reports per chunk of 65536 lines, not once
    assert parse_pool("10.0.0.0/8\n", None).values == [10 << 24]  # no callback, no cost


def test_reload_tells_each_phase_then_ready(env: Env, systemd: Systemd) -> None:
    from test_daemon_lifecycle import reload

    w = env.worker()
    w.notifier = systemd.notifier()
    reload(w)
    statuses = systemd.statuses()
    assert statuses[:3] == [
        f"reloading {env.policy}",
        "reloading: compiling 3 prefixes",
        "reloading: updating the kernel",
    ]
    assert statuses[-1].startswith(f"enforcing {env.policy} on queue 0")
    assert any("RELOADING=1" in m for m in systemd.read())
    assert "READY=1" in systemd.read()[-1]
    assert systemd.extensions() == [10_000_000] * 3
