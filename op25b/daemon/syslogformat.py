"""Syslog's wire formats, pure and clock-free: RFC 5424, the classic local header,
and the stream framings (RFC 6587 octet counting, LF).

The caller passes every value, the timestamp included, so the bytes are testable
exactly; ``op25b.daemon.syslog`` sends them.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence

from op25b.policy.model import SYSLOG_FACILITIES
from op25b.util.timefmt import format_seconds

APP_NAME = "op25b"
# 32473 is the private enterprise number RFC 5612 reserves for documentation and
# examples; an operator with their own PEN can pass another sd_id.
SD_ID = "op25b@32473"
NILVALUE = "-"


class Severity(enum.IntEnum):
    """RFC 5424 severities; op25b uses NOTICE (newly blocked source), INFO (counters),
    WARNING (degraded: kernel drops, log write failures) and ERR (reload failed)."""

    EMERG = 0
    ALERT = 1
    CRIT = 2
    ERR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7


FACILITIES = SYSLOG_FACILITIES


def facility_code(name: str) -> int:
    """The numeric facility for a name such as ``local5``; ValueError names the choices."""
    try:
        return FACILITIES[name.strip().lower()]
    except KeyError:
        choices = ", ".join(FACILITIES)
        raise ValueError(f"unknown syslog facility {name!r} (one of: {choices})") from None


# --- pure formatting ------------------------------------------------------------------


def _header_field(value: str | None, limit: int) -> str:
    # Header fields are 1*N PRINTUSASCII (33..126); anything else would shift every
    # following field for the receiver's parser, so it is replaced, not passed on.
    if not value:
        return NILVALUE
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value[:limit])
    return cleaned or NILVALUE


def _sd_name(name: str) -> str:
    # SD-NAME: 1*32 PRINTUSASCII except '=', SP, ']' and '"'.
    cleaned = "".join(c if 33 <= ord(c) <= 126 and c not in '=]"' else "_" for c in name[:32])
    return cleaned or "_"


def _sd_value(value: str) -> str:
    # PARAM-VALUE is UTF-8 with '"', '\' and ']' escaped by a backslash (RFC 5424 6.3.3).
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def format_structured_data(
    elements: Sequence[tuple[str, Sequence[tuple[str, str]]]],
) -> str:
    """``[id name="value" ...][...]``, or ``-`` when there are no elements."""
    if not elements:
        return NILVALUE
    parts = []
    for sd_id, params in elements:
        body = "".join(f' {_sd_name(k)}="{_sd_value(v)}"' for k, v in params)
        parts.append(f"[{_sd_name(sd_id)}{body}]")
    return "".join(parts)


def format_rfc5424(
    *,
    facility: int,
    severity: Severity,
    timestamp: float | None,
    hostname: str | None,
    app_name: str | None,
    procid: str | None,
    msgid: str | None,
    structured_data: Sequence[tuple[str, Sequence[tuple[str, str]]]] = (),
    msg: str = "",
) -> bytes:
    """One RFC 5424 message: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]``.

    ``timestamp`` is seconds since the epoch (None writes the NILVALUE). A non-ASCII
    MSG is sent as UTF-8 with the BOM RFC 5424 6.4 requires; a plain ASCII MSG is sent
    without one, because ASCII is valid MSG-ANY and receivers that keep the BOM (rsyslog
    does) would otherwise prefix every logged line with it.
    """
    if not 0 <= facility <= 23:
        raise ValueError(f"syslog facility out of range: {facility}")
    pri = facility * 8 + int(severity)
    head = " ".join(
        (
            f"<{pri}>1",
            format_seconds(timestamp) if timestamp is not None else NILVALUE,
            _header_field(hostname, 255),
            _header_field(app_name, 48),
            _header_field(procid, 128),
            _header_field(msgid, 32),
            format_structured_data(structured_data),
        )
    )
    out = head.encode("utf-8")
    if msg:
        out += b" "
        out += msg.encode("ascii") if msg.isascii() else b"\xef\xbb\xbf" + msg.encode("utf-8")
    return out


def format_local(
    *,
    facility: int,
    severity: Severity,
    timestamp: float,
    app_name: str,
    procid: str | None,
    msgid: str | None,
    structured_data: Sequence[tuple[str, Sequence[tuple[str, str]]]] = (),
    msg: str = "",
) -> bytes:
    """The traditional local format syslog(3) writes: ``<PRI>Mmm dd hh:mm:ss APP[PID]: ...``.

    For a ``/dev/log`` owned by systemd-journald or by rsyslog's imuxsock with its
    default special parser: both read only this shape and would file an RFC 5424 line
    under app name ``1``. MSGID and structured data lead the message text so nothing
    is lost. Local time, like syslog(3); those receivers stamp their own time anyway.
    """
    if not 0 <= facility <= 23:
        raise ValueError(f"syslog facility out of range: {facility}")
    pri = facility * 8 + int(severity)
    stamp = time.strftime("%b %e %H:%M:%S", time.localtime(timestamp))
    tag = _header_field(app_name, 32)
    if procid:
        tag += f"[{_header_field(procid, 16)}]"
    parts = []
    if msgid:
        parts.append(_header_field(msgid, 32))
    if structured_data:
        parts.append(format_structured_data(structured_data))
    if msg:
        parts.append(msg)
    return f"<{pri}>{stamp} {tag}: {' '.join(parts)}".encode()


def frame_octet_counting(message: bytes) -> bytes:
    """RFC 6587 3.4.1 octet-counting frame: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d %s" % (len(message), message)


def frame_lf(message: bytes) -> bytes:
    """Non-transparent framing (RFC 6587 3.4.2) for unix stream sockets: LF-terminated.

    An embedded LF would split the message, so it is replaced by a space.
    """
    return message.replace(b"\n", b" ") + b"\n"
