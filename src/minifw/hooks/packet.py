"""The packet a hook function sees: lazily parsed headers over the bytes the queue copied. Pure.

Nothing is parsed until a field is read; what a hook does not touch costs nothing. A truncated
or malformed header raises PacketError, and only that.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any, Callable

from ..errors import PacketError
from ..netlink.nfqueue import CT_STATE_NAMES, QueuedPacket, decode_packet

HOOK_NAMES = ("prerouting", "input", "forward", "output", "postrouting")
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
_PORT_PROTOS = frozenset((6, 17, 132, 136))
_V6_EXT = {0, 43, 60, 51, 44}  # hop-by-hop, routing, destination options, AH, fragment
_str_cache: dict[str, int | None] = {}


def _as_int(other: Any, version: int) -> int | None:
    """The integer value of an address-like ``other``, or None if it is not one of ``version``."""
    if isinstance(other, str):
        cached = _str_cache.get(other)
        if cached is None and other not in _str_cache:
            try:
                addr = ipaddress.ip_address(other)
                cached = (addr.version << 128) | int(addr)
            except ValueError:
                cached = None
            if len(_str_cache) < 4096:
                _str_cache[other] = cached
        if cached is None or cached >> 128 != version:
            return None
        return cached & ((1 << 128) - 1)
    if isinstance(other, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return int(other) if other.version == version else None
    return None


class IPv4(ipaddress.IPv4Address):
    """An IPv4 address that also equals its text: ``pkt.src == "198.18.2.2"``.

    It keeps its hash: ipaddress hashes hash(hex(ip)), a new string per call, and set lookups
    by ``pkt.src`` are the common case in a hook."""

    __slots__ = ("_hash",)

    def __init__(self, address: Any):
        super().__init__(address)
        self._hash = hash(hex(self._ip))

    def __eq__(self, other: Any) -> bool:
        value = _as_int(other, 4)
        return value is not None and value == self._ip

    def __hash__(self) -> int:  # the same value as ipaddress's
        return self._hash


# The IPv4 objects of the addresses seen lately, by value (addresses are immutable, so packets
# share them): a lookup instead of a new object, its hash and its deallocation per packet.
_V4_SEEN: dict[int, IPv4] = {}
_V4_SEEN_MAX = 1 << 14


def _v4_new(ip: int) -> IPv4:
    addr = _new(IPv4)  # skip ipaddress's input checks: 32 bits are always a valid address
    addr._ip = ip
    addr._hash = hash(hex(ip))
    if len(_V4_SEEN) >= _V4_SEEN_MAX:
        _V4_SEEN.clear()
    _V4_SEEN[ip] = addr
    return addr


class IPv6(ipaddress.IPv6Address):
    """An IPv6 address that also equals its text."""

    __slots__ = ()

    def __eq__(self, other: Any) -> bool:
        value = _as_int(other, 6)
        return value is not None and value == self._ip

    def __hash__(self) -> int:
        return hash((self._ip, self._scope_id))  # what ipaddress hashes


_new = object.__new__
_U32 = struct.Struct(">I").unpack_from
_V4_HEAD = struct.Struct(">B5xHxB").unpack_from  # version/IHL, fragment field, protocol
_PORTS = struct.Struct(">HH").unpack_from


def _v6(raw: bytes, at: int) -> IPv6:
    addr = _new(IPv6)
    addr._ip = int.from_bytes(raw[at:at + 16], "big")
    addr._scope_id = None
    return addr


# Where the attributes after the packet header start in a queued-packet datagram whose first
# attribute is that header (the runner checks this before it hands such a datagram over).
_AFTER_PACKET_HDR = 32
_NLA_HEAD = struct.Struct("=HH").unpack_from
# Attribute layouts seen before, by datagram length: (unpacker of every attribute header from
# the one after the packet header to the payload's, the values they had, payload start, end).
# A datagram whose headers all read the same values has its payload at the same place: the
# same walk, read with one unpack instead of a Python loop.
_LAYOUTS: dict[int, tuple[Callable[[bytes], tuple], tuple, int, int]] = {}
_LAYOUTS_MAX = 256


def _datagram_payload(data: bytes) -> bytes:
    """The NFQA_PAYLOAD bytes of a queued-packet datagram (see Packet.from_datagram)."""
    n = len(data)
    layout = _LAYOUTS.get(n)
    if layout is not None and layout[0](data) == layout[1]:
        return data[layout[2]:layout[3]]
    return _learn_layout(data, n)


def _learn_layout(data: bytes, n: int) -> bytes:
    """Walk the attributes (as _find_payload does) and remember the layout for this length."""
    off = _AFTER_PACKET_HDR
    fmt = ["="]
    values: list[int] = []
    at = 0
    while off + 4 <= n:
        length, kind = _NLA_HEAD(data, off)
        if length < 4:
            raise PacketError(f"a netlink attribute at offset {off} claims {length} bytes.")
        fmt.append(f"{off - at}xHH" if off > at else "HH")
        values += (length, kind)
        at = off + 4
        if kind & 0x3FFF == 10:  # NFQA_PAYLOAD, the last attribute the kernel writes
            if off + length > n:
                raise PacketError("the payload attribute of a queued packet runs past the end "
                                  "of its message.")
            if len(_LAYOUTS) >= _LAYOUTS_MAX:
                _LAYOUTS.clear()
            _LAYOUTS[n] = (struct.Struct("".join(fmt)).unpack_from, tuple(values), off + 4,
                           off + length)
            return data[off + 4:off + length]
        off += (length + 3) & ~3
    if off > ((n + 3) & ~3):
        raise PacketError(f"the last netlink attribute of a queued packet runs {off - n} "
                          "bytes past the end of its message.")
    return b""


class Packet:
    """One queued packet. Fields: version, src, dst, proto, sport, dport, icmp_type, length,
    iif, oif, hook, mark, ct_state, payload, raw; and ``log(msg)``.

    Built either from a decoded QueuedPacket (``Packet(queued, ...)``) or, by the runner's hot
    path, straight from a datagram (``from_datagram``): then even the netlink attributes are
    only walked when a field needs them.
    """

    __slots__ = ("_q", "_data", "_raw", "_l3", "_l4off", "_proto", "_env")

    def __init__(self, queued: QueuedPacket, ifname: Callable[[int], str | None] | None = None,
                 logger: Callable[[str], None] | None = None, full_copy: bool = True):
        self._q: QueuedPacket | None = queued
        self._data: bytes | None = None
        self._l3: int | None = None       # version, once parsed (then _raw, _proto, _l4off)
        self._env = (ifname, logger, full_copy)

    @staticmethod
    def environment(ifname: Callable[[int], str | None] | None,
                    logger: Callable[[str], None] | None, full_copy: bool) -> tuple:
        """What ``from_datagram`` takes as ``env``; build it once per queue."""
        return (ifname, logger, full_copy)

    @classmethod
    def from_datagram(cls, data: bytes, env: tuple) -> "Packet":
        """A packet over one whole queued-packet datagram (netlink header included) whose first
        attribute is a valid NFQA_PACKET_HDR. The runner inlines this; it is here for tests."""
        pkt = _new(cls)
        pkt._q = None
        pkt._data = data
        pkt._l3 = None
        pkt._env = env
        return pkt

    def _queued(self) -> QueuedPacket:
        q = self._q
        if q is None:
            data = self._data
            assert data is not None
            q = self._q = decode_packet(data, 16, len(data))
        return q

    # ---- metadata from the queue message (no parsing) ------------------------------------
    @property
    def id(self) -> int:
        if self._q is None:
            return _U32(self._data, 24)[0]  # type: ignore[arg-type]
        return self._q.id

    @property
    def hook(self) -> str:
        h = self._data[30] if self._q is None else self._q.hook  # type: ignore[index]
        return HOOK_NAMES[h] if 0 <= h < 5 else str(h)

    @property
    def mark(self) -> int:
        return self._queued().mark

    @property
    def length(self) -> int:
        return self._queued().length

    def _copied(self) -> bytes:
        q = self._q
        if q is None:
            return _datagram_payload(self._data)  # type: ignore[arg-type]
        return q.payload

    @property
    def raw(self) -> bytes:
        """The bytes copied to userspace, from the network header on (maybe only headers)."""
        if self._l3 is None:
            return self._copied()
        return self._raw  # type: ignore[return-value]

    @property
    def ct_state(self) -> str | None:
        """Conntrack state, or None where the kernel cannot attach conntrack to queued packets."""
        info = self._queued().ct_info
        return None if info is None else CT_STATE_NAMES.get(info)  # type: ignore[call-overload]

    @property
    def iif(self) -> str | None:
        return self._name(self._queued().indev)

    @property
    def oif(self) -> str | None:
        return self._name(self._queued().outdev)

    def _name(self, index: int) -> str | None:
        if not index:
            return None
        ifname = self._env[0]
        if ifname is None:
            return str(index)
        return ifname(index)

    def log(self, message: str) -> None:
        """Write ``message`` to the kernel log (dmesg) and the runner's log."""
        logger = self._env[1]
        if logger is not None:
            logger(str(message))

    # ---- network and transport headers (parsed together, on first use) --------------------
    def _parse(self) -> None:
        q = self._q
        if q is None:  # _datagram_payload, inlined: this runs once for most packets
            data = self._data
            n = len(data)  # type: ignore[arg-type]
            layout = _LAYOUTS.get(n)
            if layout is None:
                raw = _learn_layout(data, n)  # type: ignore[arg-type]
            else:
                check, values, start, end = layout
                if check(data) == values:
                    raw = data[start:end]  # type: ignore[index]
                else:
                    raw = _learn_layout(data, n)  # type: ignore[arg-type]
        else:
            raw = q.payload
        n = len(raw)
        if n >= 20:
            b0, frag, proto = _V4_HEAD(raw)
            v = b0 >> 4
            if v == 4:  # the usual case, in few steps
                off = (b0 & 0x0F) << 2
                if off < 20 or off > n:
                    raise PacketError(f"the IPv4 header length {off} is invalid for a packet "
                                      f"of {n} copied bytes.")
                if frag & 0x1FFF:
                    off = -1  # a later fragment has no transport header
                self._raw = raw
                self._proto = proto
                self._l4off = off
                self._l3 = 4
                return
        elif not n:
            raise PacketError("the packet is empty: no network header was copied.")
        else:
            v = raw[0] >> 4
        if v == 4:
            raise PacketError(f"the IPv4 header is truncated: {n} of 20 bytes.")
        if v == 6:
            if n < 40:
                raise PacketError(f"the IPv6 header is truncated: {n} of 40 bytes.")
            proto, off = raw[6], 40
            while proto in _V6_EXT:
                if off + 8 > n:
                    raise PacketError("an IPv6 extension header is truncated.")
                nxt = raw[off]
                if proto == 44:
                    if ((raw[off + 2] << 8) | raw[off + 3]) >> 3:
                        proto, off = nxt, -1
                        break
                    size = 8
                elif proto == 51:
                    size = (raw[off + 1] + 2) * 4
                else:
                    size = (raw[off + 1] + 1) * 8
                proto, off = nxt, off + size
        else:
            raise PacketError(f"the packet's IP version field is {v}; expected 4 or 6.")
        self._raw, self._proto, self._l4off, self._l3 = raw, proto, off, v

    @property
    def version(self) -> int:
        if self._l3 is None:
            self._parse()
        return self._l3  # type: ignore[return-value]

    @property
    def src(self) -> IPv4 | IPv6:
        if self._l3 is None:
            self._parse()
        if self._l3 == 4:
            ip = _U32(self._raw, 12)[0]  # type: ignore[arg-type]
            return _V4_SEEN.get(ip) or _v4_new(ip)
        return _v6(self._raw, 8)  # type: ignore[arg-type]

    @property
    def dst(self) -> IPv4 | IPv6:
        if self._l3 is None:
            self._parse()
        if self._l3 == 4:
            ip = _U32(self._raw, 16)[0]  # type: ignore[arg-type]
            return _V4_SEEN.get(ip) or _v4_new(ip)
        return _v6(self._raw, 24)  # type: ignore[arg-type]

    def _transport(self) -> tuple[int, int]:
        """(protocol number, offset of its header; -1 for a non-first fragment)."""
        if self._l3 is None:
            self._parse()
        return self._proto, self._l4off  # type: ignore[return-value]

    @property
    def proto(self) -> str | int:
        """"tcp", "udp", "icmp", "icmpv6", "sctp", or the protocol number for others."""
        if self._l3 is None:
            self._parse()
        number = self._proto
        return PROTO_NAMES.get(number, number)  # type: ignore[arg-type]

    @property
    def proto_number(self) -> int:
        return self._transport()[0]

    def _l4(self, need: int) -> int | None:
        proto, off = self._transport()
        if off < 0:
            return None
        if off + need > len(self._raw):  # type: ignore[arg-type]
            raise PacketError(f"the {PROTO_NAMES.get(proto, proto)} header is truncated: "
                              f"{len(self._raw) - off} bytes copied, {need} needed.")  # type: ignore[arg-type]
        return off

    @property
    def sport(self) -> int | None:
        if self._l3 is None:
            self._parse()
        if self._proto in _PORT_PROTOS:
            off = self._l4off
            if off >= 0:  # type: ignore[operator]
                try:
                    return _PORTS(self._raw, off)[0]  # type: ignore[arg-type]
                except struct.error:
                    self._l4(4)  # raises the truncation error
        return None

    @property
    def dport(self) -> int | None:
        if self._l3 is None:
            self._parse()
        if self._proto in _PORT_PROTOS:
            off = self._l4off
            if off >= 0:  # type: ignore[operator]
                try:
                    return _PORTS(self._raw, off)[1]  # type: ignore[arg-type]
                except struct.error:
                    self._l4(4)  # raises the truncation error
        return None

    @property
    def icmp_type(self) -> int | None:
        if self._l3 is None:
            self._parse()
        if self._proto not in (1, 58):
            return None
        off = self._l4(1)
        return None if off is None else self._raw[off]  # type: ignore[index]

    @property
    def payload(self) -> bytes:
        """The transport payload (after the TCP/UDP/ICMP header)."""
        proto, off = self._transport()
        if off < 0:
            return b""
        if proto == 6:
            off13 = self._l4(13)
            assert off13 is not None
            hlen = (self._raw[off + 12] >> 4) * 4
        elif proto in (17, 1, 58):
            hlen = 8
        else:
            hlen = 0
        start = off + hlen
        cap_len = self._queued().cap_len
        if cap_len is not None and cap_len > len(self._raw):  # type: ignore[arg-type]
            raise PacketError("only the packet's headers were copied to userspace; declare the "
                              "hook with @hook(..., payload=True) to read its payload.")
        if start > len(self._raw):
            raise PacketError("the transport header is truncated.")
        return self._raw[start:]

    def __repr__(self) -> str:
        try:
            return (f"<Packet {self.hook} {self.proto} {self.src}:{self.sport} -> "
                    f"{self.dst}:{self.dport} len={self.length}>")
        except PacketError as exc:
            return f"<Packet {self.hook} malformed: {exc}>"
