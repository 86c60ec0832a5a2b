"""Real SMTP servers for the lab (aiosmtpd): the provider MTA and the external MX.

This module owns the mail side of the demo: two small but real SMTP servers built on
aiosmtpd, each run as a subprocess inside a lab namespace, and the parent-side helpers
that start them, await what they report and read the MX's mailbox.

``python -m op25b.lab.mailservers provider ...``
    The ISP's MTA (smarthost). Port 587 is submission (RFC 6409): SMTP AUTH is required
    before MAIL, and unauthenticated relay is refused. Port 25 relays for the ISP's own
    subscriber networks (``--relay-net``), the classic smarthost, and for no one else.
    Accepted mail is queued ("250 queued as ...") and then relayed, store-and-forward,
    to the next hop on port 25 with a real SMTP client (smtplib) bound to the MTA's own
    address, so the relay crosses the lab router like any server-to-server mail.
    The next hop comes from a static transport map (``--route DOMAIN=HOST``): the lab
    has no DNS, so this stands in for the recipient domain's MX lookup.
``python -m op25b.lab.mailservers mx ...``
    The external MX ("the Internet"): accepts mail for anyone and stores every message
    in a Maildir, with a Received: header naming the peer address it really came from.

Both print ``READY <n>`` once all sockets are bound (callers await it, never sleep),
then one JSON object per line per event: ``connect`` (every TCP connection, so a test
can prove a blocked client never reached the server), ``auth``, ``refused``,
``queued``, ``relayed``, ``deferred`` and ``stored``.

AUTH over plain text: aiosmtpd, following RFC 4954 §4, does not offer AUTH PLAIN/LOGIN
on a connection without TLS unless told ``auth_require_tls=False``. The lab has no
certificates and every byte stays inside private namespaces, so the submission port
offers AUTH in the clear on purpose. A real provider requires STARTTLS on 587 or
implicit TLS on 465 (RFC 8314); nothing in OP25B depends on that choice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.parser
import email.policy
import hmac
import ipaddress
import json
import mailbox
import secrets
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from op25b.errors import EnvironmentFailure
from op25b.lab.netns import child_env, popen_in, stop_process
from op25b.lab.processes import AwaitableLines, LabRunError

READY = "READY"
Event = dict[str, Any]
Emit = Callable[[Event], None]

_RELAY_TIMEOUT = 10.0
_SHUTDOWN_GRACE = 5.0  # seconds queued relays may still finish after SIGTERM


class MailServerError(EnvironmentFailure):
    """A mail server subprocess did not start or did not report what was awaited."""


# --- configuration (parent builds argv from these) -------------------------------------


@dataclass(frozen=True)
class MxConfig:
    """The external MX: where it listens and where it stores mail."""

    maildir: Path
    addresses: tuple[str, ...] = ("0.0.0.0", "::")  # every address the namespace has
    port: int = 25
    hostname: str = "mx.example.net"

    def argv(self) -> list[str]:
        """Arguments of ``python -m op25b.lab.mailservers``."""
        args = ["mx", "--hostname", self.hostname, "--port", str(self.port)]
        args += ["--maildir", str(self.maildir)]
        for addr in self.addresses:
            args += ["--addr", addr]
        return args


@dataclass(frozen=True)
class ProviderConfig:
    """The provider MTA: its addresses, users, subscriber networks and transport map."""

    addresses: tuple[str, ...]
    users: tuple[tuple[str, str], ...]  # (login, password); lab-only credentials
    relay_nets: tuple[str, ...]  # sources it relays for on port 25 without AUTH
    routes: tuple[tuple[str, str], ...]  # (recipient domain, next-hop address)
    hostname: str = "smtp.isp.example"
    submission_port: int = 587
    smtp_port: int = 25  # 0: no port-25 listener
    relay_port: int = 25  # the next hop's port (25 in real life)

    def argv(self) -> list[str]:
        """Arguments of ``python -m op25b.lab.mailservers``."""
        args = ["provider", "--hostname", self.hostname]
        args += ["--submission-port", str(self.submission_port)]
        args += ["--smtp-port", str(self.smtp_port), "--relay-port", str(self.relay_port)]
        for addr in self.addresses:
            args += ["--addr", addr]
        for login, password in self.users:
            args += ["--user", f"{login}:{password}"]
        for net in self.relay_nets:
            args += ["--relay-net", net]
        for domain, host in self.routes:
            args += ["--route", f"{domain}={host}"]
        return args


# --- parent side -------------------------------------------------------------------------


def _parse_event(line: str) -> Event | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class MailServer:
    """A running mail server subprocess; its events are collected and awaitable."""

    def __init__(self, ns: str, name: str, proc: subprocess.Popen[str], log: Path) -> None:
        self.ns = ns
        self.name = name
        self.proc = proc
        self.log = log  # the child's stderr (aiosmtpd's own logging)
        self.lines = AwaitableLines()
        self._thread = _start_drain(proc, self.lines)

    def events(self, kind: str | None = None) -> list[Event]:
        """Every event so far (of *kind*, if given), in order."""
        parsed = (_parse_event(line) for line in self.lines.snapshot())
        return [e for e in parsed if e is not None and (kind is None or e["event"] == kind)]

    def wait_event(self, pred: Callable[[Event], bool], timeout: float, what: str) -> Event:
        """The first event satisfying *pred*; MailServerError with context on timeout."""

        def match(line: str) -> bool:
            event = _parse_event(line)
            return event is not None and pred(event)

        try:
            return _parse_event(self.lines.wait_for(match, timeout, what=what)[1]) or {}
        except LabRunError as exc:
            raise MailServerError(f"{self.name}: {exc}{self._stderr_tail()}") from None

    def _stderr_tail(self) -> str:
        with contextlib.suppress(OSError):
            tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
            if tail:
                return "\nstderr:\n" + "\n".join(tail)
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, reap (idempotent)."""
        stop_process(self.proc, timeout)
        self._thread.join(timeout)

    def __enter__(self) -> MailServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _start_drain(proc: subprocess.Popen[str], lines: AwaitableLines) -> threading.Thread:
    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.add(line.rstrip("\n"))
        lines.close()

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    return thread


