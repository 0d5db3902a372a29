"""The pure parts of minifw's state files: the set-change journal, state.json's shape, the set
record's header check, and the lock's waiting notice (no root needed)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from minifw.store import journal
from minifw.errors import StateError
from minifw.store.setrecord import SetStore, header_problem
from minifw.store.state import (
    State, Store, in_dir, path_text, state_dir_from_env, state_dir_name, state_from_json,
)


def test_journal_round_trip():
    four = [bytes([198, 18, 0, i]) for i in range(5)]
    six = [bytes(15) + bytes([i]) for i in range(3)]
    data = journal.encode("import", "blocked", items=["198.18.4.0/24"], expiry=123,
                          four=four, six=six)
    assert journal.decode(data) == {"op": "import", "set": "blocked", "items": ["198.18.4.0/24"],
                                    "expiry": 123, "four": four, "six": six}
    assert journal.decode(journal.encode("flush", "x"))["op"] == "flush"


def test_journal_damage_is_always_detected():
    data = journal.encode("ban", "blocked", items=["198.18.0.1"], four=[b"\xc6\x12\x00\x01"])
    for cut in range(len(data)):  # every truncation
        with pytest.raises(journal.JournalError):
            journal.decode(data[:cut])
    for i in range(len(data)):  # every single flipped byte
        bad = bytearray(data)
        bad[i] ^= 0x40
        with pytest.raises(journal.JournalError):
            journal.decode(bytes(bad))
    with pytest.raises(journal.JournalError):
        journal.decode(b"garbage" * 20)


def test_state_shape():
    assert state_from_json({"loaded": True, "config": "/c.toml", "ruleset": {"rule": []}}) == \
        State(True, "/c.toml", {"rule": []})
    assert state_from_json({}) == State()
    for bad in ([], None, 3, "x", {"config": 123, "ruleset": [1, 2]}, {"loaded": "yes"},
                {"ruleset": [1]}, {"ruleset": {"runtime": 5}}, {"ruleset": {"runtime": [1]}}):
        with pytest.raises(ValueError):
            state_from_json(bad)


@pytest.mark.parametrize("text", ["[]", "null", '{"config": 123, "ruleset": [1, 2]}', "{", ""])
def test_damaged_state_json_is_one_state_error(tmp_path, text):
    (tmp_path / "state.json").write_text(text)
    with pytest.raises(StateError, match="state.json.*--config FILE"):
        Store(tmp_path).load()
    assert Store(tmp_path).load_or_none() is None


def test_lock_directory_and_state_directory_are_state_errors(tmp_path):
    (tmp_path / "lock").mkdir()
    with pytest.raises(StateError, match="lock is a directory"):
        with Store(tmp_path).locked():
            pass
    (tmp_path / "state.json").mkdir()
    with pytest.raises(StateError, match="directory"):
        Store(tmp_path).load()


def test_intent_round_trip_and_damage(tmp_path):
    store = Store(tmp_path)
    assert store.read_intent() is None
    store.write_intent("edit", State(True, "/c.toml", {"rule": []}), "text")
    assert store.read_intent() == ("edit", State(True, "/c.toml", {"rule": []}), "text")
    store.commit(State(True, "/c.toml", {}))
    assert store.read_intent() is None and store.load() == State(True, "/c.toml", {})
    for text in ("[]", '{"op": "load", "state": []}', '{"op": "nope", "state": {}}', "{"):
        store.intent_file.write_text(text)
        with pytest.raises(StateError, match="intent.json"):
            store.read_intent()


def test_header_problem():
    good = b"SQLite format 3\0" + (4096).to_bytes(2, "big") + bytes(10) + (2).to_bytes(4, "big")
    good += bytes(100 - len(good))
    assert header_problem(good, 8192) is None
    assert header_problem(good, 8191).startswith("truncated")  # one byte short
    assert header_problem(b"", 0) == "empty (0 bytes)"
    assert header_problem(good[:99], 99) == "not an SQLite database"
    assert header_problem(b"x" * 100, 100) == "not an SQLite database"


def test_empty_or_garbage_record_is_never_taken_as_empty(tmp_path):
    record = SetStore(tmp_path)
    with record.transaction() as db:
        record.declare(db, "blocked", None)
        record.put(db, "blocked", [("198.18.0.1", 0)], 2)
    record.close()
    assert SetStore(tmp_path).get("blocked", "198.18.0.1") == (0, 2)
    for data in (b"", b"garbage" * 1000, (tmp_path / "sets.db").read_bytes()[:2000]):
        (tmp_path / "sets.db").write_bytes(data)
        with pytest.raises(StateError, match="set recover"):
            SetStore(tmp_path).names()
    (tmp_path / "sets.db").unlink()
    with pytest.raises(StateError, match="missing.*set recover"):
        SetStore(tmp_path, may_create=lambda: False).names()
    assert SetStore(tmp_path, may_create=lambda: True).names() == []  # a fresh directory


def test_record_rebuild_keeps_expiries_and_origins(tmp_path):
    record = SetStore(tmp_path)
    record.names()
    singles = [(f"198.18.{i // 256}.{i % 256}", 0) for i in range(100)]
    kept = record.rebuild({"blocked": singles + [("198.18.9.0/24", 2_000_000_000),
                                                 ("198.18.10.1", 2_000_000_001)],
                           "web": [("198.18.3.0/24", 0)]},
                          {"web": 60}, {"web": {"198.18.3.0/24"}})
    assert kept is not None and kept.exists()
    assert record.counts("blocked")["elements"] == 102
    assert record.get("blocked", "198.18.10.1") == (2_000_000_001, 2)
    assert record.get("blocked", "198.18.0.99") == (0, 2)
    assert record.get("web", "198.18.3.0/24") == (0, 1)
    assert record.default_timeout("web") == 60


def test_a_writer_that_waits_says_so_once(tmp_path):
    said = []
    store = Store(tmp_path)
    store.on_wait = said.append
    ready = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, time\n"
        f"fd = os.open({str(tmp_path / 'lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, b'%d\\n' % os.getpid())\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(1.6)\n")])
    while not ready.exists():
        assert holder.poll() is None
        time.sleep(0.01)
    with store.locked():
        assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"  # now the holder
    holder.wait()
    assert said == [f"waiting for another minifw command (pid {holder.pid})"]
    said.clear()
    with store.locked():  # free: no notice
        pass
    assert said == []


# The state files' names are str inside (pathlib is no part of a ban's start-up): each must be
# what pathlib said before, in messages and in the Path forms callers use.
PATHS = ["", ".", "./", "/", "//", "///", "////x", "//x", "//x/", "/x//y/./z/", "x", "./x",
         "x/.", "x/..", "../x//", "/a/./../b", "a/b/", ".x", "..", "/.", "/..", "x./.y"]


@pytest.mark.parametrize("text", PATHS)
def test_path_text_is_pathlibs_text(text):
    assert path_text(text) == str(Path(text))
    assert path_text(Path(text)) == str(Path(text))
    assert in_dir(text, "sets.db") == str(Path(text) / "sets.db")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="/.ab", max_size=12))
def test_path_text_is_pathlibs_text_for_any_path(text):
    assert path_text(text) == str(Path(text))
    assert in_dir(text, "state.json") == str(Path(text) / "state.json")


def test_the_stores_paths_are_pathlibs(tmp_path, monkeypatch):
    where = f"{tmp_path}//s/./"
    store, record = Store(where), SetStore(where)
    assert (store.dir, store.file, store.intent_file, store.lock_file) == (
        tmp_path / "s", tmp_path / "s/state.json", tmp_path / "s/intent.json",
        tmp_path / "s/lock")
    assert all(isinstance(p, Path) for p in (store.dir, store.file, record.path))
    assert record.path == tmp_path / "s/sets.db"
    monkeypatch.setenv("MINIFW_STATE_DIR", where)
    assert state_dir_from_env(None) == tmp_path / "s" and state_dir_name(None) == f"{tmp_path}/s"
    assert state_dir_from_env("x/") == Path("x") and state_dir_name("./x/") == "x"
    monkeypatch.delenv("MINIFW_STATE_DIR")
    assert state_dir_from_env(None) == Path("/var/lib/minifw")


def test_the_set_records_sqlite_is_sqlite3():
    """The record uses sqlite3's C core (no sqlite3.dbapi2, no datetime at a ban's start):
    its connections and errors are sqlite3's own, so callers that catch sqlite3's catch it."""
    import sqlite3
    from minifw.store import setrecord
    core = setrecord.sqlite3
    assert (core.connect, core.Connection, core.Error, core.DatabaseError,
            core.OperationalError) == (sqlite3.connect, sqlite3.Connection, sqlite3.Error,
                                       sqlite3.DatabaseError, sqlite3.OperationalError)


def test_the_lock_holds_the_holders_pid_alone_over_a_longer_old_one(tmp_path):
    """The lock file is written over and cut to length (never truncated to 0 first: ext4 then
    flushes it at close): no tail of a longer pid before stays, and a waiter reads the pid."""
    (tmp_path / "lock").write_text("1234567890123\n")  # longer than any pid
    said = []
    store = Store(tmp_path)
    store.on_wait = said.append
    ready = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time\n"
        "from minifw.store.state import Store\n"
        f"with Store({str(tmp_path)!r}).locked():\n"
        f"    open({str(ready)!r}, 'w').close()\n"
        "    time.sleep(1.6)\n")])
    while not ready.exists():
        assert holder.poll() is None
        time.sleep(0.01)
    assert (tmp_path / "lock").read_text() == f"{holder.pid}\n"
    with store.locked():
        assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
    assert holder.wait() == 0
    assert said == [f"waiting for another minifw command (pid {holder.pid})"]


def test_a_waiter_reads_the_first_line_of_the_lock(tmp_path):
    """A holder caught between its write and its cut: its pid, then the old one's tail."""
    said = []
    store = Store(tmp_path)
    store.on_wait = said.append
    ready = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, time\n"
        f"fd = os.open({str(tmp_path / 'lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, b'4321\\n890123\\n')\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(1.6)\n")])
    while not ready.exists():
        assert holder.poll() is None
        time.sleep(0.01)
    with store.locked():
        pass
    assert holder.wait() == 0
    assert said == ["waiting for another minifw command (pid 4321)"]


def test_close_open_closes_every_records_connection(tmp_path):
    """What the fast CLI does before os._exit in place of a full collection: the records a
    command left open, also one in a reference cycle no one holds (as SetService leaves its
    own), are closed: the write-ahead log folded in and removed."""
    import gc

    from minifw.store import setrecord
    held = SetStore(tmp_path / "a")
    with held.transaction() as db:
        held.declare(db, "blocked", None)
    left = SetStore(tmp_path / "b")
    left.cycle = left
    left.names()
    was_enabled = gc.isenabled()
    gc.disable()  # so that only close_open can close the dropped one
    try:
        del left
        assert {p.name for p in tmp_path.rglob("sets.db*")} == {"sets.db", "sets.db-wal",
                                                                "sets.db-shm"}
        setrecord.close_open()
        assert held._db is None
        assert sorted(p.name for p in tmp_path.rglob("sets.db*")) == ["sets.db", "sets.db"]
        setrecord.close_open()  # nothing left open: nothing to do
    finally:
        if was_enabled:
            gc.enable()
    assert SetStore(tmp_path / "a").exists("blocked")
