"""The control socket's client: is a daemon serving this state directory, and ask it things.

``daemon_running`` is what every command asks first: a connect to ``control.sock`` (a socket
file left by a killed daemon refuses the connection, so it counts as no daemon).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from typing import Any, Iterator

from ..errors import ControlError, StateError
from . import protocol

SOCKET_NAME = "control.sock"
CONNECT_TIMEOUT = 2.0
# starting a hook runner may take its START_TIMEOUT (20 s), and a plan may start several
REQUEST_TIMEOUT = 300.0
MAX_PATH = 107  # sun_path holds 108 bytes, the last a NUL
_ABSENT = {errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR}


def socket_path(state_dir: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(state_dir), SOCKET_NAME)


def _connect(state_dir: str | os.PathLike[str]) -> socket.socket | None:
    """A connection to the daemon, or None when none serves this state directory."""
    path = socket_path(state_dir)
    if len(os.fsencode(path)) > MAX_PATH:
        return None  # no daemon can listen there (it says so when it tries)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        if exc.errno in _ABSENT:
            return None
        raise ControlError(f"cannot reach the daemon at {path}: "
                           f"{exc.strerror or exc}") from exc
    return sock


def daemon_running(state_dir: str | os.PathLike[str]) -> bool:
    """True when a daemon accepts connections on this state directory's control socket."""
    try:
        sock = _connect(state_dir)
    except ControlError:
        return True  # something holds the socket (EACCES, a full backlog): not ours to take
    if sock is None:
        return False
    sock.close()
    return True


class _Lines:
    """Reply lines from a connection, each at most protocol.MAX_REPLY bytes."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = protocol.LineReader(protocol.MAX_REPLY)
        self.ready: list[bytes | ControlError] = []

    def next(self) -> bytes | None:
        while not self.ready:
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                raise ControlError("the daemon did not answer in time") from None
            except OSError as exc:
                raise ControlError(f"the connection to the daemon failed: "
                                   f"{exc.strerror or exc}") from exc
            if not data:
                return None
            self.ready = self.reader.receive_data(data)
        item = self.ready.pop(0)
        if isinstance(item, ControlError):
            raise ControlError("the daemon's reply is too long") from None
        return item


def _open(state_dir: str | os.PathLike[str], op: str, fields: dict[str, Any],
          timeout: float | None) -> tuple[socket.socket, _Lines]:
    sock = _connect(state_dir)
    if sock is None:
        raise StateError(f"no minifw daemon serves {os.fspath(state_dir)}; start it with "
                         "'minifw daemon' (or 'systemctl start minifw')")
    sock.settimeout(timeout)
    try:
        sock.sendall(protocol.encode({"op": op, **fields}))
    except OSError as exc:
        sock.close()
        raise ControlError(f"sending to the daemon failed: {exc.strerror or exc}") from exc
    return sock, _Lines(sock)


def request(state_dir: str | os.PathLike[str], op: str, *,
            timeout: float | None = REQUEST_TIMEOUT, **fields: Any) -> dict[str, Any]:
    """One request, one reply (``{"ok": true, ...}``); an error reply raises ControlError."""
    sock, lines = _open(state_dir, op, fields, timeout)
    with sock:
        line = lines.next()
    if line is None:
        raise ControlError(f"the daemon closed the connection without answering {op!r}")
    return protocol.parse_reply(line)


def stream(state_dir: str | os.PathLike[str], op: str, *, timeout: float | None = None,
           **fields: Any) -> Iterator[dict[str, Any]]:
    """A streaming op (``log.follow``): every line the daemon sends, until it closes the
    connection or the caller stops iterating (which hangs up)."""
    sock, lines = _open(state_dir, op, fields, timeout)
    with contextlib.closing(sock):
        while True:
            line = lines.next()
            if line is None:
                return
            yield protocol.parse_reply(line)
