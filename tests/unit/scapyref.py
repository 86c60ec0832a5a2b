"""The scapy-based capture reading that ``op25b replay`` used before its raw reader.

Kept as the reference the raw reader (``op25b.report.pcapread``) is checked against
(tests/unit/test_pcapread.py) and as the "old replay" of bench/bench_replay.py: scapy
dissects each frame, and the outermost IPv4/IPv6 layer is re-serialised to bytes.
Frames without IP yield None, as the raw reader's do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.utils import PcapReader


def scapy_records(path: str) -> Iterator[tuple[float, bytes | None]]:
    """(timestamp, raw IP bytes or None) of every frame of a pcap/pcapng file."""
    reader: Any = PcapReader(path)
    with reader:
        for pkt in reader:
            layer = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            yield float(pkt.time), (bytes(layer) or None) if layer is not None else None