def start_server(
    ns: str, config: MxConfig | ProviderConfig, log: Path, ready_timeout: float = 15.0
) -> MailServer:
    """Start a mail server in *ns*; return once it has bound every socket."""
    name = "mx" if isinstance(config, MxConfig) else "provider MTA"
    argv = [sys.executable, "-m", "op25b.lab.mailservers", *config.argv()]
    with log.open("w") as errf:  # the child keeps its own copy of the descriptor
        proc: subprocess.Popen[str] = popen_in(
            ns, argv, stdout=subprocess.PIPE, stderr=errf, text=True, env=child_env()
        )
    server = MailServer(ns, name, proc, log)
    try:
        server.lines.wait_for(lambda s: s.startswith(READY), ready_timeout, what="READY")
    except LabRunError:
        server.stop()
        raise MailServerError(f"{name} in {ns} did not start{server._stderr_tail()}") from None
    return server


def _message_bytes_parser() -> email.parser.BytesParser:
    return email.parser.BytesParser(policy=email.policy.default)


def find_message(maildir: Path, message_id: str) -> EmailMessage | None:
    """The message in *maildir* whose Message-ID is *message_id*, read from disk."""
    box = mailbox.Maildir(maildir, factory=None, create=False)
    parser = _message_bytes_parser()
    for key in box.iterkeys():
        with box.get_file(key) as fh:
            msg = parser.parse(fh)  # type: ignore[arg-type]
        if str(msg.get("Message-ID", "")).strip() == message_id:
            assert isinstance(msg, EmailMessage)  # guaranteed by policy=default
            return msg
    return None


def received_chain(msg: EmailMessage) -> list[str]:
    """The Received: headers, unfolded, newest (last hop) first as on the wire."""
    return [" ".join(str(v).split()) for v in msg.get_all("Received", [])]


# --- child side: shared ------------------------------------------------------------------


def _emit(event: Event) -> None:
    print(json.dumps(event, sort_keys=True), flush=True)


def _ip(peer: Any) -> str:
    return str(peer[0]) if peer else "?"


def _literal(ip: str) -> str:
    # RFC 5321 address literals: [192.0.2.1] and [IPv6:2001:db8::1].
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"


def _message_id(content: bytes) -> str:
    headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(content)
    return str(headers.get("Message-ID", "")).strip()


def _received(session: Any, hostname: str, what: str, qid: str, rcpts: Sequence[str]) -> bytes:
    helo = session.host_name or "unknown"
    # RFC 3848: ESMTPA marks an authenticated session (ESMTPSA if it were also TLS).
    proto = "ESMTPA" if session.authenticated else "ESMTP"
    rcpt = f"\r\n\tfor <{rcpts[0]}>" if len(rcpts) == 1 else ""
    stamp = format_datetime(datetime.now(UTC))
    line = (
        f"Received: from {helo} ({_literal(_ip(session.peer))})\r\n"
        f"\tby {hostname} ({what}) with {proto} id {qid}{rcpt};\r\n\t{stamp}\r\n"
    )
    return line.encode("ascii", "replace")


def _new_qid() -> str:
    return secrets.token_hex(5).upper()


