"""The rule model without root: TOML round trip (Hypothesis), stable generated ids, and the
checks that refuse bad rules naming the rule and the field."""

import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from minifw.errors import ConfigError, RuleError
from minifw.model import Rule, Ruleset, parse_config
from minifw.model.types import (
    CT_STATES, HOOKS_BEFORE_CONNTRACK, HOOKS_WITH_IIF, HOOKS_WITH_OIF, HOOKS_WITH_REJECT,
    ICMP_TYPES, ICMPV6_TYPES, Hook,
)

# ---- a strategy of valid rules, in their TOML form ----------------------------------------------

v4_nets = st.builds(lambda a, n: str(ipaddress.ip_network(f"198.18.{a >> 8}.{a & 255}/{n}",
                                                          strict=False)),
                    st.integers(0, 2**9 - 1), st.integers(15, 32))
v6_nets = st.builds(lambda a, n: str(ipaddress.ip_network(f"fd00:{a:x}::1/{n}", strict=False)),
                    st.integers(0, 2**16 - 1), st.integers(8, 128))
ports = st.one_of(st.integers(0, 65535),
                  st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(
                      lambda t: f"{min(t)}-{max(t)}"))
ifnames = st.sampled_from(["eth0", "veth1", "lan*", "wg0", "br-lan"])
log_text = st.text(st.characters(min_codepoint=32, max_codepoint=0x24F, blacklist_characters='"',
                                 blacklist_categories=("Cc",)),
                   min_size=1, max_size=40).filter(lambda s: s.strip())


def one_or_many(strategy, max_size=3):
    return st.one_of(strategy, st.lists(strategy, min_size=1, max_size=max_size))


@st.composite
def rule_tables(draw):
    hook = draw(st.sampled_from(list(Hook)))
    table = {}
    if draw(st.booleans()):
        table["id"] = draw(st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,20}\Z"))
    if hook is not Hook.INPUT or draw(st.booleans()):
        table["hook"] = hook.value
    priority = draw(st.integers(-1000, 999))
    table["priority"] = priority
    proto = draw(st.sampled_from(["tcp", "udp", "icmp", "icmpv6", "any"]))
    family = {"icmp": "ip", "icmpv6": "ip6"}.get(proto) or draw(
        st.sampled_from(["ip", "ip6", "any"]))
    if draw(st.booleans()):
        table["family"] = family
    table["proto"] = proto
    nets = {"ip": v4_nets, "ip6": v6_nets, "any": st.one_of(v4_nets, v6_nets)}[family]
    for key in ("src", "dst"):
        if draw(st.booleans()):
            table[key] = draw(one_or_many(nets))
    if family == "any" and "src" in table and "dst" in table:
        del table["dst"]   # a v4-only src with a v6-only dst could never match
    if proto in ("tcp", "udp"):
        for key in ("sport", "dport"):
            if draw(st.booleans()):
                table[key] = draw(one_or_many(ports))
    if proto in ("icmp", "icmpv6") and draw(st.booleans()):
        names = list(ICMP_TYPES if proto == "icmp" else ICMPV6_TYPES)
        table["icmp_type"] = draw(one_or_many(st.one_of(st.sampled_from(names),
                                                        st.integers(0, 255))))
    if hook in HOOKS_WITH_IIF and draw(st.booleans()):
        table["iif"] = draw(one_or_many(ifnames))
    if hook in HOOKS_WITH_OIF and draw(st.booleans()):
        table["oif"] = draw(one_or_many(ifnames))
    if not (hook in HOOKS_BEFORE_CONNTRACK and priority <= -200) and draw(st.booleans()):
        table["state"] = draw(st.lists(st.sampled_from(CT_STATES), min_size=1, max_size=3,
                                       unique=True))
    actions = ["accept", "drop", "log"] + (["reject"] if hook in HOOKS_WITH_REJECT else [])
    table["action"] = draw(st.sampled_from(actions))
    if table["action"] == "log" or draw(st.booleans()):
        table["log"] = draw(log_text)
    if draw(st.booleans()):
        rate = draw(st.integers(1, 10000))
        unit = draw(st.sampled_from(["second", "minute", "hour", "day", "week"]))
        burst = draw(st.none() | st.integers(1, 100))
        table["limit"] = f"{rate}/{unit}" + (f" burst {burst}" if burst else "")
    if draw(st.booleans()):
        table["comment"] = draw(log_text)
    return table


@settings(max_examples=300, deadline=None)
@given(rule_tables())
def test_toml_round_trip(table):
    rule = Rule.from_toml(table)
    assert Rule.from_toml(rule.to_toml()) == rule
    assert Rule.from_toml(rule.to_toml()).to_toml() == rule.to_toml()


@settings(max_examples=50, deadline=None)
@given(st.lists(rule_tables(), min_size=1, max_size=6), st.randoms())
def test_generated_ids_are_stable_across_reloads_and_reordering(tables, rnd):
    for t in tables:
        t.pop("id", None)
    try:
        first = Ruleset.from_toml({"rule": tables})
    except RuleError:
        return   # two identical id-less rules: refused as duplicates, tested below
    again = Ruleset.from_toml({"rule": [dict(t) for t in tables]})
    assert [r.id for r in again.rules] == [r.id for r in first.rules]
    shuffled = list(zip(tables, first.rules))
    rnd.shuffle(shuffled)
    reordered = Ruleset.from_toml({"rule": [t for t, _ in shuffled]})
    assert [r.id for r in reordered.rules] == [r.id for _, r in shuffled]
    # The id-less rules write back without an id, and read back with the same one.
    assert Ruleset.from_toml(first.to_toml()) == first


