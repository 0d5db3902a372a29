"""CrowdSec decisions: the LAPI decision stream parsed, and their union for one set. Pure.

``parse_stream(body)`` takes the bytes of ``GET /v1/decisions/stream`` and returns a ``Stream``
(new and deleted decisions), or raises ``DecisionError`` for the whole answer: one bad
decision (malformed JSON, an unknown scope, an invalid address, an absurd duration) refuses all
of it, so the set stays as it was.

``union(decisions, at)`` gives what the kernel gets: each address or CIDR while any ``ban``
decision covers it, with the longest expiry. Overlapping ranges are split into disjoint CIDRs
(the interval set refuses overlaps), each piece keeping the longest expiry over it.
"""

from __future__ import annotations

import bisect
import dataclasses
import ipaddress
import json
import re
from typing import Any, Iterable, NamedTuple

from ..errors import DecisionError
from .sets import MAX_TIMEOUT, normalise_element

SCOPES = {"ip": "Ip", "range": "Range"}      # LAPI spells them "Ip" and "Range"
MAX_DURATION_NS = 10 * 365 * 86400 * 10**9   # ten years: longer is a broken LAPI, not a ban
_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9,
       "m": 60 * 10**9, "h": 3600 * 10**9}
# the shape LAPI writes ("3h59m59.6s", "59m58.534660793s", "-41.614289ms" is not): one match
_GO_HMS = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)(?:\.(\d+))?s)?")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: Any) -> int:
    """A Go ``time.Duration`` string ("59m59.6s", "1h2m3s", "-3s", "0") -> nanoseconds,
    exactly in integers: as Go does, each part's fraction is truncated below a nanosecond.
    Raises ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration string")
    body = text
    sign = 1
    if body[:1] in ("+", "-") and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    fast = _GO_HMS.fullmatch(body) if body else None
    if fast is not None:
        h, m, sec, frac = fast.groups()
        total = ((int(h or 0) * 60 + int(m or 0)) * 60 + int(sec or 0)) * 10**9
        if frac:
            total += int(frac) * 10**9 // 10 ** len(frac)
        return sign * total
    total = 0
    at = 0
    for m in _GO_PART.finditer(body):
        if m.start() != at:
            break
        whole, _, frac = m.group(1).partition(".")
        unit = _NS[m.group(2)]
        total += int(whole or 0) * unit + (int(frac) * unit // 10 ** len(frac) if frac else 0)
        at = m.end()
    if not body or at != len(body):
        raise ValueError(f"{text!r} is not a duration such as \"4h\" or \"59m59.6s\"")
    return sign * total


class Decision(NamedTuple):
    """One decision (a named tuple: 100k of them are made per startup sync)."""
    id: int
    origin: str          # "cscli", "crowdsec", "CAPI", "lists", ...
    scenario: str
    scope: str           # "Ip" or "Range"
    type: str            # "ban", "captcha", ...
    value: str           # the normalised address or CIDR
    duration_ns: int     # remaining, as LAPI said it

    @property
    def label(self) -> str:
        """The origin as ``set list`` and events show it: ``crowdsec:<scenario>`` or the
        origin itself (``cscli``)."""
        return f"crowdsec:{self.scenario}" if self.origin == "crowdsec" else self.origin

    def expiry(self, at: int) -> int:
        """Absolute expiry in whole seconds (rounded up: a ban never ends early)."""
        return at + -(-self.duration_ns // 10**9)


@dataclasses.dataclass(frozen=True)
class Stream:
    new: tuple[Decision, ...]
    deleted: tuple[Decision, ...]


def _text(raw: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = raw.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DecisionError(f"{where}: '{key}' is {value!r}, not a string")
    return value


def _address(value: str) -> str:
    """An Ip decision's value in canonical text (the fast path of normalise_element)."""
    parts = value.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3 and int(p) <= 255
                               and (p[0] != "0" or p == "0") for p in parts):
        return value  # a dotted quad in canonical form already
    if "%" in value or "/" in value or value != value.strip():
        if "/" in value:
            raise ValueError(f"{value!r} is a range in an Ip decision")
        return normalise_element(value)  # says what is wrong
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def parse_decision(raw: Any, where: str, deleted: bool = False) -> Decision:
    """One decision object; ``deleted`` ones may carry a negative (expired) duration."""
    if not isinstance(raw, dict):
        raise DecisionError(f"{where}: a decision must be an object, not {type(raw).__name__}")
    ident = raw.get("id")
    if isinstance(ident, bool) or not isinstance(ident, int) or ident < 0:
        raise DecisionError(f"{where}: 'id' is {ident!r}, not a decision number")
    scope = SCOPES.get(_text(raw, "scope", where).lower())
    if scope is None:
        raise DecisionError(f"{where}: unknown scope {raw['scope']!r}; minifw takes Ip and "
                            "Range decisions")
    value = _text(raw, "value", where)
    try:
        element = _address(value) if scope == "Ip" else normalise_element(value)
    except ValueError as exc:
        raise DecisionError(f"{where}: {exc}") from None
    try:
        ns = parse_go_duration(_text(raw, "duration", where))
    except ValueError as exc:
        raise DecisionError(f"{where}: {exc}") from None
    if ns > MAX_DURATION_NS:
        raise DecisionError(f"{where}: duration {raw['duration']!r} is over ten years")
    if ns < 0 and not deleted:
        raise DecisionError(f"{where}: duration {raw['duration']!r} is negative in a new "
                            "decision")
    return Decision(id=ident, origin=_text(raw, "origin", where, False),
                    scenario=_text(raw, "scenario", where, False), scope=scope,
                    type=_text(raw, "type", where), value=element, duration_ns=ns)


