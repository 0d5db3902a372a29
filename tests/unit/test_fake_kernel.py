"""The fake kernel keeps the kernel's rules that minifw depends on: one document is one
transaction, and it refuses what the kernel refuses. (tests/kernel/test_fake_vs_real.py checks
the same documents against the real kernel.)"""

from __future__ import annotations

import copy
import socket

import pytest

from minifw.compile import sets as ksets
from minifw.errors import KernelError
from minifw.kernel.fake import FakeKernel
from minifw.kernel.seam import PartialAdd

T = {"family": "inet", "table": "minifw"}


def doc(*commands):
    return {"nftables": list(commands)}


def with_sets() -> FakeKernel:
    k = FakeKernel()
    k.run(doc({"add": {"table": {"family": "inet", "name": "minifw"}}},
              *ksets.build_set_decls("blocked")))
    return k


def element(op, name, *elems):
    return {op: {"element": {**T, "name": name, "elem": list(elems)}}}


def test_a_document_is_one_transaction():
    k = with_sets()
    before = copy.deepcopy(k.tables)
    with pytest.raises(KernelError, match="nftables refused the change"):
        k.run(doc(element("add", "s_blocked_v4", "198.18.0.1"),
                  element("delete", "s_blocked_v4", "198.18.0.2")))  # not there
    assert k.tables == before
    assert [s.outcome for s in k.sent][-1] == "refused"


@pytest.mark.parametrize("command", [
    element("add", "s_blocked_v4", "fd00::1"),                                   # wrong family
    element("add", "s_blocked_v4", {"prefix": {"addr": "198.18.0.0", "len": 24}}),  # no interval
    element("add", "s_nothing_v4", "198.18.0.1"),                                # no such set
    element("delete", "s_blocked_v4", "198.18.0.1"),                             # not there
    {"delete": {"chain": {**T, "name": "input_0"}}},                             # no such chain
    {"delete": {"table": {"family": "ip", "name": "minifw"}}},                   # no such table
    {"add": {"rule": {**T, "chain": "input_0", "expr": [{"accept": None}]}}},    # no chain
])
def test_what_the_kernel_refuses(command):
    k = with_sets()
    with pytest.raises(KernelError):
        k.run(doc(command))


def test_busy_objects_and_duplicates_are_refused_and_adds_are_idempotent():
    k = with_sets()
    k.run(doc(*ksets.build_ban_chain({(4, False), (6, False)})))
    with pytest.raises(KernelError):  # a rule looks it up
        k.run(doc({"delete": {"set": {**T, "name": "s_blocked_v4"}}}))
    with pytest.raises(KernelError):  # the verdict map jumps to it
        k.run(doc({"flush": {"chain": {**T, "name": "bans_v4"}}},
                  {"delete": {"chain": {**T, "name": "bans_v4"}}}))
    k.run(doc(element("add", "s_blocked_v4", "198.18.0.1"),
              element("add", "s_blocked_v4", "198.18.0.1")))
    with pytest.raises(KernelError):
        k.run(doc(element("create", "s_blocked_v4", "198.18.0.1")))
    net = {"prefix": {"addr": "198.18.4.0", "len": 24}}
    k.run(doc(element("add", "s_blocked_v4net", net)))
    with pytest.raises(KernelError):  # overlaps 198.18.4.0/24
        k.run(doc(element("add", "s_blocked_v4net", {"prefix": {"addr": "198.18.4.128",
                                                                 "len": 25}})))
    k.run(doc(element("add", "s_blocked_v4net", {"prefix": {"addr": "198.18.5.0", "len": 24}})))
    assert k.elements("s_blocked_v4net") == {"198.18.4.0/24", "198.18.5.0/24"}
    k.run(doc({"delete": {"chain": {**T, "name": "bans"}}}))  # its rules go with it
    assert "bans" not in k.objects()[0]
    assert not [r for r in k.ruleset()["nftables"] if r.get("rule", {}).get("chain") == "bans"]


def test_rules_keep_order_and_handles_for_insert_and_delete():
    k = with_sets()
    chain = {**T, "name": "input_0", "type": "filter", "hook": "input", "prio": 0,
             "policy": "accept"}
    k.run(doc({"add": {"chain": chain}},
              *({"add": {"rule": {**T, "chain": "input_0", "comment": c,
                                  "expr": [{"accept": None}]}}} for c in ("a", "c"))))
    handles = {r.rule_id: r.handle for r in k.chain_rules("input_0")}
    k.run(doc({"insert": {"rule": {**T, "chain": "input_0", "comment": "b",
                                   "handle": handles["c"], "expr": [{"accept": None}]}}}))
    assert k.declarative_layout() == {"input_0": ["a", "b", "c"]}
    k.run(doc({"delete": {"rule": {**T, "chain": "input_0", "handle": handles["a"]}}}))
    assert [r.rule_id for r in k.chain_rules("input_0")] == ["b", "c"]
    with pytest.raises(KernelError):
        k.run(doc({"delete": {"rule": {**T, "chain": "input_0", "handle": handles["a"]}}}))


def test_scripted_failures_skip_filter_and_apply_after_commit():
    k = with_sets()
    k.refuse_next(skip=1, only="document")
    k.run(doc(element("add", "s_blocked_v4", "198.18.0.1")))        # skipped
    with pytest.raises(KernelError):
        k.run(doc(element("add", "s_blocked_v4", "198.18.0.2")))    # refused
    k.fail_after_commit()
    with pytest.raises(KernelError):
        k.run(doc(element("add", "s_blocked_v4", "198.18.0.3")))    # applied, then failed
    assert k.elements("s_blocked_v4") == {"198.18.0.1", "198.18.0.3"}
    assert [s.outcome for s in k.sent[-3:]] == ["applied", "refused", "applied, then failed"]


def test_the_bulk_sender_commits_chunk_by_chunk_and_reports_a_partial_add():
    k = with_sets()
    k.chunk = 3
    keys = [socket.inet_pton(socket.AF_INET, f"198.18.1.{i}") for i in range(1, 8)]
    k.refuse_next(skip=2, only="elements")
    with pytest.raises(PartialAdd) as info:
        k.add_elements("minifw", [("s_blocked_v4", keys)], 60_000)
    assert info.value.applied == 2
    assert k.elements("s_blocked_v4") == {f"198.18.1.{i}" for i in range(1, 7)}
    k.refuse_next(only="elements")
    with pytest.raises(KernelError) as first:  # the first chunk: nothing went in
        k.add_elements("minifw", [("s_blocked_v4", keys)], None)
    assert not isinstance(first.value, PartialAdd)


def test_listings_have_nft_shapes():
    k = with_sets()
    k.run(doc(element("add", "s_blocked_v4", "198.18.0.1",
                      {"elem": {"val": "198.18.0.2", "timeout": 60}})))
    assert sorted(map(str, k.set_elements("s_blocked_v4"))) == sorted(map(str, [
        "198.18.0.1", {"elem": {"val": "198.18.0.2", "timeout": 60, "expires": 60}}]))
    k.add_foreign_chain("ip", "nat", "prerouting", "prerouting", -100)
    assert {(c["table"], c["name"]) for c in k.base_chains()} == {("nat", "prerouting")}
    assert k.kernel_objects()[0] == set(ksets.kernel_names("blocked"))
    with pytest.raises(KernelError):
        k.set_elements("s_nothing_v4")
