"""rtnetlink route lookups (RTM_GETROUTE), as `ip route get` makes them: both ways. Pure.

A request is ``nlmsghdr`` + ``rtmsg`` (family, dst_len, src_len, tos, table, protocol, scope,
type; flags) + attributes RTA_DST (and RTA_SRC, RTA_IIF when the packet comes in on an
interface: then the kernel makes an input lookup, local delivery or forward). The answer is one
RTM_NEWROUTE whose ``rtmsg.type`` says local, unicast, ...; or an NLMSG_ERROR whose errno says
why there is no route (ENETUNREACH, EHOSTUNREACH, EACCES for prohibit, EINVAL for blackhole).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct

from ..errors import PacketError
from .nlmsg import NLA_HDR, NLA_TYPE_MASK, NlmFlag, NlmsgType, align4, attr, message
from .nlmsg import parse_error, split_messages

RTM_NEWROUTE = 24
RTM_GETROUTE = 26
RTMSG = struct.Struct("=BBBBBBBBI")
RTA_DST, RTA_SRC, RTA_IIF, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_MARK = 1, 2, 3, 4, 5, 7, 16
AF_INET, AF_INET6 = 2, 10

# rtmsg.type values (<linux/rtnetlink.h>), by name.
ROUTE_TYPES = {0: "unspec", 1: "unicast", 2: "local", 3: "broadcast", 4: "anycast",
               5: "multicast", 6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw",
               10: "nat", 11: "xresolve"}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclasses.dataclass(frozen=True)
class RouteAnswer:
    """What the kernel's FIB said: a route (``type``, ``oif`` index, ``gateway``) or, when
    ``errno`` is set, that there is none."""

    type: str = "unspec"
    oif: int | None = None
    gateway: Address | None = None
    prefsrc: Address | None = None
    errno: int = 0


def getroute_request(seq: int, dst: Address, *, src: Address | None = None,
                     iif: int | None = None, mark: int | None = None) -> bytes:
    """An RTM_GETROUTE request for ``dst`` (an input lookup when ``iif`` is given)."""
    family = AF_INET if dst.version == 4 else AF_INET6
    if src is not None and src.version != dst.version:
        raise PacketError(f"a route lookup needs one IP version: {src} and {dst}")
    bits = dst.max_prefixlen
    body = RTMSG.pack(family, bits, bits if src is not None else 0, 0, 0, 0, 0, 0, 0)
    body += attr(RTA_DST, dst.packed)
    if src is not None:
        body += attr(RTA_SRC, src.packed)
    if iif is not None:
        body += attr(RTA_IIF, struct.pack("=I", iif))
    if mark is not None:
        body += attr(RTA_MARK, struct.pack("=I", mark))
    return message(RTM_GETROUTE, NlmFlag.REQUEST, seq, body)


def parse_getroute(data: bytes, seq: int) -> RouteAnswer | None:
    """The answer to request ``seq`` in ``data``; None if ``data`` holds no answer to it.

    Raises PacketError on a malformed message."""
    for msg_type, _flags, msg_seq, _pid, body in split_messages(data):
        if msg_seq != seq:
            continue
        if msg_type == NlmsgType.ERROR:
            code, _ = parse_error(body)
            if code == 0:
                continue  # an acknowledgement; the route comes in its own message
            return RouteAnswer(errno=code)
        if msg_type == RTM_NEWROUTE:
            return _route(body)
    return None


def _route(body: memoryview) -> RouteAnswer:
    if len(body) < RTMSG.size:
        raise PacketError(f"an rtmsg is truncated: {len(body)} bytes, it needs {RTMSG.size}")
    family, *_, rtype, _flags = RTMSG.unpack_from(body, 0)
    attrs = _attrs(body[RTMSG.size:])
    oif = attrs.get(RTA_OIF)
    return RouteAnswer(type=ROUTE_TYPES.get(rtype, str(rtype)),
                       oif=struct.unpack("=I", oif)[0] if oif is not None and len(oif) == 4
                       else None,
                       gateway=_address(family, attrs.get(RTA_GATEWAY)),
                       prefsrc=_address(family, attrs.get(RTA_PREFSRC)))


def _attrs(view: memoryview) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    offset = 0
    while offset + NLA_HDR.size <= len(view):
        length, kind = NLA_HDR.unpack_from(view, offset)
        if length < NLA_HDR.size or offset + length > len(view):
            raise PacketError(f"a route attribute at offset {offset} claims {length} bytes, "
                              f"but {len(view) - offset} are left")
        out[kind & NLA_TYPE_MASK] = bytes(view[offset + NLA_HDR.size:offset + length])
        offset += align4(length)
    return out


def _address(family: int, raw: bytes | None) -> Address | None:
    if raw is None:
        return None
    size = 4 if family == AF_INET else 16
    if len(raw) != size:
        raise PacketError(f"a route address has {len(raw)} bytes, expected {size}")
    return ipaddress.ip_address(raw)
