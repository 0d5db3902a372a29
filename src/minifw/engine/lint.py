"""The lint: rules that cannot do what they say. Pure; computed over the match space
(``engine.space``), never by sampling packets.

- shadowed: earlier rules of the same chain (hook and priority) decide every packet the rule
  matches, so no packet reaches it. Deciding means accept, drop or reject without a ``limit``
  (the excess of a limit falls through) and without a set reference (its contents change).
  A rule that is not shadowed gets a proof: a packet that reaches and matches it
  (``Reach.proof``), which ``engine.explain`` confirms.
- ineffective limit: an accept with ``limit`` whose excess is accepted anyway, by a later
  accept at the same hook, by an accept policy, or by a stateful drop policy (established and
  related packets: a ping flood's echo requests after the first).
- redundant state: an accept of established/related packets only, under a stateful drop
  policy that accepts them anyway, with no later drop at that hook they would escape.
- interface: a name no interface of this host has (the host's list is passed in by the edge).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

from ..model.rule import Rule
from ..model.ruleset import Ruleset
from ..model.types import CT_STATES, HOOKS_WITH_IIF, HOOKS_WITH_OIF, Action, Hook, Proto
from . import space
from .explain import Probe

KINDS = ("shadowed", "ineffective-limit", "redundant-state", "interface")
_PATH = {Hook.PREROUTING: "in", Hook.INPUT: "in", Hook.FORWARD: "forward",
         Hook.OUTPUT: "out", Hook.POSTROUTING: "out"}
_PROTOS = {6: Proto.TCP, 17: Proto.UDP, 1: Proto.ICMP, 58: Proto.ICMPV6}
_EST_REL = space.norm((CT_STATES.index(s),) * 2 for s in ("established", "related"))


@dataclasses.dataclass(frozen=True)
class Finding:
    kind: str          # one of KINDS
    rule: str
    hook: Hook
    priority: int
    message: str

    def line(self) -> str:
        return f"rule '{self.rule}': {self.kind}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "rule": self.rule, "hook": self.hook.value,
                "priority": self.priority, "message": self.message}


@dataclasses.dataclass(frozen=True)
class Reach:
    """Whether a rule can be reached in its chain. ``shadowed`` None: the search was too large
    to tell. ``by``: the earlier rules that decide what it matches. ``proof``: a packet that
    reaches it, None when shadowed or when no probe can carry it (a protocol explain does not
    model, an address only known to be in a set). ``over_limit``: earlier rules with a limit the
    proof also matches: it reaches the rule only once they are over their rate."""

    shadowed: bool | None
    by: tuple[str, ...] = ()
    proof: Probe | None = None
    over_limit: tuple[str, ...] = ()


def _deciding(rule: Rule) -> bool:
    return rule.action.decides and rule.limit is None and not space.has_set(rule)


def _limited(rule: Rule) -> bool:
    return rule.action.decides and rule.limit is not None and not space.has_set(rule)


_INDEXED = tuple(space.D[d] for d in ("src", "dst", "dport", "sport"))


class _Chain:
    """One chain's rules as boxes, with an index that finds the earlier rules a box can meet
    without comparing it with all of them: rules are filed under the single value (one
    address, one port) of each dimension that has one, or as wide in it. 10,000 rules of one
    address and one port each lint in seconds, not hours."""

    def __init__(self, rules: Sequence[Rule], hook: Hook):
        self.rules = list(rules)
        self.ifaces = space.chain_interfaces(rules, hook)
        self.universe = space.universe(self.ifaces)
        self.boxes = [space.rule_boxes(r, self.ifaces) for r in rules]
        self.exact: list[dict[tuple[int, int], list[int]]] = [{} for _ in _INDEXED]
        self.wide: list[list[int]] = [[] for _ in _INDEXED]
        for i, (rule, boxes) in enumerate(zip(rules, self.boxes)):
            if not (_deciding(rule) or _limited(rule)):
                continue
            for k, d in enumerate(_INDEXED):
                keys = {_single(b, d) for b in boxes}
                if None in keys:
                    self.wide[k].append(i)
                else:
                    for key in keys:
                        self.exact[k].setdefault(key, []).append(i)

    def _candidates(self, j: int, mine: Sequence[space.Box]) -> list[int]:
        found: set[int] = set()
        for box in mine:
            best: list[int] | None = None
            for k, d in enumerate(_INDEXED):
                key = _single(box, d)
                if key is not None:
                    cand = self.exact[k].get(key, []) + self.wide[k]
                    if best is None or len(cand) < len(best):
                        best = cand
            found.update(range(j) if best is None else (i for i in best if i < j))
        return sorted(found)

    def reach(self, j: int) -> Reach:
        rule = self.rules[j]
        mine = space.clip(self.boxes[j], self.universe)
        near = [i for i in self._candidates(j, mine)
                if any(space.box_meet(b, m) for b in self.boxes[i] for m in mine)]
        covers = [(self.rules[i], b) for i in near if _deciding(self.rules[i])
                  for b in self.boxes[i]]
        limited = [(self.rules[i], b) for i in near if _limited(self.rules[i])
                   for b in self.boxes[i]]
        try:
            # a packet no earlier rule matches at all, else one that gets past their limits
            found = (space.uncovered(mine, [b for _, b in covers + limited])
                     or space.uncovered(mine, [b for _, b in covers]))
        except space.Budget:
            return Reach(None)
        if found is None:
            return Reach(True, tuple(dict.fromkeys(r.id for r, _ in covers)))
        point = space.point(found)
        over = tuple(dict.fromkeys(r.id for r, b in limited if space.contains(b, point)))
        return Reach(False, proof=_probe(point, rule, self.ifaces), over_limit=over)


def _single(box: space.Box, d: int) -> tuple[int, int] | None:
    """(family, value) when dimension ``d`` of ``box`` is one value, else None."""
    ivs = box[d]
    if len(ivs) == 1 and ivs[0][0] == ivs[0][1]:
        return box[space.D["family"]][0][0], ivs[0][0]
    return None


def reach(ruleset: Ruleset, rule_id: str) -> Reach:
    """Is rule ``rule_id`` reachable within its own chain? Exact over the match space."""
    rule = ruleset.get(rule_id)
    if rule is None:
        raise KeyError(rule_id)
    peers = [r for r in ruleset.rules if (r.hook, r.priority) == (rule.hook, rule.priority)]
    return _Chain(peers, rule.hook).reach(peers.index(rule))


def _probe(point: dict[str, int], rule: Rule, ifaces: space.Interfaces) -> Probe | None:
    proto = _PROTOS.get(point["proto"])
    if proto is None or space.has_set(rule):
        return None
    version = point["family"]
    iif = ifaces.names[point["iif"]] if rule.hook in HOOKS_WITH_IIF else None
    oif = ifaces.names[point["oif"]] if rule.hook in HOOKS_WITH_OIF else None
    return Probe(src=space.address(version, point["src"]),
                 dst=space.address(version, point["dst"]), proto=proto,
                 path=_PATH[rule.hook], sport=_opt(point["sport"]),
                 dport=_opt(point["dport"]), icmp_type=_opt(point["icmp"]),
                 iif=iif, oif=oif, state=CT_STATES[point["state"]])


def _opt(value: int) -> int | None:
    return None if value < 0 else value


def lint(ruleset: Ruleset, interfaces: Iterable[str] | None = None) -> list[Finding]:
    """Every finding, in rule order. ``interfaces``: this host's names (None: not checked)."""
    findings: list[Finding] = []
    for (hook, _), rules in ruleset.chains():
        chain = _Chain(rules, hook)
        for j, rule in enumerate(rules):
            found = _shadowed(rule, chain.reach(j))
            if found is None:
                found = _ineffective_limit(ruleset, rule) or _redundant_state(ruleset, rule)
            if found is not None:
                findings.append(found)
            if interfaces is not None:
                findings += _missing_interfaces(rule, set(interfaces))
    return findings


