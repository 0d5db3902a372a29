"""nfnetlink sockets: send nf_tables batches and read their acknowledgements. The I/O edge.

``send_batch`` commits one batch (one transaction). ``send_chunked`` commits several, one after
the other, for bulk set-element adds (``add_elements``): the kernel's cost per element grows with
the size of the transaction (1M addresses into a hash set with timeouts took 3.2-3.7 s as one
transaction and 1.1-1.4 s as transactions of 25k-100k, on kernel 6.18, whatever the set's size
hint), so an import is sent as transactions of ``CHUNK`` addresses. If one fails, the ones
before it stay applied and the caller is told how many went in (``PartialAdd``).
"""

from __future__ import annotations

import errno as errno_mod
import os
import socket
from typing import Iterable

from ..errors import KernelError, PartialAdd, UnsupportedError
from ..netlink.nftables import NftBatch, element_batches, parse_replies

# Python's socket module has none of these: <linux/netlink.h> and <asm-generic/socket.h>.
NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10   # errors carry the request's header only, not its (up to 64 KB) payload
SO_SNDBUFFORCE = 32    # SO_SNDBUF/SO_RCVBUF past wmem_max/rmem_max, with CAP_NET_ADMIN
SO_RCVBUFFORCE = 33
ACK_RCVBUF = 1 << 24   # room for every ack of a large batch
CHUNK = 50_000         # addresses per transaction of a bulk add (see above)
# What the kernel answers a request naming an expression, target or family it has no code for.
MISSING_FEATURE = frozenset({errno_mod.ENOENT, errno_mod.EOPNOTSUPP, errno_mod.EPROTONOSUPPORT})


class BatchRefused(KernelError):
    """The kernel refused a request of an nf_tables batch (the whole transaction is void).
    ``errno`` and ``request`` say which and why, so callers decide on them, never on text."""

    def __init__(self, message: str, *, errno: int, request: str):
        super().__init__(message)
        self.errno = errno
        self.request = request


class BatchUnsupported(BatchRefused, UnsupportedError):
    """A refusal whose errno means a missing feature (a probe's answer)."""


def open_socket(rcvbuf: int | None = None) -> socket.socket:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except OSError as exc:
        raise KernelError(f"cannot open a netfilter netlink socket: {exc.strerror}") from exc
    try:
        sock.bind((0, 0))
        if rcvbuf:
            set_rcvbuf(sock, rcvbuf)
    except OSError as exc:
        sock.close()
        raise KernelError(f"cannot bind a netfilter netlink socket: {exc.strerror}") from exc
    return sock


def set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Grow the receive buffer (past rmem_max when we have CAP_NET_ADMIN); return the new size."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def _set_sndbuf(sock: socket.socket, size: int) -> None:
    """Room to send ``size`` bytes at once (a netlink datagram goes whole or not at all)."""
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= size:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


# errnos whose strerror() misleads for an nf_tables request
_MEANING = {errno_mod.ENFILE: "the set is full (its size limit)"}


def send_batch(batch: NftBatch, timeout: float = 5.0) -> None:
    """Commit ``batch`` as one transaction. Raises KernelError (UnsupportedError for a missing
    feature) naming the first request the kernel refused."""
    if not len(batch):
        return
    data = batch.to_bytes()
    sock = open_socket()
    try:
        sock.settimeout(timeout)
        _set_sndbuf(sock, len(data) + 4096)
        try:  # every request is acked: room for all the acks, without echoed payloads
            set_rcvbuf(sock, ACK_RCVBUF)
            sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        except OSError:
            pass
        wanted = batch.requests
        sock.sendall(data)
        refused: list[tuple[int, int]] = []
        while wanted:
            try:
                reply = sock.recv(65536)
            except TimeoutError as exc:
                raise KernelError("the kernel did not answer an nf_tables batch within "
                                  f"{timeout:g} s") from exc
            for seq, err in parse_replies(reply):
                what = wanted.pop(seq, None)
                if err and what is not None:
                    refused.append((err, seq))
                    what_failed = what
                    # the transaction is aborted; later requests may not be answered
                    wanted.clear()
                    break
        if refused:
            err, _ = refused[0]
            text = _MEANING.get(err) or os.strerror(err)
            cls = BatchUnsupported if err in MISSING_FEATURE else BatchRefused
            raise cls(f"the kernel refused '{what_failed}': {text} (errno {err}).", errno=err,
                      request=what_failed)
    except OSError as exc:  # (BatchRefused is no OSError: it goes up as it is)
        raise KernelError(f"netlink error while sending an nf_tables batch: {exc}") from exc
    finally:
        sock.close()


def send_chunked(batches: Iterable[NftBatch]) -> None:
    """Commit each batch as a transaction of its own, in order. Raises PartialAdd when one
    fails after others went in (the error of the first goes up as it is)."""
    done = elements = 0
    for batch in batches:
        try:
            send_batch(batch)
        except KernelError as exc:
            if not done:
                raise
            raise PartialAdd(f"{exc} (after {elements} elements went in)", done) from exc
        done += 1
        elements += batch.elements


def add_elements(table: str, groups: list[tuple[str, list[bytes]]],
                 timeout_ms: int | None, chunk: int = CHUNK) -> None:
    """Add packed-address keys to sets of ``inet table`` (``groups``: set name, keys), in
    transactions of ``chunk`` keys. Raises PartialAdd when a transaction fails after others
    went in."""
    send_chunked(element_batches(table, groups, timeout_ms, chunk))


def supported(batch: NftBatch) -> bool:
    """Send a probe transaction (one that leaves nothing behind): True if the kernel took it,
    False if it refused it for a missing feature (by errno). Any other refusal goes up."""
    try:
        send_batch(batch)
    except BatchUnsupported:
        return False
    return True
