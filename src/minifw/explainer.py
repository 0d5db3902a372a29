"""The explain operation: which ruleset to ask, the pure evaluation, and what else is in the way.

It reads the live ruleset of an instance from its state directory (what `up`, `reload`, `add`
and `delete` last applied), or a config file, and never nft's listing: the evaluator works on
the same rule model the compiler compiles. It also looks at the kernel for base chains of other
tables at the packet's hooks, which explain does not cover.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any, Iterable, Sequence

from .capture import read_capture
from .compile.nft import FAMILY, TABLE
from .engine.explain import Explanation, HookFunction, Probe, explain
from .errors import KernelError, StateError
from .model import Ruleset
from .model.types import PATHS, Hook
from .service import read_config
from .state import Store

# Families of tables whose base chains see IPv4 / IPv6 packets at the inet hooks.
_FAMILIES = {4: ("ip", "inet"), 6: ("ip6", "inet")}


@dataclasses.dataclass(frozen=True)
class Source:
    ruleset: Ruleset
    where: str                    # "the live ruleset (state dir ...)" or the config path
    hook_functions: tuple[HookFunction, ...] = ()


def ruleset_source(state_dir: Path, config: str | None) -> Source:
    """The ruleset to explain: ``config`` if given, else the instance's live ruleset."""
    if config is not None:
        _, ruleset = read_config(config)
        return Source(ruleset, config)
    state = Store(state_dir).load()
    if not state.loaded:
        raise StateError(f"minifw is not up with state dir {state_dir}, so there is no live "
                         "ruleset to explain; run 'minifw up --config FILE' or pass "
                         "'explain --config FILE'")
    # TODO(issue 4): when Python hook functions land, read them from the instance's state (or
    # the config's [[hook]] entries) and pass them as HookFunction(name, hook, priority), so
    # that explain reports "decided at runtime by hook function X at <hook>/<priority>".
    return Source(Ruleset.from_toml(state.ruleset), f"the live ruleset ({state.config})")


def foreign_chains(hooks: Iterable[Hook], versions: Iterable[int]) -> list[str]:
    """Warnings about other tables' base chains at these hooks; [] when nft cannot be asked."""
    from .kernel import table  # the kernel edge, only when needed

    try:
        chains = table.base_chains()
    except (KernelError, PermissionError, OSError):
        return []
    families = {f for v in versions for f in _FAMILIES[v]}
    wanted = {h.value for h in hooks}
    out = []
    for c in chains:
        if (c.get("family"), c.get("table")) == (FAMILY, TABLE):
            continue
        if c.get("family") in families and c.get("hook") in wanted:
            out.append(f"table {c['family']} {c['table']} has base chain {c['name']} at "
                       f"{c['hook']} priority {c.get('prio')}: explain covers table "
                       f"{FAMILY} {TABLE} only, and that chain can still drop what minifw "
                       "accepts")
    return out


def explain_one(source: Source, probe: Probe) -> Explanation:
    return explain(source.ruleset, probe, source.hook_functions)


def explain_capture(source: Source, capture: str, *, path_kind: str = "in",
                    iif: str | None = None, oif: str | None = None,
                    state: str | None = None) -> tuple[dict[str, Any], set[int]]:
    """Explain every packet of a capture and sum up: decider -> packets and verdicts.

    Returns the summary and the IP versions seen (to look for other tables' chains)."""
    deciders: dict[str, dict[str, Any]] = {}
    verdicts: collections.Counter = collections.Counter()
    skipped: collections.Counter = collections.Counter()
    versions: set[int] = set()
    total = explained = 0
    for item in read_capture(capture, path_kind=path_kind, iif=iif, oif=oif, state=state):
        total += 1
        if item.probe is None:
            skipped[item.skipped or "unknown"] += 1
            continue
        explained += 1
        versions.add(item.probe.version)
        exp = explain_one(source, item.probe)
        verdicts[exp.verdict] += 1
        entry = deciders.setdefault(exp.decider, {
            "decider": exp.decider, "rule": exp.rule, "decided_by": exp.decided_by,
            "hook": exp.hook.value, "priority": exp.priority, "packets": 0, "verdicts": {},
            "first_packet": item.index})
        entry["packets"] += 1
        entry["verdicts"][exp.verdict] = entry["verdicts"].get(exp.verdict, 0) + 1
    order = sorted(deciders.values(), key=lambda d: (-d["packets"], d["decider"]))
    return {"capture": capture, "path": path_kind, "packets": total, "explained": explained,
            "skipped": dict(skipped), "verdicts": dict(verdicts), "deciders": order}, versions


def path_hooks(path_kind: str) -> Sequence[Hook]:
    return PATHS.get(path_kind, ())
