"""The program's frame and the packet reads every compiled hook shares: the prologue that
parses the IP header (and walks IPv6 extension headers as hooks/packet.py does) into stack
slots, and the reads of the fields from there. Pure.

A read that Python would answer with an exception (a truncated header, broken extension
headers) jumps to the error exit, which returns the hook's on_error verdict, as the queue
runner does when the function raises."""

from __future__ import annotations

from ...bpf.asm import (
    B, DW, FP, H, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, W, Asm, reg,
)

# helpers and kfuncs
MAP_LOOKUP, KTIME_GET_NS, RINGBUF_RESERVE, RINGBUF_SUBMIT, DYNPTR_READ = 1, 5, 131, 132, 201
FROM_SKB, DYNPTR_SIZE, DYNPTR_SLICE = "bpf_dynptr_from_skb", "bpf_dynptr_size", "bpf_dynptr_slice"

# the stack (offsets from the frame pointer); stack accesses must be aligned to their size
DYNPTR = -16      # struct bpf_dynptr (16 bytes)
STATUS = -24      # 0: the IP header parsed; 1: Python would raise on any header field
PROTO = -32       # transport protocol; -1: broken IPv6 extension headers
L4 = -40          # transport header offset; -1: a later fragment; -2: broken; -3: too deep
LEN = -48         # the packet's length from the IP header on
SCRATCH = -56     # 8 bytes for small reads and map keys
HDR = -96         # 40 bytes: the IPv4 header's first 20 or the IPv6 header
KEY = -120        # 24 bytes: an LPM trie key (u32 prefix length, then the address)
PBUF = -184       # 64 bytes: payload bytes compared with a constant
LOCALS = -192     # locals and temporaries, 8 bytes each, downwards
STACK_LIMIT = -512

V6_EXT = (0, 43, 60, 51, 44)
V6_EXT_DEPTH = 8  # extension headers walked; more: transport fields take the error exit
PORT_PROTOS = (6, 17, 132, 136)
ADDR_AT = {4: {"src": 12, "dst": 16}, 6: {"src": 8, "dst": 24}}

# ctx: struct bpf_nf_ctx { const struct nf_hook_state *state @0; struct sk_buff *skb @8 }
# struct nf_hook_state { u8 hook @0; u8 pf @1; struct net_device *in @8, *out @16; ... }
CTX_SKB = 8
STABLE = {"bpf_nf_ctx.state": 0, "bpf_nf_ctx.skb": CTX_SKB, "nf_hook_state.hook": 0,
          "nf_hook_state.in": 8, "nf_hook_state.out": 16}


def read(a: Asm, dst_off: int, length: int, off_reg: int | None = None, off: int = 0,
         *, fail: str) -> None:
    """``length`` packet bytes at fp+dst_off; to ``fail`` when out of range. The offset is
    ``off_reg`` (a register other than r1-r5) plus ``off``, or ``off``.

    bpf_dynptr_slice where the bytes fit in registers: it points into the skb's linear data
    (copying only paged data, into the buffer) and measured 30 ns less than bpf_dynptr_read
    (bench/hooks/kernel_pkt.py). Every chunk is loaded before the first store, since a store
    into the buffer ends the slice for the verifier."""
    chunks = _chunks(length)
    if len(chunks) > len(_CHUNK_REGS):
        _dynptr_read(a, dst_off, length, off_reg, off, fail)
        return
    _offset(a, R2, off_reg, off)
    a.mov(R1, reg(FP))
    a.alu(0x00, R1, DYNPTR)
    a.mov(R3, reg(FP))
    a.alu(0x00, R3, dst_off)
    a.mov(R4, length)
    a.kcall(DYNPTR_SLICE)
    a.jmp("==", R0, 0, fail)
    regs = _CHUNK_REGS[:len(chunks)]
    for r, (size, at) in zip(regs, chunks):
        a.ldx(size, r, R0, at)
    for r, (size, at) in zip(regs, chunks):
        a.stx(size, FP, dst_off + at, r)


