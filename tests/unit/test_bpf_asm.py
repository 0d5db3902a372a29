"""The eBPF assembler: encodings checked against the kernel's documented layout, labels, the
edges of every field."""

import pytest

from minifw.bpf.asm import (
    ADD, ALU, ALU64, AND, AsmError, Asm, B, CALL, DW, EXIT, H, JEQ, JMP, JMP32, K, LD, LDX, MEM,
    MOV, PSEUDO_KFUNC_CALL, PSEUDO_MAP_FD, R0, R1, R2, R3, R10, ST, STX, W, X, decode, encode, reg)


def test_mov_immediate_and_register():
    a = Asm()
    a.mov(R0, 1)
    a.mov(R1, reg(R10))
    a.mov(R2, 7, wide=False)
    assert decode(a.assemble()) == [
        (ALU64 | MOV | K, 0, 0, 0, 1), (ALU64 | MOV | X, 1, 10, 0, 0), (ALU | MOV | K, 2, 0, 0, 7)]


def test_slot_bytes_are_little_endian_with_src_in_the_high_nibble():
    assert encode(0xB7, 1, 10, -2, -1) == bytes([0xB7, 0xA1, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])


def test_forward_and_backward_jumps_count_slots_after_the_jump():
    a = Asm()
    a.label("top")
    a.jmp("==", R2, 17, "end")      # slot 0
    a.ld_imm64(R3, 1 << 40)          # slots 1-2: two slots
    a.jmp(JEQ, R2, reg(R3), "top")   # slot 3: back to 0
    a.label("end")
    a.exit()                         # slot 4
    slots = decode(a.assemble())
    assert slots[0] == (JMP | JEQ | K, 2, 0, 3, 17)
    assert slots[1] == (LD | DW, 3, 0, 0, 0) and slots[2] == (0, 0, 0, 0, 256)
    assert slots[3] == (JMP | JEQ | X, 2, 3, -4, 0)
    assert slots[4] == (JMP | EXIT, 0, 0, 0, 0)


def test_jump_to_the_next_instruction_has_offset_zero():
    a = Asm()
    a.jmp("!=", R1, 0, "next", wide=False)
    a.label("next")
    a.exit()
    code, *_rest, off, _imm = decode(a.assemble())[0]
    assert code & 0x07 == JMP32 and off == 0


def test_maps_and_kfuncs_are_filled_in_at_assembly():
    a = Asm()
    a.ld_map(R1, "blocked")
    a.kcall("bpf_dynptr_from_skb")
    slots = decode(a.assemble({"blocked": 9}, {"bpf_dynptr_from_skb": 51234}))
    assert slots[0] == (LD | DW, 1, PSEUDO_MAP_FD, 0, 9)
    assert slots[2] == (JMP | CALL, 0, PSEUDO_KFUNC_CALL, 0, 51234)
    with pytest.raises(AsmError, match="map 'blocked'"):
        a.assemble({}, {"bpf_dynptr_from_skb": 1})
    with pytest.raises(AsmError, match="BTF id"):
        a.assemble({"blocked": 9})


def test_memory_sizes_and_atomics():
    a = Asm()
    a.ldx(B, R2, R1, 9)
    a.ldx(H, R2, R1, -2)
    a.stx(DW, R10, -8, R2)
    a.st(W, R10, -16, 5)
    a.atomic_add(DW, R1, 0, R2)
    assert [s[0] for s in decode(a.assemble())] == [
        LDX | MEM | B, LDX | MEM | H, STX | MEM | DW, ST | MEM | W, STX | 0xC0 | DW]
    assert decode(a.assemble())[4][4] == ADD
    with pytest.raises(AsmError):
        a.atomic_add(H, R1, 0, R2)


@pytest.mark.parametrize("value,ok", [(2**31 - 1, True), (2**31, False),
                                      (-(2**31), True), (-(2**31) - 1, False)])
def test_immediates_are_signed_32_bit(value, ok):
    a = Asm()
    if ok:
        a.alu(AND, R1, value)
        assert decode(a.assemble())[0][4] == value
    else:
        with pytest.raises(AsmError):
            a.alu(AND, R1, value)


@pytest.mark.parametrize("off,ok", [(32767, True), (32768, False), (-32768, True), (-32769, False)])
def test_offsets_are_signed_16_bit(off, ok):
    a = Asm()
    if ok:
        a.ldx(W, R1, R2, off)
        assert decode(a.assemble())[0][3] == off
    else:
        with pytest.raises(AsmError):
            a.ldx(W, R1, R2, off)


def test_a_64_bit_immediate_splits_into_low_and_high_words():
    a = Asm()
    a.ld_imm64(R1, 0xFFFFFFFF_80000000)
    a.ld_imm64(R2, -1)
    lo1, hi1, lo2, hi2 = (s[4] for s in decode(a.assemble()))
    assert (lo1 & 0xFFFFFFFF, hi1 & 0xFFFFFFFF) == (0x80000000, 0xFFFFFFFF)
    assert (lo2, hi2) == (-1, -1)
    with pytest.raises(AsmError):
        a.ld_imm64(R1, 1 << 64)


def test_lines_follow_every_slot():
    a = Asm()
    a.line = 3
    a.mov(R0, 1)
    a.line = 4
    a.ld_imm64(R1, 5)
    assert a.lines() == [3, 4, 4]


def test_bad_programs_are_refused():
    a = Asm()
    a.ja("nowhere")
    with pytest.raises(AsmError, match="undefined label"):
        a.assemble()
    a.label("x")
    with pytest.raises(AsmError, match="twice"):
        a.label("x")
    with pytest.raises(AsmError):
        a.mov(11, 1)
    with pytest.raises(AsmError):
        decode(b"\0" * 9)
