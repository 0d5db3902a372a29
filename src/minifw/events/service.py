"""EventService: the daemon's plug-in that turns NFLOG packets and hook functions' reports into
events, written to events.jsonl and journald, and streamed to ``log.follow`` clients.

One reader thread waits in poll on the NFLOG socket (batched by the kernel: queue threshold
and timeout), the hook events socket (events.sock) and a wake-up pipe. Every batch becomes ONE
write of whole lines. ``ctx.on_apply`` swaps the ruleset the origins are looked up in (and
rebinds NFLOG when the group changed).
"""

from __future__ import annotations

import logging
import os
import queue
import select
import socket
import threading
import time
from typing import Any, Callable

from ..compile.events import RUN, event_origin
from ..errors import ConfigError, ControlError, MinifwError
from ..model.crowdsec import CROWDSEC_RULE
from . import hookevents
from .files import EventFile, EventFilter, encode_event, events_path
from .journald import JOURNAL_SOCKET, Journal
from .record import Interfaces, build_event, parse_packet

log = logging.getLogger("minifw.events")

# NFLOG batching: the kernel sends when its queue threshold is reached (the socket's default),
# or this long after the first packet waiting: an event is written within it
TIMEOUT_MS = 100
COPY_RANGE = 128  # IP and transport headers, with IPv6 extension headers
FOLLOW_QUEUE = 10000  # events held for a slow follower before it misses some
KEEPALIVE = 2.0  # seconds between keep-alive replies to an idle follower (finds hang-ups)


_UNKNOWN = object()
RCVBUF_ENV = "MINIFW_EVENTS_RCVBUF"


def _rcvbuf() -> int | None:
    """The NFLOG socket's receive buffer from $MINIFW_EVENTS_RCVBUF (bytes), else the socket's
    default; tests make it small to see losses counted."""
    text = os.environ.get(RCVBUF_ENV, "")
    if text.isdigit() and int(text) >= 4096:
        return int(text)
    if text:
        raise ConfigError(f"must be a number of bytes, at least 4096, not {text!r}.",
                          file=f"${RCVBUF_ENV}")
    return None


class _Follower:
    def __init__(self, where: EventFilter):
        self.where = where
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(FOLLOW_QUEUE)
        self.missed = 0