_CHUNK_REGS = (R1, R2, R3, R4, R5, R0)   # r0 last: it holds the slice until then


def _chunks(length: int) -> list[tuple[int, int]]:
    out, at = [], 0
    for size, n in ((DW, 8), (W, 4), (H, 2), (B, 1)):
        while length - at >= n:
            out.append((size, at))
            at += n
    return out


def _offset(a: Asm, dst: int, off_reg: int | None, off: int) -> None:
    if off_reg is not None:
        a.mov(dst, reg(off_reg))
        if off:
            a.alu(0x00, dst, off)
    else:
        a.mov(dst, off)


def _dynptr_read(a: Asm, dst_off: int, length: int, off_reg: int | None, off: int,
                 fail: str) -> None:
    """bpf_dynptr_read(fp+dst_off, length, &dynptr, offset, 0)."""
    _offset(a, R4, off_reg, off)
    a.mov(R1, reg(FP))
    a.alu(0x00, R1, dst_off)
    a.mov(R2, length)
    a.mov(R3, reg(FP))
    a.alu(0x00, R3, DYNPTR)
    a.mov(R5, 0)
    a.call(DYNPTR_READ)
    a.jmp("!=", R0, 0, fail)


def prologue(a: Asm, stats_map: str, family: int, parse: bool,
             len_at: int | None = None) -> None:
    """r6 = ctx, r9 = this function's stats (packets counted); the packet parsed if needed."""
    a.mov(R6, reg(R1))
    a.st(W, FP, SCRATCH, 0)
    a.ld_map(R1, stats_map)
    a.mov(R2, reg(FP))
    a.alu(0x00, R2, SCRATCH)
    a.call(MAP_LOOKUP)
    a.jmp("!=", R0, 0, ".stats")
    a.mov(R0, 1)    # an array lookup of key 0 never fails; the verifier wants the check
    a.exit()
    a.label(".stats")
    a.mov(R9, reg(R0))
    a.mov(R1, 1)
    a.atomic_add(DW, R9, 0, R1)
    if parse:
        _parse(a, family, len_at)


