"""A reader for BTF, the kernel's type information (/sys/kernel/btf/vmlinux). Pure.

Only what programs need: a function's type id (the ``imm`` of a kfunc call) and a struct
member's byte offset. The vmlinux blob holds ~150k types; one pass records where each type
starts and indexes names only for FUNC, STRUCT and UNION, so nothing else is decoded.

Layout (Documentation/bpf/btf.rst): a header ``magic u16 0xeb9f, version u8, flags u8,
hdr_len u32, type_off u32, type_len u32, str_off u32, str_len u32``; the two sections' offsets
count from the end of the header. Type ids start at 1 (0 is void).
"""

from __future__ import annotations

import struct

from ..errors import MinifwError

MAGIC = 0xEB9F
HEADER = struct.Struct("<HBBIIIII")
TYPE = struct.Struct("<III")   # name_off, info (vlen:16, kind:5 @24, kind_flag @31), size|type
MEMBER = struct.Struct("<III")  # name_off, type, offset (bits; with kind_flag: size<<24 | bits)

(INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC,
 FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64) = range(1, 20)

# bytes following the common 12-byte record: (fixed, per vlen item)
_EXTRA = {INT: (4, 0), PTR: (0, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12),
          ENUM: (0, 8), FWD: (0, 0), TYPEDEF: (0, 0), VOLATILE: (0, 0), CONST: (0, 0),
          RESTRICT: (0, 0), FUNC: (0, 0), FUNC_PROTO: (0, 8), VAR: (4, 0), DATASEC: (0, 12),
          FLOAT: (0, 0), DECL_TAG: (4, 0), TYPE_TAG: (0, 0), ENUM64: (0, 12)}
_INDEXED = (FUNC, STRUCT, UNION)
# modifiers looked through when a member's type is itself a struct or union
_ALIASES = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)


class BtfError(MinifwError):
    """A BTF blob that cannot be read, or a name it does not hold."""


class Btf:
    """Parsed BTF; build it with ``parse``."""

    def __init__(self, data: bytes, types_at: int, types_end: int, strs_at: int, strs_end: int,
                 starts: list[int], named: list[tuple[int, int, int]]):
        self._data = data
        self._types = (types_at, types_end)
        self._strs = (strs_at, strs_end)
        self._starts = starts          # byte offset of type id i at index i - 1
        self._named = named            # (kind, name_off, id) of FUNC, STRUCT and UNION
        self._found: dict[tuple[int, str], int | None] = {}

    def __len__(self) -> int:
        return len(self._starts)

    def name(self, off: int) -> str:
        start, end = self._strs
        if not 0 <= off < end - start:
            raise BtfError(f"BTF string offset {off} is outside the string section")
        at = start + off
        stop = self._data.find(b"\0", at, end)
        if stop < 0:
            raise BtfError(f"BTF string at {off} is not terminated")
        return self._data[at:stop].decode("utf-8", "replace")

    def record(self, type_id: int) -> tuple[int, int, bool, int, str]:
        """(kind, vlen, kind_flag, size_or_type, name) of a type id."""
        if not 1 <= type_id <= len(self._starts):
            raise BtfError(f"no BTF type id {type_id}")
        name_off, info, size = TYPE.unpack_from(self._data, self._starts[type_id - 1])
        return (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31), size, self.name(name_off)

    def _lookup(self, kind: int, name: str) -> int | None:
        """The first type id of ``kind`` named ``name``: names are matched as string offsets
        (every place ``name`` occurs in the string section), so no other name is decoded."""
        if (kind, name) not in self._found:
            start, end = self._strs
            needle, offs, at = b"\0" + name.encode() + b"\0", set(), start
            while name and (at := self._data.find(needle, at, end)) >= 0:
                offs.add(at + 1 - start)
                at += 1
            self._found[(kind, name)] = next(
                (i for k, off, i in self._named if k == kind and off in offs), None)
        return self._found[(kind, name)]

    def find(self, kind: int, name: str) -> int:
        found = self._lookup(kind, name)
        if found is None:
            raise BtfError(f"the kernel's BTF has no {_KIND_NAMES[kind]} {name!r}")
        return found

    def func_id(self, name: str) -> int:
        """The type id of the FUNC ``name``: the imm of a kfunc call."""
        return self.find(FUNC, name)

    def _struct(self, name: str) -> int:
        found = self._lookup(STRUCT, name)
        if found is None and self._lookup(UNION, name) is not None:
            return self.find(UNION, name)
        return self.find(STRUCT, name) if found is None else found

    def struct_size(self, name: str) -> int:
        return self.record(self._struct(name))[3]

    def member_offset(self, struct_name: str, member_name: str) -> int:
        """The byte offset of ``member_name`` in ``struct_name``, looking into anonymous
        struct and union members as C does. Bitfields are refused."""
        found = self._member(self._struct(struct_name), member_name)
        if found is None:
            raise BtfError(f"struct {struct_name} has no member {member_name!r}")
        bits = found
        if bits % 8:
            raise BtfError(f"{struct_name}.{member_name} is not byte-aligned")
        return bits // 8

    def _member(self, type_id: int, member_name: str) -> int | None:
        """The bit offset of ``member_name`` in struct/union ``type_id``, or None."""
        kind, vlen, kind_flag, _, _ = self.record(type_id)
        at = self._starts[type_id - 1] + TYPE.size
        for _ in range(vlen):
            name_off, mtype, offset = MEMBER.unpack_from(self._data, at)
            at += MEMBER.size
            if kind_flag:
                if offset >> 24:
                    if self.name(name_off) == member_name:
                        raise BtfError(f"member {member_name!r} is a bitfield")
                    continue
                offset &= 0xFFFFFF
            if name_off == 0:  # an anonymous struct or union: its members are ours
                inner = self._resolve(mtype)
                if inner is not None:
                    found = self._member(inner, member_name)
                    if found is not None:
                        return offset + found
                continue
            if self.name(name_off) == member_name:
                return offset
        return None

    def _resolve(self, type_id: int) -> int | None:
        for _ in range(32):  # modifier chains are short; a loop is corrupt data
            kind, _, _, ref, _ = self.record(type_id)
            if kind in (STRUCT, UNION):
                return type_id
            if kind not in _ALIASES:
                return None
            type_id = ref
        raise BtfError("BTF modifier chain too long")


