"""A set's elements with their counters, as an nf_tables GETSETELEM dump. Pure (Sans-IO).

A scrape reads the per-element counters of merged rule runs (compile/runs.py) at each scrape;
through libnftables (``nft -j list set``) 10k elements cost 0.15-0.4 s of listing and JSON,
through this dump a fraction of that. Only what counters need is decoded: each element's key
bytes, its flags (interval ends carry no counter) and its counter expression.

Layouts: <linux/netfilter/nf_tables.h> (nft_set_elem_attributes, nft_expr_attributes,
nft_counter_attributes).
"""

from __future__ import annotations

import enum
import struct
from typing import Iterator

from ..errors import PacketError
from .nftables import NfProto, NftMsg, SetElemListAttr
from .nlmsg import (
    NLA_HDR, NLA_TYPE_MASK, NLMSG_HDR, NfnlSubsys, NlmFlag, NlmsgType, attr_str, message,
    nfgen, nfnl_type, parse_error, split_messages,
)

GETSETELEM = nfnl_type(NfnlSubsys.NFTABLES, 13)
NEWSETELEM = nfnl_type(NfnlSubsys.NFTABLES, NftMsg.NEWSETELEM)
NFGEN_SIZE = 4
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
LIST_ELEM = 1
INTERVAL_END = 0x1
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")


class ElemAttr(enum.IntEnum):
    KEY = 1
    FLAGS = 3
    EXPR = 7
    EXPRESSIONS = 11


class ExprAttr(enum.IntEnum):
    NAME = 1
    DATA = 2


class CounterAttr(enum.IntEnum):
    BYTES = 1
    PACKETS = 2


def request(table: str, set_name: str, seq: int = 1, family: NfProto = NfProto.INET) -> bytes:
    """The dump request of one set's elements."""
    body = (nfgen(family) + attr_str(SetElemListAttr.TABLE, table)
            + attr_str(SetElemListAttr.SET, set_name))
    return message(GETSETELEM, NlmFlag.REQUEST | NLM_F_DUMP,
                   seq, body)


