"""Netlink and nfnetlink framing: message headers and attributes (TLVs), both ways. Pure.

A netlink message is ``nlmsghdr`` (len, type, flags, seq, pid; host byte order) followed by a
family header (for nfnetlink, ``nfgenmsg``: family, version, res_id in network order) and a list
of attributes ``nlattr`` (len, type; host order), each padded to 4 bytes.
"""

from __future__ import annotations

import enum
import struct
from typing import Iterator

from ..errors import PacketError

NLMSG_HDR = struct.Struct("=IHHII")
NLA_HDR = struct.Struct("=HH")
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF


class NlmsgType(enum.IntEnum):
    NOOP = 1
    ERROR = 2
    DONE = 3
    OVERRUN = 4


class NlmFlag(enum.IntFlag):
    REQUEST = 0x1
    MULTI = 0x2
    ACK = 0x4
    ECHO = 0x8
    # modifiers of NEW requests
    REPLACE = 0x100
    EXCL = 0x200
    CREATE = 0x400
    APPEND = 0x800
    # modifier of DELETE requests (kernel >= 5.x): refuse to delete a non-empty object
    NONREC = 0x100


class NfnlSubsys(enum.IntEnum):
    QUEUE = 3
    ULOG = 4
    NFTABLES = 10


class NfnlMsg(enum.IntEnum):
    BATCH_BEGIN = 0x10
    BATCH_END = 0x11


NFNETLINK_V0 = 0


def align4(n: int) -> int:
    return (n + 3) & ~3


# ---- encoding ----------------------------------------------------------------------------------

def attr(kind: int, payload: bytes) -> bytes:
    """One attribute with its padding."""
    length = NLA_HDR.size + len(payload)
    return NLA_HDR.pack(length, kind) + payload + b"\0" * (align4(length) - length)


def nested(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def attr_str(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def attr_be32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack(">I", value & 0xFFFFFFFF))


def attr_be16(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack(">H", value & 0xFFFF))


def message(msg_type: int, flags: int, seq: int, body: bytes, pid: int = 0) -> bytes:
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), msg_type, flags, seq, pid) + body


def nfgen(family: int, res_id: int = 0) -> bytes:
    return struct.pack("=BB", family, NFNETLINK_V0) + struct.pack(">H", res_id)


def nfnl_type(subsys: int, msg: int) -> int:
    return (subsys << 8) | msg


# ---- decoding ----------------------------------------------------------------------------------

def split_messages(data: bytes | memoryview) -> Iterator[tuple[int, int, int, int, memoryview]]:
    """Yield (type, flags, seq, pid, body) for each netlink message in ``data``.

    Raises PacketError on a truncated or inconsistent header.
    """
    view = memoryview(data)
    total = len(view)
    offset = 0
    while offset < total:
        if total - offset < NLMSG_HDR.size:
            raise PacketError(f"a netlink message header is truncated: {total - offset} bytes "
                              f"left at offset {offset}, a header needs {NLMSG_HDR.size}.")
        length, msg_type, flags, seq, pid = NLMSG_HDR.unpack_from(view, offset)
        if length < NLMSG_HDR.size or offset + length > total:
            raise PacketError(f"a netlink message at offset {offset} claims {length} bytes, "
                              f"but {total - offset} are left.")
        yield msg_type, flags, seq, pid, view[offset + NLMSG_HDR.size:offset + length]
        offset += align4(length)


def parse_error(body: memoryview) -> tuple[int, int]:
    """(errno, seq of the request) from an NLMSG_ERROR body; errno 0 is an acknowledgement."""
    if len(body) < 4 + NLMSG_HDR.size:
        raise PacketError(f"a netlink error message is truncated ({len(body)} bytes).")
    (code,) = struct.unpack_from("=i", body, 0)
    _, _, _, seq, _ = NLMSG_HDR.unpack_from(body, 4)
    return -code, seq


_NLH = NLMSG_HDR.unpack_from


def message_at(data: bytes, off: int, total: int) -> tuple[int, int, int]:
    """(length, type, seq) of the netlink message at ``off`` of a datagram of ``total`` bytes.
    Raises PacketError on a truncated or inconsistent header."""
    if total - off < 16:
        raise PacketError(f"a netlink message header is truncated: {total - off} bytes "
                          f"left at offset {off}, a header needs 16.")
    length, msg_type, _flags, seq, _pid = _NLH(data, off)
    if length < 16 or off + length > total:
        raise PacketError(f"a netlink message at offset {off} claims {length} bytes, "
                          f"but {total - off} are left.")
    return length, msg_type, seq


def split_datagram(data: bytes) -> list[tuple[int, int, int, int]]:
    """(type, seq, start, end) of each netlink message in a datagram; body is data[start:end]."""
    out = []
    total = len(data)
    off = 0
    while off < total:
        length, msg_type, seq = message_at(data, off, total)
        out.append((msg_type, seq, off + 16, off + length))
        off += (length + 3) & ~3
    return out
