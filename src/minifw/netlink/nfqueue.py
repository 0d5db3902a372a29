"""Sans-IO codec for nfnetlink_queue (NFQUEUE): bytes in -> events out; requests -> bytes.

    codec = NfqueueCodec()
    sock.send(codec.bind(7) + codec.params(7, CopyMode.PACKET, 128) + codec.flags(7, ...))
    for event in codec.receive_data(sock.recv(65536)):
        if isinstance(event, QueuedPacket): ...
    sock.send(codec.verdict_batch(7, last_id, Verdict.ACCEPT))

Layouts follow <linux/netfilter/nfnetlink_queue.h>. Pure: no sockets here.
"""

from __future__ import annotations

import dataclasses
import enum
import struct

from ..errors import PacketError
from .nlmsg import (
    NLA_TYPE_MASK, NLMSG_HDR, NfnlSubsys, NlmFlag, NlmsgType, attr, attr_be32, message, nfgen,
    nfnl_type, parse_error, split_datagram,
)


class NfqnlMsg(enum.IntEnum):
    PACKET = 0
    VERDICT = 1
    CONFIG = 2
    VERDICT_BATCH = 3


class Nfqa(enum.IntEnum):
    """Attributes of a queued packet and of a verdict."""

    PACKET_HDR = 1
    VERDICT_HDR = 2
    MARK = 3
    TIMESTAMP = 4
    IFINDEX_INDEV = 5
    IFINDEX_OUTDEV = 6
    IFINDEX_PHYSINDEV = 7
    IFINDEX_PHYSOUTDEV = 8
    HWADDR = 9
    PAYLOAD = 10
    CT = 11
    CT_INFO = 12
    CAP_LEN = 13
    SKB_INFO = 14
    EXP = 15
    UID = 16
    GID = 17
    SECCTX = 18
    VLAN = 19
    L2HDR = 20
    PRIORITY = 21


class NfqaCfg(enum.IntEnum):
    CMD = 1
    PARAMS = 2
    QUEUE_MAXLEN = 3
    MASK = 4
    FLAGS = 5


class CfgCmd(enum.IntEnum):
    NONE = 0
    BIND = 1
    UNBIND = 2
    PF_BIND = 3
    PF_UNBIND = 4


class CopyMode(enum.IntEnum):
    NONE = 0
    META = 1
    PACKET = 2


class CfgFlag(enum.IntFlag):
    FAIL_OPEN = 0x01
    CONNTRACK = 0x02
    GSO = 0x04
    UID_GID = 0x08
    SECCTX = 0x10


class Verdict(enum.IntEnum):
    """Netfilter verdicts (NF_*)."""

    DROP = 0
    ACCEPT = 1
    STOLEN = 2
    QUEUE = 3
    REPEAT = 4


class NfHook(enum.IntEnum):
    """NF_INET_* hook numbers, as the packet header reports them."""

    PREROUTING = 0
    INPUT = 1
    FORWARD = 2
    OUTPUT = 3
    POSTROUTING = 4


class CtInfo(enum.IntEnum):
    """enum ip_conntrack_info."""

    ESTABLISHED = 0
    RELATED = 1
    NEW = 2
    ESTABLISHED_REPLY = 3
    RELATED_REPLY = 4


CT_STATE_NAMES = {CtInfo.ESTABLISHED: "established", CtInfo.RELATED: "related",
                  CtInfo.NEW: "new", CtInfo.ESTABLISHED_REPLY: "established",
                  CtInfo.RELATED_REPLY: "related"}

# A copy range that holds IPv4/IPv6 + TCP headers with options and a little more.
HEADER_COPY_RANGE = 128
FULL_COPY_RANGE = 0xFFFF
DEFAULT_MAXLEN = 4096

_PACKET_TYPE = nfnl_type(NfnlSubsys.QUEUE, NfqnlMsg.PACKET)
_VERDICT_TYPE = nfnl_type(NfnlSubsys.QUEUE, NfqnlMsg.VERDICT)
_BATCH_TYPE = nfnl_type(NfnlSubsys.QUEUE, NfqnlMsg.VERDICT_BATCH)
_CONFIG_TYPE = nfnl_type(NfnlSubsys.QUEUE, NfqnlMsg.CONFIG)
_PKT_HDR = struct.Struct(">IHB")
_VERDICT_HDR = struct.Struct(">II")
_AF_UNSPEC = 0


