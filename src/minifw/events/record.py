"""One event: an NFLOG packet (or a hook function's packet) and its origin -> the event dict.

The payload is whatever the copy range kept, from the network header on; every header is read
defensively: a truncated or garbage payload gives nulls, never an exception. The rule, hook,
priority and action come from the origin (``compile.events.event_origin``), never guessed.
"""

from __future__ import annotations

import datetime
import ipaddress
import struct
from typing import Any, Callable

HOOK_NAMES = ("prerouting", "input", "forward", "output", "postrouting")
FAMILIES = {2: "ip", 10: "ip6"}
_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
_PORT_PROTOS = frozenset((6, 17, 132, 136))  # tcp, udp, sctp, udplite: ports come first
# IPv6 extension headers walked to reach the transport header: hop-by-hop, routing,
# destination options, AH, fragment
_V6_EXT = frozenset((0, 43, 60, 51, 44))
_V4_HEAD = struct.Struct(">BxHxxHxB2x4s4s")  # version/IHL, total length, fragment, protocol
_PORTS = struct.Struct(">HH")

# The fields of an event, in the order they are written.
FIELDS = ("ts", "rule", "hook", "priority", "action", "family", "proto", "src", "dst",
          "sport", "dport", "icmp_type", "iif", "oif", "len", "prefix")


def format_ts(seconds: float) -> str:
    """RFC 3339 in UTC with microseconds: ``2026-12-02T11:29:40.123456Z``."""
    micros = int(round(seconds * 1_000_000))
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> float | None:
    """Seconds since the epoch of a ``ts`` written by format_ts; None if it is not one."""
    try:
        moment = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except (TypeError, ValueError):
        return None
    return (moment - datetime.datetime(1970, 1, 1)).total_seconds()


def _proto_name(number: int) -> str:
    return _PROTO_NAMES.get(number) or str(number)


def parse_packet(payload: bytes, family: int | None = None) -> dict[str, Any]:
    """family, proto, src, dst, sport, dport, icmp_type and len of the packet whose bytes from
    the network header on are ``payload`` (maybe cut by the copy range). ``family`` (2 or 10,
    from the netlink message) wins over the version nibble; what cannot be read is None."""
    out: dict[str, Any] = {"family": FAMILIES.get(family) if family else None, "proto": None,
                           "src": None, "dst": None, "sport": None, "dport": None,
                           "icmp_type": None, "len": None}
    n = len(payload)
    version = payload[0] >> 4 if n else None
    if family not in FAMILIES:
        family = {4: 2, 6: 10}.get(version)  # type: ignore[arg-type]
        out["family"] = FAMILIES.get(family)  # type: ignore[arg-type]
    if family == 2 and version == 4:
        l4, proto = _ipv4(payload, out)
    elif family == 10 and version == 6:
        l4, proto = _ipv6(payload, out)
    else:
        return out
    if proto is None:
        return out
    out["proto"] = _proto_name(proto)
    if l4 is None:  # a later fragment, or extension headers past the copy range
        return out
    if proto in _PORT_PROTOS:
        if l4 + 4 <= n:
            out["sport"], out["dport"] = _PORTS.unpack_from(payload, l4)
    elif proto in (1, 58):
        if l4 + 1 <= n:
            out["icmp_type"] = payload[l4]
    return out


def _ipv4(payload: bytes, out: dict[str, Any]) -> tuple[int | None, int | None]:
    if len(payload) < 20:
        return None, None
    b0, total, frag, proto, src, dst = _V4_HEAD.unpack_from(payload)
    ihl = (b0 & 0x0F) * 4
    out["src"] = str(ipaddress.IPv4Address(src))
    out["dst"] = str(ipaddress.IPv4Address(dst))
    out["len"] = total
    if ihl < 20:
        return None, None  # the header length is garbage: so is what follows it
    if frag & 0x1FFF:
        return None, proto
    return ihl, proto


