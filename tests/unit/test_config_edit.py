"""`add` and `delete` edit the config text with tomlkit: comments and layout survive."""

import tomllib

from hypothesis import given, settings, strategies as st

from minifw.model import Rule, add_rule_text, delete_rule_text, parse_config

TEXT = """\
# minifw on the lab host.
# Two rules and a policy.

[policy]
input = "drop"   # default deny

# Web, from anywhere.
[[rule]]
id = "web"       # the id scripts use
proto = "tcp"
dport = [80, 443]
action = "accept"

# Admins only.
[[rule]]
id = "ssh"
proto = "tcp"
src = "198.18.4.0/24"
dport = 22
action = "accept"
"""

COMMENTS = [line for line in TEXT.splitlines() if "#" in line]


def ids(text):
    return [r.id for r in parse_config(text, "t.toml").rules]


def test_add_at_the_end_and_before_a_rule_keeps_comments():
    new = Rule.from_toml({"id": "dns", "proto": "udp", "dport": 53, "action": "accept"})
    at_end = add_rule_text(TEXT, new, None)
    assert ids(at_end) == ["web", "ssh", "dns"]
    before = add_rule_text(TEXT, new, "ssh")
    assert ids(before) == ["web", "dns", "ssh"]
    for text in (at_end, before):
        for line in COMMENTS:
            assert line in text
        assert text.startswith(TEXT.split("# Web")[0])   # the head of the file is untouched


def test_add_before_a_rule_goes_above_that_rules_comment():
    new = Rule.from_toml({"id": "dns", "proto": "udp", "dport": 53, "action": "accept"})
    out = add_rule_text(TEXT, new, "ssh")
    assert out.index('id = "dns"') < out.index("# Admins only.") < out.index('id = "ssh"')
    first = add_rule_text(TEXT, new, "web")
    assert first.index("default deny") < first.index('id = "dns"') < first.index("# Web, from")
    assert first.index("# Web, from") < first.index('id = "web"')


def test_comments_opening_the_file_stay_on_top():
    text = '# my firewall\n[[rule]]\nid = "a"\naction = "accept"\n'
    out = add_rule_text(text, Rule.from_toml({"id": "b", "action": "drop"}), "a")
    assert out.startswith("# my firewall\n[[rule]]\nid = \"b\"") and ids(out) == ["b", "a"]


def test_add_to_a_file_without_rules():
    text = "# empty for now\n[policy]\ninput = \"drop\"\n"
    out = add_rule_text(text, Rule.from_toml({"id": "a", "action": "accept"}), None)
    assert out.startswith(text) and ids(out) == ["a"]


def test_add_then_delete_gives_the_file_back():
    new = Rule.from_toml({"id": "dns", "proto": "udp", "dport": 53, "action": "accept"})
    for before in (None, "web", "ssh"):
        assert delete_rule_text(add_rule_text(TEXT, new, before), "dns") == TEXT


def test_delete_keeps_every_other_comment():
    first = delete_rule_text(TEXT, "web")
    assert ids(first) == ["ssh"]
    assert "# Admins only." in first and "# Web, from anywhere." in first
    assert "the id scripts use" not in first     # the deleted rule's own inline comment goes
    last = delete_rule_text(TEXT, "ssh")
    assert ids(last) == ["web"] and "# Admins only." in last
    both = delete_rule_text(first, "ssh")
    assert ids(both) == [] and tomllib.loads(both)["policy"] == {"input": "drop"}
    for line in COMMENTS:
        if "id scripts" not in line:
            assert line in both


def test_delete_an_idless_rule_by_its_generated_id():
    text = TEXT + '\n[[rule]]\nproto = "icmp"\naction = "drop"\n'
    generated = parse_config(text, "t.toml").rules[-1].id
    assert delete_rule_text(text, generated) == TEXT + "\n"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), min_size=1, max_size=6),
       st.data())
def test_delete_any_rule_keeps_the_others_and_their_comments(layout, data):
    parts = ["# head\n"]
    for i, (blank, ncomments) in enumerate(layout):
        if blank:
            parts.append("\n")
        parts.extend(f"# about r{i} ({j})\n" for j in range(ncomments))
        parts.append(f'[[rule]]\nid = "r{i}"   # inline r{i}\ndport = {i}\nproto = "tcp"\n'
                     f'action = "drop"\n')
    text = "".join(parts)
    victim = data.draw(st.integers(0, len(layout) - 1))
    out = delete_rule_text(text, f"r{victim}")
    assert ids(out) == [f"r{i}" for i in range(len(layout)) if i != victim]
    for line in text.splitlines():
        if line.startswith("#"):
            assert line in out
    assert f"inline r{victim}" not in out
