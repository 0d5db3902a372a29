"""Counters that survive a reload, ``add`` and ``delete``. Pure.

A load flushes the declarative chains, which zeroes every counter. For each rule whose id and
match did not change, the counters read just before the transaction go back in with it:

- a plain rule's nft rules get ``"counter": {"packets": p, "bytes": b}`` (libnftables JSON
  takes initial values for rule counters), in kernel order, when the rule compiles into as
  many counting nft rules as before; so do the drop counters of drop policies;
- a merged run counts per set element, and element counters sent through JSON come back as 0.
  So a run set that is still the same set (same name, kind, flags, rule shape, and every element
  in it still owned by the same rule) is kept, not re-created: the transaction only deletes the
  elements that left it and adds the new ones, and the others keep counting, exactly.
  Otherwise the set is made again, from 0.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from ..errors import ConfigError
from ..model.rule import MATCH_KEYS, Rule
from ..model.ruleset import Ruleset
from . import names, runs
from .comments import rule_id_of_comment

Counts = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Carry:
    counters: dict[str, list[Counts]] = dataclasses.field(default_factory=dict)
    keep: dict[str, list[Any]] = dataclasses.field(default_factory=dict)  # run set -> elements


def live_counters(listing: dict[str, Any]) -> dict[str, list[Counts]]:
    """comment owner -> (packets, bytes) of each counting nft rule, in kernel order, for the
    declarative chains of a terse ``list ruleset`` listing."""
    out: dict[str, list[Counts]] = {}
    for obj in listing.get("nftables", []):
        rule = obj.get("rule")
        if not rule or not names.is_declarative(rule.get("chain", "")):
            continue
        for expr in rule.get("expr", []):
            counter = expr.get("counter") if isinstance(expr, dict) else None
            if isinstance(counter, dict):
                key = rule_id_of_comment(rule.get("comment"))
                if key:
                    out.setdefault(key, []).append((counter.get("packets", 0),
                                                    counter.get("bytes", 0)))
    return out


def previous(toml: dict[str, Any], new: Ruleset) -> Ruleset:
    """The ruleset in force, from its TOML (the state file's), sharing the new ruleset's Rule
    objects where a rule's TOML did not change: parsing and planning 10k rules again would
    cost a reload about a second."""
    raws = toml.get("rule", [])
    if not isinstance(raws, list) or not all(isinstance(r, dict) for r in raws):
        raise ConfigError("the saved ruleset's rules are not a list of tables")
    mine = {_key(rule.to_toml()): rule for rule in new.rules}
    rules = tuple(mine.get(_key(raw)) or Rule.from_toml(raw, index=i)
                  for i, raw in enumerate(raws))
    return dataclasses.replace(Ruleset.from_toml({k: v for k, v in toml.items() if k != "rule"}),
                               rules=rules)


def _key(raw: dict[str, Any]) -> str:
    return repr(sorted(raw.items()))


def plan_carry(old: Ruleset | None, new: Ruleset, counters: dict[str, list[Counts]],
               kernel_sets: Iterable[str], chains: Iterable[str] | None = None) -> Carry:
    """What ``new`` takes over from the live ``old`` ruleset (None: nothing). ``chains``
    limits the run sets considered to those chains (an edit refills one chain)."""
    if old is None:
        return Carry()
    carried: dict[str, list[Counts]] = {}
    was = {r.id: r for r in old.rules}
    for rule in new.rules:
        before = was.get(rule.id)
        if before is not None and rule.id in counters and _same_match(before, rule):
            carried[rule.id] = counters[rule.id]
    for hook in set(old.drop_hooks) & set(new.drop_hooks):
        key = f"policy {hook.value}"
        if key in counters:
            carried[key] = counters[key]
    return Carry(carried, _kept_sets(old, new, set(kernel_sets), chains))


def _same_match(a: Rule, b: Rule) -> bool:
    """Same place and same match (action, log and comment may differ)."""
    return a == b or all(getattr(a, k) == getattr(b, k) for k in _COMPARED)


_COMPARED = ("hook", "priority") + MATCH_KEYS


def _chain_names(ruleset: Ruleset) -> list[str]:
    return [names.rule_chain(hook, prio) for (hook, prio), _ in ruleset.chains()]


def _runs_by_set(ruleset: Ruleset, chains: set[str]) -> dict[str, tuple[runs.Run, list]]:
    out = {}
    for (hook, prio), rules in ruleset.chains():
        chain = names.rule_chain(hook, prio)
        if chain not in chains:
            continue
        for index, item in enumerate(runs.plan_chain(rules)):
            if isinstance(item, runs.Run):
                for version, values in runs.run_groups(item):
                    out[runs.run_set_name(chain, index, version)] = (item, values)
    return out


def _kept_sets(old: Ruleset, new: Ruleset, kernel_sets: set[str],
               chains: Iterable[str] | None) -> dict[str, list[Any]]:
    # only chains whose run sets are in the kernel: planning 10k rules costs a second
    holding = {c for c in _chain_names(new) if runs.sets_of(c, kernel_sets)}
    wanted = holding if chains is None else holding & set(chains)
    if not wanted:
        return {}
    before = _runs_by_set(old, wanted)
    keep: dict[str, list[Any]] = {}
    for name, (run, values) in _runs_by_set(new, wanted).items():
        if name not in kernel_sets or name not in before:
            continue
        old_run, old_values = before[name]
        if (old_run.field != run.field or runs.is_ranged(old_values) != runs.is_ranged(values)
                or runs.shape(old_run.rules[0], run.field) != runs.shape(run.rules[0], run.field)):
            continue
        was, now = runs.element_owners(old_run), runs.element_owners(run)
        if any(now[k] != owner for k, owner in was.items() if k in now):
            continue
        keep[name] = [runs.element_of(v) for v in old_values]
    return keep


def apply_counters(commands: list[dict[str, Any]], counters: dict[str, list[Counts]]) -> None:
    """Give the counting nft rules added by ``commands`` the carried values, in place; a rule
    whose count of counting nft rules changed starts from 0."""
    added: dict[str, list[dict[str, Any]]] = {}
    for cmd in commands:
        rule = cmd.get("add", cmd.get("insert", {})).get("rule")
        if rule is None:
            continue
        key = rule_id_of_comment(rule.get("comment"))
        if key in counters and {"counter": None} in rule["expr"]:
            added.setdefault(key, []).append(rule)
    for key, rules in added.items():
        values = counters[key]
        if len(values) != len(rules):
            continue
        for rule, (packets, nbytes) in zip(rules, values):
            at = rule["expr"].index({"counter": None})
            rule["expr"] = (rule["expr"][:at] + [{"counter": {"packets": packets, "bytes": nbytes}}]
                            + rule["expr"][at + 1:])