def _ipv6(payload: bytes, out: dict[str, Any]) -> tuple[int | None, int | None]:
    n = len(payload)
    if n < 40:
        return None, None
    out["src"] = str(ipaddress.IPv6Address(payload[8:24]))
    out["dst"] = str(ipaddress.IPv6Address(payload[24:40]))
    plen = (payload[4] << 8) | payload[5]
    out["len"] = 40 + plen if plen else None  # 0: a jumbogram, its length is elsewhere
    proto, off = payload[6], 40
    while proto in _V6_EXT:
        if off + 8 > n:
            return None, None  # the chain runs past what was copied: the protocol is unknown
        nxt = payload[off]
        if proto == 44:
            if (((payload[off + 2] << 8) | payload[off + 3]) >> 3):
                return None, nxt  # a later fragment: no transport header here
            size = 8
        elif proto == 51:
            size = (payload[off + 1] + 2) * 4
        else:
            size = (payload[off + 1] + 1) * 8
        proto, off = nxt, off + size
    if off > n:
        return None, proto
    return off, proto


def build_event(fields: dict[str, Any], *, ts: float, origin: Any = None, prefix: str | None,
                hook: int | str | None = None, iif: str | None = None,
                oif: str | None = None) -> dict[str, Any]:
    """The event (fields in FIELDS order) from ``fields`` (parse_packet's), its origin (an
    object with rule, hook, priority, action, or None when the prefix maps to nothing) and
    the packet's own hook number or name, used when the origin has none."""
    if isinstance(hook, int):
        hook = HOOK_NAMES[hook] if 0 <= hook < len(HOOK_NAMES) else None
    event: dict[str, Any] = {"ts": format_ts(ts), "rule": None, "hook": hook, "priority": None,
                             "action": None}
    if origin is not None:
        event["rule"] = origin.rule
        event["hook"] = _text(origin.hook) or hook
        event["priority"] = origin.priority
        event["action"] = _text(origin.action)
    for key in ("family", "proto", "src", "dst", "sport", "dport", "icmp_type"):
        event[key] = fields.get(key)
    event["iif"] = iif
    event["oif"] = oif
    event["len"] = fields.get("len")
    event["prefix"] = prefix
    return event


def _text(value: Any) -> Any:
    """An enum's value (Hook.INPUT -> "input"), anything else as it is."""
    return getattr(value, "value", value)


class Interfaces:
    """ifindex -> name, cached; ``lookup`` is the edge (socket.if_indextoname in the daemon's
    network namespace). An index it cannot name is given as its number."""

    def __init__(self, lookup: Callable[[int], str]):
        self._lookup = lookup
        self._names: dict[int, str] = {}

    def name(self, index: int | None) -> str | None:
        if not index:
            return None
        try:
            return self._names[index]
        except KeyError:
            pass
        try:
            name = self._lookup(index)
        except OSError:
            return str(index)  # not cached: the interface may appear later
        if len(self._names) >= 4096:
            self._names.clear()
        self._names[index] = name
        return name

    def forget(self) -> None:
        """Interfaces renamed or re-created: look them up again."""
        self._names.clear()


def format_line(event: dict[str, Any]) -> str:
    """One readable line: ``<ts> <action> <rule> <hook>/<priority> <proto> <src>:<sport> ->
    <dst>:<dport> [type N] [iif=..] [oif=..] len=N``."""
    def end(addr: Any, port: Any) -> str:
        text = addr if addr is not None else "?"
        if port is not None:
            text = f"[{text}]:{port}" if ":" in str(text) else f"{text}:{port}"
        return str(text)

    rule = event.get("rule")
    who = rule if rule is not None else f"prefix={event.get('prefix')!r}"
    where = event.get("hook") or "?"
    if event.get("priority") is not None:
        where = f"{where}/{event['priority']}"
    parts = [str(event.get("ts")), str(event.get("action") or "-"), str(who), str(where),
             str(event.get("proto") or "?"),
             end(event.get("src"), event.get("sport")), "->",
             end(event.get("dst"), event.get("dport"))]
    if event.get("icmp_type") is not None:
        parts.append(f"type={event['icmp_type']}")
    for key in ("iif", "oif", "len"):
        if event.get(key) is not None:
            parts.append(f"{key}={event[key]}")
    return " ".join(parts)
