"""Failsafe start on the fake kernel: the decisions of ``up`` when minifw is not loaded and the
config fails (validation or the kernel's refusal), the last good ruleset's file, and the
failsafe record that ``status`` reports."""

from __future__ import annotations

import json

import pytest

from minifw.compile import nft as compiler
from minifw.compile.sets import kernel_name
from minifw.errors import ConfigError, FailsafeError, KernelError, StateError
from minifw.model import parse_config
from minifw.store import lastgood
from minifw.store.state import State

from fakekit import CONFIG

# another ruleset, with another layout (rule ids per chain), so the two are told apart
OTHER = CONFIG.replace("dport = 22", "dport = 2222") + """
[[rule]]
id = "web"
proto = "tcp"
dport = 80
action = "accept"
"""
BROKEN = CONFIG + '\n[[rule]]\nid = "oops"\nproto = "tcp"\ndport = 99999\naction = "accept"\n'


def layout_of(text: str) -> dict:
    return compiler.expected_layout(compiler.build_load(parse_config(text, "x")))


def blocked(lab) -> set[str]:
    return lab.kernel.elements(kernel_name("blocked", 4, False))


def boot(lab) -> None:
    """What a reboot leaves: the kernel empty, the state directory as it was (says up)."""
    lab.kernel.tables.clear()


def good_then_boot(lab):
    lab.rules.up(str(lab.config))
    boot(lab)
    assert lab.rules.store.load().loaded  # stale: the kernel has nothing


# ---- the last good file ------------------------------------------------------------------------

def test_up_reload_add_delete_save_the_last_good_and_down_keeps_it(lab):
    store = lab.rules.store
    assert lastgood.last_good(store) is None
    lab.rules.up(str(lab.config))
    first = lastgood.last_good(store)
    assert first.ruleset == parse_config(CONFIG, "x").to_toml()
    assert first.config == str(lab.config) and first.hook_files == () and first.rules == 2
    # an up that finds it in place changes nothing, the saved time included
    saved = (store.dir / lastgood.LAST_GOOD).read_bytes()
    assert not lab.rules.up(str(lab.config)).changed
    assert (store.dir / lastgood.LAST_GOOD).read_bytes() == saved
    lab.config.write_text(OTHER)
    lab.rules.reload(None)
    assert lastgood.last_good(store).ruleset == parse_config(OTHER, "x").to_toml()
    lab.rules.add({"id": "www", "proto": "tcp", "dport": 8080, "action": "accept"}, None, True)
    saved = lastgood.last_good(store)
    assert [r["id"] for r in saved.ruleset["rule"]] == ["ping", "ssh", "web", "www"]
    assert saved.ruleset["runtime"] == ["www"]       # as state.json has it
    lab.rules.delete("www", runtime=True)
    assert [r["id"] for r in lastgood.last_good(store).ruleset["rule"]] == ["ping", "ssh", "web"]
    lab.rules.down()
    assert lastgood.last_good(store).ruleset == parse_config(OTHER, "x").to_toml()


def test_a_refused_change_is_not_last_good(lab):
    lab.rules.up(str(lab.config))
    before = (lab.rules.store.dir / lastgood.LAST_GOOD).read_bytes()
    lab.config.write_text(OTHER)
    lab.kernel.refuse_next()
    with pytest.raises(KernelError):
        lab.rules.reload(None)
    lab.kernel.refuse_next()
    with pytest.raises(KernelError):
        lab.rules.add({"id": "web", "proto": "tcp", "dport": 80, "action": "accept"}, None, True)
    assert (lab.rules.store.dir / lastgood.LAST_GOOD).read_bytes() == before


@pytest.mark.parametrize("text", [
    "", "{", "[]", "null", '{"ruleset": [], "config": null, "when": 1}',
    '{"ruleset": {}, "config": 5, "when": 1}', '{"ruleset": {}, "config": null, "when": "x"}',
    '{"ruleset": {}, "config": null, "when": NaN}', '{"ruleset": {}, "config": null, "when": -1}',
    '{"ruleset": {}, "config": null, "when": true}',
    '{"ruleset": {"rule": 3}, "config": null, "when": 1}',
    '{"ruleset": {}, "config": null, "when": 1, "hook_files": [1]}', "[" * 100000])
def test_a_damaged_last_good_file_is_one_state_error(lab, text):
    (lab.state_dir).mkdir(parents=True, exist_ok=True)
    (lab.state_dir / lastgood.LAST_GOOD).write_text(text)
    with pytest.raises(StateError, match="lastgood.json") as caught:
        lastgood.last_good(lab.rules.store)
    assert "\n" not in str(caught.value)


def test_the_time_bounds_of_a_last_good_file(lab):
    store = lab.rules.store
    for when, ok in ((0, True), (-0.001, False), (1e11 - 1, True), (1e11, False)):
        lastgood.remember_good(store, {}, None, when=when)
        if ok:
            assert lastgood.last_good(store).when == when
        else:
            with pytest.raises(StateError):
                lastgood.last_good(store)


# ---- the decisions of up -------------------------------------------------------------------------

