"""The pure evaluator: the foundation's semantics, bad packets, and properties over random input."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifw.engine.explain import (
    VERDICTS, HookFunction, Probe, chains_at, default_state, explain,
)
from minifw.errors import PacketError, RuleError
from minifw.model import Hook, Proto, Ruleset
from minifw.model.types import PATHS, POLICY_PRIORITY


def rs(*rules: dict, policy: dict | None = None) -> Ruleset:
    data: dict = {"rule": list(rules)}
    if policy:
        data["policy"] = policy
    return Ruleset.from_toml(data)


def pkt(proto="tcp", src="198.18.2.2", dst="198.18.0.1", **kw) -> Probe:
    if proto in ("tcp", "udp"):
        kw.setdefault("dport", 80)
    return Probe.describe(proto=proto, src=src, dst=dst, **kw)


SEED = rs({"id": "drop-icmp", "hook": "prerouting", "priority": -300, "proto": "icmp",
           "action": "drop", "log": "Drop ICMP packet"},
          {"id": "drop-blocked-host", "hook": "prerouting", "priority": -299, "family": "ip",
           "src": "198.18.2.2", "action": "drop"})


# ---- the foundation's semantics ---------------------------------------------------------------

def test_seed_drops_icmp_first_then_the_blocked_host():
    e = explain(SEED, pkt("icmp", src="198.18.2.2"))
    assert (e.verdict, e.rule, e.decided_by, e.hook, e.priority) == (
        "drop", "drop-icmp", "rule", Hook.PREROUTING, -300)
    assert [s.name for s in e.trace] == ["drop-icmp"]
    e = explain(SEED, pkt("tcp", src="198.18.2.2"))
    assert (e.verdict, e.rule, e.priority) == ("drop", "drop-blocked-host", -299)
    assert [(s.name, s.matched) for s in e.trace] == [("drop-icmp", False),
                                                     ("drop-blocked-host", True)]
    assert e.trace[0].note == "proto is tcp, not icmp"


def test_nothing_decides_default_accept():
    e = explain(SEED, pkt("tcp", src="198.18.0.2"))
    assert (e.verdict, e.rule, e.decided_by, e.hook, e.priority) == (
        "accept", None, "policy", Hook.INPUT, POLICY_PRIORITY)
    assert e.to_json()["rule"] is None


def test_accept_passes_on_to_the_next_priority_where_drop_ends_it():
    r = rs({"id": "early-accept", "priority": -10, "action": "accept"},
           {"id": "late-drop", "priority": 10, "proto": "tcp", "action": "drop"})
    e = explain(r, pkt())
    assert (e.verdict, e.rule, e.priority) == ("drop", "late-drop", 10)
    assert [(s.name, s.result) for s in e.trace] == [("early-accept", "accept"),
                                                    ("late-drop", "drop")]


def test_accept_ends_its_own_chain():
    r = rs({"id": "a", "action": "accept"}, {"id": "d", "action": "drop"})
    e = explain(r, pkt())
    assert (e.verdict, e.rule) == ("accept", "a")
    assert [s.name for s in e.trace] == ["a"]


def test_drop_policy_keeps_what_a_rule_at_any_priority_accepted():
    # The nft trap: an accept at -10 undone by a drop policy at 0. minifw's mark avoids it.
    r = rs({"id": "web", "priority": -10, "proto": "tcp", "dport": 80, "action": "accept"},
           {"id": "noise", "priority": 0, "proto": "udp", "action": "log", "log": "x"},
           policy={"input": "drop"})
    e = explain(r, pkt(dport=80))
    assert (e.verdict, e.rule, e.decided_by) == ("accept", "web", "rule")
    assert "marked for the input drop policy" in e.trace[0].note
    assert e.trace[-1].name == "accepted by a rule at input" and e.trace[-1].matched
    e = explain(r, pkt(dport=22))
    assert (e.verdict, e.rule, e.decided_by, e.hook, e.priority) == (
        "drop", None, "policy", Hook.INPUT, POLICY_PRIORITY)
    assert e.decider == "policy of input"


def test_the_mark_is_per_hook():
    # Accepted at prerouting says nothing to the input policy.
    r = rs({"id": "pre", "hook": "prerouting", "action": "accept"}, policy={"input": "drop"})
    e = explain(r, pkt())
    assert (e.verdict, e.decided_by, e.hook) == ("drop", "policy", Hook.INPUT)


def test_stateful_policy_accepts_established_lo_and_neighbour_discovery():
    r = rs(policy={"input": "drop"})
    assert explain(r, pkt(state="established")).verdict == "accept"
    assert explain(r, pkt(state="related")).verdict == "accept"
    assert explain(r, pkt(state="new")).verdict == "drop"
    assert explain(r, pkt(iif="lo")).verdict == "accept"
    nd = pkt("icmpv6", src="fd00::2", dst="fd00::1", icmp_type="nd-neighbor-solicit")
    assert nd.state == "untracked"
    assert explain(r, nd).verdict == "accept"
    ping6 = pkt("icmpv6", src="fd00::2", dst="fd00::1")
    assert explain(r, ping6).verdict == "drop"
    stateless = rs(policy={"input": "drop", "stateful": False})
    assert explain(stateless, pkt(state="established")).verdict == "drop"
    assert explain(stateless, nd).verdict == "drop"


def test_stateful_accept_is_reported_as_the_policy():
    e = explain(rs(policy={"input": "drop"}), pkt(state="established"))
    assert (e.verdict, e.rule, e.decided_by, e.priority) == ("accept", None, "policy", 1000)


def test_oif_lo_at_output():
    r = rs(policy={"output": "drop"})
    assert explain(r, pkt(path="out", oif="lo")).verdict == "accept"
    assert explain(r, pkt(path="out", oif="eth0")).verdict == "drop"


def test_reject_and_log():
    r = rs({"id": "note", "action": "log", "log": "seen"},
           {"id": "no", "proto": "udp", "action": "reject"})
    e = explain(r, pkt("udp", dport=53))
    assert (e.verdict, e.rule) == ("reject", "no")
    assert [(s.name, s.result) for s in e.trace] == [("note", "log"), ("no", "reject")]


def test_rate_limits_are_assumed_under_the_rate():
    r = rs({"id": "ssh", "proto": "tcp", "dport": 22, "limit": "3/minute", "action": "accept"},
           {"id": "ssh-flood", "proto": "tcp", "dport": 22, "action": "drop"},
           policy={"input": "drop"})
    e = explain(r, pkt(dport=22))
    assert (e.verdict, e.rule) == ("accept", "ssh")
    assert "assumed under its rate" in e.trace[0].note


def test_forward_path_walks_three_hooks():
    r = rs({"id": "pre", "hook": "prerouting", "action": "log", "log": "p"},
           {"id": "fwd", "hook": "forward", "iif": "eth*", "oif": "wan0", "action": "accept"},
           {"id": "post", "hook": "postrouting", "dst": "198.18.9.0/24", "action": "drop"},
           policy={"forward": "drop"})
    p = pkt(path="forward", dst="198.18.9.9", iif="eth1", oif="wan0")
    e = explain(r, p)
    assert (e.verdict, e.rule, e.hook) == ("drop", "post", Hook.POSTROUTING)
    assert [(s.hook, s.kind) for s in e.trace] == [
        (Hook.PREROUTING, "rule"), (Hook.FORWARD, "rule"), (Hook.FORWARD, "policy"),
        (Hook.FORWARD, "policy"), (Hook.FORWARD, "policy"), (Hook.POSTROUTING, "rule")]
    e = explain(r, pkt(path="forward", dst="198.18.8.8", iif="eth1", oif="wan0"))
    assert (e.verdict, e.rule, e.hook) == ("accept", "fwd", Hook.FORWARD)


def test_unknown_interface_never_matches_and_says_so():
    r = rs({"id": "lan", "iif": "eth0", "action": "drop"})
    e = explain(r, pkt())
    assert e.verdict == "accept"
    assert "--iif not given" in e.trace[0].note


def test_hook_function_decides_at_runtime():
    fn = HookFunction("drop_icmp", Hook.PREROUTING, -250)
    e = explain(SEED, pkt("tcp", src="198.18.0.2"), [fn])
    assert (e.verdict, e.rule, e.decided_by, e.hook, e.priority) == (
        "runtime", "drop_icmp", "hook-function", Hook.PREROUTING, -250)
    # A rule before it can still decide.
    e = explain(SEED, pkt("icmp"), [fn])
    assert (e.verdict, e.rule) == ("drop", "drop-icmp")


def test_bans_drop_before_any_rule_where_the_default_set_exists():
    ruleset = rs({"id": "web", "proto": "tcp", "dport": 80, "action": "accept"},
                 {"id": "early", "hook": "prerouting", "priority": -400, "action": "log",
                  "log": "seen"}, policy={"input": "drop"})
    banned = {ipaddress.ip_address("198.18.2.2")}

    def lookup(name, addr):
        return addr in banned if name == "blocked" else None

    exp = explain(ruleset, pkt(), set_lookup=lookup)
    assert (exp.verdict, exp.rule, exp.decided_by, exp.hook, exp.priority) == (
        "drop", "ban blocked", "rule", Hook.PREROUTING, -350)
    assert [s.name for s in exp.trace] == ["early", "ban blocked"]   # -400 runs first
    free = explain(ruleset, pkt(src="198.18.2.3"), set_lookup=lookup)
    assert (free.verdict, free.rule) == ("accept", "web")
    assert free.trace[1].name == "ban blocked" and free.trace[1].result == "no match"
    out = explain(ruleset, pkt(src="198.18.2.2", dst="198.18.9.9"), set_lookup=lookup)
    assert out.rule == "ban blocked"
    sent = explain(ruleset, Probe.describe(proto="tcp", src="198.18.2.2", dst="198.18.0.1",
                                           dport=80, path="out"), set_lookup=lookup)
    assert sent.rule != "ban blocked"                        # output never meets prerouting
    none = explain(ruleset, pkt(), set_lookup=lambda name, addr: None)   # no set: no chain
    assert none.rule == "web" and all(s.name != "ban blocked" for s in none.trace)


def test_chains_run_by_priority_with_the_policy_last():
    r = rs({"id": "b", "priority": 5, "action": "log", "log": "b"},
           {"id": "a", "priority": -5, "action": "log", "log": "a"},
           policy={"input": "drop"})
    chains = chains_at(r, Hook.INPUT, [HookFunction("f", Hook.INPUT, 0)])
    assert [(c.priority, c.kind) for c in chains] == [(-5, "rules"), (0, "hook-function"),
                                                      (5, "rules"), (1000, "policy")]


def test_json_shape_is_the_issue_s():
    e = explain(SEED, pkt("icmp"))
    data = e.to_json()
    assert list(data) == ["verdict", "rule", "decided_by", "hook", "priority", "trace"]
    assert data["verdict"] in VERDICTS and data["hook"] == "prerouting"
    assert data["trace"][0]["rule"] == "drop-icmp" and data["trace"][0]["matched"] is True


def test_default_states():
    assert default_state(Proto.TCP, None) == "new"
    assert default_state(Proto.ICMP, 8) == "new"
    assert default_state(Proto.ICMP, 0) == "invalid"      # a reply nobody asked for
    assert default_state(Proto.ICMPV6, 128) == "new"
    assert default_state(Proto.ICMPV6, 129) == "invalid"
    assert default_state(Proto.ICMPV6, 135) == "untracked"


# ---- packets that cannot exist ----------------------------------------------------------------

@pytest.mark.parametrize("kwargs, flag", [
    (dict(proto="icmp", dport=80), "--dport"),
    (dict(proto="icmp", sport=80), "--sport"),
    (dict(proto="tcp", dport=80, path="in", oif="eth0"), "--oif"),
    (dict(proto="tcp", dport=80, path="out", iif="eth0"), "--iif"),
    (dict(proto="tcp", dport=80, dst="fd00::1"), "--dst"),
    (dict(proto="icmpv6"), "--proto"),
    (dict(proto="icmp", src="fd00::2", dst="fd00::1"), "--proto"),
    (dict(proto="tcp"), "--dport"),
    (dict(proto="tcp", dport=70000), "--dport"),
    (dict(proto="tcp", dport="http"), "--dport"),
    (dict(proto="udp", dport=53, icmp_type="echo-request"), "--icmp-type"),
    (dict(proto="icmp", icmp_type="nd-neighbor-solicit"), "--icmp-type"),
    (dict(proto="tcp", dport=80, path="sideways"), "--path"),
    (dict(proto="tcp", dport=80, state="bored"), "--state"),
    (dict(proto="tcp", dport=80, src="198.18.0.0/24"), "--src"),
    (dict(proto="sctp", dport=80), "--proto"),
    (dict(proto="any", dport=80), "--proto"),
    (dict(proto=None), "--proto"),
    (dict(proto="tcp", dport=80, iif="eth 0"), "--iif"),
    (dict(proto="tcp", dport=80, path="forward", iif="lo"), "--iif"),
])
def test_impossible_packets_name_the_flag(kwargs, flag):
    base = dict(src="198.18.2.2", dst="198.18.0.1")
    base.update(kwargs)
    with pytest.raises(PacketError) as err:
        Probe.describe(**base)
    assert str(err.value).startswith(f"{flag}: ")
    assert "\n" not in str(err.value)


# ---- properties -------------------------------------------------------------------------------

V4 = ["198.18.0.1", "198.18.2.2", "198.18.7.7"]
V6 = ["fd00::1", "fd00::2", "fd00:7::7"]


@st.composite
def rule_dicts(draw, i: int) -> dict:
    hook = draw(st.sampled_from(list(Hook)))
    rule: dict = {"id": f"r{i}", "hook": hook.value,
                  "priority": draw(st.sampled_from([-300, -150, -10, 0, 10, 500]))}
    proto = draw(st.sampled_from([None, "tcp", "udp", "icmp", "icmpv6"]))
    if proto:
        rule["proto"] = proto
    if proto in ("tcp", "udp") and draw(st.booleans()):
        rule["dport"] = draw(st.sampled_from([22, 80, [80, 443], "1-100"]))
    if draw(st.integers(0, 3)) == 0:
        pool = V6 if proto == "icmpv6" else V4 if proto == "icmp" else V4 + V6
        rule["src"] = draw(st.sampled_from(pool))
    if draw(st.integers(0, 3)) == 0 and not (hook.value in ("prerouting", "output")
                                             and rule["priority"] <= -200):
        rule["state"] = draw(st.sampled_from([["new"], ["established"], ["invalid"]]))
    if proto in ("icmp", "icmpv6") and draw(st.booleans()):
        rule["icmp_type"] = draw(st.sampled_from(["echo-request", "echo-reply", 3, 135]
                                                 if proto == "icmpv6" else
                                                 ["echo-request", "echo-reply", 3, 11]))
    if hook.value in ("prerouting", "input", "forward") and draw(st.integers(0, 3)) == 0:
        rule["iif"] = draw(st.sampled_from(["eth0", "eth*", ["lo", "wan0"]]))
    if hook.value in ("forward", "output", "postrouting") and draw(st.integers(0, 3)) == 0:
        rule["oif"] = draw(st.sampled_from(["eth1", "wan*", ["lo", "eth0"]]))
    actions = ["accept", "drop", "log"] + ([] if hook is Hook.POSTROUTING else ["reject"])
    rule["action"] = draw(st.sampled_from(actions))
    if rule["action"] == "log":
        rule["log"] = "x"
    return rule


@st.composite
def rulesets(draw) -> Ruleset:
    rules = [draw(rule_dicts(i)) for i in range(draw(st.integers(0, 8)))]
    policy = {h.value: "drop" for h in Hook if draw(st.integers(0, 3)) == 0}
    policy["stateful"] = draw(st.booleans())
    try:
        return Ruleset.from_toml({"rule": rules, "policy": policy})
    except RuleError:
        return Ruleset()


@st.composite
def probes(draw) -> Probe:
    v6 = draw(st.booleans())
    pool = V6 if v6 else V4
    proto = draw(st.sampled_from(["tcp", "udp", "icmpv6" if v6 else "icmp"]))
    path = draw(st.sampled_from(list(PATHS)))
    if proto in ("tcp", "udp"):
        extra = dict(sport=draw(st.integers(0, 65535)), dport=draw(st.sampled_from([22, 80, 443])))
    else:
        extra = dict(icmp_type=draw(st.sampled_from([0, 3, 8, 11] if proto == "icmp"
                                                    else [1, 128, 129, 135])))
    if path != "out":
        extra["iif"] = draw(st.sampled_from(["eth0", "eth1", "wan0"]
                                            + (["lo"] if path == "in" else [])))
    if path != "in":
        extra["oif"] = draw(st.sampled_from(["eth0", "eth1", "wan0", "lo"]))
    return Probe.describe(proto=proto, src=draw(st.sampled_from(pool)),
                          dst=draw(st.sampled_from(pool)), path=path,
                          state=draw(st.sampled_from(["new", "established", "invalid",
                                                      "related", "untracked"])), **extra)


@settings(max_examples=300)
@given(rulesets(), probes())
def test_the_trace_follows_the_path_and_ends_at_the_decider(ruleset, probe):
    e = explain(ruleset, probe)
    assert e.verdict in VERDICTS and e.verdict != "runtime"
    order = PATHS[probe.path]
    positions = [(order.index(s.hook), s.priority) for s in e.trace]
    assert positions == sorted(positions)  # hooks in path order, priorities ascending
    if e.verdict in ("drop", "reject"):
        last = e.trace[-1]
        assert last.matched and last.result == e.verdict
        assert (last.hook, last.priority) == (e.hook, e.priority)
        assert (last.name == e.rule) if e.decided_by == "rule" else (e.rule is None)
    if e.decided_by == "rule":
        assert ruleset.get(e.rule).action.value == e.verdict


@settings(max_examples=200)
@given(rulesets(), probes())
def test_rules_off_the_path_change_nothing(ruleset, probe):
    off = [h for h in Hook if h not in PATHS[probe.path]]
    kept = Ruleset(rules=tuple(r for r in ruleset.rules if r.hook not in off),
                   policies=tuple(p for p in ruleset.policies if p[0] not in off),
                   stateful=ruleset.stateful)
    a, b = explain(ruleset, probe), explain(kept, probe)
    assert (a.verdict, a.rule, a.hook, a.priority) == (b.verdict, b.rule, b.hook, b.priority)


@settings(max_examples=200)
@given(rulesets(), probes())
def test_a_drop_everything_rule_first_decides(ruleset, probe):
    first = PATHS[probe.path][0]
    wall = Ruleset.from_toml({"rule": [{"id": "wall", "hook": first.value, "priority": -1000,
                                        "action": "drop"}]})
    merged = Ruleset(rules=wall.rules + ruleset.rules, policies=ruleset.policies,
                     stateful=ruleset.stateful)
    e = explain(merged, probe)
    assert (e.verdict, e.rule, e.hook) == ("drop", "wall", first)


@given(st.ip_addresses(v=4), st.ip_addresses(v=6))
def test_mixed_versions_are_refused(a4, a6):
    with pytest.raises(PacketError, match="^--dst: "):
        Probe.describe(proto="udp", src=str(a4), dst=str(a6), dport=1)
    assert ipaddress.ip_address(str(a6)).version == 6


def test_the_engine_is_pure():
    import ast
    from pathlib import Path

    import minifw.engine

    banned = {"socket", "ctypes", "subprocess", "asyncio", "os"}
    for path in Path(minifw.engine.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"
