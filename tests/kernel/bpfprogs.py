"""Hand-assembled BPF netfilter programs and crafted frames for the BPF mechanism's tests."""

from __future__ import annotations

import struct

from minifw.bpf.asm import B, DW, R0, R1, R2, R3, R4, R10, Asm, reg
from minifw.bpf.program import NF_ACCEPT, NF_DROP, Program


def drop_icmp(name: str = "drop_icmp") -> Program:
    """Drop ICMP and ICMPv6, accept the rest: the IP header read through a dynptr slice."""
    a = Asm()
    a.ldx(DW, R1, R1, 8)            # ctx->skb
    a.mov(R2, 0)
    a.mov(R3, reg(R10))
    a.alu(0x00, R3, -16)            # the dynptr: 16 bytes of stack
    a.kcall("bpf_dynptr_from_skb")
    a.jmp("!=", R0, 0, "accept")
    a.mov(R1, reg(R10))
    a.alu(0x00, R1, -16)
    a.mov(R2, 0)                    # offset 0 is the IP header
    a.mov(R3, reg(R10))
    a.alu(0x00, R3, -40)            # a 20-byte buffer, used if the bytes are not linear
    a.mov(R4, 20)
    a.kcall("bpf_dynptr_slice")
    a.jmp("==", R0, 0, "accept")
    a.ldx(B, R1, R0, 0)
    a.alu(0x70, R1, 4)              # version
    a.jmp("==", R1, 6, "v6")
    a.ldx(B, R2, R0, 9)             # IPv4 protocol
    a.jmp("==", R2, 1, "drop")
    a.ja("accept")
    a.label("v6")
    a.ldx(B, R2, R0, 6)             # IPv6 next header
    a.jmp("==", R2, 58, "drop")
    a.label("accept")
    a.mov(R0, NF_ACCEPT)
    a.exit()
    a.label("drop")
    a.mov(R0, NF_DROP)
    a.exit()
    return Program(name, a, ())


def accept_all(name: str = "accept_all") -> Program:
    a = Asm()
    a.mov(R0, NF_ACCEPT)
    a.exit()
    return Program(name, a, ())


def _eth(ethertype: int) -> bytes:
    return b"\x02\0\0\0\0\x01" + b"\x02\0\0\0\0\x02" + struct.pack("!H", ethertype)


def ipv4(proto: int, payload: bytes = b"\0" * 8) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                         bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1]))
    return _eth(0x0800) + header + payload


def ipv6(nexthdr: int, payload: bytes = b"\0" * 8) -> bytes:
    header = struct.pack("!IHBB16s16s", 6 << 28, len(payload), nexthdr, 64,
                         bytes.fromhex("fd00" + "0" * 26 + "02"), bytes.fromhex("fd00" + "0" * 26 + "01"))
    return _eth(0x86DD) + header + payload