# ---- the wire layout the hot paths read in place -----------------------------------------------
# A queued-packet datagram as the kernel writes it: ONE message, its first attribute the packet
# header. The serve loops (runners/runner.py), the packet (hooks/packet.py) and the C hot path
# (hooks/_hot.c, as #defines of the names in HOT_DEFINES; tests/unit/test_verdicts.py checks
# that they agree) read these offsets without walking the message.
PACKET_MSG_TYPE = _PACKET_TYPE                          # nlmsghdr.nlmsg_type (host order)
QUEUE_AT = NLMSG_HDR.size + 2                           # nfgenmsg.res_id (big-endian)
FIRST_ATTR_AT = NLMSG_HDR.size + 4                      # nla_len, nla_type (host order)
PACKET_HDR_LEN = 4 + _PKT_HDR.size                      # nla_len of NFQA_PACKET_HDR
PACKET_ID_AT = FIRST_ATTR_AT + 4                        # nfqnl_msg_packet_hdr.packet_id
HOOK_AT = PACKET_ID_AT + 6                              # nfqnl_msg_packet_hdr.hook
AFTER_PACKET_HDR = FIRST_ATTR_AT + ((PACKET_HDR_LEN + 3) & ~3)  # the next attribute
# the plain shape, in one unpack: (length, type, first attribute's length and type)
read_head = struct.Struct(f"=IH{FIRST_ATTR_AT - 6}xHH").unpack_from
# then the queue and the packet id (true values)
read_queue_and_id = struct.Struct(f">{QUEUE_AT}xH{PACKET_ID_AT - QUEUE_AT - 2}xI").unpack_from
HOT_DEFINES = {
    "NFQ_PACKET_MSG_TYPE": PACKET_MSG_TYPE, "NFQ_QUEUE_AT": QUEUE_AT,
    "NFQ_FIRST_ATTR_AT": FIRST_ATTR_AT, "NFQ_PACKET_HDR_LEN": PACKET_HDR_LEN,
    "NFQ_PACKET_HDR": int(Nfqa.PACKET_HDR), "NFQ_PACKET_ID_AT": PACKET_ID_AT,
    "NFQ_AFTER_PACKET_HDR": AFTER_PACKET_HDR, "NFQ_PAYLOAD": int(Nfqa.PAYLOAD),
    "NFQ_NLA_TYPE_MASK": NLA_TYPE_MASK,
}


# ---- events ------------------------------------------------------------------------------------

class QueuedPacket:
    """One packet the kernel queued to us. ``payload`` starts at the network header.

    The queue, id, hook and hardware protocol are read at once (a verdict needs the id); the
    other attributes are decoded on first use, so an accept-all hook pays for none of them.
    """

    __slots__ = ("queue", "id", "hw_protocol", "hook", "_data", "_start", "_end", "_done",
                 "_payload", "_mark", "_indev", "_outdev", "_cap_len", "_ct_info", "_found",
                 "_meta_done")

    def __init__(self, queue: int, packet_id: int, hw_protocol: int, hook: int,
                 payload: bytes = b"", mark: int = 0, indev: int = 0, outdev: int = 0,
                 cap_len: int | None = None, ct_info: int | None = None,
                 data: bytes | None = None, start: int = 0, end: int = 0):
        self.queue = queue
        self.id = packet_id
        self.hw_protocol = hw_protocol
        self.hook = hook
        self._data = data
        self._start = start
        self._end = end
        self._done = data is None
        self._payload = payload
        self._mark = mark
        self._indev = indev
        self._outdev = outdev
        self._cap_len = cap_len
        self._ct_info = ct_info
        self._found: dict[int, int] | None = None
        self._meta_done = data is None

    def _decode(self) -> None:
        """Take the payload; the numbers wait for _meta()."""
        data = self._data
        assert data is not None
        self._payload = _find_payload(data, self._start + 4, self._end)
        self._done = True

    def _meta(self) -> None:
        data = self._data
        assert data is not None
        found, payload = _walk(data, self._start + 4, self._end)
        if not self._done:
            self._payload, self._done = payload, True
        (self._mark, self._indev, self._outdev, self._cap_len,
         self._ct_info) = _numbers(data, found)
        self._meta_done = True

    @property
    def payload(self) -> bytes:
        if not self._done:
            self._decode()
        return self._payload

    @property
    def mark(self) -> int:
        if not self._meta_done:
            self._meta()
        return self._mark

    @property
    def indev(self) -> int:
        if not self._meta_done:
            self._meta()
        return self._indev

    @property
    def outdev(self) -> int:
        if not self._meta_done:
            self._meta()
        return self._outdev

    @property
    def cap_len(self) -> int | None:
        if not self._meta_done:
            self._meta()
        return self._cap_len

    @property
    def ct_info(self) -> int | None:
        if not self._meta_done:
            self._meta()
        return self._ct_info

    @property
    def length(self) -> int:
        """The packet's real length, even when only its headers were copied."""
        cap = self.cap_len
        return cap if cap is not None else len(self.payload)

    def __repr__(self) -> str:
        return (f"QueuedPacket(queue={self.queue}, id={self.id}, hook={self.hook})")


