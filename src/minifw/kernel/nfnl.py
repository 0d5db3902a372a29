"""nfnetlink sockets: send an nf_tables batch and read its acknowledgements. The I/O edge."""

from __future__ import annotations

import errno as errno_mod
import os
import socket

from ..errors import KernelError, UnsupportedError
from ..netlink.nftables import NftBatch, parse_replies

NETLINK_NETFILTER = 12
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


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Grow the receive buffer (past rmem_max when we have CAP_NET_ADMIN); return the new size."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def send_batch(batch: NftBatch, timeout: float = 5.0) -> None:
    """Commit ``batch`` as one transaction. Raises KernelError (UnsupportedError for a missing
    feature) naming the first request the kernel refused."""
    if not len(batch):
        return
    sock = open_socket()
    try:
        sock.settimeout(timeout)
        wanted = batch.requests
        sock.send(batch.to_bytes())
        refused: list[tuple[int, int]] = []
        while wanted:
            try:
                data = sock.recv(65536)
            except TimeoutError as exc:
                raise KernelError("the kernel did not answer an nf_tables batch within "
                                  f"{timeout:g} s") from exc
            for seq, err in parse_replies(data):
                what = wanted.pop(seq, None)
                if err and what is not None:
                    refused.append((err, seq))
                    what_failed = what
                    # the transaction is aborted; later requests may not be answered
                    wanted.clear()
                    break
        if refused:
            err, _ = refused[0]
            text = os.strerror(err)
            cls = BatchUnsupported if err in MISSING_FEATURE else BatchRefused
            raise cls(f"the kernel refused '{what_failed}': {text} (errno {err}).", errno=err,
                      request=what_failed)
    except OSError as exc:  # (BatchRefused is no OSError: it goes up as it is)
        raise KernelError(f"netlink error while sending an nf_tables batch: {exc}") from exc
    finally:
        sock.close()


def supported(batch: NftBatch) -> bool:
    """Send a probe transaction (one that leaves nothing behind): True if the kernel took it,
    False if it refused it for a missing feature (by errno). Any other refusal goes up."""
    try:
        send_batch(batch)
    except BatchUnsupported:
        return False
    return True
