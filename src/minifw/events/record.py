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
_V4_HEAD = struct.Struct(">BxHxxHxB2x4s4s")  # version/IHL, total length, fragment, protocol
_PORTS = struct.Struct(">HH")
# the usual IPv4 packet in one unpack: its header's fields and the 4 bytes after it
_V4_FAST = struct.Struct(">BxHxxHxB2x4s4sHH").unpack_from
_PROTO_TEXT = tuple(_PROTO_NAMES.get(n) or str(n) for n in range(256))
_V4_TEXT: dict[bytes, str] = {}  # addresses seen lately: a flood comes from a few


def _v4_text(packed: bytes) -> str:
    text = _V4_TEXT.get(packed)
    if text is None:
        if len(_V4_TEXT) >= 65536:
            _V4_TEXT.clear()
        text = _V4_TEXT[packed] = str(ipaddress.IPv4Address(packed))
    return text

# The fields of an event, in the order they are written.
FIELDS = ("ts", "rule", "hook", "priority", "action", "family", "proto", "src", "dst",
          "sport", "dport", "icmp_type", "iif", "oif", "len", "prefix")


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def format_ts(seconds: float) -> str:
    """RFC 3339 in UTC with microseconds: ``2026-12-02T11:29:40.123456Z``. (The text of the
    whole second is kept: events come in bursts within one.)"""
    whole, micros = divmod(int(round(seconds * 1_000_000)), 1_000_000)
    last = _second
    if last[0] != whole:
        moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=whole)
        last[1] = moment.strftime("%Y-%m-%dT%H:%M:%S")
        last[0] = whole
    return f"{last[1]}.{micros:06d}Z"


def parse_ts(text: str) -> float | None:
    """Seconds since the epoch of a ``ts`` written by format_ts; None if it is not one."""
    try:
        moment = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except (TypeError, ValueError):
        return None
    return (moment - datetime.datetime(1970, 1, 1)).total_seconds()


def _proto_name(number: int) -> str:
    return _PROTO_TEXT[number]


def parse_packet(payload: bytes, family: int | None = None) -> dict[str, Any]:
    """family, proto, src, dst, sport, dport, icmp_type and len of the packet whose bytes from
    the network header on are ``payload`` (maybe cut by the copy range). ``family`` (2 or 10,
    from the netlink message) wins over the version nibble; what cannot be read is None."""
    if family == 2 and len(payload) >= 24:
        b0, total, frag, proto, src, dst, sport, dport = _V4_FAST(payload)
        if b0 == 0x45 and not frag & 0x1FFF:  # the usual packet: no options, no later fragment
            ports = proto in _PORT_PROTOS
            return {"family": "ip", "proto": _PROTO_TEXT[proto], "src": _v4_text(src),
                    "dst": _v4_text(dst), "sport": sport if ports else None,
                    "dport": dport if ports else None,
                    "icmp_type": sport >> 8 if proto == 1 else None, "len": total}
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
    out["src"] = _v4_text(src)
    out["dst"] = _v4_text(dst)
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
    # imported here: the hooks package loads the NFQUEUE codec, which `minifw log` never needs
    from ..hooks.packet import v6_transport
    proto, off = v6_transport(payload, payload[6], 40, n)
    return (off if off >= 0 else None), proto


def build_event(fields: dict[str, Any], *, ts: float, origin: Any = None, prefix: str | None,
                hook: int | str | None = None, iif: str | None = None,
                oif: str | None = None) -> dict[str, Any]:
    """The event (fields in FIELDS order) from ``fields`` (parse_packet's), its origin (an
    object with rule, hook, priority, action, or None when the prefix maps to nothing) and
    the packet's own hook number or name, used when the origin has none."""
    if isinstance(hook, int):
        hook = HOOK_NAMES[hook] if 0 <= hook < len(HOOK_NAMES) else None
    rule = priority = action = None
    if origin is not None:
        rule, priority, action = origin.rule, origin.priority, _text(origin.action)
        hook = _text(origin.hook) or hook
    get = fields.get
    return {"ts": format_ts(ts), "rule": rule, "hook": hook, "priority": priority,
            "action": action, "family": get("family"), "proto": get("proto"),
            "src": get("src"), "dst": get("dst"), "sport": get("sport"), "dport": get("dport"),
            "icmp_type": get("icmp_type"), "iif": iif, "oif": oif, "len": get("len"),
            "prefix": prefix}


def _text(value: Any) -> Any:
    """An enum's value (Hook.INPUT -> "input"), anything else as it is."""
    return value if type(value) is str else getattr(value, "value", value)


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
    if event.get("message") is not None:  # a hook function's pkt.log() text
        parts.append(f"message={event['message']!r}")
    return " ".join(parts)