def _smtp_class() -> Any:
    from aiosmtpd.smtp import SMTP

    class LoggingSMTP(SMTP):
        """aiosmtpd's SMTP that reports every TCP connection as a ``connect`` event."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            local = transport.get_extra_info("sockname")
            _emit(
                {
                    "event": "connect",
                    "peer": _ip(transport.get_extra_info("peername")),
                    "local": _ip(local),
                    "port": local[1] if local else 0,
                }
            )

    return LoggingSMTP


async def _serve(
    addresses: Sequence[str], port: int, factory: Callable[[], asyncio.Protocol]
) -> list[asyncio.Server]:
    loop = asyncio.get_running_loop()
    servers = []
    for addr in addresses:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # So "::" and "0.0.0.0" can both be bound: each family has its own socket.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr, port))
        sock.listen(128)
        servers.append(await loop.create_server(factory, sock=sock))
    return servers


async def _run_until_signalled(servers: Sequence[asyncio.Server], pending: set[Any]) -> None:
    print(f"{READY} {len(servers)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Signals only set a flag; the code below acts on it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for srv in servers:
        srv.close()
    if pending:  # let queued relays finish, but never hang a teardown on them
        await asyncio.wait(pending, timeout=_SHUTDOWN_GRACE)


# --- child side: the external MX ---------------------------------------------------------


class _MxHandler:
    def __init__(self, maildir: Path, hostname: str) -> None:
        maildir.parent.mkdir(parents=True, exist_ok=True)  # Maildir() makes only the leaf
        self.box = mailbox.Maildir(maildir, factory=None, create=True)
        self.hostname = hostname

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        qid = _new_qid()
        content: bytes = envelope.original_content or b""
        data = _received(session, self.hostname, "op25b lab MX", qid, envelope.rcpt_tos)
        # Maildir files conventionally use LF line ends; SMTP's CRLF is wire format.
        key = self.box.add((data + content).replace(b"\r\n", b"\n"))
        _emit(
            {
                "event": "stored",
                "id": qid,
                "key": key,
                "message_id": _message_id(content),
                "peer": _ip(session.peer),
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
            }
        )
        return f"250 2.0.0 Ok: stored as {qid}"


async def _run_mx(args: argparse.Namespace) -> None:
    handler = _MxHandler(Path(args.maildir), args.hostname)
    smtp = _smtp_class()
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.Protocol:
        proto: asyncio.Protocol = smtp(handler, hostname=args.hostname, loop=loop)
        return proto

    servers = await _serve(args.addr, args.port, factory)
    await _run_until_signalled(servers, set())


# --- child side: the provider MTA ---------------------------------------------------------


@dataclass
class _ProviderState:
    """The MTA's settings plus its in-flight relays (mutable, owned by the event loop)."""

    hostname: str
    users: dict[str, str]
    relay_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    routes: dict[str, str]
    relay_port: int
    sources: dict[int, str]  # address family -> own address to relay from
    pending: set[asyncio.Task[None]] = field(default_factory=set)


