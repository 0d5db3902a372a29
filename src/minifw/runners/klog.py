"""pkt.log lines of kernel hook functions: ringbuf records -> the kernel log (the article's
printk line), the foreground log and, while a daemon listens, the event stream (``hook:<fn>``,
as the queue runner reports them: events/hookevents.py). Shared by ``minifw run`` (its own
maps) and the daemon (the pinned maps of what ``up`` attached)."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Iterable

from ..errors import MinifwError
from .runner import KernelLog

log = logging.getLogger("minifw.hooks")


def formats_of(record: dict[str, Any]) -> tuple[Any, ...]:
    """The LogFormats a kernel hook record keeps (``kattach._record``'s ``logs``)."""
    from ..compile.bpfhook import LogFormat
    return tuple(LogFormat(int(i), fn, tuple(tuple(p) for p in parts), int(line))
                 for f in record.get("functions", []) for i, fn, parts, line in f.get("logs", ()))


def points_of(record: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {f["name"]: (f["hook"], f["priority"]) for f in record.get("functions", [])}


class LogLines:
    """Where decoded records go. ``tick()`` a few times a second (a daemon that started or
    went since)."""

    def __init__(self, state_dir: Path, ident: str = "minifw"):
        from ..events.hookevents import Sender
        self.kmsg = KernelLog(ident)
        self.events = Sender(state_dir)
        self._checked = 0.0
        self.written = 0
        self.bad = 0

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._checked > 1.0:
            self.events.refresh()
            self._checked = now

    def write(self, records: Iterable[bytes], formats: tuple[Any, ...],
              points: dict[str, tuple[str, int]]) -> None:
        from ..compile.bpfhook import decode_log
        for record in records:
            try:
                fn, text = decode_log(record, formats)
            except (MinifwError, ValueError):
                self.bad += 1   # a record of a format this reader does not know
                continue
            log.info("hook:%s %s", fn, text)
            self.kmsg.write(text)
            hook, prio = points.get(fn, (None, None))
            self.events.report(fn, hook, prio, "log", None, text)
            self.written += 1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.events.close()
        self.kmsg.close()
