"""Confirm or roll back without root: the pending-change file's format (a damaged one is one
``error:`` line), the rollback's planning of set elements, and whole rollbacks and confirms on
the fake kernel: the kernel's table, state.json and the config file as they were, element by
element for sets (never a flush), an overdue change rolled back by the next writer, a second
change refused while one waits."""

from __future__ import annotations

import copy
import json

import pytest

from minifw import Firewall
from minifw.app import pending as app_pending
from minifw.cli import common as clicommon
from minifw.cli import main as climain
from minifw.errors import ConfigError, KernelError, StateError
from minifw.kernel import seam
from minifw.store import pending as record
from minifw.store.pending import Pending, SetDiff
from minifw.store.setrecord import CONFIG as FROM_CONFIG, RUNTIME


LOCKOUT = """
[policy]
input = "drop"

[[rule]]
id = "web"
proto = "tcp"
dport = 80
action = "accept"
"""


def sample() -> Pending:
    return Pending(id="ab12", op="reload", seconds=30, started=1000.5, deadline=1030.5,
                   state_before='{"loaded":true}', config="/etc/minifw/minifw.toml",
                   config_sha="f" * 64,
                   sets=[SetDiff("blocked", "ban", {"198.18.1.1": None,
                                                    "198.18.2.0/24": (0, RUNTIME)})],
                   hooks=["/etc/minifw/hooks.py"], timer=4242)


def unhandled(node):
    """The fake kernel's tables without handles: a rebuilt rule gets a new one, as in the
    kernel, which never reuses a handle. Rules in each chain's order (the fake lists all
    chains' rules in one list)."""
    if isinstance(node, dict):
        return {k: (sorted(unhandled(v), key=lambda r: r["chain"]) if k == "rules"
                    else unhandled(v)) for k, v in node.items() if k != "handle"}
    if isinstance(node, list):
        return [unhandled(v) for v in node]
    return copy.deepcopy(node)


def everything(lab) -> dict:
    """The kernel's table with its elements, state.json's bytes and the config's bytes."""
    return {"kernel": unhandled(lab.kernel.tables),
            "state": (lab.state_dir / "state.json").read_bytes(),
            "config": lab.config.read_bytes()}


def overdue(lab) -> None:
    """The deadline passed while no timer ran (a crash, a reboot)."""
    data = json.loads((lab.state_dir / "pending.json").read_text())
    data["deadline"] = data["started"] - 1
    (lab.state_dir / "pending.json").write_text(json.dumps(data))


# ---- the file --------------------------------------------------------------------------------

def test_the_pending_file_round_trips():
    p = sample()
    assert record.decode(record.encode(p)) == p


def test_every_truncation_of_the_pending_file_is_damage(tmp_path):
    text = record.encode(sample())
    for cut in range(len(text) - 1):  # the last byte is the newline
        (tmp_path / "pending.json").write_text(text[:cut])
        with pytest.raises(StateError) as info:
            record.read(tmp_path)
        message = str(info.value)
        assert "\n" not in message and "pending.json" in message and "damaged" in message


@pytest.mark.parametrize("change", [
    {"format": "minifw-pending 2"}, {"op": "down"}, {"seconds": 0}, {"seconds": True},
    {"seconds": 1.5}, {"deadline": "soon"}, {"state_before": 3}, {"timer": "x"},
    {"sets": {}}, {"sets": [{"set": "blocked", "op": "flush", "before": []}]},
    {"hooks": "a.py"}, {"hooks": [3]},
    {"sets": [{"set": "blocked", "op": "ban", "before": [["198.18.1.1", [0]]]}]},
])
def test_a_wrong_field_is_damage(change):
    data = {**sample().to_json(), **change}
    with pytest.raises(ValueError):
        record.pending_from_json(data)


def test_seconds_of_one_is_a_window():
    assert record.pending_from_json({**sample().to_json(), "seconds": 1}).seconds == 1


