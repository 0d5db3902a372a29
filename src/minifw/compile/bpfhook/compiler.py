"""The hook compiler: a Python function's AST to BPF instructions. Pure.

Values live in r7 (expressions) and in 8-byte stack slots (locals, temporaries); r6 holds the
ctx and r9 the function's stats. What Python would raise on (a truncated header, None in
arithmetic or an ordering, a division by zero, an index past the payload) takes the error exit,
the hook's on_error verdict: the queue runner's answer to an exception. What 64 bits cannot
hold is refused at compile time from the values' ranges, never wrapped."""

from __future__ import annotations

import ast
import operator
import zlib
from typing import Any

from ...bpf.asm import (
    ALU64, B, DW, EXIT, FP, JA, JMP, JMP32, R0, R1, R2, R3, R7, R8, R9, X, Asm, Insn, reg,
)
from ...bpf.program import MapSpec
from ...hooks.addresses import LPM_VALUE_SIZE, Addresses, Counter, key_sizes
from ...hooks.packet import HOOK_NAMES, PROTO_NAMES
from . import frame as fr
from .model import BOOL, INT_MIN, NONE, S64_MAX, LogFormat, Val, refuse

ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, MOD, XOR, ARSH = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x90, 0xA0, 0xC0)
PROTO_NUMBERS = {v: k for k, v in PROTO_NAMES.items()}
INT_FIELDS = {"version", "sport", "dport", "icmp_type", "length", "mark"}
SYMBOLIC = {"proto", "src", "dst", "hook", "iif", "oif", "payload"}
INLINE_IN = 16          # `in` over more constants than this is a hash map lookup
MAX_BYTES = 64          # the longest payload slice compared with a constant
ADDR_MAP_ENTRIES = 65536
RINGBUF_BYTES = 256 * 1024
LOST_AT = 16  # the stats slot of log lines that found no room in the ringbuf
_CMP = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "s<", ast.LtE: "s<=", ast.Gt: "s>",
        ast.GtE: "s>="}
_NEGATE = {"==": "!=", "!=": "==", "s<": "s>=", "s>=": "s<", "s>": "s<=", "s<=": "s>"}
_PY = {"==": lambda x, y: x == y, "!=": lambda x, y: x != y, "s<": lambda x, y: x < y,
       "s<=": lambda x, y: x <= y, "s>": lambda x, y: x > y, "s>=": lambda x, y: x >= y}
_ALU = {ast.Add: ADD, ast.Sub: SUB, ast.Mult: MUL, ast.BitAnd: AND, ast.BitOr: OR,
        ast.BitXor: XOR}
_FOLD = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
         ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.BitAnd: operator.and_,
         ast.BitOr: operator.or_, ast.BitXor: operator.xor, ast.LShift: operator.lshift,
         ast.RShift: operator.rshift, ast.Pow: operator.pow}
_NAMES = {ast.For: "`for` loops", ast.While: "`while` loops", ast.Try: "`try`",
          ast.Raise: "`raise`", ast.With: "`with`", ast.Import: "`import`",
          ast.ImportFrom: "`import`", ast.Global: "`global`", ast.Nonlocal: "`nonlocal`",
          ast.Delete: "`del`", ast.FunctionDef: "nested functions", ast.Lambda: "`lambda`",
          ast.ClassDef: "classes", ast.Assert: "`assert`", ast.ListComp: "comprehensions",
          ast.SetComp: "comprehensions", ast.DictComp: "comprehensions",
          ast.GeneratorExp: "generators", ast.Await: "`await`", ast.Yield: "`yield`",
          ast.Dict: "dicts", ast.List: "lists", ast.JoinedStr: "strings other than log text",
          ast.Match: "`match`", ast.NamedExpr: "`:=`", ast.Starred: "`*` arguments",
          ast.AsyncFunctionDef: "async functions"}


def _fits(v: Val) -> bool:
    return v.lo is None or (INT_MIN <= v.lo and v.hi <= S64_MAX)  # type: ignore[operator]


class _Return:
    """Where an inlined function's `return` goes."""

    def __init__(self, label: str, slot: int):
        self.label, self.slot, self.vals = label, slot, []  # type: tuple[str, int, list]


