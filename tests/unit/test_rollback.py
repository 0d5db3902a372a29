"""The rollback paths of the operations, driven through the fake kernel (no root): a refused
transaction changes nothing anywhere; a failure after the kernel's commit is settled against
the kernel at once (adopted, taken back or applied again); a failed import is taken back so
that the record and the kernel agree."""

from __future__ import annotations

import pytest

from minifw.app.settle import settle_intent
from minifw.compile import names
from minifw.compile import nft as compiler
from minifw.errors import FailsafeError, KernelError, StateError
from minifw.kernel.seam import PartialAdd
from minifw.model import Ruleset, parse_config
from minifw.store.state import State

from fakekit import CONFIG

RELOADED = CONFIG + """
[[rule]]
id = "web"
proto = "tcp"
dport = 80
action = "accept"
"""


def layout_of(text: str) -> dict:
    return compiler.expected_layout(compiler.build_load(parse_config(text, "x")))


def up(lab):
    lab.rules.up(str(lab.config))
    assert lab.kernel.declarative_layout() == layout_of(CONFIG)


# ---- whole-ruleset loads ---------------------------------------------------------------------

def test_a_refused_first_up_leaves_nothing(lab):
    lab.kernel.refuse_next()
    # with no last good ruleset to fall back to (failsafe start), nothing at all
    with pytest.raises(FailsafeError, match="nftables refused the change.*nothing was loaded") \
            as caught:
        lab.rules.up(str(lab.config))
    assert isinstance(caught.value.__cause__, KernelError) and not caught.value.loaded
    assert not lab.kernel.exists()
    assert not lab.rules.store.load().loaded
    assert not lab.rules.store.intent_file.exists()
    assert [s.outcome for s in lab.kernel.sent] == ["refused"]


def test_a_refused_reload_leaves_kernel_state_and_intent_as_before(lab):
    up(lab)
    before = lab.snapshot()
    lab.config.write_text(RELOADED)
    lab.kernel.refuse_next()
    with pytest.raises(KernelError):
        lab.rules.reload(None)
    lab.config.write_text(CONFIG)
    assert lab.snapshot() == before
    assert lab.rules.store.read_intent() is None


def test_a_refused_reload_that_changes_only_a_port_leaves_the_state_as_before(lab):
    """The same chains and rule ids, other contents: only the refusal itself can tell that
    nothing changed (a settle against the kernel would adopt the intent)."""
    up(lab)
    before = lab.snapshot()
    assert "dport = 22" in CONFIG
    lab.config.write_text(CONFIG.replace("dport = 22", "dport = 2222"))
    lab.kernel.refuse_next()
    with pytest.raises(KernelError):
        lab.rules.reload(None)
    lab.config.write_text(CONFIG)
    assert lab.snapshot() == before
    ssh = Ruleset.from_toml(lab.rules.store.load().ruleset).get("ssh")
    assert ssh.match_dict()["dport"] == 22
    assert lab.rules.store.read_intent() is None


def test_a_reload_that_fails_after_the_commit_is_adopted(lab):
    up(lab)
    lab.config.write_text(RELOADED)
    lab.kernel.fail_after_commit()
    with pytest.raises(KernelError):  # the operator still hears of the failure
        lab.rules.reload(None)
    state = lab.rules.store.load()
    assert Ruleset.from_toml(state.ruleset).get("web") is not None  # the state follows the kernel
    assert lab.kernel.declarative_layout() == layout_of(RELOADED)
    assert lab.rules.store.read_intent() is None


def test_a_down_that_fails_after_the_commit_is_adopted_and_a_refused_one_changes_nothing(lab):
    up(lab)
    before = lab.snapshot()
    lab.kernel.refuse_next()
    with pytest.raises(KernelError):
        lab.rules.down()
    assert lab.snapshot()["kernel"] == before["kernel"]
    assert lab.rules.store.load().loaded and lab.rules.store.read_intent() is None
    lab.kernel.fail_after_commit()
    with pytest.raises(KernelError):
        lab.rules.down()
    assert not lab.kernel.exists()
    assert not lab.rules.store.load().loaded and lab.rules.store.read_intent() is None


# ---- settling an intent a kill left behind -----------------------------------------------------

def test_an_intent_the_kernel_never_saw_is_taken_back(lab):
    up(lab)
    before = lab.snapshot()
    new = State(loaded=True, config=str(lab.config),
                ruleset=parse_config(RELOADED, "x").to_toml())
    lab.rules.store.write_intent("load", new)  # killed before the kernel transaction
    with lab.rules.store.locked():
        assert settle_intent(lab.rules.store, lab.kernel) == "took back"
    assert lab.snapshot() == before


