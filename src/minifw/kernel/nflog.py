"""The NFLOG socket: bind one group in the caller's network namespace and read its packets.

The codec (minifw.netlink.nflog) does the encoding and decoding; this module moves bytes. The
kernel batches: it sends a datagram once ``qthreshold`` packets wait, the group's buffer
(``nlbufsiz``) is full, or ``timeout_ms`` passed since the first; one datagram then carries
hundreds of packets, and a burst receive (recvmmsg) takes several datagrams per system call.
When the receive buffer overflows, the kernel drops datagrams and reports ENOBUFS once: the
reader counts it (``overruns``), keeps reading, and the sequence numbers the kernel puts on
every packet tell exactly how many were lost (``lost``).
"""

from __future__ import annotations

import errno as errno_mod
import os
import select
import socket

from ..errors import KernelError, PacketError
from ..netlink.nflog import (
    HEADER_COPY_RANGE, NLBUFSIZ_MAX, CfgFlag, CopyMode, NflogDecoder, NflogPacket,
)
from . import mmsg
from .nfnl import open_socket, set_rcvbuf

RCVBUF = 32 << 20
RCVBUF_MAX = 256 << 20
NLBUFSIZ = 65536
SLOTS = 16           # datagrams per recvmmsg call
BATCH = 4096         # packets per receive(), about: a reader under a flood comes back often


class GroupBusy(KernelError):
    def __init__(self, group: int):
        super().__init__(f"NFLOG group {group} is already bound by another socket "
                         "(ulogd or another minifw?).")
        self.group = group


class NflogSocket:
    """One NFLOG group, bound for the life of the object (``close()`` unbinds it)."""

    def __init__(self, group: int, *, copy_range: int = HEADER_COPY_RANGE,
                 qthreshold: int = 1000, timeout_ms: int = 100, rcvbuf: int = RCVBUF,
                 nlbufsiz: int = NLBUFSIZ):
        self.group = group
        self.decoder = NflogDecoder()
        self.overruns = 0     # ENOBUFS reports: episodes of loss
        self.received = 0     # packets decoded
        self.malformed = 0    # datagrams the codec refused (skipped)
        self.truncated = 0    # datagrams larger than a receive slot (skipped)
        self.bound = False
        self._early: list[NflogPacket] = []  # packets that came with config answers
        self.sock = open_socket(rcvbuf)
        try:
            self._configure(group, copy_range, qthreshold, timeout_ms,
                            min(max(nlbufsiz, 4096), NLBUFSIZ_MAX))
            self.sock.setblocking(False)
        except BaseException:
            self.close()
            raise
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # the kernel fills a batch up to its skb's real tailroom: the buffer size rounded up
        # to the allocator's next power of two, so a datagram may be nearly twice nlbufsiz
        slot = 2 * max(nlbufsiz, copy_range + 1024) + 4096
        self._receiver = (mmsg.BurstReceiver(self.sock, SLOTS, slot) if mmsg.available()
                          else mmsg.RecvLoop(self.sock, SLOTS, slot))
        self._receiver.on_truncated = self._truncated
        self._poll = select.poll()
        self._poll.register(self.sock.fileno(), select.POLLIN)

    def _configure(self, group: int, copy_range: int, qthreshold: int, timeout_ms: int,
                   nlbufsiz: int) -> None:
        d = self.decoder
        try:
            self._request(d.bind(group))
        except _Refusal as r:
            # the kernel answers EBUSY (bound by another socket) or EPERM (another owner)
            if r.errno in (errno_mod.EBUSY, errno_mod.EPERM):
                raise GroupBusy(group) from None
            raise r.error from None
        self.bound = True
        try:
            self._request(d.mode(group, CopyMode.PACKET, copy_range)
                          + d.nlbufsiz(group, nlbufsiz)
                          + d.timeout(group, max(1, (timeout_ms + 5) // 10))
                          + d.qthreshold(group, max(1, qthreshold))
                          + d.flags(group, CfgFlag.SEQ))
        except _Refusal as r:
            raise r.error from None

    def _request(self, data: bytes, timeout: float = 5.0) -> None:
        """Send config requests, wait for every answer; raise on the first refusal. Packets
        that arrive meanwhile are kept for the next receive()."""
        d = self.decoder
        wanted = set(d.pending())
        self.sock.settimeout(timeout)
        try:
            self.sock.send(data)
            while wanted:
                self._early += d.receive_data(self.sock.recv(NLBUFSIZ_MAX))
                for seq, err, what in d.replies:
                    wanted.discard(seq)
                    if err:
                        for other in wanted:
                            d.forget(other)
                        d.replies.clear()
                        raise _Refusal(err, KernelError(
                            f"the kernel refused to {what}: {os.strerror(err)}."))
                d.replies.clear()
        except TimeoutError as exc:
            raise KernelError("the kernel did not answer an NFLOG configuration request") \
                from exc
        except OSError as exc:
            raise KernelError(f"netlink error while configuring NFLOG: {exc}") from exc
        finally:
            self.sock.settimeout(None)

    @property
    def lost(self) -> int:
        """Packets logged to the group that never reached us (exact, from sequence gaps)."""
        return self.decoder.lost

    def fileno(self) -> int:
        return self.sock.fileno()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until something is queued (True) or ``timeout`` seconds pass (False)."""
        return bool(self._poll.poll(None if timeout is None else int(timeout * 1000)))

    def receive(self, most: int = BATCH) -> list[NflogPacket]:
        """The packets queued now, up to about ``most`` (a datagram is never split): never
        blocks, [] only when nothing is queued. A reader calls it until [] so that it handles
        a backlog in slices, each written out before the next is read."""
        out, self._early = self._early, []
        decode = self.decoder.receive_data
        receive = self._receiver.receive
        while len(out) < most:
            try:
                burst = receive()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno_mod.ENOBUFS:
                    raise KernelError(f"cannot read the NFLOG socket: {exc.strerror}") from exc
                self._overrun()
                continue
            for data in burst:
                try:
                    out += decode(data)
                except PacketError:
                    self.malformed += 1
            if len(burst) < SLOTS:
                break
        self.received += len(out)
        return out

    def _truncated(self, _head: bytearray, _size: int) -> None:
        # its packets are lost; the next datagram's sequence numbers count them
        self.truncated += 1

    def _overrun(self) -> None:
        """The kernel dropped datagrams: count it, and give the buffer room to grow."""
        self.overruns += 1
        if self.rcvbuf < RCVBUF_MAX:
            self.rcvbuf = set_rcvbuf(self.sock, min(self.rcvbuf * 2, RCVBUF_MAX))

    def close(self) -> None:
        if self.sock.fileno() < 0:
            return
        if self.bound:
            try:
                self.sock.setblocking(True)
                self._request(self.decoder.unbind(self.group))
            except KernelError:
                pass  # closing the socket unbinds it too
            self.bound = False
        self.sock.close()

    def __enter__(self) -> "NflogSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Refusal(KernelError):
    def __init__(self, errno: int, error: KernelError):
        super().__init__(str(error))
        self.errno = errno
        self.error = error
