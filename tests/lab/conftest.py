"""Fixtures for lab tests: a namespace lab that is always torn down, and MX listeners.

Everything here needs root (namespaces, veths); without it the whole directory is
skipped with one clear reason rather than failing. CI runs as root, so there they run.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

if os.geteuid() != 0:
    pytest.skip("lab tests need root (network namespaces and veths)", allow_module_level=True)
if shutil.which("ip") is None:
    pytest.skip("lab tests need iproute2's `ip`", allow_module_level=True)

pytest.importorskip("pyroute2", reason="lab tests need pyroute2 (pip install .[lab])")

# Imported after the skips on purpose: op25b.lab.topology imports pyroute2.
from daemonfix import start  # noqa: F401  (the fixture: a daemon per test, always stopped)

from op25b.lab import topology as lab_mod
from op25b.lab.tools import MAIL_PORTS, Listener, start_listener
from op25b.lab.topology import Lab, lab_session

ISP_ADDRESSES = (lab_mod.ISP_MTA_V4, lab_mod.ISP_MTA_V6)
NET_ADDRESSES = (
    lab_mod.NET_MX_V4,
    *lab_mod.NET_MX_EXTRA_V4,
    lab_mod.NET_MX_V6,
    *lab_mod.NET_MX_EXTRA_V6,
)


_PYTEST_PID = os.getpid()


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # pyroute2 forks helper children (they inherit this handler) and ends them with
    # SIGTERM: a child must die as if the handler were SIG_DFL, never unwind pytest.
    if os.getpid() != _PYTEST_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """One lab for the whole session; torn down even if tests fail or are interrupted.

    While it exists, SIGTERM (a CI job timeout, `kill`) is turned into KeyboardInterrupt
    so pytest unwinds and this teardown still runs; the old handler is restored after.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        with lab_session(prefix="op25bt") as the_lab:
            yield the_lab
    finally:
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def listeners(lab: Lab) -> Iterator[dict[str, Listener]]:
    """Listeners on isp (provider MTA) and net (every MX address), ports 25/587/465.

    Returned only once every socket is bound (each listener prints READY).
    """
    started: dict[str, Listener] = {}
    try:
        started["isp"] = start_listener(lab.isp, ISP_ADDRESSES, MAIL_PORTS, name="isp-mta")
        started["net"] = start_listener(lab.net, NET_ADDRESSES, MAIL_PORTS, name="mx")
        yield started
    finally:
        for listener in started.values():
            listener.stop()
