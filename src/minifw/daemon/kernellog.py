"""The daemon plug-in that reads the pkt.log ringbuf of every kernel hook file ``up`` attached
(found from kattach's records and their pinned maps) and writes its lines where ``minifw run``
writes them (runners/klog.py: /dev/kmsg, events ``hook:<fn>``).

A reload swaps a file's maps for a new generation: every apply (and a look every few seconds,
for an ``up`` done without the daemon) re-reads the records, drains and closes the readers of
maps that went and opens the new ones. Without this plug-in (no daemon), the programs count the
lines that find no room as lost and verdicts go on."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from typing import Any

from ..errors import MinifwError

log = logging.getLogger("minifw.hooks")

RESCAN_S = 3.0
POLL_S = 0.25


class _Ring:
    def __init__(self, map_dir: str, record: dict[str, Any]):
        from ..kernel.bpf.maps import Map
        from ..kernel.bpf.ringbuf import RingbufReader
        from ..runners.klog import formats_of, points_of
        self.map = Map.open_pinned(os.path.join(map_dir, "log"))
        try:
            self.reader = RingbufReader(self.map)
        except BaseException:
            self.map.close()
            raise
        self.formats = formats_of(record)
        self.points = points_of(record)

    def close(self) -> None:
        self.reader.close()
        self.map.close()


class KernelLogService:
    def __init__(self) -> None:
        self.ctx: Any = None
        self.rings: dict[str, _Ring] = {}   # map_dir -> its reader
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, ctx: Any) -> None:
        self.ctx = ctx
        ctx.on_apply(lambda _ruleset: self._wake.set())
        self._thread = threading.Thread(target=self._run, name="kernel pkt.log",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        from ..runners.klog import LogLines
        out = LogLines(self.ctx.state_dir)
        ep = select.epoll()
        try:
            since = RESCAN_S
            while not self._stop.is_set():
                if self._wake.is_set() or since >= RESCAN_S:
                    self._wake.clear()
                    self._sync(ep, out)
                    since = 0.0
                out.tick()
                with contextlib.suppress(InterruptedError):
                    ep.poll(POLL_S)
                since += POLL_S
                for ring in list(self.rings.values()):
                    out.write(ring.reader.read(), ring.formats, ring.points)
        finally:
            for ring in self.rings.values():
                ring.close()
            self.rings.clear()
            ep.close()
            out.close()

    def _sync(self, ep: select.epoll, out: Any) -> None:
        from ..runners import kattach
        try:
            records = kattach.records(self.ctx.state_dir)
        except MinifwError as exc:
            log.warning("kernel hook pkt.log: %s", exc)
            return
        wanted = {r["map_dir"]: r for r in records if r.get("map_dir")
                  and any(f.get("logs") for f in r.get("functions", []))}
        for map_dir in set(self.rings) - set(wanted):
            ring = self.rings.pop(map_dir)
            out.write(ring.reader.read(), ring.formats, ring.points)  # its last lines
            with contextlib.suppress(OSError, ValueError):
                ep.unregister(ring.reader.fileno())
            ring.close()
        for map_dir in set(wanted) - set(self.rings):
            try:
                ring = _Ring(map_dir, wanted[map_dir])
            except (MinifwError, OSError) as exc:  # its pins went (a down in between)
                log.debug("kernel hook pkt.log: %s: %s", map_dir, exc)
                continue
            self.rings[map_dir] = ring
            ep.register(ring.reader.fileno(), select.EPOLLIN)
