"""The match space of rules, as boxes of integer intervals: what the lint computes with. Pure.

A packet is a point with one value per dimension (``DIMS``); a rule matches a union of boxes
(one per IP version it can match), each box a product of interval sets. Rules are compared
exactly over this space, never by sampling:

- family: 4 or 6; proto: the IP protocol number (0-255);
- src, dst: the address as an integer (its family's range);
- sport, dport: 0-65535 for tcp and udp, -1 (no ports) for any other protocol;
- icmp: the type 0-255 for icmp/icmpv6, -1 for any other protocol;
- state: the index of the conntrack state in ``CT_STATES``;
- iif, oif: the index of an interface class (``Interfaces``): names are infinitely many, but the
  names a chain's rules mention (exact, or ``eth*`` prefixes) split them into finitely many
  classes that every rule treats alike.

A set reference (``@name``) has unknown contents: a rule with one is widened to any address
when asked what it could match, and counts as deciding nothing when asked what it covers.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Sequence

from ..model.rule import Rule
from ..model.setdefs import SetRef
from ..model.types import CT_STATES, Family, Hook, Proto
from .explain import icmp_type_number

Intervals = tuple[tuple[int, int], ...]   # sorted, disjoint, inclusive
Box = tuple[Intervals, ...]
DIMS = ("family", "proto", "src", "dst", "sport", "dport", "icmp", "state", "iif", "oif")
D = {name: i for i, name in enumerate(DIMS)}

_TCP, _UDP, _ICMP, _ICMPV6 = 6, 17, 1, 58
_NO = ((-1, -1),)                        # the value of a dimension the protocol lacks
_ALL_PORTS = ((0, 65535),)
_ALL_TYPES = ((0, 255),)
_OTHER = ((0, 0), (2, 5), (7, 16), (18, 57), (59, 255))  # protocols with neither ports nor ICMP


def norm(pairs: Iterable[tuple[int, int]]) -> Intervals:
    out: list[list[int]] = []
    for lo, hi in sorted(pairs):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def meet(a: Intervals, b: Intervals) -> Intervals:
    if len(a) == 1 and len(b) == 1:  # the common case, fast
        lo, hi = max(a[0][0], b[0][0]), min(a[0][1], b[0][1])
        return ((lo, hi),) if lo <= hi else ()
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def minus(a: Intervals, b: Intervals) -> Intervals:
    out = []
    for lo, hi in a:
        for blo, bhi in b:
            if bhi < lo or blo > hi:
                continue
            if blo > lo:
                out.append((lo, blo - 1))
            lo = bhi + 1
            if lo > hi:
                break
        if lo <= hi:
            out.append((lo, hi))
    return tuple(out)


def box_meet(a: Box, b: Box) -> Box | None:
    out = []
    for x, y in zip(a, b):
        m = meet(x, y)
        if not m:
            return None
        out.append(m)
    return tuple(out)


def box_minus(a: Box, b: Box) -> list[Box]:
    """``a`` without ``b``, as disjoint boxes (at most one per dimension)."""
    if box_meet(a, b) is None:
        return [a]
    pieces = []
    head: list[Intervals] = []
    for i, (x, y) in enumerate(zip(a, b)):
        rest = minus(x, y)
        if rest:
            pieces.append(tuple(head) + (rest,) + a[i + 1:])
        head.append(meet(x, y))
    return pieces


class Budget(Exception):
    """The search grew past its budget: the answer is unknown (the lint then stays silent)."""


def uncovered(boxes: Sequence[Box], covers: Sequence[Box], budget: int = 200_000) -> Box | None:
    """A box of points in ``boxes`` that no box of ``covers`` contains, or None when there is
    none (depth first: one uncovered point is found without listing them all)."""
    left = [budget]

    def find(box: Box, i: int) -> Box | None:
        left[0] -= 1
        if left[0] < 0:
            raise Budget
        while i < len(covers) and box_meet(box, covers[i]) is None:
            i += 1
        if i == len(covers):
            return box
        for piece in box_minus(box, covers[i]):
            found = find(piece, i + 1)
            if found is not None:
                return found
        return None

    for box in boxes:
        found = find(box, 0)
        if found is not None:
            return found
    return None


def subtract_all(boxes: Sequence[Box], cover: Sequence[Box], limit: int = 5000) -> list[Box]:
    """``boxes`` without every box of ``cover``, listed (Budget past ``limit`` pieces)."""
    out = list(boxes)
    for c in cover:
        nxt: list[Box] = []
        for b in out:
            nxt.extend(box_minus(b, c))
        if len(nxt) > limit:
            raise Budget
        out = nxt
    return out


# ---- interfaces --------------------------------------------------------------------------------

def _matches(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern


class Interfaces:
    """The classes of interface names a chain's rules tell apart, one representative each."""

    def __init__(self, patterns: Iterable[str], *, no_iif: Iterable[str] = ()):
        pats = sorted(set(patterns))
        literals = {p for p in pats if not p.endswith("*")}
        prefixes = sorted({p[:-1] for p in pats if p.endswith("*")})
        names = sorted(literals)
        for prefix in [None] + prefixes:
            rep = self._representative(prefix, literals, prefixes)
            if rep is not None:
                names.append(rep)
        self.names = names
        # names no packet comes in on at this hook
        self.iif_names = norm((i, i) for i, n in enumerate(names) if n not in set(no_iif))

    @staticmethod
    def _representative(prefix: str | None, literals: set[str],
                        prefixes: list[str]) -> str | None:
        """A name whose longest matching prefix is ``prefix`` (None: no prefix matches)."""
        stems = [prefix] if prefix is not None else ["zq", "if", "x", "q"]
        for stem in stems:
            for tail in ("", "0", "9", "_", "-", "x", "q0", "z9", ".0"):
                name = stem + tail
                if not name or len(name) > 15 or name in literals:
                    continue
                longest = max((p for p in prefixes if name.startswith(p)), key=len, default=None)
                if longest == prefix:
                    return name
        return None

    def full(self) -> Intervals:
        return ((0, len(self.names) - 1),)

    def select(self, patterns: Sequence[str]) -> Intervals:
        if not patterns:
            return self.full()
        return norm((i, i) for i, n in enumerate(self.names)
                    if any(_matches(p, n) for p in patterns))


