"""Reading a BPF ringbuf map from userspace: the consumer page is mapped read-write (we advance
consumer_pos), the producer page and the data read-only. The data area is mapped twice in a
row, so a record that wraps around the end is still contiguous.

Record: an 8-byte header ``u32 len | BUSY (1<<31) | DISCARD (1<<30), u32 page offset``, then
``len`` bytes, the whole rounded up to 8 bytes (kernel/bpf/ringbuf.c)."""

from __future__ import annotations

import contextlib
import mmap
import select
import struct

from .maps import Map
from .sys import BpfError

BUSY = 1 << 31
DISCARD = 1 << 30
HEADER = 8


class RingbufReader:
    """Records of a ringbuf map, in order. ``discarded`` counts records the program reserved
    and then discarded. Records the program could not reserve (the buffer full) are not seen
    here: a program counts those itself (``lost``, kept for callers that add to it)."""

    def __init__(self, ringbuf: Map):
        if ringbuf.spec.kind != "ringbuf":
            raise BpfError(f"map {ringbuf.spec.name!r} is a {ringbuf.spec.kind}, not a ringbuf")
        self.map = ringbuf
        self.size = ringbuf.spec.max_entries
        self.mask = self.size - 1
        self.discarded = 0
        self.lost = 0
        page = mmap.PAGESIZE
        try:
            self._consumer = mmap.mmap(ringbuf.fd, page, mmap.MAP_SHARED,
                                       mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._producer = mmap.mmap(ringbuf.fd, page + 2 * self.size, mmap.MAP_SHARED,
                                       mmap.PROT_READ, offset=page)
        except (OSError, ValueError) as exc:
            self.close()
            raise BpfError(f"cannot map ringbuf {ringbuf.spec.name!r}: {exc}") from exc
        self._data = page
        self._epoll = select.epoll()
        self._epoll.register(ringbuf.fd, select.EPOLLIN)

    def fileno(self) -> int:
        """An fd that turns readable when records arrive (for a caller's own poll loop)."""
        return self._epoll.fileno()

    def read(self) -> list[bytes]:
        """The records available now, consumed."""
        out: list[bytes] = []
        cons, = struct.unpack_from("<Q", self._consumer, 0)
        prod, = struct.unpack_from("<Q", self._producer, 0)
        while cons < prod:
            at = self._data + (cons & self.mask)
            length, = struct.unpack_from("<I", self._producer, at)
            if length & BUSY:  # reserved, not yet submitted: it and what follows wait
                break
            size = length & ~(BUSY | DISCARD)
            if length & DISCARD:
                self.discarded += 1
            else:
                out.append(self._producer[at + HEADER:at + HEADER + size])
            cons += (size + HEADER + 7) & ~7
            # the kernel reads consumer_pos to find free space: publish as we go
            struct.pack_into("<Q", self._consumer, 0, cons)
            if cons >= prod:
                prod, = struct.unpack_from("<Q", self._producer, 0)
        return out

    def poll(self, timeout_s: float) -> list[bytes]:
        """Records, waiting up to ``timeout_s`` for the first (0: do not wait)."""
        records = self.read()
        if records or timeout_s <= 0:
            return records
        with contextlib.suppress(InterruptedError):
            self._epoll.poll(timeout_s)
        return self.read()

    def close(self) -> None:
        for name in ("_consumer", "_producer", "_epoll"):
            obj = getattr(self, name, None)
            if obj is not None:
                obj.close()
                setattr(self, name, None)

    def __enter__(self) -> "RingbufReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
