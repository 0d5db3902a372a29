"""event_origin: every NFLOG prefix minifw writes maps back to its rule, hook, priority and
action; merged runs by the element that holds the packet's field, at the edges of each element."""

import pytest

from minifw.compile.events import Origin, event_origin
from minifw.compile.runs import parse_run_set_name, run_set_name
from minifw.model import parse_config

RUN_V4 = "\n".join(f'[[rule]]\nid = "n{i}"\nsrc = "198.18.{i}.0/24"\naction = "drop"\n'
                   for i in range(8))
RUN_MIXED = "\n".join(f'[[rule]]\nid = "h{i}"\nhook = "forward"\ndst = ["198.18.9.{i}", '
                      f'"fd00::{i:x}00/120"]\naction = "accept"\n' for i in range(8))
RUN_PORTS = "\n".join(f'[[rule]]\nid = "p{i}"\npriority = -10\nproto = "tcp"\n'
                      f'dport = "{1000 + 10 * i}-{1009 + 10 * i}"\naction = "drop"\n'
                      for i in range(8))
CONFIG = f'''
[policy]
input = "drop"
[[rule]]
id = "ssh"
proto = "tcp"
dport = 22
action = "accept"
log = "ssh "
{RUN_V4}
{RUN_MIXED}
{RUN_PORTS}
'''


@pytest.fixture(scope="module")
def rs():
    return parse_config(CONFIG, "t.toml")


def test_rule_prefix(rs):
    assert event_origin(rs, "ssh", {}) == Origin("ssh", "input", 0, "accept")
    assert event_origin(rs, "ssh\x00", {}) == Origin("ssh", "input", 0, "accept")
    assert event_origin(rs, "gone", {}) is None


def test_policy_and_set_prefixes(rs):
    assert event_origin(rs, "policy:input", {}) == Origin("policy:input", "input", 1000, "drop")
    assert event_origin(rs, "policy:nowhere", {}) is None
    assert event_origin(rs, "set:blocked", {}) == Origin("set:blocked", "prerouting", -350,
                                                          "drop")
    assert event_origin(rs, "set:", {}) is None
    assert event_origin(rs, "hook:f", {}) is None
    assert event_origin(rs, "other:thing", {}) is None


@pytest.mark.parametrize("src, rule", [
    ("198.18.0.0", "n0"), ("198.18.0.255", "n0"), ("198.18.7.0", "n7"), ("198.18.7.255", "n7"),
    ("198.18.3.77", "n3"), ("198.18.8.0", None), ("198.17.255.255", None), ("fd00::1", None),
    (None, None), ("garbage", None),
])
def test_run_by_address_edges(rs, src, rule):
    origin = event_origin(rs, "run:" + run_set_name("input_0", 1, 4), {"src": src})
    assert (origin and origin.rule) == rule
    if origin:
        assert origin == Origin(rule, "input", 0, "drop")


def test_run_of_both_versions(rs):
    v4, v6 = run_set_name("forward_0", 0, 4), run_set_name("forward_0", 0, 6)
    assert event_origin(rs, f"run:{v4}", {"dst": "198.18.9.5"}).rule == "h5"
    assert event_origin(rs, f"run:{v6}", {"dst": "fd00::5ff"}).rule == "h5"
    assert event_origin(rs, f"run:{v6}", {"dst": "fd00::800"}) is None
    assert event_origin(rs, f"run:{v4}", {"dst": "fd00::5"}) is None  # the set's version only
    assert event_origin(rs, f"run:{v4}", {"src": "198.18.9.5"}) is None  # the run's field only
    assert event_origin(rs, f"run:{v4}", {"dst": "198.18.9.5"}).action == "accept"


@pytest.mark.parametrize("dport, rule", [(1000, "p0"), (1009, "p0"), (1010, "p1"), (1079, "p7"),
                                         (999, None), (1080, None), ("1005", "p0"), (True, None)])
def test_run_by_port_edges(rs, dport, rule):
    origin = event_origin(rs, "run:" + run_set_name("input_m10", 0, None), {"dport": dport})
    assert (origin and origin.rule) == rule
    if origin:
        assert (origin.hook, origin.priority) == ("input", -10)


@pytest.mark.parametrize("name", ["r_input_0_9_v4", "r_input_0_0_v4", "r_output_0_1_v4",
                                  "r_input_0_1", "r_input_m10_0_v4", "x_input_0_1_v4",
                                  "r_input_0_01_v4", "r__1"])
def test_run_names_that_are_not_runs(rs, name):
    """Index 9 and 0 of input_0 are no runs (0 is the lone rule ssh); a port run has no
    version suffix and an address run always has one."""
    assert event_origin(rs, f"run:{name}", {"src": "198.18.1.1", "dport": 1000}) is None


def test_run_set_names_round_trip():
    for chain in ("input_0", "prerouting_m300", "forward_12"):
        for version in (4, 6, None):
            assert parse_run_set_name(run_set_name(chain, 3, version)) == (chain, 3, version)
    assert parse_run_set_name("blocked") is None
    assert parse_run_set_name("r_input_0_x") is None
