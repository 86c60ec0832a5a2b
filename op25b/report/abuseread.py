"""Reading abuse logs: files in, validated ``Record`` objects out.

Owns the reader's side of docs/abuse-log-format.md: opening plain, rotated and
compressed files (gzip, bzip2 or xz, told by magic bytes, not by name), validating each
``blocked_source`` line, skipping truncated and malformed lines with a ``Problem`` that
says why (and recovering a record glued after a crash-truncated one), reading several
files (routers) as one stream, and the log's timestamps, including the --since/--until
forms. Merging records into per-source state is ``op25b.report.botscore``.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from op25b.errors import InputError

# Per-file cap on problem lines printed, so a wrong file (a pcap, a binary) given by
# mistake yields a short note instead of a million lines of stderr.
MAX_PROBLEMS_PER_FILE = 20
# Longest line read as a record: DuckDB's own default (read_json maximum_object_size),
# so both engines draw the line in the same place -- a longer line makes DuckDB give
# the file to this reader, which skips it. Bounds memory too: a gzip bomb of one
# endless line must not be read into memory whole.
MAX_LINE_BYTES = 16 * 1024 * 1024
_TAIL_STARTS_TRIED = 16  # '{"' tried per line for a record glued after a stub
ACTIONS = frozenset({"drop", "reject", "monitor"})


class ReportError(InputError):
    """A problem that stops the report (bad argument, unreadable file): exit 2."""


# --------------------------------------------------------------------------- time


def parse_timestamp(text: str) -> int:
    """A record timestamp (ISO 8601 with a zone) -> epoch milliseconds; ValueError."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        # The format says UTC with 'Z'; a zoneless time would be a producer bug, and
        # guessing a zone would silently shift every window.
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return _to_ms(dt)


def _to_ms(dt: datetime) -> int:
    # timestamp() is C and a float holds epoch ms exactly for millennia; round() undoes
    # the binary fraction (x.412 s * 1000 may come out as 411.99999).
    return round(dt.timestamp() * 1000)


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_time_arg(text: str, now: datetime) -> int:
    """--since/--until value -> epoch ms: ISO time, date (UTC midnight), ``24h``, ``7d``."""
    m = _RELATIVE.match(text)
    if m:
        return _to_ms(now) - round(float(m.group(1)) * _UNIT_S[m.group(2)] * 1000)
    if text.strip().lower() == "now":
        return _to_ms(now)
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 time or date, nor an age like 24h or 7d: {text!r}"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # the logs are UTC; a bare date means a UTC day
    return _to_ms(dt)


# ------------------------------------------------------------------------ records


@dataclass(frozen=True, slots=True)
class Record:
    """One ``blocked_source`` line, validated; times in epoch milliseconds."""

    router: str
    source: str
    family: int
    plan: str
    action: str
    rule: str | None
    window_start: int
    window_end: int
    first_seen: int
    last_seen: int
    packets: int
    distinct_destinations: int
    destinations_sample: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """A skipped line (or file part), printed as ``file:line: message``."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


def _str(obj: dict[str, Any], key: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v:
        raise ValueError(f"{key}: expected a non-empty string, got {v!r}")
    return v


def _count(obj: dict[str, Any], key: str) -> int:
    v = obj.get(key)
    # bool is an int subclass; True packets would be a producer bug, not 1.
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{key}: expected a non-negative integer, got {v!r}")
    return v


def _time(obj: dict[str, Any], key: str) -> int:
    v = _str(obj, key)
    try:
        return parse_timestamp(v)
    except ValueError:
        raise ValueError(f"{key}: not an ISO 8601 UTC timestamp: {v!r}") from None


def record_from_json(obj: object) -> Record | None:
    """Validate one decoded line; None for other record types; ValueError if invalid."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    rtype = obj.get("type")
    if rtype != "blocked_source":
        if isinstance(rtype, str):
            return None  # a record type added later: not ours to count, not an error
        raise ValueError(f"type: expected a string, got {rtype!r}")
    if obj.get("version") != 1:
        raise ValueError(f"version: unsupported {obj.get('version')!r} (this reader knows 1)")
    family = obj.get("family")
    if family not in (4, 6) or isinstance(family, bool):
        raise ValueError(f"family: expected 4 or 6, got {family!r}")
    action = _str(obj, "action")
    if action not in ACTIONS:
        raise ValueError(f"action: expected drop, reject or monitor, got {action!r}")
    rule = obj.get("rule")
    if rule is not None and not isinstance(rule, str):
        raise ValueError(f"rule: expected a string or null, got {rule!r}")
    sample = obj.get("destinations_sample")
    if not isinstance(sample, list) or not all(isinstance(d, str) for d in sample):
        raise ValueError("destinations_sample: expected a list of strings")
    rec = Record(
        router=_str(obj, "router"),
        source=_str(obj, "source"),
        family=family,
        plan=_str(obj, "plan"),
        action=action,
        rule=rule,
        window_start=_time(obj, "window_start"),
        window_end=_time(obj, "window_end"),
        first_seen=_time(obj, "first_seen"),
        last_seen=_time(obj, "last_seen"),
        packets=_count(obj, "packets"),
        distinct_destinations=_count(obj, "distinct_destinations"),
        destinations_sample=tuple(sample),
    )
    if rec.window_end < rec.window_start or rec.last_seen < rec.first_seen:
        raise ValueError("times out of order (window_end < window_start or last < first)")
    return rec


# ------------------------------------------------------------------------ reading

_GZIP_MAGIC = b"\x1f\x8b"
_BZ2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"


