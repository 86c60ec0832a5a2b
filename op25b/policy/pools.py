"""Pool files: the text of a ``prefixes_file`` -> its prefixes as parallel columns.

Owns the pool-file format (one prefix per line, '#' comments, blank lines ignored)
and its two parsers: a fast one, so a million-line file loads in seconds, and a
careful one that finds and words the first bad line. Reading the file and placing a
complaint in the policy stay with ``op25b.policy.loader``; this module knows no YAML, so a
bad line comes back as ``PoolLineError`` (line, column, message) for the loader to
turn into a ``PolicyError``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import NamedTuple

from op25b.errors import InputError
from op25b.policy import addr
from op25b.policy.model import Prefix
from op25b.util.slices import lines_in_slices

_PREFIX_LENGTHS = {str(n): n for n in range(129)}
_POOL_CHUNK = 65536  # pool file lines parsed per batch
# The longest prefix text is 49 characters (an IPv6 address with a dotted IPv4 tail,
# then /128); room for surrounding spaces, but a 200 MB "line" must not be quoted whole.
_LONGEST_PREFIX = 100
_V4_MAPPED = 0xFFFF  # the top 96 bits of ::ffff:0:0/96


class PoolLineError(InputError):
    """The first bad line of a pool file: 1-based line and column, and what is wrong."""

    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(line, col, message)
        self.line = line
        self.col = col
        self.message = message


class Pool(NamedTuple):
    """A parsed pool file as parallel lists (no per-line objects but the Prefix)."""

    lines: list[int]
    cols: list[int]
    versions: list[int]
    values: list[int]
    lengths: list[int]


def parse_pool(text: str, progress: Callable[[int], None] | None = None) -> Pool:
    """Parse a pool file; PoolLineError names its first bad line.

    ``progress`` (optional) hears the prefixes parsed so far after each chunk of
    65536 lines: ``op25b run`` tells systemd how far a long load has come.
    """
    return _parse_pool_fast(text, progress) or _parse_pool_careful(text)


def _parse_pool_fast(text: str, progress: Callable[[int], None] | None) -> Pool | None:
    """Parse a pool file whose lines are all well-formed, else None.

    A million lines must load in seconds, so this runs as list comprehensions over C
    string methods and inet_pton instead of a per-line Python loop with branches; any
    irregular line makes it give up and the careful path decides. Chunks keep the
    intermediate lists (three strings per line) from tripling peak memory.
    """
    pool = Pool([], [], [], [], [])
    first = 0
    # Sliced (not one text.split) so a reload thread never holds the interpreter for
    # long; see op25b.util.slices.
    for raw in lines_in_slices(text):
        for offset in range(0, len(raw), _POOL_CHUNK):
            if not _parse_pool_chunk(raw[offset : offset + _POOL_CHUNK], first + offset, pool):
                return None
            if progress is not None:
                progress(len(pool.values))
        first += len(raw)
    return pool


def _parse_pool_chunk(raw: list[str], first: int, pool: Pool) -> bool:
    """Append one chunk of lines (0-based line ``first`` onwards) to ``pool``."""
    cleaned = [line.partition("#")[0].strip() for line in raw]
    numbers = [i for i, c in enumerate(cleaned) if c]
    parts = [cleaned[i].partition("/") for i in numbers]
    versions = [6 if ":" in a else 4 for a, _, _ in parts]
    pton, af4, af6, from_bytes = socket.inet_pton, socket.AF_INET, socket.AF_INET6, int.from_bytes
    table = _PREFIX_LENGTHS
    try:
        values = [
            from_bytes(pton(af6 if v == 6 else af4, a), "big")
            for (a, _, _), v in zip(parts, versions, strict=True)
        ]
        lengths = [
            table[n] if slash else (128 if v == 6 else 32)
            for (_, slash, n), v in zip(parts, versions, strict=True)
        ]
    except (OSError, KeyError, ValueError):  # ValueError: NUL or surrogate characters
        return False
    for v, value, length in zip(versions, values, lengths, strict=True):
        width = 128 if v == 6 else 32
        if length > width or value & ((1 << (width - length)) - 1):
            return False
        if width == 128 and length >= 96 and value >> 32 == _V4_MAPPED:
            return False  # IPv4-mapped: the careful parser words the refusal
    pool.lines.extend([first + i + 1 for i in numbers])
    pool.cols.extend([len(line) - len(line.lstrip()) + 1 for line in map(raw.__getitem__, numbers)])
    pool.versions.extend(versions)
    pool.values.extend(values)
    pool.lengths.extend(lengths)
    return True


def _parse_pool_careful(text: str) -> Pool:
    """Parse a pool file line by line; the first bad line is a PoolLineError.

    addr.parse_prefix decides and words every complaint, so pool files and inline
    prefixes follow exactly the same rules.
    """
    pool = Pool([], [], [], [], [])
    for lineno, raw in enumerate(text.split("\n"), 1):
        s = raw.partition("#")[0]
        t = s.strip()
        if not t:
            continue
        col = len(s) - len(s.lstrip()) + 1
        try:
            if len(t) > _LONGEST_PREFIX:
                raise ValueError(f"not an IP prefix: {_shown(t)}")
            if any(c.isspace() for c in t):
                raise ValueError(f"one prefix per line, got {t!r}")
            prefix = parse_prefix(t)
        except ValueError as exc:
            raise PoolLineError(lineno, col, str(exc)) from None
        pool.lines.append(lineno)
        pool.cols.append(col)
        pool.versions.append(prefix.version)
        pool.values.append(prefix.network)
        pool.lengths.append(prefix.length)
    return pool


def _shown(text: str) -> str:
    """A value too long to be a prefix, quoted by its start and its length."""
    return f"{text[:40]!r}... ({len(text)} characters)"


def parse_prefix(text: str) -> Prefix:
    """``addr.parse_prefix`` (strict), worded about the value for NUL or non-ASCII.

    An IPv4-mapped IPv6 prefix (``::ffff:100.64.0.0/112``) is refused: no packet on
    the wire carries one (an IPv4 packet has IPv4 addresses), so it would match nothing
    and the subscribers it was meant for would go unguarded.
    """
    if len(text) > _LONGEST_PREFIX:
        raise ValueError(f"not an IP prefix: {_shown(text)}")
    if not text.isascii() or "\0" in text:
        raise ValueError(f"not an IP prefix: {text!r}")
    prefix = addr.parse_prefix(text, strict=True)
    if prefix.version == 6 and prefix.length >= 96 and prefix.network >> 32 == _V4_MAPPED:
        v4 = Prefix(4, prefix.network & 0xFFFFFFFF, prefix.length - 96)
        write = (
            f"prefix {addr.prefix_text(v4)}"
            if "/" in text
            else f"address {addr.format_address(4, v4.network)}"
        )
        raise ValueError(
            f"IPv4-mapped address in {text!r} never appears in a packet; write the IPv4 {write}"
        )
    return prefix
