"""Connect-latency prober for bench_flood.py, run inside a lab namespace.

``python bench/flood_probe.py SRC DST PORT --count N`` opens N TCP connections one after
another and, at the end, prints one JSON object: ``{"samples": [[start, seconds|null,
outcome], ...]}``. *start* is ``time.monotonic()`` (system-wide, so the parent can line
samples up with its own clock), *seconds* the connect() time (SYN to SYN-ACK, i.e. the
round trip including the firewall's verdict).

With ``--until-signal`` it runs until SIGTERM instead and prints ``READY`` after the
first sample, so the parent can start a reload while probes are in flight.

Each connection is closed with SO_LINGER 0 (an RST): no FIN handshake and no TIME_WAIT
state to pile up over hundreds of probes, and the next probe is not slowed by a close.
A probe that times out is recorded with ``null`` seconds and outcome ``timeout``.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import time
from types import FrameType

_stop = False


def _on_term(_signum: int, _frame: FrameType | None) -> None:
    global _stop
    _stop = True  # only a flag: the loop finishes its probe and prints the results


def probe(src: str, dst: str, port: int, timeout: float) -> tuple[float, float | None, str]:
    """One connect: (start, seconds or None, outcome)."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.settimeout(timeout)
    sock.bind((src, 0))
    start = time.monotonic()
    try:
        sock.connect((dst, port))
        return start, time.monotonic() - start, "connected"
    except TimeoutError:
        return start, None, "timeout"
    except OSError as exc:
        return start, None, type(exc).__name__
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    """Probe, then print the JSON result."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("port", type=int)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--interval", type=float, default=0.0, help="pause between probes (s)")
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--warmup", type=int, default=0, help="unrecorded connects first")
    ap.add_argument("--until-signal", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="hard bound")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)
    samples: list[tuple[float, float | None, str]] = []
    deadline = time.monotonic() + args.max_seconds
    # First connects pay for neighbour resolution and cold caches, not the firewall.
    for _ in range(args.warmup):
        probe(args.src, args.dst, args.port, args.timeout)
    while not _stop and time.monotonic() < deadline:
        if not args.until_signal and len(samples) >= args.count:
            break
        samples.append(probe(args.src, args.dst, args.port, args.timeout))
        if len(samples) == 1 and args.until_signal:
            print("READY", flush=True)
        if args.interval:
            time.sleep(args.interval)
    print(json.dumps({"samples": samples}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