def parse_stream(body: bytes | str) -> Stream:
    """The whole answer of ``/v1/decisions/stream``, or DecisionError (nothing applied)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise DecisionError(f"the decision stream is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DecisionError("the decision stream is not a JSON object with 'new' and 'deleted'")
    out: dict[str, tuple[Decision, ...]] = {}
    for key in ("new", "deleted"):
        items = data.get(key)
        if items is None:       # LAPI writes null for an empty list
            items = []
        if not isinstance(items, list):
            raise DecisionError(f"the decision stream's '{key}' is not a list")
        out[key] = tuple(parse_decision(d, f"{key}[{i}]", key == "deleted")
                         for i, d in enumerate(items))
    return Stream(new=out["new"], deleted=out["deleted"])


@dataclasses.dataclass(frozen=True)
class Element:
    """One kernel element of the union: its expiry and the decision that gives it."""
    expiry: int
    decision: int
    label: str


def union(decisions: Iterable[tuple[Decision, int]], at: int) -> tuple[dict[str, Element], int]:
    """(element -> Element, count of ignored non-ban decisions) for (decision, absolute expiry)
    pairs. Expired decisions are left out; expiries are capped at the kernel's limit from
    ``at`` (the sync refreshes them before they run out)."""
    cap = at + MAX_TIMEOUT
    singles: dict[str, Element] = {}
    ranges: list[tuple[int, Any, Element]] = []
    ignored = 0
    for decision, expiry in decisions:
        if decision.type != "ban":
            ignored += 1
            continue
        if expiry <= at:
            continue
        elem = Element(min(expiry, cap), decision.id, decision.label)
        if "/" not in decision.value:
            old = singles.get(decision.value)
            if old is None or (elem.expiry, -elem.decision) > (old.expiry, -old.decision):
                singles[decision.value] = elem
        else:
            ranges.append((elem.expiry, ipaddress.ip_network(decision.value), elem))
    out = dict(singles)
    out.update(split_ranges(ranges))
    return out, ignored


def split_ranges(ranges: list[tuple[int, Any, Element]]) -> dict[str, Element]:
    """Disjoint CIDRs covering the union of (expiry, network, element) ranges: the longest
    expiry first, and each later range keeps only the gaps the earlier ones leave (a sorted
    list of covered spans per IP version, so 100k ranges stay fast)."""
    out: dict[str, Element] = {}
    los: dict[int, list[int]] = {4: [], 6: []}   # covered spans, sorted and disjoint
    his: dict[int, list[int]] = {4: [], 6: []}
    cls = {4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}
    # the longest expiry first; among equal ones the widest, so a range inside another of
    # the same expiry is absorbed rather than splitting it
    ranges.sort(key=lambda r: (-r[0], r[1].prefixlen, r[2].decision))
    for _, net, elem in ranges:
        v = net.version
        lo, hi = int(net.network_address), int(net.broadcast_address)
        lo_list, hi_list = los[v], his[v]
        # covered spans that touch [lo, hi] (an adjacent one merges, not overlaps)
        first = bisect.bisect_left(hi_list, lo - 1)
        last = bisect.bisect_right(lo_list, hi + 1)
        cursor = lo
        for j in range(first, last):
            if lo_list[j] > cursor:
                _emit(out, cls[v](cursor), cls[v](min(lo_list[j] - 1, hi)), elem)
            cursor = max(cursor, hi_list[j] + 1)
        if cursor <= hi:
            _emit(out, cls[v](cursor), cls[v](hi), elem)
        new_lo = min(lo, lo_list[first]) if first < last else lo
        new_hi = max(hi, hi_list[last - 1]) if first < last else hi
        lo_list[first:last] = [new_lo]
        hi_list[first:last] = [new_hi]
    return out


def _emit(out: dict[str, Element], first: Any, last: Any, elem: Element) -> None:
    for piece in ipaddress.summarize_address_range(first, last):
        out[normalise_element(str(piece))] = elem
