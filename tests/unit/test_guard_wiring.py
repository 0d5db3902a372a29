"""The lockout guard wired into the operations, on the fake kernel: a change that would cut a
protected session is refused with one line and changes nothing (kernel, config, state, set
record); --force applies it with a warning; a ban into `blocked` refuses exactly when the
client is covered."""

from __future__ import annotations

import ipaddress

import pytest

from minifw.app.guard import Guard
from minifw.engine.guard import Connection
from minifw.errors import GuardError, LockoutError


ip = ipaddress.ip_address
ADMIN = Connection(ip("198.18.0.2"), 40000, ip("198.18.0.1"), 22, "sshd")
LOCKED = '[policy]\ninput = "drop"\n'


def up(lab, text=None):
    if text is not None:
        lab.config.write_text(text)
    return lab.rules.up(str(lab.config), guard=Guard())


def test_a_reload_that_drops_the_session_is_refused_and_changes_nothing(lab):
    up(lab)
    lab.kernel.sessions = [ADMIN]
    before = lab.snapshot()
    lab.config.write_text(LOCKED)
    with pytest.raises(LockoutError) as err:
        lab.rules.reload(str(lab.config), guard=Guard())
    assert str(err.value) == (
        "this change would cut 198.18.0.2:40000 -> 198.18.0.1:22 (ssh session found via "
        "sshd): a new connection in is dropped by the input policy (drop); use --force to "
        "apply anyway")
    after = lab.snapshot()
    assert after["kernel"] == before["kernel"] and after["files"] == before["files"]
    assert after["record"] == before["record"]
    forced = lab.rules.reload(str(lab.config), guard=Guard(force=True))
    assert forced.warnings[0].startswith("--force: this change would cut 198.18.0.2:40000")
    assert lab.snapshot()["kernel"] != before["kernel"]


def test_no_guard_and_no_session_warn_only_where_a_hook_drops(lab):
    assert up(lab).warnings == ()
    lab.config.write_text(LOCKED)
    got = lab.rules.reload(str(lab.config), guard=Guard())
    assert any("so the guard checked nothing" in w for w in got.warnings)
    # without a guard (a rollback, an internal caller) nothing is checked or said
    assert lab.rules.reload(str(lab.config)).warnings == ()


def test_add_and_delete_are_checked_on_the_new_ruleset(lab):
    up(lab, LOCKED + '[[rule]]\nid = "ssh"\nproto = "tcp"\ndport = 22\naction = "accept"\n')
    lab.kernel.sessions = [ADMIN]
    before = lab.snapshot()
    with pytest.raises(LockoutError, match="by rule 'cut'"):
        lab.rules.add({"id": "cut", "src": "198.18.0.2", "action": "drop"}, 0, False,
                      guard=Guard())
    with pytest.raises(LockoutError, match="input policy"):
        lab.rules.delete("ssh", False, guard=Guard())
    assert lab.snapshot() == before
    # a rule that drops someone else passes
    lab.rules.add({"id": "other", "src": "198.18.0.3", "action": "drop"}, 0, False,
                  guard=Guard())


@pytest.mark.parametrize("element, cut", [
    ("198.18.0.2", True), ("198.18.0.0/24", True), ("198.18.0.3", False),
    ("198.18.0.4/30", False), ("fd00::2", False),
])
def test_a_ban_into_blocked_refuses_exactly_when_the_client_is_covered(lab, element, cut):
    up(lab)
    lab.kernel.sessions = [ADMIN]
    before = lab.snapshot()
    if cut:
        with pytest.raises(LockoutError, match="dropped by the ban set @blocked"):
            lab.sets.ban([element], None, guard=Guard())
        assert lab.snapshot() == before
        assert lab.sets.ban([element], None, guard=Guard(force=True)).warnings[0].startswith(
            "--force: this change would cut")
    else:
        assert lab.sets.ban([element], None, guard=Guard()).warnings == ()


def test_an_import_into_blocked_and_a_guard_peer(lab, tmp_path):
    up(lab)
    feed = tmp_path / "feed.txt"
    feed.write_text("198.18.5.5\n198.18.7.7\n")
    before = lab.snapshot()
    with pytest.raises(LockoutError, match=r"198.18.7.7:40000 -> 198.18.0.1:2222 \(given by "):
        lab.sets.import_file("blocked", str(feed), False, None, guard=Guard(["198.18.7.7:2222"]))
    assert lab.snapshot() == before
    lab.sets.import_file("blocked", str(feed), False, None, guard=Guard(["198.18.7.8:22"]))


