"""The routing decision explain makes for a live instance, from the kernel's route lookups. Pure.

A packet whose source is one of this host's addresses (its route lookup says ``local``) and that
names no input interface is sent by this host: path out, through the output route's interface.
Any other packet arrives: the lookup of its (translated) destination, an input lookup when the
input interface is known, says local delivery (path in), forward through an interface, or
unroutable: then the kernel drops it right after prerouting (or, sent by this host, before
output), which explain reports as a drop by routing.
"""

from __future__ import annotations

import dataclasses
import errno as errno_mod

from ..model.types import POLICY_PRIORITY, Hook
from ..netlink.route import RouteAnswer
from .explain import Step

# Route types that deliver to this host, and types that forward.
LOCAL_TYPES = frozenset({"local", "broadcast", "multicast", "anycast"})
FORWARD_TYPES = frozenset({"unicast"})


@dataclasses.dataclass(frozen=True)
class Routing:
    """Where the kernel sends a packet: ``path`` in | forward | out, or None (unroutable)."""

    path: str | None
    oif: str | None
    text: str                      # the `route:` line explain prints
    arriving: bool = True          # False: sent by this host

    def to_json(self) -> dict:
        return {"path": self.path, "oif": self.oif, "text": self.text}


def decide(answer: RouteAnswer, oif_name: str | None, dst, *, arriving: bool) -> Routing:
    """The routing decision from the kernel's answer for destination ``dst``."""
    via = f" via {answer.gateway}" if answer.gateway is not None else ""
    if answer.errno:
        name = errno_mod.errorcode.get(answer.errno, str(answer.errno))
        return Routing(None, None, f"no route to {dst} ({name}): the kernel drops the packet "
                       f"{'after prerouting' if arriving else 'before output'}", arriving)
    if answer.type in LOCAL_TYPES:
        if arriving:
            return Routing("in", None, f"{dst} is {answer.type} here: delivered to this host")
        return Routing("out", oif_name or "lo", f"{dst} is {answer.type} here: sent by this "
                       f"host through {oif_name or 'lo'}", False)
    if answer.type in FORWARD_TYPES:
        if arriving:
            return Routing("forward", oif_name, f"{dst} is routed through {oif_name}{via}: "
                           "forwarded")
        return Routing("out", oif_name, f"{dst} is routed through {oif_name}{via}: sent by "
                       "this host", False)
    return Routing(None, None, f"the route to {dst} is {answer.type}: the kernel drops the "
                   f"packet {'after prerouting' if arriving else 'before output'}", arriving)


def unroutable(explanation, routing: Routing):
    """``explanation`` (made for the path the packet started on) cut where routing drops it:
    after prerouting for an arriving packet, before output for one this host sends."""
    keep = Hook.PREROUTING if routing.arriving else None
    if explanation.verdict != "accept" and explanation.hook is keep:
        return explanation  # decided before routing
    trace = tuple(s for s in explanation.trace if s.hook is keep)
    hook = Hook.PREROUTING if routing.arriving else Hook.OUTPUT
    step = Step(hook, POLICY_PRIORITY, "route", "route lookup", True, "drop", note=routing.text)
    return dataclasses.replace(
        explanation, verdict="drop", rule=None, decided_by="routing", hook=hook,
        priority=POLICY_PRIORITY, trace=(*trace, step),
        translations=tuple(t for t in explanation.translations if t.hook is keep))


