"""NAT as the kernel applies it to one packet, for explain. Pure.

- Destination NAT (dnat, redirect) runs at prerouting and output, priority -100 (dstnat):
  before routing, so the route lookup and every chain after it see the translated destination.
- Source NAT (snat, masquerade) runs at postrouting, priority 100 (srcnat), after routing.
- The first matching ``[[nat]]`` entry of a hook translates (a nat statement ends its chain).
- NAT chains see only the first packet of a flow (conntrack state new). Later packets
  (established, related) follow the flow's conntrack entry: explain gives them the translation
  the first packet of their flow got, and the nat entry's counter does not move. Untracked and
  invalid packets have no conntrack entry and are never translated.
- A port forward opens its own path: a drop policy at forward accepts flows whose destination
  was translated (``ct status dnat``, the policy chain's first rule; compile/nat.py's
  ``accept_hooks`` says where), and a drop policy at input those a redirect sent here.
- Address choices the rule does not fix are the kernel's: the first address of a ``to`` range
  is shown (the kernel picks one by hash); a masquerade takes the output route's preferred
  source address (``prefsrc``) and a redirect an address of the input interface, when the
  caller knows them, else the address is left as it was and the note says so.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from ..model.types import Hook

Address = Any  # ipaddress.IPv4Address | IPv6Address; kept loose: Probe is explain's

DSTNAT_PRIORITY = -100
SRCNAT_PRIORITY = 100
NAT_HOOKS = {Hook.PREROUTING: DSTNAT_PRIORITY, Hook.OUTPUT: DSTNAT_PRIORITY,
             Hook.POSTROUTING: SRCNAT_PRIORITY}
TRACKED = ("new", "established", "related")
# The address a masquerade (hook postrouting: by oif) or a redirect (by iif; None at output:
# the loopback address) takes: (interface or None, IP version) -> address, or None if unknown.
AddressOf = Callable[[str | None, int], "Address | None"]


@dataclasses.dataclass(frozen=True)
class Translation:
    """What one nat entry did to a packet: its ends (src, sport, dst, dport) before and after."""

    nat: str                       # the [[nat]] entry's id
    kind: str                      # masquerade | snat | dnat | redirect
    hook: Hook
    priority: int
    before: tuple[Any, Any, Any, Any]
    after: tuple[Any, Any, Any, Any]
    first_packet: bool             # False: it follows conntrack (the nat counter does not move)
    note: str | None = None

    @property
    def is_dnat(self) -> bool:
        """Whether conntrack marks the flow ``dnat``: only if the translation changed the
        destination (the kernel leaves an identity translation unmarked)."""
        return self.kind in ("dnat", "redirect") and self.before != self.after

    def describe(self) -> str:
        """``dst 198.18.10.2:8080 -> 198.18.20.1:80`` (the side that changed)."""
        parts = [f"{side} {_end(*self.before[i:i + 2])} -> {_end(*self.after[i:i + 2])}"
                 for side, i in (("src", 0), ("dst", 2))
                 if self.before[i:i + 2] != self.after[i:i + 2]]
        return ", ".join(parts) or "unchanged"

    def to_json(self) -> dict[str, Any]:
        keys = ENDS
        return {"nat": self.nat, "kind": self.kind, "hook": self.hook.value,
                "priority": self.priority, "first_packet": self.first_packet,
                "before": {k: _plain(v) for k, v in zip(keys, self.before)},
                "after": {k: _plain(v) for k, v in zip(keys, self.after)}}


def _plain(v: Any) -> Any:
    return v if v is None or isinstance(v, int) else str(v)


def _end(addr, port) -> str:
    if addr is None:
        return f"port {port}"
    if port is None or isinstance(addr, str):
        return str(addr) if port is None else f"{addr}, port {port}"
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def nats_at(nats: Iterable[Any], hook: Hook) -> list[Any]:
    return [n for n in nats if n.hook is hook]


def translate(nats: Iterable[Any], packet: Any, hook: Hook, matches: Callable,
              address_of: AddressOf | None = None) -> tuple[Any, Translation | None,
                                                             list[tuple[str, str]]]:
    """Apply the nat entries of ``hook`` to ``packet`` (a Probe).

    ``matches(entry, packet, hook, priority) -> (bool, reason)`` is explain's rule matcher.
    Returns the packet after NAT, the Translation (None if none applied) and, for the trace,
    (entry id, reason) of each entry that did not match."""
    prio = NAT_HOOKS.get(hook)
    entries = nats_at(nats, hook)
    if prio is None or not entries:
        return packet, None, []
    if packet.state not in TRACKED:
        return packet, None, [(e.id, f"state {packet.state}: no conntrack entry, so no NAT")
                              for e in entries]
    misses: list[tuple[str, str]] = []
    for entry in entries:
        ok, why = matches(entry.match_rule(), packet, hook, prio)
        if not ok:
            misses.append((entry.id, why or "no match"))
            continue
        return _apply(entry, packet, hook, prio, address_of)
    if packet.state != "new":  # the chain did not run: the flow has no translation here
        return packet, None, [("(not run)", f"state {packet.state}: nat chains see only the first "
                                    "packet of a flow, and this flow's was not translated here")]
    return packet, None, misses


def _apply(entry, packet, hook: Hook, prio: int, address_of: AddressOf | None):
    kind = entry.kind.value
    fields: dict[str, Any] = {}
    unknown: dict[str, str] = {}   # an address the kernel picks that the caller did not give
    note = None
    target = entry.to
    addr_key, port_key = ("dst", "dport") if entry.kind.value in ("dnat", "redirect") \
        else ("src", "sport")
    if kind in ("dnat", "snat"):
        fields[addr_key] = target.lo
        if target.hi is not None and target.hi != target.lo:
            note = f"the kernel picks an address of {target.lo}-{target.hi}; the first is shown"
    else:  # the address of an interface: redirect's input (lo at output), masquerade's output
        ifname = (packet.iif if hook is Hook.PREROUTING else None) if kind == "redirect" \
            else packet.oif
        addr = address_of(ifname, packet.version) if address_of is not None else None
        if addr is not None:
            fields[addr_key] = addr
        elif kind == "redirect":
            unknown[addr_key] = f"an address of {ifname or 'lo'}"
        else:
            unknown[addr_key] = f"the address of {ifname or 'the output interface'}"
    if target is not None and target.port is not None and packet.proto.has_ports:
        fields[port_key] = target.port.lo
    first = packet.state == "new"
    if not first:
        note = _join(note, f"state {packet.state}: nat chains see only the first packet of a "
                     "flow; this one follows its conntrack entry (the nat counter does not "
                     "move)")
    out = dataclasses.replace(packet, **fields) if fields else packet
    after = tuple(unknown.get(k, v) for k, v in zip(ENDS, _ends(out)))
    return out, Translation(entry.id, kind, hook, prio, _ends(packet), after, first, note), []


ENDS = ("src", "sport", "dst", "dport")


def _ends(p) -> tuple[Any, Any, Any, Any]:
    return (p.src, p.sport, p.dst, p.dport)


def _join(*parts: str | None) -> str | None:
    return "; ".join(p for p in parts if p) or None
