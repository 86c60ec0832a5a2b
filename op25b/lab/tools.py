"""Real-TCP tools for the lab: an SMTP-ish listener and a connect prober, run in namespaces.

This module owns the traffic side of lab tests and the demo. Both halves run as
subprocesses inside a namespace (`ip netns exec NS python -m op25b.lab.tools ...`), so a
test observes the firewall exactly as a real client or MTA would:

``listen``
    binds every ADDR x PORT, prints ``READY <n>`` once all sockets are bound (callers
    await that line, never a sleep), then per connection prints ``ACCEPT <peer> <local>``,
    sends ``220 <name> ESMTP op25b-lab`` and answers enough SMTP for `swaks` to finish.
``probe``
    opens TCP connections from a bound source address, concurrently, and prints one JSON
    result per probe: ``connected`` (with the banner line, if one came), ``timeout``,
    ``refused`` (RST: no listener, or REJECT --reject-with tcp-reset), ``unreachable``
    (ICMP error, e.g. REJECT with icmp-*-unreachable/adm-prohibited) or ``error``.

The Python API (`start_listener`, `connect`, `probe_many`) wraps these subprocesses. It
needs no pyroute2, only `op25b.lab.netns`.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from op25b.errors import EnvironmentFailure
from op25b.lab.netns import child_env, popen_in, run_in, stop_process

Outcome = Literal["connected", "timeout", "refused", "unreachable", "error"]
READY = "READY"
DEFAULT_TIMEOUT = 2.0
#: SMTP relay, submission, submissions (implicit TLS; the lab listener speaks plain text
#: there too, which is all a reachability test needs).
MAIL_PORTS: tuple[int, ...] = (25, 587, 465)

_UNREACHABLE = {
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EACCES,  # ICMP admin-prohibited surfaces as EACCES on Linux
    errno.EPERM,  # locally dropped by a firewall OUTPUT rule
}


class LabToolError(EnvironmentFailure):
    """A lab tool subprocess failed to start or misbehaved."""


@dataclass(frozen=True)
class Probe:
    """One connection attempt: from *src* (bound) to *dst*:*port*."""

    src: str
    dst: str
    port: int


@dataclass(frozen=True)
class ConnectResult:
    """What one probe saw; *elapsed* is seconds from connect() to its outcome."""

    src: str
    dst: str
    port: int
    outcome: Outcome
    elapsed: float
    banner: str | None = None  # first line from the server, when connected
    detail: str = ""  # errno name or exception text, for messages

    @property
    def ok(self) -> bool:
        """Connected and got an SMTP greeting."""
        return self.outcome == "connected" and (self.banner or "").startswith("220")


# --- subprocess plumbing ------------------------------------------------------------------


def _tool_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "op25b.lab.tools", *args]


class Listener:
    """A running ``listen`` subprocess in a namespace; stop it with `stop` or ``with``.

    A reader thread drains its stdout so the child never blocks on a full pipe, and
    keeps the ``ACCEPT`` lines so tests can check which peer addresses arrived.
    """

    def __init__(self, ns: str, proc: subprocess.Popen[str], sockets: int) -> None:
        self.ns = ns
        self.proc = proc
        self.sockets = sockets
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self._lines.append(line.rstrip("\n"))

    def accepted(self) -> list[tuple[str, str]]:
        """(peer, local) address strings of every connection accepted so far."""
        with self._lock:
            lines = list(self._lines)
        out: list[tuple[str, str]] = []
        for line in lines:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "ACCEPT":
                out.append((parts[1], parts[2]))
        return out

    def peers(self) -> set[str]:
        """Peer IP addresses (no ports) seen so far."""
        return {peer.rsplit(":", 1)[0].strip("[]") for peer, _ in self.accepted()}

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the listener and reap it (idempotent)."""
        stop_process(self.proc, timeout)
        self._thread.join(timeout)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_listener(
    ns: str,
    addresses: Iterable[str],
    ports: Iterable[int],
    name: str = "lab",
    ready_timeout: float = 10.0,
) -> Listener:
    """Start a listener in *ns* on every address x port; return once all are bound."""
    args = ["listen", "--name", name]
    for addr in addresses:
        args += ["--addr", addr]
    for port in ports:
        args += ["--port", str(port)]
    # stderr goes to a file, not a pipe: nobody reads it after READY, and a pipe could
    # fill up and stall the listener.
    with tempfile.TemporaryFile("w+") as errf:
        proc: subprocess.Popen[str] = popen_in(
            ns,
            _tool_argv(*args),
            stdout=subprocess.PIPE,
            stderr=errf,
            text=True,
            env=child_env(),
        )
        line = _await_ready(proc, ready_timeout)
        if not line.startswith(READY):
            proc.kill()
            proc.wait()
            errf.seek(0)
            err = errf.read().strip()
            raise LabToolError(f"listener in {ns} not ready: {err or 'timeout'}")
    return Listener(ns, proc, int(line.split()[1]))


