"""Runs of look-alike rules: the optimised plan decides every packet as the plain rule list does."""

import dataclasses
import ipaddress

from hypothesis import given, settings, strategies as st

from minifw.compile import runs
from minifw.compile.nft import build_load
from minifw.model import Rule, Ruleset

ADDRS = [f"198.18.{a}.{b}" for a in range(2) for b in range(6)] + ["198.18.4.0/30", "fd00::1",
                                                                      "fd00::2", "fd00::/120"]
PORTS = [22, 53, 80, 443, "1000-1003"]


@st.composite
def rules(draw):
    field = draw(st.sampled_from(["src", "dst", "dport", "none"]))
    data = {"action": draw(st.sampled_from(["accept", "drop", "drop", "log"])),
            "proto": draw(st.sampled_from(["tcp", "udp"]))}
    if data["action"] == "log":
        data["log"] = "x"
    if field in ("src", "dst"):
        data[field] = draw(st.lists(st.sampled_from(ADDRS), min_size=1, max_size=2, unique=True))
    elif field == "dport":
        data["dport"] = draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=2, unique=True))
    return data


@st.composite
def packets(draw):
    v6 = draw(st.booleans())
    pool = ([f"fd00::{i}" for i in range(4)] if v6
            else [f"198.18.{a}.{b}" for a in (0, 1, 4) for b in range(6)])
    return {"src": ipaddress.ip_address(draw(st.sampled_from(pool))),
            "dst": ipaddress.ip_address(draw(st.sampled_from(pool))),
            "proto": draw(st.sampled_from(["tcp", "udp"])),
            "dport": draw(st.sampled_from([22, 53, 80, 443, 1001, 9]))}


def matches(rule: Rule, pkt, skip: str | None = None) -> bool:
    """A tiny evaluator over the model (the fields these tests use)."""
    fam = "ip" if pkt["src"].version == 4 else "ip6"
    if fam not in [f.value for f in rule.families]:
        return False
    if rule.proto.value != "any" and rule.proto.value != pkt["proto"]:
        return False
    for key in ("src", "dst"):
        nets = getattr(rule, key)
        if key != skip and nets and not any(pkt[key] in n for n in nets
                                            if n.version == pkt[key].version):
            return False
    if "dport" != skip and rule.dport and not any(pkt["dport"] in p for p in rule.dport):
        return False
    return True


def plain_verdict(rules: list[Rule], pkt) -> str:
    for rule in rules:
        if matches(rule, pkt) and rule.action.decides:
            return rule.action.value
    return "continue"


def planned_verdict(items, pkt) -> str:
    for item in items:
        if isinstance(item, runs.Run):
            # the compiled run: the shared matches of its first rule, and set membership
            # the compiled run: the first rule's matches with the field widened to the union
            values = tuple(v for r in item.rules for v in getattr(r, item.field))
            union = dataclasses.replace(item.rules[0], **{item.field: values})
            if matches(union, pkt):
                return union.action.value
            continue
        if matches(item, pkt) and item.action.decides:
            return item.action.value
    return "continue"


@settings(max_examples=300, deadline=None)
@given(st.lists(rules(), min_size=0, max_size=14), st.lists(packets(), min_size=1, max_size=10),
       st.integers(min_value=2, max_value=4))
def test_runs_decide_like_plain_rules(raw, pkts, min_run):
    try:
        rule_list = [Rule.from_toml(r, index=i) for i, r in enumerate(raw)]
        Ruleset(rules=tuple(rule_list))
    except Exception:
        return  # duplicate generated ids are not what this test is about
    items = runs.plan_chain(rule_list, min_run=min_run)
    flat = [r for it in items for r in (it.rules if isinstance(it, runs.Run) else [it])]
    assert flat == rule_list                      # order kept, every rule accounted for
    for pkt in pkts:
        assert planned_verdict(items, pkt) == plain_verdict(rule_list, pkt)


def test_ten_drop_rules_compile_into_one_lookup():
    rs = Ruleset(rules=tuple(Rule.from_toml({"id": f"r{i}", "src": f"198.18.1.{i}",
                                             "action": "drop"}) for i in range(10)))
    cmds = build_load(rs)["nftables"]
    nft_rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    assert len(nft_rules) == 1
    assert nft_rules[0]["expr"][0]["match"]["right"] == "@r_input_0_0_v4"
    elems = [c["add"]["element"]["elem"] for c in cmds if "element" in c.get("add", {})]
    assert elems == [[f"198.18.1.{i}" for i in range(10)]]


def test_duplicate_values_end_a_run():
    rs = [Rule.from_toml({"id": f"r{i}", "dport": [80 if i == 5 else 1000 + i], "proto": "tcp",
                          "action": "accept"}) for i in range(12)] + \
         [Rule.from_toml({"id": "again", "dport": 80, "proto": "tcp", "action": "accept"})]
    items = runs.plan_chain(rs)
    assert isinstance(items[0], runs.Run) and len(items[0].rules) == 12
    assert items[1].id == "again"


@st.composite
def runny_rules(draw):
    """Rule lists made of a few templates that differ only in one field: runs form often."""
    out = []
    for _ in range(draw(st.integers(0, 16))):
        action = draw(st.sampled_from(["accept", "drop"]))
        field = draw(st.sampled_from(["src", "dport"]))
        if field == "src":
            out.append({"action": action, "src": draw(st.sampled_from(ADDRS))})
        else:
            out.append({"action": action, "proto": "tcp", "dport": draw(st.sampled_from(PORTS))})
    return out


@settings(max_examples=300, deadline=None)
@given(runny_rules(), st.lists(packets(), min_size=1, max_size=10), st.integers(2, 3))
def test_runny_lists_decide_like_plain_rules(raw, pkts, min_run):
    test_runs_decide_like_plain_rules.hypothesis.inner_test(raw, pkts, min_run)


def test_a_run_looks_its_set_up_after_the_rules_other_matches():
    """The element counter runs on each lookup that finds the element: ahead of the port match,
    a TCP packet from a listed address would count for a UDP-only run."""
    rs = Ruleset(rules=tuple(Rule.from_toml({"id": f"r{i}", "src": f"198.18.1.{i}",
                                             "proto": "udp", "dport": 53, "action": "drop"})
                             for i in range(10)))
    cmds = build_load(rs)["nftables"]
    (rule,) = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    matches = [e["match"] for e in rule["expr"] if "match" in e]
    assert matches[-1]["right"] == "@r_input_0_0_v4"
    assert any(m["left"].get("payload", {}).get("field") == "dport" for m in matches[:-1])
    assert "match" not in rule["expr"][len(matches)]  # the statements follow the last match
