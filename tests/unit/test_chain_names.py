"""Chain names (compile/names.py), both ways: each kind is built as minifw has always named it on
the wire, parsed back to what it stands for, and the edges of each (priority range, signs,
spellings minifw never makes) are pinned on both sides."""

from __future__ import annotations

import pytest

from minifw.compile import names
from minifw.compile.names import Chain, Kind
from minifw.model.types import POLICY_PRIORITY, PRIORITY_MIN, Hook

# (built name, what it parses to): the wire names of every kind, as earlier versions made them
WIRE = [
    (names.rule_chain(Hook.PREROUTING, -300), "prerouting_m300",
     Chain(Kind.RULES, Hook.PREROUTING, -300)),
    (names.rule_chain(Hook.INPUT, 0), "input_0", Chain(Kind.RULES, Hook.INPUT, 0)),
    (names.rule_chain(Hook.INPUT, 1), "input_1", Chain(Kind.RULES, Hook.INPUT, 1)),
    (names.rule_chain(Hook.OUTPUT, -1), "output_m1", Chain(Kind.RULES, Hook.OUTPUT, -1)),
    (names.rule_chain(Hook.FORWARD, 999), "forward_999", Chain(Kind.RULES, Hook.FORWARD, 999)),
    (names.rule_chain(Hook.POSTROUTING, -2**31), "postrouting_m2147483648",
     Chain(Kind.RULES, Hook.POSTROUTING, -2**31)),
    (names.policy_chain(Hook.INPUT), "input_policy", Chain(Kind.POLICY, Hook.INPUT, 1000)),
    (names.policy_chain(Hook.FORWARD), "forward_policy", Chain(Kind.POLICY, Hook.FORWARD, 1000)),
    (names.BAN_CHAIN, "bans", Chain(Kind.BANS, Hook.PREROUTING, -350)),
    (names.BAN_CHAIN_V4, "bans_v4", Chain(Kind.BANS_BY_VERSION)),
    (names.BAN_CHAIN_V6, "bans_v6", Chain(Kind.BANS_BY_VERSION)),
    (names.hook_chain(1000, "drop_icmp"), "hook_q1000_drop_icmp",
     Chain(Kind.HOOK_FUNCTION, queue=1000, function="drop_icmp")),
    (names.flow_chain(1001, "drop_icmp"), "flow_q1001_drop_icmp",
     Chain(Kind.FLOW_CACHE, queue=1001, function="drop_icmp")),
    (names.hook_chain(0, "a.b-c"), "hook_q0_a.b-c",
     Chain(Kind.HOOK_FUNCTION, queue=0, function="a.b-c")),
]


@pytest.mark.parametrize("built, wire, parsed", WIRE, ids=[w for _, w, _ in WIRE])
def test_names_on_the_wire_are_built_and_parsed_back(built, wire, parsed):
    assert built == wire
    assert names.parse(wire) == parsed
    assert names.kind_of(wire) is parsed.kind


@pytest.mark.parametrize("hook", list(Hook))
@pytest.mark.parametrize("priority", [PRIORITY_MIN, PRIORITY_MIN + 1, -350, -301, -300, -1, 0, 1,
                                      10, 100, POLICY_PRIORITY - 1])
def test_every_rule_chain_round_trips(hook, priority):
    name = names.rule_chain(hook, priority)
    assert names.parse(name) == Chain(Kind.RULES, hook, priority)
    assert names.is_declarative(name)
    assert ("_m" in name) is (priority < 0)


def test_the_priority_range_ends_are_pinned_on_both_sides():
    assert names.parse("input_m2147483648").priority == -2**31
    assert names.parse("input_m2147483649") is None          # below the kernel's int32
    assert names.parse("input_999").priority == 999
    assert names.parse("input_1000") is None                  # 1000 is the policy chain's
    assert names.parse("input_m0") is None                    # zero has no sign: input_0
    assert names.parse("input_0").priority == 0


@pytest.mark.parametrize("name", [
    "input_007", "input_-5", "input_+5", "input_5x", "input_", "input", "Input_0", "ingress_0",
    "inputs_0", "input_policy2", "input_pol", "xinput_0", "bans_v5", "bansv4", "Bans",
    "hook_q_x", "hook_qx_f", "hook_q1_", "hook_q01_f", "hook_1_f", "flow_q1", "hook_q1_-f",
    "hook_q1_f g", "limit_r1", "s_blocked_v4", "hookfn_test", "", "input_0\n"])
def test_names_minifw_never_makes_parse_to_nothing(name):
    assert names.parse(name) is None and names.kind_of(name) is None


def test_declarative_chains_are_the_rule_and_policy_chains_in_every_spelling_ever_taken():
    for name, _, parsed in WIRE:
        assert names.is_declarative(name) is (parsed.kind in (Kind.RULES, Kind.POLICY))
    # odd spellings of a rule chain were always taken as the compiler's own (loads delete
    # them when unused); they still are, though minifw never makes them
    assert names.is_declarative("input_007") and names.is_declarative("input_m0")
    assert names.is_declarative("input_1000")
    assert not names.is_declarative("input_x") and not names.is_declarative("hookfn_test")
    assert not names.is_declarative("input_0\n") and not names.is_declarative("input_policyx")


def test_hook_function_chain_names_are_cut_at_the_limit():
    long = "f" * 300
    assert len(names.hook_chain(1000, long)) == names.HOOK_CHAIN_MAX
    assert names.parse(names.flow_chain(1000, long)).function == "f" * (200 - len("flow_q1000_"))
    assert names.hook_chain(1000, "f" * 189) == "hook_q1000_" + "f" * 189   # 200: whole


def test_hook_points_recognise_hook_chains_by_name_and_leave_the_leaving_out():
    from minifw.compile import hooks as plan
    listing = [{"family": "inet", "table": "minifw", "name": n, "hook": "input", "prio": p}
               for n, p in (("hook_q1000_a", 5), ("hook_q1001_b.c-d", 6), ("flow_q1000_a", 6),
                            ("input_5", 5), ("bans", -350))]
    listing.append({"family": "ip", "table": "other", "name": "hook_q7_x", "hook": "input",
                    "prio": 7})
    assert [p[:2] for p in plan.hook_points(listing)] == [("input", 5), ("input", 6)]
    assert plan.hook_points(listing, leaving=["hook_q1000_a"]) == \
        [("input", 6, "hook chain hook_q1001_b.c-d")]
