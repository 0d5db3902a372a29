"""Hypothesis strategies for the kernel-hook differential test: hook modules drawn from a
grammar of the subset that compiles to BPF, written out as SOURCE TEXT, and raw IP packets
(v4/v6, TCP/UDP/ICMP/ICMPv6/others, options, extension headers, fragments, truncations).

The truth for a packet is the drawn Python function itself, run on the userspace packet model
(hooks/packet.py) exactly as the queue runner and `explain --run-hooks` run it: an exception
(a malformed packet, a payload index past the end) gives the function's on_error verdict.
"""

from __future__ import annotations

import dataclasses
import inspect
import ipaddress
import random
import struct
from typing import Any

from hypothesis import strategies as st

from minifw.hooks import ACCEPT, DROP, hook
from minifw.hooks.packet import Packet
from minifw.model.types import Hook
from minifw.netlink.nfqueue import QueuedPacket

HOOKS = [h.value for h in Hook]
HOOKNUM = {h: i for i, h in enumerate(HOOKS)}

# Addresses the packets use, and the constants the functions test them against: singles and
# CIDRs that contain some of them, edges of a prefix included.
V4_POOL = ["198.18.64.1", "198.18.64.2", "198.18.65.9", "198.18.128.1", "198.18.128.2",
           "198.18.129.7", "198.18.0.1", "198.18.1.1", "198.18.63.255", "198.18.80.0",
           "198.19.255.255", "198.18.0.0"]
V6_POOL = ["fd00:c1::1", "fd00:c1::2", "fd00:c1:1::9", "fd00:51::1", "fd00:51::2",
           "fd00:51:1::7", "fd00:c::1", "fd00:5::1", "fd00:c1:ffff:ffff:ffff:ffff:ffff:ffff",
           "fd00::", "fdff::1"]
ADDR_ITEMS = ["198.18.64.1", "198.18.64.0/20", "198.18.128.0/23", "198.18.129.7/32",
              "198.18.0.0/16", "198.18.65.0/24", "198.18.0.0/15", "198.18.64.0/18",
              "fd00:c1::1", "fd00:c1::/48", "fd00:51::/64", "fd00::/8", "fd00:51:1::7/128",
              "fd00:c1::/32", "fd00:5::1", "fd00::/16"]
PORTS = [0, 1, 22, 53, 80, 443, 1023, 1024, 8080, 40000, 65535]
INTS = [0, 1, 2, 3, 4, 6, 7, 8, 15, 17, 40, 60, 64, 100, 255, 256, 1000, 1500, 65535,
        -1, -3, -8, -100]
ICMP_TYPES = {4: [0, 3, 8, 11, 13], 6: [1, 3, 128, 129, 135, 136]}
PAYLOAD_ALPHABET = b"GET /\x00\x01\xffab"
PROTO_NAMES = ["tcp", "udp", "icmp", "icmpv6", "sctp", "gre"]

# the transport protocols packets carry, by number (sctp has ports; gre, 47, has none)
L4 = {4: [6, 17, 1, 132, 47], 6: [6, 17, 58, 132, 47]}


# ---- hook modules -----------------------------------------------------------------------------

@dataclasses.dataclass
class Ctx:
    """What an expression may use where it stands."""

    ints: list[str]
    bools: list[str]
    helpers: list[tuple[str, str]]  # (name, "int" | "bool"), all take (pkt)
    counters: list[str]
    addrs: list[str]
    portsets: list[str]
    depth: int = 0

    def inner(self) -> "Ctx":
        return dataclasses.replace(self, ints=list(self.ints), bools=list(self.bools),
                                   depth=self.depth + 1)


def _lit(draw) -> str:
    return str(draw(st.sampled_from(INTS)))


