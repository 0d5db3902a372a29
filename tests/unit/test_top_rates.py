"""minifw top's rate math (app/rates.py): increases, resets, per-second rates, ordering."""

from __future__ import annotations

import pytest

from minifw.app import rates
from minifw.app.counters import HookInfo, Sample, SetInfo


def sample(at, rules=None, policies=None, sets=None, hooks=None, runners=()):
    return Sample(at=at, up=True, rules=rules or {}, policies=policies or {}, sets=sets or {},
                  hooks=hooks or {}, runners=tuple(runners), queues={})


@pytest.mark.parametrize("before, after, grew", [
    (10, 10, 0),        # no change
    (10, 11, 1),        # one more
    (10, 9, 9),         # went down by one: a reset, the increase is the new value
    (10, 0, 0),         # reset to zero
    (0, 5, 5),
    (None, 5, None),    # unknown before: no rate yet
    (5, None, None),
])
def test_increase_counts_a_reset_as_the_new_value(before, after, grew):
    assert rates.increase(before, after) == grew


def test_per_second_divides_by_the_interval_and_never_by_zero():
    assert rates.per_second(100, 300, 2.0) == 100.0
    assert rates.per_second(100, 300, 0.0) == 0.0
    assert rates.per_second(100, 300, -1.0) == 0.0
    assert rates.per_second(None, 300, 1.0) is None


LABELS = {"ping": {"hook": "input", "priority": 0, "action": "drop"},
          "web": {"hook": "input", "priority": 0, "action": "accept"},
          "rej": {"hook": "input", "priority": 0, "action": "reject"}}


def test_rule_rates_busiest_first_and_drops_only_for_dropping_actions():
    before = sample(10.0, rules={"ping": (100, 8400), "web": (10, 1000), "rej": (0, 0)})
    after = sample(12.0, rules={"ping": (120, 10080), "web": (210, 21000), "rej": (4, 400)})
    found = rates.rates(before, after, LABELS)
    assert found.seconds == 2.0
    assert [r.name for r in found.rules] == ["web", "ping", "rej"]
    web, ping, rej = found.rules
    assert (web.packets_per_second, web.bytes_per_second, web.drops_per_second) == (100, 10000, 0)
    assert (ping.packets_per_second, ping.bytes_per_second, ping.drops_per_second) == (10, 840, 10)
    assert rej.drops_per_second == 2.0
    assert web.to_json() == {"kind": "rule", "name": "web", "hook": "input", "priority": 0,
                             "action": "accept", "packets_per_second": 100.0,
                             "bytes_per_second": 10000.0, "drops_per_second": 0.0,
                             "packets": 210, "bytes": 21000}


def test_equal_rates_sort_by_drops_then_name():
    rows = [rates.Row("rule", n, {}, 5.0, 0.0, d, 0, 0) for n, d in
            (("b", 0.0), ("a", 0.0), ("c", 5.0))]
    assert [r.name for r in rates.busiest(rows)] == ["c", "a", "b"]
    unknown = rates.Row("rule", "new", {}, None, None, None, 1, 1)
    assert rates.busiest(rows + [unknown])[-1].name == "new"


def test_a_rule_new_since_the_first_reading_has_no_rate_yet():
    found = rates.rates(sample(0.0), sample(1.0, rules={"ping": (5, 420)}), LABELS)
    (row,) = found.rules
    assert (row.packets_per_second, row.drops_per_second, row.packets) == (None, None, 5)


def test_policies_and_sets_count_every_packet_as_a_drop():
    before = sample(0.0, policies={"input": (0, 0)},
                    sets={"blocked": SetInfo("blocked", 1000, 50, 5000)})
    after = sample(0.5, policies={"input": (3, 252)},
                   sets={"blocked": SetInfo("blocked", 1001, 60, 6000)})
    found = rates.rates(before, after, {})
    assert found.policies[0].drops_per_second == 6.0
    (blocked,) = found.sets
    assert (blocked.packets_per_second, blocked.drops_per_second) == (20.0, 20.0)
    assert blocked.labels == {"elements": 1001}


def test_hook_functions_take_drops_from_their_runner():
    hook = HookInfo("guard", 3, "input", 5, "/etc/minifw/guard.py", 0, 0)
    later = HookInfo("guard", 3, "input", 5, "/etc/minifw/guard.py", 40, 4000)
    runner = {"file": "/etc/minifw/guard.py", "state": "running", "packets": 0, "drops": 0}
    before = sample(0.0, hooks={"guard": hook}, runners=[runner])
    after = sample(2.0, hooks={"guard": later},
                   runners=[{**runner, "packets": 40, "drops": 10}])
    (row,) = rates.rates(before, after, {}).hooks
    assert (row.packets_per_second, row.drops_per_second) == (20.0, 5.0)
    assert row.labels == {"queue": 3, "hook": "input", "priority": 5,
                          "file": "/etc/minifw/guard.py"}
    # no runner counts (no daemon, no stats): no drop rate, the queue counter still counts
    (row,) = rates.rates(sample(0.0, hooks={"guard": hook}),
                         sample(2.0, hooks={"guard": later}), {}).hooks
    assert (row.packets_per_second, row.drops_per_second) == (20.0, None)