def test_a_damaged_pending_file_is_one_error_line_for_every_writer(lab, tmp_path, capsys,
                                                                  monkeypatch):
    lab.rules.up(str(lab.config))
    (lab.state_dir / "pending.json").write_text('{"format": "minifw-pending 1", "op": "rel')
    monkeypatch.setattr(clicommon, "privileged", lambda: True)
    before = everything(lab)
    for argv in (["reload"], ["ban", "198.18.3.3"], ["confirm"], ["rollback"],
                 ["add", "--proto", "tcp", "--dport", "81", "--action", "accept"]):
        with seam.use(lab.kernel):
            try:
                code = climain.run(["--state-dir", str(lab.state_dir), *argv])
            except SystemExit as exc:
                code = exc.code
        out, err = capsys.readouterr()
        lines = err.splitlines()
        assert code == 1 and len(lines) == 1, (argv, err)
        assert lines[0].startswith("error: ") and "pending.json" in lines[0], lines
        assert "internal error" not in lines[0]
    assert everything(lab) == before
    with seam.use(lab.kernel):  # status still reports, with a warning
        climain.run(["--state-dir", str(lab.state_dir), "status"])
    out, err = capsys.readouterr()
    assert "warning: " in out and "pending.json" in out


# ---- planning a set's restore ------------------------------------------------------------------

def test_plan_set_restore_pins_each_case():
    at = 5000
    diff = SetDiff("blocked", "ban", {
        "198.18.1.1": None,                       # absent before: its ban goes
        "198.18.1.2": (0, FROM_CONFIG),           # the config's only: the runtime entry goes
        "198.18.1.3": (0, RUNTIME),               # banned for good: banned again
        "198.18.1.4": (at, RUNTIME),              # expired this very second: goes
        "198.18.1.5": (at + 1, RUNTIME),          # one second left: banned again with it
        "198.18.1.6": (at + 1, RUNTIME | FROM_CONFIG),
    })
    drop, again = app_pending.plan_set_restore(diff, at)
    assert drop == ["198.18.1.1", "198.18.1.2", "198.18.1.4"]
    assert again == {0: ["198.18.1.3"], at + 1: ["198.18.1.5", "198.18.1.6"]}


# ---- on the fake kernel ------------------------------------------------------------------------

def test_a_reload_rolled_back_leaves_everything_as_it_was(lab, tmp_path):
    lab.rules.up(str(lab.config))
    lab.sets.ban(["198.18.4.4"], "1h")
    before = everything(lab)
    lockout = tmp_path / "lockout.toml"
    lockout.write_text(LOCKOUT)
    loaded = lab.rules.reload(str(lockout), confirm=30)
    assert "will be rolled back in 30 s unless 'minifw confirm' runs" in loaded.message
    assert lab.kernel.tables != before["kernel"]
    waiting = record.read(lab.state_dir)
    assert waiting.op == "reload" and waiting.timer is None  # no timer for a fake kernel
    assert waiting.state_before.encode() == before["state"]
    sent = len(lab.kernel.sent)
    done = lab.rules.rollback()
    assert done.op == "reload" and done.why == "by 'minifw rollback'"
    assert everything(lab) == before
    # the ruleset came back in ONE transaction, then the sets were brought in line
    rebuilt = lab.kernel.sent[sent]
    assert rebuilt.outcome == "applied"
    assert any("rule" in c.get("add", {}) for c in rebuilt.commands)
    assert not any("flush" in c and "set" in c["flush"] for s in lab.kernel.sent[sent:]
                   for c in s.commands)
    assert not (lab.state_dir / "pending.json").exists()
    status = lab.rules.status()
    assert status.pending is None and status.rolled_back.op == "reload"


def test_an_add_writes_the_config_only_at_confirm(lab):
    lab.rules.up(str(lab.config))
    text = lab.config.read_text()
    added = lab.rules.add({"id": "web", "proto": "tcp", "dport": 80, "action": "accept"},
                          None, False, confirm=60)
    assert "at 'minifw confirm'" in added.message and added.saved_to == str(lab.config)
    assert lab.config.read_text() == text
    assert lab.rules.status().pending.op == "add"
    done = lab.rules.confirm()
    assert done.config_written == str(lab.config)
    assert 'id = "web"' in lab.config.read_text()
    assert lab.rules.status().pending is None
    with pytest.raises(StateError, match="nothing is waiting for confirmation"):
        lab.rules.confirm()


def test_a_delete_rolled_back_keeps_the_config(lab):
    lab.rules.up(str(lab.config))
    before = everything(lab)
    lab.rules.delete("ssh", False, confirm=60)
    assert lab.config.read_bytes() == before["config"]
    lab.rules.rollback()
    assert everything(lab) == before