@st.composite
def int_exprs(draw, ctx: Ctx, budget: int = 2) -> str:
    """An int expression that never raises in Python except where the subset says so (a payload
    index past the end)."""
    atoms = ["pkt.version", "pkt.length", "pkt.mark", "LIT", "LIT"]
    atoms += ["LOCAL"] * (2 if ctx.ints else 0)
    atoms += ["PAYLOAD", "HELPER" if any(k == "int" for _, k in ctx.helpers) else "LIT"]
    atoms += ["GUARDED_PORT"]
    choice = draw(st.sampled_from(atoms + (["BINOP"] * 3 if budget > 0 else [])))
    if choice == "LIT":
        return _lit(draw)
    if choice == "LOCAL":
        return draw(st.sampled_from(ctx.ints))
    if choice == "PAYLOAD":
        return f"pkt.payload[{draw(st.integers(0, 12))}]"
    if choice == "HELPER":
        return draw(st.sampled_from([n for n, k in ctx.helpers if k == "int"])) + "(pkt)"
    if choice == "GUARDED_PORT":
        # a port is None for protocols without ports: a conditional expression guards it
        field = draw(st.sampled_from(["sport", "dport", "icmp_type"]))
        return f"(pkt.{field} if pkt.{field} is not None else {_lit(draw)})"
    op = draw(st.sampled_from(["+", "-", "*", "//", "%", "&", "|", "^", "<<", ">>"]))
    left = draw(int_exprs(ctx, budget - 1))
    if op in ("//", "%"):
        # Python floors // and % of negatives, and the subset refuses them unless both sides
        # are known non-negative: mostly masked operands, now and then a refused one
        right = str(draw(st.sampled_from([1, 2, 3, 7, 256] * 4 + [-1, -3])))
        if draw(st.integers(0, 7)):
            left = f"({left} & {draw(st.sampled_from([255, 65535, 7]))})"
    elif op in ("<<", ">>"):
        right = str(draw(st.integers(0, 12)))
    elif op == "*":
        right = str(draw(st.sampled_from([0, 1, 2, 3, -1, 7, 100])))
    else:
        right = draw(int_exprs(ctx, budget - 1))
    return f"({left} {op} {right})"


@st.composite
def bool_exprs(draw, ctx: Ctx, budget: int = 2) -> str:
    kinds = ["CMP", "CMP", "PROTO", "ADDR", "PORT", "PORTSET", "HOOK", "SLICE", "ICMP",
             "VERSION"]
    kinds += ["LOCAL"] * (2 if ctx.bools else 0)
    if any(k == "bool" for _, k in ctx.helpers):
        kinds.append("HELPER")
    if budget > 0:
        kinds += ["AND", "OR", "NOT"]
    kind = draw(st.sampled_from(kinds))
    if kind == "CMP":
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        return f"{draw(int_exprs(ctx, 1))} {op} {draw(int_exprs(ctx, 0))}"
    if kind == "PROTO":
        if draw(st.booleans()):
            return f"pkt.proto {draw(st.sampled_from(['==', '!=']))} " \
                   f"{draw(st.sampled_from(PROTO_NAMES))!r}"
        names = draw(st.lists(st.sampled_from(PROTO_NAMES), min_size=1, max_size=3, unique=True))
        return f"pkt.proto in {tuple(names)!r}"
    if kind == "ADDR" and ctx.addrs:
        field = draw(st.sampled_from(["src", "dst"]))
        neg = draw(st.sampled_from(["in", "in", "not in"]))
        return f"pkt.{field} {neg} {draw(st.sampled_from(ctx.addrs))}"
    if kind == "PORTSET" and ctx.portsets:
        field = draw(st.sampled_from(["sport", "dport"]))
        return f"pkt.{field} in {draw(st.sampled_from(ctx.portsets))}"
    if kind in ("PORT", "ADDR", "PORTSET"):
        field = draw(st.sampled_from(["sport", "dport"]))
        form = draw(st.sampled_from(["==", "!=", "in tuple", "in set", "not in"]))
        if form in ("==", "!="):
            return f"pkt.{field} {form} {draw(st.sampled_from(PORTS))}"
        ports = draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=4, unique=True))
        body = ", ".join(map(str, ports))
        if form == "in set":
            return f"pkt.{field} in {{{body}}}"
        return f"pkt.{field} {'not in' if form == 'not in' else 'in'} ({body},)"
    if kind == "HOOK":
        return f"pkt.hook == {draw(st.sampled_from(HOOKS))!r}"
    if kind == "SLICE":
        i = draw(st.integers(0, 6))
        j = i + draw(st.integers(1, 4))
        want = bytes(draw(st.lists(st.sampled_from(PAYLOAD_ALPHABET), min_size=j - i,
                                   max_size=j - i)))
        return f"pkt.payload[{i}:{j}] {draw(st.sampled_from(['==', '!=']))} {want!r}"
    if kind == "ICMP":
        v = draw(st.sampled_from([4, 6]))
        return f"pkt.icmp_type == {draw(st.sampled_from(ICMP_TYPES[v]))}"
    if kind == "VERSION":
        return f"pkt.version == {draw(st.sampled_from([4, 6]))}"
    if kind == "LOCAL":
        return draw(st.sampled_from(ctx.bools))
    if kind == "HELPER":
        return draw(st.sampled_from([n for n, k in ctx.helpers if k == "bool"])) + "(pkt)"
    if kind == "NOT":
        return f"not ({draw(bool_exprs(ctx, budget - 1))})"
    op = "and" if kind == "AND" else "or"
    return f"({draw(bool_exprs(ctx, budget - 1))}) {op} ({draw(bool_exprs(ctx, budget - 1))})"


