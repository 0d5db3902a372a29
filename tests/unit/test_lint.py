"""The lint's findings, both ways; did you mean; config errors with their line."""

from __future__ import annotations

import pytest

from minifw.engine import space
from minifw.engine.lint import lint, reach
from minifw.errors import ConfigError
from minifw.hooks.config import hook_files
from minifw.model import Ruleset, parse_config
from minifw.model.suggest import closest


def rs(*rules: dict, policy: dict | None = None) -> Ruleset:
    data: dict = {"rule": [dict(r, id=r.get("id", f"r{i}")) for i, r in enumerate(rules)]}
    if policy:
        data["policy"] = policy
    return Ruleset.from_toml(data)


def kinds(ruleset: Ruleset, interfaces=None) -> list[tuple[str, str]]:
    return [(f.rule, f.kind) for f in lint(ruleset, interfaces)]


TCP = {"proto": "tcp", "action": "accept"}


# ---- shadowed -------------------------------------------------------------------------------

def test_a_rule_covered_by_adjacent_port_ranges_is_shadowed():
    ruleset = rs(dict(TCP, dport="0-21"), dict(TCP, dport=22), dict(TCP, dport="23-65535"),
                 {"id": "late", "proto": "tcp", "dport": 443, "action": "drop"})
    found = lint(ruleset)
    assert [(f.rule, f.kind) for f in found] == [("late", "shadowed")]
    assert "'r0', 'r2'" not in found[0].message and "'r2'" in found[0].message
    assert reach(ruleset, "late").by == ("r2",)


@pytest.mark.parametrize("gap", ["0-20", "0-21", "23-65534"])
def test_one_port_left_uncovered_leaves_the_rule_reachable(gap):
    # each range leaves exactly one port (21, 22 or 65535) to the last rule: the boundaries
    ranges = {"0-20": ["0-20", "22-65535"], "0-21": ["0-21", "23-65535"],
              "23-65534": ["0-22", "23-65534"]}[gap]
    ruleset = rs(*[dict(TCP, dport=r) for r in ranges], {"id": "late", "proto": "tcp",
                                                        "action": "drop"})
    r = reach(ruleset, "late")
    assert r.shadowed is False
    assert r.proof.dport == {"0-20": 21, "0-21": 22, "23-65534": 65535}[gap]
    assert kinds(ruleset) == []


def test_address_intervals_states_and_interfaces_count():
    covered = rs({"src": "198.18.0.0/24", "action": "drop"},
                 {"src": "198.18.1.0/24", "action": "drop"},
                 {"id": "x", "src": "198.18.0.0/23", "proto": "udp", "action": "accept"})
    assert kinds(covered) == [("x", "shadowed")]
    # one address short: 198.18.1.255 reaches it
    short = rs({"src": "198.18.0.0/24", "action": "drop"},
               {"src": "198.18.1.0/25", "action": "drop"},
               {"src": "198.18.1.128/26", "action": "drop"},
               {"src": "198.18.1.192/27", "action": "drop"},
               {"id": "x", "src": "198.18.0.0/23", "action": "accept"})
    proof = reach(short, "x").proof
    assert str(proof.src).startswith("198.18.1.") and int(str(proof.src).split(".")[-1]) >= 224
    states = rs({"state": ["new", "established"], "action": "accept"},
                {"id": "x", "state": "established", "action": "drop"},
                {"id": "y", "state": ["established", "related"], "action": "drop"})
    assert kinds(states) == [("x", "shadowed")]
    assert reach(states, "y").proof.state == "related"
    ifaces = rs({"iif": "eth*", "action": "drop"},
                {"id": "x", "iif": ["eth0", "eth12"], "action": "accept"},
                {"id": "y", "iif": ["eth0", "et"], "action": "accept"})
    assert kinds(ifaces) == [("x", "shadowed")]
    assert reach(ifaces, "y").proof.iif == "et"


def test_limits_logs_and_sets_decide_nothing_for_the_shadowing():
    for first in ({"proto": "tcp", "action": "accept", "limit": "5/second"},
                  {"proto": "tcp", "action": "log", "log": "x "},
                  {"proto": "tcp", "src": "@blocked", "action": "drop"}):
        assert kinds(rs(first, {"id": "x", "proto": "tcp", "action": "drop"})) == []
    r = reach(rs({"proto": "tcp", "action": "accept", "limit": "5/second"},
                 {"id": "x", "proto": "tcp", "dport": 22, "action": "drop"}), "x")
    assert r.over_limit == ("r0",)