class _Authenticator:
    """aiosmtpd authenticator: lab users and passwords, compared in constant time."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = False
        login = ""
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            want = self.users.get(login)
            ok = want is not None and hmac.compare_digest(want.encode(), auth_data.password)
        _emit(
            {
                "event": "auth",
                "peer": _ip(session.peer),
                "mechanism": mechanism,
                "user": login,
                "ok": ok,
            }
        )
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)


class _ProviderHandler:
    def __init__(self, state: _ProviderState) -> None:
        self.st = state

    def _may_relay(self, session: Any) -> bool:
        if session.authenticated:
            return True
        try:
            ip = ipaddress.ip_address(_ip(session.peer))
        except ValueError:
            return False
        return any(ip in net for net in self.st.relay_nets)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if not self._may_relay(session):
            _emit({"event": "refused", "peer": _ip(session.peer), "rcpt": address})
            return f"554 5.7.1 <{address}>: Relay access denied"
        if domain not in self.st.routes:
            return f"550 5.1.2 <{address}>: no route to {domain} in the lab transport map"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        qid = _new_qid()
        content: bytes = envelope.original_content or b""
        rcpts = list(envelope.rcpt_tos)
        what = "op25b lab provider MTA"
        data = _received(session, self.st.hostname, what, qid, rcpts) + content
        message_id = _message_id(content)
        _emit(
            {
                "event": "queued",
                "id": qid,
                "message_id": message_id,
                "peer": _ip(session.peer),
                "user": session.auth_data if session.authenticated else None,
                "rcpt_tos": rcpts,
            }
        )
        # Store and forward, as a real MTA does: answer the client first, relay after.
        task = asyncio.create_task(self._relay(qid, message_id, envelope.mail_from, rcpts, data))
        self.st.pending.add(task)
        task.add_done_callback(self.st.pending.discard)
        return f"250 2.0.0 Ok: queued as {qid}"

    async def _relay(
        self, qid: str, message_id: str, mail_from: str, rcpts: list[str], data: bytes
    ) -> None:
        by_host: dict[str, list[str]] = {}
        for rcpt in rcpts:
            by_host.setdefault(self.st.routes[rcpt.rpartition("@")[2].lower()], []).append(rcpt)
        for host, group in by_host.items():
            base = {"id": qid, "message_id": message_id, "host": host, "rcpt_tos": group}
            source = self.st.sources.get(socket.AF_INET6 if ":" in host else socket.AF_INET)
            try:
                reply = await asyncio.to_thread(
                    _deliver, host, self.st.relay_port, source, self.st.hostname,
                    mail_from, group, data,
                )  # fmt: skip
            except (OSError, smtplib.SMTPException) as exc:
                _emit({"event": "deferred", **base, "error": f"{type(exc).__name__}: {exc}"})
            else:
                _emit({"event": "relayed", **base, "reply": reply})


def _deliver(
    host: str,
    port: int,
    source: str | None,
    helo: str,
    mail_from: str,
    rcpts: Sequence[str],
    data: bytes,
) -> str:
    """One SMTP transaction to *host*; the final reply, or an exception."""
    src = (source, 0) if source else None
    with smtplib.SMTP(
        host, port, local_hostname=helo, timeout=_RELAY_TIMEOUT, source_address=src
    ) as client:
        # Step by step rather than sendmail(): sendmail hides the final DATA reply, and
        # that reply (the MX's "stored as ...") is what the demo shows.
        client.ehlo_or_helo_if_needed()
        code, text = client.mail(mail_from)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, text, mail_from)
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({rcpt: (code, text)})
        code, text = client.data(data)
        if code != 250:
            raise smtplib.SMTPDataError(code, text)
        return f"{code} {text.decode('utf-8', 'replace')}"


async def _run_provider(args: argparse.Namespace) -> None:
    from aiosmtpd.smtp import SMTP

    users = dict(u.split(":", 1) for u in args.user)
    routes = dict(r.split("=", 1) for r in args.route)
    sources: dict[int, str] = {}
    for addr in args.addr:
        sources.setdefault(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)
    state = _ProviderState(
        hostname=args.hostname,
        users=users,
        relay_nets=[ipaddress.ip_network(n) for n in args.relay_net],
        routes={d.lower(): h for d, h in routes.items()},
        relay_port=args.relay_port,
        sources=sources,
    )
    handler = _ProviderHandler(state)
    smtp = _smtp_class()
    loop = asyncio.get_running_loop()
    # See the module docstring: AUTH without TLS, lab only. aiosmtpd warns about it once
    # per connection; that is the documented, intended setting here.
    warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")

    def submission() -> asyncio.Protocol:
        proto: SMTP = smtp(
            handler,
            hostname=args.hostname,
            auth_required=True,
            auth_require_tls=False,
            authenticator=_Authenticator(users),
            loop=loop,
        )
        return proto

    def relay() -> asyncio.Protocol:
        # Port 25: no AUTH offered (no TLS); relay is by source network only.
        proto: SMTP = smtp(handler, hostname=args.hostname, loop=loop)
        return proto

    servers = await _serve(args.addr, args.submission_port, submission)
    if args.smtp_port:
        servers += await _serve(args.addr, args.smtp_port, relay)
    await _run_until_signalled(servers, state.pending)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m op25b.lab.mailservers``."""
    parser = argparse.ArgumentParser(prog="python -m op25b.lab.mailservers", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="cmd", required=True)
    mx = sub.add_parser("mx", help="external MX: accept everything, store in a Maildir")
    mx.add_argument("--addr", action="append", required=True)
    mx.add_argument("--port", type=int, default=25)
    mx.add_argument("--hostname", default="mx.example.net")
    mx.add_argument("--maildir", required=True)
    pr = sub.add_parser("provider", help="provider MTA: 587 with AUTH, 25 for subscribers")
    pr.add_argument("--addr", action="append", required=True)
    pr.add_argument("--hostname", default="smtp.isp.example")
    pr.add_argument("--submission-port", type=int, default=587)
    pr.add_argument("--smtp-port", type=int, default=25, help="0 = no port-25 listener")
    pr.add_argument("--relay-port", type=int, default=25, help="next hop's port")
    pr.add_argument("--user", action="append", default=[], metavar="LOGIN:PASSWORD")
    pr.add_argument("--relay-net", action="append", default=[], metavar="PREFIX")
    pr.add_argument("--route", action="append", default=[], metavar="DOMAIN=HOST")
    args = parser.parse_args(argv)
    asyncio.run(_run_mx(args) if args.cmd == "mx" else _run_provider(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