@st.composite
def blocks(draw, ctx: Ctx, indent: int, must_return: bool, fn_counter: int) -> list[str]:
    """Statements at one indentation; the last is a return when ``must_return``."""
    pad = "    " * indent
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 3 if ctx.depth < 2 else 1))):
        kind = draw(st.sampled_from(["INT", "BOOL", "IF", "IF", "INC", "LOG"]
                                    if ctx.depth < 2 else ["INT", "BOOL", "INC"]))
        if kind == "INT":
            name = f"n{len(ctx.ints)}_{ctx.depth}"
            lines.append(f"{pad}{name} = {draw(int_exprs(ctx))}")
            ctx.ints.append(name)
        elif kind == "BOOL":
            name = f"b{len(ctx.bools)}_{ctx.depth}"
            lines.append(f"{pad}{name} = {draw(bool_exprs(ctx))}")
            ctx.bools.append(name)
        elif kind == "INC" and ctx.counters:
            n = draw(st.sampled_from(["", "", "2", "n"])) if ctx.ints else ""
            if n == "n":
                n = f"({ctx.ints[-1]}) & 7"
            lines.append(f"{pad}{draw(st.sampled_from(ctx.counters))}.inc({n})")
        elif kind == "LOG":
            lines.append(f"{pad}pkt.log(f\"fn{fn_counter} {{pkt.proto}} {{pkt.src}} "
                         f"{{pkt.dport}}\")")
        elif kind == "IF":
            lines += draw(if_stmts(ctx, indent, fn_counter))
    if must_return:
        lines.append(f"{pad}return {draw(st.sampled_from(['ACCEPT', 'DROP']))}")
    return lines


@st.composite
def if_stmts(draw, ctx: Ctx, indent: int, fn_counter: int) -> list[str]:
    pad = "    " * indent
    lines = [f"{pad}if {draw(bool_exprs(ctx))}:"]
    lines += draw(blocks(ctx.inner(), indent + 1, draw(st.booleans()), fn_counter)) \
        or [f"{pad}    pass"]
    for _ in range(draw(st.integers(0, 2))):
        lines.append(f"{pad}elif {draw(bool_exprs(ctx))}:")
        lines += draw(blocks(ctx.inner(), indent + 1, draw(st.booleans()), fn_counter)) \
            or [f"{pad}    pass"]
    if draw(st.booleans()):
        lines.append(f"{pad}else:")
        lines += draw(blocks(ctx.inner(), indent + 1, draw(st.booleans()), fn_counter)) \
            or [f"{pad}    pass"]
    return lines


def _where_kwarg() -> str:
    """where="kernel" once @hook takes it (the function must compile, never fall back)."""
    return ', where="kernel"' if "where" in inspect.signature(hook).parameters else ""


@dataclasses.dataclass(frozen=True)
class HookModule:
    source: str
    hooks: tuple[tuple[str, str, int], ...]  # (function name, hook, priority)
    counters: tuple[str, ...]


