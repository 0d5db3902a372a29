"""Typed results: frozen, and their to_json() is exactly the --json shape; hook points sort in
the kernel's order; the warning about other tables' chains is built in one place."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from minifw.app.results import (
    Banned, ChainInfo, FailsafeInfo, ForeignChain, ListedRule, PolicyCounter, RuleListing, SetElement,
    SetPage, SetSummary, Status, chains_in_order,
)
from minifw.runners import hookstate
from minifw.engine.explain import chains_at
from minifw.model import parse_config
from minifw.model.types import Hook, HookPoint, point_order


def test_hook_points_sort_by_hook_then_priority():
    pts = [HookPoint(Hook.POSTROUTING, -500), HookPoint(Hook.INPUT, 1),
           HookPoint(Hook.PREROUTING, 10), HookPoint(Hook.INPUT, 0),
           HookPoint(Hook.OUTPUT, -1), HookPoint(Hook.FORWARD, 0), HookPoint(Hook.INPUT, -1)]
    assert [str(p) for p in sorted(pts)] == [
        "prerouting/10", "input/-1", "input/0", "input/1", "forward/0", "output/-1",
        "postrouting/-500"]
    # both sides of the boundary: equal points are not "less"
    assert not HookPoint(Hook.INPUT, 0) < HookPoint(Hook.INPUT, 0)
    assert HookPoint(Hook.INPUT, -1) < HookPoint(Hook.INPUT, 0)
    assert point_order("ingress", -1000) > point_order("postrouting", 10**6)  # unknown: last
    assert point_order("input", None) == point_order(Hook.INPUT, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        HookPoint(Hook.INPUT, 0).priority = 1


def test_the_ruleset_the_status_and_explain_share_the_order():
    rs = parse_config("""