class Compiler:
    def __init__(self, fn: ast.FunctionDef, functions: dict[str, ast.FunctionDef],
                 module: dict[str, Any], filename: str, name: str, family: int,
                 on_error_accept: bool, verdicts: dict[int, object],
                 layout: dict[str, int] | None):
        self.fn, self.functions, self.module = fn, functions, module
        self.filename, self.name, self.family = filename, name, family
        self.on_error_accept, self.verdicts, self.layout = on_error_accept, verdicts, layout
        self.a = Asm()
        self.maps: dict[str, MapSpec] = {}
        self.initial: dict[str, tuple[tuple[bytes, bytes], ...]] = {}
        self.logs: list[LogFormat] = []
        self.address_maps: dict[str, dict[str, str]] = {}
        self.counters: list[str] = []
        self.ifnames: list[str] = []
        self.next_slot = fr.LOCALS
        self.inlining: list[str] = []
        self.uses_packet = False
        self.stats = f"{name}_stats"
        # u64 packets @0, drops @8, log lines lost @16 (the ringbuf full or unread)
        self.add_map(MapSpec(self.stats, "percpu_array", 4, 24, 1))

    # -- errors, maps, slots -----------------------------------------------------------------
    def refuse(self, node: Any, message: str) -> Exception:
        return refuse(node, self.filename, message)

    def add_map(self, spec: MapSpec) -> str:
        self.maps.setdefault(spec.name, spec)
        return spec.name

    def slot(self, node: Any) -> int:
        at = self.next_slot
        if at - 8 < fr.STACK_LIMIT:
            raise self.refuse(node, "too many locals and temporaries for the kernel's 512-byte "
                              "stack; simplify the function or use where=\"queue\"")
        self.next_slot -= 8
        return at

    def free(self, at: int) -> None:
        self.next_slot = at

    # -- the function ------------------------------------------------------------------------
    def compile(self) -> Asm:
        args = self.fn.args
        if len(args.args) != 1 or args.vararg or args.kwarg or args.kwonlyargs \
                or args.posonlyargs:
            raise self.refuse(self.fn, "a hook function takes exactly one argument, the packet")
        body = Asm()
        self.a, outer = body, self.a
        env = {"pkt": args.args[0].arg, "locals": {}, "slots": self.local_slots(self.fn)}
        self.a.line = self.fn.lineno
        self.block(self.fn.body, env, None)
        self.a.ja(".error")    # fell off the end: None is no verdict, as on the queue
        self.a = outer
        a = self.a
        a.line = self.fn.lineno
        fr.prologue(a, self.stats, self.family, self.uses_packet,
                    (self.layout or {}).get("sk_buff.len"))
        a.extend(body.insns)
        for name, at in body.labels.items():
            a.labels[name] = at + len(a.insns) - len(body.insns)
        a._fresh = max(a._fresh, body._fresh)
        a.line = self.fn.lineno
        a.label(".error")
        a.ja(".accept" if self.on_error_accept else ".drop")
        a.label(".drop")
        a.mov(R1, 1)
        a.atomic_add(DW, R9, 8, R1)
        a.mov(R0, 0)
        a.exit()
        a.label(".accept")
        a.mov(R0, 1)
        a.exit()
        return prune(a)

    # -- statements --------------------------------------------------------------------------
    def block(self, stmts: list[ast.stmt], env: dict, ret: _Return | None) -> None:
        for stmt in stmts:
            self.a.line = stmt.lineno
            self.stmt(stmt, env, ret)

    def stmt(self, node: ast.stmt, env: dict, ret: _Return | None) -> None:
        a = self.a
        if isinstance(node, ast.Pass):
            return
        if isinstance(node, ast.Expr):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return  # a docstring
            self.expr_stmt(node.value, env)
            return
        if isinstance(node, ast.Return):
            self.ret(node, env, ret)
            return
        if isinstance(node, ast.If):
            skip, end = a.fresh("else"), a.fresh("fi")
            self.jump_if(node.test, False, skip, env)
            before = dict(env["locals"])
            self.block(node.body, env, ret)
            then_locals = env["locals"]
            a.ja(end)
            a.label(skip)
            env["locals"] = dict(before)
            self.block(node.orelse, env, ret)
            a.label(end)
            if terminates(node.body):
                return                  # only the else side goes on
            if terminates(node.orelse):
                env["locals"] = then_locals
                return
            env["locals"] = self.merge(then_locals, env["locals"])
            return
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            self.assign(node, env)
            return
        raise self.refuse(node, f"{_NAMES.get(type(node), type(node).__name__)} cannot run in "
                          "the kernel; use where=\"queue\"")

    def local_slots(self, fn: ast.FunctionDef) -> dict[str, int]:
        """A stack slot for every name the function assigns, so both sides of an if agree."""
        names: list[str] = []
        for n in ast.walk(fn):
            target = n.targets[0] if isinstance(n, ast.Assign) and n.targets else getattr(
                n, "target", None) if isinstance(n, (ast.AugAssign, ast.AnnAssign)) else None
            if isinstance(target, ast.Name) and target.id not in names:
                names.append(target.id)
        return {name: self.slot(fn) for name in names}

    def merge(self, one: dict, two: dict) -> dict:
        """Locals after an if/else: a name bound on one side only is no longer readable."""
        out = {}
        for name in one.keys() & two.keys():
            (s1, v1), (_, v2) = one[name], two[name]
            out[name] = (s1, None if v1 is None or v2 is None else v1.join(v2))
        for name in one.keys() ^ two.keys():
            out[name] = ((one.get(name) or two.get(name))[0], None)  # maybe unbound
        return out

    def assign(self, node: Any, env: dict) -> None:
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        if isinstance(node, ast.Assign) and len(node.targets) != 1 \
                or not isinstance(target, ast.Name):
            raise self.refuse(node, "only assignments to one plain local name can run in the "
                              "kernel; use where=\"queue\"")
        if node.value is None:
            return
        value = node.value
        if isinstance(node, ast.AugAssign):
            value = ast.copy_location(ast.BinOp(ast.Name(target.id, ast.Load()), node.op,
                                                node.value), node)
        v = self.expr(value, env)
        if v.verdict:
            raise self.refuse(node, "ACCEPT and DROP can only be returned in the kernel")
        at = env["slots"][target.id]
        self.a.stx(DW, FP, at, R7)
        env["locals"][target.id] = (at, v)

    def ret(self, node: ast.Return, env: dict, ret: _Return | None) -> None:
        a = self.a
        if ret is not None:   # an inlined function
            if node.value is None:
                a.ld_imm64(R7, NONE)
                v = Val(None, None, none=True)
            else:
                v = self.expr(node.value, env, allow_verdict=True)
            a.stx(DW, FP, ret.slot, R7)
            ret.vals.append(v)
            a.ja(ret.label)
            return
        if node.value is None:
            a.ja(".error")
            return
        v = self.expr(node.value, env, allow_verdict=True)
        if not v.verdict:
            raise self.refuse(node, "a hook function returns ACCEPT or DROP")
        if v.none:
            a.ld_imm64(R1, NONE)
            a.jmp("==", R7, reg(R1), ".error")
        a.jmp("==", R7, 0, ".drop")
        a.ja(".accept")

    def expr_stmt(self, node: ast.expr, env: dict) -> None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner, meth = node.func.value, node.func.attr
            if isinstance(owner, ast.Name) and owner.id == env["pkt"] and meth == "log":
                self.log(node, env)
                return
            if isinstance(owner, ast.Name) and isinstance(self.module.get(owner.id), Counter) \
                    and owner.id not in env["slots"] and meth == "inc":
                self.counter_inc(node, owner.id, env)
                return
        self.expr(node, env)

    def counter_inc(self, node: ast.Call, var: str, env: dict) -> None:
        if node.keywords or len(node.args) > 1:
            raise self.refuse(node, "Counter.inc takes one optional count")
        a = self.a
        v = self.expr(node.args[0], env) if node.args else Val.const(1)
        if not node.args:
            a.mov(R7, 1)
        self.none_check(v)
        name = self.add_map(MapSpec(var, "percpu_array", 4, 8, 1))
        if var not in self.counters:
            self.counters.append(var)
        skip = a.fresh("cnt")
        a.st(0, FP, fr.SCRATCH, 0)
        a.ld_map(R1, name)
        a.mov(R2, reg(FP))
        a.alu(ADD, R2, fr.SCRATCH)
        a.call(fr.MAP_LOOKUP)
        a.jmp("==", R0, 0, skip)
        # atomic, like the stats: a softirq may run the same program on this CPU in between
        a.atomic_add(DW, R0, 0, R7)
        a.label(skip)

    # -- pkt.log ------------------------------------------------------------------------------
    def log(self, node: ast.Call, env: dict) -> None:
        if node.keywords or len(node.args) != 1:
            raise self.refuse(node, "pkt.log takes one string")
        arg = node.args[0]
        parts: list[tuple[str, str]] = []
        values: list[tuple[str, int]] = []   # (kind, slot or header offset)
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            parts.append(("text", arg.value))
        elif isinstance(arg, ast.JoinedStr):
            start = self.next_slot
            for piece in arg.values:
                if isinstance(piece, ast.Constant):
                    parts.append(("text", str(piece.value)))
                    continue
                assert isinstance(piece, ast.FormattedValue)
                if piece.conversion not in (-1, 115) or piece.format_spec is not None:
                    raise self.refuse(piece, "log text formats values plainly ({x}) in the "
                                      "kernel; conversions and format specs are not supported")
                ok, const = self.constant(piece.value, env)
                if ok and isinstance(const, (str, int)):   # folded into the text
                    parts.append(("text", str(const)))
                    continue
                kind, where = self.log_value(piece.value, env)
                parts.append(("value", kind))
                values.append((kind, where))
        else:
            raise self.refuse(arg, "pkt.log takes a string or an f-string in the kernel")
        fmt_id = zlib.crc32(f"{self.name}:{len(self.logs)}".encode())
        self.logs.append(LogFormat(fmt_id, self.name, tuple(parts), node.lineno))
        size = 8 + sum(16 if k.startswith("addr") else 8 for k, _ in values)
        a = self.a
        ring = self.add_map(MapSpec("log", "ringbuf", 0, 0, RINGBUF_BYTES))
        skip = a.fresh("nolog")
        a.ld_map(R1, ring)
        a.mov(R2, size)
        a.mov(R2 + 1, 0)
        a.call(fr.RINGBUF_RESERVE)
        reserved = a.fresh("logged")
        a.jmp("!=", R0, 0, reserved)
        a.mov(R1, 1)   # no room (no reader drains it): count the line as lost
        a.atomic_add(DW, R9, LOST_AT, R1)
        a.ja(skip)
        a.label(reserved)
        a.ld_imm64(R1, fmt_id)
        a.stx(DW, R0, 0, R1)
        at = 8
        for kind, where in values:
            if kind.startswith("addr"):
                n = 4 if kind == "addr4" else 16
                a.st(DW, R0, at, 0)
                a.st(DW, R0, at + 8, 0)
                for i in range(0, n, 4):
                    a.ldx(0, R1, FP, fr.HDR + where + i)
                    a.stx(0, R0, at + i, R1)
                at += 16
            else:
                a.ldx(DW, R1, FP, where)
                a.stx(DW, R0, at, R1)
                at += 8
        a.mov(R1, reg(R0))
        a.mov(R2, 0)
        a.call(fr.RINGBUF_SUBMIT)
        a.label(skip)
        if values:
            self.free(start)

    def log_value(self, node: ast.expr, env: dict) -> tuple[str, int]:
        field = self.pkt_field(node, env)
        if field in ("src", "dst"):
            self.header(node)
            return f"addr{self.family}", fr.ADDR_AT[self.family][field]
        if field == "proto":
            self.header(node)
            fr.transport(self.a, ".error")   # broken extension headers raise in Python
            self.a.mov(R7, reg(R1))
            kind = "proto"
        elif field == "hook":
            self.hook_number()
            kind = "hook"
        else:
            v = self.expr(node, env)
            if v.verdict:
                raise self.refuse(node, "log text cannot show a verdict in the kernel")
            kind = "bool" if v.boolean else "int"
        at = self.slot(node)
        self.a.stx(DW, FP, at, R7)
        return kind, at

    # -- expressions --------------------------------------------------------------------------
    def pkt_field(self, node: Any, env: dict) -> str | None:
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == env["pkt"]:
            if node.attr not in INT_FIELDS | SYMBOLIC:
                raise self.refuse(node, f"pkt.{node.attr} cannot be read in the kernel; use "
                                  "where=\"queue\"")
            return node.attr
        return None

    def header(self, node: Any) -> None:
        self.uses_packet = True
        fr.header_ok(self.a, ".error")

    def hook_number(self) -> None:
        self.a.ldx(DW, R1, fr.R6, self.at("bpf_nf_ctx.state"))
        self.a.ldx(B, R7, R1, self.at("nf_hook_state.hook"))

    def constant(self, node: Any, env: dict) -> tuple[bool, Any]:
        """(True, value) for a literal or a module-level constant (folded at compile time)."""
        if isinstance(node, ast.Constant):
            return True, node.value
        if isinstance(node, ast.Name) and node.id not in env["slots"] \
                and node.id != env["pkt"] and node.id in self.module:
            value = self.module[node.id]
            if isinstance(value, (int, str, bytes, tuple, frozenset, set, type(None))) \
                    and not isinstance(value, Addresses) and id(value) not in self.verdicts:
                return True, value
        if isinstance(node, (ast.Tuple, ast.Set)):
            items = [self.constant(e, env) for e in node.elts]
            if all(ok for ok, _ in items):
                return True, tuple(v for _, v in items)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Invert)):
            ok, v = self.constant(node.operand, env)
            if ok and isinstance(v, int):
                return True, -v if isinstance(node.op, ast.USub) else ~v
        if isinstance(node, ast.BinOp) and type(node.op) in _FOLD:
            ok1, x = self.constant(node.left, env)
            ok2, y = self.constant(node.right, env)
            if ok1 and ok2 and type(x) in (int, bool) and type(y) in (int, bool):
                if isinstance(node.op, (ast.LShift, ast.Pow)) and not 0 <= y <= 64 \
                        or isinstance(node.op, ast.Pow) and abs(x) > 1 << 32:
                    return False, None      # left to the range check, which refuses it
                try:
                    return True, _FOLD[type(node.op)](x, y)
                except (ZeroDivisionError, ValueError):
                    return False, None      # raises at run time too: the error exit
        return False, None

    def load_const(self, value: int) -> Val:
        v = Val.const(value)
        if not _fits(v):
            raise ValueError(value)
        if -(1 << 31) <= value < 1 << 31:
            self.a.mov(R7, int(value))
        else:
            self.a.ld_imm64(R7, int(value))
        return v

    def expr(self, node: ast.expr, env: dict, allow_verdict: bool = False) -> Val:
        """Evaluate ``node`` into r7."""
        a = self.a
        ok, value = self.constant(node, env)
        if ok:
            if value is None:
                a.ld_imm64(R7, NONE)
                return Val(None, None, none=True)
            if isinstance(value, int):
                try:
                    return self.load_const(value)
                except ValueError:
                    raise self.refuse(node, f"{value} does not fit in 64 bits") from None
            what = "floats" if isinstance(value, float) else f"{type(value).__name__} values"
            raise self.refuse(node, f"{what} cannot be used here in the kernel; only "
                              "comparisons with constants, `in` and log text take them")
        if isinstance(node, ast.Name):
            return self.load_name(node, env, allow_verdict)
        field = self.pkt_field(node, env)
        if field is not None:
            return self.int_field(node, field)
        if isinstance(node, ast.BinOp):
            return self.binop(node, env)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node, env)
        if isinstance(node, ast.Compare):
            return self.materialize(node, env)
        if isinstance(node, ast.BoolOp):
            return self.boolop(node, env)
        if isinstance(node, ast.IfExp):
            return self.ifexp(node, env)
        if isinstance(node, ast.Call):
            return self.call(node, env, allow_verdict)
        if isinstance(node, ast.Subscript):
            return self.subscript(node, env)
        raise self.refuse(node, f"{_NAMES.get(type(node), type(node).__name__)} cannot run "
                          "in the kernel; use where=\"queue\"")

    def load_name(self, node: ast.Name, env: dict, allow_verdict: bool) -> Val:
        found = env["locals"].get(node.id)
        if found is not None or node.id in env["slots"]:
            at, v = found or (0, None)
            if v is None:
                raise self.refuse(node, f"`{node.id}` is not assigned on every path before "
                                  "this line; assign it first (Python would raise "
                                  "UnboundLocalError)")
            self.a.ldx(DW, R7, FP, at)
            return v
        if node.id == env["pkt"]:
            raise self.refuse(node, "the packet can only be read field by field in the kernel")
        value = self.module.get(node.id)
        if value is not None and id(value) in self.verdicts:
            if not allow_verdict:
                raise self.refuse(node, "ACCEPT and DROP can only be returned")
            v = self.verdicts[id(value)]
            self.a.mov(R7, v)
            return Val(v, v, verdict=True)
        if isinstance(value, Addresses):
            raise self.refuse(node, "an Addresses set can only be used with `in` in the kernel")
        raise self.refuse(node, f"`{node.id}` is not a local, an int constant or a function of "
                          "this module: it cannot be read in the kernel")

    def int_field(self, node: Any, field: str) -> Val:
        a = self.a
        if field in SYMBOLIC:
            what = {"proto": "compared with constants or `in` constants",
                    "src": "compared with an address or used with `in` Addresses",
                    "dst": "compared with an address or used with `in` Addresses",
                    "hook": "compared with hook names", "iif": "compared with names",
                    "oif": "compared with names",
                    "payload": "indexed (payload[i]), sliced and compared with bytes, "
                               "or measured (len)"}[field]
            raise self.refuse(node, f"pkt.{field} can only be {what} in the kernel")
        if field == "length":
            self.uses_packet = True
            a.ldx(DW, R7, FP, fr.LEN)
            return Val(0, 0xFFFFFFFF)
        if field == "mark":
            off = self.layout_offset(node, "sk_buff.mark", "pkt.mark")
            a.ldx(DW, R1, fr.R6, self.at("bpf_nf_ctx.skb"))
            a.ldx(0, R7, R1, off)
            return Val(0, 0xFFFFFFFF)
        self.header(node)
        if field == "version":
            a.mov(R7, self.family)
            return Val(self.family, self.family)
        none, done = a.fresh("none"), a.fresh("field")
        if field in ("sport", "dport"):
            fr.port(a, self.family, 0 if field == "sport" else 1, ".error", none)
            hi = 0xFFFF
        else:
            fr.icmp_type(a, self.family, ".error", none)
            hi = 0xFF
        a.ja(done)
        a.label(none)
        a.ld_imm64(R7, NONE)
        a.label(done)
        return Val(0, hi, none=True)

    def at(self, key: str) -> int:
        """An offset of the kernel's ABI-stable structs: from BTF when the caller passed it."""
        return (self.layout or {}).get(key, fr.STABLE[key])

    def layout_offset(self, node: Any, key: str, what: str) -> int:
        if not self.layout or key not in self.layout:
            raise self.refuse(node, f"{what} needs the kernel's {key} offset (from BTF), which "
                              "the caller did not pass")
        return self.layout[key]

    def none_check(self, v: Val, reg_: int = R7) -> None:
        """None in arithmetic or an ordering raises TypeError in Python: the error exit."""
        if v.none:
            self.a.ld_imm64(R1, NONE)
            self.a.jmp("==", reg_, reg(R1), ".error")
        if not v.is_int:
            raise ValueError

    def binop(self, node: ast.BinOp, env: dict) -> Val:
        a = self.a
        left = self.expr(node.left, env)
        self.check_int(node.left, left)
        tmp = self.slot(node)
        a.stx(DW, FP, tmp, R7)
        right = self.expr(node.right, env)
        self.check_int(node.right, right)
        self.none_check(right)
        a.mov(R8, reg(R7))
        a.ldx(DW, R7, FP, tmp)
        self.free(tmp)
        self.none_check(left)
        lo1, hi1, lo2, hi2 = left.lo, left.hi, right.lo, right.hi
        op = type(node.op)
        boolean = False
        if op in (ast.Add, ast.Sub, ast.Mult):
            f = {ast.Add: lambda x, y: x + y, ast.Sub: lambda x, y: x - y,
                 ast.Mult: lambda x, y: x * y}[op]
            if op is ast.Sub:
                corners = [lo1 - hi2, hi1 - lo2]
            else:
                corners = [f(x, y) for x in (lo1, hi1) for y in (lo2, hi2)]
            lo, hi = min(corners), max(corners)
            a.alu(_ALU[op], R7, reg(R8))
        elif op in (ast.BitAnd, ast.BitOr, ast.BitXor):
            boolean = left.boolean and right.boolean
            bits = max(abs(x) for x in (lo1, hi1, lo2, hi2)).bit_length() + 1
            if op is ast.BitAnd and (lo1 >= 0 or lo2 >= 0):
                lo, hi = 0, min(h for low, h in ((lo1, hi1), (lo2, hi2)) if low >= 0)
            elif lo1 >= 0 and lo2 >= 0:
                lo, hi = 0, (1 << bits) - 1
            else:
                lo, hi = -(1 << bits), (1 << bits) - 1
            a.alu(_ALU[op], R7, reg(R8))
        elif op in (ast.FloorDiv, ast.Mod):
            if lo2 <= 0 <= hi2:
                a.jmp("==", R8, 0, ".error")   # ZeroDivisionError
            floor = op is ast.FloorDiv
            if lo1 >= 0 and lo2 >= 0:
                lo, hi = (0, hi1) if floor else (0, min(hi1, hi2 - 1))
                a.alu(DIV if floor else MOD, R7, reg(R8))
            else:
                m1 = max(-lo1, hi1)
                lo, hi = (-m1, m1) if floor else (min(lo2 + 1, 0), max(hi2 - 1, 0))
                self.floor_divmod(floor)
        elif op in (ast.LShift, ast.RShift) and hi2 < 0:
            a.ja(".error")                      # always Python's ValueError
            lo, hi = 0, 0
        elif op is ast.LShift:
            if hi2 > 62 or lo1 < 0 and hi2 > 0:
                raise self.refuse(node, "a left shift that may exceed 64 bits cannot run in "
                                  "the kernel; bound the shift with a constant")
            if lo2 < 0:
                a.jmp("s<", R8, 0, ".error")   # ValueError: negative shift count
            lo, hi = min(lo1 << max(lo2, 0), lo1 << hi2), max(hi1 << hi2, hi1 << max(lo2, 0))
            a.alu(LSH, R7, reg(R8))
        elif op is ast.RShift:
            if lo2 < 0:
                a.jmp("s<", R8, 0, ".error")
            if hi2 > 63:
                keep = a.fresh("shift")
                a.jmp("<=", R8, 63, keep)
                a.mov(R8, 63)                   # Python: 0 or -1 for any larger shift
                a.label(keep)
            lo, hi = min(lo1, 0), max(hi1, 0)
            a.alu(ARSH, R7, reg(R8))
        else:
            raise self.refuse(node, f"the operator {type(node.op).__name__} cannot run in the "
                              "kernel (floats and powers are not supported)")
        v = Val(lo, hi, boolean=boolean)
        if not _fits(v):
            raise self.refuse(node, "this arithmetic may exceed 64 bits, where Python's ints "
                              "would not; bound its operands or use where=\"queue\"")
        return v

    def floor_divmod(self, floor: bool) -> None:
        """r7 = r7 // r8 or r7 % r8 as Python floors them, from the signed (truncating)
        division: q = trunc(a / b), r = a - q * b; if r and r, b differ in sign: q -= 1, r += b."""
        a = self.a
        done = a.fresh("floor")
        a.mov(R1, reg(R7))
        a.emit(Insn(ALU64 | DIV | X, R1, R8, off=1))    # sdiv (off = 1)
        a.mov(R2, reg(R1))
        a.alu(MUL, R2, reg(R8))
        a.mov(R3, reg(R7))
        a.alu(SUB, R3, reg(R2))
        a.jmp("==", R3, 0, done)
        a.mov(R2, reg(R3))
        a.alu(XOR, R2, reg(R8))
        a.jmp("s>=", R2, 0, done)
        a.alu(SUB, R1, 1)
        a.alu(ADD, R3, reg(R8))
        a.label(done)
        a.mov(R7, reg(R1 if floor else R3))

    def check_int(self, node: Any, v: Val) -> None:
        if v.verdict:
            raise self.refuse(node, "ACCEPT and DROP can only be returned")
        if not v.is_int:
            raise self.refuse(node, "None in arithmetic raises TypeError; this cannot compile")

    def unary(self, node: ast.UnaryOp, env: dict) -> Val:
        a = self.a
        if isinstance(node.op, ast.Not):
            return self.materialize(node, env)
        v = self.expr(node.operand, env)
        self.check_int(node.operand, v)
        self.none_check(v)
        if isinstance(node.op, ast.UAdd):
            return Val(v.lo, v.hi)
        if isinstance(node.op, ast.USub):
            a.neg(R7)
            return Val(-v.hi, -v.lo)  # type: ignore[operator]
        a.alu(XOR, R7, -1)
        out = Val(~v.hi, ~v.lo)  # type: ignore[operator]
        if not _fits(out):
            raise self.refuse(node, "~ of this value may leave 64 bits; bound it first")
        return out

    def materialize(self, node: ast.expr, env: dict) -> Val:
        a = self.a
        no, end = a.fresh("f"), a.fresh("t")
        self.jump_if(node, False, no, env)
        a.mov(R7, 1)
        a.ja(end)
        a.label(no)
        a.mov(R7, 0)
        a.label(end)
        return BOOL

    def boolop(self, node: ast.BoolOp, env: dict) -> Val:
        """`a and b` / `a or b` as values: the deciding operand itself, as in Python."""
        a = self.a
        end = a.fresh("bool")
        v = None
        for i, operand in enumerate(node.values):
            ov = self.expr(operand, env)
            self.check_int(operand, ov) if ov.lo is not None or not ov.none else None
            v = ov if v is None else v.join(ov)
            if i < len(node.values) - 1:
                self.truth_jump(ov, isinstance(node.op, ast.Or), end)
        a.label(end)
        assert v is not None
        return v

    def ifexp(self, node: ast.IfExp, env: dict) -> Val:
        a = self.a
        other, end = a.fresh("ie"), a.fresh("ie")
        self.jump_if(node.test, False, other, env)
        v1 = self.expr(node.body, env)
        a.ja(end)
        a.label(other)
        v2 = self.expr(node.orelse, env)
        a.label(end)
        return v1.join(v2)

    def truth_jump(self, v: Val, truth: bool, label: str) -> None:
        """Jump to ``label`` if r7's truth value is ``truth`` (None is false)."""
        a = self.a
        if not v.none:
            a.jmp("!=" if truth else "==", R7, 0, label)
            return
        a.ld_imm64(R1, NONE)
        if truth:
            skip = a.fresh("nt")
            a.jmp("==", R7, reg(R1), skip)
            a.jmp("!=", R7, 0, label)
            a.label(skip)
        else:
            a.jmp("==", R7, reg(R1), label)
            a.jmp("==", R7, 0, label)

    def call(self, node: ast.Call, env: dict, allow_verdict: bool) -> Val:
        f = node.func
        if isinstance(f, ast.Name) and f.id == "len" and f.id not in self.module \
                and len(node.args) == 1 and self.pkt_field(node.args[0], env) == "payload":
            self.uses_packet = True
            fr.payload_span(self.a, ".error")
            self.a.mov(R7, reg(R8))
            return Val(0, 0xFFFF)
        if isinstance(f, ast.Name) and f.id in self.functions and f.id not in env["slots"]:
            return self.inline(node, self.functions[f.id], env, allow_verdict)
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
                and f.value.id == env["pkt"] and f.attr == "log":
            raise self.refuse(node, "pkt.log(...) is a statement of its own in the kernel")
        raise self.refuse(node, f"calls to `{ast.unparse(f)}` cannot run in the kernel; only "
                          "functions of this module in the subset are inlined")

    def inline(self, node: ast.Call, fn: ast.FunctionDef, env: dict, allow_verdict: bool) -> Val:
        a = self.a
        if fn.name in self.inlining or len(self.inlining) > 8:
            raise self.refuse(node, f"`{fn.name}` calls itself: recursion cannot run in the "
                              "kernel")
        params = fn.args
        if node.keywords or params.vararg or params.kwarg or params.kwonlyargs \
                or params.defaults or len(node.args) != len(params.args):
            raise self.refuse(node, f"`{fn.name}` is inlined in the kernel: call it with one "
                              "positional argument per parameter, no defaults")
        start = self.next_slot
        inner: dict = {"pkt": None, "locals": {}, "slots": self.local_slots(fn)}
        for param, arg in zip(params.args, node.args):
            if isinstance(arg, ast.Name) and arg.id == env["pkt"]:
                inner["pkt"] = param.arg
                continue
            v = self.expr(arg, env)
            at = self.slot(arg)
            a.stx(DW, FP, at, R7)
            inner["locals"][param.arg] = (at, v)
            inner["slots"][param.arg] = at
        result = self.slot(node)
        ret = _Return(a.fresh("ret"), result)
        self.inlining.append(fn.name)
        line = a.line
        self.block(fn.body, inner, ret)
        a.line = fn.body[-1].lineno
        a.ld_imm64(R7, NONE)                  # falling off the end returns None
        a.stx(DW, FP, result, R7)
        a.label(ret.label)
        a.line = line
        self.inlining.pop()
        a.ldx(DW, R7, FP, result)
        self.free(start)
        vals = list(ret.vals)
        if not vals:
            raise self.refuse(node, f"`{fn.name}` returns nothing the kernel can use")
        if any(x.verdict for x in vals) and not all(x.verdict for x in vals):
            raise self.refuse(node, f"`{fn.name}` returns both verdicts and values")
        v = vals[0]
        for x in vals[1:]:
            v = v.join(x)
        if not terminates(fn.body):   # falling off the end returns None
            v = Val(v.lo, v.hi, True, v.boolean, v.verdict)
        if v.verdict and not allow_verdict:
            raise self.refuse(node, f"`{fn.name}` returns a verdict: write `return "
                              f"{fn.name}(...)`")
        return v

    def subscript(self, node: ast.Subscript, env: dict) -> Val:
        if self.pkt_field(node.value, env) != "payload":
            raise self.refuse(node, "only pkt.payload can be indexed in the kernel")
        ok, i = self.constant(node.slice, env)
        if not ok or not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < 0xFFFF:
            raise self.refuse(node, "pkt.payload[i] takes a constant index i >= 0 in the "
                              "kernel (payload parsing beyond fixed offsets needs "
                              "where=\"queue\")")
        a = self.a
        self.header(node)
        fr.payload_span(a, ".error")
        a.jmp("<=", R8, i, ".error")            # IndexError
        fr.read(a, fr.SCRATCH, 1, off_reg=R7, off=i, fail=".error")
        a.ldx(B, R7, FP, fr.SCRATCH)
        return Val(0, 255)

    # -- conditions ---------------------------------------------------------------------------
    def jump_if(self, node: ast.expr, truth: bool, label: str, env: dict) -> None:
        a = self.a
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self.jump_if(node.operand, not truth, label, env)
            return
        if isinstance(node, ast.BoolOp):
            decisive = isinstance(node.op, ast.Or)   # the truth that ends an `or`
            if truth == decisive:
                for v in node.values:
                    self.jump_if(v, truth, label, env)
            else:
                skip = a.fresh("bo")
                for v in node.values[:-1]:
                    self.jump_if(v, decisive, skip, env)
                self.jump_if(node.values[-1], truth, label, env)
                a.label(skip)
            return
        if isinstance(node, ast.Compare):
            self.compare(node, truth, label, env)
            return
        ok, value = self.constant(node, env)
        if ok and not isinstance(value, (tuple, frozenset, set)):
            if bool(value) == truth:
                a.ja(label)
            return
        v = self.expr(node, env)
        if v.verdict:
            raise self.refuse(node, "ACCEPT and DROP can only be returned")
        self.truth_jump(v, truth, label)

    def compare(self, node: ast.Compare, truth: bool, label: str, env: dict) -> None:
        a = self.a
        if len(node.ops) > 1:   # a < b < c: b evaluated once, c only if a < b
            fail = a.fresh("chain") if truth else label
            start, left = self.next_slot, node.left
            for op, right in zip(node.ops, node.comparators):
                rv = self.expr(right, env)
                at = self.slot(right)
                a.stx(DW, FP, at, R7)
                name = f".t{at}"      # a pseudo-local no Python name can be
                env["locals"][name], env["slots"][name] = (at, rv), at
                one = ast.copy_location(ast.Compare(left, [op], [ast.Name(name, ast.Load())]),
                                        node)
                self.compare(one, False, fail, env)
                left = ast.copy_location(ast.Name(name, ast.Load()), right)
            for name in [n for n in env["slots"] if n.startswith(".t")]:
                del env["slots"][name]
                env["locals"].pop(name, None)
            self.free(start)
            if truth:
                a.ja(label)
                a.label(fail)
            return
        op, right = node.ops[0], node.comparators[0]
        left = node.left
        if isinstance(op, (ast.In, ast.NotIn)):
            self.membership(node, left, right, truth == isinstance(op, ast.In), label, env)
            return
        if isinstance(op, (ast.Is, ast.IsNot)):
            ok, value = self.constant(right, env)
            if not ok or value is not None:
                raise self.refuse(node, "`is` compares with None only in the kernel")
            v = self.expr(left, env)
            a.ld_imm64(R1, NONE)
            want = "==" if truth == isinstance(op, ast.Is) else "!="
            if v.none:
                a.jmp(want, R7, reg(R1), label)
            elif want == "!=":
                a.ja(label)
            return
        sym = _CMP[type(op)]
        lf, rf = self.pkt_field(left, env), self.pkt_field(right, env)
        if rf in SYMBOLIC and lf is None:     # 80 == pkt.dport style: swap
            left, right, lf, rf = right, left, rf, lf
            sym = {"s<": "s>", "s>": "s<", "s<=": "s>=", "s>=": "s<="}.get(sym, sym)
        if lf in SYMBOLIC and lf != "payload" or lf == "payload" and not \
                isinstance(left, ast.Subscript):
            ok, value = self.constant(right, env)
            if not ok or sym not in ("==", "!="):
                raise self.refuse(node, f"pkt.{lf} can only be compared with == or != to a "
                                  "constant in the kernel")
            want = truth == (sym == "==")
            self.member_symbolic(node, lf, left, (value,), want, label, env)
            return
        if isinstance(left, ast.Subscript) and isinstance(left.slice, ast.Slice):
            self.payload_slice(node, left, right, sym, truth, label, env)
            return
        # ints (and None)
        okr, rvalue = self.constant(right, env)
        if okr and not isinstance(rvalue, (int, type(None))):
            if sym not in ("==", "!="):
                raise self.refuse(node, f"ordering an int and a {type(rvalue).__name__} "
                                  "raises TypeError")
            self.expr(left, env)
            if (sym == "!=") == truth:
                a.ja(label)
            return
        lv = self.expr(left, env)
        if lv.verdict:
            raise self.refuse(node, "ACCEPT and DROP can only be returned")
        if okr and rvalue is not None and -(1 << 31) <= rvalue < 1 << 31 and not (
                lv.none and sym not in ("==", "!=")):
            self.ordered_check(node, sym, lv, Val.const(rvalue))
            a.jmp(sym if truth else _NEGATE[sym], R7, int(rvalue), label)
            return
        tmp = self.slot(node)
        a.stx(DW, FP, tmp, R7)
        rv = self.expr(right, env)
        if rv.verdict:
            raise self.refuse(node, "ACCEPT and DROP can only be returned")
        a.mov(R8, reg(R7))
        a.ldx(DW, R7, FP, tmp)
        self.free(tmp)
        self.ordered_check(node, sym, lv, rv)
        a.jmp(sym if truth else _NEGATE[sym], R7, reg(R8), label)

    def ordered_check(self, node: Any, sym: str, lv: Val, rv: Val) -> None:
        if sym in ("==", "!="):
            return
        if not lv.is_int or not rv.is_int:
            raise self.refuse(node, "ordering None raises TypeError; this cannot compile")
        a = self.a
        a.ld_imm64(R1, NONE)
        if lv.none:
            a.jmp("==", R7, reg(R1), ".error")
        if rv.none:
            a.jmp("==", R8, reg(R1), ".error")

    def membership(self, node: Any, left: Any, right: Any, want: bool, label: str,
                   env: dict) -> None:
        """Jump to ``label`` if (left in right) == want."""
        a = self.a
        field = self.pkt_field(left, env)
        if isinstance(right, ast.Name) and right.id not in env["slots"] \
                and isinstance(self.module.get(right.id), Addresses):
            if field not in ("src", "dst"):
                raise self.refuse(node, "only pkt.src and pkt.dst can be looked up in an "
                                  "Addresses set in the kernel")
            self.header(node)
            maps = self.address_maps_of(right.id)
            fam = f"v{self.family}"
            other = a.fresh("addr")
            yes, no = (label, other) if want else (other, label)
            fr.address_in(a, self.family, field, maps[f"{fam}_hash"], maps[f"{fam}_lpm"],
                          yes, no)
            a.label(other)
            return
        ok, values = self.constant(right, env)
        if not ok or not isinstance(values, (tuple, frozenset, set)):
            raise self.refuse(node, "`in` takes a constant tuple or set, or an Addresses set, "
                              "in the kernel")
        if field in SYMBOLIC:
            self.member_symbolic(node, field, left, tuple(values), want, label, env)
            return
        v = self.expr(left, env)
        if v.verdict:
            raise self.refuse(node, "ACCEPT and DROP can only be returned")
        ints = sorted({int(x) for x in values if isinstance(x, int) and _fits(Val.const(x))})
        if None in values and v.none:
            ints_none = True
        else:
            ints_none = False
        if v.lo is not None:
            ints = [x for x in ints if v.lo <= x <= v.hi]
        hit = label if want else a.fresh("in")
        if len(ints) > INLINE_IN:
            self.in_map(node, ints, hit)
        else:
            for x in ints:
                if -(1 << 31) <= x < 1 << 31:
                    a.jmp("==", R7, x, hit)
                else:
                    a.ld_imm64(R1, x)
                    a.jmp("==", R7, reg(R1), hit)
        if ints_none:
            a.ld_imm64(R1, NONE)
            a.jmp("==", R7, reg(R1), hit)
        if not want:
            a.ja(label)
            a.label(hit)

    def in_map(self, node: Any, ints: list[int], hit: str) -> None:
        a = self.a
        name = f"{self.name}_in{node.lineno}_{node.col_offset}"
        self.add_map(MapSpec(name, "hash", 8, 1, len(ints)))
        self.initial[name] = tuple(((x & ((1 << 64) - 1)).to_bytes(8, "little"), b"\x01")
                                   for x in ints)
        a.stx(DW, FP, fr.SCRATCH, R7)
        a.ld_map(R1, name)
        a.mov(R2, reg(FP))
        a.alu(ADD, R2, fr.SCRATCH)
        a.call(fr.MAP_LOOKUP)
        a.ldx(DW, R7, FP, fr.SCRATCH)
        a.jmp("!=", R0, 0, hit)

    def member_symbolic(self, node: Any, field: str, left: Any, values: tuple, want: bool,
                        label: str, env: dict) -> None:
        """proto / hook / src / dst / iif / oif against constants."""
        a = self.a
        hit = label if want else a.fresh("in")
        if field == "proto":
            self.header(node)
            fr.transport(a, ".error")
            numbers = set()
            for x in values:   # pkt.proto is a name for known protocols, else the number
                if isinstance(x, str) and x in PROTO_NUMBERS:
                    numbers.add(PROTO_NUMBERS[x])
                elif isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 256 \
                        and x not in PROTO_NAMES:
                    numbers.add(x)
            for n in sorted(numbers):
                a.jmp("==", R1, n, hit)
        elif field == "hook":
            self.hook_number()
            for n in sorted({HOOK_NAMES.index(x) for x in values if x in HOOK_NAMES}):
                a.jmp("==", R7, n, hit)
        elif field in ("src", "dst"):
            self.header(node)
            import ipaddress   # noqa: PLC0415  pure: parsing text
            for x in values:
                if not isinstance(x, str):
                    continue
                try:
                    addr = ipaddress.ip_address(x)
                except ValueError:
                    continue
                if addr.version != self.family:
                    continue
                nxt = a.fresh("ad")
                raw = addr.packed
                at = fr.HDR + fr.ADDR_AT[self.family][field]
                for i in range(0, len(raw), 4):
                    a.ldx(0, R1, FP, at + i)
                    a.jmp("!=", R1, int.from_bytes(raw[i:i + 4], "little") - (
                        1 << 32 if raw[i + 3] & 0x80 else 0), nxt, wide=False)
                a.ja(hit)
                a.label(nxt)
        elif field in ("iif", "oif"):
            self.interface(node, field, values, hit)
        else:
            raise self.refuse(node, f"pkt.{field} cannot be compared so in the kernel")
        if not want:
            a.ja(label)
            a.label(hit)

    def interface(self, node: Any, field: str, values: tuple, hit: str) -> None:
        """pkt.iif/oif == name: the device's ifindex against the "ifindex" array's slot of
        that name, which the loader keeps current (0: no such device, never equal)."""
        a = self.a
        off = self.layout_offset(node, "net_device.ifindex", f"pkt.{field}")
        ifmap = self.add_map(MapSpec("ifindex", "array", 4, 4, 64))
        a.ldx(DW, R1, fr.R6, self.at("bpf_nf_ctx.state"))
        a.ldx(DW, R1, R1, self.at("nf_hook_state.in" if field == "iif" else "nf_hook_state.out"))
        skip = a.fresh("noif")
        a.jmp("==", R1, 0, skip)             # no device: None, equal to no name
        a.ldx(0, R7, R1, off)
        at = self.slot(node)
        a.stx(DW, FP, at, R7)
        for name in (x for x in values if isinstance(x, str)):
            if name not in self.ifnames:
                if len(self.ifnames) >= 64:
                    raise self.refuse(node, "more than 64 interface names in one module")
                self.ifnames.append(name)
            nxt = a.fresh("if")
            a.st(0, FP, fr.SCRATCH, self.ifnames.index(name))
            a.ld_map(R1, ifmap)
            a.mov(R2, reg(FP))
            a.alu(ADD, R2, fr.SCRATCH)
            a.call(fr.MAP_LOOKUP)
            a.jmp("==", R0, 0, nxt)
            a.ldx(0, R1, R0, 0)
            a.jmp("==", R1, 0, nxt)
            a.ldx(DW, R7, FP, at)
            a.jmp("==", R7, reg(R1), hit)
            a.label(nxt)
        self.free(at)
        a.label(skip)

    def payload_slice(self, node: Any, left: ast.Subscript, right: Any, sym: str, truth: bool,
                      label: str, env: dict) -> None:
        a = self.a
        if self.pkt_field(left.value, env) != "payload":
            raise self.refuse(node, "only pkt.payload can be sliced in the kernel")
        sl = left.slice
        assert isinstance(sl, ast.Slice)
        bounds = []
        for b, default in ((sl.lower, 0), (sl.upper, None)):
            if b is None:
                bounds.append(default)
                continue
            ok, v = self.constant(b, env)
            if not ok or not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 0xFFFF:
                raise self.refuse(node, "pkt.payload[i:j] takes constant bounds >= 0 in the "
                                  "kernel")
            bounds.append(v)
        if sl.step is not None:
            raise self.refuse(node, "a slice step cannot run in the kernel")
        ok, const = self.constant(right, env)
        if not ok or sym not in ("==", "!="):
            raise self.refuse(node, "pkt.payload[i:j] can only be compared with == or != to "
                              "bytes in the kernel")
        i, j = bounds
        self.header(node)
        fr.payload_span(a, ".error")   # r7 = start, r8 = length
        want = truth == (sym == "==")
        hit = label if want else a.fresh("sl")
        miss = a.fresh("sl") if want else label
        if not isinstance(const, bytes) or len(const) > MAX_BYTES \
                or j is not None and len(const) > max(j - i, 0):
            a.ja(miss)     # str == bytes is False; a longer constant cannot match
        else:
            n = len(const)
            # the slice's length, min(j, len) - i clamped at 0, must be n
            if n == 0:
                if j is None or j > i:
                    a.jmp(">", R8, i, miss)
            elif j is not None and n == j - i:
                a.jmp("<", R8, i + n, miss)
            else:
                a.jmp("!=", R8, i + n, miss)    # only a payload ending exactly there
            if n:
                fr.read(a, fr.PBUF, n, off_reg=R7, off=i, fail=".error")
                for k in range(0, n, 4):
                    chunk = const[k:k + 4]
                    size = {1: B, 2: 0x08, 3: None, 4: 0}[len(chunk)]
                    if size is None:
                        a.ldx(0x08, R1, FP, fr.PBUF + k)
                        a.jmp("!=", R1, int.from_bytes(chunk[:2], "little"), miss)
                        a.ldx(B, R1, FP, fr.PBUF + k + 2)
                        a.jmp("!=", R1, chunk[2], miss)
                        continue
                    a.ldx(size, R1, FP, fr.PBUF + k)
                    # a 32-bit compare takes a signed immediate
                    a.jmp("!=", R1, int.from_bytes(chunk, "little", signed=True), miss,
                          wide=False) if len(chunk) == 4 else a.jmp("!=", R1, int.from_bytes(chunk, "little"),
                                                      miss)
            a.ja(hit)
        if want:
            a.label(miss)
        else:
            a.label(hit)

    def address_maps_of(self, var: str) -> dict[str, str]:
        found = self.address_maps.get(var)
        if found is None:
            found = {}
            for fam in (4, 6):
                hk, lk = key_sizes(fam)
                found[f"v{fam}_hash"] = f"{var}_v{fam}_hash"
                found[f"v{fam}_lpm"] = f"{var}_v{fam}_lpm"
                self.add_map(MapSpec(f"{var}_v{fam}_hash", "hash", hk, 8, ADDR_MAP_ENTRIES))
                self.add_map(MapSpec(f"{var}_v{fam}_lpm", "lpm_trie", lk, LPM_VALUE_SIZE,
                                     ADDR_MAP_ENTRIES, flags=1))
            self.address_maps[var] = found
        return found


