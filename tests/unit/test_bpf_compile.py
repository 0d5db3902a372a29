"""The hook compiler without the kernel: refusals name the file, line and construct; constants
fold; 64-bit limits are pinned at their edges; the maps it asks for; the log records' and
address maps' encodings."""

import ipaddress
import struct
import textwrap

import pytest

from minifw.compile.bpfhook import (
    HookCompileError, LogFormat, compile_hook, decode_log, explain_verifier)
from minifw.compile.bpfhook.compiler import INLINE_IN
from minifw.errors import ConfigError, MinifwError
from minifw.hooks.addresses import Addresses, Counter, address_entries, check_plain_address_sets

HEAD = """\
from minifw import hook, ACCEPT, DROP
from minifw.hooks.addresses import Addresses, Counter
BLOCKED = Addresses("198.18.2.2", "198.18.64.0/18", "fd00::66")
HITS = Counter()
PLAIN = {"198.18.0.1", "198.18.0.2"}
LIMIT = 1000
"""
HEAD_LINES = HEAD.count("\n")


def build(body: str, family: int = 4, layout=None):
    source = HEAD + textwrap.dedent(body)
    module = {"__name__": "m"}
    exec(compile(source, "m.py", "exec"), module)
    return compile_hook(module["f"].__minifw_hook__, family, source, "m.py", module, layout)


def refusal(body: str, layout=None) -> HookCompileError:
    with pytest.raises(HookCompileError) as info:
        build(body, layout=layout)
    return info.value


def hook(body: str) -> str:
    return '@hook("prerouting", priority=-300)\ndef f(pkt):\n' + textwrap.indent(
        textwrap.dedent(body), "    ")


@pytest.mark.parametrize("body, line, words", [
    ("for i in (1, 2):\n    pass\nreturn ACCEPT", 1, "`for` loops"),
    ("while pkt.dport:\n    return DROP\nreturn ACCEPT", 1, "`while` loops"),
    ("try:\n    return DROP\nexcept Exception:\n    return ACCEPT", 1, "`try`"),
    ("x = 1.5\nreturn ACCEPT", 1, "floats"),
    ("print(pkt.dport)\nreturn ACCEPT", 1, "calls to `print`"),
    ("s = 'abc'\nreturn ACCEPT", 1, "str values"),
    ("x = pkt.raw\nreturn ACCEPT", 1, "pkt.raw"),
    ("if pkt.dport == 1:\n    y = 1\nz = y\nreturn ACCEPT", 3, "not assigned on every path"),
    ("x = pkt.length * pkt.length\nreturn ACCEPT", 1, "exceed 64 bits"),
    ("x = 1 << pkt.dport\nreturn ACCEPT", 1, "left shift"),
    ("x = pkt.mark\nreturn ACCEPT", 1, "sk_buff.mark"),
    ("if pkt.payload[pkt.dport] == 1:\n    return DROP\nreturn ACCEPT", 1, "constant index"),
    ("if pkt.proto < 'tcp':\n    return DROP\nreturn ACCEPT", 1, "== or !="),
    ("return 1", 1, "returns ACCEPT or DROP"),
    ("x = ACCEPT\nreturn x", 1, "can only be returned"),
    ("x = 2 ** 64\nreturn ACCEPT", 1, "does not fit in 64 bits"),
    ("x = pkt\nreturn ACCEPT", 1, "field by field"),
    ("x = 1 if pkt.dport else 2 ** 63 - 1\ny = ~x\nreturn ACCEPT", 2, "64 bits"),
    ("if pkt.dport == 'x' < 3:\n    return DROP\nreturn ACCEPT", 1, "str values"),
    ("if pkt.dport < 'x':\n    return DROP\nreturn ACCEPT", 1, "TypeError"),
])
def test_refusals_name_the_line_and_the_construct(body, line, words):
    err = refusal(hook(body))
    assert isinstance(err, ConfigError)
    assert err.file == "m.py" and err.line == HEAD_LINES + 2 + line, str(err)
    assert words in str(err)


def test_recursion_is_refused():
    err = refusal("def g(p):\n    return g(p)\n\n" + hook("return g(pkt)"))
    assert "recursion" in str(err) and err.line == HEAD_LINES + 2


