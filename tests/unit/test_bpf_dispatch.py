"""The dispatcher's instructions: ctx handed on, a tail call into "progs"[0], ACCEPT when the
entry is empty."""

import pytest

from minifw.bpf.asm import ALU64, CALL, DW, EXIT, IMM, JMP, K, LD, MOV, PSEUDO_MAP_FD, X, decode
from minifw.bpf.dispatch import PROGS, TAIL_CALL, dispatcher
from minifw.bpf.program import NF_ACCEPT, MapSpec, MapSpecError
from minifw.errors import MinifwError


def test_dispatcher_tail_calls_progs_0_and_accepts_on_fall_through():
    prog = dispatcher()
    assert prog.maps == (PROGS,)
    assert PROGS == MapSpec("progs", "prog_array", 4, 4, 1)
    assert decode(prog.asm.assemble({"progs": 77})) == [
        (ALU64 | MOV | X, 6, 1, 0, 0),
        (ALU64 | MOV | X, 1, 6, 0, 0),
        (LD | DW | IMM, 2, PSEUDO_MAP_FD, 0, 77), (0, 0, 0, 0, 0),
        (ALU64 | MOV | K, 3, 0, 0, 0),
        (JMP | CALL, 0, 0, 0, TAIL_CALL),
        (ALU64 | MOV | K, 0, 0, 0, NF_ACCEPT),
        (JMP | EXIT, 0, 0, 0, 0)]
    assert TAIL_CALL == 12
    assert prog.license == "Dual MIT/GPL"


def test_a_map_spec_of_an_unknown_kind_is_refused():
    with pytest.raises(MapSpecError, match="unknown map kind 'queue'") as info:
        MapSpec("q", "queue", 0, 4, 1)
    assert isinstance(info.value, MinifwError)