def attrs(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in ``data[start:end]``."""
    while start + NLA_HDR.size <= end:
        length, kind = NLA_HDR.unpack_from(data, start)
        if length < NLA_HDR.size or start + length > end:
            raise PacketError(f"a netlink attribute at offset {start} claims {length} bytes, "
                              f"but {end - start} are left.")
        yield kind & NLA_TYPE_MASK, start + NLA_HDR.size, start + length
        start += (length + 3) & ~3


def _counter(data: memoryview, start: int, end: int) -> tuple[int, int] | None:
    """Offsets of the packets and bytes values of one expression (NAME, DATA), if it is a
    counter."""
    name = packets = nbytes = None
    for kind, a, b in attrs(data, start, end):
        if kind == ExprAttr.NAME:
            name = bytes(data[a:b]).rstrip(b"\0")
        elif kind == ExprAttr.DATA:
            for ckind, c, d in attrs(data, a, b):
                if ckind == CounterAttr.BYTES and d - c == 8:
                    nbytes = c
                elif ckind == CounterAttr.PACKETS and d - c == 8:
                    packets = c
    if name != b"counter" or packets is None or nbytes is None:
        return None
    return packets, nbytes


def _walk(data: memoryview, start: int, end: int) -> tuple[int, int, int, int, int]:
    """Offsets in one element of its key value (start, end), its counter's packets and bytes
    values (-1: no counter), and its flags."""
    key = (start, start)
    flags = 0
    counter = (-1, -1)
    for kind, a, b in attrs(data, start, end):
        if kind == ElemAttr.KEY:
            for _, c, d in attrs(data, a, b):  # NFTA_DATA_VALUE
                key = (c, d)
        elif kind == ElemAttr.FLAGS and b - a == 4:
            (flags,) = _BE32.unpack_from(data, a)
        elif kind == ElemAttr.EXPR:
            counter = _counter(data, a, b) or counter
        elif kind == ElemAttr.EXPRESSIONS:
            for _, c, d in attrs(data, a, b):
                counter = _counter(data, c, d) or counter
    return key[0], key[1], counter[0], counter[1], flags


class Decoder:
    """Reply datagrams in, elements out: ``receive_data`` returns (key, flags, packets,
    bytes) per element; ``done`` once the dump ended. A refusal raises ``DumpRefused`` with
    its errno (ENOENT: no such set)."""

    def __init__(self) -> None:
        self.done = False

    def receive_data(self, data: bytes | memoryview) -> list[tuple[bytes, int, int, int]]:
        view = memoryview(data)
        out = []
        offset = 0
        for msg_type, _flags, _seq, _pid, body in split_messages(view):
            length = NLMSG_HDR.size + len(body)
            begin, offset = offset + NLMSG_HDR.size, offset + ((length + 3) & ~3)
            if msg_type == NlmsgType.DONE:
                self.done = True
            elif msg_type == NlmsgType.ERROR:
                errno, _ = parse_error(body)
                if errno:
                    raise DumpRefused(errno)
            elif msg_type == NEWSETELEM:
                for kind, a, b in attrs(view, begin + NFGEN_SIZE, begin + len(body)):
                    if kind == SetElemListAttr.ELEMENTS:
                        out += _elements(view, a, b)
        return out


def _elements(view: memoryview, start: int, end: int) -> list[tuple[bytes, int, int, int]]:
    """Every LIST_ELEM in ``view[start:end]``. Elements of a set are alike but for their key
    and counter values: the first is walked attribute by attribute, and each next one of the
    same length whose other bytes equal the first's is read at the same offsets (a fifth of
    the walk's cost); any other is walked."""
    data = bytes(view[start:end])
    out = []
    shape: _Shape | None = None
    at = 0
    while at + NLA_HDR.size <= len(data):
        length, kind = NLA_HDR.unpack_from(data, at)
        if length < NLA_HDR.size or at + length > len(data):
            raise PacketError(f"a set element at offset {at} claims {length} bytes, but "
                              f"{len(data) - at} are left.")
        elem = data[at:at + length]
        at += (length + 3) & ~3
        if kind & NLA_TYPE_MASK != LIST_ELEM:
            continue
        if shape is None or not shape.fits(elem):
            spots = _walk(memoryview(elem), NLA_HDR.size, length)
            found = _Shape(elem, *spots)
            shape = shape or (found if found.counted and not found.flags else None)
            out.append(found.read(elem))
        else:
            out.append(shape.read(elem))
    return out


class _Shape:
    """Where an element keeps its key and counter values; its other bytes, which the
    elements read at the same offsets must have."""

    def __init__(self, elem: bytes, key_lo: int, key_hi: int, packets: int, nbytes: int,
                 flags: int):
        self.length = len(elem)
        self.key = (key_lo, key_hi)
        self.packets, self.bytes, self.flags = packets, nbytes, flags
        self.counted = packets >= 0
        cuts = sorted([self.key] + ([(packets, packets + 8), (nbytes, nbytes + 8)]
                                    if self.counted else []))
        self.fixed = []
        edge = 0
        for lo, hi in cuts:
            self.fixed.append((edge, lo, elem[edge:lo]))
            edge = hi
        self.fixed.append((edge, len(elem), elem[edge:]))

    def fits(self, elem: bytes) -> bool:
        if len(elem) != self.length:
            return False
        for lo, hi, same in self.fixed:
            if elem[lo:hi] != same:
                return False
        return True

    def read(self, elem: bytes) -> tuple[bytes, int, int, int]:
        if not self.counted:
            return elem[self.key[0]:self.key[1]], self.flags, 0, 0
        return (elem[self.key[0]:self.key[1]], self.flags,
                int.from_bytes(elem[self.packets:self.packets + 8], "big"),
                int.from_bytes(elem[self.bytes:self.bytes + 8], "big"))


class DumpRefused(PacketError):
    def __init__(self, errno: int):
        super().__init__(f"the kernel refused the set element dump (errno {errno}).")
        self.errno = errno
