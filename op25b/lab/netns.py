"""Run things inside named network namespaces, and find and stop what runs there.

This module owns the *process* side of the lab: launching subprocesses inside a
namespace (`ip netns exec`), finding the processes that live in one, and ending them
at teardown. It deliberately does not import pyroute2 (only `op25b.lab.topology` does), so the
small lab tools (`op25b.lab.tools`) can use it from any interpreter.

Namespaces are the iproute2 kind: a bind mount under ``/run/netns/<name>``.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from op25b.errors import EnvironmentFailure

NETNS_RUN_DIR = Path("/run/netns")
IP = "ip"


class NetnsError(EnvironmentFailure):
    """A namespace operation failed (missing namespace, command failed)."""


def netns_path(name: str) -> Path:
    """Return the bind-mount path iproute2 uses for namespace *name*."""
    if not name or "/" in name or name in (".", ".."):
        raise NetnsError(f"not a namespace name: {name!r}")
    return NETNS_RUN_DIR / name


def netns_exists(name: str) -> bool:
    """Tell whether namespace *name* is currently mounted."""
    return netns_path(name).exists()


def list_netns() -> list[str]:
    """Names of all iproute2 namespaces, sorted (empty when none exist)."""
    try:
        return sorted(p.name for p in NETNS_RUN_DIR.iterdir())
    except FileNotFoundError:
        return []


def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """The argument list that runs *argv* inside namespace *ns*."""
    netns_path(ns)  # validates the name; exec would otherwise fail with a vaguer message
    return [IP, "netns", "exec", ns, *argv]


def run_in(ns: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run` of *argv* inside namespace *ns*; keyword arguments pass through."""
    return subprocess.run(exec_argv(ns, argv), **kw)


def popen_in(ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen` of *argv* inside namespace *ns*; keyword arguments pass through."""
    return subprocess.Popen(exec_argv(ns, argv), **kw)


def own_hostname(hostname: str) -> list[str]:
    """A command prefix: what follows runs in a UTS namespace of its own named *hostname*.

    Lab routers share this machine's UTS namespace, so every daemon would report the
    same host name; a real router has its own, which is what syslog's HOSTNAME field
    and the abuse records' ``router`` carry. ``unshare`` and ``sh`` exec, so the pid
    stays the command's own (signals reach it directly).
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}", hostname):
        raise NetnsError(f"not a host name: {hostname!r}")
    return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname]


def tcp_listening(pid: int, port: int) -> bool:
    """True when the network namespace of process *pid* has a TCP socket listening on *port*.

    Reads ``/proc/PID/net/tcp{,6}``, which show the sockets of that process's namespace:
    a readiness check without entering the namespace or connecting to the service.
    """
    want = f":{port:04X} "
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as fh:
                next(fh, None)  # the header
                for line in fh:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A" and (fields[1] + " ").endswith(want):
                        return True
        except OSError:  # the process is gone
            return False
    return False


def sysctl_in(ns: str, settings: Mapping[str, str]) -> None:
    """Write sysctls inside *ns* only (never the root namespace), all in one process.

    ``/proc/sys/net`` resolves against the netns of the *opening* process, so writing it
    from here would hit the root namespace; a child run via `ip netns exec` is the
    simple, correct way.
    """
    if not settings:
        return
    args = [f"{key}={value}" for key, value in settings.items()]
    res = run_in(ns, ["sysctl", "-qw", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise NetnsError(f"sysctl in {ns} failed: {res.stderr.strip()}")


def netns_pids(ns: str) -> list[int]:
    """Pids of processes whose network namespace is *ns* (like `ip netns pids`)."""
    try:
        st = netns_path(ns).stat()
    except FileNotFoundError:
        return []
    want = (st.st_dev, st.st_ino)
    pids: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            nst = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:  # exited meanwhile, or a kernel thread
            continue
        if (nst.st_dev, nst.st_ino) == want:
            pids.append(int(entry.name))
    return sorted(pids)


def _wait_gone(pids: Sequence[int], deadline: float) -> list[int]:
    """Wait until *pids* have exited (become zombies or vanished); return those left.

    Uses pidfds, so this is an event wait, not a polling sleep, and works for
    processes that are not our children (e.g. grandchildren behind `ip netns exec`).
    """
    fds: dict[int, int] = {}
    left: list[int] = []
    try:
        for pid in pids:
            try:
                fds[os.pidfd_open(pid)] = pid
            except ProcessLookupError:
                continue
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        pending = set(fds)
        while pending:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            for fd, _ in poller.poll(remaining_ms):
                pending.discard(fd)
                poller.unregister(fd)
        left = sorted(fds[fd] for fd in pending)
    finally:
        for fd in fds:
            os.close(fd)
    return left


def terminate_netns_processes(ns: str, grace: float = 3.0) -> list[int]:
    """End every process inside *ns*: SIGTERM, wait up to *grace* s, then SIGKILL.

    Needed before removing a namespace: a process still inside keeps the namespace
    (and its veths and sockets) alive after the mount is gone. Only processes in this
    namespace are signalled, each by pid. Returns the pids that were signalled.
    """
    pids = netns_pids(ns)
    if not pids:
        return []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # already gone is fine
            os.kill(pid, signal.SIGTERM)
    stubborn = _wait_gone(pids, time.monotonic() + grace)
    for pid in stubborn:
        with contextlib.suppress(ProcessLookupError):  # already gone is fine
            os.kill(pid, signal.SIGKILL)
    if stubborn and _wait_gone(stubborn, time.monotonic() + grace):
        raise NetnsError(f"processes in {ns} survived SIGKILL: {stubborn}")
    return pids


def child_env() -> dict[str, str]:
    """Environment for op25b subprocesses started in a namespace.

    The child must import this package even when it is not installed (tests and the
    demo run from a checkout), so the checkout goes first on its path.
    """
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the checkout holding op25b/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, wait, SIGKILL if it does not go; idempotent."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