def test_an_intent_the_kernel_took_is_adopted(lab):
    up(lab)
    ruleset = parse_config(RELOADED, "x")
    new = State(loaded=True, config=str(lab.config), ruleset=ruleset.to_toml())
    lab.rules.store.write_intent("load", new)
    chains, limits = lab.kernel.objects()
    sets, _, _ = lab.kernel.kernel_objects()
    lab.kernel.run(compiler.build_load(ruleset, chains, limits, sets))  # killed after it
    sent = len(lab.kernel.sent)
    with lab.rules.store.locked():
        assert settle_intent(lab.rules.store, lab.kernel) == "adopted"
    assert len(lab.kernel.sent) == sent  # nothing sent again
    assert lab.rules.store.load() == new and lab.rules.store.read_intent() is None


def test_an_intent_the_kernel_holds_neither_side_of_is_applied_again(lab):
    up(lab)
    new = State(loaded=True, config=str(lab.config),
                ruleset=parse_config(RELOADED, "x").to_toml())
    lab.rules.store.write_intent("load", new)
    # another tool flushed a declarative chain meanwhile: neither the old nor the new layout
    chain = next(iter(layout_of(CONFIG)))
    lab.kernel.run({"nftables": [{"flush": {"chain": {"family": "inet", "table": "minifw",
                                                      "name": chain}}}]})
    with lab.rules.store.locked():
        assert settle_intent(lab.rules.store, lab.kernel) == "applied again"
    assert lab.kernel.declarative_layout() == layout_of(RELOADED)
    assert lab.rules.store.load() == new and lab.rules.store.read_intent() is None


def test_an_intent_that_cannot_be_applied_again_is_dropped_with_one_state_error(lab):
    up(lab)
    new = State(loaded=True, config=str(lab.config),
                ruleset=parse_config(RELOADED, "x").to_toml())
    lab.rules.store.write_intent("load", new)
    chain = next(iter(layout_of(CONFIG)))
    lab.kernel.run({"nftables": [{"flush": {"chain": {"family": "inet", "table": "minifw",
                                                      "name": chain}}}]})
    lab.kernel.refuse_next()
    with lab.rules.store.locked(), pytest.raises(StateError, match="could not be completed"):
        settle_intent(lab.rules.store, lab.kernel)
    assert lab.rules.store.read_intent() is None
    assert not Ruleset.from_toml(lab.rules.store.load().ruleset).get("web")


def test_the_next_command_settles_a_killed_down(lab):
    up(lab)
    lab.rules.store.write_intent("down", State())
    lab.kernel.run(compiler.build_down())  # the kill came after the kernel's commit
    assert lab.rules.status().loaded is False
    assert not lab.rules.store.load().loaded and lab.rules.store.read_intent() is None


# ---- incremental edits ----------------------------------------------------------------------

WEB = {"id": "web", "proto": "tcp", "dport": 80, "action": "accept"}


@pytest.mark.parametrize("runtime", [False, True])
def test_a_refused_add_or_delete_changes_nothing(lab, runtime):
    up(lab)
    before = lab.snapshot()
    lab.kernel.refuse_next()
    with pytest.raises(KernelError):
        lab.rules.add(WEB, None, runtime)
    assert lab.snapshot() == before
    lab.kernel.refuse_next()
    with pytest.raises(KernelError):
        lab.rules.delete("ping", runtime)
    assert lab.snapshot() == before


def test_an_add_that_fails_after_the_commit_is_adopted_with_its_config_edit(lab):
    up(lab)
    lab.kernel.fail_after_commit()
    with pytest.raises(KernelError):
        lab.rules.add(WEB, 0, False)
    assert lab.rules.store.read_intent() is None
    assert Ruleset.from_toml(lab.rules.store.load().ruleset).get("web") is not None
    assert parse_config(lab.config.read_text(), "x").get("web") is not None
    assert "web" in [lr.rule_id for lr in lab.kernel.chain_rules(names.rule_chain(
        *next(iter(Ruleset.from_toml(lab.rules.store.load().ruleset).chains()))[0]))]


def test_a_delete_that_fails_after_the_commit_is_adopted_with_its_config_edit(lab):
    up(lab)
    lab.kernel.fail_after_commit()
    with pytest.raises(KernelError):
        lab.rules.delete("ping", False)
    assert lab.rules.store.read_intent() is None
    assert Ruleset.from_toml(lab.rules.store.load().ruleset).get("ping") is None
    assert parse_config(lab.config.read_text(), "x").get("ping") is None
    ids = [c for comments in lab.kernel.declarative_layout().values() for c in comments]
    assert not any(c and "ping" in c for c in ids)


