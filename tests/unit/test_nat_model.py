"""The [[nat]] model without root: TOML round trip (Hypothesis), `to` checked against `kind`
on both sides of every boundary, and one-line errors naming the entry, the field and the line."""

import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from minifw.errors import RuleError
from minifw.model import Ruleset, parse_config
from minifw.model.nat import Nat, NatError, NatKind, NatTarget
from minifw.model.rule import PortRange
from minifw.model.types import Family, Hook


def nat(**table):
    return Nat.from_toml(table, index=0)


def refused(field, fragment, **table):
    with pytest.raises(NatError) as info:
        nat(**table)
    assert info.value.field == field, str(info.value)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    return info.value


# ---- the example of the issue ------------------------------------------------------------------

EXAMPLE = """\
[policy]
forward = "drop"

# the LAN goes out with the WAN address
[[nat]]
id = "masq-lan"
kind = "masquerade"          # masquerade | snat | dnat | redirect
src = "198.18.20.0/24"
oif = "veth-wan"

[[nat]]
id = "web-forward"
kind = "dnat"
iif = "veth-wan"
proto = "tcp"
dport = 8080
to = "198.18.20.1:80"
"""


def test_the_issue_example_parses_and_round_trips():
    rs = parse_config(EXAMPLE, "router.toml")
    masq, web = rs.nats
    assert (masq.id, masq.kind, masq.hook, masq.priority) == (
        "masq-lan", NatKind.MASQUERADE, Hook.POSTROUTING, 100)
    assert masq.families == (Family.IP,)
    assert (web.kind, web.hook, web.priority) == (NatKind.DNAT, Hook.PREROUTING, -100)
    assert web.to == NatTarget(ipaddress.ip_address("198.18.20.1"),
                               ipaddress.ip_address("198.18.20.1"), PortRange(80, 80))
    assert Ruleset.from_toml(rs.to_toml()) == rs
    assert rs.to_toml()["nat"][1]["to"] == "198.18.20.1:80"


# ---- `to`, by kind -----------------------------------------------------------------------------

@pytest.mark.parametrize("to, lo, hi, port", [
    ("198.18.20.1", "198.18.20.1", "198.18.20.1", None),
    ("198.18.20.1:80", "198.18.20.1", "198.18.20.1", (80, 80)),
    ("198.18.20.1:0", "198.18.20.1", "198.18.20.1", (0, 0)),
    ("198.18.20.1:65535", "198.18.20.1", "198.18.20.1", (65535, 65535)),
    ("198.18.20.1:1024-2048", "198.18.20.1", "198.18.20.1", (1024, 2048)),
    ("198.18.20.1:80-80", "198.18.20.1", "198.18.20.1", (80, 80)),
    ("198.18.20.1-198.18.20.9", "198.18.20.1", "198.18.20.9", None),
    ("198.18.20.1-198.18.20.1", "198.18.20.1", "198.18.20.1", None),
    ("198.18.20.1-198.18.20.9:80", "198.18.20.1", "198.18.20.9", (80, 80)),
    ("fd00:20::1", "fd00:20::1", "fd00:20::1", None),
    ("[fd00:20::1]", "fd00:20::1", "fd00:20::1", None),
    ("[fd00:20::1]:80", "fd00:20::1", "fd00:20::1", (80, 80)),
    ("[fd00:20::1-fd00:20::9]:80-90", "fd00:20::1", "fd00:20::9", (80, 90)),
    ("fd00:20::1-fd00:20::9", "fd00:20::1", "fd00:20::9", None),
])
def test_dnat_and_snat_targets(to, lo, hi, port):
    for kind in ("dnat", "snat"):
        n = nat(kind=kind, proto="tcp", to=to)
        assert n.to.lo == ipaddress.ip_address(lo)
        assert n.to.hi == ipaddress.ip_address(hi)
        assert n.to.port == (PortRange(*port) if port else None)
        assert nat(**n.to_toml()) == n


