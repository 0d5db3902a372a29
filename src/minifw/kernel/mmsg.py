"""recvmmsg(2) for the queue socket: one system call returns a burst of datagrams.

The kernel sends each queued packet as its own netlink datagram, and Python's socket module has
no recvmmsg, so a plain ``recv`` costs one system call (and one 64 KB-capable bytes object) per
packet. This calls the C library's ``recvmmsg`` through ctypes, into one buffer allocated once
with a fixed slot per datagram, with MSG_WAITFORONE: it takes the first datagram and whatever
else is already queued, up to the number of slots.

It never blocks in the receive itself: a signal that lands just before a blocking receive
(after the interpreter last looked for signals) would leave it blocked until the next
datagram, and a stop could hang. It receives without waiting and, only when nothing is
queued, polls the socket together with ``wake_fd``, the descriptor ``signal.set_wakeup_fd``
has the C signal handler write to: a signal that lands at any moment wakes the wait.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import os
import select
import socket
import struct
from typing import Callable

MSG_WAITFORONE = 0x10000
MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0x20)
_FLAGS = MSG_WAITFORONE | MSG_TRUNC | socket.MSG_DONTWAIT


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_LEN_AT = _Mmsghdr.msg_len.offset
_ENTRY = ctypes.sizeof(_Mmsghdr)


def _libc_recvmmsg():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.recvmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_RECVMMSG = _libc_recvmmsg()


def available() -> bool:
    """Whether the C library has recvmmsg (glibc and musl on Linux do)."""
    return _RECVMMSG is not None


class _Waiter:
    """The wait of a receiver whose socket had nothing queued: poll the socket and the signal
    wake-up descriptor (-1: none) together."""

    wake_fd = -1

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._poll: tuple[int, select.poll] | None = None

    def wait(self) -> bool:
        """Block until the socket has something to read or report (False), or a signal's
        handler is due (True: the interpreter runs it as soon as the caller returns to
        Python code). Raises BlockingIOError on a non-blocking socket, as recv would."""
        if not self.sock.getblocking():
            raise BlockingIOError(errno_mod.EAGAIN, os.strerror(errno_mod.EAGAIN))
        if self._poll is None or self._poll[0] != self.wake_fd:
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLIN)
            if self.wake_fd >= 0:
                poller.register(self.wake_fd, select.POLLIN)
            self._poll = (self.wake_fd, poller)
        # a signal during the poll runs its handler here (PEP 475); a handler that raises
        # (the runner's StopRunner) ends the wait with its exception
        events = self._poll[1].poll()
        woken = False
        for fd, _ in events:
            if fd == self.wake_fd:
                drain_wakeups(fd)
                woken = True
        return woken


def drain_wakeups(fd: int) -> None:
    """Empty a signal wake-up descriptor (a non-blocking pipe): its bytes only say "look"."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


