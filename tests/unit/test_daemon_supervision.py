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
