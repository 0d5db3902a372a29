"""``minifw diff``: what loading a config would change, rule by rule, without changing it."""

from __future__ import annotations

import os

from ..model import Ruleset
from ..model.diff import diff_rulesets
from .results.diff import Diffed
from ..store.state import DEFAULT_CONFIG
from .rules import Service, read_config


def diff(service: Service, config: str | None) -> Diffed:
    """The live ruleset (from the state directory, checked against the kernel) against
    ``config``'s. Nothing loaded: every rule of the config is added."""
    path = os.path.abspath(config or DEFAULT_CONFIG)
    _, wanted = read_config(path)
    state = service.store.load()
    live = service._live(state) if state.loaded else None
    in_sync = live is not None and service.kernel.exists() and service._in_sync(live)
    found = diff_rulesets(live, wanted)
    old = {r.id: r.to_toml() for r in (live or Ruleset()).rules}
    new = {r.id: r.to_toml() for r in wanted.rules}
    return Diffed(
        wanted=path, loaded=state.loaded, config=state.config if state.loaded else None,
        in_sync=in_sync,
        added=tuple({"id": i, "rule": new[i]} for i in found.added),
        removed=tuple({"id": i, "rule": old[i]} for i in found.removed),
        changed=tuple({"id": c.id, "live": c.live, "wanted": c.wanted} for c in found.changed),
        moved=found.moved, sections=found.sections)
