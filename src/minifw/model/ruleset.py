"""The Ruleset: policies plus rules, in evaluation order."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

from ..errors import RuleError
from .crowdsec import CROWDSEC_RULE, CrowdsecConfig
from .events import EventsConfig
from .logtext import parse_log_prefix
from .rule import Limit, Rule, parse_limit
from .nat import Nat, check_nats, nats_from_toml
from .setdefs import SetDef, SetRef
from .sets import DEFAULT_SET, SetError
from .suggest import unknown as unknown_text
from .types import Action, Hook, point_order

POLICY_KEYS = tuple(h.value for h in Hook) + ("stateful", "log", "log_limit")
# what a drop policy writes to the kernel log, at most: the limit never applies to the drop
DEFAULT_POLICY_LOG_LIMIT = Limit(10, "second", 20)


@dataclasses.dataclass(frozen=True)
class Ruleset:
    rules: tuple[Rule, ...] = ()
    policies: tuple[tuple[Hook, Action], ...] = ()  # only hooks whose policy is drop are kept
    stateful: bool = True
    sets: tuple[SetDef, ...] = ()
    events: EventsConfig = EventsConfig()
    policy_log: str | None = None      # kernel-log prefix for what drop policies drop
    policy_log_limit: Limit = DEFAULT_POLICY_LOG_LIMIT
    nats: tuple[Nat, ...] = ()  # [[nat]], in config order (model/nat.py)
    crowdsec: CrowdsecConfig | None = None  # [crowdsec] (model/crowdsec.py)
    # Runtime, never in the config: which of the crowdsec set's four backing sets (kinds:
    # (IP version, CIDR?)) its drop rule looks up. None: all four. Each lookup costs every
    # packet, even of an empty set, so the kernel gets those that ever held elements.
    crowdsec_armed: frozenset[tuple[int, bool]] | None = dataclasses.field(default=None,
                                                                          compare=False)

    def __post_init__(self):
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise RuleError("is used by more than one rule; ids must be unique",
                                rule=rule.id, field="id")
            seen.add(rule.id)
        check_nats(self.nats, self.rules, {s.name for s in self.sets} | {DEFAULT_SET})
        names = [s.name for s in self.sets]
        for name in names:
            if names.count(name) > 1:
                raise SetError("is defined twice", set_name=name, field="name")
        for rule in self.rules:
            for key in ("src", "dst"):
                for ref in getattr(rule, key):
                    if (isinstance(ref, SetRef) and ref.name not in names
                            and ref.name != DEFAULT_SET
                            and (self.crowdsec is None or ref.name != self.crowdsec.set)):
                        raise RuleError(f"set '{ref.name}' is not defined; add a [[set]] table "
                                        f"with name = \"{ref.name}\"", rule=rule.id, field=key)

    def set_names(self) -> list[str]:
        """Named sets the ruleset needs in the kernel: defined ones, then referenced ``blocked``."""
        names = [s.name for s in self.sets]
        for rule in (*self.rules, *self.nats):
            for ref in rule.src + rule.dst:
                if isinstance(ref, SetRef) and ref.name not in names:
                    names.append(ref.name)
        return names

    def get_set(self, name: str) -> SetDef | None:
        return next((s for s in self.sets if s.name == name), None)

    # ---- queries -------------------------------------------------------------------------
    def policy(self, hook: Hook) -> Action:
        return dict(self.policies).get(hook, Action.ACCEPT)

    @property
    def drop_hooks(self) -> tuple[Hook, ...]:
        return tuple(h for h in Hook if self.policy(h) is Action.DROP)

    def chains(self) -> list[tuple[tuple[Hook, int], list[Rule]]]:
        """Rules grouped by (hook, priority), in the kernel's evaluation order per hook."""
        groups: dict[tuple[Hook, int], list[Rule]] = {}
        for rule in self.rules:
            groups.setdefault((rule.hook, rule.priority), []).append(rule)
        return sorted(groups.items(), key=lambda kv: point_order(*kv[0]))

    def ordered(self) -> Iterator[Rule]:
        for _, rules in self.chains():
            yield from rules

    def get(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    # ---- edits (return new rulesets) -----------------------------------------------------
    def with_rule(self, rule: Rule, position: int | None = None) -> "Ruleset":
        """Add ``rule`` at ``position`` within its own chain (default: the chain's end)."""
        rules = list(self.rules)
        peers = [i for i, r in enumerate(rules) if (r.hook, r.priority) == (rule.hook, rule.priority)]
        if position is None or position >= len(peers):
            at = peers[-1] + 1 if peers else len(rules)
        else:
            at = peers[position]
        rules.insert(at, rule)
        return dataclasses.replace(self, rules=tuple(rules))

    def without(self, rule_id: str) -> "Ruleset":
        return dataclasses.replace(self, rules=tuple(r for r in self.rules if r.id != rule_id))

    # ---- TOML pair -----------------------------------------------------------------------
    @classmethod
    def from_toml(cls, data: dict[str, Any]) -> "Ruleset":
        policy = data.get("policy", {})
        if not isinstance(policy, dict):
            raise RuleError("must be a table such as [policy] input = \"drop\"", field="policy")
        policies = []
        for key, value in policy.items():
            if key not in POLICY_KEYS:
                raise RuleError(unknown_text("key", key, POLICY_KEYS,
                                             f"valid keys are {', '.join(POLICY_KEYS)}"),
                                field=f"policy.{key}")
            if key == "stateful":
                if not isinstance(value, bool):
                    raise RuleError("must be true or false", field="policy.stateful")
                continue
            if key in ("log", "log_limit"):
                continue
            if value not in ("accept", "drop"):
                raise RuleError(unknown_text(f"value {value!r}", value, ("accept", "drop"),
                                             "expected accept | drop"), field=f"policy.{key}")
            if value == "drop":
                policies.append((Hook(key), Action.DROP))
        raw_rules = data.get("rule", [])
        if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
            raise RuleError("must be written as [[rule]] tables", field="rule")
        rules = tuple(Rule.from_toml(r, index=i) for i, r in enumerate(raw_rules))
        raw_sets = data.get("set", [])
        if not isinstance(raw_sets, list):
            raise RuleError("must be written as [[set]] tables", field="set")
        sets = tuple(SetDef.from_toml(s, index=i) for i, s in enumerate(raw_sets))
        crowdsec = CrowdsecConfig.from_toml(data["crowdsec"]) if "crowdsec" in data else None
        if crowdsec is not None:  # its implicit drop rule: first at its priority
            if any(r.id == CROWDSEC_RULE for r in rules):
                raise RuleError("is the id of [crowdsec]'s own drop rule; give this rule "
                                "another id", rule=CROWDSEC_RULE, field="id")
            rules = (Rule.from_toml(crowdsec.drop_rule()),) + rules
        return cls(rules=rules, crowdsec=crowdsec, policies=tuple(sorted(policies, key=lambda p: list(Hook).index(p[0]))),
                   stateful=policy.get("stateful", True), sets=sets, nats=nats_from_toml(data),
                   events=EventsConfig.from_toml(data.get("events", {})),
                   **_policy_log(policy))

    def to_toml(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        policy: dict[str, Any] = {h.value: a.value for h, a in self.policies}
        if not self.stateful:
            policy["stateful"] = False
        if self.policy_log is not None:
            policy["log"] = self.policy_log
        if self.policy_log_limit != DEFAULT_POLICY_LOG_LIMIT:
            policy["log_limit"] = self.policy_log_limit.format()
        if policy:
            out["policy"] = policy
        events = self.events.to_toml()
        if events:
            out["events"] = events
        if self.sets:
            out["set"] = [s.to_toml() for s in self.sets]
        if self.crowdsec is not None:
            out["crowdsec"] = self.crowdsec.to_toml()
        rules = [r for r in self.rules if self.crowdsec is None or r.id != CROWDSEC_RULE]
        if rules:
            out["rule"] = [r.to_toml() for r in rules]
        if self.nats:
            out["nat"] = [n.to_toml() for n in self.nats]
        return out


def _policy_log(policy: dict[str, Any]) -> dict[str, Any]:
    def err(field: str, message: str) -> RuleError:
        return RuleError(message, field=f"policy.{field}")

    out: dict[str, Any] = {}
    if "log" in policy:
        out["policy_log"] = parse_log_prefix(policy["log"], err, "log")
    if "log_limit" in policy:
        out["policy_log_limit"] = parse_limit(policy["log_limit"], err, "log_limit")
    return out