class BurstReceiver(_Waiter):
    """``receive()`` returns the datagrams of one recvmmsg call, each a ``bytearray`` copy of
    its slot (so a packet may outlive the next call), in arrival order.

    It waits for the first datagram, and returns an empty burst when a signal arrives first
    (set ``wake_fd`` to the signal wake-up descriptor so that one landing at any moment does),
    so that Python runs the signal handler right after. It raises OSError as ``socket.recv``
    would (ENOBUFS after the kernel dropped messages; EAGAIN on a non-blocking socket). A datagram larger
    than its slot (which the slot sizes the runner picks rule out for queued packets) is
    passed to ``on_truncated`` (its first ``slot_size`` bytes and its real length) and left out
    of the burst.
    """

    def __init__(self, sock: socket.socket, slots: int = 64, slot_size: int = 2048):
        if _RECVMMSG is None:
            raise OSError(errno_mod.ENOSYS, "recvmmsg is not available in this C library")
        super().__init__(sock)  # the socket is kept: its descriptor must stay open
        self.fd = sock.fileno()
        self.slots = slots
        self.slot_size = slot_size
        self.buf = bytearray(slots * slot_size)
        self._cbuf = (ctypes.c_char * len(self.buf)).from_buffer(self.buf)
        base = ctypes.addressof(self._cbuf)
        self._iov = (_Iovec * slots)()
        self._hbuf = bytearray(slots * _ENTRY)
        self._hdrs = (_Mmsghdr * slots).from_buffer(self._hbuf)
        for i in range(slots):
            self._iov[i].iov_base = base + i * slot_size
            self._iov[i].iov_len = slot_size
            self._hdrs[i].msg_hdr.msg_iov = ctypes.pointer(self._iov[i])
            self._hdrs[i].msg_hdr.msg_iovlen = 1
        self._ptr = ctypes.addressof(self._hdrs)
        # the msg_len of every entry, zeroed before each call: the kernel sets those of the
        # datagrams it returns, so the buffer itself says what the last call received, even
        # when a signal's handler raised before its caller saw the count (see last_burst)
        self._msg_lens = memoryview(self._hbuf).cast("I")[_LEN_AT // 4::_ENTRY // 4]
        self._no_lens = memoryview(bytes(4 * slots)).cast("I")
        self._starts = range(0, slots * slot_size, slot_size)
        # the msg_len of the first k entries, in one unpack per call
        self._lengths = [struct.Struct("=" + f"{_LEN_AT}xI{_ENTRY - _LEN_AT - 4}x" * k).unpack_from
                         for k in range(slots + 1)]
        self.on_truncated: Callable[[bytearray, int], None] | None = None
        # the layout a C loop needs to run recvmmsg over these slots itself (hooks/_hot.c)
        self.address = self._ptr  # of the mmsghdr array
        self.lengths = self._hbuf
        self.entry_size = _ENTRY
        self.len_at = _LEN_AT

    def receive_count(self) -> int:
        """One burst into the slots: the number of datagrams received (0 when a signal came
        first). Datagram i is in ``buf`` at ``i * slot_size``; its length is the msg_len of
        entry i in ``lengths`` (``entry_size`` bytes per entry, msg_len at ``len_at``)."""
        # MSG_TRUNC: netlink then reports each datagram's real length, so a datagram larger
        # than its slot shows as a length above the slot size. MSG_DONTWAIT: see the module.
        while True:
            self._msg_lens[:] = self._no_lens
            n = _RECVMMSG(self.fd, self._ptr, self.slots, _FLAGS, None)
            if n > 0:
                return n
            if n == 0:
                return 0
            err = ctypes.get_errno()
            if err == errno_mod.EINTR:
                return 0
            if err != errno_mod.EAGAIN:
                raise OSError(err, os.strerror(err))
            if self.wait():
                return 0

    def datagram(self, i: int) -> bytearray | None:
        """A copy of datagram i of the last call; None (reported) if it did not fit its slot."""
        size = self._lengths[1](self._hbuf, i * _ENTRY)[0]
        at = i * self.slot_size
        if size > self.slot_size:
            if self.on_truncated is not None:
                self.on_truncated(self.buf[at:at + self.slot_size], size)
            return None
        return self.buf[at:at + size]

    def last_burst(self) -> list[bytearray]:
        """The datagrams of the last receive (by the C loop too), read from the buffer: what a
        stop that interrupted their burst must still answer. Empty while waiting."""
        out = []
        for i, size in enumerate(self._msg_lens):
            if not size:
                break
            data = self.datagram(i)
            if data is not None:
                out.append(data)
        return out

    def receive(self) -> list[bytearray]:
        n = self.receive_count()
        if not n:
            return []
        lengths = self._lengths[n](self._hbuf)
        buf = self.buf
        if max(lengths) <= self.slot_size:
            return [buf[at:at + size] for at, size in zip(self._starts, lengths)]
        out = []
        for i in range(n):
            data = self.datagram(i)
            if data is not None:
                out.append(data)
        return out


class RecvLoop(_Waiter):
    """The same interface over plain ``recv`` calls (one system call per datagram), where the C
    library has no recvmmsg: it waits as BurstReceiver does, then receives without waiting."""

    def __init__(self, sock: socket.socket, slots: int = 64, slot_size: int = 2048):
        super().__init__(sock)
        self.slots = slots
        self.slot_size = slot_size
        self.on_truncated: Callable[[bytearray, int], None] | None = None

    _last: list[bytes] = []

    def last_burst(self) -> list[bytes]:
        """The datagrams of the last receive, as far as they were kept (a signal whose handler
        raises right after a recv returned loses that datagram here: recvmmsg has no such gap)."""
        return list(self._last)

    def receive(self) -> list[bytes]:
        recv = self.sock.recv
        self._last = out = []
        while True:
            try:
                out.append(recv(self.slot_size, socket.MSG_DONTWAIT))
                break
            except BlockingIOError:
                if self.wait():
                    return []
        for _ in range(self.slots - 1):
            try:
                out.append(recv(self.slot_size, socket.MSG_DONTWAIT))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # reported by the next blocking receive
        return out
