"""Explain against the compiler's own output, without root: a small interpreter of the nftables
JSON that ``build_load`` emits runs each packet, and must agree with the evaluator on the
verdict, the deciding rule and every rule whose counter would move.

The kernel differential test (tests/kernel/test_explain_diff.py) is the real proof; this one
runs thousands of cases in seconds and catches a compiler change the evaluator did not follow.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings

from minifw.compile.comments import rule_id_of_comment
from minifw.compile.nft import build_load
from minifw.engine.explain import Probe, explain
from minifw.model import Hook, Ruleset
from minifw.model.types import (
    CONNTRACK_PRIORITY, HOOKS_BEFORE_CONNTRACK, HOOKS_WITH_IIF, HOOKS_WITH_OIF, ICMP_TYPES,
    ICMPV6_TYPES, PATHS,
)

from test_explain import probes, rulesets


class Compiled:
    """The base chains and rules of one build_load document."""

    def __init__(self, document: dict):
        self.chains: dict[str, tuple[str, int]] = {}
        self.rules: dict[str, list[dict]] = {}
        for cmd in document["nftables"]:
            add = cmd.get("add", {})
            if "chain" in add:
                c = add["chain"]
                self.chains[c["name"]] = (c["hook"], c["prio"])
                self.rules.setdefault(c["name"], [])
            elif "rule" in add:
                self.rules[add["rule"]["chain"]].append(add["rule"])

    def run(self, p: Probe) -> tuple[str, str | None, list[str]]:
        """Verdict, the comment of the deciding rule, and the comments of counted rules."""
        mark = 0
        counted: list[str] = []
        for hook in PATHS[p.path]:
            chains = sorted((prio, name) for name, (h, prio) in self.chains.items()
                            if h == hook.value)
            for prio, name in chains:
                for rule in self.rules[name]:
                    outcome, mark = self._rule(rule, p, hook, prio, mark, counted)
                    if outcome == "accept":
                        break
                    if outcome in ("drop", "reject"):
                        return outcome, rule["comment"], counted
        return "accept", None, counted

    def _rule(self, rule: dict, p: Probe, hook: Hook, prio: int, mark: int,
              counted: list[str]) -> tuple[str | None, int]:
        for expr in rule["expr"]:
            if "match" in expr:
                if not _match(expr["match"], p, hook, prio, mark):
                    return None, mark
            elif "counter" in expr:
                counted.append(rule["comment"])
            elif "mangle" in expr:
                mark |= expr["mangle"]["value"]["|"][1]
            elif "accept" in expr:
                return "accept", mark
            elif "drop" in expr:
                return "drop", mark
            elif "reject" in expr:
                return "reject", mark
            # limit (assumed under its rate) and log change nothing here
        return None, mark


def _value(left: dict, p: Probe, hook: Hook, prio: int, mark: int):
    if "meta" in left:
        key = left["meta"]["key"]
        if key == "nfproto":
            return "ipv4" if p.version == 4 else "ipv6"
        if key == "l4proto":
            return p.proto.number
        if key == "iifname":
            return p.iif if hook in HOOKS_WITH_IIF else None
        if key == "oifname":
            return p.oif if hook in HOOKS_WITH_OIF else None
        raise AssertionError(f"unexpected meta {key}")
    if "ct" in left:
        before = hook in HOOKS_BEFORE_CONNTRACK and prio <= CONNTRACK_PRIORITY
        return "invalid" if before else p.state
    if "&" in left:
        return mark & left["&"][1]
    payload = left["payload"]
    proto, field = payload["protocol"], payload["field"]
    if proto in ("ip", "ip6"):
        if (proto == "ip") != (p.version == 4):
            return None  # the implied nfproto dependency fails
        return p.src if field == "saddr" else p.dst
    if proto != p.proto.value:
        return None  # the implied l4proto dependency fails
    return {"sport": p.sport, "dport": p.dport, "type": p.icmp_type}[field]


def _one(right, have, proto: str) -> bool:
    if isinstance(right, dict) and "prefix" in right:
        net = ipaddress.ip_network(f"{right['prefix']['addr']}/{right['prefix']['len']}")
        return have in net
    if isinstance(right, dict) and "range" in right:
        lo, hi = right["range"]
        return lo <= have <= hi
    if isinstance(right, str) and isinstance(have, (ipaddress.IPv4Address,
                                                    ipaddress.IPv6Address)):
        return have == ipaddress.ip_address(right)
    if isinstance(right, str) and proto in ("icmp", "icmpv6") and isinstance(have, int):
        return (ICMP_TYPES if proto == "icmp" else ICMPV6_TYPES)[right] == have
    if isinstance(right, str) and right.endswith("*") and isinstance(have, str):
        return have.startswith(right[:-1])
    return right == have


def _match(m: dict, p: Probe, hook: Hook, prio: int, mark: int) -> bool:
    have = _value(m["left"], p, hook, prio, mark)
    if have is None:
        return False
    proto = m["left"].get("payload", {}).get("protocol", "")
    right = m["right"]
    values = right["set"] if isinstance(right, dict) and "set" in right else [right]
    hit = any(_one(v, have, proto) for v in values)
    return hit if m["op"] == "==" else not hit


def expected_counters(exp) -> list[str]:
    out = []
    for s in exp.trace:
        if s.kind == "rule" and s.matched:
            out.append(s.name)
        elif s.kind == "policy" and s.result == "drop":
            out.append(f"policy {s.hook.value}")
    return out


@settings(max_examples=600)
@given(rulesets(), probes())
def test_explain_agrees_with_the_compiled_ruleset(ruleset: Ruleset, probe: Probe):
    verdict, comment, counted = Compiled(build_load(ruleset)).run(probe)
    exp = explain(ruleset, probe)
    assert exp.verdict == verdict
    if verdict in ("drop", "reject"):
        want = exp.rule if exp.decided_by == "rule" else f"policy {exp.hook.value}"
        assert rule_id_of_comment(comment) == want or comment == want
    assert [c if c.startswith("policy ") else rule_id_of_comment(c) for c in counted] == \
        expected_counters(exp)
