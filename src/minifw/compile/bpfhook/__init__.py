"""The hook compiler: a Python hook function to a BPF netfilter program. Pure.

    hook = compile_hook(spec, 4, source, "hooks.py", module)   # one program per family

``source`` is the text of the whole file that defines the function (so that line numbers are
the file's and the module's other functions can be inlined); ``module`` its globals. What
compiles: docs/hooks.md, "Hooks in the kernel"."""

from __future__ import annotations

import ast
from typing import Any, Mapping

from ...bpf.program import Program
from ...hooks import ACCEPT, DROP, HookSpec
from ...hooks.addresses import check_plain_address_sets
from .compiler import Compiler, find_functions
from .logs import decode_log
from .model import HookCompileError, KernelHook, LogFormat
from .verifier import explain_verifier


def compile_hook(spec: HookSpec, family: int, source: str, filename: str,
                 module: dict[str, Any], layout: Mapping[str, int] | None = None) -> KernelHook:
    """Compile ``spec``'s function for IPv4 (4) or IPv6 (6), or raise HookCompileError naming
    the file, the line and the construct. ``layout``: kernel struct offsets from BTF
    ("sk_buff.mark", "net_device.ifindex"), needed only by pkt.mark, pkt.iif and pkt.oif."""
    if family not in (4, 6):
        raise HookCompileError(f"family must be 4 or 6, not {family!r}", file=filename)
    check_plain_address_sets(source, filename, module)
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as exc:
        raise HookCompileError(f"syntax error: {exc.msg}", file=filename,
                               line=exc.lineno) from None
    functions = find_functions(tree)
    fn_name = getattr(spec.fn, "__name__", spec.name)
    fn = functions.get(fn_name)
    if fn is None:
        raise HookCompileError(f"no top-level function `{fn_name}` in this file: only module "
                               "level functions compile to the kernel", file=filename)
    verdicts = {id(ACCEPT): 1, id(DROP): 0}
    c = Compiler(fn, functions, module, filename, spec.name, family,
                 spec.error_verdict == ACCEPT, verdicts, dict(layout or {}))
    c.inlining.append(fn_name)
    asm = c.compile()
    maps = tuple(c.maps.values())
    used = {i.map_name for i in asm.insns if i.map_name is not None}
    return KernelHook(
        name=spec.name, hook=spec.hook.value, priority=spec.priority, family=family,
        program=Program(f"{spec.name}_v{family}", asm,
                        tuple(m for m in maps if m.name in used)), maps=maps,
        logs=tuple(c.logs), address_maps=dict(c.address_maps), counters=tuple(c.counters),
        initial=dict(c.initial), ifnames=tuple(c.ifnames))


__all__ = ["compile_hook", "KernelHook", "HookCompileError", "LogFormat", "decode_log",
           "explain_verifier"]
