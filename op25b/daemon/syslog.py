"""Syslog output: RFC 5424 lines over a unix socket, UDP or TCP, never in enforcement's way.

Owns the wire format (``format_rfc5424``, pure and clock-free: the caller passes the
timestamp) and one sender per configured destination (``SyslogSender``).

Delivery is best effort by design. A stopped, slow or unreachable syslog must not
stop or stall enforcement, so the sender

* never raises from ``send()``: failures are counted (``stats``) and the message is
  dropped;
* never blocks: datagrams go out with ``MSG_DONTWAIT`` (a unix datagram socket blocks
  the sender when the receiver's queue is full), TCP is connected and written
  non-blocking, with a bounded buffer of whole frames waiting for the socket;
* after a failure, reconnects on a later ``send()`` with exponential backoff, so a
  dead collector costs one failed connect per backoff period, not one per message.

Transports: a unix socket path (``/dev/log`` style: SOCK_DGRAM, falling back to
SOCK_STREAM on EPROTOTYPE, LF-terminated), ``udp://host:port`` (one message per
datagram, RFC 5426) and ``tcp://host:port`` (RFC 6587 octet-counting framing, so
multi-line messages survive). Host names are resolved at (re)connect time on a
thread (the system resolver can block for as long as systemd's watchdog); IP
literals are used at once.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from op25b.daemon.syslogformat import (
    APP_NAME,
    SD_ID,
    Severity,
    facility_code,
    format_local,
    format_rfc5424,
    frame_lf,
    frame_octet_counting,
)
from op25b.policy.model import SyslogConfig, SyslogTransport

# --- the sender -----------------------------------------------------------------------


_RESOLVE_POLL = 0.05  # how soon to look again while a name is being resolved


class _Resolver:
    """Host names resolved on a thread: ``getaddrinfo`` can block for ~30 s.

    IP literals resolve at once (``AI_NUMERICHOST`` never blocks); a name starts a
    lookup on a daemon thread and ``lookup`` returns None until it is done (then the
    answer, or raises its OSError once). Every reconnect resolves afresh.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._job: threading.Thread | None = None
        self._result: list[tuple[Any, ...]] | OSError | None = None

    def lookup(self, host: str, port: int, kind: int) -> list[tuple[Any, ...]] | None:
        try:
            return socket.getaddrinfo(host, port, type=kind, flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            pass  # a name, not a literal
        with self._lock:
            if self._job is None:
                self._result = None
                self._job = threading.Thread(
                    target=self._run, args=(host, port, kind), name="op25b-resolve", daemon=True
                )
                self._job.start()
                return None
            if self._job.is_alive():
                return None
            self._job = None
            result, self._result = self._result, None
        if isinstance(result, OSError):
            raise result
        return result

    def _run(self, host: str, port: int, kind: int) -> None:
        try:
            result: list[tuple[Any, ...]] | OSError = socket.getaddrinfo(host, port, type=kind)
        except OSError as e:
            result = e
        with self._lock:
            self._result = result


@dataclass(frozen=True, slots=True)
class SenderStats:
    """What happened to the messages given to ``send()`` so far."""

    sent: int  # handed to the kernel (TCP: fully written)
    dropped: int  # lost: send failed, in backoff, or buffer full
    send_errors: int  # socket errors seen (connect or send)
    connects: int  # successful (re)connections
    last_error: str | None


class _State(enum.Enum):
    CLOSED = "closed"
    CONNECTING = "connecting"  # TCP, non-blocking connect in progress
    OPEN = "open"


class SyslogSender:
    """Best-effort RFC 5424 sender for one ``SyslogConfig`` (see the module docstring).

    Construction opens nothing; the first ``send()`` connects. Not thread-safe: the
    daemon loop owns it.
    """

    def __init__(
        self,
        config: SyslogConfig,
        *,
        hostname: str | None = None,
        app_name: str = APP_NAME,
        procid: str | None = None,
        sd_id: str = SD_ID,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        connect_timeout: float = 2.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        max_message: int | None = None,
        max_pending: int = 256 * 1024,
        unix_format: str = "rfc5424",
    ) -> None:
        self.config = config
        self.facility = facility_code(config.facility)
        self.hostname = hostname
        self.app_name = app_name
        self.procid = procid
        self.sd_id = sd_id
        self._clock = clock
        self._resolver = _Resolver()
        self._wall = wall
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        # RFC 5426 asks UDP receivers for 2048 octets at least; rsyslog accepts 8 KiB
        # by default on its other inputs. Longer messages are cut, not refused.
        if max_message is None:
            max_message = 2048 if config.transport is SyslogTransport.UDP else 8192
        self.max_message = max_message
        self.max_pending = max_pending
        # "rfc5424", or "local" (syslog(3)'s format) for a /dev/log that only parses
        # that (journald; rsyslog imuxsock with its default special parser).
        if unix_format not in ("rfc5424", "local"):
            raise ValueError(f"unix_format must be 'rfc5424' or 'local': {unix_format!r}")
        self.local_format = unix_format == "local" and config.transport is SyslogTransport.UNIX

        self._sock: socket.socket | None = None
        self._state = _State.CLOSED
        self._stream = config.transport is SyslogTransport.TCP
        self._frame: Callable[[bytes], bytes] = frame_octet_counting if self._stream else frame_lf
        self._connect_started = 0.0
        self._next_attempt = 0.0
        self._backoff = backoff_initial
        # TCP/unix-stream: whole frames not yet written; _head_sent bytes of the first
        # one are already on the wire. Whole frames keep the octet counting intact
        # across partial writes and reconnects.
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._head_sent = 0

        self._sent = 0
        self._dropped = 0
        self._errors = 0
        self._connects = 0
        self._last_error: str | None = None

    # -- public API --

    @property
    def stats(self) -> SenderStats:
        """Counters of delivered and lost messages."""
        return SenderStats(
            self._sent, self._dropped, self._errors, self._connects, self._last_error
        )

    @property
    def pending(self) -> int:
        """Whole frames waiting for a stream socket to accept them."""
        return len(self._pending)

    def format(
        self,
        severity: Severity,
        msg: str,
        *,
        msgid: str | None = None,
        params: Sequence[tuple[str, str]] = (),
        timestamp: float | None = None,
    ) -> bytes:
        """The exact bytes ``send()`` would put in one datagram (before stream framing)."""
        sd = ((self.sd_id, params),) if params else ()
        hostname = self.hostname if self.hostname is not None else socket.gethostname()
        procid = self.procid if self.procid is not None else str(os.getpid())
        stamp = self._wall() if timestamp is None else timestamp
        if self.local_format:
            return format_local(
                facility=self.facility,
                severity=severity,
                timestamp=stamp,
                app_name=self.app_name,
                procid=procid,
                msgid=msgid,
                structured_data=sd,
                msg=msg,
            )[: self.max_message]
        data = format_rfc5424(
            facility=self.facility,
            severity=severity,
            timestamp=stamp,
            hostname=hostname,
            app_name=self.app_name,
            procid=procid,
            msgid=msgid,
            structured_data=sd,
            msg=msg,
        )
        return data[: self.max_message]

    def send(
        self,
        severity: Severity,
        msg: str,
        *,
        msgid: str | None = None,
        params: Sequence[tuple[str, str]] = (),
        timestamp: float | None = None,
    ) -> bool:
        """Send one message; True when handed to the kernel (or queued on a stream).

        Never raises for delivery problems and never blocks on the network.
        """
        try:
            data = self.format(severity, msg, msgid=msgid, params=params, timestamp=timestamp)
        except (ValueError, UnicodeError) as e:  # e.g. a bad facility number
            self._fail_message(f"format: {e}")
            return False
        return self._deliver(data)

    def flush(self) -> None:
        """Try to write frames a stream socket did not take yet (never blocks)."""
        if self._pending and self._ready(self._clock()):
            self._drain()

    def close(self) -> None:
        """Write what a stream socket takes now, then close; the rest counts as dropped."""
        if self._pending and self._state is not _State.CLOSED:
            self.flush()
        self._dropped += len(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._head_sent = 0
        self._disconnect()

    # -- delivery --

    def _deliver(self, data: bytes) -> bool:
        if not self._ready(self._clock()):
            if self._stream:
                # Connecting, or waiting out a backoff: a stream keeps whole frames
                # (bounded) so a collector restart loses nothing.
                return self._enqueue(data)
            self._dropped += 1
            return False
        return self._write(data, retry=True)

    def _write(self, data: bytes, *, retry: bool) -> bool:
        if self._stream:
            ok = self._enqueue(data)
            self._drain()
            return ok
        return self._send_datagram(data, retry=retry)

    def _send_datagram(self, data: bytes, *, retry: bool) -> bool:
        assert self._sock is not None
        try:
            self._sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            # The receiver is alive but its queue is full: drop this one message,
            # keep the connection (reconnecting would not make it faster).
            self._errors += 1
            self._dropped += 1
            self._last_error = "receiver queue full (EAGAIN)"
            return False
        except OSError as e:
            # A restarted syslogd has a new socket at the same path (ECONNREFUSED on
            # the old one): one immediate reconnect usually saves the message; only a
            # second failure starts the backoff.
            self._connection_failed(e, backoff=not retry)
            if retry and self._ready(self._clock()):
                return self._write(data, retry=False)
            self._dropped += 1
            return False
        self._sent += 1
        return True

    def _enqueue(self, data: bytes) -> bool:
        frame = self._frame(data)
        if self._pending_bytes + len(frame) > self.max_pending:
            self._dropped += 1
            self._last_error = "stream buffer full"
            return False
        self._pending.append(frame)
        self._pending_bytes += len(frame)
        return True

    def _drain(self) -> bool:
        """Write buffered frames until the socket would block; False on failure."""
        sock = self._sock
        while self._pending and sock is not None:
            head = self._pending[0]
            try:
                n = sock.send(memoryview(head)[self._head_sent :])
            except BlockingIOError:
                return True
            except OSError as e:
                # Frames stay buffered (the partial one is resent whole on the next
                # connection, the old connection's half of it dies with it).
                self._head_sent = 0
                self._connection_failed(e, backoff=True)
                return False
            self._head_sent += n
            if self._head_sent == len(head):
                self._pending.popleft()
                self._pending_bytes -= len(head)
                self._head_sent = 0
                self._sent += 1
        return True

    # -- connection management --

    def _ready(self, now: float) -> bool:
        """True when the socket is open for writing; connects when it is time to."""
        if self._state is _State.OPEN:
            return True
        if self._state is _State.CONNECTING:
            return self._finish_connect(now)
        if now < self._next_attempt:
            return False
        return self._connect(now)

    def _connect(self, now: float) -> bool:
        cfg = self.config
        try:
            if cfg.transport is SyslogTransport.UNIX:
                self._connect_unix(cfg.address)
            else:
                kind = (
                    socket.SOCK_DGRAM
                    if cfg.transport is SyslogTransport.UDP
                    else socket.SOCK_STREAM
                )
                infos = self._resolver.lookup(cfg.address, cfg.port, kind)
                if infos is None:  # a host name still being resolved off the loop
                    self._next_attempt = now + _RESOLVE_POLL
                    return False
                family, stype, proto, _, addr = infos[0]
                sock = socket.socket(family, stype, proto)
                sock.setblocking(False)
                self._sock = sock
                if kind == socket.SOCK_STREAM:
                    self._stream = True
                    self._frame = frame_octet_counting
                    err = sock.connect_ex(addr)
                    if err not in (0, errno.EINPROGRESS):
                        raise OSError(err, os.strerror(err))
                    if err == errno.EINPROGRESS:
                        self._state = _State.CONNECTING
                        self._connect_started = now
                        return self._finish_connect(now)
                else:
                    self._stream = False
                    sock.connect(addr)
        except OSError as e:
            self._connection_failed(e, backoff=True)
            return False
        self._opened()
        return True

    def _connect_unix(self, path: str) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(path)
        except OSError as e:
            sock.close()
            if e.errno != errno.EPROTOTYPE:
                raise
            # A stream-only log socket (syslog-ng's unix-stream, some containers).
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)  # local: completes or fails at once
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
            self._sock = sock
            self._stream = True
            self._frame = frame_lf
            return
        sock.setblocking(False)
        self._sock = sock
        self._stream = False

    def _finish_connect(self, now: float) -> bool:
        sock = self._sock
        assert sock is not None
        try:
            _, writable, _ = select.select([], [sock], [], 0)
            if not writable:
                if now - self._connect_started >= self.connect_timeout:
                    raise TimeoutError(errno.ETIMEDOUT, "connect timed out")
                return False
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
        except OSError as e:
            self._connection_failed(e, backoff=True)
            return False
        self._opened()
        return True

    def _opened(self) -> None:
        self._state = _State.OPEN
        self._connects += 1
        self._backoff = self.backoff_initial

    def _connection_failed(self, e: OSError, *, backoff: bool) -> None:
        self._errors += 1
        self._last_error = f"{self._describe()}: {e.strerror or e}"
        self._disconnect()
        if backoff:
            self._next_attempt = self._clock() + self._backoff
            self._backoff = min(self._backoff * 2, self.backoff_max)
        else:
            self._next_attempt = 0.0

    def _fail_message(self, why: str) -> None:
        self._errors += 1
        self._dropped += 1
        self._last_error = why

    def _disconnect(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):  # closing our own socket; nothing to do
                self._sock.close()
        self._sock = None
        self._state = _State.CLOSED

    def _describe(self) -> str:
        cfg = self.config
        if cfg.transport is SyslogTransport.UNIX:
            return cfg.address
        return f"{cfg.transport.value}://{cfg.address}:{cfg.port}"