def test_the_other_hook_or_priority_does_not_shadow():
    assert kinds(rs({"action": "drop"}, {"id": "x", "action": "drop", "priority": 5})) == []
    assert kinds(rs({"action": "drop"}, {"id": "x", "action": "drop", "hook": "output"})) == []


def test_nothing_comes_in_on_lo_at_forward():
    found = lint(rs({"id": "x", "hook": "forward", "iif": "lo", "action": "drop"}))
    assert [(f.rule, f.kind) for f in found] == [("x", "shadowed")]
    assert "no packet can match it" in found[0].message
    assert kinds(rs({"id": "x", "hook": "forward", "oif": "lo", "action": "drop"})) == []


def test_other_protocols_keep_a_proto_any_rule_reachable():
    ruleset = rs(*[{"proto": p, "action": "drop"} for p in ("tcp", "udp", "icmp", "icmpv6")],
                 {"id": "x", "action": "accept"})
    r = reach(ruleset, "x")
    assert r.shadowed is False and r.proof is None  # GRE, SCTP ...: explain has no probe


# ---- ineffective limit ------------------------------------------------------------------------

PING = {"id": "ping", "proto": "icmp", "icmp_type": "echo-request", "limit": "5/second",
        "action": "accept"}


def test_a_limited_ping_under_a_stateful_drop_policy_is_ineffective():
    found = lint(rs(PING, policy={"input": "drop"}))
    assert [(f.rule, f.kind) for f in found] == [("ping", "ineffective-limit")]
    assert "stateful drop policy" in found[0].message
    assert found[0].message.endswith("add a drop after it")


def test_a_drop_after_it_makes_the_limit_work():
    drop = {"proto": "icmp", "icmp_type": "echo-request", "action": "drop"}
    assert kinds(rs(PING, drop, policy={"input": "drop"})) == []
    assert kinds(rs(PING, drop)) == []
    # a drop that leaves some of the excess (echo requests from one network only) is not enough
    part = dict(drop, src="198.18.0.0/16")
    assert kinds(rs(PING, part)) == [("ping", "ineffective-limit")]


def test_the_excess_accepted_by_a_policy_or_a_later_rule():
    assert "accept policy" in lint(rs(PING))[0].message
    assert kinds(rs(PING, policy={"input": "drop", "stateful": False})) == []
    new_only = dict(PING, state="new")
    assert kinds(rs(new_only, policy={"input": "drop"})) == []
    later = rs(new_only, {"id": "all-icmp", "proto": "icmp", "priority": 10,
                          "action": "accept"}, policy={"input": "drop"})
    found = lint(later)
    assert [(f.rule, f.kind) for f in found] == [("ping", "ineffective-limit")]
    assert "rule 'all-icmp'" in found[0].message
    other_hook = rs(new_only, {"proto": "icmp", "hook": "forward", "action": "accept"},
                    policy={"input": "drop"})
    assert kinds(other_hook) == []


# ---- redundant state --------------------------------------------------------------------------

EST = {"id": "est", "state": ["established", "related"], "action": "accept"}


def test_established_accept_under_a_stateful_drop_policy_is_redundant():
    assert kinds(rs(EST, policy={"input": "drop"})) == [("est", "redundant-state")]
    assert kinds(rs(EST)) == []
    assert kinds(rs(EST, policy={"input": "drop", "stateful": False})) == []
    assert kinds(rs(dict(EST, state=["established", "new"]), policy={"input": "drop"})) == []
    # it keeps established packets from a later drop: it does something
    assert kinds(rs(EST, {"src": "198.18.9.0/24", "action": "drop", "priority": 3},
                    policy={"input": "drop"})) == []


# ---- interfaces -------------------------------------------------------------------------------

def test_interfaces_missing_on_this_host():
    ruleset = rs({"id": "a", "iif": ["eth0", "wg*"], "action": "accept"},
                 {"id": "b", "hook": "forward", "oif": "veth-wan", "action": "accept"})
    found = lint(ruleset, ["lo", "eth0", "wg0"])
    assert [(f.rule, f.kind) for f in found] == [("b", "interface")]
    assert "oif 'veth-wan' does not exist" in found[0].message
    assert [f.rule for f in lint(ruleset, ["lo", "eth0", "veth-wan"])] == ["a"]
    assert kinds(ruleset) == []  # no host list: not checked


# ---- the interval algebra at its edges ---------------------------------------------------------

