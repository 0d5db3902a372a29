"""`nat add / delete / list` on the fake kernel (no root): incremental edits that leave the
live table exactly as a fresh load of the edited config would, the config written back with
its comments, runtime-only entries, and one-line errors."""

from __future__ import annotations

import pytest

from minifw.app.nat import NatService
from minifw.compile import nat as natc
from minifw.compile import nft as compiler
from minifw.errors import ConfigError, RuleError
from minifw.model import parse_config


ROUTER = """\
# the router of the lab
[policy]
forward = "drop"
input = "drop"

[[rule]]
id = "lan-out"
hook = "forward"
iif = "veth-lan"
action = "accept"

# the LAN goes out with the WAN address
[[nat]]
id = "masq-lan"
kind = "masquerade"
src = "198.18.20.0/24"
oif = "veth-wan"   # the uplink
"""

FORWARD = {"id": "web", "kind": "dnat", "iif": "veth-wan", "proto": "tcp", "dport": 8080,
           "to": "198.18.20.1:80"}


@pytest.fixture
def router(lab):
    lab.config.write_text(ROUTER)
    lab.rules.up(str(lab.config))
    return lab


def in_sync_with(lab, text: str) -> bool:
    return lab.kernel.declarative_layout() == compiler.expected_layout(
        compiler.build_load(parse_config(text, "x")))


def test_up_loads_the_nat_chains_and_is_then_in_sync(router):
    assert in_sync_with(router, ROUTER)
    assert "nat_postrouting" in router.kernel.objects()[0]
    again = router.rules.up(str(router.config))
    assert not again.changed


def test_add_then_delete_a_port_forward(router):
    nat = NatService(router.rules)
    added = nat.add(dict(FORWARD), runtime=False)
    assert added.id == "web" and added.saved_to == str(router.config)
    text = router.config.read_text()
    assert "# the LAN goes out with the WAN address" in text and "# the uplink" in text
    assert text.rstrip().endswith('to = "198.18.20.1:80"')
    assert in_sync_with(router, text)            # the policy accept went first, too
    layout = router.kernel.declarative_layout()
    assert layout["forward_policy"][0] == natc.ACCEPT_COMMENT
    assert natc.ACCEPT_COMMENT not in layout["input_policy"]
    listed = nat.list()
    assert [n.id for n in listed.nats] == ["masq-lan", "web"]
    assert listed.nats[1].to_json() == {
        "id": "web", "kind": "dnat", "hook": "prerouting", "priority": -100,
        "match": {"proto": "tcp", "dport": 8080, "iif": "veth-wan"}, "to": "198.18.20.1:80",
        "comment": None, "packets": 0, "bytes": 0, "runtime": False}

    deleted = nat.delete("web", runtime=False)
    assert deleted.saved_to == str(router.config)
    assert router.config.read_text() == ROUTER
    assert in_sync_with(router, ROUTER)
    assert "nat_prerouting" not in router.kernel.objects()[0]
    assert natc.ACCEPT_COMMENT not in router.kernel.declarative_layout()["forward_policy"]


def test_the_accept_stays_while_another_port_forward_needs_it(router):
    nat = NatService(router.rules)
    nat.add(dict(FORWARD), runtime=False)
    nat.add({**FORWARD, "id": "web6", "to": "[fd00:20::1]:80"}, runtime=False)
    nat.delete("web", runtime=False)
    assert router.kernel.declarative_layout()["forward_policy"][0] == natc.ACCEPT_COMMENT
    assert in_sync_with(router, router.config.read_text())


def test_a_redirect_opens_input(router):
    nat = NatService(router.rules)
    nat.add({"id": "proxy", "kind": "redirect", "proto": "tcp", "dport": 80, "to": 3128},
            runtime=False)
    assert router.kernel.declarative_layout()["input_policy"][0] == natc.ACCEPT_COMMENT
    assert in_sync_with(router, router.config.read_text())


