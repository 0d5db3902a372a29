"""Where the functions of one hook file run: each is compiled for the kernel (one program per
family) or left to the queue runner, with the reason logged once here and kept for ``status``."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ..errors import ConfigError, MinifwError
from ..hooks import HookSpec
from ..hooks.choice import Choice, choose, needs_compile
from ..hooks.load import HookModule, load_module

log = logging.getLogger("minifw.hooks")

FAMILIES = (4, 6)


@dataclasses.dataclass(frozen=True)
class Placed:
    spec: HookSpec
    choice: Choice
    programs: tuple[Any, ...] = ()   # compile.bpfhook KernelHook, one per family (kernel only)


@dataclasses.dataclass(frozen=True)
class ModulePlan:
    module: HookModule
    placed: tuple[Placed, ...]

    @property
    def file(self) -> str:
        return self.module.file

    @property
    def queue_specs(self) -> list[HookSpec]:
        return [p.spec for p in self.placed if p.choice.where == "queue"]

    @property
    def kernel(self) -> list[Placed]:
        return [p for p in self.placed if p.choice.where == "kernel"]


def compile_for(spec: HookSpec, family: int, module: HookModule) -> Any:
    try:
        from ..compile.bpfhook import compile_hook
    except ImportError as exc:  # a build without the compiler: "auto" stays on the queue
        raise ConfigError("this build of minifw has no kernel hook compiler",
                          file=module.file) from exc
    return compile_hook(spec, family, module.source, module.file, module.namespace,
                        _layout(module.source))


def _layout(source: str) -> dict[str, int]:
    """The kernel struct offsets the compiler reads (the context, sk_buff.len for
    pkt.length, sk_buff.mark, the devices' ifindex), from the running kernel's BTF (cached);
    none when the BTF cannot say: the compiler then uses the stable context offsets and
    refuses pkt.mark, pkt.iif and pkt.oif ("auto" stays on the queue)."""
    try:
        from ..kernel.bpf import kbtf
        return kbtf.offsets()
    except MinifwError:
        return {}


def place_module(module: HookModule, quiet: bool = False) -> ModulePlan:
    placed = []
    for spec in module.specs:
        programs: tuple[Any, ...] = ()
        error = None
        if needs_compile(spec):
            try:
                programs = tuple(compile_for(spec, f, module) for f in FAMILIES)
            except ConfigError as exc:
                error = exc
        choice = choose(spec, error)
        placed.append(Placed(spec, choice, programs if choice.where == "kernel" else ()))
    plan = ModulePlan(module, tuple(placed))
    if not quiet:
        tell(plan)
    return plan


def tell(plan: ModulePlan) -> None:
    """Log where each function runs and why (once per up/reload)."""
    for p in plan.placed:
        log.info("hook %s (%s) runs in the %s: %s", p.spec.name, plan.file, p.choice.where,
                 p.choice.reason)


def place(file: str, quiet: bool = False) -> ModulePlan:
    return place_module(load_module(file), quiet)


def queue_specs(file: str) -> list[HookSpec]:
    """The functions of ``file`` the queue runner serves (the runner logs no choice: ``up``
    and ``minifw run`` did)."""
    return place(file, quiet=True).queue_specs