@st.composite
def hook_modules(draw, hooks: tuple[str, ...] | None = None) -> HookModule:
    """A module of the subset: Addresses, port sets and Counters at module level, helper
    functions (inlined by the compiler), and one or two @hook functions."""
    lines = ["from minifw import ACCEPT, DROP, hook", "from minifw.hooks.addresses import "
             "Addresses, Counter", ""]
    addrs = []
    for i in range(draw(st.integers(0, 2))):
        items = draw(st.lists(st.sampled_from(ADDR_ITEMS), min_size=1, max_size=5, unique=True))
        lines.append(f"A{i} = Addresses({', '.join(map(repr, items))})")
        addrs.append(f"A{i}")
    portsets = []
    for i in range(draw(st.integers(0, 1))):
        ports = draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=6, unique=True))
        lines.append(f"P{i} = {{{', '.join(map(str, ports))}}}")
        portsets.append(f"P{i}")
    counters = [f"C{i}" for i in range(draw(st.integers(0, 2)))]
    lines += [f"{c} = Counter()" for c in counters]
    ctx = Ctx([], [], [], counters, addrs, portsets)
    for i in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["int", "bool"]))
        body = draw(int_exprs(ctx) if kind == "int" else bool_exprs(ctx))
        lines += ["", "", f"def h{i}(pkt):", f"    return {body}"]
        ctx.helpers.append((f"h{i}", kind))
    where = _where_kwarg()
    chosen = hooks or tuple(draw(st.lists(st.sampled_from(HOOKS), min_size=1, max_size=2,
                                          unique=True)))
    specs = []
    for n, hk in enumerate(chosen):
        prio = draw(st.sampled_from([-300, -150, 0, 10, 200]))
        name = f"f{n}"
        fctx = dataclasses.replace(ctx, ints=[], bools=[])
        lines += ["", "", f"@hook({hk!r}, priority={prio}{where})", f"def {name}(pkt):"]
        lines += draw(blocks(fctx, 1, True, n))
        specs.append((name, hk, prio))
    return HookModule("\n".join(lines) + "\n", tuple(specs), tuple(counters))


# ---- packets ----------------------------------------------------------------------------------

def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@dataclasses.dataclass(frozen=True)
class RawPacket:
    """An IP packet's bytes and how it was drawn (for the report of a failure)."""

    version: int
    data: bytes
    note: str
    wire_ok: bool  # a router forwards it (no truncated transport header, no broken ext. hdr)

    def __repr__(self) -> str:
        return f"RawPacket(v{self.version}, {self.note}, {self.data.hex()})"


class Chooser:
    """Picks for the packet builder: from Hypothesis (``draw``) or from a seeded Random."""

    def __init__(self, draw=None, rng=None):
        self._draw, self._rng = draw, rng

    def pick(self, options):
        options = list(options)
        return self._draw(st.sampled_from(options)) if self._draw else self._rng.choice(options)

    def upto(self, n: int) -> int:
        return self._draw(st.integers(0, n)) if self._draw else self._rng.randint(0, n)

    def payload(self) -> bytes:
        n = self.upto(24)
        if self._draw:
            return bytes(self._draw(st.lists(st.sampled_from(PAYLOAD_ALPHABET), min_size=n,
                                             max_size=n)))
        return bytes(self._rng.choice(PAYLOAD_ALPHABET) for _ in range(n))


