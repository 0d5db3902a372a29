"""Hook functions' events: a runner reports ``pkt.log()`` calls and DROP verdicts to the daemon
over a unix socket, ``events.sock`` in the state directory, which the EventService binds.

One message per event: a JSON header, a NUL, then the packet's copied bytes from its network
header on (the daemon parses them as it parses NFLOG payloads). Header keys: ``fn``, ``hook``,
``priority``, ``action`` ("drop" or "log"), ``ts``, ``iif``/``oif`` (ifindex), ``len``,
``msg`` (pkt.log's text) and ``lost`` (events this runner could not send since its last one).

The runner's cost: nothing at all while no daemon listens (its watcher looks for the daemon
a few times a second and only then arms the drop callback); when one does, a token bucket per function
(``[events] limit``, published by the daemon in ``events.json``) bounds the sends.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
from pathlib import Path
from typing import Any, NamedTuple

SOCKET_NAME = "events.sock"
LIMIT_NAME = "events.json"
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
MAX_DATAGRAM = 4096
RECEIVE_BURST = 1024


def limit_to_json(limit: Any) -> dict[str, Any]:
    """A model Limit (rate, unit, burst) as events.json says it: events per second and burst;
    None (the cap is off) as nulls."""
    if limit is None:
        return {"per_second": None, "burst": None}
    per_second = limit.rate / _UNITS.get(limit.unit, 1)
    burst = limit.burst if limit.burst is not None else max(1, int(limit.rate))
    return {"per_second": per_second, "burst": burst}


class Bucket:
    """A token bucket: ``take(now)`` is true while the rate allows one more event."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.at = float(burst), now

    def take(self, now: float) -> bool:
        tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if tokens >= 1:
            self.tokens = tokens - 1
            return True
        self.tokens = tokens
        return False


class HookOrigin(NamedTuple):
    rule: str
    hook: str | None
    priority: int | None
    action: str


class Report(NamedTuple):
    """One decoded hook event datagram."""
    fn: str
    hook: str | None
    priority: int | None
    action: str
    ts: float
    iif: int | None
    oif: int | None
    length: int | None
    message: str | None
    lost: int
    raw: bytes

    @property
    def prefix(self) -> str:
        return f"hook:{self.fn}"

    def origin(self) -> HookOrigin:
        return HookOrigin(self.prefix, self.hook, self.priority, self.action)


def encode_report(header: dict[str, Any], raw: bytes) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode() + b"\0" + raw


def _opt_int(value: Any) -> int | None:
    return value if type(value) is int else None


def decode_report(data: bytes) -> Report | None:
    """The report of one datagram; None for anything malformed."""
    at = data.find(b"\0")
    if at < 0:
        return None
    try:
        h = json.loads(data[:at])
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(h, dict):
        return None
    fn, action, ts = h.get("fn"), h.get("action"), h.get("ts")
    if not isinstance(fn, str) or action not in ("drop", "log") \
            or not isinstance(ts, (int, float)):
        return None
    hook, msg = h.get("hook"), h.get("msg")
    return Report(fn, hook if isinstance(hook, str) else None, _opt_int(h.get("priority")),
                  action, float(ts), _opt_int(h.get("iif")), _opt_int(h.get("oif")),
                  _opt_int(h.get("len")), msg if isinstance(msg, str) else None,
                  max(0, _opt_int(h.get("lost")) or 0), data[at + 1:])


# ---- the daemon's side ---------------------------------------------------------------------

