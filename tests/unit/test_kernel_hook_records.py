"""Kernel hook records and placement without a kernel: pin-directory keys, the points a record
holds, and the queue/kernel split of a file's functions."""

import textwrap

from minifw.runners import kattach
from minifw.runners.kplace import place


def test_module_key_is_readable_stable_and_per_path(tmp_path):
    a = kattach.module_key("/etc/minifw/seed hooks.py")
    assert a.startswith("seed_hooks-") and len(a.split("-")[-1]) == 10
    assert a == kattach.module_key("/etc/minifw/seed hooks.py")
    assert a != kattach.module_key("/srv/minifw/seed hooks.py")


def test_points_are_the_kernel_functions_per_family():
    rec = {"functions": [
        {"name": "a", "hook": "prerouting", "priority": -300, "where": "kernel",
         "families": [4, 6]},
        {"name": "b", "hook": "input", "priority": 5, "where": "queue"},
        {"name": "c", "hook": "output", "priority": 2 ** 31 - 2, "where": "kernel",
         "families": [6]}]}
    assert kattach._points(rec) == {(2, 0, -300), (10, 0, -300), (10, 3, 2 ** 31 - 2)}
    assert kattach._points({"functions": []}) == set()


def test_a_file_splits_into_kernel_and_queue_functions(tmp_path):
    f = tmp_path / "mixed.py"
    f.write_text(textwrap.dedent("""\
        from minifw import hook, ACCEPT, DROP, Addresses

        BAD = Addresses("198.18.64.0/18")
        SEEN = {}

        @hook("input", priority=1)
        def k(pkt):
            if pkt.src in BAD:
                return DROP
            return ACCEPT

        @hook("input", priority=2)
        def q(pkt):
            SEEN[pkt.src] = SEEN.get(pkt.src, 0) + 1
            return ACCEPT

        @hook("input", priority=3, where="queue")
        def asked(pkt):
            return ACCEPT
        """))
    plan = place(str(f), quiet=True)
    assert [(p.spec.name, p.choice.where) for p in plan.placed] == [
        ("k", "kernel"), ("q", "queue"), ("asked", "queue")]
    assert [s.name for s in plan.queue_specs] == ["q", "asked"]
    k = plan.kernel[0]
    assert [kh.family for kh in k.programs] == [4, 6]
    assert k.programs[0].address_maps["BAD"]["v4_lpm"] == "BAD_v4_lpm"
    assert plan.placed[1].choice.reason.startswith(f"auto: does not compile: {f}:14:")
    assert plan.placed[1].programs == ()
    record = kattach._record(plan, "key", 3, "/pins/key-3")
    assert [(fn["name"], fn["where"]) for fn in record["functions"]] == [
        ("k", "kernel"), ("q", "queue"), ("asked", "queue")]
    assert record["functions"][0]["families"] == [4, 6]
    assert record["address_maps"]["BAD"]["v6_hash"] == "BAD_v6_hash"
    assert kattach._points(record) == {(2, 1, 1), (10, 1, 1)}


def test_hook_set_refuses_bad_arguments_before_any_map(tmp_path):
    import json

    import pytest

    from minifw.errors import ConfigError, StateError
    with pytest.raises(ConfigError, match="'add' or 'del', not 'put'"):
        kattach.hook_set(tmp_path, "/h.py", "BLOCKED", "put", ["198.18.0.1"])
    for op, timeout in (("add", 0), ("add", -1.0), ("del", 5.0)):
        with pytest.raises(ConfigError, match="--timeout takes a positive number"):
            kattach.hook_set(tmp_path, "/h.py", "BLOCKED", op, ["198.18.0.1"], timeout)
    with pytest.raises(StateError, match="no kernel hook functions attached"):
        kattach.hook_set(tmp_path, "/h.py", "BLOCKED", "add", ["198.18.0.1"], 0.001)
    (tmp_path / "hooks").mkdir()
    kattach.record_path(tmp_path, "/h.py").write_text(json.dumps(
        {"file": "/h.py", "map_dir": "/nowhere", "address_maps": {"BAD": {}}}))
    with pytest.raises(ConfigError, match=r"no Addresses named 'BLOCKED' .*those it has: BAD"):
        kattach.hook_set(tmp_path, "/h.py", "BLOCKED", "add", ["198.18.0.1"])
    with pytest.raises(ConfigError):
        kattach.hook_set(tmp_path, "/h.py", "BAD", "add", ["not-an-address"])
    kattach.record_path(tmp_path, "/h.py").write_text("{garbage")
    with pytest.raises(StateError, match="is damaged"):
        kattach.hook_set(tmp_path, "/h.py", "BAD", "add", ["198.18.0.1"])
    with pytest.raises(StateError, match="is damaged"):
        kattach.records(tmp_path)