def test_a_plain_set_of_addresses_is_refused_in_both_paths():
    for test in ("pkt.src in PLAIN", 'pkt.dst in ("198.18.0.1",)', 'pkt.src not in {"fd00::/8"}'):
        source = HEAD + hook(f"if {test}:\n    return DROP\nreturn ACCEPT")
        module = {"__name__": "m"}
        exec(compile(source, "m.py", "exec"), module)
        with pytest.raises(ConfigError) as info:
            check_plain_address_sets(source, "m.py", module)
        assert "Addresses" in str(info.value) and info.value.line == HEAD_LINES + 3
    # ports in a plain set are fine, and so is an Addresses set
    check_plain_address_sets(HEAD + hook("if pkt.dport in {80, 443} or pkt.src in BLOCKED:\n"
                                         "    return DROP\nreturn ACCEPT"), "m.py",
                             {"BLOCKED": Addresses()})


@pytest.mark.parametrize("value, ok", [
    ((1 << 63) - 1, True), (1 << 63, False), (-(1 << 63) + 1, True), (-(1 << 63), False)])
def test_the_edges_of_64_bits(value, ok):
    body = hook(f"x = {value}\nif x == pkt.dport:\n    return DROP\nreturn ACCEPT")
    if ok:
        build(body)
    else:
        assert "64 bits" in str(refusal(body))


def test_products_of_ports_fit_and_of_lengths_do_not():
    build(hook("x = pkt.dport * pkt.sport * 65535\nif x > 5:\n    return DROP\nreturn ACCEPT"))
    refusal(hook("x = pkt.dport * pkt.sport * 65535 * 65535 * 65535\nreturn ACCEPT"))


def test_constants_fold_at_compile_time():
    folded = build(hook("x = (1 << 10) + LIMIT * 1\nif pkt.dport == x:\n    return DROP\n"
                        "return ACCEPT"))
    plain = build(hook("x = 2024\nif pkt.dport == x:\n    return DROP\nreturn ACCEPT"))
    fds = {"f_stats": 3}
    kf = {"bpf_dynptr_from_skb": 1, "bpf_dynptr_size": 2, "bpf_dynptr_slice": 3}
    assert folded.program.asm.assemble(fds, kf) == plain.program.asm.assemble(fds, kf)


def test_the_maps_a_hook_asks_for():
    k = build(hook("""
        HITS.inc()
        pkt.log(f"from {pkt.src}")
        if pkt.src in BLOCKED:
            return DROP
        return ACCEPT"""))
    maps = {m.name: m for m in k.maps}
    assert (maps["f_stats"].kind, maps["f_stats"].value_size, maps["f_stats"].max_entries) == \
        ("percpu_array", 24, 1)  # packets, drops, log lines lost
    assert (maps["HITS"].kind, maps["HITS"].value_size) == ("percpu_array", 8)
    assert maps["log"].kind == "ringbuf"
    assert k.address_maps == {"BLOCKED": {
        "v4_hash": "BLOCKED_v4_hash", "v4_lpm": "BLOCKED_v4_lpm",
        "v6_hash": "BLOCKED_v6_hash", "v6_lpm": "BLOCKED_v6_lpm"}}
    assert (maps["BLOCKED_v4_hash"].key_size, maps["BLOCKED_v4_lpm"].key_size,
            maps["BLOCKED_v6_hash"].key_size, maps["BLOCKED_v6_lpm"].key_size) == (4, 8, 16, 20)
    assert maps["BLOCKED_v4_lpm"].kind == "lpm_trie" and maps["BLOCKED_v4_lpm"].flags == 1
    assert k.counters == ("HITS",)
    assert set(k.program.map_names()) == set(maps) - {"BLOCKED_v6_hash", "BLOCKED_v6_lpm"}
    assert {m.name for m in k.program.maps} == set(k.program.map_names())


def test_a_large_constant_set_becomes_a_hash_map_and_a_small_one_compares_inline():
    small = tuple(range(1000, 1000 + INLINE_IN))
    large = tuple(range(1000, 1001 + INLINE_IN))
    k = build(hook(f"if pkt.dport in {small}:\n    return DROP\nreturn ACCEPT"))
    assert not k.initial and [m.kind for m in k.maps] == ["percpu_array"]
    k = build(hook(f"if pkt.dport in {large}:\n    return DROP\nreturn ACCEPT"))
    (name, entries), = k.initial.items()
    assert sorted(entries) == [(x.to_bytes(8, "little"), b"\x01") for x in large]
    assert {m.name: m.kind for m in k.maps}[name] == "hash"


