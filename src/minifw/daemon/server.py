"""The control socket's server: ``control.sock`` in the state directory, JSON lines, one thread
per connection.

Mode 0600 from its creation (bound under a umask), and every connection is checked with
SO_PEERCRED: a peer that is not uid 0 gets one JSON error line and is closed. A malformed,
oversized or unknown request gets an error reply; a handler's failure is an error reply too.
Nothing a client sends or does (hanging up mid-stream included) stops the daemon.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from typing import Any

from ..control import protocol
from ..control.client import MAX_PATH, socket_path
from ..errors import ControlError, MinifwError, StateError
from .context import Handler

log = logging.getLogger("minifw.daemon")

READ_TIMEOUT = 60.0  # a connection that sends nothing for this long is closed
MAX_CONNECTIONS = 64
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Connection:
    """One client: its socket, and ``reply`` (thread-safe) for handlers, streaming ones too."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._send = threading.Lock()
        self.closed = False

    def reply(self, message: dict[str, Any]) -> None:
        """Send one line. OSError once the client is gone (a streaming handler's cue to stop)."""
        data = protocol.encode(message)
        with self._send:
            if self.closed:
                raise BrokenPipeError("the client hung up")
            self.sock.sendall(data)

    def close(self) -> None:
        with self._send:
            self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()


class ControlServer:
    def __init__(self, state_dir: str | os.PathLike[str], handlers: dict[str, Handler]):
        self.path = socket_path(state_dir)
        self.handlers = handlers
        self.sock: socket.socket | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._thread: threading.Thread | None = None

    def bind(self) -> None:
        """Create control.sock (0600), replacing a stale one. The caller holds the daemon lock,
        so a live daemon's socket is never taken over."""
        if len(os.fsencode(self.path)) > MAX_PATH:
            raise StateError(f"{self.path}: the path is too long for a unix socket ({MAX_PATH} "
                             "bytes at most); use a shorter state directory")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(self.path)
        except OSError as exc:
            sock.close()
            raise StateError(f"cannot create the control socket {self.path}: "
                             f"{exc.strerror or exc}") from exc
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        self.sock = sock

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept_loop, name="control",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        sock, self.sock = self.sock, None  # first: the accept loop then knows it is over
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone would not)
            sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _accept_loop(self) -> None:
        while True:
            sock = self.sock
            if sock is None:
                return
            try:
                conn, _ = sock.accept()
            except OSError:
                time.sleep(0.05)  # closed (the loop ends), or out of descriptors: no spin
                continue
            if not self._slots.acquire(blocking=False):
                _refuse(conn, "the daemon serves too many connections; try again")
                continue
            threading.Thread(target=self._serve, args=(conn,), name="control-conn",
                             daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        conn = Connection(sock)
        try:
            pid, uid, _ = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
            if uid != 0:
                log.warning("refused a control connection from pid %d, uid %d", pid, uid)
                _refuse(sock, f"only root may use the control socket (your uid is {uid})",
                        linger=1.0)
                return
            self._requests(conn)
        except OSError:
            pass  # the client went away
        finally:
            conn.close()
            self._slots.release()

    def _requests(self, conn: Connection) -> None:
        conn.sock.settimeout(READ_TIMEOUT)
        reader = protocol.LineReader()
        while True:
            try:
                data = conn.sock.recv(1 << 16)
            except socket.timeout:
                return
            if not data:
                return
            for item in reader.receive_data(data):
                if isinstance(item, ControlError):
                    conn.reply(protocol.error(str(item)))
                    continue
                if self._dispatch(conn, item) is None:
                    _wait_hangup(conn)  # a stream: the handler's reply() serves it
                    return

    def _dispatch(self, conn: Connection, line: bytes) -> dict[str, Any] | None:
        """Answer one request line; None when a streaming handler took the connection."""
        try:
            request = protocol.parse_request(line)
            fn = self.handlers.get(request["op"])
            if fn is None:
                raise protocol.unknown_op(request["op"], list(self.handlers))
            result = fn(request, conn.reply)
        except MinifwError as exc:
            result = protocol.error(str(exc))
        except Exception as exc:  # noqa: BLE001  a handler's bug is one error reply
            log.exception("control op failed")
            result = protocol.error(f"internal error ({type(exc).__name__}: {exc})")
        else:
            if result is None:
                return None
            result = protocol.ok(**result)
        conn.reply(result)
        return result


def _wait_hangup(conn: Connection) -> None:
    """Keep a streaming connection until the client hangs up (what it sends is ignored)."""
    conn.sock.settimeout(None)
    while conn.sock.recv(4096):
        pass


def _refuse(sock: socket.socket, message: str, linger: float = 0.0) -> None:
    """One error line, then hang up. ``linger``: read (and drop) what the client sent for up to
    that long first: a socket closed with unread data resets the connection, and the client
    would get ECONNRESET instead of the line."""
    with contextlib.suppress(OSError):
        sock.sendall(protocol.encode(protocol.error(message)))
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(linger)
        while linger and sock.recv(1 << 16):
            pass
    with contextlib.suppress(OSError):
        sock.close()