_KIND_NAMES = {FUNC: "function", STRUCT: "struct", UNION: "union"}


def parse(data: bytes) -> Btf:
    """Index a BTF blob: type start offsets and the names of functions, structs and unions."""
    if len(data) < HEADER.size:
        raise BtfError(f"BTF blob of {len(data)} bytes is shorter than its header")
    magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
        HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BtfError(f"not BTF: magic {magic:#x}")
    if version != 1:
        raise BtfError(f"BTF version {version} is not supported")
    if hdr_len < HEADER.size or hdr_len > len(data):
        raise BtfError(f"BTF header length {hdr_len} is out of range")
    types_at, types_end = hdr_len + type_off, hdr_len + type_off + type_len
    strs_at, strs_end = hdr_len + str_off, hdr_len + str_off + str_len
    if types_end > len(data) or strs_end > len(data):
        raise BtfError("BTF sections run past the end of the blob")
    if type_len % 4:
        raise BtfError(f"BTF type section length {type_len} is not a multiple of 4")
    # one pass over 32-bit words: the hot loop of the reader (~126k types in vmlinux)
    words = memoryview(bytes(data[types_at:types_end])).cast("I")
    fixed = [_EXTRA.get(k, (None, 0))[0] for k in range(32)]
    per = [_EXTRA.get(k, (0, 0))[1] // 4 for k in range(32)]
    starts: list[int] = []
    name_offs: list[tuple[int, int, int]] = []  # (kind, name_off, id) of indexed kinds
    i, n, add = 0, len(words), starts.append
    while i < n:
        if i + 3 > n:
            raise BtfError(f"BTF type record at {i * 4} is cut short")
        info = words[i + 1]
        kind = (info >> 24) & 0x1F
        if fixed[kind] is None:
            raise BtfError(f"unknown BTF kind {kind} at type {len(starts) + 1}")
        add(types_at + i * 4)
        if kind in _INDEXED and words[i]:
            name_offs.append((kind, words[i], len(starts)))
        i += 3 + fixed[kind] // 4 + per[kind] * (info & 0xFFFF)
    if i != n:
        raise BtfError("the last BTF type record runs past the type section")
    return Btf(data, types_at, types_end, strs_at, strs_end, starts, name_offs)
