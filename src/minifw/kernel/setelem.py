"""Bulk set-element adds over nfnetlink: the one path where libnftables is too slow.

libnftables parses a JSON (or text) element list element by element: about 3 s per 1M on an
idle machine, far more on a busy one. An import of single addresses needs nothing that
libnftables adds (no expressions, no cache), so it goes straight to the kernel as nf_tables
batches of NFT_MSG_NEWSETELEM messages, built from ``inet_pton`` bytes.

The kernel's cost per element grows with the size of the transaction: 1M addresses into a hash
set with timeouts took 3.2-3.7 s as one transaction, and 1.1-1.4 s as transactions of 25k-100k
(measured on kernel 6.18, whatever the set's size hint). So a bulk add is sent as transactions
of ``CHUNK`` addresses, one after the other; if one fails, the ones before it stay applied and
the caller is told how many went in (``PartialAdd``).

Only set elements are sent this way; every other change still goes through libnftables' JSON API.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from ..errors import KernelError

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWSETELEM = 12
NFNL_MSG_BATCH_BEGIN = 16
NFNL_MSG_BATCH_END = 17
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000
NFPROTO_INET = 1
# attributes
NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_TIMEOUT = 4
NFTA_DATA_VALUE = 1

_MAX_ATTR = 65000  # nla_len is 16 bits: one message carries at most this much of elements
CHUNK = 50_000     # addresses per transaction (see above)


class PartialAdd(KernelError):
    """A bulk add failed after ``applied`` of its transactions were committed."""

    def __init__(self, message: str, applied: int):
        super().__init__(message)
        self.applied = applied


def _attr(kind: int, payload: bytes) -> bytes:
    pad = (-len(payload)) % 4
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * pad


def _msg(kind: int, flags: int, seq: int, family: int, res_id: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + 4 + len(body), kind, flags, seq, 0) + \
        struct.pack("=BBH", family, 0, socket.htons(res_id)) + body


def element_run(keys: list[bytes], timeout_ms: int | None) -> bytes:
    """The NFTA_LIST_ELEM attributes of ``keys`` (packed addresses of one length), encoded with
    one join: every element has the same header bytes around its key."""
    if not keys:
        return b""
    klen = len(keys[0])
    tail = b"" if timeout_ms is None else _attr(NFTA_SET_ELEM_TIMEOUT,
                                                struct.pack(">Q", timeout_ms))
    value_hdr = struct.pack("=HH", 4 + klen, NFTA_DATA_VALUE)
    key_hdr = struct.pack("=HH", 8 + klen, NFTA_SET_ELEM_KEY | NLA_F_NESTED)
    elem_hdr = struct.pack("=HH", 12 + klen + len(tail), NFTA_LIST_ELEM | NLA_F_NESTED)
    head = elem_hdr + key_hdr + value_hdr
    return head + (tail + head).join(keys) + tail


def build_batch(table: str, groups: list[tuple[str, list[bytes]]], timeout_ms: int | None,
                seq0: int = 1) -> tuple[bytes, int]:
    """(batch bytes, number of messages that ask for an ack) adding each group's keys to its
    set, all in one batch, that is one transaction. Pure."""
    parts = [_msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq0, socket.AF_UNSPEC,
                  NFNL_SUBSYS_NFTABLES, b"")]
    seq = seq0
    count = 0
    flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK
    for set_name, keys in groups:
        if not keys:
            continue
        head = _attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0") + \
            _attr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
        width = len(element_run(keys[:1], timeout_ms))
        per_msg = max(1, _MAX_ATTR // width)
        for start in range(0, len(keys), per_msg):
            elems = element_run(keys[start:start + per_msg], timeout_ms)
            nested = struct.pack("=HH", 4 + len(elems),
                                 NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED)
            seq += 1
            count += 1
            parts.append(_msg((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM, flags, seq,
                              NFPROTO_INET, 0, head + nested + elems))
    seq += 1
    parts.append(_msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, socket.AF_UNSPEC,
                      NFNL_SUBSYS_NFTABLES, b""))
    return b"".join(parts), count


def chunked(groups: list[tuple[str, list[bytes]]],
            size: int = CHUNK) -> list[list[tuple[str, list[bytes]]]]:
    """``groups`` cut into transactions of at most ``size`` keys, in order. Pure."""
    out: list[list[tuple[str, list[bytes]]]] = [[]]
    room = size
    for name, keys in groups:
        start = 0
        while start < len(keys):
            if room == 0:
                out.append([])
                room = size
            part = keys[start:start + room]
            out[-1].append((name, part))
            start += len(part)
            room -= len(part)
    return [t for t in out if t]


def add_elements(table: str, groups: list[tuple[str, list[bytes]]],
                 timeout_ms: int | None) -> None:
    """Add packed-address keys to sets of ``inet table``, in transactions of ``CHUNK`` keys.
    Raises PartialAdd when a transaction fails after others went in."""
    for done, transaction in enumerate(chunked(groups)):
        try:
            _send_transaction(table, transaction, timeout_ms)
        except KernelError as exc:
            if done == 0:
                raise
            raise PartialAdd(f"{exc} (after {done * CHUNK} addresses went in)", done) from exc


def _send_transaction(table: str, groups: list[tuple[str, list[bytes]]],
                      timeout_ms: int | None) -> None:
    """ONE transaction adding every group's keys."""
    batch, acks = build_batch(table, groups, timeout_ms)
    if not acks:
        return
    set_name = ", ".join(name for name, keys in groups if keys)
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        size = len(batch) + 4096
        try:
            sock.setsockopt(socket.SOL_SOCKET, 32, size)  # SO_SNDBUFFORCE (needs CAP_NET_ADMIN)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        try:  # every message is acked: room for all the acks, without echoed payloads
            sock.setsockopt(socket.SOL_SOCKET, 33, 1 << 24)  # SO_RCVBUFFORCE
            sock.setsockopt(270, 10, 1)  # SOL_NETLINK, NETLINK_CAP_ACK
        except OSError:
            pass
        sock.bind((0, 0))
        sock.sendall(batch)
        got = 0
        while got < acks:
            data = sock.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, off + 16)
                    if code != 0:
                        why = ("the set is full (its size limit)" if -code == errno.ENFILE
                               else os.strerror(-code))
                        raise KernelError(f"the kernel refused the element batch for set "
                                          f"{set_name}: {why}")
                    got += 1
                off += (length + 3) & ~3
    except OSError as exc:
        if exc.errno == errno.EPERM:
            raise
        raise KernelError(f"netlink element batch for set {set_name} failed: {exc}") from exc
    finally:
        sock.close()