def test_interval_edges():
    assert space.minus(((0, 10),), ((0, 0),)) == ((1, 10),)
    assert space.minus(((0, 10),), ((10, 10),)) == ((0, 9),)
    assert space.minus(((0, 10),), ((11, 20),)) == ((0, 10),)
    assert space.meet(((0, 10),), ((10, 20),)) == ((10, 10),)
    assert space.meet(((0, 9),), ((10, 20),)) == ()
    assert space.norm([(0, 4), (5, 9)]) == ((0, 9),)
    assert space.norm([(0, 4), (6, 9)]) == ((0, 4), (6, 9))


# ---- did you mean -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ('[[rule]]\nid = "a"\ndprot = 22\naction = "accept"\n',
     "f.toml:1: rule 'a': field 'dprot': unknown key; did you mean 'dport'?"),
    ('[[rule]]\nid = "a"\nproto = "tpc"\naction = "accept"\n',
     "f.toml:1: rule 'a': field 'proto': unknown value 'tpc'; did you mean 'tcp'?"),
    ('\n[[rule]]\nid = "a"\nstate = "establised"\naction = "accept"\n',
     "f.toml:2: rule 'a': field 'state': unknown conntrack state 'establised'; did you mean "
     "'established'?"),
    ('[policy]\ninput = "drop"\nimput = "drop"\n',
     "f.toml:3: field 'policy.imput': unknown key; did you mean 'input'?"),
    ('\n[policy]\nforward = "dorp"\n',
     "f.toml:3: field 'policy.forward': unknown value 'dorp'; did you mean 'drop'?"),
    ('[[set]]\nname = "a"\n\n[[set]]\nname = "b"\nelemnts = []\n',
     "f.toml:4: set 'b': field 'elemnts': unknown key; did you mean 'elements'?"),
    ('\n\n[polciy]\ninput = "drop"\n',
     "f.toml:3: unknown top-level key 'polciy'; did you mean 'policy'?"),
])
def test_did_you_mean_with_the_line(text, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "f.toml")
    assert str(err.value) == expected


def test_no_guess_when_nothing_is_close():
    with pytest.raises(ConfigError, match="valid keys are id, hook"):
        parse_config('[[rule]]\nzzzz = 1\naction = "accept"\n', "f.toml")
    assert closest("dprot", ["dport", "proto"]) == "dport"
    assert closest("xyz", ["dport", "proto"]) is None
    assert closest(5, ["dport"]) is None


# ---- every config error carries its line -------------------------------------------------------

def _hooks(text: str, file: str):
    return hook_files(text, f"/etc/minifw/{file}")


@pytest.mark.parametrize("parse, text, line", [
    (parse_config, '[[rule]]\naction = "accept"\n\n[policy]\nstateful = 1\n', 5),
    (parse_config, 'policy = 3\n', 1),
    (parse_config, '\n[[set]]\nname = "a"\n[[set]]\nname = "a"\n', 4),
    (parse_config, '\n[[set]]\nname = "a"\ntimeout = "soon"\n', 2),
    (parse_config, 'x = 1\n[[rule]]\naction = "accept"\n', 1),
    (parse_config, '\n\n[[rule]]\naction = "accept"\n[[rule]]\naction = "acept"\n', 5),
    (_hooks, '[[hook]]\nfile = "a.py"\n\n[[hook]]\nfiel = "b.py"\n', 4),
    (_hooks, '[[hook]]\nfile = "a.py"\n[[hook]]\nfile = ""\n', 3),
    (_hooks, '\nhook = 1\n', 2),
])
def test_config_errors_carry_the_line(parse, text, line):
    with pytest.raises(ConfigError) as err:
        parse(text, "f.toml")
    assert err.value.line == line, str(err.value)
    if "fiel" in text:
        assert "did you mean 'file'?" in str(err.value)


def test_a_long_chain_is_linted_through_the_index():
    # 2,000 rules of one address and one port each; the last repeats one of them
    many = [{"id": f"d{i}", "src": f"198.19.{i // 250}.{i % 250 + 1}", "proto": "tcp",
             "dport": 1024 + i, "action": "drop"} for i in range(2000)]
    repeat = dict(many[1234], id="again", action="accept")
    wider = dict(many[1234], id="wider", dport="1024-4000", action="accept")
    assert [(f.rule, f.kind, f.message.split("'")[1]) for f in lint(rs(*many, repeat, wider))] \
        == [("again", "shadowed", "d1234")]
