"""The lint's shadowing verdicts checked against the engine (engine/explain.py), on random
chains: a rule reported shadowed is hit by no drawn packet; a rule not reported has a packet
that hits it, the proof the lint gives."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minifw.engine.explain import Probe, explain
from minifw.engine.lint import reach
from minifw.errors import PacketError, RuleError
from minifw.model import Rule, Ruleset
from minifw.model.types import (
    CONNTRACK_PRIORITY, CT_STATES, HOOKS_BEFORE_CONNTRACK, HOOKS_WITH_IIF, HOOKS_WITH_OIF, Hook,
)

NETS = ["198.18.0.0/16", "198.18.1.0/24", "198.18.1.128/25", "198.18.1.7", "fd00::/8",
        "fd00:1::/32", "fd00:1::5"]
PORTS = [0, 22, 65535, "20-30", "0-21", "23-65535", "1-65535"]
ICMP = {"icmp": ["echo-request", "echo-reply", 0, 255], "icmpv6": ["echo-request", 128, 0, 255]}
IFACES = ["eth0", "eth*", "e*", "lo", "veth1", "v*"]
PATH = {Hook.PREROUTING: "in", Hook.INPUT: "in", Hook.FORWARD: "forward", Hook.OUTPUT: "out",
        Hook.POSTROUTING: "out"}

# packets drawn at the pools' edges: inside, just outside, other versions
ADDRS4 = ["198.18.1.7", "198.18.1.8", "198.18.1.127", "198.18.1.128", "198.18.0.0",
          "198.18.255.255", "198.19.0.0", "0.0.0.0", "10.0.0.1"]
ADDRS6 = ["fd00:1::5", "fd00:1::6", "fd00::", "fd01::1", "fe80::1", "::"]
PKT_PORTS = [0, 1, 20, 21, 22, 23, 30, 31, 40000, 65535]
PKT_NAMES = ["eth0", "eth1", "e", "ex", "lo", "veth1", "v", "x0"]


def _lists(pool, n=2):
    return st.lists(st.sampled_from(pool), min_size=1, max_size=n, unique=True)


@st.composite
def rule_tables(draw, hook: Hook, priority: int, index: int):
    t: dict = {"id": f"r{index}", "hook": hook.value, "priority": priority}
    t["action"] = draw(st.sampled_from(["accept", "drop", "accept", "drop", "log"]
                                       + (["reject"] if hook is not Hook.POSTROUTING else [])))
    if t["action"] == "log":
        t["log"] = "lint "
    proto = draw(st.sampled_from(["any", "tcp", "udp", "icmp", "icmpv6", "tcp"]))
    t["proto"] = proto
    if draw(st.booleans()):
        t["family"] = draw(st.sampled_from(["ip", "ip6"]))
    for key in ("src", "dst"):
        if draw(st.integers(0, 2)) == 0:
            t[key] = draw(_lists(NETS))
    if proto in ("tcp", "udp"):
        for key in ("sport", "dport"):
            if draw(st.integers(0, 2)) == 0:
                t[key] = draw(_lists(PORTS))
    if proto in ICMP and draw(st.booleans()):
        t["icmp_type"] = draw(_lists(ICMP[proto]))
    if hook in HOOKS_WITH_IIF and draw(st.booleans()):
        t["iif"] = draw(_lists(IFACES))
    if hook in HOOKS_WITH_OIF and draw(st.booleans()):
        t["oif"] = draw(_lists(IFACES))
    tracked = not (hook in HOOKS_BEFORE_CONNTRACK and priority <= CONNTRACK_PRIORITY)
    if tracked and draw(st.integers(0, 2)) == 0:
        t["state"] = draw(_lists(list(CT_STATES), 3))
    if draw(st.integers(0, 5)) == 0:
        t["limit"] = "5/second"
    return t


@st.composite
def chains(draw):
    hook = draw(st.sampled_from(list(Hook)))
    priority = draw(st.sampled_from([0, -250]))
    rules = []
    for i in range(draw(st.integers(1, 7))):
        try:
            rules.append(Rule.from_toml(draw(rule_tables(hook, priority, i))))
        except RuleError:
            continue  # a rule the model refuses (no common IP version...) is left out
    return Ruleset(rules=tuple(rules))


@st.composite
def packets(draw, hook: Hook):
    six = draw(st.booleans())
    addrs = ADDRS6 if six else ADDRS4
    proto = draw(st.sampled_from(["tcp", "udp", "icmpv6" if six else "icmp"]))
    kw: dict = {}
    if proto in ("tcp", "udp"):
        kw["sport"] = draw(st.sampled_from(PKT_PORTS))
        kw["dport"] = draw(st.sampled_from(PKT_PORTS))
    else:
        kw["icmp_type"] = draw(st.sampled_from([0, 8, 128, 129, 255]))
    path = PATH[hook]
    if path != "out":
        kw["iif"] = draw(st.sampled_from([n for n in PKT_NAMES
                                          if not (path == "forward" and n == "lo")]))
    if path != "in":
        kw["oif"] = draw(st.sampled_from(PKT_NAMES))
    try:
        return Probe.describe(proto=proto, src=draw(st.sampled_from(addrs)),
                              dst=draw(st.sampled_from(addrs)), path=path,
                              state=draw(st.sampled_from(CT_STATES)), **kw)
    except PacketError:
        return None


def _hits(ruleset: Ruleset, probe: Probe, rule_id: str) -> bool:
    trace = explain(ruleset, probe).trace
    return any(s.kind == "rule" and s.name == rule_id and s.matched for s in trace)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains(), st.data())
def test_shadowed_rules_are_never_hit_and_the_others_have_a_proof(ruleset, data):
    if not ruleset.rules:
        return
    hook = ruleset.rules[0].hook
    drawn = [p for p in data.draw(st.lists(packets(hook), min_size=20, max_size=20))
             if p is not None]
    for rule in ruleset.rules:
        r = reach(ruleset, rule.id)
        assert r.shadowed is not None, "the search budget ran out on a small chain"
        if r.shadowed:
            assert r.proof is None
            for probe in drawn:
                assert not _hits(ruleset, probe, rule.id), (rule, probe)
            continue
        if r.proof is None:
            # only a packet of a protocol explain does not model reaches it
            assert rule.proto.value == "any", rule
            continue
        # the proof reaches the rule once the earlier limits it needs are over their rate
        under = Ruleset(rules=tuple(x for x in ruleset.rules if x.id not in r.over_limit))
        assert _hits(under, r.proof, rule.id), (rule, r)
        for earlier_id in r.over_limit:
            assert ruleset.get(earlier_id).limit is not None
