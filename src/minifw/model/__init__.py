"""The rule model: frozen dataclasses, their TOML form, and config text edits. Pure."""

from .config import add_rule_text, delete_rule_text, parse_config
from .rule import Limit, PortRange, Rule
from .ruleset import Ruleset
from .types import Action, Family, Hook, Proto

__all__ = ["Action", "Family", "Hook", "Limit", "PortRange", "Proto", "Rule", "Ruleset",
           "add_rule_text", "delete_rule_text", "parse_config"]
