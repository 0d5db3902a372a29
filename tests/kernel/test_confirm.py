"""Confirm or roll back, on the real kernel with real traffic: a lockout applied with
``--confirm`` whose session is killed (the CLI's whole process group, SIGKILL, as a dropped SSH
session) comes back by itself; ``confirm`` keeps a change, ``rollback`` undoes it at once, a
second change waits, bans and imports roll back element by element, and an overdue change
whose timer died is rolled back by the next command, ``up`` at boot included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time

from kit import SERVER4, dmesg_count, pair, reach, ruleset_shape, serve, up, wait_until, \
    write_config
from minifw.compile.sets import kernel_name
from minifw.lab import MINIFW

GOOD = """
[policy]
input = "drop"

[[rule]]
id = "admin"
proto = "tcp"
dport = 80
action = "accept"

[[set]]
name = "blocked"
elements = ["198.18.9.9"]
"""

# The admin's port (80 here, as 22 on a real host) has no rule under a drop policy.
LOCKOUT = """
[policy]
input = "drop"

[[rule]]
id = "other"
proto = "tcp"
dport = 81
action = "accept"
"""


def shape(host, timers: bool = True) -> list:
    """The ruleset as ``nft -j`` lists it, counters zeroed, handles left out and objects in a
    stable order: a rebuilt rule gets a new handle (the kernel never reuses one), and a
    re-created chain is listed after the kept ones. ``timers=False``: elements' remaining
    timeouts left out too (they run down meanwhile)."""
    dropped = {"handle"} if timers else {"handle", "timeout", "expires"}

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in dropped}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    items = [strip(o) for o in ruleset_shape(host)["nftables"] if "metainfo" not in o]
    return sorted(items, key=lambda o: json.dumps(o, sort_keys=True))


def files(host, config) -> dict:
    return {"config": config.read_bytes(),
            "state": (host.state_dir / "state.json").read_bytes()}


def pending_file(host) -> dict | None:
    path = host.state_dir / "pending.json"
    return json.loads(path.read_text()) if path.exists() else None


def status(host) -> dict:
    return json.loads(host.minifw("status", "--json").stdout)


def set_elements(host) -> set[str]:
    """The IPv4 elements of set ``blocked`` in the kernel (addresses and CIDRs)."""
    found = set()
    for kset in (kernel_name("blocked", 4, False), kernel_name("blocked", 4, True)):
        out = host.run(["nft", "-j", "list", "set", "inet", "minifw", kset]).stdout
        for e in json.loads(out)["nftables"][1]["set"].get("elem", []):
            e = e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
            found.add(f"{e['prefix']['addr']}/{e['prefix']['len']}" if isinstance(e, dict)
                      else e)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def start(lab):
    server, client = pair(lab)
    serve(server, tcp=[80, 81])
    config = up(server, GOOD)
    reach(client, "tcp", SERVER4, 80, expect="open")
    return server, client, config


def test_a_lockout_whose_session_is_killed_is_rolled_back(lab):
    server, client, config = start(lab)
    before, saved = shape(server), files(server, config)
    lockout = write_config(lab, LOCKOUT, "lockout.toml")
    logged = dmesg_count("minifw: rolled back reload (not confirmed within 3 s)")
    # The admin's shell: its own session and process group, as sshd gives it; the command
    # goes in, then the session hangs as a lockout leaves it, and its whole group is killed.
    env = dict(os.environ, MINIFW_STATE_DIR=str(server.state_dir))
    shell = subprocess.Popen(
        ["ip", "netns", "exec", server.ns, "sh", "-c",
         f"'{MINIFW}' reload --config '{lockout}' --confirm 3 >'{lab.tmp}/out' 2>&1; "
         "echo done >>'{lab.tmp}/out'; exec sleep 60".replace("{lab.tmp}", str(lab.tmp))],
        env=env, start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: (lab.tmp / "out").exists() and "done" in (lab.tmp / "out").read_text(),
                   what="the reload")
        out = (lab.tmp / "out").read_text()
        assert "will be rolled back in 3 s unless 'minifw confirm' runs" in out, out
        timer = pending_file(server)["timer"]
        reach(client, "tcp", SERVER4, 80, expect="timeout")   # locked out
        os.killpg(shell.pid, signal.SIGKILL)                  # the session drops
        shell.wait(timeout=10)
        assert alive(timer), "the timer died with the session's process group"
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait(timeout=10)
    wait_until(lambda: pending_file(server) is None, timeout=20, what="the rollback")
    assert shape(server) == before
    assert files(server, config) == saved
    reach(client, "tcp", SERVER4, 80, expect="open")
    wait_until(lambda: not alive(timer), what="the timer's exit")
    st = status(server)
    assert st["pending"] is None
    assert st["rolled_back"]["op"] == "reload"
    assert st["rolled_back"]["why"] == "not confirmed within 3 s"
    assert dmesg_count("minifw: rolled back reload (not confirmed within 3 s)") == logged + 1
    text = server.minifw("status").stdout
    assert "rolled back: reload at " in text and "(not confirmed within 3 s)" in text


def test_confirm_keeps_the_change_and_writes_the_config(lab):
    server, client, config = start(lab)
    saved = config.read_bytes()
    out = server.minifw("add", "--id", "web81", "--proto", "tcp", "--dport", "81",
                        "--action", "accept", "--confirm", "60").stdout
    assert "saved to" in out and "at 'minifw confirm'" in out
    assert "will be rolled back in 60 s unless 'minifw confirm' runs" in out
    assert config.read_bytes() == saved                      # the file waits for confirm
    reach(client, "tcp", SERVER4, 81, expect="open")
    st = status(server)
    assert st["pending"]["op"] == "add" and st["pending"]["seconds"] == 60
    assert 0 < st["pending"]["seconds_left"] <= 60
    assert "pending: add rolls back in" in server.minifw("status").stdout
    timer = pending_file(server)["timer"]
    assert alive(timer)
    done = server.minifw("confirm")
    assert "confirmed the add" in done.stdout
    assert 'id = "web81"' in config.read_text() and config.read_bytes() != saved
    wait_until(lambda: not alive(timer), what="the timer's exit")
    assert status(server)["pending"] is None
    reach(client, "tcp", SERVER4, 81, expect="open")
    again = server.minifw("confirm", check=False)
    assert again.returncode == 1
    assert again.stderr == "error: nothing is waiting for confirmation\n"


def test_rollback_at_once_and_a_second_change_waits(lab):
    server, client, config = start(lab)
    before, saved = shape(server), files(server, config)
    lockout = write_config(lab, LOCKOUT, "lockout.toml")
    server.minifw("reload", "--config", str(lockout), "--confirm", "60")
    reach(client, "tcp", SERVER4, 80, expect="timeout")
    during = shape(server)
    for argv in (["add", "--proto", "tcp", "--dport", "82", "--action", "accept"],
                 ["reload"], ["down"], ["delete", "other"],
                 ["ban", "198.18.5.5", "--confirm", "30"], ["set", "flush", "blocked"]):
        refused = server.minifw(*argv, check=False)
        assert refused.returncode == 1, argv
        lines = refused.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: a reload is waiting for "
                                                       "confirmation ("), (argv, lines)
        assert "run 'minifw confirm' to keep it or 'minifw rollback' to undo it" in lines[0]
    assert shape(server) == during
    # a ban feed is exempt: its ban applies now and stays after the rollback
    server.minifw("ban", "198.18.5.5")
    out = server.minifw("rollback").stdout
    assert "rolled back the reload" in out
    assert files(server, config) == saved
    after = shape(server)
    assert after != before and "198.18.5.5" in set_elements(server)
    server.minifw("unban", "198.18.5.5")
    assert shape(server) == before
    reach(client, "tcp", SERVER4, 80, expect="open")
    assert status(server)["rolled_back"]["why"] == "by 'minifw rollback'"
    nothing = server.minifw("rollback", check=False)
    assert nothing.returncode == 1 and nothing.stderr.startswith("error: nothing is waiting")


def test_bans_and_imports_roll_back_element_by_element(lab):
    server, client, config = start(lab)
    server.minifw("ban", "198.18.4.4", "--timeout", "1h")
    server.minifw("ban", "198.18.6.0/24")
    before = set_elements(server)
    shape_before = shape(server, timers=False)
    # re-ban one (it loses its timeout), ban a new one, unban another, all on confirmation
    server.minifw("ban", "198.18.4.4", "198.18.0.2", "--confirm", "60")
    reach(client, "tcp", SERVER4, 80, expect="timeout")        # the client is banned now
    server.minifw("rollback")
    reach(client, "tcp", SERVER4, 80, expect="open")
    listed = json.loads(server.minifw("set", "list", "blocked", "--json").stdout)["items"]
    left = {i["element"]: i["expires_in"] for i in listed}
    assert set(left) == {"198.18.9.9", "198.18.4.4", "198.18.6.0/24"}
    assert 3000 < left["198.18.4.4"] <= 3600                    # its timeout is back
    server.minifw("unban", "198.18.6.0/24", "--confirm", "60")
    server.minifw("rollback")
    items = lab.tmp / "feed.txt"
    items.write_text("198.18.0.2\n198.18.7.7\n198.18.8.0/24\n")
    server.minifw("set", "import", "blocked", str(items), "--confirm", "60")
    reach(client, "tcp", SERVER4, 80, expect="timeout")
    server.minifw("rollback")
    assert set_elements(server) == before
    assert shape(server, timers=False) == shape_before
    reach(client, "tcp", SERVER4, 80, expect="open")


def test_a_reboot_while_pending_and_an_overdue_change_roll_back(lab):
    server, client, config = start(lab)
    before, saved = shape(server), files(server, config)
    # the lockout is written over the loaded config in place, as an admin edits it
    config.write_text(LOCKOUT)
    edited = config.read_bytes()
    server.minifw("reload", "--confirm", "60")
    pending = pending_file(server)
    os.kill(pending["timer"], signal.SIGKILL)                  # a reboot: no timer left...
    reach(client, "tcp", SERVER4, 80, expect="timeout")
    server.run(["nft", "delete", "table", "inet", "minifw"])   # ...and an empty kernel
    booted = server.minifw("up", "--config", str(config), check=False)
    assert booted.returncode == 1
    lines = booted.stderr.splitlines()
    assert len(lines) == 1 and "holds the reload that was rolled back at" in lines[0], lines
    assert status(server)["rolled_back"]["why"] == "its timer was gone: a reboot or a crash"
    assert shape(server) == before
    assert config.read_bytes() == edited
    assert (server.state_dir / "state.json").read_bytes() == saved["state"]
    reach(client, "tcp", SERVER4, 80, expect="open")
    # a change made while the rollback was due: the next writer rolls back first
    config.write_bytes(saved["config"])
    server.minifw("add", "--proto", "tcp", "--dport", "81", "--action", "accept",
                  "--id", "web81", "--confirm", "1")
    pending = pending_file(server)
    os.kill(pending["timer"], signal.SIGKILL)
    wait_until(lambda: time.time() > pending["deadline"] + 0.1, what="the deadline")
    server.minifw("ban", "198.18.3.3")
    assert pending_file(server) is None
    assert "web81" not in json.loads(server.minifw("list", "--json").stdout)["rules"].__repr__()
    assert config.read_bytes() == saved["config"]


HOOK = """
from minifw import ACCEPT, DROP, hook