class EventService:
    """The plug-in (see daemon/context.py): ``start(ctx)``, ``stop()``, ``stats()``."""

    def __init__(self, *, journal_path: str = JOURNAL_SOCKET,
                 ifname: Callable[[int], str] = socket.if_indextoname,
                 nflog: Callable[..., Any] | None = None):
        """``nflog(group, **options)`` opens the NFLOG socket (kernel.nflog.NflogSocket by
        default; tests give their own)."""
        self.journal_path = journal_path
        self._open_nflog = nflog
        self.interfaces = Interfaces(ifname)
        self.ctx: Any = None
        self.ruleset: Any = None
        self.file: EventFile | None = None
        self.journal: Journal | None = None
        self.nflog: Any = None
        self.group: int | None = None
        self.nflog_error: str | None = None  # why NFLOG is not read, when it is not
        self.hooks: hookevents.Receiver | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake_r, self._wake_w = -1, -1
        self._lock = threading.Lock()
        self._followers: list[_Follower] = []
        self._pending: Any = None  # a ruleset from on_apply, taken by the reader thread
        self._origins: dict[str, Any] = {}  # prefix -> origin under self.ruleset (not runs)
        self._decisions: Any = None  # the CrowdSec decision record, once a drop of it is seen
        self.written = 0
        self.unmapped = 0  # events whose prefix maps to no origin
        self.file_errors = 0
        self.hook_lost = 0

    # ---- the plug-in ---------------------------------------------------------------------
    def start(self, ctx: Any) -> None:
        self.ctx = ctx
        self.ruleset = ctx.ruleset()
        cfg = self.ruleset.events
        self.file = EventFile(events_path(ctx.state_dir), max_bytes=cfg.max_bytes,
                              keep=cfg.keep)
        self.journal = Journal(self.journal_path)
        self._try_bind(cfg.group)
        try:
            self.hooks = hookevents.Receiver(ctx.state_dir)
            self.hooks.publish(cfg.limit)
        except OSError as exc:  # e.g. a state directory too long for a socket's path
            log.error("events: no hook function events: cannot bind %s: %s",
                      hookevents.SOCKET_NAME, exc.strerror or exc)
            if self.hooks is not None:
                self.hooks.close()
            self.hooks = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        ctx.on_apply(self._applied)
        ctx.handle("log.follow", self._follow)
        ctx.handle("events.stats", lambda request, reply: {"stats": self.stats()})
        self._thread = threading.Thread(target=self._run, name="minifw-events", daemon=True)
        self._thread.start()
        log.info("events: NFLOG group %d, %s%s", cfg.group, self.file.path,
                 ", journald" if self.journal.enabled else "")

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for closable in (self.nflog, self.hooks, self.file, self.journal):
            if closable is not None:
                closable.close()
        self.nflog = self.hooks = self.file = self.journal = None
        with self._lock:
            self._followers.clear()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def stats(self) -> dict[str, Any]:
        nflog = self.nflog
        journal = self.journal
        return {
            "written": self.written,
            "lost": (getattr(nflog, "lost", 0) if nflog is not None else 0) + self.hook_lost,
            "nflog_overruns": getattr(nflog, "overruns", 0) if nflog is not None else 0,
            "hook_lost": self.hook_lost,
            "unmapped": self.unmapped,
            "file_errors": self.file_errors,
            "rotations": self.file.rotations if self.file is not None else 0,
            "journald_sent": journal.sent if journal is not None else 0,
            "journald_errors": journal.errors if journal is not None else 0,
            "followers": len(self._followers),
            "group": self.group,
            "nflog_error": self.nflog_error,
        }

    # ---- configuration -------------------------------------------------------------------
    def _bind_nflog(self, group: int) -> None:
        opener = self._open_nflog
        if opener is None:
            from ..kernel.nflog import NflogSocket as opener
        if self.nflog is not None:
            self.nflog.close()
            self.nflog = None
        rcvbuf = _rcvbuf()
        self.nflog = opener(group, copy_range=COPY_RANGE, timeout_ms=TIMEOUT_MS,
                            **({"rcvbuf": rcvbuf} if rcvbuf else {}))
        self.group = group

    def _applied(self, ruleset: Any) -> None:
        """After every up/reload/add/delete: the reader thread takes the new ruleset."""
        self._pending = ruleset
        self._wake()

    def _take_ruleset(self) -> None:
        ruleset, self._pending = self._pending, None
        if ruleset is None:
            return
        self.ruleset = ruleset
        self._origins = {}
        cfg = ruleset.events
        assert self.file is not None
        self.file.configure(max_bytes=cfg.max_bytes, keep=cfg.keep)
        if self.hooks is not None:
            try:
                self.hooks.publish(cfg.limit)
            except OSError as exc:
                log.error("events: cannot publish the hook events cap: %s", exc)
        self.interfaces.forget()
        if cfg.group != self.group or self.nflog is None:
            self._try_bind(cfg.group)

    def _try_bind(self, group: int) -> None:
        """Bind NFLOG ``group``; if that fails (another reader holds it), hook events, the
        file and followers go on, and the next apply tries again."""
        try:
            self._bind_nflog(group)
            self.nflog_error = None
        except MinifwError as exc:
            self.nflog, self.group = None, group
            self.nflog_error = str(exc)
            log.error("events: cannot bind NFLOG group %d: %s", group, exc)

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass  # full: a wake-up is already pending

    # ---- the reader ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # noqa: BLE001  the daemon must keep serving; say why events stop
            log.exception("events: the reader stopped")

    def _loop(self) -> None:
        poller = select.poll()
        registered = None
        hooks = self.hooks
        poller.register(self._wake_r, select.POLLIN)
        if hooks is not None:
            poller.register(hooks.fileno(), select.POLLIN)
        while not self._stopping:
            nflog = self.nflog
            fd = nflog.fileno() if nflog is not None else None
            if fd != registered:
                if registered is not None:
                    try:
                        poller.unregister(registered)
                    except KeyError:
                        pass
                registered = fd
                if fd is not None:
                    poller.register(fd, select.POLLIN)
            ready = {fd for fd, _ in poller.poll(1000)}
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 4096)
                except OSError:
                    pass
                self._take_ruleset()
                continue
            events: list[dict[str, Any]] = []
            if registered in ready and self.nflog is not None:
                self._nflog_events(self.nflog.receive(), events)
            if hooks is not None and hooks.fileno() in ready:
                self._hook_events(events)
            if events:
                self.emit(events)

    def _nflog_events(self, packets: list[Any], out: list[dict[str, Any]]) -> None:
        now = time.time()
        ruleset = self.ruleset
        name = self.interfaces.name
        known = self._origins
        for p in packets:
            fields = parse_packet(p.payload, p.family)
            prefix = p.prefix
            origin = known.get(prefix, _UNKNOWN)
            if origin is _UNKNOWN:
                try:
                    origin = event_origin(ruleset, prefix, fields)
                except MinifwError:
                    origin = None
                if not prefix.startswith(RUN) and len(known) < 65536:
                    known[prefix] = origin  # a run's origin depends on the packet
            if origin is None:
                self.unmapped += 1
            out.append(build_event(fields, ts=p.timestamp or now, origin=origin,
                                   prefix=p.prefix, hook=p.hook, iif=name(p.indev),
                                   oif=name(p.outdev)))
            if origin is not None and origin.rule == CROWDSEC_RULE and ruleset.crowdsec:
                self._feed_origin(ruleset.crowdsec.set, out[-1])

    def _feed_origin(self, set_name: str, event: dict[str, Any]) -> None:
        """A CrowdSec drop's event names the decision: ``origin`` ("cscli",
        "crowdsec:<scenario>") and ``decision`` (its id)."""
        if self._decisions is None:
            from ..store.decisions import DecisionStore
            self._decisions = DecisionStore(self.ctx.state_dir)
        try:
            found = self._decisions.origin_of(set_name, event.get("src") or "")
        except MinifwError:
            found = None
        if found is not None:
            event["decision"], event["origin"] = found

    def _hook_events(self, out: list[dict[str, Any]]) -> None:
        assert self.hooks is not None
        name = self.interfaces.name
        for report in self.hooks.receive():
            self.hook_lost += report.lost
            fields = parse_packet(report.raw)
            event = build_event(fields, ts=report.ts, origin=report.origin(),
                                prefix=report.prefix, iif=name(report.iif),
                                oif=name(report.oif))
            if report.length is not None:
                event["len"] = report.length
            if report.message is not None:
                event["message"] = report.message
            out.append(event)

    def emit(self, events: list[dict[str, Any]]) -> None:
        """Write ``events`` (one write), send them to journald and the followers."""
        assert self.file is not None and self.journal is not None
        try:
            self.file.write_lines([encode_event(e) for e in events])
        except MinifwError as exc:
            self.file_errors += 1
            if self.file_errors <= 10:
                log.error("events: %s", exc)
        else:
            self.written += len(events)
        if self.journal.enabled:
            for e in events:
                self.journal.send(e)
        if self._followers:
            with self._lock:
                followers = list(self._followers)
            for f in followers:
                for e in events:
                    if f.where.match(e):
                        try:
                            f.queue.put_nowait(e)
                        except queue.Full:
                            f.missed += 1

    # ---- log.follow ----------------------------------------------------------------------
    def _follow(self, request: dict[str, Any], reply: Callable[[dict], None]) -> None:
        """``log.follow``: stream the matching events, one reply each (``{"ok": true,
        "event": {...}}``), from a thread of the follower's own until the client hangs up. The
        first reply says the stream began. A follower too slow for the flow misses events: the
        next reply carries how many (``missed``)."""
        try:
            where = EventFilter.from_json(request.get("filter") or {})
        except (ValueError, AttributeError) as exc:
            raise ControlError(f"log.follow: bad filter: {exc}.") from None
        follower = _Follower(where)
        reply({"ok": True, "following": True})
        with self._lock:
            self._followers.append(follower)
        threading.Thread(target=self._feed, args=(follower, reply), name="minifw-follow",
                         daemon=True).start()
        return None

    def _feed(self, follower: _Follower, reply: Callable[[dict], None]) -> None:
        try:
            while not self._stopping:
                try:
                    event = follower.queue.get(timeout=KEEPALIVE)
                except queue.Empty:
                    reply({"ok": True, "keepalive": True})  # finds a client that hung up
                    continue
                message: dict[str, Any] = {"ok": True, "event": event}
                if follower.missed:
                    message["missed"], follower.missed = follower.missed, 0
                reply(message)
        except OSError:
            pass  # the client hung up
        finally:
            with self._lock:
                if follower in self._followers:  # stop() may have cleared them
                    self._followers.remove(follower)
