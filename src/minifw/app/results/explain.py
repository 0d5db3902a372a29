"""Results of explain."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping

from ...model.types import HookPoint
from .base import _frozen

if TYPE_CHECKING:
    from ...engine.explain import Explanation, Probe, Step

# ---- explain ----------------------------------------------------------------------------------

@_frozen
class Decider:
    """One rule (or policy, or hook function) that decided packets of a capture."""

    decider: str
    rule: str | None
    decided_by: str
    hook: str
    priority: int
    packets: int
    verdicts: Mapping[str, int]
    first_packet: int

    def to_json(self) -> dict[str, Any]:
        return {"decider": self.decider, "rule": self.rule, "decided_by": self.decided_by,
                "hook": self.hook, "priority": self.priority, "packets": self.packets,
                "verdicts": dict(self.verdicts), "first_packet": self.first_packet}


@_frozen
class CaptureSummary:
    """``explain --pcap``: every packet of a capture explained, summed up by decider."""

    capture: str
    path: str
    packets: int
    explained: int
    skipped: Mapping[str, int]     # reason -> packets
    verdicts: Mapping[str, int]
    deciders: tuple[Decider, ...]  # most packets first
    versions: frozenset[int] = frozenset()   # IP versions seen
    ruleset: str = ""              # which ruleset answered: the live one, or a config file
    warnings: tuple[str, ...] = ()
    direction: str = "in"          # which packets were explained: in | out | all
    notes: tuple[str, ...] = ()    # e.g. how many packets' direction was assumed
    route: str | None = None       # where the path came from (routing, or no lookup)
    hits: Mapping[str, int] = dataclasses.field(default_factory=dict)  # rule -> packets

    def to_json(self) -> dict[str, Any]:
        return {"capture": self.capture, "path": self.path, "packets": self.packets,
                "explained": self.explained, "direction": self.direction,
                "skipped": dict(self.skipped), "notes": list(self.notes),
                "hits": dict(sorted(self.hits.items())), "route": self.route,
                "verdicts": dict(self.verdicts),
                "deciders": [d.to_json() for d in self.deciders]}


@_frozen
class Explained:
    """``explain`` of one packet: the engine's Explanation, which ruleset answered, the
    warnings (other tables' chains at the packet's hooks) and what hook functions logged."""

    explanation: "Explanation"
    ruleset: str
    warnings: tuple[str, ...] = ()
    hook_logs: tuple[str, ...] = ()
    route: str | None = None       # the routing decision's line, or why none was made
    decision: str | None = None    # a fed set decided: "decided by set crowdsec, decision 12 from cscli"

    @property
    def verdict(self) -> str:
        return self.explanation.verdict

    @property
    def rule(self) -> str | None:
        return self.explanation.rule

    @property
    def decided_by(self) -> str:
        return self.explanation.decided_by

    @property
    def decider(self) -> str:
        return self.explanation.decider

    @property
    def point(self) -> HookPoint:
        return HookPoint(self.explanation.hook, self.explanation.priority)

    @property
    def probe(self) -> "Probe":
        return self.explanation.probe

    @property
    def trace(self) -> tuple["Step", ...]:
        return self.explanation.trace

    def to_json(self) -> dict[str, Any]:
        out = self.explanation.to_json()
        if self.route is not None:  # where the packet went, and why (or why nobody asked)
            probe = self.explanation.probe
            out["route"] = {"path": probe.path, "oif": probe.oif, "text": self.route}
        if self.decision is not None:
            out["decision"] = self.decision
        return out
