"""Crafted IP packets (from the IP header on) for the hook compiler's tests: every protocol the
packet model knows, fragments, IPv6 extension headers, truncations, payloads."""

from __future__ import annotations

import struct

A4 = [bytes([198, 18, 0, 2]), bytes([198, 18, 2, 2]), bytes([198, 18, 64, 9]),
      bytes([198, 19, 255, 1])]
A6 = [bytes.fromhex("fd00" + "0" * 26 + "02"), bytes.fromhex("fd00" + "0" * 26 + "66"),
      bytes.fromhex("fd00000000000001" + "0" * 15 + "9"), bytes.fromhex("fd99" + "0" * 28)]


def l4(proto: int, sport: int = 1000, dport: int = 80, data: bytes = b"",
       icmp_type: int = 8) -> bytes:
    if proto == 6:
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 512, 0, 0) + data
    if proto in (17, 132, 136):
        return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    if proto in (1, 58):
        return struct.pack("!BBHI", icmp_type, 0, 0, 0) + data
    return data


def v4(proto: int, body: bytes, src: bytes = A4[0], dst: bytes = A4[3], frag: int = 0,
       ihl: int = 5) -> bytes:
    opts = b"\x01" * ((ihl - 5) * 4)
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(opts) + len(body), 1, frag,
                       64, proto, 0, src, dst) + opts + body


def v6(proto: int, body: bytes, src: bytes = A6[0], dst: bytes = A6[3],
       ext: tuple = ()) -> bytes:
    """``ext``: extension headers (kind, ...) in order before ``body`` of ``proto``."""
    chain = b""
    kinds = [e[0] for e in ext] + [proto]
    for i, e in enumerate(ext):
        nxt = kinds[i + 1]
        if e[0] == 44:   # fragment: (44, offset, more)
            chain += struct.pack("!BBHI", nxt, 0, (e[1] << 3) | e[2], 7)
        elif e[0] == 51:  # AH: (51,) 12 bytes
            chain += struct.pack("!BBH", nxt, 1, 0) + b"\0" * 8
        else:            # hop-by-hop, routing, destination options: 8 bytes
            chain += struct.pack("!BB", nxt, 0) + b"\x01\x04\0\0\0\0"
    first = kinds[0]
    return struct.pack("!IHBB16s16s", 6 << 28, len(chain) + len(body), first, 64, src, dst) \
        + chain + body


def packets(family: int) -> list[bytes]:
    out = []
    addrs = A4 if family == 4 else A6
    ip = v4 if family == 4 else v6
    icmp = 1 if family == 4 else 58
    for src in addrs:
        for proto in (6, 17, icmp, 132, 47):
            for dport in (22, 80, 443, 8080):
                out.append(ip(proto, l4(proto, 40000, dport, b"GET / HTTP/1.1",
                                        icmp_type=dport % 256), src=src))
    for data in (b"", b"G", b"GE", b"GET", b"GET ", b"\x01\x02\x03", b"\x16\x03\x01\x02\x00",
                 bytes(range(40))):
        for proto in (6, 17, icmp):
            out.append(ip(proto, l4(proto, 5353, 53, data)))
    out.append(ip(6, l4(6)[:12]))                     # a truncated TCP header
    out.append(ip(17, b"\0\x35"))                     # a truncated UDP header
    out.append(ip(6, l4(6)[:12] + bytes([4 << 4]) + l4(6)[13:] + b"xy"))  # data offset 4
    out.append(ip(icmp, b""))                         # no ICMP header at all
    if family == 4:
        out.append(v4(17, l4(17), frag=0x2000))       # a first fragment (more fragments)
        out.append(v4(17, b"\x11" * 16, frag=0x0010))  # a later fragment
        out.append(v4(6, l4(6, 1, 443), ihl=6))       # options
        # (test-run refuses frames of less than 20 bytes after the Ethernet header)
    else:
        out.append(v6(17, l4(17, 1, 80), ext=((0,),)))
        out.append(v6(6, l4(6, 1, 443, b"GET"), ext=((0,), (60,), (51,))))
        out.append(v6(17, l4(17, 1, 80), ext=((44, 0, 1),)))        # first fragment
        out.append(v6(17, b"\x22" * 16, ext=((44, 10, 0),)))         # later fragment
        out.append(v6(6, b"", ext=((60,),))[:44])                    # truncated ext header
        # (test-run refuses IPv6 frames of less than 40 bytes)
    return out
