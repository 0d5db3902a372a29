"""Conntrack states for the packets of a capture, inferred from the capture itself. Pure.

A capture does not say what conntrack thought of each packet; this follows its main lines:

- the first packet of a flow gets the state the kernel gives a first packet (``default_state``:
  new for TCP, UDP and ICMP requests; invalid for a reply or error nobody asked for; untracked for
  ICMPv6 neighbour discovery and multicast listener messages);
- once the flow has seen a packet in each direction, every later packet of it is established;
- before that, more packets in the first packet's direction are still new;
- an ICMP error that quotes a flow seen before is related (without the quoted flow: invalid).

A flow is keyed by protocol and both endpoints (ports, or for ICMP the two addresses).
"""

from __future__ import annotations

import dataclasses

from ..model.types import Proto
from .explain import Address, default_state

_ICMP_ERRORS = frozenset({3, 4, 5, 11, 12})
_ICMPV6_ERRORS = frozenset({1, 2, 3, 4})
_ICMP_REPLY_OF = {0: 8, 14: 13, 16: 15, 18: 17}
_ICMPV6_REPLY_OF = {129: 128, 140: 139}

Endpoint = tuple[Address, int]


@dataclasses.dataclass
class _Flow:
    origin: Endpoint
    replied: bool = False


@dataclasses.dataclass(frozen=True)
class Quoted:
    """The flow an ICMP error quotes (from its embedded header), if the parser found one."""

    proto: Proto
    src: Address
    dst: Address
    sport: int = 0
    dport: int = 0


class FlowTracker:
    """Feed packets in capture order; get each one's conntrack state."""

    def __init__(self) -> None:
        self._flows: dict[tuple, _Flow] = {}

    @staticmethod
    def _key(proto: Proto, a: Endpoint, b: Endpoint) -> tuple:
        return (proto.value,) + tuple(sorted([(str(a[0]), a[1]), (str(b[0]), b[1])]))

    def state(self, proto: Proto, src: Address, dst: Address, sport: int | None,
              dport: int | None, icmp_type: int | None, quoted: Quoted | None = None) -> str:
        if proto in (Proto.ICMP, Proto.ICMPV6) and icmp_type is not None:
            errors = _ICMP_ERRORS if proto is Proto.ICMP else _ICMPV6_ERRORS
            if icmp_type in errors:
                if quoted is None:
                    return "invalid"
                key = self._key(quoted.proto, (quoted.src, quoted.sport),
                                (quoted.dst, quoted.dport))
                return "related" if key in self._flows else "invalid"
        if proto.has_ports:
            a: Endpoint = (src, sport or 0)
            b: Endpoint = (dst, dport or 0)
        else:
            a, b = (src, 0), (dst, 0)
        key = self._key(proto, a, b)
        flow = self._flows.get(key)
        if flow is None:
            first = default_state(proto, icmp_type)
            if proto in (Proto.ICMP, Proto.ICMPV6):
                replies = _ICMP_REPLY_OF if proto is Proto.ICMP else _ICMPV6_REPLY_OF
                if icmp_type in replies or first != "new":
                    return first  # nothing to track: a reply without its request, or untracked
            self._flows[key] = _Flow(origin=a)
            return first
        if flow.replied:
            return "established"
        if a != flow.origin:
            flow.replied = True
            return "established"
        return "new"
