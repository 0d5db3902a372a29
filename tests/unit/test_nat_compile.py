"""[[nat]] compiled to libnftables JSON: goldens (tests/unit/golden/*nat*.json, reviewed by hand;
regenerate with MINIFW_UPDATE_GOLDEN=1 and review the diff), and the traps of the issue as
properties: the chains' types and priorities, the family every address statement names, the
policy accept before the policy's drop, and NAT chain names apart from the filter chains'."""

import json

import pytest

from minifw.compile import names, nat as natc
from minifw.compile import nft as compiler
from minifw.model import Hook, Ruleset, parse_config
from minifw.model.nat import Nat

from test_compiler_golden import check_golden

ROUTER = """
[policy]
input = "drop"
forward = "drop"

[[set]]
name = "lan"
elements = ["198.18.20.0/24", "fd00:20::/64"]

[[rule]]
id = "lan-out"
hook = "forward"
iif = "veth-lan"
action = "accept"

[[nat]]
id = "masq-lan"
kind = "masquerade"
src = "@lan"
oif = "veth-wan"

[[nat]]
id = "web-forward"
kind = "dnat"
iif = "veth-wan"
proto = "tcp"
dport = 8080
to = "198.18.20.1:80"

[[nat]]
id = "web-forward6"
kind = "dnat"
iif = "veth-wan"
proto = "tcp"
dport = 8080
to = "[fd00:20::1]:80"
comment = "the same, v6"

[[nat]]
id = "pool"
kind = "snat"
src = "198.18.21.0/24"
to = "198.18.0.10-198.18.0.19"

[[nat]]
id = "ports6"
kind = "snat"
proto = "udp"
to = "[fd00::a-fd00::f]:1024-2047"

[[nat]]
id = "proxy"
kind = "redirect"
iif = "veth-lan"
proto = "tcp"
dport = 80
to = 3128

[[nat]]
id = "local-dns"
kind = "dnat"
hook = "output"
proto = "udp"
dport = 53
to = "198.18.20.53"
"""


def router() -> Ruleset:
    return parse_config(ROUTER, "router.toml")


def test_load_golden():
    check_golden("load_nat_router", compiler.build_load(router()))


def test_reload_drops_nat_chains_no_entry_needs():
    bare = parse_config('[policy]\nforward = "drop"\n[[nat]]\nkind = "masquerade"\n', "x")
    doc = compiler.build_load(bare, existing_chains=["nat_prerouting", "nat_postrouting",
                                                     "nat_output", "forward_policy"])
    check_golden("nat_reload_existing", doc)
    cmds = [json.dumps(c, sort_keys=True) for c in doc["nftables"]]
    for gone in ("nat_prerouting", "nat_output"):
        assert any('"delete"' in c and f'"name": "{gone}"' in c for c in cmds)
    assert not any('"delete"' in c and '"name": "nat_postrouting"' in c for c in cmds)
    assert not any("ct" in c and "status" in c for c in cmds)  # no dnat: no forward accept


def _nat(table) -> Nat:
    return Nat.from_toml(table)


def test_add_and_delete_golden():
    before = router()
    new = _nat({"id": "ssh-forward", "kind": "dnat", "iif": "veth-wan", "proto": "tcp",
                "dport": 2222, "to": "198.18.20.2:22"})
    after = Ruleset(rules=before.rules, policies=before.policies, sets=before.sets,
                    nats=before.nats + (new,))
    chains = {"nat_prerouting", "nat_postrouting", "forward_policy", "input_policy"}
    check_golden("nat_add", natc.build_nat_add(new, before, after, chains,
                                               compiler.build_rule_bodies))
    check_golden("nat_delete", natc.build_nat_delete(new, [11, 12], True,
                                                     {Hook.FORWARD: [5]}))


def test_the_first_port_forward_adds_the_policy_accept_and_a_chain():
    base = parse_config('[policy]\nforward = "drop"\ninput = "drop"\n', "x")
    fwd = _nat({"kind": "dnat", "proto": "tcp", "dport": 1, "to": "198.18.0.1:2"})
    doc = natc.build_nat_add(fwd, base, Ruleset(policies=base.policies, nats=(fwd,)), set(),
                             compiler.build_rule_bodies)
    kinds = [(next(iter(c)), next(iter(c[next(iter(c))]))) for c in doc["nftables"]]
    assert kinds == [("add", "chain"), ("add", "rule"), ("insert", "rule")]
    assert doc["nftables"][2]["insert"]["rule"]["chain"] == "forward_policy"
    # a second one adds no second accept
    two = Ruleset(policies=base.policies, nats=(fwd, _nat({"kind": "dnat", "to": "198.18.0.3"})))
    doc = natc.build_nat_add(two.nats[1], Ruleset(policies=base.policies, nats=(fwd,)), two,
                             {"nat_prerouting"}, compiler.build_rule_bodies)
    assert [next(iter(c)) for c in doc["nftables"]] == ["add"]


