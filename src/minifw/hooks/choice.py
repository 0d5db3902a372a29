"""Where one hook function runs: the kernel or the queue, and the reason, said once for the log
and ``status``. Pure: the caller hands in the compiler's refusal (or None)."""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError
from . import HookSpec


@dataclasses.dataclass(frozen=True)
class Choice:
    where: str   # "kernel" | "queue"
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "reason": self.reason}


def needs_compile(spec: HookSpec) -> bool:
    """Whether the compiler's verdict matters: never for the queue, nor for an "auto" function
    that asks for something queue-only."""
    return spec.where == "kernel" or (spec.where == "auto" and spec.kernel_refusal is None)


def choose(spec: HookSpec, compile_error: ConfigError | None) -> Choice:
    """where="kernel" that does not compile raises the compiler's error (file, line, construct);
    "auto" falls back to the queue and says why."""
    if spec.where == "queue":
        return Choice("queue", 'where="queue"')
    if spec.where == "auto" and spec.kernel_refusal:
        return Choice("queue", f"auto: {spec.kernel_refusal}")
    if compile_error is not None:
        if spec.where == "kernel":
            raise compile_error
        return Choice("queue", f"auto: does not compile: {compile_error}")
    if spec.where == "kernel":
        return Choice("kernel", 'where="kernel"')
    return Choice("kernel", "auto: compiles to BPF")
