"""[[set]] tables, @name references, durations, and the fast import parser."""

import io

import pytest

from minifw.compile.sets import (
    ban_layout, build_ban_chain, build_elements, kernel_name, live_ban_lookups, owner_of,
)
from minifw.errors import ConfigError, RuleError
from minifw.model import parse_config
from minifw.model.sets import covering, first_overlap, parse_duration
from minifw.store.setrecord import pack, parse_import

CFG = """
[[set]]
name = "bad"
timeout = "1h"
elements = ["198.18.2.2", "198.18.64.0/18", "fd00::1"]

[[rule]]
id = "drop-bad"
src = "@bad"
action = "drop"
"""


def test_set_config_round_trip():
    rs = parse_config(CFG, "x.toml")
    assert rs.sets[0].timeout == 3600
    assert rs.to_toml()["set"][0]["elements"] == ["198.18.2.2", "198.18.64.0/18", "fd00::1"]
    assert rs.to_toml()["rule"][0]["src"] == "@bad"
    assert parse_config(CFG, "x.toml") == rs


def test_undefined_set_is_an_error_naming_rule_and_field():
    with pytest.raises(RuleError) as exc:
        parse_config(CFG.replace('"@bad"', '"@nope"'), "x.toml")
    assert "drop-bad" in str(exc.value) and "src" in str(exc.value) and "x.toml" in str(exc.value)


def test_blocked_is_implicit_and_set_refs_stand_alone():
    parse_config('[[rule]]\nsrc = "@blocked"\naction = "drop"\n', "x")
    with pytest.raises(RuleError):
        parse_config('[[rule]]\nsrc = ["@blocked", "198.18.0.1"]\naction = "drop"\n', "x")


def test_bad_elements_and_overlaps():
    with pytest.raises(RuleError, match="host bits"):
        parse_config(CFG.replace("198.18.64.0/18", "198.18.64.1/18"), "x")
    with pytest.raises(RuleError, match="overlaps"):
        parse_config(CFG.replace('"fd00::1"', '"198.18.0.0/16"'), "x")
    with pytest.raises(RuleError, match="zone"):                   # Python would take it
        parse_config(CFG.replace('"fd00::1"', '"fe80::1%eth0"'), "x")
    with pytest.raises(ConfigError, match=r"x:2: .*zone"):
        parse_import(io.StringIO("198.18.0.1\nfe80::1%eth0\n"), "x", False)
    assert first_overlap(["198.18.0.0/24", "198.18.1.0/24"]) is None
    assert covering("198.18.64.9", ["198.18.64.0/18", "fd00::/8"]) == ["198.18.64.0/18"]


def test_durations():
    assert parse_duration("10m") == 600 and parse_duration("1h30m") == 5400
    assert parse_duration(5) == 5
    for bad in ("0s", "-1", "ten", True, "100d"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_import_parser_reports_line_numbers():
    text = "# header\n198.18.0.1\nFD00::0:1  # upper case\n198.18.64.0/18\n\nnope\n"
    with pytest.raises(ConfigError, match=r"f.txt:6:"):
        parse_import(io.StringIO(text), "f.txt", skip_invalid=False)
    four, six, cidrs, skipped = parse_import(io.StringIO(text), "f.txt", skip_invalid=True)
    assert four == [pack("198.18.0.1")] and six == [pack("fd00::1")]
    assert cidrs == ["198.18.64.0/18"]
    assert skipped and skipped[0].startswith("f.txt:6:")


def test_single_addresses_never_go_to_interval_sets():
    cmds = build_elements("add", "blocked", [("198.18.0.1", 60), ("fd00::1", None),
                                             ("198.18.8.0/24", None)])
    names = {c["add"]["element"]["name"] for c in cmds}
    assert names == {kernel_name("blocked", 4, False), kernel_name("blocked", 6, False),
                     kernel_name("blocked", 4, True)}
    assert owner_of("s_blocked_v6net") == "blocked" and owner_of("r_input_0_1") is None


def test_restore_sends_remaining_time_and_skips_expired():
    from minifw.compile.sets import build_restore
    cmds = build_restore("b", [("198.18.0.1", 0), ("fd00::1", 200), ("198.18.0.0/24", 50),
                               ("198.18.1.0/24", 160)], at=100)
    by = {c["add"]["element"]["name"]: c["add"]["element"]["elem"] for c in cmds}
    assert by == {"s_b_v4": ["198.18.0.1"],
                  "s_b_v6": [{"elem": {"val": "fd00::1", "timeout": 100}}],
                  "s_b_v4net": [{"elem": {"val": {"prefix": {"addr": "198.18.1.0", "len": 24}},
                                          "timeout": 60}}]}


KINDS = [(4, False), (4, True), (6, False), (6, True)]


def _as_listing(cmds):
    """The chains and rules a transaction of ``build_ban_chain`` leaves, as a terse listing has them."""
    chains, rules = [], []
    for cmd in cmds:
        add = cmd.get("add", {})
        if "chain" in add:
            chains.append(add["chain"]["name"])
        if "rule" in add:
            rules.append({"chain": add["rule"]["chain"], "expr": add["rule"]["expr"]})
    return chains, rules


@pytest.mark.parametrize("mask", range(16))
def test_ban_chain_looks_up_exactly_the_armed_sets_and_reads_back(mask):
    armed = {k for i, k in enumerate(KINDS) if mask >> i & 1}
    chains, rules = _as_listing(build_ban_chain(armed))
    assert live_ban_lookups(chains, rules) == frozenset(armed)
    looked_up = [e["match"]["right"][1:] for r in rules for e in r["expr"] if "match" in e]
    assert sorted(looked_up) == sorted(kernel_name("blocked", *k) for k in armed)
    versions = {v for v, _ in armed}
    base = [r for r in rules if r["chain"] == "bans"]
    # one version: its lookups sit in the base chain; both: one dispatch rule there
    assert len(base) == (1 if len(versions) == 2 else len(armed))
    layout = ban_layout(armed)
    assert (layout["bans"] == ["dispatch"]) == (len(versions) == 2)


def test_unknown_ban_chain_layouts_read_as_none():
    assert live_ban_lookups(["bans"], []) is None                    # per-version chains missing
    chains, rules = _as_listing(build_ban_chain({(4, False)}))
    rules.append({"chain": "bans_v6", "expr": [{"match": {"right": "@s_blocked_v6"}}]})
    assert live_ban_lookups(chains, rules) is None                   # a lookup never reached


def test_check_shows_config_set_elements_and_the_ban_chain():
    from minifw.app.sets import fresh_load
    config = CFG.replace('name = "bad"', 'name = "blocked"').replace("@bad", "@blocked")
    doc = fresh_load(parse_config(config, "x"))["nftables"]
    elems = {c["add"]["element"]["name"]: c["add"]["element"]["elem"] for c in doc
             if "element" in c.get("add", {})}
    assert elems["s_blocked_v4"] == ["198.18.2.2"] and elems["s_blocked_v6"] == ["fd00::1"]
    chains, rules = _as_listing(doc)
    assert live_ban_lookups(chains, rules) == {(4, False), (4, True), (6, False)}