@pytest.mark.parametrize("policy, kind, hook, accepts", [
    ("forward", "dnat", "prerouting", [Hook.FORWARD]),
    ("input", "dnat", "prerouting", []),
    ("forward", "dnat", "output", []),              # the host's own connections: no forward
    ("input", "redirect", "prerouting", [Hook.INPUT]),
    ("input", "redirect", "output", [Hook.INPUT]),
    ("forward", "redirect", "prerouting", []),
    ("forward", "masquerade", None, []),
    ("forward", "snat", None, []),
])
def test_which_policy_chains_accept_translated_flows(policy, kind, hook, accepts):
    table = {"kind": kind}
    if hook:
        table["hook"] = hook
    if kind in ("dnat", "snat"):
        table["to"] = "198.18.0.1"
    rs = Ruleset(policies=parse_config(f'[policy]\n{policy} = "drop"\n', "x").policies,
                 nats=(_nat(table),))
    assert natc.accept_hooks(rs) == accepts
    assert natc.accept_hooks(Ruleset(nats=(_nat(table),))) == []  # accept policies: nothing to do


def test_the_policy_accept_comes_before_the_policy_drop():
    doc = compiler.build_load(router())["nftables"]
    for chain in ("forward_policy", "input_policy"):
        rules = [c["add"]["rule"] for c in doc if "rule" in c.get("add", {})
                 and c["add"]["rule"]["chain"] == chain]
        assert rules[0]["comment"] == natc.ACCEPT_COMMENT
        assert rules[0]["expr"][0]["match"]["left"] == {"ct": {"key": "status"}}
        assert {"drop": None} in rules[-1]["expr"]


def test_chains_types_priorities_and_statements():
    doc = compiler.build_load(router())["nftables"]
    chains = {c["add"]["chain"]["name"]: c["add"]["chain"] for c in doc
              if "chain" in c.get("add", {})}
    for name, (hook, prio) in names.NAT_CHAINS.items():
        assert (chains[name]["type"], chains[name]["hook"], chains[name]["prio"]) == (
            "nat", hook, prio)
    ids = {n.id for n in router().nats}
    for c in doc:
        rule = c.get("add", {}).get("rule")
        if rule is None or not rule["chain"].startswith("nat_"):
            continue
        assert {"counter": None} in rule["expr"]
        assert compiler.rule_id_of_comment(rule["comment"]) in ids
        stmt = rule["expr"][-1]
        for key in ("snat", "dnat"):
            if key in stmt:  # an inet table: the address statement names its family
                fam = stmt[key]["family"]
                nfproto = {"ip": "ipv4", "ip6": "ipv6"}[fam]
                matches = json.dumps(rule["expr"])
                assert nfproto in matches or f'"protocol": "{fam}"' in matches


def test_nat_chain_names_stand_apart_from_the_filter_chains():
    for hook in (Hook.PREROUTING, Hook.OUTPUT, Hook.POSTROUTING):
        name = names.nat_chain(hook)
        chain = names.parse(name)
        assert chain.kind is names.Kind.NAT and chain.hook is hook
        assert names.is_declarative(name)
        assert name != names.rule_chain(hook, -100) and name != names.rule_chain(hook, 100)
    assert names.parse("prerouting_m100").kind is names.Kind.RULES
    assert names.parse("nat_input") is None and names.parse("nat_forward") is None
    assert not names.is_declarative("nat_input")


def test_nat_points_only_while_nat_is_configured():
    assert natc.nat_points(Ruleset()) == []
    assert sorted(natc.nat_points(router()), key=str) == sorted(
        [(Hook.PREROUTING, -100), (Hook.OUTPUT, -100), (Hook.POSTROUTING, 100)], key=str)


def test_expected_layout_covers_the_nat_chains():
    layout = compiler.expected_layout(compiler.build_load(router()))
    assert layout["nat_prerouting"] == ["web-forward", "web-forward6: the same, v6", "proxy"]
    # a set lookup is two per IP version (hash and interval): four nft rules for masq-lan
    assert layout["nat_postrouting"] == ["masq-lan"] * 4 + ["pool", "ports6"]
    assert layout["forward_policy"][0] == natc.ACCEPT_COMMENT
