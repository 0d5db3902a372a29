"""Live side of rule runs (``compile.runs``): per-rule counters from per-element counters, and
chain edits (``add``/``delete``) when a chain holds runs."""

from __future__ import annotations

from ..compile import names, runs
from ..compile import nft as compiler
from ..compile.carry import live_counters, plan_carry
from ..errors import KernelError
from ..kernel.seam import Kernel
from ..kernel.table import items
from ..model.ruleset import Ruleset


def _chain_rules(ruleset: Ruleset, chain: str) -> list:
    for (hook, prio), rules in ruleset.chains():
        if names.rule_chain(hook, prio) == chain:
            return rules
    return []


def run_counters(kernel: Kernel, live: Ruleset) -> dict[str, list[int]]:
    """rule id -> [packets, bytes] for rules compiled into runs, from their set elements."""
    out: dict[str, list[int]] = {}
    for (hook, prio), rules in live.chains():
        chain = names.rule_chain(hook, prio)
        for index, item in enumerate(runs.plan_chain(rules)):
            if not isinstance(item, runs.Run):
                continue
            owners = runs.element_owners(item)
            for rule in item.rules:
                out[rule.id] = [0, 0]
            for version, _ in runs.run_groups(item):
                name = runs.run_set_name(chain, index, version)
                try:
                    elements = kernel.set_elements(name)
                except KernelError:
                    continue
                for elem in elements:
                    counter = elem.get("elem", {}).get("counter") if isinstance(elem, dict) else None
                    owner = owners.get(runs.element_key(elem))
                    if owner and counter:
                        out[owner][0] += counter.get("packets", 0)
                        out[owner][1] += counter.get("bytes", 0)
    return out


def edit_chain(kernel: Kernel, chain: str, old: Ruleset, new: Ruleset, removed=()) -> bool:
    """Refill ``chain`` in one transaction if it holds runs before or after the edit.

    Returns False (nothing done) for chains without runs, which keep the handle-based edits.
    """
    before, after = _chain_rules(old, chain), _chain_rules(new, chain)
    if not (runs.has_runs(before) or runs.has_runs(after)):
        return False
    listing = kernel.listing()
    chains = {c["name"] for c in items(listing, "chain")}
    sets = [s["name"] for s in items(listing, "set")]
    carry = plan_carry(old, new, live_counters(listing), sets, chains=[chain])
    kernel.run(compiler.build_chain_rebuild(chain, after, new, chain in chains, sets, removed,
                                            carry))
    return True