def prune(a: Asm) -> Asm:
    """The program without the instructions no path reaches (the verifier refuses them):
    code after a return, exits a function never takes."""
    at = {name: i for name, i in a.labels.items()}
    n = len(a.insns)
    seen = [False] * n
    todo = [0]
    while todo:
        i = todo.pop()
        if i >= n or seen[i]:
            continue
        seen[i] = True
        insn = a.insns[i]
        cls, op = insn.code & 0x07, insn.code & 0xF0
        if cls in (JMP, JMP32) and op == EXIT:
            continue
        if insn.target is not None:
            todo.append(at[insn.target])
            if cls == JMP and op == JA:
                continue
        todo.append(i + 1)
    out = Asm()
    out.line = a.line
    kept_before = []
    count = 0
    for i, insn in enumerate(a.insns):
        kept_before.append(count)
        if seen[i]:
            out.insns.append(insn)
            count += 1
    kept_before.append(count)
    out.labels = {name: kept_before[i] for name, i in at.items()}
    out._fresh = a._fresh
    return out


def terminates(stmts: list[ast.stmt]) -> bool:
    """Whether a block never falls through: it ends in a return on every path."""
    if not stmts:
        return False
    last = stmts[-1]
    if isinstance(last, ast.Return):
        return True
    return isinstance(last, ast.If) and terminates(last.body) and terminates(last.orelse)


def find_functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}

