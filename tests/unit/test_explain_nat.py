"""explain with [[nat]]: DNAT before routing, SNAT after, first packets only; the routing
decision from route answers; the cut of an unroutable packet."""

from __future__ import annotations

import errno
import ipaddress

from minifw.engine.explain import Probe, explain
from minifw.engine.route import decide, unroutable
from minifw.model import Ruleset
from minifw.model.types import Hook
from minifw.netlink.route import RouteAnswer

BASE = {
    "policy": {"forward": "drop"},
    "nat": [
        {"id": "masq-lan", "kind": "masquerade", "src": "198.18.20.0/24", "oif": "wan"},
        {"id": "web-forward", "kind": "dnat", "iif": "wan", "proto": "tcp", "dport": 8080,
         "to": "198.18.20.1:80"},
        {"id": "web6", "kind": "dnat", "iif": "wan", "proto": "tcp", "dport": 8080,
         "to": "[fd00:20::1]:80"},
    ],
    "rule": [{"id": "to-web", "hook": "forward", "proto": "tcp", "dport": 80,
              "action": "drop"},
             {"id": "seen-8080", "hook": "prerouting", "priority": 10, "proto": "tcp",
              "dport": 8080, "action": "drop"}],
}


def ruleset(**changes) -> Ruleset:
    data = {**BASE, **changes}
    return Ruleset.from_toml(data)


def probe(**kw) -> Probe:
    args = dict(proto="tcp", src="198.18.30.5", dst="198.18.10.2", dport=8080, iif="wan",
                path="forward", oif="lan")
    args.update(kw)
    return Probe.describe(**args)


def test_dnat_runs_before_the_filter_chains_after_it():
    rs = ruleset(rule=[BASE["rule"][1]])
    e = explain(rs, probe())
    steps = [(s.hook, s.priority, s.kind, s.name, s.result) for s in e.trace]
    assert steps[0] == (Hook.PREROUTING, -100, "nat", "web-forward", "translate")
    # the prerouting rule at 10 sees dport 80, not 8080
    assert steps[1][:4] == (Hook.PREROUTING, 10, "rule", "seen-8080")
    assert steps[1][4] == "no match"
    assert e.translations[0].describe() == "dst 198.18.10.2:8080 -> 198.18.20.1:80"
    assert (str(e.packet.dst), e.packet.dport) == ("198.18.20.1", 80)
    assert (str(e.probe.dst), e.probe.dport) == ("198.18.10.2", 8080)  # as it came


def test_a_filter_chain_before_dnat_sees_the_original_packet():
    rule = {**BASE["rule"][1], "priority": -150}
    e = explain(ruleset(rule=[rule]), probe())
    assert (e.verdict, e.rule, e.priority) == ("drop", "seen-8080", -150)
    assert not e.translations


def test_a_port_forward_opens_its_own_path_but_a_forward_drop_still_drops():
    e = explain(ruleset(rule=[]), probe())
    assert (e.verdict, e.decided_by) == ("accept", "policy")
    assert e.trace[-2].name == "ct status dnat" and e.trace[-2].result == "accept"
    e = explain(ruleset(), probe())
    assert (e.verdict, e.rule) == ("drop", "to-web")
    # not translated (another port): the policy's dnat accept does not apply
    e = explain(ruleset(rule=[]), probe(dport=8081))
    assert (e.verdict, e.decided_by) == ("drop", "policy")
    dnat_step = next(s for s in e.trace if s.name == "ct status dnat")
    assert not dnat_step.matched


def test_snat_runs_at_postrouting_with_the_address_the_caller_gives():
    rs = ruleset(rule=[], policy={})
    p = probe(src="198.18.20.7", dst="198.18.40.1", dport=443, iif="lan", oif="wan")
    e = explain(rs, p, address_of=lambda ifname, v: ipaddress.ip_address("198.18.10.2")
                if ifname == "wan" else None)
    (t,) = e.translations
    assert (t.nat, t.hook, t.priority, t.first_packet) == ("masq-lan", Hook.POSTROUTING, 100,
                                                           True)
    assert str(e.packet.src) == "198.18.10.2" and e.packet.sport == p.sport
    # without it, the address is named, and the packet's source stays
    e = explain(rs, p)
    assert e.translations[0].describe() == \
        "src 198.18.20.7:40000 -> the address of wan, port 40000"
    assert e.packet.src == p.src