class Receiver:
    """events.sock, bound by the daemon (0600: only root's runners report). A SOCK_SEQPACKET
    listener: each runner keeps one connection, messages keep their boundaries, and a burst
    is bounded by the runner's send buffer (a datagram socket's queue holds only
    net.unix.max_dgram_qlen, 10, messages). ``fileno()`` is an epoll descriptor over the
    listener and every connection, for the reader's poll."""

    def __init__(self, state_dir: str | os.PathLike[str]):
        self.path = Path(state_dir) / SOCKET_NAME
        self.limit_path = Path(state_dir) / LIMIT_NAME
        self.bad = 0
        self.conns: dict[int, socket.socket] = {}
        self.ep = select.epoll()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            try:
                self.path.unlink()  # a socket a killed daemon left: nobody listens on it
            except FileNotFoundError:
                pass
            old = os.umask(0o177)
            try:
                self.sock.bind(str(self.path))
            finally:
                os.umask(old)
            self.sock.listen(64)
            self.sock.setblocking(False)
            self.ep.register(self.sock.fileno(), select.EPOLLIN)
        except OSError:
            self.sock.close()
            self.ep.close()
            raise

    def fileno(self) -> int:
        return self.ep.fileno()

    def publish(self, limit: Any) -> None:
        """Tell runners the per-function cap (written atomically: they read it any time)."""
        tmp = self.limit_path.with_name(LIMIT_NAME + ".tmp")
        tmp.write_text(json.dumps(limit_to_json(limit)) + "\n")
        os.replace(tmp, self.limit_path)

    def receive(self) -> list[Report]:
        reports: list[Report] = []
        for fd, _ in self.ep.poll(0):
            if fd == self.sock.fileno():
                self._accept()
                continue
            conn = self.conns.get(fd)
            if conn is not None:
                self._drain(conn, reports)
        return reports

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # EMFILE and the like: the runner retries
            conn.setblocking(False)
            self.conns[conn.fileno()] = conn
            self.ep.register(conn.fileno(), select.EPOLLIN)

    def _drain(self, conn: socket.socket, reports: list[Report]) -> None:
        for _ in range(RECEIVE_BURST):
            try:
                data = conn.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:  # the runner is gone
                self._drop(conn)
                return
            report = decode_report(data)
            if report is None:
                self.bad += 1
            else:
                reports.append(report)

    def _drop(self, conn: socket.socket) -> None:
        fd = conn.fileno()
        self.conns.pop(fd, None)
        try:
            self.ep.unregister(fd)
        except (OSError, ValueError):
            pass
        conn.close()

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._drop(conn)
        self.sock.close()
        self.ep.close()
        for path in (self.path, self.limit_path):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


# ---- the runner's side ---------------------------------------------------------------------

SNDBUF = 1 << 20  # reports a busy daemon has not read yet, before they count as lost


class Sender:
    """A runner's reports. ``refresh()`` (its watcher, a few times a second) connects to the
    daemon's socket and reads its cap; ``active`` says whether anything should be sent."""

    def __init__(self, state_dir: str | os.PathLike[str]):
        self.path = str(Path(state_dir) / SOCKET_NAME)
        self.limit_path = Path(state_dir) / LIMIT_NAME
        self.sock: socket.socket | None = None
        self.active = False
        self.rate: float | None = None
        self.burst = 1
        self._limit_mtime: int | None = None
        self.buckets: dict[str, Bucket] = {}
        self.lost = 0  # not sent yet, told with the next report
        self.capped = 0
        self.sent = 0

    def refresh(self) -> bool:
        """Whether a daemon listens now (connecting if needed); reads its cap when that
        changed."""
        try:
            mtime = os.stat(self.limit_path).st_mtime_ns
        except OSError:
            self._disconnect()
            return False
        if mtime != self._limit_mtime:
            self._limit_mtime = mtime
            self._read_limit()
        if self.sock is not None and select.select([self.sock], [], [], 0)[0]:
            self._disconnect()  # the daemon never writes: readable means it hung up
        if self.sock is None and not self._connect():
            return False
        self.active = True
        return True

    def _read_limit(self) -> None:
        try:
            limit = json.loads(self.limit_path.read_text())
            rate = limit.get("per_second")
            self.rate = float(rate) if rate is not None else None
            self.burst = max(1, int(limit.get("burst") or 1))
        except (OSError, ValueError, TypeError, AttributeError):
            self.rate, self.burst = None, 1
        self.buckets.clear()

    def _connect(self) -> bool:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            sock.connect(self.path)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return False
        self.sock = sock
        return True

    def _disconnect(self) -> None:
        self.active = False
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def report(self, fn: str, hook: str | None, priority: int | None, action: str, pkt: Any,
               message: str | None = None) -> None:
        """Send one event about ``pkt`` (a hooks.packet Packet), within the function's cap."""
        sock = self.sock
        if not self.active or sock is None:
            return
        now = time.monotonic()
        if self.rate is not None:
            bucket = self.buckets.get(fn)
            if bucket is None:
                bucket = self.buckets[fn] = Bucket(self.rate, self.burst, now)
            if not bucket.take(now):
                self.capped += 1
                return
        header = {"fn": fn, "hook": hook, "priority": priority, "action": action,
                  "ts": time.time(), "iif": None, "oif": None, "len": None, "msg": message,
                  "lost": self.lost}
        raw = b""
        try:
            q = pkt._queued()
            header["iif"], header["oif"] = q.indev or None, q.outdev or None
            header["len"] = q.length
            raw = pkt.raw[:256]
        except Exception:  # noqa: BLE001  a malformed packet still makes an event (nulls)
            pass
        try:
            sock.send(encode_report(header, raw))
        except (BlockingIOError, InterruptedError):  # the daemon is behind: tell it later
            self.lost += 1
            return
        except OSError:  # the daemon is gone: the watcher reconnects to the next one
            self.lost += 1
            self._disconnect()
            return
        self.lost = 0
        self.sent += 1

    def close(self) -> None:
        self._disconnect()