def test_bans_and_imports_roll_back_element_by_element(lab, tmp_path):
    lab.rules.up(str(lab.config))
    lab.sets.ban(["198.18.4.4"], "1h")
    lab.sets.ban(["198.18.6.0/24"], None)
    before = everything(lab)
    lab.sets.ban(["198.18.4.4", "198.18.5.5"], None, confirm=60)
    lab.rules.rollback()
    lab.sets.unban(["198.18.6.0/24", "198.18.9.9"], confirm=60)
    lab.rules.rollback()
    feed = tmp_path / "feed.txt"
    feed.write_text("198.18.7.7\n198.18.4.4\n198.18.8.0/24\n")
    sent = len(lab.kernel.sent)
    lab.sets.import_file("blocked", str(feed), False, None, confirm=60)
    lab.rules.rollback()
    assert lab.kernel.elements("s_blocked_v4") == {"198.18.4.4", "198.18.9.9"}
    assert lab.kernel.elements("s_blocked_v4net") == {"198.18.6.0/24"}
    assert not any("flush" in c for s in lab.kernel.sent[sent:] for c in s.commands)
    assert 3500 < lab.sets.record.get("blocked", "198.18.4.4")[0] - __import__("time").time()
    assert (lab.state_dir / "state.json").read_bytes() == before["state"]


def test_a_second_change_is_refused_and_a_feed_is_not(lab, tmp_path):
    lab.rules.up(str(lab.config))
    lab.rules.add({"id": "web", "proto": "tcp", "dport": 80, "action": "accept"}, None, True,
                  confirm=60)
    during = copy.deepcopy(lab.kernel.tables)
    refusals = [lambda: lab.rules.reload(None), lambda: lab.rules.down(),
                lambda: lab.rules.delete("web", True),
                lambda: lab.sets.ban(["198.18.5.5"], None, confirm=10),
                lambda: lab.sets.flush("blocked")]
    for change in refusals:
        with pytest.raises(StateError) as info:
            change()
        assert str(info.value).startswith("an add is waiting for confirmation (")
    assert lab.kernel.tables == during
    lab.sets.ban(["198.18.5.5"], None)   # a feed's ban: applies now, stays after a rollback
    lab.rules.rollback()
    assert "198.18.5.5" in lab.kernel.elements("s_blocked_v4")


def test_the_deadline_pins_both_sides(lab, monkeypatch):
    lab.rules.up(str(lab.config))
    lab.rules.add({"id": "web", "proto": "tcp", "dport": 80, "action": "accept"}, None, True,
                  confirm=60)
    deadline = record.read(lab.state_dir).deadline
    clock = app_pending.time
    monkeypatch.setattr(app_pending, "time", type("Clock", (), {
        "time": staticmethod(lambda: deadline - 0.001), "strftime": clock.strftime,
        "localtime": clock.localtime}))
    with pytest.raises(StateError, match="waiting for confirmation"):
        lab.rules.delete("ssh", True)          # a moment before: still pending
    monkeypatch.setattr(app_pending.time, "time", staticmethod(lambda: deadline))
    lab.rules.delete("ssh", True)              # at the deadline: rolled back first, then this
    assert record.read(lab.state_dir) is None
    ids = [r.id for r in lab.rules._live().rules]
    assert "web" not in ids and "ssh" not in ids


def test_an_overdue_change_is_rolled_back_by_the_next_writer_or_reader(lab):
    lab.rules.up(str(lab.config))
    before = everything(lab)
    lab.rules.add({"id": "web", "proto": "tcp", "dport": 80, "action": "accept"}, None, False,
                  confirm=60)
    overdue(lab)
    status = lab.rules.status()              # a reader settles it too
    assert status.pending is None and status.rolled_back.why == "not confirmed within 60 s"
    assert everything(lab) == before
    lab.sets.ban(["198.18.5.5"], None, confirm=60)
    overdue(lab)
    with pytest.raises(StateError, match="too late: the ban was not confirmed within 60 s"):
        lab.rules.confirm()
    assert "198.18.5.5" not in lab.kernel.elements("s_blocked_v4")


def test_up_at_boot_does_not_load_a_config_that_was_rolled_back(lab):
    lab.rules.up(str(lab.config))
    before = everything(lab)
    good = lab.config.read_text()
    lab.config.write_text(LOCKOUT)
    lab.rules.reload(None, confirm=60)
    overdue(lab)
    lab.kernel.tables.clear()                # a reboot: an empty kernel
    with pytest.raises(StateError, match="holds the reload that was rolled back at"):
        lab.rules.up(str(lab.config))
    assert unhandled(lab.kernel.tables) == before["kernel"]
    assert (lab.state_dir / "state.json").read_bytes() == before["state"]
    lab.config.write_text(good)
    assert lab.rules.up(str(lab.config)).changed is False