def test_only_the_first_packet_meets_the_nat_rules():
    rs = ruleset(rule=[], policy={})
    e = explain(rs, probe(state="established"))
    (t,) = e.translations
    assert not t.first_packet          # its counter does not move
    step = next(s for s in e.trace if s.kind == "nat")
    assert not step.matched and "conntrack" in step.note
    assert e.packet.dport == 80        # but the packet follows its flow's translation
    # an established packet of a flow that was not translated: the chain does not run
    e = explain(rs, probe(dport=22, state="established"))
    assert [s.result for s in e.trace if s.kind == "nat"] == ["not run", "not run"]
    # untracked and invalid packets are never translated
    for state in ("untracked", "invalid"):
        e = explain(rs, probe(state=state))
        assert not e.translations


def test_ipv6_takes_the_ipv6_entry():
    e = explain(ruleset(rule=[]), probe(src="fd00:30::5", dst="fd00:10::2"))
    assert e.translations[0].nat == "web6"
    assert e.translations[0].describe() == "dst [fd00:10::2]:8080 -> [fd00:20::1]:80"


def test_route_decisions():
    dst = ipaddress.ip_address("198.18.1.2")
    assert decide(RouteAnswer("local", 1), "lo", dst, arriving=True).path == "in"
    fwd = decide(RouteAnswer("unicast", 3, ipaddress.ip_address("198.18.1.1")), "s0", dst,
                 arriving=True)
    assert (fwd.path, fwd.oif) == ("forward", "s0") and "via 198.18.1.1" in fwd.text
    out = decide(RouteAnswer("unicast", 3), "s0", dst, arriving=False)
    assert (out.path, out.oif) == ("out", "s0")
    assert decide(RouteAnswer("local", 1), "lo", dst, arriving=False).path == "out"
    none = decide(RouteAnswer(errno=errno.ENETUNREACH), None, dst, arriving=True)
    assert none.path is None and "ENETUNREACH" in none.text
    assert decide(RouteAnswer("blackhole"), None, dst, arriving=True).path is None


def test_an_unroutable_packet_stops_after_prerouting():
    rs = Ruleset.from_toml({"rule": [
        {"id": "pre", "hook": "prerouting", "proto": "tcp", "action": "accept"},
        {"id": "in-drop", "hook": "input", "proto": "tcp", "action": "drop"}]})
    p = Probe.describe(proto="tcp", src="198.18.30.5", dst="198.18.99.9", dport=80, iif="wan")
    routing = decide(RouteAnswer(errno=errno.EHOSTUNREACH), None, p.dst, arriving=True)
    e = unroutable(explain(rs, p), routing)
    assert (e.verdict, e.decided_by, e.hook) == ("drop", "routing", Hook.PREROUTING)
    assert [s.name for s in e.trace] == ["pre", "route lookup"]
    # a drop before routing stays that drop
    rs = Ruleset.from_toml({"rule": [{"id": "pre", "hook": "prerouting", "action": "drop"}]})
    e = unroutable(explain(rs, p), routing)
    assert (e.verdict, e.rule) == ("drop", "pre")


def test_the_text_trace_shows_each_translation(tmp_path):
    from click.testing import CliRunner
    import tomlkit

    from minifw.cli.main import cli

    cfg = tmp_path / "router.toml"
    cfg.write_text(tomlkit.dumps({"policy": {"forward": "drop"}, "nat": BASE["nat"]}))
    res = CliRunner().invoke(cli, ["explain", "-c", str(cfg), "--proto", "tcp", "--src",
                                   "198.18.30.5", "--dst", "198.18.10.2", "--dport", "8080",
                                   "--iif", "wan", "--path", "forward", "--oif", "lan"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == ("accept: the packet is forwarded; the forward drop policy let it pass "
                        "(ct status dnat)")
    assert "nat: prerouting/-100 web-forward (dnat): dst 198.18.10.2:8080 -> 198.18.20.1:80" \
        in lines
    assert lines[lines.index("trace:") + 1].split() == \
        ["prerouting/-100", "nat", "web-forward:", "dst", "198.18.10.2:8080", "->",
         "198.18.20.1:80"]
    assert lines[2].startswith("route: no route lookup was made")
