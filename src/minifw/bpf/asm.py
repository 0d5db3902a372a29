"""An eBPF assembler: instructions built by name, labels for jumps, symbolic map and kfunc
references resolved when the program is assembled for loading. Pure.

    a = Asm()
    a.mov(R0, 1)             # ACCEPT
    a.jmp(JEQ, R2, 17, "udp")
    a.exit()
    a.label("udp")
    a.mov(R0, 0)             # DROP
    a.exit()
    code = a.assemble()      # bytes for BPF_PROG_LOAD

Encoding (include/uapi/linux/bpf.h): 8 bytes per slot, ``code u8, dst:4 | src:4 << 4, off s16,
imm s32``, little-endian; a 64-bit immediate load takes two slots.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Iterable, Mapping

from ..errors import MinifwError

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
FP = R10  # the read-only frame pointer; the stack is the 512 bytes below it

# instruction classes
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
# sizes
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
SIZE_BYTES = {W: 4, H: 2, B: 1, DW: 8}
BYTES_SIZE = {v: k for k, v in SIZE_BYTES.items()}
# modes
IMM, MEM, ATOMIC = 0x00, 0x60, 0xC0
# ALU operations
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH, END = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
# jump operations
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, CALL, EXIT, JLT, JLE, JSLT, JSLE = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
# operand source: an immediate (K) or a register (X); for END, to little (K) or big (X) endian
K, X = 0x00, 0x08
# src_reg values with a special meaning
PSEUDO_MAP_FD = 1      # ld_imm64: imm is a map fd
PSEUDO_MAP_VALUE = 2   # ld_imm64: imm is a map fd, the next slot's imm an offset in its value
PSEUDO_CALL = 1        # call: a bpf-to-bpf call, imm the relative slot
PSEUDO_KFUNC_CALL = 2  # call: imm is a kernel function's BTF id

JUMP_OPS = {"==": JEQ, "!=": JNE, ">": JGT, ">=": JGE, "<": JLT, "<=": JLE, "&": JSET,
            "s>": JSGT, "s>=": JSGE, "s<": JSLT, "s<=": JSLE}
S16 = (-(1 << 15), (1 << 15) - 1)
S32 = (-(1 << 31), (1 << 31) - 1)
MAX_SLOTS = 1_000_000  # the verifier's own limit on processed instructions


class AsmError(MinifwError):
    """A program that cannot be encoded: an unknown label, an out-of-range operand."""


@dataclasses.dataclass
class Insn:
    """One instruction; ``target``, ``map_name`` and ``kfunc`` are resolved at assembly."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    target: str | None = None    # a label: the jump's off (or a pseudo call's imm)
    map_name: str | None = None  # ld_imm64 of a map: imm becomes its fd
    kfunc: str | None = None     # a kfunc call: imm becomes its BTF id
    imm64: int | None = None     # the full value of a 64-bit immediate load (two slots)
    line: int | None = None      # the source line that produced it, for verifier messages

    @property
    def slots(self) -> int:
        return 2 if self.imm64 is not None else 1


def _reg(r: int) -> int:
    if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r <= 10:
        raise AsmError(f"no register r{r}")
    return r


def _imm(value: int, what: str = "immediate") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not S32[0] <= value <= S32[1]:
        raise AsmError(f"{what} {value!r} does not fit in a signed 32-bit field")
    return value