def chain_interfaces(rules: Iterable[Rule], hook: Hook) -> Interfaces:
    names = [n for r in rules for n in r.iif + r.oif]
    # the kernel never forwards what came in on lo
    return Interfaces(names, no_iif=("lo",) if hook is Hook.FORWARD else ())


# ---- rules and the universe as boxes ----------------------------------------------------------

def _net_intervals(nets: Sequence, version: int) -> Intervals | None:
    """The addresses of ``nets`` of this IP version; None when there is no constraint."""
    real = [n for n in nets if not isinstance(n, SetRef)]
    if not real:
        return None
    return norm((int(n.network_address), int(n.broadcast_address))
                for n in real if n.version == version)


def _full_addresses(version: int) -> Intervals:
    return ((0, 2**32 - 1),) if version == 4 else ((0, 2**128 - 1),)


def universe(ifaces: Interfaces) -> list[Box]:
    """Every packet that exists: ports only for tcp and udp, ICMP types only for the ICMP of
    the packet's IP version."""
    out = []
    for version, icmp in ((4, _ICMP), (6, _ICMPV6)):
        addr = _full_addresses(version)
        for protos, ports, types in ((((_TCP, _TCP), (_UDP, _UDP)), _ALL_PORTS, _NO),
                                     (((icmp, icmp),), _NO, _ALL_TYPES),
                                     (_OTHER, _NO, _NO)):
            out.append((((version, version),), protos, addr, addr, ports, ports, types,
                        ((0, len(CT_STATES) - 1),), ifaces.iif_names, ifaces.full()))
    return out


def has_set(rule: Rule) -> bool:
    return any(isinstance(n, SetRef) for n in rule.src + rule.dst)


def rule_boxes(rule: Rule, ifaces: Interfaces) -> list[Box]:
    """The packets ``rule`` can match (a set reference widened to any address)."""
    boxes = []
    for fam in rule.families:
        version = 4 if fam is Family.IP else 6
        proto = ((0, 255),) if rule.proto is Proto.ANY else ((rule.proto.number,) * 2,)
        src = _net_intervals(rule.src, version) or _full_addresses(version)
        dst = _net_intervals(rule.dst, version) or _full_addresses(version)
        sport = norm((p.lo, p.hi) for p in rule.sport) if rule.sport else ((-1, 65535),)
        dport = norm((p.lo, p.hi) for p in rule.dport) if rule.dport else ((-1, 65535),)
        icmp = (norm((icmp_type_number(rule.proto, t),) * 2 for t in rule.icmp_type)
                if rule.icmp_type else ((-1, 255),))
        state = (norm((CT_STATES.index(s),) * 2 for s in rule.state) if rule.state
                 else ((0, len(CT_STATES) - 1),))
        boxes.append((((version, version),), proto, src, dst, sport, dport, icmp, state,
                      ifaces.select(rule.iif), ifaces.select(rule.oif)))
    return boxes


def clip(boxes: Iterable[Box], within: Sequence[Box]) -> list[Box]:
    """``boxes`` restricted to ``within`` (the universe): packets that exist."""
    out = []
    for b in boxes:
        for u in within:
            m = box_meet(b, u)
            if m is not None:
                out.append(m)
    return out


def point(box: Box) -> dict[str, int]:
    """One packet of ``box`` (the first of each dimension; tcp, udp or ICMP preferred)."""
    proto_pref = [p for p in (_TCP, _UDP, _ICMP, _ICMPV6) if meet(box[D["proto"]], ((p, p),))]
    proto = proto_pref[0] if proto_pref else box[D["proto"]][0][0]
    value = {name: box[i][0][0] for i, name in enumerate(DIMS)}
    value["proto"] = proto
    return value


def contains(box: Box, point: dict) -> bool:
    return all(any(lo <= point[name] <= hi for lo, hi in box[i]) for i, name in enumerate(DIMS))


def address(version: int, number: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.IPv4Address(number) if version == 4 else ipaddress.IPv6Address(number)
