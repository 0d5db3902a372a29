"""Sans-IO codec for nfnetlink_log (NFLOG): config requests -> bytes; bytes in -> packets out.

    decoder = NflogDecoder()
    sock.send(decoder.bind(100) + decoder.mode(100, CopyMode.PACKET, 128)
              + decoder.flags(100, CfgFlag.SEQ))
    for packet in decoder.receive_data(sock.recv(131072)):
        ...                       # NflogPacket: family, hook, prefix, devices, payload, seq
    decoder.replies               # (seq, errno) of the kernel's answers to our requests
    decoder.lost                  # packets the kernel numbered but we never saw (NFULA_SEQ gaps)

Layouts follow <linux/netfilter/nfnetlink_log.h>. With a queue threshold above 1 the kernel
packs many packet messages into one datagram (ended by NLMSG_DONE), so one receive carries a
batch. Pure: no sockets here.
"""

from __future__ import annotations

import enum
import operator
import struct
from typing import NamedTuple

from ..errors import PacketError
from .nlmsg import (
    NLA_HDR, NfnlSubsys, NlmFlag, NlmsgType, attr, attr_be32, message, nfgen, nfnl_type,
    message_at, parse_error,
)
# nfnetlink_log numbers its config commands and copy modes as nfnetlink_queue does
from .nfqueue import CfgCmd, CopyMode


class NfulnlMsg(enum.IntEnum):
    PACKET = 0
    CONFIG = 1


class Nfula(enum.IntEnum):
    """Attributes of a logged packet."""

    PACKET_HDR = 1
    MARK = 2
    TIMESTAMP = 3
    IFINDEX_INDEV = 4
    IFINDEX_OUTDEV = 5
    IFINDEX_PHYSINDEV = 6
    IFINDEX_PHYSOUTDEV = 7
    HWADDR = 8
    PAYLOAD = 9
    PREFIX = 10
    UID = 11
    SEQ = 12
    SEQ_GLOBAL = 13
    GID = 14
    HWTYPE = 15
    HWHEADER = 16
    HWLEN = 17
    CT = 18
    CT_INFO = 19
    VLAN = 20
    L2HDR = 21


class NfulaCfg(enum.IntEnum):
    CMD = 1
    MODE = 2
    NLBUFSIZ = 3
    TIMEOUT = 4
    QTHRESH = 5
    FLAGS = 6


class CfgFlag(enum.IntFlag):
    SEQ = 0x1           # NFULA_SEQ: a per-group number, so gaps show lost packets
    SEQ_GLOBAL = 0x2
    CONNTRACK = 0x4


# The kernel's bounds on a group's netlink buffer (nfulnl_set_nlbufsiz ignores other values).
NLBUFSIZ_MAX = 131072
# A copy range that holds an IPv6 header (or IPv4 with options) and a TCP header with options.
HEADER_COPY_RANGE = 128

PACKET_TYPE = nfnl_type(NfnlSubsys.ULOG, NfulnlMsg.PACKET)
_CONFIG_TYPE = nfnl_type(NfnlSubsys.ULOG, NfulnlMsg.CONFIG)
_AF_UNSPEC = 0


class NflogPacket(NamedTuple):
    """One packet the kernel logged to our group. ``payload`` starts at the network header and
    is cut at the copy range; None marks an attribute the kernel did not send."""

    family: int              # nfgen_family: 2 (IPv4), 10 (IPv6), 7 (bridge) ...
    hook: int                # NF_INET_* hook, 0-4
    prefix: str              # the log statement's prefix ("" when it had none)
    indev: int | None        # input ifindex
    outdev: int | None       # output ifindex
    payload: bytes
    seq: int | None          # NFULA_SEQ, with CfgFlag.SEQ
    timestamp: float | None  # seconds since the epoch, when the packet carried a time stamp
    group: int = 0
    hw_protocol: int = 0     # the link layer's EtherType (0x0800, 0x86dd)
    mark: int = 0


# ---- decoding ----------------------------------------------------------------------------------

_NLA = NLA_HDR.unpack_from
_A_PACKET_HDR, _A_MARK, _A_TIMESTAMP, _A_INDEV, _A_OUTDEV = 1, 2, 3, 4, 5
_A_PHYSINDEV, _A_PHYSOUTDEV, _A_PAYLOAD, _A_PREFIX, _A_SEQ = 6, 7, 9, 10, 12
_U32_NAMES = {_A_MARK: "mark", _A_INDEV: "input interface", _A_OUTDEV: "output interface",
              _A_PHYSINDEV: "physical input interface",
              _A_PHYSOUTDEV: "physical output interface", _A_SEQ: "sequence number"}
