"""The NFQUEUE socket: bind queues, configure them, receive packets, send verdicts.

The codec (minifw.netlink.nfqueue) does all the encoding; this module only moves bytes.
"""

from __future__ import annotations

import errno as errno_mod
import os
import socket

from ..errors import KernelError, UnsupportedError
from ..netlink.nfqueue import (
    DEFAULT_MAXLEN, Ack, CfgFlag, CopyMode, NfqueueCodec, Refused,
)
from . import mmsg
from .nfnl import open_socket, set_rcvbuf

RCVBUF_START = 4 << 20
RCVBUF_MAX = 64 << 20


class QueueSocket:
    """One netlink socket serving any number of queues."""

    def __init__(self, rcvbuf: int = RCVBUF_START):
        self.codec = NfqueueCodec()
        self.sock = open_socket(rcvbuf)
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.enobufs = 0
        self.queues: list[int] = []

    def close(self) -> None:
        for q in list(self.queues):
            try:
                self._request(self.codec.unbind(q))
            except KernelError:
                pass
        self.queues.clear()
        self.sock.close()

    def _request(self, data: bytes, timeout: float = 5.0) -> None:
        """Send config requests and wait for every acknowledgement; raise on the first refusal."""
        wanted = set(self.codec.pending())
        self.sock.settimeout(timeout)
        try:
            self.sock.send(data)
            while wanted:
                for ev in self.codec.receive_data(self.sock.recv(65536)):
                    if isinstance(ev, Ack):
                        wanted.discard(ev.seq)
                    elif isinstance(ev, Refused):
                        for seq in wanted:  # drop the rest; they are moot now
                            self.codec._pending.pop(seq, None)
                        cls = UnsupportedError if ev.errno in (
                            errno_mod.EOPNOTSUPP, errno_mod.ENOENT) else KernelError
                        raise _Refusal(ev.errno, cls(
                            f"the kernel refused to {ev.request}: {os.strerror(ev.errno)}."))
                    # a packet queued meanwhile is left to the serve loop: the next batch
                    # verdict of its queue answers it
        except TimeoutError as exc:
            raise KernelError("the kernel did not answer a queue configuration request") from exc
        except OSError as exc:
            raise KernelError(f"netlink error while configuring a queue: {exc}") from exc
        finally:
            self.sock.settimeout(None)

    def bind(self, queue: int, copy_range: int, fail_open: bool,
             maxlen: int = DEFAULT_MAXLEN) -> None:
        """Bind ``queue`` with header-only (or full) copies, GSO and the fail-open choice."""
        try:
            self._request(self.codec.bind(queue))
        except _Refusal as r:
            if r.errno == errno_mod.EBUSY:
                raise QueueBusy(queue) from None
            raise r.error from None
        self.queues.append(queue)
        flags = CfgFlag.GSO | (CfgFlag.FAIL_OPEN if fail_open else CfgFlag(0))
        try:
            self._request(self.codec.params(queue, CopyMode.PACKET, copy_range)
                          + self.codec.maxlen(queue, maxlen)
                          + self.codec.flags(queue, flags, CfgFlag.GSO | CfgFlag.FAIL_OPEN))
        except _Refusal as r:
            raise r.error from None

    def enable_conntrack(self, queue: int) -> bool:
        """Ask for conntrack info on queued packets; False where the kernel cannot
        (CONFIG_NETFILTER_NETLINK_GLUE_CT unset answers EOPNOTSUPP)."""
        try:
            self._request(self.codec.flags(queue, CfgFlag.CONNTRACK, CfgFlag.CONNTRACK))
        except _Refusal as r:
            if r.errno == errno_mod.EOPNOTSUPP:
                return False
            raise r.error from None
        return True

    def receiver(self, slot_size: int, slots: int = 64) -> "mmsg.BurstReceiver | mmsg.RecvLoop":
        """What the serve loop receives with: ``receive()`` returns a burst of datagrams, up to
        ``slots``, each up to ``slot_size`` bytes (recvmmsg(2), one system call per burst;
        plain recv calls where the C library lacks recvmmsg)."""
        if mmsg.available():
            return mmsg.BurstReceiver(self.sock, slots, slot_size)
        return mmsg.RecvLoop(self.sock, slots, slot_size)

    def grow_rcvbuf(self) -> int:
        """After ENOBUFS (the kernel could not deliver some packets): a bigger buffer."""
        self.enobufs += 1
        if self.rcvbuf < RCVBUF_MAX:
            self.rcvbuf = set_rcvbuf(self.sock, min(self.rcvbuf * 2, RCVBUF_MAX))
        return self.rcvbuf


class QueueBusy(KernelError):
    def __init__(self, queue: int):
        super().__init__(f"queue {queue} is already bound by another process.")
        self.queue = queue


class _Refusal(KernelError):
    def __init__(self, errno: int, error: KernelError):
        super().__init__(str(error))
        self.errno = errno
        self.error = error
