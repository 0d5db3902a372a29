"""What the hook compiler produces and how it refuses. Pure."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...bpf.program import MapSpec, Program
from ...errors import ConfigError

S64_MIN, S64_MAX = -(1 << 63), (1 << 63) - 1
NONE = S64_MIN       # a field's None in a register: outside the range any int value may take
INT_MIN = S64_MIN + 1


class HookCompileError(ConfigError):
    """A hook function uses a construct that cannot run in the kernel."""


@dataclasses.dataclass(frozen=True)
class LogFormat:
    """One ``pkt.log(...)`` call: its ringbuf record id, the function, and the text's parts:
    literal strings and the kinds of the values ("int", "bool", "addr4", "addr6", "proto",
    "hook"), in the record's order."""

    id: int
    fn: str
    parts: tuple[tuple[str, str], ...]   # ("text", literal) or ("value", kind)
    line: int


@dataclasses.dataclass(frozen=True)
class KernelHook:
    """One hook function compiled for one family."""

    name: str
    hook: str
    priority: int
    family: int
    program: Program
    maps: tuple[MapSpec, ...]
    logs: tuple[LogFormat, ...]
    address_maps: dict[str, dict[str, str]]
    counters: tuple[str, ...]
    # constant maps the loader fills once at load (the port sets): map name -> (key, value)s
    initial: dict[str, tuple[tuple[bytes, bytes], ...]] = dataclasses.field(default_factory=dict)
    # interface names in the order of the "ifindex" array's slots (the loader keeps them current)
    ifnames: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Val:
    """What the compiler knows about a value in a register: its int range (None: it is never
    an int, only None), whether it may be None, and whether it is a bool."""

    lo: int | None
    hi: int | None
    none: bool = False
    boolean: bool = False
    verdict: bool = False

    @staticmethod
    def const(v: int) -> "Val":
        return Val(int(v), int(v), boolean=isinstance(v, bool))

    @property
    def is_int(self) -> bool:
        return self.lo is not None

    def join(self, other: "Val") -> "Val":
        if self.lo is None:
            lo, hi = other.lo, other.hi
        elif other.lo is None:
            lo, hi = self.lo, self.hi
        else:
            lo, hi = min(self.lo, other.lo), max(self.hi, other.hi)  # type: ignore[type-var]
        return Val(lo, hi, self.none or other.none,
                   (self.boolean or self.lo is None) and (other.boolean or other.lo is None)
                   and (lo is not None), self.verdict and other.verdict)


BOOL = Val(0, 1, boolean=True)


def refuse(node: Any, filename: str, message: str, line_offset: int = 0) -> HookCompileError:
    line = getattr(node, "lineno", None)
    return HookCompileError(message, file=filename,
                            line=None if line is None else line + line_offset)
