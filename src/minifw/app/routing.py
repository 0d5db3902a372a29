"""Routing for `minifw explain` on the live instance: where the kernel sends the packet.

With the live instance, the path (in, forward, out) and the output interface come from this
namespace's routing: route lookups over rtnetlink (kernel/route.py) for the source (is it this
host's?) and for the destination after destination NAT; engine/route.py turns the answers into
a decision. ``--path`` and ``--oif`` override what they name. With ``--config FILE`` no lookup
is made, and the answer says so.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..engine import nat as natmod
from ..engine.explain import Probe, rule_matches
from ..engine.route import Routing, decide
from ..model.types import Hook

NO_LOOKUP = ("no route lookup was made (explaining --config FILE, not the live instance): "
             "the path is --path's (default in)")


def route(ruleset: Any, probe: Probe, *, path_given: bool, oif_given: bool,
          set_lookup=None) -> tuple[Probe, Routing | None]:
    """``probe`` with the path and output interface the kernel's routing gives it (those the
    user gave are kept), and the decision; the decision is None when nothing was looked up."""
    from ..kernel import route as kroute

    if path_given and (probe.path == "in" or oif_given):
        return probe, None
    arriving = probe.path != "out" if path_given else (
        probe.iif is not None or not _local(kroute, probe.src))
    if not arriving:
        probe = dataclasses.replace(probe, path="out", iif=None)
    hook = Hook.PREROUTING if arriving else Hook.OUTPUT

    def matches(entry, p, h, prio):
        return rule_matches(entry, p, h, prio, set_lookup)

    after, _, _ = natmod.translate(getattr(ruleset, "nats", ()), probe, hook, matches,
                                   kroute.interface_address)
    answer = kroute.lookup(after.dst, src=after.src if probe.iif else None, iif=probe.iif)
    routing = decide(answer, kroute.ifname(answer.oif), after.dst, arriving=arriving)
    if routing.path is None:
        return probe, routing
    path = probe.path if path_given else routing.path
    oif = probe.oif if oif_given else (routing.oif if path != "in" else None)
    return dataclasses.replace(probe, path=path, oif=oif), routing


def _local(kroute, addr) -> bool:
    """Whether ``addr`` is one of this host's addresses (its route is ``local``)."""
    return kroute.lookup(addr).type == "local"


def address_of(ruleset: Any):
    """Addresses for masquerade and redirect, read from this namespace's interfaces."""
    if not getattr(ruleset, "nats", ()):
        return None
    from ..kernel import route as kroute

    return kroute.interface_address