@hook("input", priority=-10)
def shut(pkt):
    return DROP if pkt.proto == "tcp" and pkt.dport == 80 else ACCEPT
"""


def test_a_hook_runner_the_change_started_goes_with_the_rollback(lab):
    server, client, config = start(lab)
    before, saved = shape(server), files(server, config)
    (lab.tmp / "shut.py").write_text(textwrap.dedent(HOOK))
    hooked = write_config(lab, GOOD + '\n[[hook]]\nfile = "shut.py"\n', "hooked.toml")
    try:
        server.minifw("reload", "--config", str(hooked), "--confirm", "60")
        runners = [json.loads(p.read_text())["pid"]
                   for p in (server.state_dir / "hooks").glob("runner-*.json")]
        assert runners and all(alive(pid) for pid in runners)
        reach(client, "tcp", SERVER4, 80, expect="timeout")   # the hook function drops it
        server.minifw("rollback")
        wait_until(lambda: not any(alive(pid) for pid in runners), what="the runner's end")
        assert shape(server) == before
        assert files(server, config) == saved
        reach(client, "tcp", SERVER4, 80, expect="open")
        assert status(server)["hooks"] == []
    finally:
        for rec in (server.state_dir / "hooks").glob("runner-*.json"):
            try:
                os.kill(json.loads(rec.read_text())["pid"], signal.SIGKILL)
            except (ProcessLookupError, ValueError, KeyError):
                pass
