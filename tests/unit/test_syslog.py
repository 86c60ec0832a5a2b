"""Syslog: the pure RFC 5424 formatter, and the sender against real sockets."""

from __future__ import annotations

import calendar
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from op25b.daemon.syslog import SyslogSender
from op25b.daemon.syslogformat import (
    Severity,
    facility_code,
    format_local,
    format_rfc5424,
    format_structured_data,
    frame_octet_counting,
)
from op25b.policy.model import SyslogConfig, SyslogTransport
from op25b.util.timefmt import format_seconds

T = calendar.timegm((2026, 11, 23, 18, 0, 3)) + 0.412
PARAMS = (("accept", "12"), ("drop", "3"))
EXPECTED = (
    b'<174>1 2026-11-23T18:00:03.412Z edge1 op25b 4242 counters [op25b@32473 accept="12"'
    b' drop="3"] counters: 15 packets'
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def sender(cfg: SyslogConfig, clock: FakeClock | None = None) -> SyslogSender:
    return SyslogSender(
        cfg,
        hostname="edge1",
        procid="4242",
        wall=lambda: T,
        clock=clock or time.monotonic,
    )


def send_counters(s: SyslogSender, msg: str = "counters: 15 packets") -> bool:
    return s.send(Severity.INFO, msg, msgid="counters", params=PARAMS)


# --- pure formatting -----------------------------------------------------------------


def test_format_exact() -> None:
    line = format_rfc5424(
        facility=facility_code("local5"),
        severity=Severity.INFO,
        timestamp=T,
        hostname="edge1",
        app_name="op25b",
        procid="4242",
        msgid="counters",
        structured_data=(("op25b@32473", PARAMS),),
        msg="counters: 15 packets",
    )
    assert line == EXPECTED


def test_format_nil_values_and_no_msg() -> None:
    line = format_rfc5424(
        facility=3,
        severity=Severity.ERR,
        timestamp=None,
        hostname="",
        app_name="op25b",
        procid=None,
        msgid=None,
    )
    assert line == b"<27>1 - - op25b - - -"


def test_format_sanitises_header_and_escapes_sd() -> None:
    line = format_rfc5424(
        facility=21,
        severity=Severity.NOTICE,
        timestamp=0.0,
        hostname="edge 1",
        app_name="op25b",
        procid="1",
        msgid="x" * 40,
        structured_data=(("op25b@32473", (('we"ird]=name', 'a"b\\c]d'),)),),
        msg="blocked 100.64.0.66",
    )
    assert line == (
        b"<173>1 1970-01-01T00:00:00.000Z edge_1 op25b 1 "
        + b"x" * 32
        + b' [op25b@32473 we_ird__name="a\\"b\\\\c\\]d"] blocked 100.64.0.66'
    )


def test_format_utf8_msg_gets_bom() -> None:
    line = format_rfc5424(
        facility=21,
        severity=Severity.INFO,
        timestamp=0.0,
        hostname="h",
        app_name="a",
        procid="1",
        msgid="m",
        msg="Zürich",
    )
    assert line.endswith(b"- \xef\xbb\xbfZ\xc3\xbcrich")


def test_structured_data_empty_is_nil() -> None:
    assert format_structured_data(()) == "-"


def test_timestamp_rounds_to_written_millisecond() -> None:
    assert format_seconds(T) == "2026-11-23T18:00:03.412Z"
    assert format_seconds(0.0) == "1970-01-01T00:00:00.000Z"


def test_facility_names() -> None:
    assert facility_code("local5") == 21
    assert facility_code("daemon") == 3
    with pytest.raises(ValueError, match="local0"):
        facility_code("local9")


def test_octet_counting_frame() -> None:
    assert frame_octet_counting(b"<14>1 - - - - - - hi") == b"20 <14>1 - - - - - - hi"


# --- real sockets ---------------------------------------------------------------------


def test_unix_dgram(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(2)
    s = sender(SyslogConfig(SyslogTransport.UNIX, path))
    try:
        assert send_counters(s)
        assert rx.recv(65536) == EXPECTED
        assert s.send(Severity.NOTICE, "new blocked source 100.64.0.66", msgid="blocked")
        assert rx.recv(65536) == (
            b"<173>1 2026-11-23T18:00:03.412Z edge1 op25b 4242 blocked -"
            b" new blocked source 100.64.0.66"
        )
        assert s.stats.sent == 2 and s.stats.dropped == 0 and s.stats.connects == 1
    finally:
        s.close()
        rx.close()


def test_unix_dgram_receiver_restart(tmp_path: Path) -> None:
    """A restarted syslogd (new socket, same path) gets the very next message."""
    path = str(tmp_path / "log")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    s = sender(SyslogConfig(SyslogTransport.UNIX, path))
    assert send_counters(s)
    rx.close()
    Path(path).unlink()
    rx2 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx2.bind(path)
    rx2.settimeout(2)
    try:
        assert send_counters(s)
        assert rx2.recv(65536) == EXPECTED
        assert s.stats.connects == 2 and s.stats.send_errors == 1
    finally:
        s.close()
        rx2.close()


def test_unix_dgram_full_receiver_does_not_block(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    s = sender(SyslogConfig(SyslogTransport.UNIX, path))
    try:
        t0 = time.monotonic()
        results = [send_counters(s) for _ in range(5000)]  # nobody reads: queue fills
        assert time.monotonic() - t0 < 5
        assert not all(results)
        st = s.stats
        assert st.sent + st.dropped == 5000 and st.connects == 1
        assert st.last_error is not None and "EAGAIN" in st.last_error
    finally:
        s.close()
        rx.close()


def test_unix_stream_fallback(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(2)
    s = sender(SyslogConfig(SyslogTransport.UNIX, path))
    try:
        assert send_counters(s)
        assert send_counters(s, "two\nlines")
        conn, _ = srv.accept()
        conn.settimeout(2)
        data = b""
        while data.count(b"\n") < 2:
            data += conn.recv(65536)
        second = EXPECTED.replace(b"counters: 15 packets", b"two lines")
        assert data == EXPECTED + b"\n" + second + b"\n"
        conn.close()
    finally:
        s.close()
        srv.close()


def test_udp() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    port = rx.getsockname()[1]
    s = sender(SyslogConfig(SyslogTransport.UDP, "127.0.0.1", port))
    try:
        assert send_counters(s)
        assert rx.recv(65536) == EXPECTED
    finally:
        s.close()
        rx.close()


def test_udp_v6_and_truncation() -> None:
    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        rx.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    rx.settimeout(2)
    s = sender(SyslogConfig(SyslogTransport.UDP, "::1", rx.getsockname()[1]))
    try:
        assert send_counters(s, "x" * 5000)
        data = rx.recv(65536)
        assert len(data) == 2048 and data.startswith(EXPECTED[:60])
    finally:
        s.close()
        rx.close()


class TcpCollector:
    """A TCP syslog receiver that parses RFC 6587 octet-counted frames."""

    def __init__(self, port: int = 0) -> None:
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", port))
        self.srv.listen(4)
        self.port: int = self.srv.getsockname()[1]
        self.messages: list[bytes] = []
        self.got = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.srv.accept()
        except OSError:
            return
        buf = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b" " in buf:
                    length, _, rest = buf.partition(b" ")
                    n = int(length)
                    if len(rest) < n:
                        break
                    with self.got:
                        self.messages.append(rest[:n])
                        self.got.notify_all()
                    buf = rest[n:]

    def wait(self, count: int, timeout: float = 3.0) -> list[bytes]:
        with self.got:
            self.got.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def close(self) -> None:
        self.srv.close()
        self.thread.join(2)


@pytest.fixture
def collector() -> Iterator[TcpCollector]:
    c = TcpCollector()
    yield c
    c.close()


def wait_sent(s: SyslogSender, count: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while s.stats.sent < count and time.monotonic() < deadline:
        s.flush()
        time.sleep(0.01)


def test_tcp_octet_counting(collector: TcpCollector) -> None:
    s = sender(SyslogConfig(SyslogTransport.TCP, "127.0.0.1", collector.port))
    try:
        assert send_counters(s)
        assert send_counters(s, "multi\nline")
        wait_sent(s, 2)
        msgs = collector.wait(2)
        assert msgs == [EXPECTED, EXPECTED.replace(b"counters: 15 packets", b"multi\nline")]
    finally:
        s.close()


def test_tcp_collector_down_then_up() -> None:
    """Nothing listening: send() neither raises nor blocks; frames wait, then arrive."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # a port with no listener: connection refused
    clock = FakeClock()
    s = sender(SyslogConfig(SyslogTransport.TCP, "127.0.0.1", port), clock)
    try:
        t0 = time.monotonic()
        for _ in range(3):
            send_counters(s)
            s.flush()
        assert time.monotonic() - t0 < 1
        assert s.stats.sent == 0 and s.stats.send_errors >= 1 and s.pending == 3
        assert s.stats.last_error is not None and str(port) in s.stats.last_error
        collector = TcpCollector(port)
        try:
            clock.t += 120  # past any backoff
            send_counters(s)
            wait_sent(s, 4)
            assert collector.wait(4) == [EXPECTED] * 4
        finally:
            s.close()  # first, so the collector's reader sees EOF
            collector.close()
    finally:
        s.close()


def test_send_failure_never_raises_and_backs_off(tmp_path: Path) -> None:
    clock = FakeClock()
    s = sender(SyslogConfig(SyslogTransport.UNIX, str(tmp_path / "nothing-here")), clock)
    assert send_counters(s) is False
    assert s.stats.send_errors == 1 and s.stats.dropped == 1
    # Within the backoff no connect is attempted (errors stay 1), messages are dropped.
    for _ in range(10):
        assert send_counters(s) is False
    assert s.stats.send_errors == 1 and s.stats.dropped == 11
    clock.t += 1.0  # first backoff (1 s) over: one more attempt, then 2 s backoff
    assert send_counters(s) is False
    assert s.stats.send_errors == 2
    clock.t += 1.5
    assert send_counters(s) is False
    assert s.stats.send_errors == 2
    # The receiver appears: after the backoff the next message goes through.
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(tmp_path / "nothing-here"))
    rx.settimeout(2)
    try:
        clock.t += 1.0
        assert send_counters(s)
        assert rx.recv(65536) == EXPECTED
    finally:
        s.close()
        rx.close()


def test_bad_host_does_not_raise() -> None:
    s = sender(SyslogConfig(SyslogTransport.UDP, "no-such-host.invalid", 514))
    assert send_counters(s) is False  # the name is being resolved on a thread
    deadline = time.monotonic() + 30
    while s.stats.send_errors == 0:  # await the failed lookup (each send looks)
        assert time.monotonic() < deadline
        s._next_attempt = 0.0  # skip the poll delay, not the lookup
        assert send_counters(s) is False
        time.sleep(0.01)
    assert s.stats.send_errors == 1
    assert "no-such-host.invalid" in (s.stats.last_error or "")
    s.close()


def test_a_slow_resolver_never_blocks_send(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real = socket.getaddrinfo

    def slow(host: str, *args: object, **kw: object) -> list[tuple[object, ...]]:
        if host == "collector.example" and not kw.get("flags"):
            release.wait(30)  # a resolver that hangs until released
            return real("127.0.0.1", *args, **kw)  # type: ignore[arg-type]
        return real(host, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    s = sender(SyslogConfig(SyslogTransport.UDP, "collector.example", receiver.getsockname()[1]))
    t0 = time.monotonic()
    assert send_counters(s) is False
    assert time.monotonic() - t0 < 1.0  # not waiting for the 30 s resolver
    release.set()
    deadline = time.monotonic() + 10
    while not send_counters(s):
        assert time.monotonic() < deadline
        s._next_attempt = 0.0
        time.sleep(0.01)
    assert b"counters" in receiver.recv(65536)
    s.close()
    receiver.close()


def test_bad_facility_raises_at_construction() -> None:
    with pytest.raises(ValueError):
        SyslogSender(SyslogConfig(facility="local42"))


def test_local_format_for_dev_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        line = format_local(
            facility=21,
            severity=Severity.NOTICE,
            timestamp=T,
            app_name="op25b",
            procid="4242",
            msgid="blocked",
            structured_data=(("op25b@32473", (("packets", "1"),)),),
            msg="new blocked source 100.64.0.66",
        )
        assert line == (
            b'<173>Nov 23 18:00:03 op25b[4242]: blocked [op25b@32473 packets="1"]'
            b" new blocked source 100.64.0.66"
        )
        path = str(tmp_path / "log")
        rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        rx.bind(path)
        rx.settimeout(2)
        s = SyslogSender(
            SyslogConfig(SyslogTransport.UNIX, path),
            procid="4242",
            wall=lambda: T,
            unix_format="local",
        )
        try:
            assert s.send(Severity.INFO, "x", msgid="counters", params=PARAMS)
            assert rx.recv(4096) == (
                b'<174>Nov 23 18:00:03 op25b[4242]: counters [op25b@32473 accept="12" drop="3"] x'
            )
        finally:
            s.close()
            rx.close()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
