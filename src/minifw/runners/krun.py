"""``minifw run FILE.py``: the file's kernel functions held in the foreground (attached on
start, detached on Ctrl-C or SIGTERM), its queue functions served by a runner as before."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from ..bpf.program import HOOKS as HOOK_NUMBERS, PF
from ..errors import MinifwError
from . import kattach, runner as hook_runner
from .klog import LogLines
from .kplace import ModulePlan, place

log = logging.getLogger("minifw.hooks")


@contextlib.contextmanager
def held(plan: ModulePlan, state_dir: Path) -> Iterator[dict[str, Any]]:
    """The kernel functions of ``plan`` attached for the duration; their maps by name."""
    attach, _, pins, _ = kattach._kernel()
    root = pins.netns_dir()
    maps: dict[str, Any] = {}
    points = sorted({(PF[kh.family], HOOK_NUMBERS[kh.hook], kh.priority)
                     for p in plan.kernel for kh in p.programs})
    try:
        kattach.attach_module(plan, state_dir, pin_root=root, pin=False, hold=maps)
        yield maps
    finally:
        att = attach.Attachments(root)
        for pf, hooknum, prio in points:
            with contextlib.suppress(MinifwError):
                att.detach(pf, hooknum, prio)
        for m in maps.values():
            with contextlib.suppress(MinifwError, OSError):
                m.close()


def run(file: str, state_dir: Path, ready: Callable[[ModulePlan, Any], None]) -> ModulePlan:
    """Until SIGINT/SIGTERM. ``ready(plan, queue runner or None)`` once everything is in."""
    plan = place(file)
    if not plan.kernel:
        hook_runner.run(file, state_dir, specs=plan.queue_specs,
                        ready=lambda r: ready(plan, r))
        return plan
    stop = threading.Event()
    with held(plan, state_dir) as maps:
        reader = threading.Thread(target=_read_logs, args=(maps, plan, stop, state_dir),
                                  daemon=True, name="pkt.log reader")
        reader.start()
        try:
            if plan.queue_specs:
                hook_runner.run(file, state_dir, specs=plan.queue_specs,
                                ready=lambda r: ready(plan, r))
            else:
                ready(plan, None)
                _wait_for_signal(stop)
        finally:
            stop.set()
            reader.join(2)
    return plan


def _wait_for_signal(stop: threading.Event) -> None:
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _read_logs(maps: dict[str, Any], plan: ModulePlan, stop: threading.Event,
               state_dir: Path) -> None:
    """pkt.log lines of the kernel functions until ``stop`` (runners/klog.py says where they
    go). Without a "log" map, nothing to read."""
    ring = maps.get("log")
    if ring is None:
        return
    try:
        from ..kernel.bpf.ringbuf import RingbufReader
    except ImportError:
        log.warning("this build has no ringbuf reader: pkt.log lines of kernel hooks are "
                    "counted as lost, verdicts go on")
        return
    formats = tuple(lf for p in plan.kernel for lf in p.programs[0].logs)
    points = {p.spec.name: (p.spec.hook.value, p.spec.priority) for p in plan.kernel}
    out = LogLines(state_dir)
    reader = RingbufReader(ring)
    try:
        while not stop.is_set():
            out.tick()
            out.write(reader.poll(0.2), formats, points)
    finally:
        reader.close()
        out.close()
