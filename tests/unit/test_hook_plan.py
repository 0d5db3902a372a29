"""Hook-function API validation and the chains planned for it, on both kernel paths."""

import struct

import pytest

from minifw import ACCEPT, DROP, hook
from minifw.compile import hooks as plan
from minifw.compile.names import is_declarative
from minifw.compile.nft import build_load
from minifw.errors import ConfigError
from minifw.hooks import collect, make_spec
from minifw.hooks.config import hook_files
from minifw.model import parse_config


def fn(pkt):
    return ACCEPT


def test_decorator_records_spec():
    @hook("input", priority=10, fail="closed", on_error="drop")
    def strict(pkt):
        return DROP
    (spec,) = collect({"strict": strict})
    assert (spec.hook.value, spec.priority, spec.fail, spec.on_error) == ("input", 10,
                                                                           "closed", "drop")
    assert strict(None) is DROP  # the function itself is unchanged


@pytest.mark.parametrize("kwargs, words", [
    (dict(hook_name="sideways"), "unknown hook"),
    (dict(hook_name="input", priority="10"), "priority"),
    (dict(hook_name="input", fail="maybe"), "fail must be"),
    (dict(hook_name="input", on_error="ignore"), "on_error"),
    (dict(hook_name="input", per_flow=True, flow_mark=3), "flow_mark"),
    (dict(hook_name="prerouting", priority=-300, per_flow=True), "above -200"),
    (dict(hook_name="output", priority=-200, per_flow=True), "above -200"),
])
def test_bad_arguments_are_config_errors(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        make_spec(fn, **kwargs)


def test_per_flow_allowed_after_conntrack():
    assert make_spec(fn, "prerouting", -199, per_flow=True).per_flow
    assert make_spec(fn, "input", -300, per_flow=True).per_flow  # conntrack ran at prerouting


def test_same_priority_twice_is_an_error():
    a = hook("input", 5)(lambda p: ACCEPT)
    b = hook("input", 5, name="other")(lambda p: ACCEPT)
    with pytest.raises(ConfigError, match="both at input priority 5"):
        collect({"a": a, "b": b})
    with pytest.raises(ConfigError, match="no @hook"):
        collect({})


def test_chain_names_are_not_declarative_so_loads_leave_them_alone():
    p = plan.Placement(make_spec(fn, "prerouting", -300, name="drop_icmp"), 1000)
    assert p.chain == "hook_q1000_drop_icmp" and not is_declarative(p.chain)
    ruleset = parse_config('[[rule]]\nid="r"\nhook="input"\npriority=5\naction="drop"\n', "t")
    doc = build_load(ruleset, existing_chains=[p.chain, "input_5", "input_7"])
    touched = [c for cmd in doc["nftables"] for verb in cmd.values()
               for c in [verb.get("chain", {}).get("name")] if c]
    assert p.chain not in touched and "input_7" in touched


def test_clash_with_declarative_chain():
    problems = plan.clashes([("prerouting", -300, "hook function 'f'")],
                            plan.ruleset_points([(parse_config(
                                '[[rule]]\nid="r"\nhook="prerouting"\npriority=-300\n'
                                'action="drop"\n', "t").rules[0].hook, -300)]))
    assert problems and "prerouting priority -300" in problems[0]


def test_native_queue_path_json():
    fo = plan.Placement(make_spec(fn, "input", 0, name="a"), 1000)
    fc = plan.Placement(make_spec(fn, "forward", 0, fail="closed", per_flow=True, name="b"), 1001)
    doc = plan.build_install_json([fo, fc], remove=["hook_q999_old"])
    cmds = doc["nftables"]
    assert cmds[1] == {"delete": {"chain": {"family": "inet", "table": "minifw",
                                            "name": "hook_q999_old"}}}
    rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    assert rules[0]["expr"] == [{"counter": None}, {"queue": {"num": 1000, "flags": ["bypass"]}}]
    skip, queue, save = rules[1:]
    assert skip["chain"] == "hook_q1001_b" and skip["expr"][-1] == {"accept": None}
    assert skip["expr"][0]["match"]["left"] == {"&": [{"ct": {"key": "mark"}}, 0x20000000]}
    assert queue["expr"] == [{"counter": None}, {"queue": {"num": 1001}}]  # fail-closed
    assert save["chain"] == "flow_q1001_b"
    chains = {c["add"]["chain"]["name"]: c["add"]["chain"] for c in cmds
              if "chain" in c.get("add", {})}
    assert chains["flow_q1001_b"]["prio"] == 1 and chains["hook_q1001_b"]["hook"] == "forward"


def _attrs(data: bytes):
    out, off = [], 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        out.append((kind & 0x3FFF, data[off + 4:off + length]))
        off += (length + 3) & ~3
    return out


def test_xt_path_batch_carries_nfqueue_v3_info():
    p = plan.Placement(make_spec(fn, "prerouting", -300, name="x"), 1234)
    batch = plan.build_install_batch([p])
    raw = batch.to_bytes()
    assert raw.count(b"NFQUEUE\0") == 1 and b"hook_q1234_x\0" in raw
    info = struct.pack("=HHH", 1234, 1, 1) + b"\0\0"  # queue, total, flags=bypass
    assert info in raw
    closed = plan.build_install_batch([plan.Placement(
        make_spec(fn, "prerouting", -300, fail="closed", name="x"), 1234)]).to_bytes()
    assert struct.pack("=HHH", 1234, 1, 0) + b"\0\0" in closed
    # BATCH_BEGIN, NEWTABLE, NEWCHAIN, NEWRULE, BATCH_END with consecutive sequence numbers
    off, kinds, seqs = 0, [], []
    while off < len(raw):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", raw, off)
        kinds.append(kind)
        seqs.append(seq)
        off += length
    assert kinds == [0x10, 0xA00, 0xA03, 0xA06, 0x11]
    assert seqs == list(range(seqs[0], seqs[0] + 5))


def test_hook_files_in_config(tmp_path):
    text = '[[hook]]\nfile = "h.py"\n[[hook]]\nfile = "/abs/g.py"\n'
    assert hook_files(text, "/etc/minifw/minifw.toml") == ["/etc/minifw/h.py", "/abs/g.py"]
    parse_config(text, "t")  # the rule parser accepts [[hook]]
    with pytest.raises(ConfigError, match="unknown key"):
        hook_files('[[hook]]\nfile="a.py"\nprio=3\n', "c.toml")
    with pytest.raises(ConfigError, match="'file'"):
        hook_files('[[hook]]\nname="a"\n'.replace("name", "file") .replace('"a"', "3"), "c.toml")


def test_pure_modules_do_no_io():
    import ast
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2] / "src" / "minifw"
    files = [*root.glob("netlink/*.py"), *root.glob("hooks/*.py"), root / "compile/hooks.py"]
    forbidden = {"socket", "ctypes", "subprocess", "asyncio", "os"}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [(node.module or "").split(".")[0]]
            assert not forbidden & set(names), f"{f.name} imports {forbidden & set(names)}"


def test_up_refuses_hook_file_clashing_with_a_rule(tmp_path):
    from minifw.runners.supervise import validate
    f = tmp_path / "h.py"
    f.write_text("from minifw import hook, ACCEPT\n"
                 "@hook('input', priority=5)\ndef h(pkt):\n    return ACCEPT\n")
    clash = parse_config('[[rule]]\nid="r"\nhook="input"\npriority=5\naction="drop"\n', "t")
    with pytest.raises(ConfigError, match="input priority 5"):
        validate([str(f)], clash)
    validate([str(f)], parse_config('[[rule]]\nid="r"\nhook="input"\npriority=6\n'
                                    'action="drop"\n', "t"))
    with pytest.raises(ConfigError, match="both at input priority 5"):
        validate([str(f), str(_copy(f))], clash.without("r"))
    bad = tmp_path / "bad.py"
    bad.write_text("import nonexistent_module_for_test\n")
    with pytest.raises(ConfigError, match="ModuleNotFoundError"):
        validate([str(bad)], clash)


def _copy(path):
    other = path.with_name("h2.py")
    other.write_text(path.read_text())
    return other