@dataclasses.dataclass(frozen=True)
class Ack:
    """The kernel accepted request ``seq``."""

    seq: int


@dataclasses.dataclass(frozen=True)
class Refused:
    """The kernel refused request ``seq`` with ``errno`` (what was asked is in ``request``)."""

    seq: int
    errno: int
    request: str


Event = QueuedPacket | Ack | Refused


# ---- the codec ---------------------------------------------------------------------------------

class NfqueueCodec:
    """Builds requests (each with its own sequence number) and decodes what the kernel sends."""

    def __init__(self) -> None:
        self._seq = 0
        self._pending: dict[int, str] = {}

    def _next(self, what: str) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        self._pending[self._seq] = what
        return self._seq

    def pending(self) -> dict[int, str]:
        """Requests still waiting for an acknowledgement, by sequence number."""
        return dict(self._pending)

    # -- configuration (each asks for an ack) --
    def _config(self, queue: int, what: str, *attrs: bytes) -> bytes:
        seq = self._next(what)
        return message(_CONFIG_TYPE, NlmFlag.REQUEST | NlmFlag.ACK, seq,
                       nfgen(_AF_UNSPEC, queue) + b"".join(attrs))

    def bind(self, queue: int) -> bytes:
        cmd = struct.pack(">BBH", CfgCmd.BIND, 0, _AF_UNSPEC)
        return self._config(queue, f"bind queue {queue}", attr(NfqaCfg.CMD, cmd))

    def unbind(self, queue: int) -> bytes:
        cmd = struct.pack(">BBH", CfgCmd.UNBIND, 0, _AF_UNSPEC)
        return self._config(queue, f"unbind queue {queue}", attr(NfqaCfg.CMD, cmd))

    def params(self, queue: int, mode: CopyMode, copy_range: int) -> bytes:
        body = struct.pack(">IB", copy_range, mode)
        return self._config(queue, f"set copy mode {mode.name} range {copy_range} on queue "
                                   f"{queue}", attr(NfqaCfg.PARAMS, body))

    def maxlen(self, queue: int, length: int) -> bytes:
        return self._config(queue, f"set queue length {length} on queue {queue}",
                            attr_be32(NfqaCfg.QUEUE_MAXLEN, length))

    def flags(self, queue: int, flags: CfgFlag, mask: CfgFlag) -> bytes:
        names = str(CfgFlag(mask)).replace("CfgFlag.", "")
        return self._config(queue, f"set flags {names} on queue {queue}",
                            attr_be32(NfqaCfg.FLAGS, flags), attr_be32(NfqaCfg.MASK, mask))

    # -- verdicts (no ack: they are the hot path) --
    def verdict_batch(self, queue: int, last_id: int, verdict: Verdict,
                      mark: int | None = None) -> bytes:
        """One verdict for every packet of ``queue`` with an id up to ``last_id``."""
        return self._verdict(_BATCH_TYPE, queue, last_id, verdict, mark)

    @staticmethod
    def _verdict(kind: int, queue: int, packet_id: int, verdict: Verdict,
                 mark: int | None) -> bytes:
        body = nfgen(_AF_UNSPEC, queue)
        if mark is not None:  # before the verdict header, so the packet id ends the message
            body += attr_be32(Nfqa.MARK, mark)
        body += attr(Nfqa.VERDICT_HDR, _VERDICT_HDR.pack(verdict, packet_id))
        return message(kind, NlmFlag.REQUEST, 0, body)

    @classmethod
    def verdict_batch_at_front(cls, queue: int, last_id: int, verdict: int,
                               mark: int | None = None) -> bytes:
        return cls._verdict(_BATCH_TYPE, queue, last_id, Verdict(verdict), mark)

    # -- receiving --
    def receive_data(self, data: bytes | memoryview) -> list[Event]:
        """Decode one datagram. Raises PacketError (only) on malformed input."""
        events: list[Event] = []
        data = bytes(data)
        for msg_type, _seq, start, end in split_datagram(data):
            if msg_type == _PACKET_TYPE:
                events.append(decode_packet(data, start, end))
            elif msg_type == NlmsgType.ERROR:
                errno, req_seq = parse_error(memoryview(data)[start:end])
                what = self._pending.pop(req_seq, f"request {req_seq}")
                events.append(Ack(req_seq) if errno == 0 else Refused(req_seq, errno, what))
            elif msg_type in (NlmsgType.NOOP, NlmsgType.DONE):
                continue
            else:
                raise PacketError(f"the kernel sent an unexpected netlink message type "
                                  f"{msg_type:#x} on the queue socket.")
        return events