def _off(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not S16[0] <= value <= S16[1]:
        raise AsmError(f"offset {value!r} does not fit in a signed 16-bit field")
    return value


def _is_reg(operand: object) -> bool:
    return isinstance(operand, Reg)


class Reg(int):
    """A register used as an operand, so ``mov(R1, reg(R2))`` differs from ``mov(R1, 2)``."""


def reg(r: int) -> Reg:
    return Reg(_reg(r))


class Asm:
    """A program under construction: a list of instructions and the labels between them."""

    def __init__(self) -> None:
        self.insns: list[Insn] = []
        self.labels: dict[str, int] = {}  # label -> index into insns
        self.line: int | None = None      # tagged onto every instruction emitted from now on
        self._fresh = 0

    # -- bookkeeping ---------------------------------------------------------------------
    def emit(self, insn: Insn) -> Insn:
        if insn.line is None:
            insn.line = self.line
        self.insns.append(insn)
        return insn

    def label(self, name: str) -> str:
        if name in self.labels:
            raise AsmError(f"label {name!r} is defined twice")
        self.labels[name] = len(self.insns)
        return name

    def fresh(self, stem: str = "L") -> str:
        """A label name not used yet (to be placed later with ``label``)."""
        self._fresh += 1
        return f".{stem}{self._fresh}"

    def extend(self, insns: Iterable[Insn]) -> None:
        for insn in insns:
            self.emit(insn)

    # -- ALU -----------------------------------------------------------------------------
    def alu(self, op: int, dst: int, operand: int, *, wide: bool = True) -> Insn:
        """dst = dst <op> operand; ``operand`` is reg(Rn) or an immediate. wide: 64-bit."""
        cls = ALU64 if wide else ALU
        if _is_reg(operand):
            return self.emit(Insn(cls | op | X, _reg(dst), _reg(operand)))
        return self.emit(Insn(cls | op | K, _reg(dst), imm=_imm(operand)))

    def mov(self, dst: int, operand: int, *, wide: bool = True) -> Insn:
        return self.alu(MOV, dst, operand, wide=wide)

    def neg(self, dst: int, *, wide: bool = True) -> Insn:
        return self.emit(Insn((ALU64 if wide else ALU) | NEG, _reg(dst)))

    def endian(self, dst: int, bits: int, *, big: bool = True) -> Insn:
        """Convert dst between host (little) and big endian, keeping the low ``bits`` bits."""
        if bits not in (16, 32, 64):
            raise AsmError(f"endian conversion of {bits} bits; use 16, 32 or 64")
        return self.emit(Insn(ALU | END | (X if big else K), _reg(dst), imm=bits))

    def ld_imm64(self, dst: int, value: int) -> Insn:
        if isinstance(value, bool) or not isinstance(value, int) \
                or not -(1 << 63) <= value < (1 << 64):
            raise AsmError(f"immediate {value!r} does not fit in 64 bits")
        return self.emit(Insn(LD | DW | IMM, _reg(dst), imm64=value & ((1 << 64) - 1)))

    def ld_map(self, dst: int, name: str) -> Insn:
        """dst = the map named ``name`` (its fd is filled in at assembly)."""
        return self.emit(Insn(LD | DW | IMM, _reg(dst), PSEUDO_MAP_FD, map_name=name, imm64=0))

    # -- memory --------------------------------------------------------------------------
    def ldx(self, size: int, dst: int, src: int, off: int = 0) -> Insn:
        """dst = *(size *)(src + off)"""
        return self.emit(Insn(LDX | MEM | _size(size), _reg(dst), _reg(src), _off(off)))

    def stx(self, size: int, dst: int, off: int, src: int) -> Insn:
        """*(size *)(dst + off) = src"""
        return self.emit(Insn(STX | MEM | _size(size), _reg(dst), _reg(src), _off(off)))

    def st(self, size: int, dst: int, off: int, imm: int) -> Insn:
        """*(size *)(dst + off) = imm"""
        return self.emit(Insn(ST | MEM | _size(size), _reg(dst), 0, _off(off), _imm(imm)))

    def atomic_add(self, size: int, dst: int, off: int, src: int) -> Insn:
        """*(size *)(dst + off) += src, atomically (W or DW only)."""
        if size not in (W, DW):
            raise AsmError("atomic add works on 4- or 8-byte words only")
        return self.emit(Insn(STX | ATOMIC | size, _reg(dst), _reg(src), _off(off), ADD))

    # -- jumps and calls -----------------------------------------------------------------
    def jmp(self, op: int | str, dst: int, operand: int, target: str, *,
            wide: bool = True) -> Insn:
        """if dst <op> operand: goto target. ``op`` is JEQ... or one of JUMP_OPS' symbols."""
        code = JUMP_OPS[op] if isinstance(op, str) else op
        if code in (JA, CALL, EXIT):
            raise AsmError("jmp takes a comparison; use ja, call or exit")
        cls = JMP if wide else JMP32
        if _is_reg(operand):
            return self.emit(Insn(cls | code | X, _reg(dst), _reg(operand), target=target))
        return self.emit(Insn(cls | code | K, _reg(dst), imm=_imm(operand), target=target))

    def ja(self, target: str) -> Insn:
        return self.emit(Insn(JMP | JA, target=target))

    def call(self, helper: int) -> Insn:
        """Call a BPF helper by number (e.g. 1 = map_lookup_elem)."""
        return self.emit(Insn(JMP | CALL, imm=_imm(helper, "helper number")))

    def kcall(self, name: str) -> Insn:
        """Call a kernel function (kfunc) by name; its BTF id is filled in at assembly."""
        return self.emit(Insn(JMP | CALL, src=PSEUDO_KFUNC_CALL, kfunc=name))

    def exit(self) -> Insn:
        return self.emit(Insn(JMP | EXIT))

    # -- output --------------------------------------------------------------------------
    def slot_of(self) -> list[int]:
        """The slot index at which each instruction starts, plus the total as last entry."""
        out, at = [], 0
        for insn in self.insns:
            out.append(at)
            at += insn.slots
        out.append(at)
        return out

    def lines(self) -> list[int | None]:
        """The source line of every slot (a 64-bit load's two slots share one)."""
        out: list[int | None] = []
        for insn in self.insns:
            out.extend([insn.line] * insn.slots)
        return out

    def assemble(self, maps: Mapping[str, int] | None = None,
                 kfuncs: Mapping[str, int] | None = None) -> bytes:
        """The program as bytes, with labels, map fds and kfunc BTF ids resolved."""
        maps, kfuncs = maps or {}, kfuncs or {}
        slots = self.slot_of()
        if slots[-1] > MAX_SLOTS:
            raise AsmError(f"the program has {slots[-1]} instructions; the limit is {MAX_SLOTS}")
        out = bytearray()
        for i, insn in enumerate(self.insns):
            off, imm = insn.off, insn.imm
            if insn.target is not None:
                if insn.target not in self.labels:
                    raise AsmError(f"jump to undefined label {insn.target!r}")
                rel = slots[self.labels[insn.target]] - slots[i] - 1
                if insn.code == JMP | CALL:
                    imm = _imm(rel)
                else:
                    off = _off(rel)
            if insn.kfunc is not None:
                if insn.kfunc not in kfuncs:
                    raise AsmError(f"kernel function {insn.kfunc!r} has no BTF id")
                imm = _imm(kfuncs[insn.kfunc], "BTF id")
            if insn.imm64 is not None:
                value = insn.imm64
                if insn.map_name is not None:
                    if insn.map_name not in maps:
                        raise AsmError(f"map {insn.map_name!r} has no fd")
                    value = maps[insn.map_name]
                out += encode(insn.code, insn.dst, insn.src, off, _s32(value & 0xFFFFFFFF))
                out += encode(0, 0, 0, 0, _s32(value >> 32))
            else:
                out += encode(insn.code, insn.dst, insn.src, off, imm)
        return bytes(out)


def _size(size: int) -> int:
    if size not in SIZE_BYTES:
        raise AsmError(f"no access size {size!r}; use W, H, B or DW")
    return size


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


_SLOT = struct.Struct("<BBhi")


def encode(code: int, dst: int, src: int, off: int, imm: int) -> bytes:
    return _SLOT.pack(code, (src << 4) | dst, off, imm)


def decode(data: bytes) -> list[tuple[int, int, int, int, int]]:
    """The (code, dst, src, off, imm) of every slot, for tests and disassembly."""
    if len(data) % _SLOT.size:
        raise AsmError(f"a program is a multiple of 8 bytes, not {len(data)}")
    return [(c, r & 0xF, r >> 4, o, i) for c, r, o, i in _SLOT.iter_unpack(data)]