def test_each_family_has_its_own_program():
    body = hook("if pkt.src == '198.18.0.1' or pkt.src == 'fd00::1':\n    return DROP\n"
                "return ACCEPT")
    v4, v6 = build(body, 4), build(body, 6)
    assert (v4.family, v6.family) == (4, 6)
    assert v4.program.name == "f_v4" and v6.program.name == "f_v6"
    assert v4.program.asm.insns != v6.program.asm.insns


def test_every_instruction_carries_its_python_line():
    k = build(hook("if pkt.dport == 22:\n    return DROP\nreturn ACCEPT"))
    lines = set(k.program.asm.lines())
    assert None not in lines
    assert {HEAD_LINES + 2, HEAD_LINES + 3, HEAD_LINES + 4} <= lines


def test_log_records_decode_to_the_text_python_would_write():
    k = build(hook("pkt.log(f'{pkt.proto} {pkt.src} {pkt.dport} {pkt.dport == 80} "
                   "{pkt.hook}!')\nreturn ACCEPT"))
    fmt, = k.logs
    assert [kind for kind, _ in fmt.parts if kind == "value"] == ["value"] * 5
    record = (struct.pack("<Q", fmt.id) + struct.pack("<q", 6)
              + ipaddress.ip_address("198.18.0.2").packed + b"\0" * 12
              + struct.pack("<q", -(1 << 63)) + struct.pack("<q", 1) + struct.pack("<q", 0))
    assert decode_log(record, k.logs) == ("f", "tcp 198.18.0.2 None True prerouting!")
    with pytest.raises(MinifwError):
        decode_log(record[:-1], k.logs)
    with pytest.raises(MinifwError):
        decode_log(struct.pack("<Q", fmt.id + 1), k.logs)


def test_a_v6_log_record_holds_16_address_bytes():
    fmt = LogFormat(7, "g", (("text", "src "), ("value", "addr6")), 1)
    raw = ipaddress.ip_address("fd00::66").packed
    assert decode_log(struct.pack("<Q", 7) + raw, [fmt]) == ("g", "src fd00::66")


def test_explain_verifier_names_the_python_line():
    log = ("0: R1=ctx() R10=fp0\n0: (bf) r6 = r1\n1: (79) r1 = *(u64 *)(r6 +16)\n"
           "invalid bpf_context access off=16 size=8\nprocessed 2 insns\n")
    text = explain_verifier(log, [10, 12], "hooks.py")
    assert text == ("hooks.py:12: the kernel's verifier refused the compiled hook: "
                    "invalid bpf_context access off=16 size=8")
    assert explain_verifier("", [], "hooks.py").startswith("hooks.py: ")


@pytest.mark.parametrize("item, kind", [
    ("198.18.0.1", "hash"), ("198.18.0.0/32", "hash"), ("198.18.0.0/31", "lpm"),
    ("fd00::1", "hash"), ("fd00::/128", "hash"), ("fd00::/127", "lpm")])
def test_singles_go_to_the_hash_map_and_cidrs_to_the_trie(item, kind):
    family = ipaddress.ip_network(item).version
    found = address_entries([item], family, expiry_ns=5)
    other = "lpm" if kind == "hash" else "hash"
    assert len(found[kind]) == 1 and not found[other]
    key, value = found[kind][0]
    # a trie entry holds its effective expiry, then its own (alone, the two are the same)
    assert value == (struct.pack("<Q", 5) if kind == "hash" else struct.pack("<QQ", 5, 5))
    net = ipaddress.ip_network(item)
    if kind == "lpm":
        assert key == struct.pack("<I", net.prefixlen) + net.network_address.packed
    else:
        assert key == net.network_address.packed
    assert address_entries([item], 10 - family) == {"hash": [], "lpm": []}


def test_addresses_contain_what_their_cidrs_cover_and_no_more():
    a = Addresses("198.18.64.0/18", "fd00::66")
    assert "198.18.64.0" in a and "198.18.127.255" in a
    assert "198.18.63.255" not in a and "198.18.128.0" not in a
    assert ipaddress.ip_address("fd00::66") in a and "fd00::67" not in a
    assert "nonsense" not in a and 5 not in a
    a.add("198.18.0.9")
    a.discard("198.18.64.0/18")
    assert "198.18.64.1" not in a and "198.18.0.9" in a and len(a) == 2
    with pytest.raises(ConfigError):
        Addresses("300.1.1.1")
    c = Counter()
    c.inc()
    c.inc(4)
    assert c.value == 5