_NLA = struct.Struct("=HH").unpack_from
_BE32 = struct.Struct(">I").unpack_from
_PKT = _PKT_HDR.unpack_from
_A_PACKET_HDR, _A_MARK, _A_INDEV, _A_OUTDEV = 1, 3, 5, 6
_A_PAYLOAD, _A_CT_INFO, _A_CAP_LEN = 10, 12, 13
_U32_ATTRS = {_A_MARK: "mark", _A_INDEV: "input interface", _A_OUTDEV: "output interface",
              _A_CT_INFO: "conntrack info", _A_CAP_LEN: "captured length"}


def decode_packet(body: bytes | memoryview, start: int = 0, end: int | None = None,
                  lazy: bool = True) -> QueuedPacket:
    """One NFQNL_MSG_PACKET body (after the netlink header): ``body[start:end]``.

    The hot path: when the packet header comes first (as the kernel writes it), only it is
    read now and the rest on first use; otherwise one pass over every attribute.
    """
    if not isinstance(body, bytes):
        body = bytes(body)
    if end is None:
        end = len(body)
    if end - start < 4:
        raise PacketError("a queued-packet message has no nfgenmsg header.")
    queue = (body[start + 2] << 8) | body[start + 3]
    if lazy and end - start >= 16 and _NLA(body, start + 4) == (11, _A_PACKET_HDR):
        packet_id, hw_protocol, hook = _PKT(body, start + 8)
        return QueuedPacket(queue, packet_id, hw_protocol, hook, data=body, start=start,
                            end=end)
    found, payload = _walk(body, start + 4, end)
    at = found.get(_A_PACKET_HDR)
    if at is None or _NLA(body, at)[0] < 11:
        raise PacketError("a queued packet has no valid packet header attribute.")
    packet_id, hw_protocol, hook = _PKT(body, at + 4)
    return QueuedPacket(queue, packet_id, hw_protocol, hook, payload,
                        *_numbers(body, found))


def _walk(body: bytes, off: int, end: int) -> tuple[dict[int, int], bytes]:
    """Where each attribute starts (the kernel never repeats one), and the payload."""
    found: dict[int, int] = {}
    unpack = _NLA
    while off + 4 <= end:
        length, kind = unpack(body, off)
        found[kind & 0x3FFF] = off
        if length < 4:
            raise PacketError(f"a netlink attribute at offset {off} claims {length} bytes.")
        off += (length + 3) & ~3
    if off > ((end + 3) & ~3):
        raise PacketError(f"the last netlink attribute of a queued packet runs {off - end} "
                          "bytes past the end of its message.")
    at = found.get(_A_PAYLOAD)
    return found, (b"" if at is None else body[at + 4:at + unpack(body, at)[0]])


