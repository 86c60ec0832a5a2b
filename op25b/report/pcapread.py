"""Raw pcap/pcapng reading: records in, (timestamp, IP bytes) out, no dissection.

Owns the two capture file formats. ``Capture`` reads a file in 1 MiB chunks with
``struct.unpack_from`` (no per-packet objects but the slice of IP bytes handed to
``op25b.dataplane.packet.parse``), so a replay costs what the daemon's parser and
``decide`` cost, not what a dissector costs: measured (bench/bench_replay.py) 0.44 µs
per record for pcap and 0.7 µs for pcapng, where the old scapy-based replay spent
~137 µs per record in all.

Formats: classic pcap in both byte orders, micro- and nanosecond magic; pcapng
sections (SHB, either byte order, several per file), interface descriptions (IDB:
link type, snap length, ``if_tsresol``, ``if_tsoffset``) and the three packet blocks
(EPB, SPB, the obsolete PB); other blocks are skipped by their length.
The link layers are ``op25b.report.linklayer``'s; frames of any other link type are
counted in ``Capture.unsupported_links`` and yield no IP.

Hostile input: every length is checked before it is used. A wrong magic, a record or
block length beyond sane bounds, a pcapng block length below its minimum or not a
multiple of 4 (0 would make the reader loop in place), or a trailing length that
disagrees is a ``CaptureError`` naming the file, the record number and the byte offset.
A capture that simply stops inside its last record (a capture cut off while being
written) is not an error: the bytes that are there are yielded and ``Capture.truncated``
says what was missing, so everything before it still counts.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

from op25b.errors import InputError
from op25b.report.linklayer import SUPPORTED_LINKS, ip_bytes

__all__ = ["MAX_BLOCK", "MAX_RECORD", "Capture", "CaptureError", "Record"]

#: A classic pcap record or pcapng packet longer than this is refused: libpcap's own
#: upper bound for a snapshot length (262144) is far above any real frame.
MAX_RECORD = 262_144
#: The largest pcapng block read (libpcap's limit too); name resolution and custom
#: blocks can be large, packets never are.
MAX_BLOCK = 16 * 1024 * 1024

_CHUNK = 1 << 20

#: (timestamp in seconds, the IP packet's bytes or None when the frame carries no IP)
Record = tuple[float, bytes | None]
ProgressFn = Callable[[int], None]


class CaptureError(InputError):
    """The capture file cannot be read; the message names the file and the place."""


# ------------------------------------------------------------------------ formats

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_PCAPNG_BOM = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}

_BT_SHB = 0x0A0D0D0A
_BT_IDB = 1
_BT_PB = 2
_BT_SPB = 3
_BT_EPB = 6
_OPT_TSRESOL = 9
_OPT_TSOFFSET = 14


class Capture:
    """One capture file; iterate ``records()`` once, then read the notes below.

    ``truncated``: None, or what was missing when the file ended inside a record.
    ``unsupported_links``: link type -> frames of that type (they yield no IP).
    ``size``: the file's size in bytes, or None when it is not a regular file.
    """

    def __init__(self, path: str, progress: ProgressFn | None = None) -> None:
        self.path = path
        self.progress = progress
        self.truncated: str | None = None
        self.unsupported_links: dict[int, int] = {}
        self.size: int | None = None

    def _fail(self, index: int, offset: int, what: str, unit: str = "block") -> CaptureError:
        # pcapng is made of blocks (packets are some of them); pcap of records.
        return CaptureError(f"{self.path}: {unit} {index} at offset {offset}: {what}")

    def records(self) -> Iterator[Record]:
        """Every record of the file, in file order."""
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed in the finally below
        except OSError as e:
            raise CaptureError(f"{self.path}: cannot read capture: {e.strerror or e}") from e
        try:
            st = os.fstat(f.fileno())
            if stat.S_ISREG(st.st_mode):
                self.size = st.st_size
            head = self._read(f, 24)
            magic = head[:4]
            if magic in _PCAP_MAGICS:
                yield from self._pcap(f, head)
            elif magic == _PCAPNG_SHB:
                yield from self._pcapng(f, head)
            elif not head:
                raise CaptureError(f"{self.path}: cannot read capture: the file is empty")
            else:
                raise CaptureError(
                    f"{self.path}: cannot read capture: not a pcap or pcapng file "
                    f"(magic {head[:4].hex() or 'missing'})"
                )
        finally:
            f.close()

    def _read(self, f: BinaryIO, n: int) -> bytes:
        try:
            return f.read(n)
        except OSError as e:
            raise CaptureError(f"{self.path}: cannot read capture: {e.strerror or e}") from e

    def _unsupported(self, linktype: int, frames: int = 1) -> None:
        self.unsupported_links[linktype] = self.unsupported_links.get(linktype, 0) + frames

    # -- classic pcap ------------------------------------------------------------

    def _pcap(self, f: BinaryIO, head: bytes) -> Iterator[Record]:
        order, scale = _PCAP_MAGICS[head[:4]]
        if len(head) < 24:
            raise CaptureError(
                f"{self.path}: cannot read capture: pcap file header cut short "
                f"({len(head)} of 24 bytes)"
            )
        linktype = struct.unpack_from(order + "I", head, 20)[0] & 0x03FFFFFF
        supported = linktype in SUPPORTED_LINKS
        unpack = struct.Struct(order + "IIII").unpack_from
        progress = self.progress
        buf = b""
        base = 24  # file offset of buf[0]
        off = 0
        index = 0
        while True:
            more = self._read(f, _CHUNK)
            if progress is not None:
                progress(f.tell())
            if not more:
                break
            buf = buf[off:] + more
            base += off
            off = 0
            end = len(buf)
            # The hot loop: one unpack, one bounds check, one slice per record.
            while end - off >= 16:
                sec, frac, caplen, _ = unpack(buf, off)
                if caplen > MAX_RECORD:
                    raise self._fail(
                        index + 1,
                        base + off,
                        f"captured length {caplen} exceeds {MAX_RECORD} bytes",
                        "record",
                    )
                stop = off + 16 + caplen
                if stop > end:
                    break
                index += 1
                if supported:
                    yield sec + frac * scale, ip_bytes(linktype, buf, off + 16, stop)
                else:
                    self._unsupported(linktype)
                    yield sec + frac * scale, None
                off = stop
        left = len(buf) - off
        if left:
            # The file ends inside a record: keep what is there, say what is missing.
            index += 1
            where = f"record {index} at offset {base + off}"
            if left < 16:
                self.truncated = f"{where}: record header cut short ({left} of 16 bytes)"
                return
            sec, frac, caplen, _ = unpack(buf, off)
            self.truncated = f"{where}: {left - 16} of {caplen} captured bytes present"
            if supported:
                yield sec + frac * scale, ip_bytes(linktype, buf, off + 16, len(buf))
            else:
                self._unsupported(linktype)
                yield sec + frac * scale, None

    # -- pcapng ------------------------------------------------------------------

    def _pcapng(self, f: BinaryIO, head: bytes) -> Iterator[Record]:
        progress = self.progress
        buf = head
        base = 0
        off = 0
        index = 0  # blocks, for messages: a record is a block in pcapng
        order = "<"
        hdr = struct.Struct("<II").unpack_from
        u32 = struct.Struct("<I").unpack_from
        epb = struct.Struct("<IIIII").unpack_from
        # Per interface of the current section: (link type, snap length, ts scale, offset)
        ifaces: list[tuple[int, int, float, float]] = []
        eof = False
        while True:
            end = len(buf)
            need = 12  # the block header, then the whole block
            if end - off >= 12:
                btype, blen = hdr(buf, off)
                if btype == _BT_SHB:  # a palindrome: the same in either byte order
                    # A new section: its byte-order magic says how to read all in it.
                    bom = buf[off + 8 : off + 12]
                    if bom not in _PCAPNG_BOM:
                        raise self._fail(index + 1, base + off, f"bad byte-order magic {bom.hex()}")
                    order = _PCAPNG_BOM[bom]
                    hdr = struct.Struct(order + "II").unpack_from
                    u32 = struct.Struct(order + "I").unpack_from
                    epb = struct.Struct(order + "IIIII").unpack_from
                    ifaces = []
                    btype, blen = hdr(buf, off)
                if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                    raise self._fail(index + 1, base + off, f"bad block length {blen}")
                need = blen
            if end - off < need:
                if not eof:
                    more = self._read(f, max(_CHUNK, need))
                    if progress is not None:
                        progress(f.tell())
                    buf = buf[off:] + more
                    base += off
                    off = 0
                    eof = not more
                    continue
                if end > off:  # the file ends inside this block
                    index += 1
                    yield from self._pcapng_cut(buf, off, base, index, need, ifaces, epb)
                return
            stop = off + blen
            index += 1
            (trail,) = u32(buf, stop - 4)
            if trail != blen:
                raise self._fail(
                    index, base + off, f"block length {blen} but trailing length {trail}"
                )
            if btype in (_BT_EPB, _BT_PB):
                iface, ts_hi, ts_lo, caplen, _ = epb(buf, off + 8)
                if btype == _BT_PB:  # a 16-bit interface id, then a 16-bit drop count
                    iface = iface & 0xFFFF if order == "<" else iface >> 16
                linktype, _, scale, tsoffset = (
                    ifaces[iface]
                    if iface < len(ifaces)
                    else self._link(ifaces, iface, index, base + off)
                )
                if caplen > MAX_RECORD or 32 + caplen > blen:
                    raise self._fail(
                        index,
                        base + off,
                        f"captured length {caplen} does not fit block length {blen}",
                    )
                yield (
                    ((ts_hi << 32) | ts_lo) * scale + tsoffset,
                    ip_bytes(linktype, buf, off + 28, off + 28 + caplen)
                    if linktype in SUPPORTED_LINKS
                    else self._payload(linktype, buf, off + 28, off + 28 + caplen),
                )
            elif btype == _BT_SPB:
                yield self._simple(buf, off, base, index, ifaces, blen, order)
            elif btype == _BT_IDB:
                ifaces.append(self._interface(buf, off, base, index, blen, order))
            elif btype == _BT_SHB and blen < 28:
                raise self._fail(index, base + off, f"section header block length {blen} < 28")
            off = stop

    def _interface(
        self, buf: bytes, off: int, base: int, index: int, blen: int, order: str
    ) -> tuple[int, int, float, float]:
        if blen < 20:
            raise self._fail(index, base + off, f"interface block length {blen} < 20")
        linktype, snaplen = struct.unpack_from(order + "HxxI", buf, off + 8)
        scale, tsoffset = 1e-6, 0.0
        p, stop = off + 16, off + blen - 4
        while stop - p >= 4:
            code, olen = struct.unpack_from(order + "HH", buf, p)
            if code == 0:
                break
            p += 4
            if olen > stop - p:
                raise self._fail(index, base + off, f"interface option {code} overruns its block")
            if code == _OPT_TSRESOL and olen >= 1:
                r = buf[p]
                exp = r & 0x7F
                if exp > 63:  # 2**-127 or 10**-127 are not clocks; refuse them
                    raise self._fail(index, base + off, f"absurd timestamp resolution {r:#x}")
                scale = 2.0**-exp if r & 0x80 else 10.0**-exp
            elif code == _OPT_TSOFFSET and olen >= 8:
                tsoffset = float(struct.unpack_from(order + "q", buf, p)[0])
            p += (olen + 3) & ~3
        if linktype not in SUPPORTED_LINKS:
            self._unsupported(linktype, 0)
        return linktype, snaplen, scale, tsoffset

    def _link(
        self, ifaces: list[tuple[int, int, float, float]], iface: int, index: int, at: int
    ) -> tuple[int, int, float, float]:
        if iface >= len(ifaces):
            raise self._fail(index, at, f"packet on interface {iface}, which was never described")
        return ifaces[iface]

    def _payload(self, linktype: int, buf: bytes, start: int, stop: int) -> bytes | None:
        if linktype in SUPPORTED_LINKS:
            return ip_bytes(linktype, buf, start, stop)
        self._unsupported(linktype)
        return None

    def _simple(
        self,
        buf: bytes,
        off: int,
        base: int,
        index: int,
        ifaces: list[tuple[int, int, float, float]],
        blen: int,
        order: str,
    ) -> Record:
        linktype, snaplen, _, _ = self._link(ifaces, 0, index, base + off)
        (origlen,) = struct.unpack_from(order + "I", buf, off + 8)
        caplen = min(origlen, blen - 16, snaplen or MAX_RECORD)
        # A simple packet block has no timestamp.
        return 0.0, self._payload(linktype, buf, off + 12, off + 12 + caplen)

    def _pcapng_cut(
        self,
        buf: bytes,
        off: int,
        base: int,
        index: int,
        need: int,
        ifaces: list[tuple[int, int, float, float]],
        epb: Callable[[bytes, int], tuple[int, ...]],
    ) -> Iterator[Record]:
        """The file ends inside block ``index``: yield what a packet block still has."""
        have = len(buf) - off
        where = f"block {index} at offset {base + off}"
        if have < 12:
            self.truncated = f"{where}: block header cut short ({have} of 12 bytes)"
            return
        self.truncated = f"{where}: {have} of {need} block bytes present"
        if have >= 28 and epb(buf, off)[0] == _BT_EPB:
            iface, ts_hi, ts_lo, caplen, _ = epb(buf, off + 8)
            linktype, _, scale, tsoffset = self._link(ifaces, iface, index, base + off)
            ts = ((ts_hi << 32) | ts_lo) * scale + tsoffset
            yield ts, self._payload(linktype, buf, off + 28, min(off + 28 + caplen, len(buf)))
