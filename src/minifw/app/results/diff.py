"""The result of ``minifw diff``: the live ruleset against a config file's, rule by rule."""

from __future__ import annotations

from typing import Any, Mapping

from .base import _frozen


@_frozen
class Diffed:
    wanted: str                          # the config file compared
    loaded: bool                         # minifw is up here
    config: str | None                   # the config the live ruleset came from
    in_sync: bool                        # the kernel holds what the state says is live
    added: tuple[Mapping[str, Any], ...]     # {"id", "rule"}: in the config, not live
    removed: tuple[Mapping[str, Any], ...]   # {"id", "rule"}: live, not in the config
    changed: tuple[Mapping[str, Any], ...]   # {"id", "live", "wanted"}
    moved: tuple[str, ...]               # chains "hook/priority" whose rule order differs
    sections: tuple[str, ...]            # policy, set, nat, events: those that differ

    @property
    def same(self) -> bool:
        """The rulesets are equal (the config file's name aside)."""
        return not (self.added or self.removed or self.changed or self.moved or self.sections)

    @property
    def up_to_date(self) -> bool:
        """'minifw up --config WANTED' would change nothing."""
        return self.loaded and self.in_sync and self.config == self.wanted and self.same

    def to_json(self) -> dict[str, Any]:
        return {"wanted": self.wanted, "loaded": self.loaded, "config": self.config,
                "in_sync": self.in_sync, "same": self.same, "up_to_date": self.up_to_date,
                "added": [dict(a) for a in self.added],
                "removed": [dict(r) for r in self.removed],
                "changed": [dict(c) for c in self.changed],
                "moved": list(self.moved), "sections": list(self.sections)}