def test_broken_config_at_boot_loads_the_last_good_ruleset(lab):
    good_then_boot(lab)
    sent = len(lab.kernel.sent)
    lab.config.write_text(BROKEN)
    with pytest.raises(FailsafeError) as caught:
        lab.rules.up(str(lab.config))
    err = caught.value
    assert err.loaded and isinstance(err.__cause__, ConfigError)
    message = str(err)
    assert "\n" not in message and "'oops'" in message and "'dport'" in message
    assert "loaded the last good ruleset from" in message and "2 rules" in message
    # the last good ruleset is in force, its sets too (from the set record)
    assert lab.kernel.declarative_layout() == layout_of(CONFIG)
    assert blocked(lab) == {"198.18.9.9"}
    # the chains and policies went in as ONE transaction, the first after the boot
    first = lab.kernel.sent[sent:][0]
    assert first.outcome == "applied"
    assert set(layout_of(CONFIG)) <= {c["add"]["chain"]["name"] for c in first.commands
                                      if "chain" in c.get("add", {})}
    state = lab.rules.store.load()
    assert state.loaded and state.config == str(lab.config)
    st = lab.rules.status()
    assert st.loaded and not st.in_force
    fs = st.failsafe
    assert fs.running and fs.config == str(lab.config) and "'oops'" in fs.error
    assert fs.last_good_rules == 2 and fs.last_good_config == str(lab.config)
    assert fs.line().startswith(f"failsafe: running the last good ruleset from "
                                f"{fs.last_good_at}, config error: ")
    assert st.to_json()["failsafe"]["last_good"]["rules"] == 2
    assert [r.id for r in lab.rules.list_rules().rules] == ["ping", "ssh"]


def test_failsafe_after_down(lab):
    lab.rules.up(str(lab.config))
    lab.rules.down()
    lab.config.write_text("this is not TOML")
    with pytest.raises(FailsafeError, match="TOML") as caught:
        lab.rules.up(str(lab.config))
    assert caught.value.loaded
    assert lab.kernel.declarative_layout() == layout_of(CONFIG)


def test_unreadable_config_and_bad_hook_entry_fall_back_too(lab, tmp_path):
    good_then_boot(lab)
    missing = tmp_path / "gone.toml"
    with pytest.raises(FailsafeError, match="no such config file"):
        lab.rules.up(str(missing))
    assert lab.kernel.declarative_layout() == layout_of(CONFIG)
    assert lab.rules.status().failsafe.config == str(missing)
    boot(lab)
    lab.config.write_text(CONFIG + '\n[[hook]]\nfile = "no-such-hooks.py"\n')
    with pytest.raises(FailsafeError, match="no-such-hooks.py"):
        lab.rules.up(str(lab.config))
    assert lab.kernel.declarative_layout() == layout_of(CONFIG)


def test_a_config_the_kernel_refuses_at_boot_loads_the_last_good_ruleset(lab):
    good_then_boot(lab)
    sent = len(lab.kernel.sent)
    lab.config.write_text(OTHER)      # valid, but the kernel refuses its load
    lab.kernel.refuse_next()
    with pytest.raises(FailsafeError, match="Operation not permitted") as caught:
        lab.rules.up(str(lab.config))
    assert caught.value.loaded and isinstance(caught.value.__cause__, KernelError)
    assert lab.kernel.declarative_layout() == layout_of(CONFIG)
    assert lab.rules.status().failsafe.error.startswith("the kernel refused it: ")
    # the stale state said up: the refused load was taken back, not sent again
    assert [s.outcome for s in lab.kernel.sent[sent:sent + 2]] == ["refused", "applied"]
    assert [s.outcome for s in lab.kernel.sent].count("refused") == 1


def test_last_good_refused_too_leaves_nothing_and_says_so(lab):
    good_then_boot(lab)
    lab.config.write_text(OTHER)
    lab.kernel.refuse_next()
    lab.kernel.refuse_next()
    with pytest.raises(FailsafeError, match="refused too.*nothing was loaded") as caught:
        lab.rules.up(str(lab.config))
    assert not caught.value.loaded
    assert not lab.kernel.exists()
    st = lab.rules.status()
    assert not st.loaded and not st.in_force and not st.failsafe.running
    assert st.failsafe.load_error and "is not loaded" in st.failsafe.line()
    assert not lab.rules.store.load().loaded
    assert lab.rules.store.read_intent() is None


def test_no_last_good_and_a_broken_config_loads_nothing(lab):
    lab.config.write_text(BROKEN)
    with pytest.raises(FailsafeError, match="no last good ruleset exists, so nothing was "
                                           "loaded") as caught:
        lab.rules.up(str(lab.config))
    assert not caught.value.loaded and "'oops'" in str(caught.value)
    assert lab.kernel.sent == [] and not lab.kernel.exists()
    st = lab.rules.status()
    assert not st.loaded and not st.in_force
    assert st.failsafe.line().startswith("failsafe: no last good ruleset exists, nothing is "
                                         "loaded, config error: ")
    assert st.to_json()["failsafe"]["last_good"] is None
    # fixing the config and reloading (the config is remembered) ends it
    lab.config.write_text(CONFIG)
    lab.rules.reload(None)
    st = lab.rules.status()
    assert st.loaded and st.in_force and st.failsafe is None