def _await_ready(proc: subprocess.Popen[str], ready_timeout: float) -> str:
    """The child's first line, or "" on EOF or timeout (awaited with select, no sleep)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + ready_timeout
    line = ""
    # Await the READY line itself (with a deadline), rather than sleeping and hoping.
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        remaining = ready_timeout
        while remaining > 0 and sel.select(remaining):
            line = proc.stdout.readline()
            if not line or line.startswith(READY):
                break
            remaining = deadline - time.monotonic()
    return line


def probe_many(
    ns: str,
    probes: Sequence[Probe],
    timeout: float = DEFAULT_TIMEOUT,
    concurrent: bool = True,
) -> list[ConnectResult]:
    """Run *probes* from inside *ns* in one subprocess; results in the same order.

    Concurrent by default so that N blocked probes cost one timeout, not N.
    """
    if not probes:
        return []
    spec = json.dumps([[p.src, p.dst, p.port] for p in probes])
    args = ["probe", "--timeout", str(timeout), "--json", spec]
    if not concurrent:
        args.append("--sequential")
    budget = timeout * (2 if concurrent else 2 * len(probes)) + 30
    res = run_in(
        ns,
        _tool_argv(*args),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=budget,
        check=False,
    )
    if res.returncode != 0:
        raise LabToolError(f"probe in {ns} failed ({res.returncode}): {res.stderr.strip()}")
    out = [ConnectResult(**json.loads(line)) for line in res.stdout.splitlines() if line]
    if len(out) != len(probes):
        raise LabToolError(f"probe in {ns}: {len(out)} results for {len(probes)} probes")
    return out


def connect(
    ns: str, src: str, dst: str, port: int, timeout: float = DEFAULT_TIMEOUT
) -> ConnectResult:
    """One TCP connection attempt from *src* in *ns* to *dst*:*port*."""
    return probe_many(ns, [Probe(src, dst, port)], timeout)[0]


# --- the listener (child side) ------------------------------------------------------------


def _fmt(sockname: Any) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _smtp_session(
    name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    peer = writer.get_extra_info("peername")
    local = writer.get_extra_info("sockname")
    print(f"ACCEPT {_fmt(peer)} {_fmt(local)}", flush=True)
    try:
        writer.write(f"220 {name} ESMTP op25b-lab\r\n".encode())
        in_data = False
        while True:
            raw = await asyncio.wait_for(reader.readline(), 30)
            if not raw:
                break
            line = raw.decode("ascii", "replace").rstrip("\r\n")
            if in_data:
                if line == ".":
                    in_data = False
                    writer.write(b"250 2.0.0 queued\r\n")
                continue
            verb = line[:4].upper()
            if verb == "QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                break
            if verb == "EHLO":
                writer.write(f"250-{name}\r\n250 AUTH PLAIN LOGIN\r\n".encode())
            elif verb == "DATA":
                in_data = True
                writer.write(b"354 end with <CRLF>.<CRLF>\r\n")
            elif verb == "AUTH":
                writer.write(b"235 2.7.0 authenticated\r\n")
            else:
                writer.write(b"250 2.0.0 ok\r\n")
            await writer.drain()
        await writer.drain()
    except (OSError, TimeoutError):
        pass  # the client went away; a lab listener has nothing to recover
    finally:
        writer.close()


async def _listen(name: str, addresses: Sequence[str], ports: Sequence[int]) -> None:
    servers = []
    for addr in addresses:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        for port in ports:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr, port))
            sock.listen(128)
            servers.append(
                await asyncio.start_server(lambda r, w: _smtp_session(name, r, w), sock=sock)
            )
    print(f"{READY} {len(servers)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Signals only set a flag; the loop below acts on it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for srv in servers:
        srv.close()


# --- the prober (child side) --------------------------------------------------------------


async def _probe_one(src: str, dst: str, port: int, timeout: float) -> dict[str, Any]:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    result: dict[str, Any] = {"src": src, "dst": dst, "port": port}
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    try:
        sock.bind((src, 0))
        await asyncio.wait_for(loop.sock_connect(sock, (dst, port)), timeout)
        result["outcome"] = "connected"
        result["elapsed"] = time.monotonic() - start
        # The banner is best effort: a connection is "connected" even if it never comes.
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 512), timeout)
            text = data.decode("ascii", "replace")
            result["banner"] = text.split("\r\n", 1)[0] if text else None
            if text:
                await loop.sock_sendall(sock, b"QUIT\r\n")
        except (TimeoutError, OSError) as exc:
            result["detail"] = f"no banner: {exc!r}"
    except TimeoutError:
        result["outcome"] = "timeout"
    except ConnectionRefusedError:
        result["outcome"] = "refused"
    except OSError as exc:
        result["outcome"] = "unreachable" if exc.errno in _UNREACHABLE else "error"
        result["detail"] = errno.errorcode.get(exc.errno or 0, str(exc))
    finally:
        result.setdefault("elapsed", time.monotonic() - start)
        sock.close()
    return result


async def _probe(spec: list[list[Any]], timeout: float, sequential: bool) -> None:
    jobs = [(str(s), str(d), int(p)) for s, d, p in spec]
    if sequential:
        results = [await _probe_one(s, d, p, timeout) for s, d, p in jobs]
    else:
        results = list(await asyncio.gather(*(_probe_one(s, d, p, timeout) for s, d, p in jobs)))
    for res in results:
        print(json.dumps(res), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m op25b.lab.tools``."""
    parser = argparse.ArgumentParser(prog="python -m op25b.lab.tools", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("listen", help="SMTP-ish listener; prints READY when bound")
    lp.add_argument("--name", default="lab")
    lp.add_argument("--addr", action="append", required=True)
    lp.add_argument("--port", action="append", type=int, required=True)
    pp = sub.add_parser("probe", help="TCP connects; one JSON line per probe")
    pp.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    pp.add_argument("--json", required=True, help='[["SRC","DST",PORT], ...]')
    pp.add_argument("--sequential", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "listen":
        asyncio.run(_listen(args.name, args.addr, args.port))
    else:
        asyncio.run(_probe(json.loads(args.json), args.timeout, args.sequential))
    return 0


if __name__ == "__main__":
    sys.exit(main())