def test_unban_matters_only_for_a_set_an_accept_rule_uses(lab):
    up(lab, LOCKED + '[[rule]]\nid = "admins"\nproto = "tcp"\ndport = 22\nsrc = "@admins"\n'
        'action = "accept"\n[[set]]\nname = "admins"\n[[set]]\nname = "other"\n')
    lab.sets.ban(["198.18.0.2"], None, "admins", guard=Guard())
    lab.kernel.sessions = [ADMIN]
    before = lab.snapshot()
    with pytest.raises(LockoutError, match="input policy"):
        lab.sets.unban(["198.18.0.2"], "admins", guard=Guard())
    assert lab.snapshot() == before
    lab.sets.unban(["198.18.0.9"], "admins", guard=Guard())   # not the admin's: passes
    lab.sets.ban(["198.18.0.2"], None, "other", guard=Guard())
    lab.sets.unban(["198.18.0.2"], "other", guard=Guard())    # no rule uses it


def test_a_malformed_guard_fails_before_anything():
    with pytest.raises(GuardError, match="expected ADDR:PORT"):
        Guard(["198.18.0.2"])


def test_check_lists_every_cut_and_refuses_nothing(lab):
    lab.kernel.sessions = [ADMIN]
    lab.config.write_text('[policy]\ninput = "drop"\nstateful = false\n')
    checked = lab.rules.check(str(lab.config), guard=Guard(force=True))
    assert checked.guard == (
        "refused without --force: this change would cut 198.18.0.2:40000 -> 198.18.0.1:22 "
        "(ssh session found via sshd): a new connection in is dropped by the input policy "
        "(drop)",
        "refused without --force: this change would cut 198.18.0.2:40000 -> 198.18.0.1:22 "
        "(ssh session found via sshd): an established packet in is dropped by the input "
        "policy (drop)")
    assert checked.to_json()["guard"] == list(checked.guard)
    assert lab.kernel.sent == []
    # nothing to say: the document alone, as nft -j -f takes it
    lab.config.write_text('[[rule]]\nid = "ssh"\nproto = "tcp"\ndport = 22\naction = "accept"\n')
    plain = lab.rules.check(str(lab.config), guard=Guard(force=True))
    assert plain.guard == () and list(plain.to_json()) == ["nftables"]


def test_a_hook_functions_verdict_warns_and_never_refuses():
    from minifw.app.guard import verdict
    from minifw.engine.explain import HookFunction
    from minifw.engine.guard import check
    from minifw.model import Hook, Ruleset

    locked = Ruleset.from_toml({"policy": {"input": "drop"}})
    findings = check(locked, [ADMIN], None, [HookFunction("gate", Hook.INPUT, -10)])
    assert [f.verdict for f in findings][:2] == ["runtime", "runtime"]
    warnings = verdict(findings, [ADMIN], locked, Guard())
    assert warnings and all("decided at run time by hook function 'gate'" in w
                            for w in warnings)
    # the same ruleset without the function is refused
    with pytest.raises(LockoutError):
        verdict(check(locked, [ADMIN]), [ADMIN], locked, Guard())


def test_ssh_connection_counts_where_its_port_is_served():
    from minifw.engine.sockets import TcpSocket
    from minifw.kernel.conns import served_here

    fields = (ip("198.18.0.2"), 40000, ip("198.18.0.1"), 22)

    def listener(addr, port):
        return TcpSocket(ip(addr), port, ip("0.0.0.0"), 0, "listen", 1)
    assert served_here(fields, None)                                   # no table: as given
    assert not served_here(fields, [])
    assert served_here(fields, [listener("0.0.0.0", 22)])
    assert served_here(fields, [listener("::", 22)])
    assert served_here(fields, [listener("::ffff:198.18.0.1", 22)])
    assert served_here(fields, [listener("198.18.0.1", 22)])
    assert not served_here(fields, [listener("198.18.0.9", 22)])       # another address
    assert not served_here(fields, [listener("0.0.0.0", 23), listener("0.0.0.0", 21)])


def test_check_creates_no_state(tmp_path, no_real_kernel):  # noqa: F811
    from minifw.app.rules import Service
    from minifw.kernel.fake import FakeKernel

    kernel = FakeKernel()
    kernel.sessions = [ADMIN]
    config = tmp_path / "c.toml"
    config.write_text(LOCKED)
    state = tmp_path / "state"
    checked = Service(state, kernel).check(str(config), guard=Guard(force=True))
    assert checked.guard[0].startswith("refused without --force: this change would cut")
    assert not state.exists()
