"""events/hookevents.py: a runner's Sender and the daemon's Receiver over a real events.sock,
the per-function cap, and garbage reports."""

from __future__ import annotations

import json
import struct
import time
from types import SimpleNamespace

import pytest

from minifw.events.hookevents import (
    Bucket, Receiver, Sender, decode_report, encode_report, limit_to_json,
)
from minifw.model.rule import Limit

IP = bytes.fromhex("4500001c00010000401100000000000000000000") + struct.pack(">HHHH", 1, 53, 8, 0)


class FakePacket:
    """What the Sender reads of a hooks.packet Packet."""

    raw = IP

    def _queued(self):
        return SimpleNamespace(indev=3, outdev=0, length=28)


def wait_reports(receiver, n, timeout=2.0):
    got = []
    end = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < end:
        got += receiver.receive()
        time.sleep(0.005)
    return got


def test_limits_as_published():
    assert limit_to_json(None) == {"per_second": None, "burst": None}
    assert limit_to_json(Limit(1000, "second")) == {"per_second": 1000.0, "burst": 1000}
    assert limit_to_json(Limit(60, "minute", 5)) == {"per_second": 1.0, "burst": 5}


def test_bucket_allows_its_burst_then_its_rate():
    b = Bucket(10.0, 3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not b.take(0.09)      # 0.9 of a token
    assert b.take(0.1)           # one whole token at 1/rate
    assert not b.take(0.1)


def test_report_round_trip_and_garbage():
    data = encode_report({"fn": "f", "hook": "input", "priority": -5, "action": "drop",
                          "ts": 1.5, "iif": 2, "oif": None, "len": 28, "msg": None,
                          "lost": 3}, IP)
    r = decode_report(data)
    assert (r.fn, r.hook, r.priority, r.action, r.iif, r.length, r.lost, r.raw) == \
        ("f", "input", -5, "drop", 2, 28, 3, IP)
    assert r.origin() == ("hook:f", "input", -5, "drop")
    for bad in (b"", b"no nul", b"[1]\0", b"{\0", b'{"fn": 1, "action": "drop", "ts": 0}\0',
                b'{"fn": "f", "action": "accept", "ts": 0}\0',
                b'{"fn": "f", "action": "drop"}\0'):
        assert decode_report(bad) is None
    odd = decode_report(b'{"fn":"f","action":"log","ts":0,"priority":"x","lost":-4}\0')
    assert odd.priority is None and odd.lost == 0 and odd.raw == b""


def test_no_daemon_no_reports(tmp_path):
    sender = Sender(tmp_path)
    assert not sender.refresh() and not sender.active
    sender.report("f", "input", 0, "drop", FakePacket())  # a no-op
    assert sender.sent == 0 and sender.lost == 0


def test_reports_reach_the_daemon_within_the_cap(tmp_path):
    receiver = Receiver(tmp_path)
    try:
        assert (tmp_path / "events.sock").stat().st_mode & 0o777 == 0o600
        receiver.publish(Limit(5, "second"))
        sender = Sender(tmp_path)
        assert sender.refresh() and sender.rate == 5.0 and sender.burst == 5
        for _ in range(8):
            sender.report("f", "input", 0, "drop", FakePacket())
        sender.report("g", "output", 3, "log", FakePacket(), "hello")  # its own bucket
        got = wait_reports(receiver, 6)
        assert [r.fn for r in got] == ["f"] * 5 + ["g"]
        assert sender.capped == 3
        assert got[0].iif == 3 and got[0].oif is None and got[0].length == 28
        assert got[-1].message == "hello" and got[-1].action == "log"
        receiver.publish(None)  # the cap off (a reload)
        time.sleep(0.01)
        assert sender.refresh() and sender.rate is None
        for _ in range(20):
            sender.report("f", "input", 0, "drop", FakePacket())
        assert len(wait_reports(receiver, 20)) == 20
    finally:
        receiver.close()
    assert not (tmp_path / "events.sock").exists()


def test_a_daemon_that_goes_away_costs_lost_events_then_a_new_one_hears_of_them(tmp_path):
    receiver = Receiver(tmp_path)
    receiver.publish(None)
    sender = Sender(tmp_path)
    assert sender.refresh()
    receiver.close()
    sender.report("f", "input", 0, "drop", FakePacket())
    assert sender.lost == 1 and not sender.active
    receiver = Receiver(tmp_path)
    try:
        receiver.publish(None)
        assert sender.refresh()
        sender.report("f", "input", 0, "drop", FakePacket())
        (got,) = wait_reports(receiver, 1)
        assert got.lost == 1 and sender.lost == 0
    finally:
        receiver.close()


def test_garbage_on_the_socket_is_counted_not_fatal(tmp_path):
    import socket
    receiver = Receiver(tmp_path)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(str(tmp_path / "events.sock"))
        s.send(b"\xff\xfe garbage")
        s.send(encode_report({"fn": "f", "action": "drop", "ts": 0}, b""))
        got = wait_reports(receiver, 1)
        assert len(got) == 1 and receiver.bad == 1
        s.close()
        time.sleep(0.05)
        receiver.receive()
        assert not receiver.conns  # the hang-up closed its side
    finally:
        receiver.close()


def test_limit_file_garbage_means_no_cap(tmp_path):
    receiver = Receiver(tmp_path)
    try:
        (tmp_path / "events.json").write_text("{garbage")
        sender = Sender(tmp_path)
        assert sender.refresh() and sender.rate is None
        (tmp_path / "events.json").write_text(json.dumps({"per_second": 2, "burst": 0}))
        time.sleep(0.01)
        sender.refresh()
        assert sender.rate == 2.0 and sender.burst == 1
    finally:
        receiver.close()


@pytest.mark.parametrize("state", ["missing"])
def test_a_missing_state_dir_is_no_daemon(tmp_path, state):
    assert not Sender(tmp_path / state).refresh()