[policy]
input = "drop"
[[rule]]
id = "b"
priority = 5
action = "accept"
[[rule]]
id = "a"
hook = "prerouting"
priority = 7
action = "accept"
[[rule]]
id = "c"
priority = -5
action = "accept"
""", "t.toml")
    assert [k for k, _ in rs.chains()] == [(Hook.PREROUTING, 7), (Hook.INPUT, -5),
                                           (Hook.INPUT, 5)]
    assert [(c.priority, c.kind) for c in chains_at(rs, Hook.INPUT)] == [
        (-5, "rules"), (5, "rules"), (1000, "policy")]
    listed = [ChainInfo(hook=h, priority=p, chain=f"{h}_{p}", kind="rules", rules=1)
              for h, p in (("input", 5), ("prerouting", 7), ("input", -5), ("ingress", 0))]
    assert [c.chain for c in chains_in_order(listed)] == [
        "prerouting_7", "input_-5", "input_5", "ingress_0"]


CHAINS = [
    {"family": "inet", "table": "minifw", "name": "input_0", "hook": "input", "prio": 0},
    {"family": "ip", "table": "filter", "name": "INPUT", "hook": "input", "prio": 0},
    {"family": "ip6", "table": "f6", "name": "in6", "hook": "input", "prio": -10},
    {"family": "inet", "table": "other", "name": "fwd", "hook": "forward", "prio": 5},
]


def test_foreign_chains_are_other_tables_at_our_hooks():
    found = ForeignChain.select(CHAINS, {"input"})
    assert [(f.family, f.table, f.chain) for f in found] == [("ip", "filter", "INPUT"),
                                                             ("ip6", "f6", "in6")]
    assert ForeignChain.select(CHAINS, {"input"}, ["ip", "inet"])[0].to_json() == {
        "family": "ip", "table": "filter", "chain": "INPUT", "hook": "input", "priority": 0}
    assert [f.table for f in ForeignChain.select(CHAINS, {"forward", "input"}, ["inet"])] \
        == ["other"]
    assert found[1].warning() == ("table ip6 f6 has base chain in6 at input priority -10: it "
                                  "can drop what minifw accepts")


def test_status_json_keeps_its_shape():
    queue = hookstate.QueueRecord(function="gate", hook="input", priority=0, queue=1000,
                                  chain="hook_q1000_gate")
    st = Status(loaded=True, config="/c.toml", policies={"input": "drop"}, stateful=True,
                chains=(ChainInfo(hook="input", priority=0, chain="input_0", kind="rules",
                                  rules=2),),
                rules=2, set_elements=(SetSummary(name="blocked", addresses=1, cidrs=0,
                                                  elements=1),),
                foreign_chains=(), warnings=("w",), table_missing=False,
                hooks=(hookstate.HookStatus(queue=queue, pid=7, file="/h.py", running=True,
                                            managed=True, backend="nft queue", log="/l"),),
                hook_problems=())
    data = st.to_json()
    assert list(data) == ["loaded", "config", "policies", "stateful", "chains", "rules", "sets",
                          "set_elements", "foreign_chains", "warnings", "table_missing",
                          "hooks", "hook_problems", "failsafe", "pending", "rolled_back", "daemon",
                          "kernel_hooks"]
    assert data["kernel_hooks"] == []
    assert data["pending"] is None and data["rolled_back"] is None and data["daemon"] is None
    assert data["sets"] == 1 and st.in_force and data["failsafe"] is None
    assert data["set_elements"] == [{"name": "blocked", "addresses": 1, "cidrs": 0,
                                     "elements": 1}]
    assert list(data["hooks"][0]) == [
        "function", "hook", "priority", "queue", "chain", "flow_chain", "fail", "on_error",
        "per_flow", "flow_mark", "payload", "bypass", "pid", "file", "running", "managed",
        "backend", "log"]
    json.dumps(data)  # plain JSON all the way down
    assert not dataclasses.replace(st, table_missing=True).in_force
    fallen = dataclasses.replace(st, failsafe=FailsafeInfo(
        since="2026-01-01T00:00:00Z", config="/c.toml", error="bad", running=True,
        last_good_at="2025-12-31T00:00:00Z", last_good_config="/c.toml", last_good_rules=2))
    assert not fallen.in_force
    assert list(fallen.to_json()["failsafe"]) == [
        "since", "config", "error", "running", "last_good", "load_error",
        "hook_files_not_started"]


def test_list_json_has_policies_only_when_up():
    assert RuleListing().to_json() == {"rules": []}
    rule = ListedRule(id="web", hook="input", priority=0, match={"proto": "tcp"},
                      action="accept", log=None, comment=None, packets=3, bytes=180,
                      runtime=False)
    out = RuleListing(rules=(rule,), policies=(PolicyCounter(hook="input", policy="drop",
                                                             packets=1, bytes=60),)).to_json()
    assert out == {"rules": [{"id": "web", "hook": "input", "priority": 0,
                              "match": {"proto": "tcp"}, "action": "accept", "log": None,
                              "comment": None, "packets": 3, "bytes": 180, "runtime": False}],
                   "policies": [{"hook": "input", "policy": "drop", "packets": 1,
                                 "bytes": 60}]}


def test_set_results_json():
    page = SetPage(set="blocked", addresses=1, cidrs=1, elements=2, page=1, page_size=100,
                   pages=1, items=(SetElement(element="198.18.0.9", expires_in=None),
                                   SetElement(element="198.18.8.0/24", expires_in=30)))
    assert list(page.to_json()) == ["set", "addresses", "cidrs", "elements", "page",
                                    "page_size", "pages", "items"]
    assert page.to_json()["items"][1] == {"element": "198.18.8.0/24", "expires_in": 30}
    banned = Banned("banned 1", ("w",), set="blocked", banned=("198.18.0.9",), timeout=600,
                    apply_ms=1.5)
    assert banned.to_json() == {"set": "blocked", "banned": ["198.18.0.9"], "timeout": 600,
                                "apply_ms": 1.5}
    assert (banned.message, banned.warnings) == ("banned 1", ("w",))


def test_runner_records_round_trip(tmp_path):
    rec = hookstate.RunnerRecord(
        pid=os.getpid(), file="/h.py", managed=True, digest="d", started=1.0, backend="b",
        conntrack=True, log="/l",
        queues=(hookstate.QueueRecord(function="f", hook="forward", priority=-3, queue=1001,
                                      chain="hook_q1001_f", flow_chain="flow_q1001_f"),))
    path = hookstate.write_record(tmp_path, rec)
    stored = json.loads(path.read_text())
    assert "alive" not in stored and "damaged" not in stored
    assert hookstate.record_problem(stored, os.getpid()) is None
    (back,) = hookstate.records(tmp_path)
    assert back == dataclasses.replace(rec, alive=True)
    assert back.chains == ["hook_q1001_f", "flow_q1001_f"]
    assert back.queues[0].point == HookPoint(Hook.FORWARD, -3)


def test_a_runners_placement_is_stored_whole():
    """Every key the runner's placement writes is a field of the queue record, so status
    shows what was written."""
    from minifw.compile.hooks import Placement
    from minifw.hooks import make_spec

    spec = make_spec(lambda pkt: None, "input", 4, fail="closed", per_flow=True)
    state = Placement(spec, 1003).to_state()
    assert hookstate.QueueRecord.from_json(state).to_json() == state

