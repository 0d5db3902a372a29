"""The packet a hook function sees: lazily parsed headers over the bytes the queue copied. Pure.

Nothing is parsed until a field is read; what a hook does not touch costs nothing. A truncated
or malformed header raises PacketError, and only that.

The fields hooks read most (version, src, dst, proto, sport, dport) come from a core class: the
C one in ``_hot`` (built from ``_hot.c`` at install) where it exists, else ``PureCore`` below.
Both give the same results (the runner takes the pure one when MINIFW_PURE_PYTHON=1 is set).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any, Callable

from ..errors import PacketError
from ..netlink.nfqueue import (
    AFTER_PACKET_HDR, CT_STATE_NAMES, HOOK_AT, NLMSG_HDR, PACKET_ID_AT, Nfqa, QueuedPacket,
    decode_packet,
)
from ..netlink.nlmsg import NLA_TYPE_MASK

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
# The usual packet in ONE unpack: an IPv4 header of 20 bytes and the 4 bytes after it
# (version/IHL, fragment field, protocol, source, destination, and the ports when the
# protocol has them).
_V4_FAST = struct.Struct(">B5xHxB2xIIHH").unpack_from
_PORTS = struct.Struct(">HH").unpack_from
# protocol number -> what pkt.proto returns (a name, or the number)
_PROTO_OF = tuple(PROTO_NAMES.get(i, i) for i in range(256))


def _v6(raw: Any, at: int) -> IPv6:
    addr = _new(IPv6)
    addr._ip = int.from_bytes(raw[at:at + 16], "big")
    addr._scope_id = None
    return addr


_PAYLOAD = int(Nfqa.PAYLOAD)
_NLA_HEAD = struct.Struct("=HH").unpack_from
# Attribute layouts seen before, by datagram length: (unpacker of every attribute header from
# the one after the packet header to the payload's, the values they had, payload start, end).
# A datagram whose headers all read the same values has its payload at the same place: the
# same walk, read with one unpack instead of a Python loop.
_LAYOUTS: dict[int, tuple[Callable[[Any], tuple], tuple, int, int]] = {}
_LAYOUTS_MAX = 256


def _payload_span(data: Any) -> tuple[int, int]:
    """Where the NFQA_PAYLOAD bytes of a queued-packet datagram start and end."""
    n = len(data)
    layout = _LAYOUTS.get(n)
    if layout is not None and layout[0](data) == layout[1]:
        return layout[2], layout[3]
    return _learn_layout(data, n)


def _learn_layout(data: Any, n: int) -> tuple[int, int]:
    """Walk the attributes (as _find_payload does) and remember the layout for this length."""
    off = AFTER_PACKET_HDR  # the datagram's first attribute is the packet header
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
        if kind & NLA_TYPE_MASK == _PAYLOAD:  # the last attribute the kernel writes
            if off + length > n:
                raise PacketError("the payload attribute of a queued packet runs past the end "
                                  "of its message.")
            if len(_LAYOUTS) >= _LAYOUTS_MAX:
                _LAYOUTS.clear()
            _LAYOUTS[n] = (struct.Struct("".join(fmt)).unpack_from, tuple(values), off + 4,
                           off + length)
            return off + 4, off + length
        off += (length + 3) & ~3
    if off > ((n + 3) & ~3):
        raise PacketError(f"the last netlink attribute of a queued packet runs {off - n} "
                          "bytes past the end of its message.")
    return n, n


def _bytes(view: Any) -> bytes:
    return view if type(view) is bytes else bytes(view)


_BROKEN_EXT = -2  # _l4 when the IPv6 extension headers are truncated or run past the packet


def v6_transport(buf: Any, proto: int, off: int, end: int) -> tuple[int | None, int]:
    """Walk the IPv6 extension headers that start at ``off`` with next header ``proto``, in
    ``buf`` up to ``end``: (the transport protocol, its header's offset); (its protocol, -1)
    for a later fragment, which has no transport header; (None, _BROKEN_EXT) when a header is
    truncated or runs past ``end``. (The events reader parses NFLOG payloads with it too.)"""
    while proto in _V6_EXT:
        if off + 8 > end:
            return None, _BROKEN_EXT
        nxt = buf[off]
        if proto == 44:
            if ((buf[off + 2] << 8) | buf[off + 3]) >> 3:
                return nxt, -1
            size = 8
        elif proto == 51:
            size = (buf[off + 1] + 2) * 4
        else:
            size = (buf[off + 1] + 1) * 8
        proto, off = nxt, off + size
        if off > end:
            return None, _BROKEN_EXT
    return proto, off
_BROKEN_EXT_MSG = "an IPv6 extension header is truncated or runs past the packet."


class PureCore:
    """The fields hooks read most, in pure Python (the C core in ``_hot`` does the same)."""

    __slots__ = ("_q", "_data", "_buf", "_p", "_e", "_l3", "_l4", "_proto", "_h", "_env")

    @classmethod
    def from_datagram(cls, data: Any, env: tuple) -> Any:
        """A packet over one whole queued-packet datagram (netlink header included) whose first
        attribute is a valid NFQA_PACKET_HDR, as the runner's serve loops build them (the C
        core has the same constructor). Nothing is read until a field is: ``data`` must not
        change while the packet is in use. ``env`` comes from ``environment()``."""
        pkt = _new(cls)
        pkt._q = None
        pkt._data = data
        pkt._l3 = None
        pkt._env = env
        return pkt

    def _parse(self) -> None:
        q = self._q
        if q is None:  # _payload_span, inlined: this runs once for most packets
            buf = self._data
            n = len(buf)
            layout = _LAYOUTS.get(n)
            if layout is None:
                p, e = _learn_layout(buf, n)
            else:
                check, values, p, e = layout
                if check(buf) != values:
                    p, e = _learn_layout(buf, n)
        else:
            buf = q.payload
            p, e = 0, len(buf)
        if e - p >= 24:
            h = _V4_FAST(buf, p)
            if h[0] == 0x45 and not h[1] & 0x1FFF:  # IPv4, no options, not a later fragment
                self._buf = buf
                self._p = p
                self._e = e
                self._proto = h[2]
                self._l4 = p + 20
                self._h = h
                self._l3 = 4
                return
        self._parse_other(buf, p, e)

    @property
    def version(self) -> int:
        if self._l3 is None:
            self._parse()
        return self._l3  # type: ignore[return-value]

    @property
    def src(self) -> IPv4 | IPv6:
        if self._l3 is None:
            self._parse()
        h = self._h
        if h is not None:
            ip = h[3]
            return _V4_SEEN.get(ip) or _v4_new(ip)
        return self._addr(12, 8)

    @property
    def dst(self) -> IPv4 | IPv6:
        if self._l3 is None:
            self._parse()
        h = self._h
        if h is not None:
            ip = h[4]
            return _V4_SEEN.get(ip) or _v4_new(ip)
        return self._addr(16, 24)

    @property
    def proto(self) -> str | int:
        """"tcp", "udp", "icmp", "icmpv6", "sctp", or the protocol number for others."""
        if self._l3 is None:
            self._parse()
        try:
            return _PROTO_OF[self._proto]  # type: ignore[index]
        except TypeError:  # None: the IPv6 extension headers are broken
            raise PacketError(_BROKEN_EXT_MSG) from None

    @property
    def sport(self) -> int | None:
        if self._l3 is None:
            self._parse()
        h = self._h
        if h is not None:
            return h[5] if h[2] in _PORT_PROTOS else None
        return self._port(0)

    @property
    def dport(self) -> int | None:
        if self._l3 is None:
            self._parse()
        h = self._h
        if h is not None:
            return h[6] if h[2] in _PORT_PROTOS else None
        return self._port(1)


class PacketMethods:
    """One queued packet. Fields: version, src, dst, proto, sport, dport, icmp_type, length,
    iif, oif, hook, mark, ct_state, payload, raw; and ``log(msg)``.

    Built either from a decoded QueuedPacket (``Packet(queued, ...)``) or, by the runner's
    serve loops, straight from a datagram (``Packet.from_datagram(data, env)``, the core's
    constructor): then even the netlink attributes are
    only walked when a field needs them. Headers are read in place (``_buf[_p:_e]`` is the
    packet from its network header on); nothing is copied until ``raw`` or ``payload``.
    """

    __slots__ = ()  # the slots are the core's

    def __init__(self, queued: QueuedPacket, ifname: Callable[[int], str | None] | None = None,
                 logger: Callable[[str], None] | None = None, full_copy: bool = True,
                 reporter: Callable[[Any, str], None] | None = None):
        self._q: QueuedPacket | None = queued
        self._data: Any = None
        self._l3: int | None = None       # version, once parsed (then _buf, _p, _e, _l4, ...)
        self._env = (ifname, logger, full_copy, reporter)

    @staticmethod
    def environment(ifname: Callable[[int], str | None] | None,
                    logger: Callable[[str], None] | None, full_copy: bool,
                    reporter: Callable[[Any, str], None] | None = None) -> tuple:
        """What ``from_datagram`` (the core's constructor) takes as ``env``; build it once per
        queue. ``reporter(pkt, text)`` also gets each pkt.log() (the runner's hook events)."""
        return (ifname, logger, full_copy, reporter)

    def _queued(self) -> QueuedPacket:
        q = self._q
        if q is None:
            data = self._data
            assert data is not None
            q = self._q = decode_packet(data, NLMSG_HDR.size, len(data))
        return q

    # ---- metadata from the queue message (no parsing) ------------------------------------
    @property
    def id(self) -> int:
        if self._q is None:
            return _U32(self._data, PACKET_ID_AT)[0]
        return self._q.id

    @property
    def hook(self) -> str:
        h = self._data[HOOK_AT] if self._q is None else self._q.hook
        return HOOK_NAMES[h] if 0 <= h < 5 else str(h)

    @property
    def mark(self) -> int:
        return self._queued().mark

    @property
    def length(self) -> int:
        return self._queued().length

    @property
    def raw(self) -> bytes:
        """The bytes copied to userspace, from the network header on (maybe only headers)."""
        if self._l3 is None:
            q = self._q
            if q is None:
                start, end = _payload_span(self._data)
                return _bytes(self._data[start:end])
            return q.payload
        return _bytes(self._buf[self._p:self._e])

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
        """Write ``message`` to the kernel log (dmesg) and the runner's log, and report it to
        the daemon's event stream when one listens."""
        env = self._env
        text = str(message)
        if env[1] is not None:
            env[1](text)
        if env[3] is not None:
            env[3](self, text)

    # ---- network and transport headers (parsed together, on first use) --------------------
    def _parse_other(self, buf: Any, p: int, e: int) -> None:
        """Everything but the usual IPv4 packet: options, fragments, IPv6, short or bad."""
        n = e - p
        if not n:
            raise PacketError("the packet is empty: no network header was copied.")
        v = buf[p] >> 4
        if v == 4:
            if n < 20:
                raise PacketError(f"the IPv4 header is truncated: {n} of 20 bytes.")
            b0, frag, proto = _V4_HEAD(buf, p)
            off = (b0 & 0x0F) << 2
            if off < 20 or off > n:
                raise PacketError(f"the IPv4 header length {off} is invalid for a packet "
                                  f"of {n} copied bytes.")
            off = -1 if frag & 0x1FFF else p + off  # a later fragment has no transport header
        elif v == 6:
            if n < 40:
                raise PacketError(f"the IPv6 header is truncated: {n} of 40 bytes.")
            # the addresses stay readable when the extension headers are broken; the
            # transport fields raise
            proto, off = v6_transport(buf, buf[p + 6], p + 40, e)
        else:
            raise PacketError(f"the packet's IP version field is {v}; expected 4 or 6.")
        self._buf, self._p, self._e = buf, p, e
        self._proto, self._l4, self._h, self._l3 = proto, off, None, v

    def _addr(self, v4_at: int, v6_at: int) -> IPv4 | IPv6:
        if self._l3 == 4:
            ip = _U32(self._buf, self._p + v4_at)[0]
            return _V4_SEEN.get(ip) or _v4_new(ip)
        return _v6(self._buf, self._p + v6_at)

    def _transport(self) -> tuple[int, int]:
        """(protocol number, offset of its header in _buf; -1 for a non-first fragment)."""
        if self._l3 is None:
            self._parse()
        return self._proto, self._l4  # type: ignore[return-value]

    @property
    def proto_number(self) -> int:
        proto = self._transport()[0]
        if proto is None:
            raise PacketError(_BROKEN_EXT_MSG)
        return proto

    def _l4_at(self, need: int) -> int | None:
        """The transport header's offset in _buf if ``need`` bytes of it were copied; None for
        a later fragment; PacketError if truncated."""
        proto, off = self._transport()
        if off < 0:
            if off == _BROKEN_EXT:
                raise PacketError(_BROKEN_EXT_MSG)
            return None
        if off + need > self._e:  # type: ignore[operator]
            raise PacketError(f"the {PROTO_NAMES.get(proto, proto)} header is truncated: "
                              f"{self._e - off} bytes copied, {need} needed.")  # type: ignore[operator]
        return off

    def _port(self, which: int) -> int | None:
        if self._l4 == _BROKEN_EXT:
            raise PacketError(_BROKEN_EXT_MSG)
        if self._proto in _PORT_PROTOS:
            off = self._l4_at(4)
            if off is not None:
                return _PORTS(self._buf, off)[which]
        return None

    @property
    def icmp_type(self) -> int | None:
        if self._l3 is None:
            self._parse()
        if self._l4 == _BROKEN_EXT:
            raise PacketError(_BROKEN_EXT_MSG)
        if self._proto not in (1, 58):
            return None
        off = self._l4_at(1)
        return None if off is None else self._buf[off]

    @property
    def payload(self) -> bytes:
        """The transport payload (after the TCP/UDP/ICMP header)."""
        proto, off = self._transport()
        if off < 0:
            if off == _BROKEN_EXT:
                raise PacketError(_BROKEN_EXT_MSG)
            return b""
        if proto == 6:
            self._l4_at(13)
            hlen = (self._buf[off + 12] >> 4) * 4
            if hlen < 20:
                raise PacketError(f"the TCP data offset {hlen // 4} is invalid (at least 5).")
        elif proto in (17, 1, 58):
            hlen = 8
        else:
            hlen = 0
        start = off + hlen
        cap_len = self._queued().cap_len
        if cap_len is not None and cap_len > self._e - self._p:  # type: ignore[operator]
            raise PacketError("only the packet's headers were copied to userspace; declare the "
                              "hook with @hook(..., payload=True) to read its payload.")
        if start > self._e:  # type: ignore[operator]
            raise PacketError("the transport header is truncated.")
        return _bytes(self._buf[start:self._e])

    def __repr__(self) -> str:
        try:
            return (f"<Packet {self.hook} {self.proto} {self.src}:{self.sport} -> "
                    f"{self.dst}:{self.dport} len={self.length}>")
        except PacketError as exc:
            return f"<Packet {self.hook} malformed: {exc}>"


def _packet_class(core: type) -> type:
    class Packet(PacketMethods, core):  # type: ignore[valid-type, misc]
        __slots__ = ()
        __doc__ = PacketMethods.__doc__
    return Packet


PurePacket = _packet_class(PureCore)
try:
    from . import _hot
except ImportError:  # not built (no compiler at install): the pure path
    _hot = None  # type: ignore[assignment]
if _hot is not None:
    _hot.configure(_V4_SEEN, _v4_new, _PROTO_OF, _payload_span, PacketError, _BROKEN_EXT_MSG)
    HotPacket: type | None = _packet_class(_hot.PacketCore)
else:
    HotPacket = None
Packet = HotPacket or PurePacket
