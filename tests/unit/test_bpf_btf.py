"""The BTF reader on small blobs built here: header and section boundaries, the kinds' record
sizes, member offsets through anonymous members, refusals."""

import struct

import pytest

from minifw.bpf import btf
from minifw.bpf.btf import BtfError, parse


class Blob:
    """A BTF blob under construction: strings and type records."""

    def __init__(self):
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, kind, name="", vlen=0, size=0, extra=b"", kind_flag=False) -> int:
        info = (vlen & 0xFFFF) | (kind << 24) | (int(kind_flag) << 31)
        self.types += struct.pack("<III", self.s(name), info, size) + extra
        self.count += 1
        return self.count

    def bytes(self, hdr_len=24, pad=b"") -> bytes:
        header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, hdr_len, 0, len(self.types),
                             len(self.types), len(self.strings))
        return header + pad + self.types + self.strings


def sample() -> Blob:
    b = Blob()
    u32 = b.add(btf.INT, "unsigned int", size=4, extra=struct.pack("<I", 32))     # 1
    u64 = b.add(btf.INT, "long long unsigned int", size=8, extra=struct.pack("<I", 64))  # 2
    b.add(btf.PTR, size=u32)                                                        # 3
    b.add(btf.ARRAY, extra=struct.pack("<III", u32, u32, 4))                        # 4
    b.add(btf.ENUM, "e", vlen=2, size=4, extra=bytes(16))                           # 5
    b.add(btf.FUNC_PROTO, vlen=1, size=u32, extra=bytes(8))                         # 6
    b.add(btf.FUNC, "bpf_dynptr_slice", size=6)                                     # 7
    inner = b.add(btf.STRUCT, "", vlen=1, size=4,
                  extra=struct.pack("<III", b.s("mark"), u32, 0))                   # 8 anon
    b.add(btf.VAR, "v", size=u32, extra=bytes(4))                                   # 9
    b.add(btf.ENUM64, "e64", vlen=1, size=8, extra=bytes(12))                       # 10
    b.add(btf.DECL_TAG, "tag", size=u32, extra=bytes(4))                            # 11
    b.add(btf.STRUCT, "sk_buff", vlen=3, size=24,
          extra=struct.pack("<III", b.s("len"), u32, 0)
          + struct.pack("<III", 0, inner, 64)
          + struct.pack("<III", b.s("next"), u64, 128))                            # 12
    b.add(btf.STRUCT, "bits", vlen=2, size=4, kind_flag=True,
          extra=struct.pack("<III", b.s("flag"), u32, (1 << 24) | 3)
          + struct.pack("<III", b.s("whole"), u32, 8))                              # 13
    b.add(btf.STRUCT, "odd", vlen=1, size=4,
          extra=struct.pack("<III", b.s("half"), u32, 4))                           # 14
    b.add(btf.UNION, "u", vlen=1, size=8, extra=struct.pack("<III", b.s("x"), u64, 0))  # 15
    b.add(btf.FUNC, "bpf_dynptr_slice", size=6)                                     # 16 dup
    return b


def test_func_ids_and_every_kind_s_record_size():
    parsed = parse(sample().bytes())
    assert len(parsed) == 16
    # the FUNC comes after records of every variable size: a wrong size shifts its id
    assert parsed.func_id("bpf_dynptr_slice") == 7
    assert parsed.record(12)[4] == "sk_buff"


def test_member_offsets_through_anonymous_members():
    parsed = parse(sample().bytes())
    assert parsed.member_offset("sk_buff", "len") == 0
    assert parsed.member_offset("sk_buff", "mark") == 8
    assert parsed.member_offset("sk_buff", "next") == 16
    assert parsed.struct_size("sk_buff") == 24
    assert parsed.member_offset("u", "x") == 0
    assert parsed.member_offset("bits", "whole") == 1


def test_refusals():
    parsed = parse(sample().bytes())
    with pytest.raises(BtfError, match="bitfield"):
        parsed.member_offset("bits", "flag")
    with pytest.raises(BtfError, match="byte-aligned"):
        parsed.member_offset("odd", "half")
    with pytest.raises(BtfError, match="no member 'nope'"):
        parsed.member_offset("sk_buff", "nope")
    with pytest.raises(BtfError, match="no struct 'net_device'"):
        parsed.member_offset("net_device", "ifindex")
    with pytest.raises(BtfError, match="no function 'sk_buff'"):
        parsed.func_id("sk_buff")
    with pytest.raises(BtfError, match="no function 'bpf_dynptr'"):
        parsed.func_id("bpf_dynptr")  # a prefix of a name is not the name
    with pytest.raises(BtfError):
        parsed.record(17)
    with pytest.raises(BtfError):
        parsed.record(0)


def test_header_length_boundaries():
    b = sample()
    assert parse(b.bytes(hdr_len=28, pad=bytes(4))).func_id("bpf_dynptr_slice") == 7
    with pytest.raises(BtfError, match="header length 23"):
        parse(b.bytes(hdr_len=23))
    data = b.bytes()
    with pytest.raises(BtfError, match="shorter than its header"):
        parse(data[:23])
    # a header length equal to the blob's size is read (empty sections); one more is not
    empty = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 0, 0, 0)
    assert len(parse(empty)) == 0
    with pytest.raises(BtfError, match="header length 25"):
        parse(struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 25, 0, 0, 0, 0))
    with pytest.raises(BtfError, match="magic"):
        parse(b"\xeb\x9f" + data[2:])  # big-endian BTF
    with pytest.raises(BtfError, match="version 2"):
        parse(data[:2] + b"\x02" + data[3:])


def test_section_and_string_boundaries():
    b = sample()
    data = b.bytes()
    parsed = parse(data)
    # the last byte of the string section is its terminating NUL
    str_len = len(b.strings)
    assert parsed.name(str_len - 1) == ""
    with pytest.raises(BtfError, match="outside the string section"):
        parsed.name(str_len)
    with pytest.raises(BtfError, match="outside the string section"):
        parsed.name(-1)
    with pytest.raises(BtfError, match="past the end"):
        parse(data[:-1])
    # a type section cut inside a record
    cut = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(b.types) - 4, len(b.types) - 4,
                      len(b.strings)) + b.types[:-4] + b.strings
    with pytest.raises(BtfError):
        parse(cut)
    unknown = Blob()
    unknown.add(20, "x")
    with pytest.raises(BtfError, match="unknown BTF kind 20"):
        parse(unknown.bytes())


def test_an_unterminated_string_is_refused():
    b = Blob()
    b.add(btf.FUNC, "f", size=0)
    data = b.bytes()[:-1] + b"g"  # the last NUL replaced
    with pytest.raises(BtfError, match="not terminated"):
        parse(data).name(1)