@pytest.mark.parametrize("to, fragment", [
    ("198.18.20.1:65536", "out of range"),
    ("198.18.20.1:81-80", "empty range"),
    ("198.18.20.9-198.18.20.1", "empty range"),
    ("fd00:20::9-fd00:20::1", "empty range"),
    ("198.18.20.1-fd00::1", "mixes IPv4 and IPv6"),
    ("198.18.20.0/24", "not a prefix"),
    ("198.18.20.1:", "is not an address or"),
    ("198.18.20.1:http", "is not a port"),
    ("fd00::1%eth0", "zone"),
    ("[198.18.20.1]:80", "only IPv6"),
    ("[fd00::1]80", "is not \"[address]:port\""),
    ("fd00::1]:80", "is not \"[address]:port\""),
    ("nowhere", "is not an IPv4 or IPv6 address"),
    ("host:80", "is not an address"),
    (" 198.18.20.1", "spaces"),
    ("", "spaces"),
    ("198.18.20.1-198.18.20.2-198.18.20.3", "range"),
])
def test_bad_targets(to, fragment):
    refused("to", fragment, kind="dnat", proto="tcp", to=to)


def test_to_is_checked_against_kind():
    refused("to", "is required for dnat", kind="dnat")
    refused("to", "is required for snat", kind="snat")
    refused("to", "use kind = \"snat\"", kind="masquerade", to="198.18.0.1")
    refused("to", "redirect takes a port", kind="redirect", proto="tcp", to="198.18.0.1")
    refused("to", "redirect takes a port", kind="redirect", proto="tcp", to="198.18.0.1:80")
    refused("to", "not an address string", kind="dnat", to=80)
    assert nat(kind="masquerade").to is None
    assert nat(kind="redirect").to is None            # keeps the destination port
    assert nat(kind="redirect", proto="tcp", to=3128).to == NatTarget(port=PortRange(3128, 3128))
    assert nat(kind="redirect", proto="udp", to="5000-5010").to.port == PortRange(5000, 5010)
    assert nat(kind="redirect", proto="tcp", to=65535).to.port == PortRange(65535, 65535)
    refused("to", "out of range", kind="redirect", proto="tcp", to=65536)
    refused("to", "needs proto", kind="redirect", to=3128)
    refused("to", "needs proto", kind="dnat", to="198.18.0.1:80")
    assert nat(kind="dnat", to="198.18.0.1").to.port is None  # an address alone needs no proto


def test_the_target_family_narrows_the_entry():
    assert nat(kind="dnat", to="198.18.0.1").families == (Family.IP,)
    assert nat(kind="dnat", to="fd00::1").families == (Family.IP6,)
    assert nat(kind="masquerade").families == (Family.IP, Family.IP6)
    refused("to", "IPv6 address but", kind="snat", src="198.18.0.0/24", to="fd00::1")
    refused("to", "IPv4 address but", kind="dnat", family="ip6", to="198.18.0.1")
    refused("to", "IPv4 address but", kind="dnat", proto="icmpv6", to="198.18.0.1")
    refused("dst", "can never match", kind="masquerade", src="198.18.0.0/24", dst="fd00::/64")


# ---- the match keys are the rule's -------------------------------------------------------------

def test_match_keys_take_the_rules_values_and_errors():
    n = nat(kind="dnat", iif=["eth0", "wan*"], proto="tcp", src="@blocked", dport=[80, "8000-8080"],
            to="198.18.0.1")
    assert n.dport == (PortRange(80, 80), PortRange(8000, 8080))
    refused("dport", "out of range 0-65535", kind="dnat", proto="tcp", dport=65536, to="198.18.0.1")
    assert nat(kind="dnat", proto="tcp", dport=65535, to="198.18.0.1").dport[0].hi == 65535
    refused("dport", "ports need proto", kind="dnat", dport=80, to="198.18.0.1")
    refused("src", "host bits set", kind="masquerade", src="198.18.0.1/24")
    refused("iif", "not an interface name", kind="dnat", iif="a" * 16, to="198.18.0.1")
    assert nat(kind="dnat", iif="a" * 15, to="198.18.0.1").iif == ("a" * 15,)
    refused("proto", "unknown value", kind="masquerade", proto="sctp")
    refused("icmp_type", "needs proto", kind="masquerade", icmp_type="echo-request")
    refused("kind", "unknown value 'nat'", kind="nat")
    refused("kind", "is required", src="198.18.0.0/24")
    refused("id", "must be 1-64", kind="masquerade", id="-bad")
    refused("comment", "control characters", kind="masquerade", comment="a\nb")


