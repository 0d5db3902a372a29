"""One counter reading (app/counters.py) over the fake kernel: which live rule counts for which
rule id, drop policy, set and hook function, merged runs by element."""

from __future__ import annotations

import pytest

import fakekit
from minifw.app import counters
from minifw.app.rules import Service
from minifw.kernel.fake import FakeKernel

no_real_kernel = fakekit.no_real_kernel  # the fixture: nothing here may reach the real kernel
pytestmark = pytest.mark.usefixtures("no_real_kernel")

RUN = "".join(f'[[rule]]\nid = "deny-{i}"\nsrc = "198.18.7.{i}"\naction = "drop"\n\n'
              for i in range(10))
CONFIG = f"""
[policy]
input = "drop"

[[rule]]
id = "ping"
proto = "icmp"
action = "accept"

{RUN}
[[set]]
name = "blocked"
elements = ["198.18.9.9"]
"""


class Counting(FakeKernel):
    """The fake kernel, with per-element counters a test sets (value -> packets, bytes)."""

    element_counts: dict[str, tuple[int, int]] = {}

    def set_elements(self, name):
        out = super().set_elements(name)
        for e in out:
            val = e["elem"]["val"]
            if val in self.element_counts:
                p, b = self.element_counts[val]
                e["elem"]["counter"] = {"packets": p, "bytes": b}
        return out


def set_counter(kernel, chain, pick, packets, nbytes):
    for rule in kernel.tables[("inet", "minifw")]["rules"]:
        if rule["chain"] == chain and pick(rule):
            for expr in rule["expr"]:
                if "counter" in expr:
                    expr["counter"] = {"packets": packets, "bytes": nbytes}


def test_a_reading_sums_each_counter_into_its_owner(tmp_path):
    kernel = Counting()
    config = tmp_path / "minifw.toml"
    config.write_text(CONFIG)
    Service(tmp_path, kernel).up(str(config))
    has = lambda word: (lambda r: word in str(r["expr"]))  # noqa: E731
    set_counter(kernel, "input_0", lambda r: r.get("comment") == "ping", 3, 252)
    set_counter(kernel, "input_policy", has("drop"), 5, 300)
    set_counter(kernel, "input_policy", has("accept"), 1000, 1000)  # not a drop
    set_counter(kernel, "bans", has("s_blocked_v4"), 2, 120)
    kernel.element_counts = {"198.18.7.3": (4, 400), "198.18.7.9": (1, 60)}
    sampler = counters.Sampler(tmp_path, kernel)
    got = sampler.sample()
    assert got.up
    assert got.rules["ping"] == (3, 252)
    assert got.rules["deny-3"] == (4, 400) and got.rules["deny-9"] == (1, 60)
    assert got.rules["deny-0"] == (0, 0)
    assert len(got.rules) == 11
    assert got.policies == {"input": (5, 300)}
    assert got.sets == {"blocked": counters.SetInfo("blocked", 1, 2, 120)}
    assert got.hooks == {} and got.runners == ()
    assert sampler.labels()["deny-3"] == {"hook": "input", "priority": 0, "action": "drop"}


def test_nothing_loaded_reads_as_down(tmp_path):
    got = counters.Sampler(tmp_path / "fresh", FakeKernel()).sample()
    assert (got.up, got.rules, got.policies, got.sets) == (False, {}, {}, {})
    assert not (tmp_path / "fresh" / "sets.db").exists()  # a reading creates nothing


def test_a_sampler_knows_when_the_applied_ruleset_changed(tmp_path):
    kernel = FakeKernel()
    config = tmp_path / "minifw.toml"
    config.write_text(CONFIG)
    service = Service(tmp_path, kernel)
    service.up(str(config))
    sampler = counters.Sampler(tmp_path, kernel)
    assert not sampler.stale()
    service.add({"id": "late", "proto": "udp", "dport": 7, "action": "drop"}, None,
                runtime=True)
    assert sampler.stale()
    assert "late" in counters.Sampler(tmp_path, kernel).labels()
