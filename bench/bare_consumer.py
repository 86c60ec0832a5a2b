"""The baseline for bench_flood.py: a bare netfilterqueue consumer with no policy at all.

Run inside the lab router (``ip netns exec RTR python bench/bare_consumer.py``). It binds
the queue with exactly the parameters ``op25b.kernel.nfq.QueueBinding`` uses (queue length,
copy range, socket buffer, NETLINK_NO_ENOBUFS), prints ``READY`` once bound and gives
every packet the same verdict without looking at it. ``run(block=True)`` keeps the
recv/verdict loop inside netfilterqueue's C code: this is the most a Python process
bound to one queue can do, so op25b's rate divided by this one is the cost of the
policy, logging and the daemon loop. SIGTERM ends it (default action; unbinding is
what process exit does anyway).
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netfilterqueue import COPY_PACKET, NetfilterQueue, Packet

from op25b.kernel.nfq import COPY_RANGE, DEFAULT_MAXLEN, SOCK_RCVBUF

_SOL_NETLINK = 270
_NETLINK_NO_ENOBUFS = 5


def _accept(pkt: Packet) -> None:
    pkt.accept()


def _drop(pkt: Packet) -> None:
    pkt.drop()


def main(argv: list[str] | None = None) -> int:
    """Bind, say READY, serve until killed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--queue", type=int, default=0)
    ap.add_argument("--verdict", choices=("accept", "drop"), default="accept")
    args = ap.parse_args(argv)
    nfq = NetfilterQueue()
    callback = _accept if args.verdict == "accept" else _drop
    nfq.bind(args.queue, callback, DEFAULT_MAXLEN, COPY_PACKET, COPY_RANGE, SOCK_RCVBUF)
    sock = socket.fromfd(nfq.get_fd(), socket.AF_NETLINK, socket.SOCK_RAW)
    # Same as op25b: overflow shows up in /proc as user_dropped instead of ENOBUFS errors.
    sock.setsockopt(_SOL_NETLINK, _NETLINK_NO_ENOBUFS, 1)
    print("READY", flush=True)
    try:
        nfq.run(block=True)
    finally:
        nfq.unbind()
    return 0


if __name__ == "__main__":
    sys.exit(main())
