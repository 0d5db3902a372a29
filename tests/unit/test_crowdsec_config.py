"""[crowdsec]: keys, defaults, errors with file and line, the implicit set and drop rule, and
the key file's mode."""

import os

import pytest

from minifw.compile.nft import build_load
from minifw.errors import ConfigError
from minifw.fleet.lapi import read_secret
from minifw.model.config import parse_config
from minifw.model.crowdsec import CROWDSEC_RULE, CrowdsecConfig
from minifw.model.ruleset import Ruleset

BASE = '[crowdsec]\nurl = "http://198.18.30.1:8080"\nkey_file = "/etc/minifw/crowdsec.key"\n'


def test_defaults_and_round_trip():
    rs = parse_config(BASE, "f.toml")
    assert rs.crowdsec == CrowdsecConfig("http://198.18.30.1:8080", "/etc/minifw/crowdsec.key",
                                         "crowdsec", 10, False, None, None)
    assert Ruleset.from_toml(rs.to_toml()) == rs
    assert "rule" not in rs.to_toml()            # the implicit rule is not written back


def test_the_set_is_implicit_and_dropped_at_prerouting():
    rs = parse_config(BASE + 'set = "cs"\n\n[[rule]]\nid = "a"\nsrc = "@cs"\naction = "drop"\n',
                      "f.toml")
    assert rs.set_names() == ["cs"]
    drop = rs.get(CROWDSEC_RULE)
    assert (drop.hook.value, drop.priority, drop.action.value) == ("prerouting", -350, "drop")
    doc = build_load(rs)["nftables"]
    sets = {c["add"]["set"]["name"]: c["add"]["set"]["flags"] for c in doc
            if "set" in c.get("add", {})}
    assert sets == {"s_cs_v4": ["timeout"], "s_cs_v4net": ["interval", "timeout"],
                    "s_cs_v6": ["timeout"], "s_cs_v6net": ["interval", "timeout"]}
    looked = {e["match"]["right"] for c in doc if "rule" in c.get("add", {})
              and c["add"]["rule"]["chain"] == "prerouting_m350"
              for e in c["add"]["rule"]["expr"] if "match" in e}
    assert looked == {"@s_cs_v4", "@s_cs_v4net", "@s_cs_v6", "@s_cs_v6net"}


def test_a_declared_set_is_kept():
    rs = parse_config(BASE + '\n[[set]]\nname = "crowdsec"\ntimeout = "1h"\n', "f.toml")
    assert rs.get_set("crowdsec").timeout == 3600


def test_without_crowdsec_the_name_is_not_defined():
    with pytest.raises(ConfigError, match="set 'crowdsec' is not defined"):
        parse_config('[[rule]]\nid = "a"\nsrc = "@crowdsec"\naction = "drop"\n', "f.toml")


@pytest.mark.parametrize("extra, line, needle", [
    ('intervl = "5s"\n', 4, "did you mean 'interval'"),
    ('interval = "0s"\n', 4, "longer than zero"),
    ('interval = "nope"\n', 4, "not a duration"),
    ('share = "yes"\n', 4, "true or false"),
    ('share = true\n', 4, "login"),
    ('share = true\nlogin = "h1"\n', 4, "password_file"),
    ('set = "blocked"\n', 4, "minifw's own bans"),
    ('set = "1x"\n', 4, "letters"),
])
def test_errors_name_file_and_line(extra, line, needle):
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + extra, "f.toml")
    assert needle in str(err.value) and str(err.value).startswith(f"f.toml:{line}:")