_MASK = 0x3FFF  # the attribute type without NLA_F_NESTED and NLA_F_NET_BYTEORDER
_NOOP, _ERROR, _DONE = NlmsgType.NOOP, NlmsgType.ERROR, NlmsgType.DONE


def _walk(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(offset, length, type) of each attribute of the message body ``data[start:end]``, every
    length checked against the message and against what its type needs."""
    if end - start < 4:
        raise PacketError("a logged-packet message has no nfgenmsg header.")
    attrs = []
    off = start + 4
    while off < end:
        if end - off < 4:
            raise PacketError(f"a netlink attribute header at offset {off} is truncated: "
                              f"{end - off} bytes left, it needs 4.")
        length, kind = _NLA(data, off)
        if length < 4 or off + length > end:
            raise PacketError(f"a netlink attribute at offset {off} claims {length} bytes, "
                              f"but {end - off} are left in its message.")
        kind &= _MASK
        if kind == _A_PACKET_HDR and length < 7:
            raise PacketError(f"the packet header of a logged packet has {length - 4} bytes; "
                              "it needs 3.")
        if kind in _U32_NAMES and length != 8:
            raise PacketError(f"the {_U32_NAMES[kind]} attribute of a logged packet has "
                              f"{length - 4} bytes; it needs 4.")
        if kind == _A_TIMESTAMP and length != 20:
            raise PacketError(f"the time stamp of a logged packet has {length - 4} bytes; "
                              "it needs 16.")
        attrs.append((off, length, kind))
        off += (length + 3) & ~3
    if not any(kind == _A_PACKET_HDR for _, _, kind in attrs):
        raise PacketError("a logged packet has no packet header attribute.")
    return attrs


# The packet's fields in NflogPacket order, as a shape finds them: in the values it unpacks,
# in the computed time stamp, or in its constant tail (prefix, None, 0).
_FIELDS = ("family", "hook", "prefix", "indev", "outdev", "payload", "seq", "timestamp",
           "group", "hw_protocol", "mark")
_U32_FIELD = {_A_MARK: "mark", _A_INDEV: "indev", _A_OUTDEV: "outdev", _A_PHYSINDEV: "indev",
              _A_PHYSOUTDEV: "outdev", _A_SEQ: "seq"}
SHAPES = 32   # layouts a decoder remembers
CHUNK = 64    # messages checked at once in a run


class _Shape:
    """The layout of one kind of packet message, learnt from one that ``_walk`` checked.

    The messages of one rule share it (same attribute lengths and types, same prefix): a
    datagram from a flood is a run of them. A run is checked with big-integer masks (the
    netlink header's length and type, every attribute header and the prefix must be the
    learnt ones; anything else may differ) and unpacked in one ``iter_unpack`` call."""

    __slots__ = ("length", "size", "mask", "tmpl", "masks", "values", "get", "stamp", "tail")

    def __init__(self, data: bytes, at: int, length: int, attrs: list[tuple[int, int, int]]):
        size = (length + 3) & ~3
        mask = bytearray(size)
        mask[0:6] = b"\xff" * 6                 # nlmsg_len, nlmsg_type
        fmt = ["16xBxH"]                        # nfgenmsg: family, (version), group
        where = {"family": 0, "group": 1}
        count = 2
        prefix = ""
        for off, alen, kind in attrs:
            rel, room = off - at, ((alen + 3) & ~3) - 4
            mask[rel:rel + 4] = b"\xff" * 4
            if kind == _A_PACKET_HDR:
                fmt.append(f"4xHB{room - 3}x")
                where["hw_protocol"], where["hook"] = count, count + 1
                count += 2
            elif kind in _U32_NAMES:
                fmt.append("4xI")
                name = _U32_FIELD[kind]
                if kind not in (_A_PHYSINDEV, _A_PHYSOUTDEV) or name not in where:
                    where[name] = count  # (the device itself wins over the bridge port)
                count += 1
            elif kind == _A_TIMESTAMP:
                fmt.append("4xQQ")
                self.stamp = (count, count + 1)
                where["timestamp"] = -1
                count += 2
            elif kind == _A_PAYLOAD:
                fmt.append(f"4x{alen - 4}s{room - alen + 4}x")
                where["payload"] = count
                count += 1
            else:
                fmt.append(f"4x{room}x")
                if kind == _A_PREFIX:
                    mask[rel + 4:rel + alen] = b"\xff" * (alen - 4)
                    prefix = bytes(data[off + 4:off + alen]).split(b"\0", 1)[0].decode(
                        "utf-8", "replace")
        self.values = struct.Struct(">" + "".join(fmt))
        assert self.values.size == size
        if where.get("timestamp") == -1:
            where["timestamp"] = count      # computed, then appended to the values
            count += 1
        else:
            self.stamp = None
        self.tail = (prefix, None, 0, b"")
        defaults = {"prefix": count, "mark": count + 2, "payload": count + 3}
        self.get = operator.itemgetter(*[where.get(f, defaults.get(f, count + 1))
                                         for f in _FIELDS])
        self.length, self.size = length, size
        self.mask = bytes(mask)
        self.tmpl = bytes(x & m for x, m in zip(data[at:at + size], mask))
        self.masks: dict[int, tuple[int, int]] = {}

    def matches(self, view: memoryview, at: int, count: int) -> bool:
        """Whether the ``count`` messages from ``at`` on all have this layout."""
        pair = self.masks.get(count)
        if pair is None:
            pair = self.masks[count] = (int.from_bytes(self.mask * count),
                                        int.from_bytes(self.tmpl * count))
        return int.from_bytes(view[at:at + count * self.size]) & pair[0] == pair[1]

    def packets(self, view: memoryview) -> list[NflogPacket]:
        """The packets of a checked run (``view`` holds exactly its messages)."""
        get, tail, new = self.get, self.tail, tuple.__new__
        rows = self.values.iter_unpack(view)
        if self.stamp is None:
            return [new(NflogPacket, get(v + tail)) for v in rows]
        s, us = self.stamp
        return [new(NflogPacket, get(v + (v[s] + v[us] / 1e6,) + tail)) for v in rows]


class NflogDecoder:
    """Builds config requests (each with its own sequence number, acknowledged) and decodes
    what the kernel sends: packets are returned, answers to requests kept in ``replies``.

    Loss accounting (with CfgFlag.SEQ): the kernel numbers every packet it logs to a group
    from 0, and one it could not deliver (a full receive buffer) leaves a gap, added to
    ``lost``. A loss after the last packet received shows with the next one.
    """

    def __init__(self) -> None:
        self._seq = 0
        self._pending: dict[int, str] = {}
        self.replies: list[tuple[int, int, str]] = []  # (request seq, errno or 0, what)
        self.lost = 0
        self._next: dict[int, int] = {}  # group -> the NFULA_SEQ expected next
        self._shapes: list[_Shape] = []  # layouts seen, most recently used first

    # -- configuration --
    def _config(self, group: int, what: str, *attrs: bytes) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        self._pending[self._seq] = what
        return message(_CONFIG_TYPE, NlmFlag.REQUEST | NlmFlag.ACK, self._seq,
                       nfgen(_AF_UNSPEC, group) + b"".join(attrs))

    def pending(self) -> dict[int, str]:
        """Requests still waiting for an answer, by sequence number."""
        return dict(self._pending)

    def forget(self, seq: int) -> None:
        self._pending.pop(seq, None)

    def bind(self, group: int) -> bytes:
        """Bind ``group`` to this socket; numbering (NFULA_SEQ) starts from 0 again."""
        self._next[group] = 0
        return self._config(group, f"bind NFLOG group {group}",
                            attr(NfulaCfg.CMD, bytes([CfgCmd.BIND])))

    def unbind(self, group: int) -> bytes:
        return self._config(group, f"unbind NFLOG group {group}",
                            attr(NfulaCfg.CMD, bytes([CfgCmd.UNBIND])))

    def mode(self, group: int, mode: CopyMode, copy_range: int) -> bytes:
        body = struct.pack(">IBB", copy_range, mode, 0)
        return self._config(group, f"set copy mode {mode.name} range {copy_range} on NFLOG "
                                   f"group {group}", attr(NfulaCfg.MODE, body))

    def nlbufsiz(self, group: int, size: int) -> bytes:
        return self._config(group, f"set buffer size {size} on NFLOG group {group}",
                            attr_be32(NfulaCfg.NLBUFSIZ, size))

    def timeout(self, group: int, centiseconds: int) -> bytes:
        """Flush a partial batch after this long (the kernel counts in 1/100 s)."""
        return self._config(group, f"set flush timeout {centiseconds}0 ms on NFLOG group "
                                   f"{group}", attr_be32(NfulaCfg.TIMEOUT, centiseconds))

    def qthreshold(self, group: int, count: int) -> bytes:
        """Send a batch once it holds ``count`` packets (or fills the buffer)."""
        return self._config(group, f"set queue threshold {count} on NFLOG group {group}",
                            attr_be32(NfulaCfg.QTHRESH, count))

    def flags(self, group: int, flags: CfgFlag) -> bytes:
        names = str(CfgFlag(flags)).replace("CfgFlag.", "")
        return self._config(group, f"set flags {names} on NFLOG group {group}",
                            attr(NfulaCfg.FLAGS, struct.pack(">H", flags)))

    # -- receiving --
    def receive_data(self, data: bytes | bytearray | memoryview) -> list[NflogPacket]:
        """Decode one datagram. Raises PacketError (only) on malformed input; the packets of
        a datagram that fails are not counted, nor their sequence numbers."""
        total = len(data)
        data = bytes(data) + b"\0\0\0"  # room for the last message's padding
        view = memoryview(data)
        out: list[NflogPacket] = []
        off = 0
        while off < total:
            length, msg_type, _seq = message_at(data, off, total)
            if msg_type == PACKET_TYPE:
                shape = self._shape(data, view, off, length)
                # the messages after it that have its layout (and end inside the datagram)
                size, n = shape.size, 1
                most = (total - off - shape.length) // size + 1
                step = CHUNK
                while n < most:
                    while step > most - n:
                        step >>= 1
                    if shape.matches(view, off + n * size, step):
                        n += step
                    elif step == 1:
                        break
                    else:
                        step >>= 1
                out += shape.packets(view[off:off + n * size])
                off += n * size
                continue
            if msg_type == _ERROR:
                errno, req = parse_error(view[off + 16:off + length])
                self.replies.append((req, errno, self._pending.pop(req, f"request {req}")))
            elif msg_type != _DONE and msg_type != _NOOP:
                raise PacketError(f"the kernel sent an unexpected netlink message type "
                                  f"{msg_type:#x} on the NFLOG socket.")
            off += (length + 3) & ~3
        if out:
            self._count_gaps(out)
        return out

    def _shape(self, data: bytes, view: memoryview, at: int, length: int) -> _Shape:
        """A known layout that fits the message at ``at`` (most recently used first), or a
        new one learnt from it."""
        shapes = self._shapes
        for i, shape in enumerate(shapes):
            if shape.length == length and shape.matches(view, at, 1):
                if i:
                    shapes.insert(0, shapes.pop(i))
                return shape
        shape = _Shape(data, at, length, _walk(data, at + 16, at + length))
        shapes.insert(0, shape)
        del shapes[SHAPES:]
        return shape

    def _count_gaps(self, packets: list[NflogPacket]) -> None:
        """A datagram holds one group's batch; when its numbers run on from the last one
        without a hole (the common case), one comparison says so."""
        first, last = packets[0], packets[-1]
        expect = self._next
        want = expect.get(first.group, first.seq)
        if (first.seq is not None and first.seq == want and last.seq is not None
                and first.group == last.group
                and (last.seq - first.seq) & 0xFFFFFFFF == len(packets) - 1):
            expect[first.group] = (last.seq + 1) & 0xFFFFFFFF
            return
        lost = 0
        for p in packets:
            seq = p.seq
            if seq is None:
                continue
            want = expect.get(p.group, seq)
            if seq != want:
                gap = (seq - want) & 0xFFFFFFFF
                if gap < 0x80000000:  # (a step back is a numbering restarted, not a loss)
                    lost += gap
            expect[p.group] = (seq + 1) & 0xFFFFFFFF
        self.lost += lost


__all__ = ["NflogDecoder", "NflogPacket", "CopyMode", "CfgFlag", "CfgCmd", "Nfula",
           "NfulaCfg", "NfulnlMsg", "HEADER_COPY_RANGE", "NLBUFSIZ_MAX", "PACKET_TYPE",
           "SHAPES"]