def test_a_damaged_last_good_file_loads_nothing_in_one_line(lab):
    good_then_boot(lab)
    (lab.state_dir / lastgood.LAST_GOOD).write_text("{")
    lab.config.write_text(BROKEN)
    with pytest.raises(FailsafeError, match="cannot be used.*nothing was loaded") as caught:
        lab.rules.up(str(lab.config))
    assert "\n" not in str(caught.value) and not lab.kernel.exists()
    assert "cannot be used" in lab.rules.status().failsafe.line()


def test_when_loaded_bad_input_changes_nothing(lab):
    lab.rules.up(str(lab.config))
    before = lab.snapshot()
    lab.config.write_text(BROKEN)
    with pytest.raises(ConfigError) as caught:
        lab.rules.up(str(lab.config))
    assert not isinstance(caught.value, FailsafeError)
    lab.config.write_text(OTHER)
    lab.kernel.refuse_next()
    with pytest.raises(KernelError) as refused:
        lab.rules.up(str(lab.config))
    assert not isinstance(refused.value, FailsafeError)
    lab.config.write_text(CONFIG)
    assert lab.snapshot() == before
    assert lab.rules.status().failsafe is None


def test_a_table_of_minifw_loaded_counts_as_loaded_even_if_the_state_says_not(lab):
    lab.rules.up(str(lab.config))
    lab.rules.store.save(State())        # the state lost, the kernel still holds the table
    lab.config.write_text(BROKEN)
    with pytest.raises(ConfigError) as caught:
        lab.rules.up(str(lab.config))
    assert not isinstance(caught.value, FailsafeError)
    assert lab.rules.status().failsafe is None


def test_a_good_up_or_reload_ends_the_failsafe_and_down_clears_it(lab):
    good_then_boot(lab)
    lab.config.write_text(BROKEN)
    with pytest.raises(FailsafeError):
        lab.rules.up(str(lab.config))
    # still broken while in failsafe: nothing changes, the failsafe stays
    record = (lab.state_dir / lastgood.FAILSAFE).read_bytes()
    with pytest.raises(ConfigError):
        lab.rules.up(str(lab.config))
    assert (lab.state_dir / lastgood.FAILSAFE).read_bytes() == record
    # an edit while in failsafe is applied (and is the last good), the failsafe stays
    lab.rules.add({"id": "web", "proto": "tcp", "dport": 80, "action": "accept"}, None, True)
    assert lab.rules.status().failsafe is not None
    # the same ruleset as the last good one: up finds it in place, and ends the failsafe
    lab.rules.delete("web", runtime=True)
    lab.config.write_text(CONFIG)
    assert not lab.rules.up(str(lab.config)).changed
    assert lab.rules.status().failsafe is None
    # reload ends it as well
    boot(lab)
    lab.config.write_text(BROKEN)
    with pytest.raises(FailsafeError):
        lab.rules.up(str(lab.config))
    lab.config.write_text(OTHER)
    lab.rules.reload(None)
    assert lab.rules.status().failsafe is None
    # down clears it, and keeps the last good ruleset for the next boot
    boot(lab)
    lab.config.write_text(BROKEN)
    with pytest.raises(FailsafeError):
        lab.rules.up(str(lab.config))
    lab.rules.down()
    assert lab.rules.status().failsafe is None
    assert lastgood.last_good(lab.rules.store) is not None


def test_hook_files_of_the_last_good_ruleset_are_named_not_started(lab):
    lab.rules.up(str(lab.config))
    boot(lab)
    good = lastgood.last_good(lab.rules.store)
    lastgood.remember_good(lab.rules.store, good.ruleset, good.config, good.when,
                           hook_files=["/etc/minifw/gate.py"])
    lab.config.write_text(BROKEN)
    with pytest.raises(FailsafeError, match="its 1 hook file not started"):
        lab.rules.up(str(lab.config))
    assert lab.rules.status().failsafe.hook_files_not_started == ("/etc/minifw/gate.py",)


@pytest.mark.parametrize("text", ["{", "[]", '{"since": 1}', '{"since": 1, "config": "c", '
                                  '"error": "e", "loaded": "yes"}'])
def test_a_damaged_failsafe_record_is_one_state_error_and_up_rewrites_it(lab, text):
    lab.rules.up(str(lab.config))
    (lab.state_dir / lastgood.FAILSAFE).write_text(text)
    with pytest.raises(StateError, match="failsafe.json") as caught:
        lab.rules.status()
    assert "\n" not in str(caught.value)
    lab.rules.up(str(lab.config))
    assert lab.rules.status().failsafe is None


def test_the_record_reads_back(lab):
    store = lab.rules.store
    lab.rules.up(str(lab.config))
    good = lastgood.last_good(store)
    record = lastgood.Failsafe(since=5.5, config="/c", error="e", last_good=good, loaded=True)
    lastgood.record_failsafe(store, record)
    assert lastgood.failsafe(store) == record
    data = json.loads((store.dir / lastgood.FAILSAFE).read_text())
    assert data["last_good"]["config"] == str(lab.config)
