"""The dispatcher: the program attached once per (family, hook, priority). It tail-calls the
real program through the one-entry prog_array "progs"; replacing that entry swaps programs
atomically, so a reload leaves no gap. If the entry is empty the tail call falls through and
the packet is ACCEPTED. Pure."""

from __future__ import annotations

from .asm import R0, R1, R2, R3, R6, Asm, reg
from .program import NF_ACCEPT, MapSpec, Program

PROGS = MapSpec("progs", "prog_array", 4, 4, 1)
TAIL_CALL = 12  # helper bpf_tail_call(ctx, prog_array, index)


def dispatcher(name: str = "minifw_dispatch") -> Program:
    a = Asm()
    a.mov(R6, reg(R1))       # ctx, handed on unchanged to the real program
    a.mov(R1, reg(R6))
    a.ld_map(R2, PROGS.name)
    a.mov(R3, 0)
    a.call(TAIL_CALL)        # returns only when the entry is empty
    a.mov(R0, NF_ACCEPT)
    a.exit()
    return Program(name, a, (PROGS,))