def _parse(a: Asm, family: int, len_at: int | None) -> None:
    """``len_at``: sk_buff.len's offset (from BTF), read directly; else bpf_dynptr_size."""
    bad, done = ".bad", ".parsed"
    a.ldx(DW, R1, R6, CTX_SKB)
    a.mov(R2, 0)
    a.mov(R3, reg(FP))
    a.alu(0x00, R3, DYNPTR)
    a.kcall(FROM_SKB)
    a.st(DW, FP, LEN, 0)
    a.jmp("!=", R0, 0, bad)
    if len_at is None:
        a.mov(R1, reg(FP))
        a.alu(0x00, R1, DYNPTR)
        a.kcall(DYNPTR_SIZE)
    else:
        a.ldx(DW, R1, R6, CTX_SKB)
        a.ldx(W, R0, R1, len_at)
    a.stx(DW, FP, LEN, R0)
    if family == 4:
        # the header and the 4 bytes after it in one slice (the transport ports or ICMP type
        # where there are no options: transport_bytes); 20 alone in a shorter packet
        read(a, HDR, 24, fail=".hdr20")
        a.ja(".hdr")
        a.label(".hdr20")
        read(a, HDR, 20, fail=bad)
        a.label(".hdr")
        a.ldx(B, R7, FP, HDR)
        a.mov(R1, reg(R7))
        a.alu(0x70, R1, 4)                    # >> 4: the version
        a.jmp("!=", R1, 4, bad)
        a.alu(0x50, R7, 0x0F)                 # & 0xf, << 2: the header length
        a.alu(0x60, R7, 2)
        a.jmp("<", R7, 20, bad)
        a.ldx(DW, R1, FP, LEN)
        a.jmp(">", R7, reg(R1), bad)
        a.ldx(H, R1, FP, HDR + 6)
        a.endian(R1, 16)
        a.alu(0x50, R1, 0x1FFF)
        a.jmp("==", R1, 0, ".first")
        a.mov(R7, -1)                         # a later fragment has no transport header
        a.label(".first")
        a.ldx(B, R8, FP, HDR + 9)
    else:
        read(a, HDR, 40, fail=bad)
        a.ldx(B, R1, FP, HDR)
        a.alu(0x70, R1, 4)
        a.jmp("!=", R1, 6, bad)
        a.ldx(B, R8, FP, HDR + 6)             # r8: next header, r7: its offset
        a.mov(R7, 40)
        walked = ".walked"
        for i in range(V6_EXT_DEPTH + 1):
            nxt = f".ext{i}"
            for proto in V6_EXT:
                a.jmp("==", R8, proto, nxt)
            a.ja(walked)
            a.label(nxt)
            if i == V6_EXT_DEPTH:
                a.mov(R8, -1)
                a.mov(R7, -3)
                a.ja(walked)
                break
            a.ldx(DW, R1, FP, LEN)
            a.mov(R2, reg(R7))
            a.alu(0x00, R2, 8)
            a.jmp(">", R2, reg(R1), ".broken")
            read(a, SCRATCH, 8, off_reg=R7, fail=".broken")
            a.jmp("!=", R8, 44, f".notfrag{i}")
            a.ldx(H, R1, FP, SCRATCH + 2)
            a.endian(R1, 16)
            a.alu(0x70, R1, 3)
            a.ldx(B, R8, FP, SCRATCH)
            a.jmp("==", R1, 0, f".frag0{i}")
            a.mov(R7, -1)                     # a later fragment: (its next header, -1)
            a.ja(walked)
            a.label(f".frag0{i}")
            a.alu(0x00, R7, 8)
            a.ja(f".next{i}")
            a.label(f".notfrag{i}")
            a.ldx(B, R1, FP, SCRATCH + 1)
            a.jmp("!=", R8, 51, f".notah{i}")
            a.alu(0x00, R1, 2)
            a.alu(0x60, R1, 2)
            a.ja(f".sized{i}")
            a.label(f".notah{i}")
            a.alu(0x00, R1, 1)
            a.alu(0x60, R1, 3)
            a.label(f".sized{i}")
            a.alu(0x00, R7, reg(R1))
            a.ldx(B, R8, FP, SCRATCH)
            a.label(f".next{i}")
            a.ldx(DW, R1, FP, LEN)
            a.jmp(">", R7, reg(R1), ".broken")
        a.label(".broken")
        a.mov(R8, -1)
        a.mov(R7, -2)
        a.label(walked)
    a.stx(DW, FP, L4, R7)
    a.stx(DW, FP, PROTO, R8)
    a.st(DW, FP, STATUS, 0)
    a.ja(done)
    a.label(bad)
    a.st(DW, FP, STATUS, 1)
    a.label(done)


def header_ok(a: Asm, err: str) -> None:
    a.ldx(DW, R1, FP, STATUS)
    a.jmp("!=", R1, 0, err)


def transport(a: Asm, err: str) -> None:
    """r1 = the protocol, r2 = the transport offset (-1 for a later fragment), or the error
    exit where Python raises."""
    header_ok(a, err)
    a.ldx(DW, R2, FP, L4)
    a.jmp("s<", R2, -1, err)
    a.ldx(DW, R1, FP, PROTO)


def transport_bytes(a: Asm, family: int, size: int, at: int, err: str) -> None:
    """r7 = the ``size`` bytes at ``at`` of the transport header (offset in r2, not -1): from
    the IPv4 prologue's slice where the header has no options, else read."""
    read_it, done = a.fresh("tread"), a.fresh("tdone")
    if family == 4:
        a.jmp("!=", R2, 20, read_it)
        a.ldx(DW, R1, FP, LEN)
        a.jmp("<", R1, 24, read_it)          # the prologue's slice was 20 bytes
        a.ldx(size, R7, FP, HDR + 20 + at)
        a.ja(done)
    a.label(read_it)
    a.mov(R7, reg(R2))
    read(a, SCRATCH, 4 if size == H else 1, off_reg=R7, fail=err)
    a.ldx(size, R7, FP, SCRATCH + at)
    a.label(done)


