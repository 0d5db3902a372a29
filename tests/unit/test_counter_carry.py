"""Counters across reloads, pure side: which rules and run sets keep their counters, and the
load document that carries them (rule counters inline, run sets kept with element diffs)."""

import pytest

from minifw.compile import nft as compiler
from minifw.compile.carry import Carry, apply_counters, live_counters, plan_carry, previous
from minifw.errors import MinifwError
from minifw.model import parse_config

RUN = "".join(f'\n[[rule]]\nid = "net{i}"\nsrc = "198.18.{i}.0/24"\naction = "drop"\n'
              for i in range(8))
BASE = '''
[policy]
input = "drop"

[[rule]]
id = "web"
proto = "tcp"
dport = 80
action = "accept"

[[rule]]
id = "any"
action = "reject"
src = "198.18.99.0/24"
'''


def rs(text: str):
    return parse_config(text, "t.toml")


def listing_of(document, counts):
    """A terse listing as the kernel gives it after ``document``, with ``counts`` per comment
    owner handed out in order (what the rules counted since)."""
    out, given = [], {}
    for cmd in document["nftables"]:
        rule = cmd.get("add", {}).get("rule")
        if rule is None:
            continue
        rule = dict(rule)
        if {"counter": None} in rule["expr"]:
            owner = rule["comment"].split(": ")[0]
            n = given.get(owner, 0)
            given[owner] = n + 1
            p = counts.get(owner, [(0, 0)] * 9)[n]
            rule["expr"] = [{"counter": {"packets": p[0], "bytes": p[1]}} if e == {"counter": None}
                            else e for e in rule["expr"]]
        out.append({"rule": rule})
    return {"nftables": out}


def counters_in(document):
    found = {}
    for cmd in document["nftables"]:
        rule = cmd.get("add", {}).get("rule")
        for e in (rule or {}).get("expr", []):
            if isinstance(e.get("counter"), dict):
                found.setdefault(rule["comment"].split(": ")[0], []).append(
                    (e["counter"]["packets"], e["counter"]["bytes"]))
    return found


def test_unchanged_rules_and_the_policy_keep_their_counters():
    old = rs(BASE)
    live = live_counters(listing_of(compiler.build_load(old), {
        "web": [(5, 500)], "any": [(2, 80), (3, 90)], "policy input": [(7, 700)]}))
    assert live == {"web": [(5, 500)], "any": [(2, 80), (3, 90)], "policy input": [(7, 700)]}
    new = rs(BASE.replace("dport = 80", "dport = 81"))
    carry = plan_carry(old, new, live, kernel_sets=())
    assert carry.counters == {"any": [(2, 80), (3, 90)], "policy input": [(7, 700)]}
    assert counters_in(compiler.build_load(new, carry=carry)) == carry.counters


def test_action_or_log_changes_keep_counters_but_hook_or_id_do_not():
    old = rs(BASE)
    live = {"web": [(5, 500)], "any": [(1, 1), (1, 1)]}
    logged = rs(BASE.replace('action = "accept"', 'action = "accept"\nlog = "web "'))
    assert plan_carry(old, logged, live, ()).counters == live
    moved = rs(BASE.replace('dport = 80', 'dport = 80\npriority = 5'))
    assert "web" not in plan_carry(old, moved, live, ()).counters
    renamed = rs(BASE.replace('id = "web"', 'id = "www"'))
    assert "www" not in plan_carry(old, renamed, live, ()).counters
    assert plan_carry(None, old, live, ()) == Carry()


def test_a_rule_that_compiles_into_more_nft_rules_starts_from_zero():
    cmds = compiler.build_load(rs(BASE))["nftables"]
    apply_counters(cmds, {"any": [(9, 9)], "web": [(4, 40)]})  # "any" has two nft rules now
    found = counters_in({"nftables": cmds})
    assert found == {"web": [(4, 40)]}


def test_an_unchanged_run_set_is_kept_and_only_its_difference_sent():
    old = rs(BASE + RUN)
    new = rs(BASE.replace("dport = 80", "dport = 81") + RUN.replace(
        "198.18.7.0/24", "198.18.17.0/24"))
    carry = plan_carry(old, new, {}, kernel_sets={"r_input_0_2_v4"})
    assert list(carry.keep) == ["r_input_0_2_v4"]
    doc = compiler.build_load(new, existing_sets=["r_input_0_2_v4"], carry=carry)["nftables"]
    assert {"delete": {"set": {"family": "inet", "table": "minifw",
                               "name": "r_input_0_2_v4"}}} not in doc
    assert not any(c.get("add", {}).get("set", {}).get("name") == "r_input_0_2_v4" for c in doc)
    changes = [c for c in doc if "element" in c.get("add", c.get("delete", {}))]
    assert changes == [
        {"delete": {"element": {"family": "inet", "table": "minifw", "name": "r_input_0_2_v4",
                                "elem": [{"prefix": {"addr": "198.18.7.0", "len": 24}}]}}},
        {"add": {"element": {"family": "inet", "table": "minifw", "name": "r_input_0_2_v4",
                             "elem": [{"prefix": {"addr": "198.18.17.0", "len": 24}}]}}}]


def test_run_sets_that_changed_are_made_again():
    old = rs(BASE + RUN)
    sets = {"r_input_0_2_v4"}
    # the set is not in the kernel
    assert plan_carry(old, old, {}, kernel_sets=()).keep == {}
    assert plan_carry(old, old, {}, kernel_sets=sets).keep.keys() == sets
    # an element moved to another rule
    swapped = rs(BASE + RUN.replace('"net0"', '"tmp"').replace('"net1"', '"net0"')
                 .replace('"tmp"', '"net1"'))
    assert plan_carry(old, swapped, {}, sets).keep == {}
    # the shape of the run changed (all its rules now udp)
    shaped = rs(BASE + RUN.replace('action = "drop"', 'proto = "udp"\naction = "drop"'))
    assert plan_carry(old, shaped, {}, sets).keep == {}
    # hosts instead of networks: no longer an interval set
    hosts = rs(BASE + RUN.replace(".0/24", ".1"))
    assert plan_carry(old, hosts, {}, sets).keep == {}
    # an edit of another chain does not look at this one
    assert plan_carry(old, old, {}, sets, chains=["input_5"]).keep == {}


def test_the_previous_ruleset_shares_unchanged_rules_and_refuses_damage():
    old, new = rs(BASE + RUN), rs(BASE.replace("dport = 80", "dport = 81") + RUN)
    back = previous(old.to_toml(), new)
    assert back == old
    assert back.get("net3") is new.get("net3") and back.get("web") is not new.get("web")
    for damaged in ({"rule": "x"}, {"rule": [1]}, {"rule": [{"id": "a"}]}, {"policy": 3}):
        with pytest.raises(MinifwError):
            previous(damaged, new)
