"""The control client against the daemon's server (daemon/server.py) on a socket in tmp_path:
requests, error replies, streams and hang-ups, with no daemon and no kernel behind them."""

import os
import socket
import threading

import pytest

from minifw.control import client
from minifw.daemon.server import ControlServer
from minifw.errors import ControlError, StateError


@pytest.fixture
def served(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the server answers uid 0 only")
    stopped = threading.Event()

    def echo(request, reply):
        return {"echo": request.get("text")}

    def fail(request, reply):
        raise ValueError("a bug")

    def count(request, reply):
        def run():
            n = 0
            try:
                while True:
                    reply({"ok": True, "n": n})
                    n += 1
                    stopped.wait(0.01)
            except OSError:
                stopped.set()  # the client hung up: the stream ends, nothing else
        threading.Thread(target=run, daemon=True).start()
        return None

    server = ControlServer(tmp_path, {"echo": echo, "fail": fail, "count": count})
    server.bind()
    server.start()
    yield tmp_path, stopped
    server.close()


def test_no_daemon_means_no_socket_or_a_stale_one(tmp_path):
    assert not client.daemon_running(tmp_path)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(client.socket_path(tmp_path))
    stale.close()                                   # the file stays; nobody listens
    assert not client.daemon_running(tmp_path)
    with pytest.raises(StateError, match="no minifw daemon serves"):
        client.request(tmp_path, "status")


def test_a_state_dir_too_long_for_a_socket_has_no_daemon(tmp_path):
    deep = tmp_path / ("d" * (client.MAX_PATH - len(str(tmp_path)) - len("/control.sock")))
    assert len(os.fsencode(client.socket_path(deep))) == client.MAX_PATH + 1
    assert not client.daemon_running(deep)
    fits = tmp_path / ("d" * (client.MAX_PATH - len(str(tmp_path)) - len("/control.sock") - 1))
    fits.mkdir()
    server = ControlServer(fits, {})
    server.bind()                                   # 107 bytes: a socket can live there
    try:
        assert client.daemon_running(fits)
    finally:
        server.close()
    with pytest.raises(StateError, match="too long"):
        ControlServer(deep, {}).bind()


def test_requests_replies_and_errors(served):
    state_dir, _ = served
    assert client.daemon_running(state_dir)
    assert os.stat(client.socket_path(state_dir)).st_mode & 0o777 == 0o600
    assert client.request(state_dir, "echo", text="hi") == {"ok": True, "echo": "hi"}
    with pytest.raises(ControlError, match="unknown op 'nope'.*count, echo, fail"):
        client.request(state_dir, "nope")
    with pytest.raises(ControlError, match=r"internal error \(ValueError: a bug\)"):
        client.request(state_dir, "fail")
    with pytest.raises(ControlError, match="longer than"):
        client.request(state_dir, "echo", text="x" * (1 << 17))
    assert client.request(state_dir, "echo", text="after")["echo"] == "after"


def test_a_stream_until_the_client_hangs_up(served):
    state_dir, stopped = served
    stream = client.stream(state_dir, "count")
    assert [next(stream)["n"] for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert stopped.wait(5)                          # the handler saw the hang-up
    assert client.request(state_dir, "echo", text="still")["echo"] == "still"
