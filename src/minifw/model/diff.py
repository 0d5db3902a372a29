"""The rule-level difference between two rulesets (the live one and a wanted one). Pure.

Rules are matched by id: added, removed, changed (same id, other TOML), and moved (same rules,
other order within a chain: the order decides the verdict). The other parts of a ruleset
(policy, sets, NAT, events) are compared as whole sections and named when they differ."""

from __future__ import annotations

import dataclasses
from typing import Any

from .ruleset import Ruleset

SECTIONS = ("policy", "set", "nat", "events")


@dataclasses.dataclass(frozen=True)
class RuleChange:
    id: str
    live: dict[str, Any]
    wanted: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RulesetDiff:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[RuleChange, ...] = ()
    moved: tuple[str, ...] = ()        # chains ("hook/priority") whose rule order changed
    sections: tuple[str, ...] = ()     # the other parts that differ

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed or self.moved or self.sections)


def _chain_key(rule: Any) -> str:
    return f"{rule.hook.value}/{rule.priority}"


def diff_rulesets(live: Ruleset | None, wanted: Ruleset) -> RulesetDiff:
    """``live`` None: nothing is loaded, so every rule and every non-empty section is new."""
    live = live if live is not None else Ruleset()
    old = {r.id: r.to_toml() for r in live.rules}
    new = {r.id: r.to_toml() for r in wanted.rules}
    added = tuple(i for i in new if i not in old)
    removed = tuple(i for i in old if i not in new)
    changed = tuple(RuleChange(i, old[i], new[i]) for i in new if i in old and old[i] != new[i])
    moved = []
    for key in dict.fromkeys(_chain_key(r) for r in wanted.rules):
        # the relative order of the rules kept in both: an insertion alone is no move
        kept_old = [r.id for r in live.rules if _chain_key(r) == key and r.id in new]
        kept_new = [r.id for r in wanted.rules if _chain_key(r) == key and r.id in old]
        if [i for i in kept_old if i in kept_new] != [i for i in kept_new if i in kept_old]:
            moved.append(key)
    live_toml, wanted_toml = live.to_toml(), wanted.to_toml()
    sections = tuple(s for s in SECTIONS if live_toml.get(s) != wanted_toml.get(s))
    return RulesetDiff(added, removed, changed, tuple(moved), sections)
