"""Python hook functions on real packets, in namespaces: the seed's demo, interleaving with
declarative rules, exceptions, kill -9 (fail-open / fail-closed) and restart, per-flow mode."""

import itertools
import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from minifw.lab import MINIFW, Lab

from kit import LAB_PREFIX, ruleset_shape

SEED_HOOKS = str(Path(__file__).resolve().parents[2] / "examples" / "seed_hooks.py")
_n = itertools.count()


@pytest.fixture
def hqlab():
    if os.geteuid() != 0:
        pytest.skip("kernel tests need root")
    with Lab(prefix=f"{LAB_PREFIX}q{os.getpid() % 10000}x{next(_n)}") as lab:
        try:
            yield lab
        finally:  # runners outlive `ip netns del`; end every one this lab started
            for host in lab.hosts.values():
                for rec in (host.state_dir / "hooks").glob("runner-*.json"):
                    try:
                        os.kill(json.loads(rec.read_text())["pid"], signal.SIGKILL)
                    except (ProcessLookupError, ValueError, KeyError):
                        pass


def two_hosts(lab):
    server, client, blocked = lab.seed_topology()
    server.serve_http(80)
    return server, client, blocked


def write(lab, name, body):
    lab.tmp.mkdir(parents=True, exist_ok=True)
    path = lab.tmp / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def start_runner(host, file, env=None):
    """`minifw run FILE` in the host's namespace; returns once its chains are in place."""
    host.state_dir.mkdir(parents=True, exist_ok=True)
    err = open(host.lab.tmp / f"run-{time.monotonic_ns()}.err", "w+")
    proc = subprocess.Popen(["ip", "netns", "exec", host.ns, MINIFW, "run", file],
                            env=dict(os.environ, MINIFW_STATE_DIR=str(host.state_dir),
                                     **(env or {})),
                            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    host.lab._procs.append(proc)
    record = host.state_dir / "hooks" / f"runner-{proc.pid}.json"
    end = time.monotonic() + 15
    while not record.exists():
        if proc.poll() is not None:
            err.seek(0)
            raise AssertionError(f"minifw run exited {proc.returncode}: {err.read()}")
        assert time.monotonic() < end, "runner did not become ready"
        time.sleep(0.05)
    proc.err = err
    return proc


def stop_runner(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    proc.err.seek(0)
    return proc.err.read()


def chains(host):
    listing = json.loads(host.run("nft -j list chains").stdout)["nftables"]
    return {c["chain"]["name"]: c["chain"] for c in listing if "chain" in c}


def counters(host, chain):
    listing = json.loads(host.run(f"nft -j list chain inet minifw {chain}").stdout)["nftables"]
    out = []
    for item in listing:
        if "rule" in item:
            out.append(sum(e["counter"]["packets"] for e in item["rule"]["expr"]
                           if isinstance(e, dict) and "counter" in e))
    return out


def lines(path):
    p = Path(path)
    return p.read_text().split() if p.exists() else []


def seed_on_queue(lab):
    """The seed's hooks (kernel ones in examples/) as queue functions."""
    return write(lab, "seed_hooks.py",
                 Path(SEED_HOOKS).read_text().replace('where="kernel"', 'where="queue"'))


def test_seed_hooks_in_python_with_dmesg(hqlab):
    server, client, blocked = two_hosts(hqlab)
    assert client.ping("198.18.0.1")
    seed = seed_on_queue(hqlab)
    proc = start_runner(server, seed)
    names = chains(server)
    assert names["hook_q1000_drop_icmp"]["prio"] == -300
    assert names["hook_q1001_drop_blocked_host"]["prio"] == -299
    assert not client.ping("198.18.0.1")                       # ICMP dropped by a hook
    assert client.http_get("http://198.18.0.1/") is not None    # TCP passes both hooks
    assert blocked.tcp_result("198.18.2.1", 80) == "timeout"    # second hook drops one source
    assert client.tcp_ok("198.18.0.1", 80)
    dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    assert f"minifw[{proc.pid}]: drop_icmp: Drop ICMP packet" in dmesg
    assert f"minifw[{proc.pid}]: drop_blocked_host: Drop packet from 198.18.2.2" in dmesg
    twice = server.minifw("run", seed, check=False, timeout=20)  # same places: refused
    assert twice.returncode == 1 and "prerouting priority -300" in twice.stderr
    status = json.loads(server.minifw("status", "--json").stdout)
    assert {(h["function"], h["queue"], h["fail"]) for h in status["hooks"]} == {
        ("drop_icmp", 1000, "open"), ("drop_blocked_host", 1001, "open")}
    log = stop_runner(proc)
    assert "Drop ICMP packet" in log                            # the runner's own log too
    assert server.run("nft -j list ruleset").stdout.count('"table"') == 0
    assert client.ping("198.18.0.1")


def test_hooks_interleave_with_declarative_rules(hqlab):
    server, client, _ = two_hosts(hqlab)
    for port in (81, 82):
        server.popen(["python3", "-m", "http.server", "-b", "0.0.0.0", str(port)])
        server.wait_listening(port)
    seen = hqlab.tmp / "seen"
    hooks = write(hqlab, "order.py", f"""
        from minifw import hook, ACCEPT
        @hook("prerouting", priority=-300)
        def watch(pkt):
            if pkt.proto == "tcp" and pkt.dport in (80, 81, 82):
                open({str(seen)!r}, "a").write(f"{{pkt.dport}}\\n")
            return ACCEPT
        """)
    config = write(hqlab, "rules.toml", """
        [[rule]]
        id = "early-drop-81"
        hook = "prerouting"
        priority = -400
        proto = "tcp"
        dport = 81
        action = "drop"

        [[rule]]
        id = "late-drop-82"
        hook = "prerouting"
        priority = -200
        proto = "tcp"
        dport = 82
        action = "drop"
        """)
    server.minifw("up", "--config", config)
    proc = start_runner(server, hooks)
    assert client.tcp_ok("198.18.0.1", 80)
    assert client.tcp_result("198.18.0.1", 81, timeout=1) == "timeout"
    assert client.tcp_result("198.18.0.1", 82, timeout=1) == "timeout"
    ports = set(lines(seen))
    assert "80" in ports and "82" in ports   # accept by the hook hands on to priority -200
    assert "81" not in ports                 # a drop at -400 ends the packet's trip
    # reload and add replace only declarative chains; the hook chain survives them
    server.minifw("reload")
    server.minifw("add", "--id", "extra", "--hook", "input", "--proto", "udp",
                  "--action", "drop", "--runtime")
    assert "hook_q1000_watch" in chains(server)
    assert client.tcp_result("198.18.0.1", 82, timeout=1) == "timeout"
    # a declarative chain at the hook's (hook, priority) is refused, and nothing changes
    clash = server.minifw("add", "--id", "clash", "--hook", "prerouting", "--priority", "-300",
                          "--action", "drop", "--runtime", check=False)
    assert clash.returncode == 1 and "priority -300" in clash.stderr
    assert "prerouting_m300" not in chains(server)
    # and a hook function at a declarative chain's place is refused at start
    bad = write(hqlab, "bad.py", """
        from minifw import hook, ACCEPT
        @hook("prerouting", priority=-200)
        def late(pkt):
            return ACCEPT
        """)
    out = server.minifw("run", bad, check=False)
    assert out.returncode == 1 and "prerouting_m200" in out.stderr
    stop_runner(proc)
    server.minifw("down")


def test_exception_in_hook_applies_on_error_and_keeps_running(hqlab):
    server, client, _ = two_hosts(hqlab)
    server.popen(["python3", "-m", "http.server", "-b", "0.0.0.0", "81"])
    server.wait_listening(81)
    states = hqlab.tmp / "ct"
    hooks = write(hqlab, "boom.py", f"""
        from minifw import hook, ACCEPT
        @hook("input", priority=0)
        def lenient(pkt):
            open({str(states)!r}, "a").write(f"{{pkt.ct_state}}\\n")
            if pkt.proto == "tcp" and pkt.dport == 80:
                1 / 0
            return ACCEPT
        @hook("input", priority=1, on_error="drop")
        def strict(pkt):
            if pkt.proto == "tcp" and pkt.dport == 81:
                raise RuntimeError("strict hook failed")
            return "not a verdict" if pkt.proto == "udp" else ACCEPT
        """)
    proc = start_runner(server, hooks)
    assert client.tcp_ok("198.18.0.1", 80)          # ZeroDivisionError -> on_error accept
    assert client.tcp_result("198.18.0.1", 81, timeout=1) == "timeout"  # -> on_error drop
    assert client.ping("198.18.0.1")                # still serving afterwards
    assert set(lines(states)) == {"None"}           # no conntrack on queued packets here
    log = stop_runner(proc)
    assert "ZeroDivisionError" in log and "Traceback" in log and "RuntimeError" in log


@pytest.mark.parametrize("fail", ["open", "closed"])
def test_kill9_fail_mode_and_restart(hqlab, fail):
    server, client, _ = two_hosts(hqlab)
    hooks = write(hqlab, "icmp.py", f"""
        from minifw import hook, ACCEPT, DROP
        @hook("prerouting", priority=-300, fail={fail!r})
        def drop_icmp(pkt):
            return DROP if pkt.proto == "icmp" else ACCEPT
        """)
    proc = start_runner(server, hooks)
    assert not client.ping("198.18.0.1") and client.tcp_ok("198.18.0.1", 80)
    proc.kill()
    proc.wait(timeout=5)
    assert "hook_q1000_drop_icmp" in chains(server)   # the chain outlives the runner
    if fail == "open":   # bypass: no listener, packets go on
        assert client.tcp_ok("198.18.0.1", 80) and client.ping("198.18.0.1")
    else:                # no bypass: no listener, packets are dropped
        assert client.tcp_result("198.18.0.1", 80, timeout=1) == "timeout"
    dead = server.minifw("status", "--json", check=False)   # a dead runner fails status
    assert dead.returncode == 1 and "is not running" in dead.stderr
    status = json.loads(dead.stdout)
    assert [h["running"] for h in status["hooks"]] == [False]
    assert [p["functions"] for p in status["hook_problems"]] == [["drop_icmp"]]
    proc2 = start_runner(server, hooks)               # restart resumes, replacing stale chains
    assert client.tcp_ok("198.18.0.1", 80) and not client.ping("198.18.0.1")
    hook_chains = [n for n in chains(server) if n.startswith("hook_q")]
    assert hook_chains == ["hook_q1000_drop_icmp"]
    assert [r.name for r in (server.state_dir / "hooks").glob("*.json")] == [
        f"runner-{proc2.pid}.json"]
    stop_runner(proc2)


FLOOD = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"stall", ("198.18.0.1", 7777))     # the hook sleeps on this one
time.sleep(0.2)
for i in range(4000):                        # meanwhile the socket buffer overflows
    s.sendto(b"x" * 64, ("198.18.0.1", 7778))
"""


@pytest.mark.parametrize("fail", ["open", "closed"])
def test_enobufs_recovery_keeps_giving_verdicts(hqlab, fail):
    """A stalled hook, a tiny receive buffer and a flood: the kernel cannot deliver every
    queued packet (ENOBUFS); the runner grows its buffer, carries on, and later traffic flows
    (with fail-closed only a verdict from the runner lets a packet through)."""
    server, client, _ = two_hosts(hqlab)
    seen = hqlab.tmp / "seen"
    hooks = write(hqlab, "stall.py", f"""
        import time
        from minifw import hook, ACCEPT, DROP
        stalled = []
        @hook("input", priority=0, fail={fail!r})
        def slow_once(pkt):
            if pkt.proto == "udp" and pkt.dport == 7777 and not stalled:
                stalled.append(1)
                time.sleep(1.5)
            if pkt.proto == "tcp" and pkt.dport == 80:
                open({str(seen)!r}, "a").write("x")
            return DROP if pkt.proto == "icmp" else ACCEPT
        """)
    proc = start_runner(server, hooks, env={"MINIFW_HOOK_RCVBUF": "8192"})
    assert client.tcp_ok("198.18.0.1", 80)
    client.run(["python3", "-c", FLOOD], timeout=20)
    time.sleep(1.6)                                  # the stall ends; the runner catches up
    before = len(Path(seen).read_text())
    assert client.tcp_ok("198.18.0.1", 80)           # verdicts flow again
    assert client.tcp_ok("198.18.0.1", 80)
    assert not client.ping("198.18.0.1")             # and the hook still decides
    assert len(Path(seen).read_text()) > before      # ... these very packets
    log = stop_runner(proc)
    assert "ENOBUFS #1" in log, log


def rule_and_hook(file):
    """A config with one declarative rule and one [[hook]] file."""
    return f"""
        [[rule]]
        id = "no-telnet"
        hook = "input"
        proto = "tcp"
        dport = 23
        action = "drop"

        [[hook]]
        file = "{file}"
        """


def test_up_runs_config_hooks_status_and_down(hqlab):
    server, client, _ = two_hosts(hqlab)
    seed_on_queue(hqlab)
    config = write(hqlab, "minifw.toml", rule_and_hook("seed_hooks.py"))
    out = server.minifw("up", "--config", config)
    assert "1 hook files" in out.stdout
    assert not client.ping("198.18.0.1") and client.tcp_ok("198.18.0.1", 80)
    status = json.loads(server.minifw("status", "--json").stdout)
    assert status["loaded"] and {h["function"] for h in status["hooks"] if h["running"]} == {
        "drop_icmp", "drop_blocked_host"}
    assert "hook drop_icmp at prerouting/-300" in server.minifw("status").stdout
    pid = status["hooks"][0]["pid"]
    os.kill(pid, signal.SIGKILL)                   # `up` again restarts a dead runner
    time.sleep(0.2)
    assert "restarted 1 hook runners" in server.minifw("up", "--config", config).stdout
    assert not client.ping("198.18.0.1")
    server.minifw("down")
    assert client.ping("198.18.0.1")
    assert server.run("nft -j list ruleset").stdout.count('"table"') == 0
    assert json.loads(server.minifw("status", "--json").stdout)["hooks"] == []


def test_per_flow_later_packets_skip_python(hqlab):
    server, client, _ = two_hosts(hqlab)
    seen = hqlab.tmp / "seen"
    hooks = write(hqlab, "flow.py", f"""
        from minifw import hook, ACCEPT, DROP
        @hook("input", priority=0, per_flow=True)
        def first_only(pkt):
            if pkt.proto == "tcp":
                open({str(seen)!r}, "a").write(f"{{pkt.dport}}\\n")
                if pkt.dport == 81:
                    return DROP
            return ACCEPT
        """)
    proc = start_runner(server, hooks)
    sink = ("import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,"
            "socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',5001));s.listen()\n"
            "c,_=s.accept()\nn=0\nwhile (d:=c.recv(65536)): n+=len(d)\nprint(n)\n")
    sink_proc = subprocess.Popen(["ip", "netns", "exec", server.ns, "python3", "-c", sink],
                                 stdout=subprocess.PIPE, text=True)
    hqlab._procs.append(sink_proc)
    server.wait_listening(5001)
    send = ("import socket\ns=socket.create_connection(('198.18.0.1',5001))\n"
            "for _ in range(400): s.sendall(b'x'*1000)\ns.close()\n")
    client.run(["python3", "-c", send], timeout=20)
    assert sink_proc.wait(timeout=10) == 0 and sink_proc.stdout.read().strip() == "400000"
    stream = [p for p in lines(seen) if p == "5001"]
    assert stream == ["5001"]            # only the SYN reached Python
    skipped, queued = counters(server, "hook_q1000_first_only")
    assert skipped >= 20                 # the rest of the stream skipped the queue in-kernel
    # a dropped first packet is never cached: each new try reaches Python again
    assert client.tcp_result("198.18.0.1", 81, timeout=0.5) == "timeout"
    assert client.tcp_result("198.18.0.1", 81, timeout=0.5) == "timeout"
    assert lines(seen).count("81") >= 2
    stop_runner(proc)
    bad = write(hqlab, "early.py", """
        from minifw import hook, ACCEPT
        @hook("prerouting", priority=-300, per_flow=True)
        def early(pkt):
            return ACCEPT
        """)
    out = server.minifw("run", bad, check=False)
    assert out.returncode == 1 and "above -200" in out.stderr


def test_hook_demo_runs(hqlab):
    from minifw.lab import demo_hooks
    assert demo_hooks.run()


ICMP_HOOK = """
    from minifw import ACCEPT, DROP, hook

    @hook("prerouting", priority=-300)
    def gate(pkt):
        return DROP if pkt.proto == "icmp" else ACCEPT
    """
TCP_HOOK = """
    from minifw import ACCEPT, DROP, hook

    @hook("prerouting", priority=-300)
    def gate(pkt):
        return DROP if pkt.proto == "tcp" and pkt.dport == 80 else ACCEPT
    """


def runner_pids(host):
    status = json.loads(host.minifw("status", "--json").stdout)
    return {h["pid"] for h in status["hooks"] if h["running"]}


def test_reload_brings_hook_runners_in_line(hqlab):
    server, client, _ = two_hosts(hqlab)
    write(hqlab, "gate.py", ICMP_HOOK)
    with_hook = rule_and_hook("gate.py")
    config = write(hqlab, "minifw.toml", with_hook)
    server.minifw("up", "--config", config)
    assert not client.ping("198.18.0.1") and client.tcp_ok("198.18.0.1", 80)
    (pid,) = runner_pids(server)

    out = server.minifw("reload").stdout                # nothing changed: the runner stays
    assert "hook runners" not in out and runner_pids(server) == {pid}

    write(hqlab, "gate.py", TCP_HOOK)                   # the file changed: it restarts
    assert "restarted 1 hook runners" in server.minifw("reload").stdout
    (pid2,) = runner_pids(server)
    assert pid2 != pid and not hookstate_alive(pid)
    assert client.ping("198.18.0.1") and not client.tcp_ok("198.18.0.1", 80)

    assert "restarted 1 hook runners" in server.minifw("reload", "--restart-hooks").stdout
    (pid3,) = runner_pids(server)
    assert pid3 != pid2

    # a broken hook file: one error line, and the runner, the ruleset and the state stay
    before = (ruleset_shape(server), (server.state_dir / "state.json").read_text())
    write(hqlab, "gate.py", TCP_HOOK + "    def broken(:\n")
    bad = server.minifw("reload", check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1
    assert "gate.py" in bad.stderr and "syntax" in bad.stderr
    assert runner_pids(server) == {pid3}
    assert (ruleset_shape(server), (server.state_dir / "state.json").read_text()) == before
    write(hqlab, "gate.py", TCP_HOOK)

    # the [[hook]] entry removed: its runner stops and its chain goes; the rules stay
    write(hqlab, "minifw.toml", with_hook.split("[[hook]]")[0])
    assert "stopped 1 hook runners" in server.minifw("reload").stdout
    assert runner_pids(server) == set() and not hookstate_alive(pid3)
    assert not [c for c in chains(server) if c.startswith("hook_")]
    assert "input_0" in chains(server)
    assert client.tcp_ok("198.18.0.1", 80)

    # and added back: it starts
    write(hqlab, "minifw.toml", with_hook)
    assert "started 1 hook runners" in server.minifw("reload").stdout
    assert len(runner_pids(server)) == 1 and not client.tcp_ok("198.18.0.1", 80)
    server.minifw("down")
    assert client.tcp_ok("198.18.0.1", 80)


def test_reload_moves_a_rule_chain_onto_a_dropped_hook_priority(hqlab):
    """A rule chain may take the (hook, priority) of a hook function the same reload drops."""
    server, client, _ = two_hosts(hqlab)
    write(hqlab, "gate.py", ICMP_HOOK)
    config = write(hqlab, "minifw.toml", '[[hook]]\nfile = "gate.py"\n')
    server.minifw("up", "--config", config)
    assert not client.ping("198.18.0.1")
    write(hqlab, "minifw.toml", """
        [[rule]]
        id = "no-web"
        hook = "prerouting"
        priority = -300
        proto = "tcp"
        dport = 80
        action = "drop"
        """)
    assert "stopped 1 hook runners" in server.minifw("reload").stdout
    assert client.ping("198.18.0.1") and not client.tcp_ok("198.18.0.1", 80)
    assert chains(server)["prerouting_m300"]["prio"] == -300


def hookstate_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("path", ["C (hooks/_hot.c)", "pure Python"])
def test_one_hook_decides_alike_on_the_c_and_the_pure_python_path(hqlab, path):
    """A single hook function runs on the C loop unless MINIFW_PURE_PYTHON=1: the same real
    packets get the same verdicts and the same fields either way."""
    server, client, blocked = two_hosts(hqlab)
    server.popen(["python3", "-m", "http.server", "-b", "0.0.0.0", "81"])
    server.wait_listening(81)
    seen = hqlab.tmp / "seen"
    hooks = write(hqlab, "one.py", f"""
        from minifw import hook, ACCEPT, DROP, Addresses
        BLOCKED = Addresses("198.18.2.2")  # a plain set of addresses is refused at load
        @hook("input", priority=5, fail="closed")
        def one(pkt):
            if pkt.proto == "tcp" and pkt.dport == 81 and pkt.sport:
                open({str(seen)!r}, "a").write(f"{{pkt.version}} {{pkt.src}} {{pkt.dst}}\\n")
            if pkt.src in BLOCKED or pkt.proto == "icmp" or pkt.dport == 81:
                return DROP
            return ACCEPT
        """)
    env = {"MINIFW_PURE_PYTHON": "1"} if path == "pure Python" else {}
    proc = start_runner(server, hooks, env=env)
    assert not client.ping("198.18.0.1")                                    # icmp
    assert client.tcp_result("198.18.0.1", 81, timeout=1) == "timeout"      # port 81
    assert blocked.tcp_result("198.18.2.1", 80) == "timeout"                # the set
    assert client.http_get("http://198.18.0.1/") is not None                # the rest passes
    log = stop_runner(proc)
    assert f"hot path: {path}" in log
    assert set(lines(seen)) >= {"4", "198.18.0.2", "198.18.0.1"}
