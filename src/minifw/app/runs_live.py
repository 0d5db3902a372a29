"""Live side of rule runs (``compile.runs``): per-rule counters from per-element counters, and
chain edits (``add``/``delete``) when a chain holds runs."""

from __future__ import annotations

from ..compile import names, runs
from ..compile import nft as compiler
from ..errors import KernelError
from ..kernel.seam import Kernel
from ..kernel.table import items
from ..model.ruleset import Ruleset


def _chain_rules(ruleset: Ruleset, chain: str) -> list:
    for (hook, prio), rules in ruleset.chains():
        if names.rule_chain(hook, prio) == chain:
            return rules
    return []


def run_owners(live: Ruleset) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Each run's backing set -> {element key: rule id}, and the ids of the rules in runs."""
    sets: dict[str, dict[str, str]] = {}
    ids: list[str] = []
    for (hook, prio), rules in live.chains():
        chain = names.rule_chain(hook, prio)
        for index, item in enumerate(runs.plan_chain(rules)):
            if not isinstance(item, runs.Run):
                continue
            owners = runs.element_owners(item)
            ids += [rule.id for rule in item.rules]
            for version, _ in runs.run_groups(item):
                sets[runs.run_set_name(chain, index, version)] = owners
    return sets, ids


def count_elements(elements: list, owners: dict[str, str], out: dict[str, list[int]]) -> None:
    """Add each listed element's counter to its rule's [packets, bytes] in ``out``."""
    for elem in elements:
        counter = elem.get("elem", {}).get("counter") if isinstance(elem, dict) else None
        owner = owners.get(runs.element_key(elem))
        if owner and counter:
            out[owner][0] += counter.get("packets", 0)
            out[owner][1] += counter.get("bytes", 0)


def run_counters(kernel: Kernel, live: Ruleset) -> dict[str, list[int]]:
    """rule id -> [packets, bytes] for rules compiled into runs, from their set elements."""
    sets, ids = run_owners(live)
    out: dict[str, list[int]] = {rule_id: [0, 0] for rule_id in ids}
    for name, owners in sets.items():
        try:
            elements = kernel.set_elements(name)
        except KernelError:
            continue
        count_elements(elements, owners, out)
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
    kernel.run(compiler.build_chain_rebuild(chain, after, new, chain in chains, sets, removed))
    return True
