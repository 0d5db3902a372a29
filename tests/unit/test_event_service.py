"""EventService as the daemon runs it, without root: a fake NFLOG socket (a pipe for poll,
packets the test queues), a real events.sock, events.jsonl and a journald socket at a temporary
path; origins from the applied ruleset, refreshed on apply; log.follow's stream."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from minifw.errors import ControlError
from minifw.events.files import EventFilter, events_path, read_events
from minifw.events.hookevents import Sender
from minifw.events.service import EventService
from minifw.model.ruleset import Ruleset

from test_event_record import ECHO, UDP, v4


class FakeNflog:
    opened: list["FakeNflog"] = []

    def __init__(self, group, **options):
        self.group, self.options = group, options
        self.r, self.w = os.pipe()
        self.queued: list = []
        self.lost = 0
        self.overruns = 0
        self.lock = threading.Lock()
        FakeNflog.opened.append(self)

    def fileno(self):
        return self.r

    def put(self, *packets):
        with self.lock:
            self.queued += packets
        os.write(self.w, b"x")

    def receive(self):
        os.read(self.r, 4096)
        with self.lock:
            got, self.queued = self.queued, []
        return got

    def close(self):
        os.close(self.r)
        os.close(self.w)


def packet(prefix, payload, hook=1, indev=2):
    return SimpleNamespace(family=2, hook=hook, prefix=prefix, indev=indev, outdev=None,
                           payload=payload, seq=None, timestamp=1796211780.5)


class Ctx:
    def __init__(self, state_dir: Path, ruleset: Ruleset):
        self.state_dir = state_dir
        self._ruleset = ruleset
        self.handlers: dict = {}
        self.listeners: list = []

    def ruleset(self):
        return self._ruleset

    def handle(self, op, fn):
        self.handlers[op] = fn

    def on_apply(self, fn):
        self.listeners.append(fn)


RULES = {"policy": {"input": "drop"},
         "events": {"group": 7, "max_bytes": 4096, "keep": 2, "limit": "50/second"},
         "rule": [{"id": "no-ping", "proto": "icmp", "action": "drop", "log": "p "}]}


@pytest.fixture
def service(tmp_path):
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(tmp_path / "journal"))
    journal.settimeout(2)
    FakeNflog.opened.clear()
    svc = EventService(journal_path=str(tmp_path / "journal"), ifname=lambda i: f"if{i}",
                       nflog=FakeNflog)
    ctx = Ctx(tmp_path, Ruleset.from_toml(RULES))
    svc.start(ctx)
    yield svc, ctx, journal
    svc.stop()
    journal.close()


def wait_for(predicate, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("timed out")


def events(ctx, **where):
    return read_events(events_path(ctx.state_dir), EventFilter(**where))


def test_nflog_packets_become_events_in_the_file_and_journald(service):
    svc, ctx, journal = service
    (nflog,) = FakeNflog.opened
    assert nflog.group == 7 and nflog.options["copy_range"] >= 60
    nflog.put(packet("no-ping", v4(1, ECHO)), packet("policy:input", v4(17, UDP)),
              packet("stranger", v4(17, UDP)))
    got = wait_for(lambda: len(events(ctx)) == 3 and events(ctx))
    assert [(e["rule"], e["action"], e["hook"]) for e in got] == [
        ("no-ping", "drop", "input"), ("policy:input", "drop", "input"), (None, None, "input")]
    assert got[0]["iif"] == "if2" and got[0]["ts"] == "2026-12-02T11:43:00.500000Z"
    assert got[2]["prefix"] == "stranger"
    assert b"MINIFW_RULE=no-ping" in journal.recv(65536)
    s = svc.stats()
    assert (s["written"], s["unmapped"], s["journald_sent"], s["lost"]) == (3, 1, 3, 0)


def test_an_apply_refreshes_the_origins_and_the_group(service):
    svc, ctx, _ = service
    changed = dict(RULES, events=dict(RULES["events"], group=8),
                   rule=[{"id": "no-dns", "proto": "udp", "dport": 53, "action": "drop",
                          "log": "d "}])
    for fn in ctx.listeners:
        fn(Ruleset.from_toml(changed))
    wait_for(lambda: len(FakeNflog.opened) == 2)
    new = FakeNflog.opened[1]
    assert new.group == 8 and svc.stats()["group"] == 8
    new.put(packet("no-ping", v4(1, ECHO)), packet("no-dns", v4(17, UDP)))
    got = wait_for(lambda: len(events(ctx)) == 2 and events(ctx))
    assert [e["rule"] for e in got] == [None, "no-dns"]  # no-ping is gone from the ruleset


def test_hook_reports_join_the_stream(service):
    svc, ctx, _ = service
    sender = Sender(ctx.state_dir)
    assert sender.refresh() and sender.rate == 50.0
    pkt = SimpleNamespace(raw=v4(17, UDP), _queued=lambda: SimpleNamespace(
        indev=3, outdev=None, length=28))
    sender.report("no_dns", "input", -10, "log", pkt, "seen")
    sender.report("no_dns", "input", -10, "drop", pkt)
    got = wait_for(lambda: len(events(ctx, rule="hook:no_dns")) == 2
                   and events(ctx, rule="hook:no_dns"))
    assert [e["action"] for e in got] == ["log", "drop"]
    assert got[0]["message"] == "seen" and got[1]["dport"] == 53 and got[1]["iif"] == "if3"
    assert got[1]["priority"] == -10 and got[1]["prefix"] == "hook:no_dns"
    sender.close()


def test_log_follow_streams_matching_events_until_the_client_hangs_up(service):
    svc, ctx, _ = service
    follow = ctx.handlers["log.follow"]
    with pytest.raises(ControlError):
        follow({"op": "log.follow", "filter": {"src": "garbage"}}, lambda m: None)
    got: list = []
    gone = threading.Event()

    def reply(message):
        if gone.is_set():
            raise BrokenPipeError()
        got.append(message)

    assert follow({"op": "log.follow", "filter": {"rule": "no-ping"}}, reply) is None
    assert got == [{"ok": True, "following": True}]
    (nflog,) = FakeNflog.opened
    nflog.put(packet("policy:input", v4(17, UDP)), packet("no-ping", v4(1, ECHO)))
    wait_for(lambda: len(got) == 2)
    assert got[1]["event"]["rule"] == "no-ping"
    assert svc.stats()["followers"] == 1
    gone.set()
    nflog.put(packet("no-ping", v4(1, ECHO)))
    wait_for(lambda: svc.stats()["followers"] == 0)


def test_the_file_rotates_at_the_configured_size(service):
    svc, ctx, _ = service
    (nflog,) = FakeNflog.opened
    for _ in range(30):
        nflog.put(packet("no-ping", v4(1, ECHO)))
    wait_for(lambda: svc.stats()["written"] == 30)
    assert svc.stats()["rotations"] >= 1
    assert events_path(ctx.state_dir).stat().st_size <= 4096


def test_stop_removes_the_hook_socket(tmp_path):
    svc = EventService(journal_path=str(tmp_path / "none"), nflog=FakeNflog)
    ctx = Ctx(tmp_path, Ruleset.from_toml(RULES))
    svc.start(ctx)
    assert (tmp_path / "events.sock").exists() and (tmp_path / "events.json").exists()
    svc.stop()
    assert not (tmp_path / "events.sock").exists()
    assert not Sender(tmp_path).refresh()


def test_a_group_held_by_another_reader_leaves_the_rest_working(tmp_path):
    from minifw.errors import KernelError
    tries = []

    def busy_once(group, **options):
        tries.append(group)
        if len(tries) == 1:
            raise KernelError(f"NFLOG group {group} is already bound by another socket.")
        return FakeNflog(group, **options)

    FakeNflog.opened.clear()
    svc = EventService(journal_path=str(tmp_path / "none"), nflog=busy_once)
    ctx = Ctx(tmp_path, Ruleset.from_toml(RULES))
    svc.start(ctx)
    try:
        assert svc.nflog is None and "already bound" in svc.stats()["nflog_error"]
        sender = Sender(tmp_path)
        assert sender.refresh()
        pkt = SimpleNamespace(raw=v4(17, UDP), _queued=lambda: SimpleNamespace(
            indev=None, outdev=None, length=28))
        sender.report("f", "input", 0, "drop", pkt)
        wait_for(lambda: events(ctx, rule="hook:f"))
        for fn in ctx.listeners:  # the next apply tries again
            fn(Ruleset.from_toml(RULES))
        wait_for(lambda: len(FakeNflog.opened) == 1)
        assert svc.stats()["nflog_error"] is None
        sender.close()
    finally:
        svc.stop()


def test_a_state_dir_too_long_for_a_socket_path_loses_hook_events_only(tmp_path):
    state = tmp_path / ("d" * 120)
    state.mkdir()
    FakeNflog.opened.clear()
    svc = EventService(journal_path=str(tmp_path / "none"), nflog=FakeNflog)
    ctx = Ctx(state, Ruleset.from_toml(RULES))
    svc.start(ctx)
    try:
        assert svc.hooks is None
        FakeNflog.opened[0].put(packet("no-ping", v4(1, ECHO)))
        wait_for(lambda: events(ctx, rule="no-ping"))
        for fn in ctx.listeners:
            fn(Ruleset.from_toml(RULES))
        FakeNflog.opened[0].put(packet("no-ping", v4(1, ECHO)))
        wait_for(lambda: len(events(ctx, rule="no-ping")) == 2)
    finally:
        svc.stop()
