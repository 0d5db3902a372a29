"""Kernel hook functions for the API: what ``status`` shows of every [[hook]] function (where it
runs, why, and the kernel's counts), and ``hook set`` on a running hook's Addresses."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import MinifwError
from ..runners import kattach
from .results.base import Outcome


@dataclasses.dataclass(frozen=True)
class KernelHookStatus:
    """One [[hook]] function: where it runs and why; for the kernel, its packets, drops and
    pkt.log lines lost (None: the counts could not be read) and its file's Counters."""

    file: str
    function: str
    hook: str
    priority: int
    where: str
    reason: str
    packets: int | None = None
    drops: int | None = None
    counters: tuple[tuple[str, int], ...] = ()
    log_lost: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "function": self.function, "hook": self.hook,
                "priority": self.priority, "where": self.where, "reason": self.reason,
                "packets": self.packets, "drops": self.drops, "log_lost": self.log_lost,
                "counters": dict(self.counters)}


@dataclasses.dataclass(frozen=True)
class HookSetDone(Outcome):
    file: str = ""
    name: str = ""
    op: str = ""
    changed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "file": self.file, "name": self.name, "op": self.op,
                "changed": self.changed}


def status(state_dir: Path) -> list[KernelHookStatus]:
    out = []
    for rec in kattach.records(state_dir):
        kernel = any(fn["where"] == "kernel" for fn in rec.get("functions", []))
        counts: dict[str, dict[str, int]] = {}
        counters: dict[str, int] = {}
        if kernel:
            try:
                counts = kattach.function_counts(rec)
                counters = kattach.counter_values(rec)
            except MinifwError:
                pass  # shown as unknown counts, not as an error of status
        for fn in rec.get("functions", []):
            got = counts.get(fn["name"], {})
            out.append(KernelHookStatus(
                file=rec["file"], function=fn["name"], hook=fn["hook"],
                priority=fn["priority"], where=fn["where"], reason=fn["reason"],
                packets=got.get("packets"), drops=got.get("drops"),
                log_lost=got.get("lost"),
                counters=tuple(sorted(counters.items())) if fn["where"] == "kernel" else ()))
    return out


def hook_set(state_dir: Path, file: str, name: str, op: str, addrs: list[str],
             timeout: float | None = None) -> HookSetDone:
    changed = kattach.hook_set(state_dir, file, name, op, addrs, timeout)
    verb = "added to" if op == "add" else "deleted from"
    until = f" for {timeout:g} s" if timeout else ""
    return HookSetDone(f"{changed} entries {verb} {name} of {file}{until}", file=file,
                       name=name, op=op, changed=changed)