def build_packet(c: Chooser, version: int | None = None, wire: bool = False,
                 src_pool: list[str] | None = None, dst_pool: list[str] | None = None
                 ) -> RawPacket:
    """A raw IP packet. ``wire``: only packets that a router forwards unchanged."""
    v = version or c.pick([4, 6])
    proto = c.pick(L4[v])
    src = c.pick(src_pool or (V4_POOL if v == 4 else V6_POOL))
    dst = c.pick(dst_pool or (V4_POOL if v == 4 else V6_POOL))
    payload = c.payload()
    notes = []
    if proto in (6, 17, 132):
        sport, dport = c.pick(PORTS), c.pick(PORTS)
        notes.append(f"{sport}->{dport}")
        if proto == 6:
            doff = c.pick([5, 5, 5, 6, 8, 15] + ([] if wire else [4, 2]))
            opts = b"\x01" * max(0, doff * 4 - 20)
            l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, doff << 4, 0x02, 512, 0, 0) + opts
            notes.append(f"doff={doff}")
        elif proto == 17:
            l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
        else:
            l4 = struct.pack("!HHII", sport, dport, 0, 0)
    elif proto in (1, 58):
        t = c.pick(ICMP_TYPES[v])
        l4 = struct.pack("!BBHHH", t, 0, 0, 0x4D46, 1)
        notes.append(f"type={t}")
    else:
        l4 = struct.pack("!HH", 0, 0x0800)  # a GRE header
    body = l4 + payload
    if not wire and c.upto(5) == 0:
        cut = c.upto(min(len(body), 12))
        body = body[:cut]
        notes.append(f"truncated to {cut}")
    frag = c.pick(["none"] * 6 + ["first", "later"])
    if frag != "none":
        notes.append(f"fragment {frag}")
    pname = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 132: "sctp", 47: "gre"}[proto]
    notes.insert(0, f"{pname} {src}->{dst}")
    if v == 4:
        words = c.pick([0, 0, 0, 1, 3, 10])
        opts = b"\x01" * (words * 4 - 1) + b"\x00" if words else b""
        if words:
            notes.append(f"ihl={5 + words}")
        fl = {"none": 0, "first": 0x2000, "later": 0x2000 | 3}[frag]
        total = 20 + len(opts) + len(body)
        head = struct.pack("!BBHHHBBH4s4s", 0x45 + words, 0, total, 0x1234, fl, 64, proto, 0,
                           ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
        head += opts
        head = head[:10] + struct.pack("!H", checksum(head)) + head[12:]
        return RawPacket(4, head + body, ", ".join(notes), wire)
    exts = [c.pick([0, 60, 43]) for _ in range(c.upto(1 if wire else 2))]
    if 0 in exts[1:]:
        exts = [e for e in exts if e != 0]  # hop-by-hop may only come first
    chain = b""
    kinds = exts + ([44] if frag != "none" else [])
    for i, kind in enumerate(kinds):
        nxt = kinds[i + 1] if i + 1 < len(kinds) else proto
        if kind == 44:
            off = 0 if frag == "first" else 3
            chain += struct.pack("!BBHI", nxt, 0, (off << 3) | 1, 0x1234)
        elif kind == 43:
            chain += struct.pack("!BBBB4s", nxt, 0, 0, 0, b"\0" * 4)  # type 0, no segments left
        else:
            chain += struct.pack("!BB6s", nxt, 0, b"\x01\x04\0\0\0\0")  # PadN
    if exts:
        notes.append("ext " + ",".join(map(str, exts)))
    first = kinds[0] if kinds else proto
    body = chain + body
    if not wire and kinds and c.upto(7) == 0:
        body = body[:c.upto(7)]
        notes.append("broken ext")
    head = struct.pack("!IHBB16s16s", 0x60000000, len(body), first, 64,
                       ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return RawPacket(6, head + body, ", ".join(notes), wire)


@st.composite
def packets(draw, **kw) -> RawPacket:
    return build_packet(Chooser(draw=draw), **kw)


def corpus(n: int, seed: int = 16, **kw) -> list[RawPacket]:
    """``n`` packets from a seeded generator: the many packets every function meets (drawing
    each through Hypothesis would cost more than running it)."""
    rng = random.Random(seed)
    return [build_packet(Chooser(rng=rng), **kw) for _ in range(n)]


# ---- the truth --------------------------------------------------------------------------------

def python_verdict(spec: Any, raw: bytes, hook_name: str, ifnames: dict[int, str] | None = None,
                   indev: int = 0, outdev: int = 0, mark: int = 0,
                   logs: list[str] | None = None) -> int:
    """The verdict (1 accept, 0 drop) of the hook function on this packet in userspace, as the
    queue runner decides it: an exception or a value other than ACCEPT/DROP gives on_error."""
    queued = QueuedPacket(0, 1, 0x0800 if raw[0] >> 4 == 4 else 0x86DD, HOOKNUM[hook_name],
                          payload=raw, mark=mark, indev=indev, outdev=outdev)
    names = ifnames or {}
    pkt = Packet(queued, ifname=names.get, logger=(logs.append if logs is not None else None))
    try:
        v = spec.fn(pkt)
    except Exception:
        v = spec.error_verdict
    if v is not ACCEPT and v is not DROP:
        v = spec.error_verdict
    return 1 if v == ACCEPT else 0