# ---- sets -------------------------------------------------------------------------------------

def test_a_refused_ban_changes_neither_the_record_nor_the_kernel(lab):
    up(lab)
    before = lab.snapshot()
    lab.kernel.refuse_next()
    with pytest.raises(KernelError):
        lab.sets.ban(["198.18.5.5"], None)
    assert lab.snapshot() == before
    assert not lab.sets.journal_file.exists()


def _import_file(lab, lines):
    path = lab.config.parent / "import.txt"
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


def test_an_import_whose_element_send_is_refused_is_taken_back(lab):
    up(lab)
    lab.sets.ban(["198.18.5.5"], None)
    before = lab.snapshot()
    path = _import_file(lab, [f"198.18.7.{i}" for i in range(1, 6)])
    lab.kernel.refuse_next(only="elements")
    with pytest.raises(KernelError):
        lab.sets.import_file("blocked", path, False, None)
    assert lab.snapshot() == before
    assert not lab.sets.journal_file.exists()


def test_an_import_cut_short_after_some_chunks_is_taken_back(lab):
    """The sender commits chunk by chunk: a failure after the first leaves addresses in the
    kernel that the record did not take; they are taken back out."""
    up(lab)
    lab.sets.ban(["198.18.5.5"], None)
    before = lab.snapshot()
    lab.kernel.chunk = 2
    path = _import_file(lab, [f"198.18.7.{i}" for i in range(1, 8)])
    lab.kernel.refuse_next(skip=2, only="elements")  # the third chunk
    with pytest.raises(KernelError, match="taken back") as info:
        lab.sets.import_file("blocked", path, False, None)
    assert isinstance(info.value.__cause__, PartialAdd) and info.value.__cause__.applied == 2
    assert lab.snapshot() == before
    assert lab.kernel.elements("s_blocked_v4") == {"198.18.9.9", "198.18.5.5"}


def test_an_import_whose_cidrs_fail_after_its_addresses_went_in_is_taken_back(lab):
    up(lab)
    before = lab.snapshot()
    path = _import_file(lab, ["198.18.7.1", "198.18.7.2", "198.18.64.0/24"])
    # the addresses go in (elements); the CIDRs' document after them is refused
    lab.kernel.refuse_next(skip=1, only="document")
    with pytest.raises(KernelError, match="taken back"):
        lab.sets.import_file("blocked", path, False, None)
    after = lab.snapshot()
    # the ban chain stays armed for the CIDRs it looked up for the import (an empty lookup)
    assert {k: after[k] for k in ("files", "config", "record")} == \
        {k: before[k] for k in ("files", "config", "record")}
    assert {n: lab.kernel.elements(n) for n in ("s_blocked_v4", "s_blocked_v4net")} == \
        {"s_blocked_v4": {"198.18.9.9"}, "s_blocked_v4net": set()}


def test_a_flush_refused_keeps_the_record(lab):
    up(lab)
    lab.sets.ban(["198.18.5.5", "198.18.6.0/24"], None)
    before = lab.snapshot()
    lab.kernel.refuse_next()
    with pytest.raises(KernelError):
        lab.sets.flush("blocked")
    assert lab.snapshot() == before


def test_an_unban_the_kernel_refuses_keeps_the_record(lab):
    """An unban that reports success has really unbanned: when the kernel refuses the delete
    (not because the element expired there), the record keeps the element."""
    up(lab)
    lab.sets.ban(["198.18.5.5"], None)
    before = lab.snapshot()
    lab.kernel.refuse_next()
    lab.kernel.refuse_next()  # and the element-by-element retry
    with pytest.raises(KernelError):
        lab.sets.unban(["198.18.5.5"])
    assert lab.snapshot() == before


def test_an_unban_of_an_element_already_gone_from_the_kernel_still_succeeds(lab):
    up(lab)
    lab.sets.ban(["198.18.5.5", "198.18.5.6"], None)
    # it expired in the kernel a moment before the record
    lab.kernel.run({"nftables": [{"delete": {"element": {
        "family": "inet", "table": "minifw", "name": "s_blocked_v4", "elem": ["198.18.5.5"]}}}]})
    lab.sets.unban(["198.18.5.5", "198.18.5.6"])
    assert lab.sets.record.get("blocked", "198.18.5.5") is None
    assert lab.kernel.elements("s_blocked_v4") == {"198.18.9.9"}
