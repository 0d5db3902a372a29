"""DaemonContext, the plug-ins' view of the daemon: the applied ruleset, ops, on_apply."""

import threading

from minifw.daemon.context import DaemonContext
from minifw.model import parse_config
from minifw.store.state import State, Store

CONFIG = '[[rule]]\nid = "ping"\nproto = "icmp"\naction = "drop"\n'


def load(state_dir, text):
    ruleset = parse_config(text, "minifw.toml")
    Store(state_dir).save(State(loaded=True, config="minifw.toml", ruleset=ruleset.to_toml()))


def test_the_ruleset_is_the_applied_one_and_follows_state_json(tmp_path):
    ctx = DaemonContext(tmp_path, firewall=None, runners=lambda: [{"state": "running"}])
    assert ctx.ruleset().rules == ()                  # nothing applied yet
    load(tmp_path, CONFIG)
    assert [r.id for r in ctx.ruleset().rules] == ["ping"]
    load(tmp_path, CONFIG + CONFIG.replace('"ping"', '"pong"'))
    assert [r.id for r in ctx.ruleset().rules] == ["ping", "pong"]
    Store(tmp_path).save(State(loaded=False))
    assert ctx.ruleset().rules == ()
    assert ctx.runners() == [{"state": "running"}]


def test_on_apply_listeners_hear_of_changes_in_a_thread_and_survive_a_bad_one(tmp_path):
    ctx = DaemonContext(tmp_path, firewall=None, runners=list)
    heard, done = [], threading.Event()

    def broken(ruleset):
        raise RuntimeError("a plug-in bug")

    def listener(ruleset):
        heard.append([r.id for r in ruleset.rules])
        done.set()

    ctx.on_apply(broken)
    ctx.on_apply(listener)
    load(tmp_path, CONFIG)
    ctx.applied()
    assert done.wait(5) and heard[-1] == ["ping"]


def test_handle_registers_an_op(tmp_path):
    ctx = DaemonContext(tmp_path, firewall=None, runners=list)

    def op(request, reply):
        return {"echo": request["op"]}

    ctx.handle("x.echo", op)
    assert ctx.handlers["x.echo"]({"op": "x.echo"}, None) == {"echo": "x.echo"}