def test_generated_id_ignores_the_comment_and_layout_but_not_the_match():
    base = {"proto": "tcp", "dport": 22, "action": "accept"}
    same = [Rule.from_toml(base).id,
            Rule.from_toml({**base, "comment": "ssh"}).id,
            Rule.from_toml({**base, "dport": [22], "hook": "input", "priority": 0}).id]
    assert len(set(same)) == 1
    assert same[0].startswith("input-accept-")
    assert Rule.from_toml({**base, "dport": 23}).id != same[0]
    assert Rule.from_toml({**base, "hook": "forward"}).id != same[0]


def test_two_identical_idless_rules_are_duplicates():
    with pytest.raises(RuleError) as info:
        Ruleset.from_toml({"rule": [{"action": "drop"}, {"action": "drop"}]})
    assert info.value.field == "id"


# ---- refusals, each naming the rule and the field ----------------------------------------------

BAD = [
    ({"id": "r", "action": "drop", "colour": "red"}, "colour"),
    ({"id": "r", "action": "drop", "src": "198.18.0.256"}, "src"),
    ({"id": "r", "action": "drop", "dst": "198.18.0.1/24"}, "dst"),
    ({"id": "r", "action": "drop", "proto": "tcp", "dport": 65536}, "dport"),
    ({"id": "r", "action": "drop", "proto": "tcp", "dport": True}, "dport"),
    ({"id": "r", "action": "drop", "sport": 53}, "sport"),
    ({"id": "r", "action": "drop", "hook": "ingress"}, "hook"),
    ({"id": "r", "action": "permit"}, "action"),
    ({"id": "r"}, "action"),
    ({"id": "r", "action": "drop", "priority": 1000}, "priority"),
    ({"id": "r", "action": "drop", "priority": "10"}, "priority"),
    ({"id": "r", "action": "drop", "log": "x" * 128}, "log"),
    ({"id": "r", "action": "drop", "log": "ü" * 64}, "log"),
    ({"id": "r", "action": "log"}, "log"),
    ({"id": "r", "action": "reject", "hook": "postrouting"}, "action"),
    ({"id": "r", "action": "drop", "hook": "prerouting", "priority": -200, "state": "new"},
     "state"),
    ({"id": "r", "action": "drop", "hook": "output", "priority": -201, "state": "new"}, "state"),
    ({"id": "r", "action": "drop", "hook": "output", "iif": "eth0"}, "iif"),
    ({"id": "r", "action": "drop", "hook": "postrouting", "iif": "eth0"}, "iif"),
    ({"id": "r", "action": "drop", "hook": "prerouting", "oif": "eth0"}, "oif"),
    ({"id": "r", "action": "drop", "oif": "eth0"}, "oif"),
    ({"id": "r", "action": "drop", "state": "bogus"}, "state"),
    ({"id": "r", "action": "drop", "icmp_type": "echo-request"}, "icmp_type"),
    ({"id": "r", "action": "drop", "limit": "fast"}, "limit"),
    ({"id": "r", "action": "drop", "limit": "0/second"}, "limit"),
    ({"id": "r", "action": "drop", "limit": "99999999999999999999/second"}, "limit"),
    ({"id": "r", "action": "drop", "limit": "5/second burst 0"}, "limit"),
    ({"id": "r", "action": "drop", "limit": "1/week burst 4294967295"}, "limit"),
    ({"id": "r", "action": "drop", "family": "ip6", "src": "198.18.0.1"}, "src"),
    ({"id": "bad id!", "action": "drop"}, "id"),
]


@pytest.mark.parametrize("table,field", BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_bad_rules_name_the_rule_and_field(table, field):
    with pytest.raises(RuleError) as info:
        Rule.from_toml(table)
    assert info.value.field == field
    assert info.value.rule == table["id"]


def test_allowed_edges():
    assert Rule.from_toml({"id": "r", "action": "drop",
                           "limit": "4294967295/week burst 4294967295"}).limit.burst == 2**32 - 1
    assert Rule.from_toml({"id": "r", "action": "drop", "log": "x" * 127}).log == "x" * 127
    assert Rule.from_toml({"id": "r", "action": "drop", "priority": 999}).priority == 999
    assert Rule.from_toml({"id": "r", "action": "accept", "hook": "prerouting",
                           "priority": -199, "state": "established"}).state == ("established",)
    assert Rule.from_toml({"id": "r", "action": "accept", "hook": "input", "priority": -300,
                           "state": "established"}).priority == -300


def test_config_errors_carry_file_line_rule_and_field():
    text = '[[rule]]\nid = "ok"\naction = "drop"\n\n[[rule]]\nid = "bad"\naction = "drop"\n' \
           'proto = "udp"\ndport = "x"\n'
    with pytest.raises(RuleError) as info:
        parse_config(text, "/etc/minifw/minifw.toml")
    msg = str(info.value)
    assert msg.startswith("/etc/minifw/minifw.toml:5: rule 'bad': field 'dport': ")
    with pytest.raises(RuleError) as info:
        parse_config(text.replace('"bad"', '"ok"').replace('"x"', "53"), "f.toml")
    assert str(info.value).startswith("f.toml:5: rule 'ok': field 'id': ")   # the second use
    with pytest.raises(ConfigError) as info:
        parse_config('[[rule]]\nid = "a"\naction = drop\n', "f.toml")
    assert str(info.value).startswith("f.toml:3: TOML syntax error")
    assert "\n" not in str(info.value)
