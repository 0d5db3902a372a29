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
    NLMSG_HDR, NfnlSubsys, NlmFlag, NlmsgType, attr, attr_be32, message, nfgen, nfnl_type,
    parse_attrs, parse_error, split_messages,
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


# ---- events ------------------------------------------------------------------------------------

class QueuedPacket:
    """One packet the kernel queued to us. ``payload`` starts at the network header."""

    __slots__ = ("queue", "id", "hw_protocol", "hook", "payload", "mark", "indev", "outdev",
                 "cap_len", "ct_info")

    def __init__(self, queue: int, packet_id: int, hw_protocol: int, hook: int, payload: bytes,
                 mark: int, indev: int, outdev: int, cap_len: int | None,
                 ct_info: int | None):
        self.queue = queue
        self.id = packet_id
        self.hw_protocol = hw_protocol
        self.hook = hook
        self.payload = payload
        self.mark = mark
        self.indev = indev
        self.outdev = outdev
        self.cap_len = cap_len
        self.ct_info = ct_info

    @property
    def length(self) -> int:
        """The packet's real length, even when only its headers were copied."""
        return self.cap_len if self.cap_len is not None else len(self.payload)

    def __repr__(self) -> str:
        return (f"QueuedPacket(queue={self.queue}, id={self.id}, hook={self.hook}, "
                f"len={self.length}, mark={self.mark:#x})")


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

    @property
    def last_seq(self) -> int:
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
    def verdict(self, queue: int, packet_id: int, verdict: Verdict,
                mark: int | None = None) -> bytes:
        return self._verdict(_VERDICT_TYPE, queue, packet_id, verdict, mark)

    def verdict_batch(self, queue: int, last_id: int, verdict: Verdict,
                      mark: int | None = None) -> bytes:
        """One verdict for every packet of ``queue`` with an id up to ``last_id``."""
        return self._verdict(_BATCH_TYPE, queue, last_id, verdict, mark)

    @staticmethod
    def _verdict(kind: int, queue: int, packet_id: int, verdict: Verdict,
                 mark: int | None) -> bytes:
        body = nfgen(_AF_UNSPEC, queue) + attr(Nfqa.VERDICT_HDR,
                                              _VERDICT_HDR.pack(verdict, packet_id))
        if mark is not None:
            body += attr_be32(Nfqa.MARK, mark)
        return message(kind, NlmFlag.REQUEST, 0, body)

    # -- receiving --
    def receive_data(self, data: bytes | memoryview) -> list[Event]:
        """Decode one datagram. Raises PacketError (only) on malformed input."""
        events: list[Event] = []
        for msg_type, _flags, seq, _pid, body in split_messages(data):
            if msg_type == _PACKET_TYPE:
                events.append(decode_packet(body))
            elif msg_type == NlmsgType.ERROR:
                errno, req_seq = parse_error(body)
                what = self._pending.pop(req_seq, f"request {req_seq}")
                events.append(Ack(req_seq) if errno == 0 else Refused(req_seq, errno, what))
            elif msg_type in (NlmsgType.NOOP, NlmsgType.DONE):
                continue
            else:
                raise PacketError(f"the kernel sent an unexpected netlink message type "
                                  f"{msg_type:#x} on the queue socket.")
        return events


def decode_packet(body: memoryview) -> QueuedPacket:
    """One NFQNL_MSG_PACKET body (after the netlink header)."""
    if len(body) < 4:
        raise PacketError("a queued-packet message has no nfgenmsg header.")
    queue = int.from_bytes(body[2:4], "big")
    attrs = parse_attrs(body, 4)
    hdr = attrs.get(Nfqa.PACKET_HDR)
    if hdr is None or len(hdr) < _PKT_HDR.size:
        raise PacketError("a queued packet has no valid packet header attribute.")
    packet_id, hw_protocol, hook = _PKT_HDR.unpack_from(hdr)
    payload = attrs.get(Nfqa.PAYLOAD)
    mark = attrs.get(Nfqa.MARK)
    indev = attrs.get(Nfqa.IFINDEX_INDEV)
    outdev = attrs.get(Nfqa.IFINDEX_OUTDEV)
    cap_len = attrs.get(Nfqa.CAP_LEN)
    ct_info = attrs.get(Nfqa.CT_INFO)
    return QueuedPacket(
        queue, packet_id, hw_protocol, hook,
        bytes(payload) if payload is not None else b"",
        _u32(mark, "mark") if mark is not None else 0,
        _u32(indev, "input interface") if indev is not None else 0,
        _u32(outdev, "output interface") if outdev is not None else 0,
        _u32(cap_len, "captured length") if cap_len is not None else None,
        _u32(ct_info, "conntrack info") if ct_info is not None else None,
    )


def _u32(value: memoryview, what: str) -> int:
    if len(value) != 4:
        raise PacketError(f"the {what} attribute of a queued packet has {len(value)} bytes; "
                          "it needs 4.")
    return int.from_bytes(value, "big")


__all__ = ["NfqueueCodec", "QueuedPacket", "Ack", "Refused", "Event", "Verdict", "CopyMode",
           "CfgFlag", "CfgCmd", "Nfqa", "NfqaCfg", "NfqnlMsg", "NfHook", "CtInfo",
           "CT_STATE_NAMES", "HEADER_COPY_RANGE", "FULL_COPY_RANGE", "DEFAULT_MAXLEN",
           "decode_packet", "NLMSG_HDR"]