@pytest.mark.parametrize("text, needle", [
    ('[crowdsec]\nkey_file = "/k"\n', "url"),
    ('[crowdsec]\nurl = "http://198.18.30.1:8080"\n', "key_file"),
    ('[crowdsec]\nurl = "ftp://198.18.30.1"\nkey_file = "/k"\n', "URL"),
    ('[crowdsec]\nurl = "http://a b"\nkey_file = "/k"\n', "URL"),
    ('crowdsec = 3\n', "must be a table"),
    ('[crowdsc]\n', "did you mean 'crowdsec'"),
])
def test_refused_tables(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_config(text, "f.toml")


def test_share_with_login_and_password():
    rs = parse_config(BASE + 'share = true\nlogin = "h1"\npassword_file = "/p"\n', "f.toml")
    assert (rs.crowdsec.share, rs.crowdsec.login) == (True, "h1")
    assert Ruleset.from_toml(rs.to_toml()) == rs


@pytest.mark.parametrize("mode, ok", [(0o600, True), (0o400, True), (0o700, True),
                                      (0o640, False), (0o604, False), (0o610, False),
                                      (0o601, False), (0o644, False)])
def test_key_file_mode(tmp_path, mode, ok):
    key = tmp_path / "crowdsec.key"
    key.write_text("abc123\n")
    os.chmod(key, mode)
    if ok:
        assert read_secret(str(key), "the key file") == "abc123"
    else:
        with pytest.raises(ConfigError, match="readable by group or others") as err:
            read_secret(str(key), "the key file")
        assert "\n" not in str(err.value) and "chmod 600" in str(err.value)


def test_key_file_missing_or_empty(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret(str(tmp_path / "none"), "the key file")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    os.chmod(empty, 0o600)
    with pytest.raises(ConfigError, match="is empty"):
        read_secret(str(empty), "the key file")


def test_the_implicit_rule_id_is_taken():
    with pytest.raises(ConfigError, match="crowdsec\\]'s own drop rule") as err:
        parse_config(BASE + '\n[[rule]]\nid = "crowdsec-bans"\naction = "drop"\n', "f.toml")
    assert str(err.value).startswith("f.toml:5:")


# ---- the drop rule looks up only the backing sets that hold elements ---------------------------

def _lookups(doc, chain):
    return [e["match"]["right"] for c in doc if "rule" in c.get("add", {})
            and c["add"]["rule"]["chain"] == chain
            for e in c["add"]["rule"]["expr"] if "match" in e]


ARMED_CONFIG = BASE + 'set = "cs"\n\n[[rule]]\nid = "a"\nsrc = "@cs"\naction = "drop"\n'


@pytest.mark.parametrize("armed, want", [
    (None, ["@s_cs_v4", "@s_cs_v4net", "@s_cs_v6", "@s_cs_v6net"]),
    (frozenset({(6, False)}), ["@s_cs_v6"]),
    (frozenset({(4, True), (6, False)}), ["@s_cs_v4net", "@s_cs_v6"]),
    (frozenset({(4, False), (4, True), (6, False), (6, True)}),
     ["@s_cs_v4", "@s_cs_v4net", "@s_cs_v6", "@s_cs_v6net"]),
])
def test_the_drop_rule_looks_up_the_armed_backing_sets_only(armed, want):
    import dataclasses
    rs = dataclasses.replace(parse_config(ARMED_CONFIG, "f.toml"), crowdsec_armed=armed)
    doc = build_load(rs)["nftables"]
    assert _lookups(doc, "prerouting_m350") == want
    # a user rule's @cs keeps all four: arming never has to find it
    assert _lookups(doc, "input_0") == ["@s_cs_v4", "@s_cs_v4net", "@s_cs_v6", "@s_cs_v6net"]
    assert dataclasses.replace(rs, crowdsec_armed=None) == rs   # not part of the ruleset's value


def test_nothing_armed_means_no_chain_at_all():
    import dataclasses
    rs = dataclasses.replace(parse_config(BASE, "f.toml"), crowdsec_armed=frozenset())
    doc = build_load(rs)["nftables"]
    assert not any(c.get("add", {}).get("chain", {}).get("name") == "prerouting_m350"
                   for c in doc)
    assert _lookups(doc, "prerouting_m350") == []
    one = dataclasses.replace(rs, crowdsec_armed=frozenset({(4, False)}))
    assert any(c.get("add", {}).get("chain", {}).get("name") == "prerouting_m350"
               for c in build_load(one)["nftables"])


@pytest.mark.parametrize("exists", [True, False])
def test_arming_inserts_the_new_lookups_at_the_head_helpers_first(exists):
    from minifw.compile.nft import build_crowdsec_arm
    rs = parse_config('[events]\ndrops = true\n\n' + BASE, "f.toml")
    cmds = build_crowdsec_arm(rs, frozenset({(6, True), (4, False)}), exists)
    if not exists:
        assert cmds[0]["add"]["chain"]["name"] == "prerouting_m350"
        cmds = cmds[1:]
    assert all("insert" in c and c["insert"]["rule"]["chain"] == "prerouting_m350"
               for c in cmds)
    # each insert goes to the head: the chain then holds them in the reverse of their order
    chain = [c["insert"]["rule"]["comment"] for c in reversed(cmds)]
    assert chain == ["log crowdsec-bans", "crowdsec-bans: CrowdSec decisions (set crowdsec)"] * 2
    rules = [c["insert"]["rule"] for c in reversed(cmds)]
    assert [e["match"]["right"] for r in rules[1::2] for e in r["expr"] if "match" in e] == \
        ["@s_crowdsec_v4", "@s_crowdsec_v6net"]
    assert build_crowdsec_arm(rs, frozenset(), exists) == []
    assert build_crowdsec_arm(parse_config("", "f.toml"), frozenset({(4, False)}), exists) == []


def test_the_live_lookups_are_read_from_the_drop_rules_comments():
    from minifw.compile.sets import live_set_lookups

    def rule(comment, target):
        return {"comment": comment, "expr": [{"match": {"op": "==", "left": {}, "right": target}},
                                             {"drop": None}]}
    rules = [rule("crowdsec-bans: CrowdSec decisions (set cs)", "@s_cs_v6"),
             rule("crowdsec-bans", "@s_cs_v4net"),              # an id alone, no comment
             rule("log crowdsec-bans", "@s_cs_v4"),             # a helper: not the rule
             rule("crowdsec-bansx: other", "@s_cs_v6net"),      # another id
             rule("crowdsec-bans: x", "@s_other_v4"),           # another set
             rule("crowdsec-bans: x", "@s_cs_v5")]              # no backing set
    assert live_set_lookups(rules, "cs", CROWDSEC_RULE) == frozenset({(6, False), (4, True)})
    assert live_set_lookups([], "cs", CROWDSEC_RULE) == frozenset()
