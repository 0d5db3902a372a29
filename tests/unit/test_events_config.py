"""The [events] table, [policy] log / log_limit and [[set]] log: parsing, both sides of every
bound, one-line errors naming the key, and the TOML round trip the state file relies on."""

import pytest

from minifw.errors import ConfigError
from minifw.model import Ruleset, parse_config
from minifw.model.events import (
    DEFAULT_LIMIT, EVENTS_KEYS, GROUP_MAX, KEEP_MAX, MAX_BYTES_MAX, MAX_BYTES_MIN, EventsConfig,
)
from minifw.model.rule import Limit
from minifw.model.ruleset import DEFAULT_POLICY_LOG_LIMIT


def parse(text: str) -> Ruleset:
    return parse_config(text, "t.toml")


def test_defaults():
    rs = parse("")
    assert rs.events == EventsConfig(drops=False, limit=Limit(1000, "second"), group=100,
                                     max_bytes=16 * 1024 * 1024, keep=5)
    assert rs.policy_log is None
    assert rs.policy_log_limit == Limit(10, "second", 20) == DEFAULT_POLICY_LOG_LIMIT
    assert rs.to_toml() == {}


def test_every_key():
    rs = parse('[policy]\ninput = "drop"\nlog = "minifw drop "\nlog_limit = "5/minute burst 3"\n'
               '[events]\ndrops = true\nlimit = "200/second burst 50"\ngroup = 7\n'
               'max_bytes = 100000\nkeep = 2\n'
               '[[set]]\nname = "blocked"\nlog = "minifw ban "\n')
    assert rs.events == EventsConfig(True, Limit(200, "second", 50), 7, 100000, 2)
    assert rs.policy_log == "minifw drop "
    assert rs.policy_log_limit == Limit(5, "minute", 3)
    assert rs.sets[0].log == "minifw ban "
    assert Ruleset.from_toml(rs.to_toml()) == rs


def test_limit_off_is_none_and_round_trips():
    rs = parse('[events]\nlimit = "off"\n')
    assert rs.events.limit is None
    assert rs.to_toml() == {"events": {"limit": "off"}}
    assert Ruleset.from_toml(rs.to_toml()) == rs


def test_unknown_events_key_names_the_closest_or_the_valid_ones():
    with pytest.raises(ConfigError) as exc:
        parse('[events]\n\ndrop = true\n')
    message = str(exc.value)
    assert "events.drop" in message and "did you mean 'drops'?" in message
    assert ":3:" in message and "\n" not in message
    with pytest.raises(ConfigError) as exc:
        parse('[events]\nzzzzzzzz = 1\n')
    assert ", ".join(EVENTS_KEYS) in str(exc.value)


def test_events_must_be_a_table():
    with pytest.raises(ConfigError, match="field 'events'"):
        parse('events = 3\n')


@pytest.mark.parametrize("key, lo, hi", [("group", 0, GROUP_MAX),
                                         ("max_bytes", MAX_BYTES_MIN, MAX_BYTES_MAX),
                                         ("keep", 0, KEEP_MAX)])
def test_integer_bounds_both_sides(key, lo, hi):
    assert getattr(parse(f"[events]\n{key} = {lo}\n").events, key) == lo
    assert getattr(parse(f"[events]\n{key} = {hi}\n").events, key) == hi
    for bad in (lo - 1, hi + 1):
        with pytest.raises(ConfigError, match=f"events.{key}.*between {lo} and {hi}"):
            parse(f"[events]\n{key} = {bad}\n")


@pytest.mark.parametrize("text", ['group = "100"', "group = true", "keep = 1.5",
                                  'drops = "yes"', "drops = 1"])
def test_wrong_types(text):
    with pytest.raises(ConfigError, match="events"):
        parse(f"[events]\n{text}\n")


@pytest.mark.parametrize("value", ['"fast"', '"0/second"', '"on"', '"Off"', "1000",
                                   '"5/second burst 0"', '"4294967296/second"'])
def test_bad_event_limits(value):
    with pytest.raises(ConfigError, match="events.limit"):
        parse(f"[events]\nlimit = {value}\n")


def test_event_limit_edges():
    assert parse('[events]\nlimit = "1/second"\n').events.limit == Limit(1, "second")
    assert parse('[events]\nlimit = "4294967295/second"\n').events.limit.rate == 2**32 - 1
    assert parse("[events]\n").events.limit == DEFAULT_LIMIT


@pytest.mark.parametrize("text, field", [
    ('log = ""', "policy.log"), ('log = "  "', "policy.log"), ("log = 3", "policy.log"),
    ('log = "a\\u0007"', "policy.log"), ('log = "say \\"hi\\""', "policy.log"),
    ('log_limit = "10/fortnight"', "policy.log_limit"),
    ('log_limit = "off"', "policy.log_limit"), ('log_limit = "0/second"', "policy.log_limit"),
])
def test_bad_policy_log(text, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse(f'[policy]\ninput = "drop"\n{text}\n')


def test_policy_log_prefix_length_both_sides():
    ok = "p" * 127
    assert parse(f'[policy]\ninput = "drop"\nlog = "{ok}"\n').policy_log == ok
    with pytest.raises(ConfigError, match="128 bytes"):
        parse(f'[policy]\ninput = "drop"\nlog = "{ok}p"\n')


def test_policy_log_limit_burst_bounds():
    assert parse('[policy]\nlog_limit = "1/second burst 1"\n').policy_log_limit.burst == 1
    with pytest.raises(ConfigError, match="policy.log_limit"):
        parse('[policy]\nlog_limit = "1/second burst 0"\n')


def test_set_log():
    assert parse('[[set]]\nname = "x"\n').sets[0].log is None
    assert parse(f'[[set]]\nname = "blocked"\nlog = "{"b" * 127}"\n').sets[0].log == "b" * 127
    for bad in ('""', f'"{"b" * 128}"', "1"):
        with pytest.raises(ConfigError, match="set 'blocked': field 'log'"):
            parse(f'[[set]]\nname = "blocked"\nlog = {bad}\n')
    with pytest.raises(ConfigError, match="set 'x': field 'log': logs bans"):
        parse('[[set]]\nname = "x"\nlog = "x "\n')


def test_unknown_top_level_key_lists_events():
    with pytest.raises(ConfigError, match=r"did you mean 'events'\?"):
        parse("[event]\n")
    with pytest.raises(ConfigError, match=r"\[events\]"):
        parse("[zzzzzzzz]\n")