def test_runtime_entries_leave_the_config_alone(router):
    nat = NatService(router.rules)
    assert nat.add(dict(FORWARD), runtime=True).saved_to is None
    assert router.config.read_text() == ROUTER
    assert [n.runtime for n in nat.list().nats] == [False, True]
    assert nat.delete("web", runtime=False).saved_to is None  # not in the file: nothing to cut
    assert router.config.read_text() == ROUTER
    assert [n.id for n in nat.list().nats] == ["masq-lan"]


def test_errors_are_one_line_and_change_nothing(router):
    nat = NatService(router.rules)
    before = router.snapshot()
    with pytest.raises(RuleError, match=r"^minifw nat add: nat 'web': field 'to': a port needs"):
        nat.add({**FORWARD, "proto": None, "dport": None}, runtime=False)
    with pytest.raises(RuleError, match=r"ids must be unique"):
        nat.add({**FORWARD, "id": "lan-out"}, runtime=False)
    with pytest.raises(RuleError, match=r"^minifw nat delete: nat 'nope': field 'id': no such"):
        nat.delete("nope", runtime=False)
    assert router.snapshot() == before


def test_a_rule_at_a_nat_priority_is_refused_by_add(router):
    with pytest.raises(ConfigError, match="where the kernel runs NAT"):
        router.rules.add({"id": "x", "hook": "postrouting", "priority": 100,
                          "action": "accept"}, None, False)


def test_list_before_up_is_empty(lab):
    assert NatService(lab.rules).list().nats == ()


@pytest.mark.parametrize("hook, priority, clash", [
    ("prerouting", -100, True), ("prerouting", -99, False), ("output", -100, True),
    ("postrouting", 100, True), ("postrouting", 101, False), ("input", -100, False),
])
def test_hook_functions_at_the_nat_priorities_are_refused(tmp_path, hook, priority, clash):
    from minifw.runners.supervise import validate
    f = tmp_path / "h.py"
    f.write_text("from minifw import hook, ACCEPT\n"
                 f"@hook('{hook}', priority={priority})\ndef h(pkt):\n    return ACCEPT\n")
    validate([str(f)], parse_config("", "t"))     # no NAT: any priority
    with_nat = parse_config('[[nat]]\nkind = "masquerade"\n', "t")
    if not clash:
        validate([str(f)], with_nat)
        return
    with pytest.raises(ConfigError, match=f"NAT.*both at {hook} priority {priority};") as info:
        validate([str(f)], with_nat)
    assert "original or the translated address" in str(info.value)


def test_status_names_a_foreign_nat_chain_for_what_it_does():
    from minifw.app.results.rules import ForeignChain
    chains = [{"family": "ip", "table": "handmade", "name": "post", "hook": "postrouting",
               "prio": 100, "type": "nat"},
              {"family": "ip", "table": "filter", "name": "FWD", "hook": "forward", "prio": 0,
               "type": "filter"},
              {"family": "inet", "table": "minifw", "name": "nat_postrouting",
               "hook": "postrouting", "prio": 100, "type": "nat"}]
    found = ForeignChain.select(chains, {"postrouting", "forward"})
    assert [f.table for f in found] == ["handmade", "filter"]    # never minifw's own
    assert found[0].warning().startswith("table ip handmade has nat base chain post at "
                                         "postrouting priority 100: it translates addresses")
    assert found[1].warning().endswith("has base chain FWD at forward priority 0: it can drop "
                                       "what minifw accepts")


def test_status_calls_minifws_nat_chains_nat(router):
    st = router.rules.status()
    assert {c.chain: c.kind for c in st.chains}["nat_postrouting"] == "nat"
    assert not st.warnings and not st.foreign_chains


def test_check_prints_the_nat_entries(tmp_path, capsys, no_real_kernel):
    from minifw.cli.main import run
    config = tmp_path / "router.toml"
    config.write_text(ROUTER + '\n[[nat]]\nid = "web"\nkind = "dnat"\nproto = "tcp"\n'
                               'dport = 8080\nto = "[fd00:20::1]:80"\n')
    assert run(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "nat at postrouting priority 100: masq-lan " in out
    assert "src=198.18.20.0/24 oif=veth-wan -> masquerade\n" in out
    assert out.count("nat at ") == 2 and "-> dnat to [fd00:20::1]:80\n" in out
