"""The metrics plug-in's pure parts: --metrics addresses, what a scrape exports (parsed back
with prometheus-client's own parser), NFQUEUE's /proc lines and the events tail for top."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from minifw.app.counters import HookInfo, Layout, RuleInfo, Sample, SetInfo
from minifw.daemon.metrics import (
    DEFAULT_LISTEN, RULE_FAMILIES, RULE_LABELS, Reading, exposition, parse_listen, render_rules,
)
from minifw.errors import ConfigError
from minifw.kernel import queuestats


@pytest.mark.parametrize("text, want", [
    ("", ("127.0.0.1", 9469)),
    (None, ("127.0.0.1", 9469)),
    ("198.18.0.1:9100", ("198.18.0.1", 9100)),
    (":1", ("127.0.0.1", 1)),
    ("65535", ("127.0.0.1", 65535)),
    ("localhost", ("localhost", 9469)),
    ("[::1]:9469", ("::1", 9469)),
    ("[::]", ("::", 9469)),
])
def test_listen_addresses(text, want):
    assert parse_listen(text) == want


def test_the_default_is_loopback():
    assert parse_listen(DEFAULT_LISTEN) == ("127.0.0.1", 9469)


@pytest.mark.parametrize("text", [":0", ":65536", "host:port", "[::1]9469", "[::1", "h:-1"])
def test_bad_listen_addresses_are_refused(text):
    with pytest.raises(ConfigError, match="--metrics"):
        parse_listen(text)


LAYOUT = Layout(rules=(RuleInfo("ping", "input", 0, "drop"), RuleInfo("web", "input", -5,
                                                                      "accept")),
                drop_hooks=("input",))


def reading(events=None, runners=()):
    sample = Sample(
        at=1.0, up=True, rules={"ping": (7, 588), "web": (3, 180)},
        policies={"input": (2, 120)}, sets={"blocked": SetInfo("blocked", 1000000, 4, 240)},
        hooks={"guard": HookInfo("guard", 3, "input", 5, "/h.py", 11, 990)},
        runners=tuple(runners),
        queues={3: queuestats.QueueStats(3, 1, 5, 6)})
    return Reading(sample, LAYOUT, events, 1700000000.5, 0.01)


def scrape(r: Reading) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(exposition(r).decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_a_scrape_exports_every_counter_with_its_labels():
    got = scrape(reading(events={"written": 12, "lost": 3, "group": 100},
                         runners=[{"file": "/h.py", "state": "running", "restarts": 2,
                                   "packets": 11, "drops": 4, "errors": 1}]))
    ping = (("action", "drop"), ("hook", "input"), ("priority", "0"), ("rule", "ping"))
    web = (("action", "accept"), ("hook", "input"), ("priority", "-5"), ("rule", "web"))
    assert got["minifw_rule_packets_total"] == {ping: 7, web: 3}
    assert got["minifw_rule_bytes_total"] == {ping: 588, web: 180}
    assert got["minifw_up"] == {(): 1}
    assert got["minifw_last_apply_timestamp_seconds"] == {(): 1700000000.5}
    assert got["minifw_policy_dropped_packets_total"] == {(("hook", "input"),): 2}
    assert got["minifw_set_elements"] == {(("set", "blocked"),): 1000000}
    assert got["minifw_set_dropped_packets_total"] == {(("set", "blocked"),): 4}
    assert got["minifw_hook_packets_total"] == {
        (("function", "guard"), ("hook", "input"), ("priority", "5"), ("queue", "3")): 11}
    assert got["minifw_hook_verdicts_total"] == {(("file", "/h.py"), ("verdict", "drop")): 4,
                                                 (("file", "/h.py"), ("verdict", "accept")): 7}
    assert got["minifw_hook_errors_total"] == {(("file", "/h.py"),): 1}
    assert got["minifw_runner_up"] == {(("file", "/h.py"),): 1}
    assert got["minifw_runner_restarts_total"] == {(("file", "/h.py"),): 2}
    assert got["minifw_nfqueue_queue_dropped_total"] == {(("queue", "3"),): 5}
    assert got["minifw_nfqueue_user_dropped_total"] == {(("queue", "3"),): 6}
    assert got["minifw_events_written_total"] == {(): 12}
    assert got["minifw_events_lost_total"] == {(): 3}


def test_without_events_service_or_runner_counts_those_series_are_absent():
    got = scrape(reading(runners=[{"file": "/h.py", "state": "restarting", "restarts": 0,
                                   "packets": None, "drops": None, "errors": None}]))
    assert "minifw_events_written_total" not in got
    assert got["minifw_runner_up"] == {(("file", "/h.py"),): 0}
    assert "minifw_hook_verdicts_total" not in got


def test_a_rule_not_in_the_reading_has_no_series():
    r = reading()
    r.sample.rules.pop("web")
    assert [k for k in scrape(r)["minifw_rule_packets_total"]] == [
        (("action", "drop"), ("hook", "input"), ("priority", "0"), ("rule", "ping"))]


# net/netfilter/nfnetlink_queue.c: "%5u %6u %5u %1u %5u %5u %5u %8u %2d\n"
PROC = ("    3 123456     1 2 65535     5     6       42  1\n"
        "    7      0     0 2   128     0     0        0  1\n")


def test_nfqueue_proc_lines():
    assert queuestats.parse(PROC) == {3: queuestats.QueueStats(3, 1, 5, 6),
                                      7: queuestats.QueueStats(7, 0, 0, 0)}


@pytest.mark.parametrize("line", ["    3 1 1 2 65535 5 6 42", "    3 1 1 2 65535 5 6 42 1 9",
                                  "    3 1 x 2 65535 5 6 42 1", ""])
def test_nfqueue_lines_of_another_shape_are_skipped(line):
    assert queuestats.parse(line) == {}


def test_the_rule_lines_are_what_prometheus_client_renders():
    """The per-rule families are joined from prefixes made once per layout (for speed): the
    text must be exactly prometheus-client's, escapes and number formats included."""
    from prometheus_client.core import CounterMetricFamily
    odd = RuleInfo('a"b\\c\nd', "input", -5, "accept")
    layout = Layout(rules=LAYOUT.rules + (odd,), drop_hooks=())
    r = reading()
    r = Reading(r.sample, layout, None, None, 0.0)
    r.sample.rules.update({"ping": (0, 2**53 + 1), odd.id: (10**20, 1)})

    class Families:
        def collect(self):
            for i, (name, help_text) in enumerate(RULE_FAMILIES):
                family = CounterMetricFamily(name.removesuffix("_total"), help_text,
                                             labels=RULE_LABELS)
                for rule in layout.rules:
                    got = r.sample.rules.get(rule.id)
                    if got is not None:
                        family.add_metric([rule.id, rule.hook, str(rule.priority), rule.action],
                                          got[i])
                yield family

    assert render_rules(r) == generate_latest(Families()).decode()


def test_kernel_hook_functions_export_packets_drops_and_lost_log_lines():
    import dataclasses
    r = reading()
    sample = dataclasses.replace(r.sample, kernel_hooks=(("drop_icmp", "prerouting", -300, 9, 2, 5),
                                                         ("gate", "input", 10, 0, 0, 0)))
    got = scrape(Reading(sample, LAYOUT, None, 1700000000.5, 0.01))
    icmp = (("function", "drop_icmp"), ("hook", "prerouting"), ("priority", "-300"))
    gate = (("function", "gate"), ("hook", "input"), ("priority", "10"))
    assert got["minifw_kernel_hook_packets_total"] == {icmp: 9, gate: 0}
    assert got["minifw_kernel_hook_drops_total"] == {icmp: 2, gate: 0}
    assert got["minifw_kernel_hook_log_lost_total"] == {icmp: 5, gate: 0}
    assert "minifw_kernel_hook_packets_total" not in scrape(reading())