def _finding(rule: Rule, kind: str, message: str) -> Finding:
    return Finding(kind, rule.id, rule.hook, rule.priority, message)


def _shadowed(rule: Rule, r: Reach) -> Finding | None:
    if not r.shadowed:
        return None
    where = f"{rule.hook.value}/{rule.priority}"
    if not r.by:
        return _finding(rule, "shadowed", f"no packet can match it at {where}")
    names = ", ".join(f"'{i}'" for i in r.by)
    many = len(r.by) > 1
    return _finding(rule, "shadowed", f"never reached: earlier rule{'s' if many else ''} {names}"
                    f" at {where} already decide{'' if many else 's'} every packet it matches")


def _later(ruleset: Ruleset, rule: Rule) -> list[Rule]:
    """The rules a packet meets after ``rule`` at its hook: the rest of its chain, then the
    chains of higher priority."""
    chain = [r for r in ruleset.rules if (r.hook, r.priority) == (rule.hook, rule.priority)]
    rest = chain[chain.index(rule) + 1:]
    for (hook, prio), rules in ruleset.chains():
        if hook is rule.hook and prio > rule.priority:
            rest += rules
    return rest


def _boxes(rules: Sequence[Rule], ifaces: space.Interfaces) -> list[space.Box]:
    return [b for r in rules for b in space.rule_boxes(r, ifaces)]