def test_state_and_limit_are_refused_with_the_reason():
    refused("state", "first packet of each flow", kind="masquerade", state="new")
    refused("limit", "first packet of each flow", kind="masquerade", limit="1/second")
    refused("dprot", "unknown key", kind="masquerade", dprot=80)


def test_hooks_by_kind_and_interfaces_by_hook():
    assert nat(kind="dnat", hook="output", to="198.18.0.1").hook is Hook.OUTPUT
    assert nat(kind="redirect", hook="output").priority == -100
    assert nat(kind="dnat", hook="prerouting", to="198.18.0.1").to_toml().get("hook") is None
    assert nat(kind="dnat", hook="output", to="198.18.0.1").to_toml()["hook"] == "output"
    refused("hook", "snat runs at postrouting", kind="snat", hook="prerouting", to="198.18.0.1")
    refused("hook", "masquerade runs at postrouting", kind="masquerade", hook="input")
    refused("hook", "dnat runs at prerouting or output", kind="dnat", hook="postrouting",
            to="198.18.0.1")
    refused("iif", "no input interface", kind="masquerade", iif="eth0")
    refused("iif", "no input interface", kind="dnat", hook="output", iif="eth0", to="198.18.0.1")
    refused("oif", "not known before routing", kind="dnat", oif="eth0", to="198.18.0.1")
    assert nat(kind="dnat", hook="output", oif="eth0", to="198.18.0.1").oif == ("eth0",)
    assert nat(kind="masquerade", oif="eth0").oif == ("eth0",)


def test_generated_ids_are_stable_and_not_written_back():
    a = nat(kind="masquerade", oif="eth0")
    assert a.id.startswith("nat-masquerade-") and not a.explicit_id
    assert "id" not in a.to_toml()
    assert nat(kind="masquerade", oif="eth0", comment="x").id == a.id
    assert nat(kind="masquerade", oif="eth1").id != a.id


# ---- in the ruleset and the config file --------------------------------------------------------

def test_ids_are_unique_across_rules_and_nats():
    text = '[[rule]]\nid = "web"\naction = "accept"\n\n[[nat]]\nid = "web"\nkind = "masquerade"\n'
    with pytest.raises(NatError) as info:
        parse_config(text, "c.toml")
    assert str(info.value) == ("c.toml:5: nat 'web': field 'id': is used by more than one rule "
                               "or NAT entry; ids must be unique")
    two = '[[nat]]\nid = "a"\nkind = "masquerade"\n[[nat]]\nid = "a"\nkind = "masquerade"\n'
    with pytest.raises(NatError, match=r"^c.toml:4: "):
        parse_config(two, "c.toml")


def test_set_references_must_be_defined_and_are_created():
    with pytest.raises(NatError, match="set 'lan' is not defined"):
        parse_config('[[nat]]\nkind = "masquerade"\nsrc = "@lan"\n', "c.toml")
    rs = parse_config('[[set]]\nname = "lan"\n[[nat]]\nkind = "masquerade"\nsrc = "@lan"\n', "c")
    assert rs.set_names() == ["lan"]
    assert parse_config('[[nat]]\nkind = "masquerade"\nsrc = "@blocked"\n', "c").set_names() == [
        "blocked"]


def test_config_errors_carry_the_line_of_their_nat():
    text = ('[policy]\ninput = "drop"\n\n[[nat]]\nkind = "masquerade"\n\n'
            '[[nat]]\n# second\nkind = "dnat"\nto = "198.18.0.1:80"\n')
    with pytest.raises(NatError) as info:
        parse_config(text, "c.toml")
    assert info.value.line == 7 and str(info.value).startswith("c.toml:7: nat '#2': field 'to'")
    with pytest.raises(NatError, match=r"^c.toml: nat: field 'nat'|must be written as"):
        parse_config('nat = "x"\n', "c.toml")
    with pytest.raises(RuleError, match="must be written as"):
        parse_config('nat = ["x"]\n', "c.toml")


def test_unknown_top_level_keys_name_nat():
    with pytest.raises(RuleError.__mro__[1], match=r"\[\[nat\]\]"):
        parse_config('[[nats]]\nkind = "masquerade"\n', "c.toml")