def test_up_with_confirm_of_what_is_loaded_leaves_nothing_pending(lab):
    lab.rules.up(str(lab.config))
    loaded = lab.rules.up(str(lab.config), confirm=30)
    assert loaded.changed is False and "rolled back" not in loaded.message
    assert not (lab.state_dir / "pending.json").exists()


def test_a_failed_change_leaves_nothing_pending(lab, tmp_path):
    lab.rules.up(str(lab.config))
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\nid = 3\n")
    with pytest.raises(ConfigError):
        lab.rules.reload(str(bad), confirm=30)
    assert not (lab.state_dir / "pending.json").exists()


@pytest.mark.parametrize("seconds", [0, -1, True, 1.5, "3", 86401])
def test_the_api_refuses_a_wrong_window(seconds, tmp_path):
    with pytest.raises(ConfigError, match="--confirm"):
        Firewall(tmp_path).reload(confirm=seconds)


def test_the_cli_bounds_the_window(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(clicommon, "privileged", lambda: True)
    for value in ("0", "86401"):
        code = climain.run(["--state-dir", str(tmp_path), "reload", "--confirm", value])
        assert code == 2
    assert "--confirm" in capsys.readouterr().err


def test_the_timer_rolls_back_only_its_own_overdue_change(lab):
    from minifw.app import pending_timer
    lab.rules.up(str(lab.config))
    before = everything(lab)
    lab.rules.add({"id": "web", "proto": "tcp", "dport": 80, "action": "accept"}, None, True,
                  confirm=60)
    overdue(lab)
    mine = record.read(lab.state_dir).id
    with seam.use(lab.kernel):
        assert pending_timer.wait_and_roll_back(lab.state_dir, "another") == 0
        assert record.read(lab.state_dir) is not None      # not its change: left alone
        assert pending_timer.wait_and_roll_back(lab.state_dir, mine) == 0
    assert record.read(lab.state_dir) is None
    assert everything(lab) == before


def test_the_timer_waits_again_when_the_deadline_moved_while_it_waited_for_the_lock(lab,
                                                                                 monkeypatch):
    """The command was still running at the first deadline (a long import): it set the
    deadline again once its change was in, and the timer must then wait for that one."""
    from minifw.app import pending_timer
    lab.rules.up(str(lab.config))
    lab.rules.add({"id": "web", "proto": "tcp", "dport": 80, "action": "accept"}, None, True,
                  confirm=60)
    overdue(lab)
    mine = record.read(lab.state_dir)
    moved = False
    real_writing = pending_timer.SetService._writing
    slept = []

    def writing(self, *args, **kwargs):
        nonlocal moved
        if not moved:  # the command re-arms the change while the timer waits for the lock
            moved = True
            data = json.loads((lab.state_dir / "pending.json").read_text())
            data["deadline"] = data["started"] + 1e6
            (lab.state_dir / "pending.json").write_text(json.dumps(data))
        return real_writing(self, *args, **kwargs)

    def sleep(seconds):
        slept.append(seconds)
        overdue(lab)  # time passes: this deadline comes too
    monkeypatch.setattr(pending_timer.SetService, "_writing", writing)
    monkeypatch.setattr(pending_timer.time, "sleep", sleep)
    with seam.use(lab.kernel):
        assert pending_timer.wait_and_roll_back(lab.state_dir, mine.id) == 0
    assert slept and record.read(lab.state_dir) is None
    assert lab.rules.status().rolled_back.op == "add"


def test_a_change_that_went_in_before_its_command_failed_stays_on_the_timer(lab, tmp_path):
    lab.rules.up(str(lab.config))
    before = everything(lab)
    lockout = tmp_path / "lockout.toml"
    lockout.write_text(LOCKOUT)
    lab.kernel.fail_after_commit()   # the kernel took it, then the ack was lost
    with pytest.raises(KernelError):
        lab.rules.reload(str(lockout), confirm=30)
    # settled against the kernel: the reload is in, so it waits for confirmation
    assert (lab.state_dir / "state.json").read_bytes() != before["state"]
    assert record.read(lab.state_dir).op == "reload"
    lab.rules.rollback()
    assert everything(lab) == before
