"""The rule model: frozen dataclasses, their TOML form, and config text edits. Pure.

The names load lazily (PEP 562): a command that only bans an address imports the set model
without the rule model's TOML side (tomlkit costs more than a whole ``minifw ban``)."""

from __future__ import annotations

import importlib
TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any

_HOME = {"add_rule_text": ".config", "delete_rule_text": ".config", "parse_config": ".config",
         "Limit": ".rule", "PortRange": ".rule", "Rule": ".rule", "Ruleset": ".ruleset",
         "Action": ".types", "Family": ".types", "Hook": ".types", "Proto": ".types"}

__all__ = ["Action", "Family", "Hook", "Limit", "PortRange", "Proto", "Rule", "Ruleset",
           "add_rule_text", "delete_rule_text", "parse_config"]

if TYPE_CHECKING:
    from .config import add_rule_text, delete_rule_text, parse_config
    from .rule import Limit, PortRange, Rule
    from .ruleset import Ruleset
    from .types import Action, Family, Hook, Proto


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