# ---- round trip ---------------------------------------------------------------------------------

v4 = st.builds(lambda a, n: str(ipaddress.ip_network(f"198.18.{a >> 8}.{a & 255}/{n}",
                                                     strict=False)),
               st.integers(0, 511), st.integers(15, 32))
v4_addr = st.builds(lambda a: f"198.18.{a >> 8}.{a & 255}", st.integers(0, 511))
v6_addr = st.builds(lambda a: f"fd00:{a:x}::1", st.integers(0, 2**16 - 1))
port_text = st.one_of(st.integers(0, 65535).map(str), st.tuples(
    st.integers(0, 65535), st.integers(0, 65535)).map(lambda t: f"{min(t)}-{max(t)}"))


@st.composite
def nat_tables(draw):
    kind = draw(st.sampled_from(list(NatKind)))
    table = {"kind": kind.value}
    if draw(st.booleans()):
        table["id"] = draw(st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,20}\Z"))
    hook = draw(st.sampled_from(kind.hooks))
    if hook is not kind.hooks[0] or draw(st.booleans()):
        table["hook"] = hook.value
    proto = draw(st.sampled_from(["tcp", "udp", "any"]))
    if proto != "any":
        table["proto"] = proto
        if draw(st.booleans()):
            table["dport"] = draw(st.integers(0, 65535))
    family = draw(st.sampled_from(["ip", "ip6"]))
    if family == "ip" and draw(st.booleans()):
        table["src"] = draw(v4)
    if hook is Hook.PREROUTING and draw(st.booleans()):
        table["iif"] = "wan0"
    if hook is not Hook.PREROUTING and draw(st.booleans()):
        table["oif"] = ["wan0", "wan1"]
    port = draw(port_text) if proto != "any" and draw(st.booleans()) else None
    if kind is NatKind.REDIRECT and port is not None:
        table["to"] = int(port) if port.isdigit() else port
    elif kind in (NatKind.SNAT, NatKind.DNAT):
        if family == "ip":
            addr = draw(v4_addr)
            table["to"] = addr + (f":{port}" if port else "")
        else:
            addr = draw(v6_addr)
            table["to"] = f"[{addr}]:{port}" if port else addr
            table.pop("src", None)
    return table


@settings(max_examples=300, deadline=None)
@given(nat_tables())
def test_round_trip(table):
    n = Nat.from_toml(table)
    again = Nat.from_toml(n.to_toml())
    assert again == n
    assert n.families


@pytest.mark.parametrize("hook, priority, refused_here", [
    ("prerouting", -100, True), ("prerouting", -101, False), ("prerouting", -99, False),
    ("output", -100, True), ("output", -99, False),
    ("postrouting", 100, True), ("postrouting", 99, False), ("postrouting", 101, False),
    ("input", -100, False), ("forward", 100, False), ("postrouting", -100, False),
])
def test_filter_rules_at_the_nat_priorities_are_refused_while_nat_is_configured(
        hook, priority, refused_here):
    rule = f'[[rule]]\nid = "r"\nhook = "{hook}"\npriority = {priority}\naction = "accept"\n'
    parse_config(rule, "c.toml")  # without NAT, any priority
    text = rule + '\n[[nat]]\nkind = "masquerade"\n'
    if not refused_here:
        assert parse_config(text, "c.toml").rules[0].priority == priority
        return
    with pytest.raises(RuleError) as info:
        parse_config(text, "c.toml")
    assert info.value.rule == "r" and info.value.field == "priority"
    assert "where the kernel runs NAT" in str(info.value) and info.value.line == 1


def test_match_rule_carries_the_matches_narrowed_by_to():
    n = nat(id="w", kind="dnat", iif="wan0", proto="tcp", dport=8080, to="198.18.0.1:80")
    r = n.match_rule()
    assert (r.id, r.hook, r.priority, r.family, r.iif) == ("w", Hook.PREROUTING, -100,
                                                           Family.IP, ("wan0",))
    assert r.dport == n.dport and not r.action.decides
    assert nat(kind="masquerade").match_rule().families == (Family.IP, Family.IP6)
    assert n.match_dict() == {"proto": "tcp", "dport": 8080, "iif": "wan0"}
