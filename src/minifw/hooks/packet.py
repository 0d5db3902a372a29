"""The packet a hook function sees: lazily parsed headers over the bytes the queue copied. Pure.

Nothing is parsed until a field is read; what a hook does not touch costs nothing. A truncated
or malformed header raises PacketError, and only that.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable

from ..errors import PacketError
from ..netlink.nfqueue import CT_STATE_NAMES, QueuedPacket

HOOK_NAMES = ("prerouting", "input", "forward", "output", "postrouting")
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
_PORT_PROTOS = (6, 17, 132, 136)
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
    """An IPv4 address that also equals its text: ``pkt.src == "198.18.2.2"``."""

    def __eq__(self, other: Any) -> bool:
        value = _as_int(other, 4)
        return value is not None and value == self._ip

    def __hash__(self) -> int:  # the same value as ipaddress's, computed without int()
        return hash(hex(self._ip))


class IPv6(ipaddress.IPv6Address):
    """An IPv6 address that also equals its text."""

    def __eq__(self, other: Any) -> bool:
        value = _as_int(other, 6)
        return value is not None and value == self._ip

    def __hash__(self) -> int:
        return hash((self._ip, self._scope_id))  # what ipaddress hashes


def _v4(raw: bytes, at: int) -> IPv4:
    addr = _new(IPv4)  # skip ipaddress's input checks: 4 bytes are always a valid address
    addr._ip = int.from_bytes(raw[at:at + 4], "big")
    return addr


def _v6(raw: bytes, at: int) -> IPv6:
    addr = _new(IPv6)
    addr._ip = int.from_bytes(raw[at:at + 16], "big")
    addr._scope_id = None
    return addr


_new = object.__new__


class Packet:
    """One queued packet. Fields: version, src, dst, proto, sport, dport, icmp_type, length,
    iif, oif, hook, mark, ct_state, payload, raw; and ``log(msg)``."""

    __slots__ = ("_q", "_raw", "_l3", "_l4off", "_proto", "_ifname", "_logger", "_full")

    def __init__(self, queued: QueuedPacket, ifname: Callable[[int], str | None] | None = None,
                 logger: Callable[[str], None] | None = None, full_copy: bool = True):
        self._q = queued
        self._raw: bytes | None = None
        self._l3: int | None = None       # version, once parsed
        self._l4off: int | None = None    # offset of the transport header
        self._proto: int | None = None
        self._ifname = ifname
        self._logger = logger
        self._full = full_copy

    # ---- metadata from the queue message (no parsing) ------------------------------------
    @property
    def id(self) -> int:
        return self._q.id

    @property
    def hook(self) -> str:
        h = self._q.hook
        return HOOK_NAMES[h] if 0 <= h < 5 else str(h)

    @property
    def mark(self) -> int:
        return self._q.mark

    @property
    def length(self) -> int:
        return self._q.length

    @property
    def raw(self) -> bytes:
        """The bytes copied to userspace, from the network header on (maybe only headers)."""
        raw = self._raw
        if raw is None:
            raw = self._raw = self._q.payload
        return raw

    @property
    def ct_state(self) -> str | None:
        """Conntrack state, or None where the kernel cannot attach conntrack to queued packets."""
        info = self._q.ct_info
        return None if info is None else CT_STATE_NAMES.get(info)  # type: ignore[call-overload]

    @property
    def iif(self) -> str | None:
        return self._name(self._q.indev)

    @property
    def oif(self) -> str | None:
        return self._name(self._q.outdev)

    def _name(self, index: int) -> str | None:
        if not index:
            return None
        if self._ifname is None:
            return str(index)
        return self._ifname(index)

    def log(self, message: str) -> None:
        """Write ``message`` to the kernel log (dmesg) and the runner's log."""
        if self._logger is not None:
            self._logger(str(message))

    # ---- network and transport headers (parsed together, on first use) --------------------
    def _parse(self) -> None:
        raw = self._q.payload
        n = len(raw)
        if not n:
            raise PacketError("the packet is empty: no network header was copied.")
        v = raw[0] >> 4
        if v == 4:
            if n < 20:
                raise PacketError(f"the IPv4 header is truncated: {n} of 20 bytes.")
            off = (raw[0] & 0x0F) * 4
            if off < 20 or off > n:
                raise PacketError(f"the IPv4 header length {off} is invalid for a packet of "
                                  f"{n} copied bytes.")
            proto = raw[9]
            if (raw[6] & 0x1F) or raw[7]:
                off = -1  # a later fragment has no transport header
        elif v == 6:
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
            return _v4(self._raw, 12)  # type: ignore[arg-type]
        return _v6(self._raw, 8)  # type: ignore[arg-type]

    @property
    def dst(self) -> IPv4 | IPv6:
        if self._l3 is None:
            self._parse()
        if self._l3 == 4:
            return _v4(self._raw, 16)  # type: ignore[arg-type]
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
        if self._proto not in _PORT_PROTOS:
            return None
        off = self._l4(4)
        if off is None:
            return None
        raw = self._raw
        return (raw[off] << 8) | raw[off + 1]  # type: ignore[index]

    @property
    def dport(self) -> int | None:
        if self._l3 is None:
            self._parse()
        if self._proto not in _PORT_PROTOS:
            return None
        off = self._l4(4)
        if off is None:
            return None
        raw = self._raw
        return (raw[off + 2] << 8) | raw[off + 3]  # type: ignore[index]

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
        if self._q.cap_len is not None and self._q.cap_len > len(self._raw):
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
