"""NFLOG prefixes: what minifw writes into its NFLOG statements, and the origin read back. Pure.

Every NFLOG statement minifw compiles uses group ``[events] group`` and one of these prefixes:

    <rule id>          a rule (rule ids hold no ':')
    policy:<hook>      a drop policy
    set:<name>         a ban: the set's drop
    run:<set name>     the one capped log rule in front of a merged run; the rule is the one whose
                       element holds the packet's field, as ``list`` maps element counters

``event_origin`` is the one place that maps a prefix (and, for a run, the packet) back to the
rule, hook, priority and action that decided.
"""

from __future__ import annotations

import bisect
import dataclasses
import ipaddress
from typing import Any

from ..model.ruleset import Ruleset
from ..model.rule import PortRange
from ..model.types import POLICY_PRIORITY, Hook
from . import names, runs

POLICY = "policy:"
SET = "set:"
RUN = "run:"
HOOK = "hook:"


@dataclasses.dataclass(frozen=True)
class Origin:
    rule: str          # the rule id, or policy:<hook>, set:<name>
    hook: str
    priority: int
    action: str


def policy_prefix(hook: Hook) -> str:
    return f"{POLICY}{hook.value}"


def set_prefix(name: str) -> str:
    return f"{SET}{name}"


def run_prefix(set_name: str) -> str:
    return f"{RUN}{set_name}"


def event_origin(ruleset: Ruleset, prefix: str, packet: dict[str, Any]) -> Origin | None:
    """The origin of an NFLOG packet with ``prefix``, under ``ruleset`` (the applied one).

    ``packet`` needs family, proto, src, dst, sport, dport (used for ``run:`` prefixes only).
    None when the prefix is not one minifw writes for this ruleset (a rule since deleted, a
    run that no longer exists, a packet no element of the run holds). ``hook:`` events do not
    come through NFLOG: None as well.
    """
    prefix = prefix.rstrip("\x00")
    if prefix.startswith(POLICY):
        hook = _hook(prefix[len(POLICY):])
        return None if hook is None else Origin(prefix, hook.value, POLICY_PRIORITY, "drop")
    if prefix.startswith(SET):
        name = prefix[len(SET):]
        if not name:
            return None
        return Origin(prefix, Hook.PREROUTING.value, names.BAN_PRIORITY, "drop")
    if prefix.startswith(RUN):
        return _index(ruleset).run_origin(prefix[len(RUN):], packet)
    if ":" in prefix:
        return None
    rule = _index(ruleset).rules.get(prefix)
    return None if rule is None else _origin_of(rule)


def _hook(text: str) -> Hook | None:
    try:
        return Hook(text)
    except ValueError:
        return None


def _origin_of(rule) -> Origin:
    return Origin(rule.id, rule.hook.value, rule.priority, rule.action.value)


class _RunLookup:
    """The elements of one run set, as sorted non-overlapping spans (runs never overlap)."""

    def __init__(self, run: runs.Run, version: int | None):
        spans = []
        for rule in run.rules:
            for value in getattr(rule, run.field):
                if isinstance(value, PortRange):
                    spans.append((value.lo, value.hi, rule))
                elif value.version == version:
                    spans.append((int(value.network_address), int(value.broadcast_address), rule))
        spans.sort(key=lambda s: s[0])
        self.field = run.field
        self.version = version
        self.los = [s[0] for s in spans]
        self.spans = spans

    def owner(self, packet: dict[str, Any]):
        key = _packet_value(packet.get(self.field), self.version)
        if key is None:
            return None
        at = bisect.bisect_right(self.los, key) - 1
        if at < 0:
            return None
        lo, hi, rule = self.spans[at]
        return rule if lo <= key <= hi else None


def _packet_value(value: Any, version: int | None) -> int | None:
    """The packet's field as the integer the spans hold; None if absent or of another kind."""
    if value is None:
        return None
    if version is None:  # a port
        return value if isinstance(value, int) and not isinstance(value, bool) else (
            int(value) if isinstance(value, str) and value.isdigit() else None)
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return int(address) if address.version == version else None


class _Index:
    """Rule ids and run sets of one ruleset, built once: events arrive by the thousand."""

    def __init__(self, ruleset: Ruleset):
        self.ruleset = ruleset  # held, so the id() this is cached under stays its own
        self.rules = {r.id: r for r in ruleset.rules}
        self.chains = {names.rule_chain(h, p): rules for (h, p), rules in ruleset.chains()}
        self.runs: dict[str, _RunLookup | None] = {}

    def run_origin(self, set_name: str, packet: dict[str, Any]) -> Origin | None:
        if set_name not in self.runs:
            self.runs[set_name] = self._lookup(set_name)
        lookup = self.runs[set_name]
        rule = lookup.owner(packet) if lookup else None
        return None if rule is None else _origin_of(rule)

    def _lookup(self, set_name: str) -> _RunLookup | None:
        parsed = runs.parse_run_set_name(set_name)
        if parsed is None:
            return None
        chain, index, version = parsed
        rules = self.chains.get(chain)
        if not rules:
            return None
        plan = runs.plan_chain(rules)
        if index >= len(plan) or not isinstance(plan[index], runs.Run):
            return None
        run = plan[index]
        if (version is None) != (run.field in ("sport", "dport")):
            return None
        return _RunLookup(run, version)


_CACHE: list[_Index] = []  # the index of the latest rulesets asked about


def _index(ruleset: Ruleset) -> _Index:
    for index in _CACHE:
        if index.ruleset is ruleset:
            return index
    index = _Index(ruleset)
    _CACHE[:] = [index] + _CACHE[:1]
    return index