def open_log(path: str) -> io.BufferedIOBase:
    """Open a log for binary reading, decompressing by magic bytes (not by name).

    logrotate's ``delaycompress`` leaves ``.1`` plain and ``.2.gz`` compressed, and a
    ``compresscmd`` can change the format, so names are no guide. ReportError if the
    file cannot be opened.
    """
    try:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a directory, not an abuse log") from None
    except OSError as e:
        raise ReportError(f"{path}: cannot open: {e.strerror or e}") from None
    try:
        head = raw.read(6)
        raw.seek(0)
    except OSError as e:
        raw.close()
        raise ReportError(f"{path}: cannot read: {e.strerror or e}") from None
    kind = _kind(head)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


def _kind(head: bytes) -> str:
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_BZ2_MAGIC):
        return "bzip2"
    if head.startswith(_XZ_MAGIC):
        return "xz"
    return "none"


def compression_of(path: str) -> str:
    """``gzip``, ``bzip2``, ``xz`` or ``none``, by magic bytes; ReportError if unreadable."""
    open_log(path).close()  # the same clear errors as reading it would give
    try:
        with open(path, "rb") as f:
            return _kind(f.read(6))
    except OSError as e:
        raise ReportError(f"{path}: cannot read: {e.strerror or e}") from None


def _decode(line: bytes) -> object:
    try:
        return json.loads(line.decode("utf-8"))
    except RecursionError:  # '[[[[...' deeper than the interpreter's stack
        raise ValueError("nested too deeply") from None


def _lines(stream: io.BufferedIOBase) -> Iterator[bytes | None]:
    """The file's lines, each at most MAX_LINE_BYTES; None for a longer one (dropped)."""
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) <= MAX_LINE_BYTES:
            yield line
            continue
        # Read the rest of the over-long line away in bounded pieces.
        while not line.endswith(b"\n"):
            line = stream.readline(MAX_LINE_BYTES)
            if not line:
                break
        yield None


def _recover_tail(line: bytes) -> Record | None:
    """A record glued after a crash-truncated one (restart appended to the stub).

    Try the later ``{"`` as the start of a complete record that runs to the end of
    the line; nested objects (``ports``) fail validation or leave trailing text. From
    the right, and only the last few: a record holds two ``{"`` (itself, ``ports``),
    and a hostile line of a million nested starts must not cost a parse for each.
    """
    text = line.decode("utf-8", errors="replace")
    decoder = json.JSONDecoder()
    pos = text.rfind('{"', 1)
    for _ in range(_TAIL_STARTS_TRIED):
        if pos == -1:
            break
        try:
            obj, end = decoder.raw_decode(text, pos)
            if not text[end:].strip():
                rec = record_from_json(obj)
                if rec is not None:
                    return rec
        except ValueError:
            pass
        except RecursionError:  # nested past the stack: not a record of ours
            pass
        pos = text.rfind('{"', 1, pos)
    return None


def read_log(
    path: str, on_record: Callable[[Record], None], on_problem: Callable[[Problem], None]
) -> int:
    """Stream one file's records to ``on_record``; return the number of lines read.

    Skipped lines go to ``on_problem`` and nothing else is lost: a last line without
    its newline is a write cut short by a crash ("truncated"), a bad line elsewhere is
    "malformed" or "invalid". ReportError only when the file cannot be opened or read.
    """
    shown = 0
    hidden = 0

    def problem(lineno: int | None, message: str) -> None:
        nonlocal shown, hidden
        if shown < MAX_PROBLEMS_PER_FILE:
            shown += 1
            on_problem(Problem(path, lineno, message))
        else:
            hidden += 1

    lineno = 0
    with open_log(path) as stream:
        try:
            for line in _lines(stream):
                lineno += 1
                if line is None:
                    problem(lineno, f"line longer than {MAX_LINE_BYTES} bytes skipped")
                    continue
                if not line.strip():
                    continue
                complete = line.endswith(b"\n")
                try:
                    obj = _decode(line)
                except (ValueError, UnicodeDecodeError) as e:
                    if not complete:
                        problem(lineno, "truncated record skipped")
                        continue
                    tail = _recover_tail(line)
                    if tail is not None:
                        problem(
                            lineno,
                            "truncated record skipped (the record appended after it "
                            "on the same line was kept)",
                        )
                        on_record(tail)
                    else:
                        problem(lineno, f"malformed record skipped: {_json_reason(e)}")
                    continue
                try:
                    rec = record_from_json(obj)
                except ValueError as e:
                    problem(lineno, f"invalid record skipped: {e}")
                    continue
                if rec is not None:
                    on_record(rec)
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError, lzma.LZMAError) as e:
            # A compressed file cut short (copy interrupted) or corrupt: keep what
            # decompressed cleanly, say where it stopped.
            problem(None, f"unreadable after line {lineno}, rest of file skipped: {e}")
    if hidden:
        on_problem(Problem(path, None, f"{hidden} more skipped lines not shown"))
    return lineno


def read_logs(
    paths: Sequence[str],
    on_record: Callable[[Record], None],
    on_problem: Callable[[Problem], None],
) -> None:
    """Stream every file's records, in the order given, as if one log.

    ReportError (before any record is streamed) if one of the files cannot be opened.
    """
    # Open every file once first: a typo in the last of ten names should fail in a
    # second, not after reading nine files.
    for path in paths:
        open_log(path).close()
    for path in paths:
        read_log(path, on_record, on_problem)


def _json_reason(e: Exception) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} at column {e.colno}"
    return str(e)