def port(a: Asm, family: int, which: int, err: str, none: str) -> None:
    """r7 = sport (0) or dport (1); to ``none`` where Python gives None."""
    transport(a, err)
    ok = a.fresh("port")
    for p in PORT_PROTOS:
        a.jmp("==", R1, p, ok)
    a.ja(none)
    a.label(ok)
    a.jmp("==", R2, -1, none)
    transport_bytes(a, family, H, 2 * which, err)
    a.endian(R7, 16)


def icmp_type(a: Asm, family: int, err: str, none: str) -> None:
    transport(a, err)
    ok = a.fresh("icmp")
    a.jmp("==", R1, 1, ok)
    a.jmp("!=", R1, 58, none)
    a.label(ok)
    a.jmp("==", R2, -1, none)
    transport_bytes(a, family, B, 0, err)


def payload_span(a: Asm, err: str) -> None:
    """r7 = where the transport payload starts, r8 = its length (0 for a later fragment)."""
    transport(a, err)
    frag, tcp, other, have = (a.fresh(s) for s in ("pfrag", "ptcp", "pother", "phave"))
    a.jmp("==", R2, -1, frag)
    a.mov(R7, reg(R2))
    a.jmp("==", R1, 6, tcp)
    a.jmp("==", R1, 17, ".p8" + tcp)
    a.jmp("==", R1, 1, ".p8" + tcp)
    a.jmp("!=", R1, 58, other)
    a.label(".p8" + tcp)
    a.alu(0x00, R7, 8)
    a.ja(other)
    a.label(tcp)
    a.ldx(DW, R1, FP, LEN)
    a.mov(R3, reg(R7))
    a.alu(0x00, R3, 13)
    a.jmp(">", R3, reg(R1), err)
    read(a, SCRATCH, 1, off_reg=R7, off=12, fail=err)
    a.ldx(B, R1, FP, SCRATCH)
    a.alu(0x70, R1, 4)
    a.alu(0x60, R1, 2)
    a.jmp("<", R1, 20, err)
    a.alu(0x00, R7, reg(R1))
    a.label(other)
    a.ldx(DW, R8, FP, LEN)
    a.jmp(">", R7, reg(R8), err)
    a.alu(0x10, R8, reg(R7))   # sub
    a.ja(have)
    a.label(frag)
    a.mov(R7, 0)
    a.mov(R8, 0)
    a.label(have)


def live_entry(a: Asm, map_name: str, key_at: int, yes: str, no: str) -> None:
    """Look the key at fp+key_at up in ``map_name``: to ``yes`` if found with an expiry of 0
    or still ahead (bpf_ktime_get_ns is CLOCK_MONOTONIC), else on to ``no``."""
    a.ld_map(R1, map_name)
    a.mov(R2, reg(FP))
    a.alu(0x00, R2, key_at)
    a.call(MAP_LOOKUP)
    a.jmp("==", R0, 0, no)
    a.ldx(DW, R8, R0, 0)
    a.jmp("==", R8, 0, yes)
    a.call(KTIME_GET_NS)
    a.jmp(">", R8, reg(R0), yes)
    a.ja(no)


def address_in(a: Asm, family: int, which: str, hash_map: str, lpm_map: str,
               yes: str, no: str) -> None:
    """The hash map of single addresses first, then the LPM trie of CIDRs (an expired single
    still lets a live CIDR match)."""
    at = HDR + ADDR_AT[family][which]
    lpm = a.fresh("lpm")
    live_entry(a, hash_map, at, yes, lpm)
    a.label(lpm)
    a.st(W, FP, KEY, 32 if family == 4 else 128)
    for i in range(0, 4 if family == 4 else 16, 4):
        a.ldx(W, R1, FP, at + i)
        a.stx(W, FP, KEY + 4 + i, R1)
    live_entry(a, lpm_map, KEY, yes, no)
