"""The daemon's supervision schedule (daemon/supervisor.py) and its sd_notify datagram."""

import os
import signal
import socket

import pytest

from minifw.daemon import notify as sd
from minifw.daemon.supervisor import MAX_DELAY, backoff, exit_reason


def test_backoff_doubles_from_one_second_up_to_thirty():
    assert [backoff(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff(0) == 0
    assert backoff(10 ** 6) == MAX_DELAY          # no overflow however long it fails


def test_backoff_reaches_its_cap_exactly_at_the_sixth_failure():
    assert backoff(5) < MAX_DELAY <= backoff(6)


def test_exit_reasons():
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_reason(1) == "exited with status 1"
    assert exit_reason(0) == "exited with status 0"
    assert "unknown" in exit_reason(None)
    assert "signal 99" in exit_reason(-99)


@pytest.fixture
def listener():
    def bind(address):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address)
        sock.settimeout(2)
        return sock
    return bind


def test_notify_sends_one_datagram_to_a_path(tmp_path, monkeypatch, listener):
    sock = listener(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    assert sd.notify("READY=1", "STATUS=serving")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_notify_reaches_an_abstract_name(monkeypatch, listener):
    name = f"minifw-test-{os.getpid()}"
    sock = listener("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    assert sd.notify(*sd.reloading())
    got = sock.recv(4096).decode().split("\n")
    assert got[0] == "RELOADING=1" and got[1].startswith("MONOTONIC_USEC=")
    assert int(got[1].partition("=")[2]) > 0


def test_notify_without_systemd_or_with_nobody_listening_sends_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sd.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative")
    assert sd.notify("READY=1") is False


class Clock:
    """time.monotonic and time.time for the supervisor, moved by hand."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now

    def time(self):
        return self.now


@pytest.fixture
def supervised(tmp_path, monkeypatch):
    """A Supervisor over one slot, with runner starts and deaths played by the test."""
    from minifw.daemon import supervisor as sup
    clock = Clock()
    monkeypatch.setattr(sup, "time", clock)
    world = {"alive": set(), "next_pid": 100, "start_fails": 0, "starts": []}

    def start(file, state_dir, replaces=()):
        world["starts"].append(clock.now)
        if world["start_fails"]:
            world["start_fails"] -= 1
            raise sup.MinifwError("the hook runner did not start: boom")
        world["next_pid"] += 1
        world["alive"].add(world["next_pid"])
        return {"pid": world["next_pid"], "file": file}

    monkeypatch.setattr(sup.supervise, "start", start)
    monkeypatch.setattr(sup.hookstate, "pid_alive", lambda pid: pid in world["alive"])
    s = sup.Supervisor(tmp_path)
    s.slots["/h.py"] = sup.Slot("/h.py", pid=100, started=clock.now)
    world["alive"].add(100)
    return s, clock, world


def test_a_dead_runner_waits_its_backoff_then_restarts(supervised):
    s, clock, world = supervised
    s.tick()
    assert s.slots["/h.py"].state == "running" and world["starts"] == []
    world["alive"].clear()                                   # it dies
    s.tick()
    (slot,) = s.status()
    assert slot["state"] == "restarting" and slot["next_start_in"] == 1.0
    assert "not a child" in slot["last_exit"]                 # the test started no process
    clock.now += 0.99
    s.tick()
    assert world["starts"] == []                              # not before 1 s
    clock.now += 0.01
    s.tick()
    (slot,) = s.status()
    assert world["starts"] == [clock.now] and slot["state"] == "running"
    assert slot["restarts"] == 1 and slot["pid"] == 101


def test_failed_starts_double_the_wait_and_a_stable_runner_starts_the_count_over(supervised):
    s, clock, world = supervised
    world["start_fails"] = 3
    world["alive"].clear()
    waits = []
    for _ in range(4):                                        # death, then 3 failed starts
        s.tick()
        waits.append(s.status()[0]["next_start_in"])
        assert s.status()[0]["state"] in ("restarting", "failed")
        clock.now += waits[-1]
    assert waits == [1.0, 2.0, 4.0, 8.0]
    assert s.status()[0]["last_exit"] == "the hook runner did not start: boom"
    s.tick()
    assert s.status()[0]["state"] == "running" and s.status()[0]["restarts"] == 1
    clock.now += 29.9                                         # up under 30 s: not stable
    world["alive"].clear()
    s.tick()
    assert s.status()[0]["next_start_in"] == 16.0
    clock.now += 16
    s.tick()
    clock.now += 30                                           # up 30 s: stable
    world["alive"].clear()
    s.tick()
    assert s.status()[0]["next_start_in"] == 1.0              # the count starts over