def _find_payload(body: bytes, off: int, end: int) -> bytes:
    """The payload attribute's bytes. The kernel writes it last, so the walk stops there and
    reads nothing else (the numbers, if asked for, take a full walk)."""
    unpack = _NLA
    while off + 4 <= end:
        length, kind = unpack(body, off)
        if length < 4:
            raise PacketError(f"a netlink attribute at offset {off} claims {length} bytes.")
        if kind & 0x3FFF == _A_PAYLOAD:
            if off + length > end:
                raise PacketError("the payload attribute of a queued packet runs past the "
                                  "end of its message.")
            return body[off + 4:off + length]
        off += (length + 3) & ~3
    if off > ((end + 3) & ~3):
        raise PacketError(f"the last netlink attribute of a queued packet runs {off - end} "
                          "bytes past the end of its message.")
    return b""


def _numbers(body: bytes, found: dict[int, int]
             ) -> tuple[int, int, int, int | None, int | None]:
    """mark, input and output ifindex, captured length, conntrack info."""
    values: dict[int, int] = {}
    for kind, what in _U32_ATTRS.items():
        at = found.get(kind)
        if at is not None:
            length = _NLA(body, at)[0]
            if length != 8:
                raise PacketError(f"the {what} attribute of a queued packet has "
                                  f"{length - 4} bytes; it needs 4.")
            values[kind] = _BE32(body, at + 4)[0]
    return (values.get(_A_MARK, 0), values.get(_A_INDEV, 0), values.get(_A_OUTDEV, 0),
            values.get(_A_CAP_LEN), values.get(_A_CT_INFO))


class VerdictWriter:
    """Batch-verdict messages with cached prefixes: only the packet id is packed per call."""

    def __init__(self) -> None:
        self._prefix: dict[tuple[int, int, int | None], bytes] = {}

    def batch(self, queue: int, last_id: int, verdict: int, mark: int | None = None) -> bytes:
        key = (queue, verdict, mark)
        prefix = self._prefix.get(key)
        if prefix is None:
            whole = NfqueueCodec.verdict_batch_at_front(queue, 0, verdict, mark)
            prefix = self._prefix[key] = whole[:-4]
        return prefix + last_id.to_bytes(4, "big")

    @staticmethod
    def single(queue: int, packet_id: int, verdict: int) -> bytes:
        """A verdict for one packet (NFQNL_MSG_VERDICT): it answers that packet only."""
        return NfqueueCodec._verdict(_VERDICT_TYPE, queue, packet_id, Verdict(verdict), None)


@dataclasses.dataclass(frozen=True)
class VerdictMessage:
    """A verdict message as the kernel reads it: a batch verdict answers every packet of
    ``queue`` not answered yet whose id is not after ``packet_id``; a single one that packet."""

    queue: int
    batch: bool
    verdict: int
    packet_id: int
    mark: int | None


def decode_verdicts(data: bytes) -> list[VerdictMessage]:
    """The verdict messages of a datagram we send (the inverse of VerdictWriter). PacketError
    on anything else."""
    out = []
    for msg_type, _seq, start, end in split_datagram(data):
        if msg_type not in (_BATCH_TYPE, _VERDICT_TYPE) or end - start < 4:
            raise PacketError(f"netlink message type {msg_type:#x} is not a verdict.")
        found, _ = _walk(data, start + 4, end)
        at = found.get(Nfqa.VERDICT_HDR)
        if at is None or _NLA(data, at)[0] != 4 + _VERDICT_HDR.size:
            raise PacketError("a verdict message has no valid verdict header.")
        verdict, packet_id = _VERDICT_HDR.unpack_from(data, at + 4)
        mark = found.get(Nfqa.MARK)
        out.append(VerdictMessage((data[start + 2] << 8) | data[start + 3],
                                  msg_type == _BATCH_TYPE, verdict, packet_id,
                                  None if mark is None else _BE32(data, mark + 4)[0]))
    return out


__all__ = ["NfqueueCodec", "QueuedPacket", "Ack", "Refused", "Event", "Verdict", "CopyMode",
           "CfgFlag", "CfgCmd", "Nfqa", "NfqaCfg", "NfqnlMsg", "NfHook", "CtInfo",
           "CT_STATE_NAMES", "HEADER_COPY_RANGE", "FULL_COPY_RANGE", "DEFAULT_MAXLEN",
           "decode_packet", "split_datagram", "VerdictWriter", "NLMSG_HDR", "VerdictMessage",
           "decode_verdicts"]
