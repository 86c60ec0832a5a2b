"""The netfilter queue binding: the only module that imports ``netfilterqueue``.

It owns the queue socket and the per-packet verdict path. Every packet gets exactly one
verdict, whatever happens in parsing or deciding: a packet left without one keeps its
queue slot until the queue fills and the kernel starts dropping everything.

Verdict encoding (see ``op25b.kernel.rules`` for the matching kernel rules):

* drop   -> NF_DROP.
* accept -> our ACCEPT mark + NF_REPEAT: the packet walks FORWARD again and returns from
  the OP25B chain, so the administrator's own FORWARD rules still apply to it (an NF_ACCEPT
  would skip them).
* reject -> our REJECT mark + NF_REPEAT into a ``REJECT --reject-with tcp-reset`` rule,
  because a queue verdict itself can only be accept, drop or repeat.

Only the mark bits under ``MARK_MASK`` are ours; others' bits are carried over because
``set_mark`` replaces the whole mark.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from netfilterqueue import COPY_PACKET, NetfilterQueue, Packet

from op25b.dataplane.verdicts import VERDICT_DROP, VERDICT_REJECT
from op25b.kernel.names import ACCEPT_MARK, REJECT_MARK, verdict_mark

# Enough for IPv4 with options (60) + TCP's first 20 bytes, and IPv6 (40) with a few
# extension headers; the kernel copies only this much into our socket per packet.
COPY_RANGE = 256
# Queue length in the kernel; a burst beyond this is dropped by the kernel (counted in
# /proc/net/netfilter/nfnetlink_queue as queue_dropped).
DEFAULT_MAXLEN = 8192
SOCK_RCVBUF = 8 * 1024 * 1024
_SOL_NETLINK = 270
_NETLINK_NO_ENOBUFS = 5


# At most this many packets per process() call. Under a flood the socket never runs
# dry, and netfilterqueue's run(block=False) would then never return: no signals,
# no watchdog, no counters. The kernel sends one netlink message per packet, so
# stopping between callbacks leaves no packet half handled.
MAX_BATCH = 2048

# handler(payload) -> one of the VERDICT_* ints; it must not raise (the binding still
# guards against it and applies ``on_error``).
Handler = Callable[[bytes], int]


class _BatchFull(Exception):
    """Raised from the callback (after the verdict) to end one process() call."""


class QueueBinding:
    """One bound queue: ``fileno()`` for select, ``process()`` to drain what is pending."""

    def __init__(
        self, queue_num: int, handler: Handler, on_error: int, maxlen: int = DEFAULT_MAXLEN
    ) -> None:
        self.queue_num = queue_num
        self._handler = handler
        self._on_error = on_error
        self.callback_errors = 0
        self._batch = 0
        self._nfq = NetfilterQueue()
        self._nfq.bind(queue_num, self._callback, maxlen, COPY_PACKET, COPY_RANGE, SOCK_RCVBUF)
        self._sock = socket.fromfd(self._nfq.get_fd(), socket.AF_NETLINK, socket.SOCK_RAW)
        # Without this a full socket buffer makes recv() fail with ENOBUFS; drops are
        # read from /proc instead, which counts them exactly.
        self._sock.setsockopt(_SOL_NETLINK, _NETLINK_NO_ENOBUFS, 1)

    def fileno(self) -> int:
        """The netlink socket's fd, for select/poll."""
        return self._nfq.get_fd()

    def process(self) -> bool:
        """Handle packets already queued to us, without blocking.

        Returns True when it stopped at MAX_BATCH (more are probably waiting).
        """
        self._batch = 0
        try:
            self._nfq.run(block=False)
        except _BatchFull:
            return True
        return False

    def close(self) -> None:
        """Unbind; the kernel then applies --queue-bypass (the fallback rules)."""
        self._nfq.unbind()
        self._sock.close()

    def _callback(self, pkt: Packet) -> None:
        try:
            verdict = self._handler(pkt.get_payload())
        except Exception:
            # The handler is written not to raise; this is the last guard so that a bug
            # never leaves a packet without a verdict.
            self.callback_errors += 1
            verdict = self._on_error
        if verdict == VERDICT_DROP:
            pkt.drop()
        else:
            ours = REJECT_MARK if verdict == VERDICT_REJECT else ACCEPT_MARK
            pkt.set_mark(verdict_mark(pkt.get_mark(), ours))
            pkt.repeat()
        self._batch += 1
        if self._batch >= MAX_BATCH:
            raise _BatchFull
