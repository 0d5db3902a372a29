"""The rule-level diff (model/diff.py): added, removed, changed, moved, sections."""

import pytest

from minifw.model import parse_config
from minifw.model.diff import diff_rulesets

pytestmark = pytest.mark.timeout(60)


def rs(*rules: str, head: str = ""):
    return parse_config(head + "".join(f"[[rule]]\n{r}\n" for r in rules), "t.toml")


WEB = 'id = "web"\nproto = "tcp"\ndport = 80\naction = "accept"'
DNS = 'id = "dns"\nproto = "udp"\ndport = 53\naction = "accept"'
SSH = 'id = "ssh"\nproto = "tcp"\ndport = 22\naction = "accept"'


def test_equal_rulesets_are_the_same():
    d = diff_rulesets(rs(WEB, DNS), rs(WEB, DNS))
    assert d.same and (d.added, d.removed, d.changed, d.moved, d.sections) == ((),) * 5


def test_nothing_loaded_adds_every_rule_and_section():
    d = diff_rulesets(None, rs(WEB, DNS, head='[policy]\ninput = "drop"\n'))
    assert d.added == ("web", "dns") and d.sections == ("policy",) and not d.same
    assert diff_rulesets(None, rs()).same  # an empty config on nothing loaded changes nothing


def test_added_removed_changed_by_id():
    d = diff_rulesets(rs(WEB, DNS), rs(WEB.replace("80", "8080"), SSH))
    assert d.added == ("ssh",) and d.removed == ("dns",)
    (c,) = d.changed
    assert c.id == "web" and c.live["dport"] == 80 and c.wanted["dport"] == 8080
    assert d.moved == () and d.sections == ()


def test_order_within_a_chain_is_a_change_an_insertion_is_not():
    assert diff_rulesets(rs(WEB, DNS), rs(DNS, WEB)).moved == ("input/0",)
    d = diff_rulesets(rs(WEB, DNS), rs(SSH, WEB, DNS))
    assert d.moved == () and d.added == ("ssh",)
    # other chains keep their own order: a rule at priority 5 before one at 0 moves nothing
    web5 = WEB + "\npriority = 5"
    assert diff_rulesets(rs(DNS, web5), rs(web5, DNS)).same


def test_policy_and_sets_are_named_as_sections():
    live = rs(WEB)
    d = diff_rulesets(live, rs(WEB, head='[policy]\ninput = "drop"\n'))
    assert d.sections == ("policy",) and not d.added
    sets = "[[set]]\nname = \"allow\"\n\n"
    assert diff_rulesets(live, rs(WEB, head=sets)).sections == ("set",)
