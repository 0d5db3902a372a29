"""Rates between two counter readings, for ``minifw top``: packets, bytes and drops per second,
busiest first. Pure: two ``counters.Sample``s in, a ``Rates`` out.

A counter that went down was reset (a reload that did not keep it, a runner restarted): its
increase is then its new value, as Prometheus' ``rate()`` takes it, never a negative rate.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from .counters import Sample

DROPPING = frozenset({"drop", "reject"})


def increase(before: int | None, after: int | None) -> int | None:
    """How much a counter grew; after a reset, its new value. None if either is unknown."""
    if before is None or after is None:
        return None
    return after - before if after >= before else after


def per_second(before: int | None, after: int | None, seconds: float) -> float | None:
    grew = increase(before, after)
    if grew is None:
        return None
    return grew / seconds if seconds > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of ``top``: what it is, its labels, its rates and its totals."""

    kind: str                       # rule, policy, set, hook
    name: str
    labels: dict[str, Any]
    packets_per_second: float | None
    bytes_per_second: float | None
    drops_per_second: float | None
    packets: int | None
    bytes: int | None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, **self.labels,
                "packets_per_second": _round(self.packets_per_second),
                "bytes_per_second": _round(self.bytes_per_second),
                "drops_per_second": _round(self.drops_per_second),
                "packets": self.packets, "bytes": self.bytes}


@dataclasses.dataclass(frozen=True)
class Rates:
    seconds: float
    up: bool
    rules: tuple[Row, ...]
    policies: tuple[Row, ...]
    sets: tuple[Row, ...]
    hooks: tuple[Row, ...]

    def to_json(self) -> dict[str, Any]:
        return {"interval": round(self.seconds, 3), "up": self.up,
                "rules": [r.to_json() for r in self.rules],
                "policies": [r.to_json() for r in self.policies],
                "sets": [r.to_json() for r in self.sets],
                "hooks": [r.to_json() for r in self.hooks]}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def busiest(rows: Iterable[Row]) -> tuple[Row, ...]:
    """Most packets per second first, then most drops, then by name (unknown rates last)."""
    return tuple(sorted(rows, key=lambda r: (-(r.packets_per_second or 0.0),
                                             -(r.drops_per_second or 0.0), r.kind, r.name)))


def _row(kind: str, name: str, labels: dict[str, Any], before: tuple[int, int] | None,
         after: tuple[int, int], seconds: float, dropping: bool) -> Row:
    old = before or (None, None)
    pps = per_second(old[0], after[0], seconds)
    return Row(kind, name, labels, pps, per_second(old[1], after[1], seconds),
               (pps if dropping else 0.0) if pps is not None else None, after[0], after[1])


def rates(before: Sample, after: Sample, actions: dict[str, dict[str, Any]]) -> Rates:
    """The rates from ``before`` to ``after``. ``actions``: rule id -> its labels (hook,
    priority, action), which say whether a rule's packets are drops. A rule, set or hook
    that appeared in between has no rate yet (None)."""
    seconds = after.at - before.at
    rules = [_row("rule", rid, actions.get(rid, {}), before.rules.get(rid), now, seconds,
                  actions.get(rid, {}).get("action") in DROPPING)
             for rid, now in after.rules.items()]
    policies = [_row("policy", hook, {"hook": hook}, before.policies.get(hook), now, seconds,
                     True) for hook, now in after.policies.items()]
    sets = []
    for name, info in after.sets.items():
        old = before.sets.get(name)
        sets.append(_row("set", name, {"elements": info.elements},
                         (old.packets, old.bytes) if old else None,
                         (info.packets, info.bytes), seconds, True))
    hooks = []
    runner_of = {r.get("file"): r for r in after.runners}
    runner_was = {r.get("file"): r for r in before.runners}
    for function, info in after.hooks.items():
        old = before.hooks.get(function)
        row = _row("hook", function, {"queue": info.queue, "hook": info.hook,
                                      "priority": info.priority, "file": info.file},
                   (old.packets, old.bytes) if old else None, (info.packets, info.bytes),
                   seconds, False)
        # drops are counted per runner (one per hook file), by the runner itself
        now_r, was_r = runner_of.get(info.file), runner_was.get(info.file)
        drops = per_second(was_r.get("drops") if was_r else None,
                           now_r.get("drops") if now_r else None, seconds)
        hooks.append(dataclasses.replace(row, drops_per_second=drops))
    return Rates(seconds, after.up, busiest(rules), busiest(policies), busiest(sets),
                 busiest(hooks))