def _ineffective_limit(ruleset: Ruleset, rule: Rule) -> Finding | None:
    if rule.action is not Action.ACCEPT or rule.limit is None:
        return None
    later = _later(ruleset, rule)
    ifaces = space.chain_interfaces([rule] + later, rule.hook)
    excess = space.clip(space.rule_boxes(rule, ifaces), space.universe(ifaces))
    fix = "add a drop after it"
    limit = rule.limit.format()
    try:
        for other in later:
            if not other.action.decides or space.has_set(other):
                continue
            theirs = space.rule_boxes(other, ifaces)
            if other.action is Action.ACCEPT:
                if any(space.box_meet(e, b) for e in excess for b in theirs):
                    return _finding(rule, "ineffective-limit",
                                    f"packets over its limit {limit} are accepted anyway by "
                                    f"rule '{other.id}' at {other.hook.value}/{other.priority};"
                                    f" {fix}")
            elif other.limit is None:
                excess = space.subtract_all(excess, theirs)
            if not excess:
                return None
    except space.Budget:
        return None
    hook = rule.hook
    if ruleset.policy(hook) is Action.ACCEPT:
        return _finding(rule, "ineffective-limit",
                        f"packets over its limit {limit} are accepted anyway by the accept "
                        f"policy of {hook.value}; {fix}")
    state = space.D["state"]
    if ruleset.stateful and any(space.meet(e[state], _EST_REL) for e in excess):
        return _finding(rule, "ineffective-limit",
                        f"packets over its limit {limit} that are established or related (a "
                        f"ping flood after its first echo request) are accepted anyway by the "
                        f"stateful drop policy of {hook.value}; {fix}")
    return None


def _redundant_state(ruleset: Ruleset, rule: Rule) -> Finding | None:
    if (rule.action is not Action.ACCEPT or not rule.state
            or not set(rule.state) <= {"established", "related"}
            or ruleset.policy(rule.hook) is not Action.DROP or not ruleset.stateful):
        return None
    later = _later(ruleset, rule)
    ifaces = space.chain_interfaces([rule] + later, rule.hook)
    mine = space.rule_boxes(rule, ifaces)
    drops = [r for r in later if r.action in (Action.DROP, Action.REJECT)]
    if any(space.box_meet(m, b) for m in mine for b in _boxes(drops, ifaces)):
        return None  # it keeps those packets from a later drop: not redundant
    return _finding(rule, "redundant-state",
                    f"it accepts only {'/'.join(rule.state)} packets, which the stateful drop "
                    f"policy of {rule.hook.value} accepts anyway; remove it")


def _missing_interfaces(rule: Rule, host: set[str]) -> list[Finding]:
    out = []
    for key in ("iif", "oif"):
        for name in getattr(rule, key):
            if name.endswith("*"):
                if not any(h.startswith(name[:-1]) for h in host):
                    out.append(_finding(rule, "interface", f"{key} '{name}' matches no interface "
                                        "on this host (yet); the rule matches nothing until "
                                        "one appears"))
            elif name not in host:
                out.append(_finding(rule, "interface", f"{key} '{name}' does not exist on this "
                                    "host (yet); the rule matches nothing until it appears"))
    return out
