"""Restarting [[hook]] runners is make before break: the successor swaps the old chains for its
own in one transaction, and a successor that fails to start leaves the old runner running.
``status`` and its exit code say which hook is not running as asked, and why."""

import json
import os
import signal
import textwrap
import time

import pytest

from kit import SERVER4, SERVER4B, pair, ruleset_shape, wait_until

# Fault injection: a receive buffer the runner refuses (ConfigError at start-up). `validate`
# in the CLI does not read it, so only the new runner's start fails.
BAD_START = {"MINIFW_HOOK_RCVBUF": "1"}

HOOKS = """
    from minifw import ACCEPT, DROP, hook

    KNOCKED = set()

    @hook("input", priority=-20, payload=True)
    def no_evil(pkt):
        return DROP if pkt.proto == "udp" and b"evil" in pkt.payload else ACCEPT

    @hook("input", priority=-10)
    def knock(pkt):
        if pkt.proto == "udp" and pkt.dport == 7000:
            KNOCKED.add(pkt.src)
        if pkt.proto == "tcp" and pkt.dport == 80 and pkt.src not in KNOCKED:
            return DROP
        return ACCEPT
    """

SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
out = open(sys.argv[1], "a", buffering=1)
open(sys.argv[2], "w").close()
while True:
    data, _ = s.recvfrom(2048)
    out.write(data.decode(errors="replace") + "\\n")
"""

SENDER = """
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
i = 0
while not os.path.exists(sys.argv[2]):
    for word in ("evil", "good"):
        try:
            s.sendto(f"{word}-{i}".encode(), (sys.argv[1], 5353))
        except OSError:
            pass
    i += 1
    time.sleep(0.001)
open(sys.argv[3], "w").write(str(i))
"""


@pytest.fixture
def hlab(lab):
    yield lab
    for host in lab.hosts.values():  # runners outlive `ip netns del`: end every one
        for rec in (host.state_dir / "hooks").glob("runner-*.json"):
            try:
                os.kill(json.loads(rec.read_text())["pid"], signal.SIGKILL)
            except (ProcessLookupError, ValueError, KeyError):
                pass


def setup(lab, hooks=HOOKS, second_client=False):
    hosts = pair(lab, second_client=second_client)
    server = hosts[0]
    lab.tmp.mkdir(parents=True, exist_ok=True)
    (lab.tmp / "hooks.py").write_text(textwrap.dedent(hooks))
    config = lab.tmp / "minifw.toml"
    config.write_text('[[hook]]\nfile = "hooks.py"\n')
    server.minifw("up", "--config", str(config))
    server.popen(["python3", "-m", "http.server", "-b", "0.0.0.0", "80"])
    server.wait_listening(80)
    return hosts, config


def start_sink(server):
    got = server.lab.tmp / f"sink-{time.monotonic_ns()}"
    ready = got.with_suffix(".ready")
    server.popen(["python3", "-c", SINK, str(got), str(ready)])
    wait_until(ready.exists, what="the UDP sink")
    return got


def received(path):
    words = path.read_text().split() if path.exists() else []
    return (sum(1 for w in words if w.startswith("evil")),
            sum(1 for w in words if w.startswith("good")))


def send_one(client, word):
    client.run(["python3", "-c", "import socket,sys; socket.socket(socket.AF_INET, "
                "socket.SOCK_DGRAM).sendto(sys.argv[1].encode(), (sys.argv[2], 5353))",
                word, SERVER4])


def runner_pids(server):
    st = json.loads(server.minifw("status", "--json", check=False).stdout)
    return {h["pid"] for h in st["hooks"] if h["running"]}


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_failed_restart_keeps_the_old_runner_and_status_says_so(hlab):
    (server, client, client2), _ = setup(hlab, second_client=True)
    sink = start_sink(server)
    client.run(["python3", "-c", "import socket; socket.socket(socket.AF_INET, "
                f"socket.SOCK_DGRAM).sendto(b'knock', ('{SERVER4}', 7000))"])
    assert client.tcp_ok(SERVER4, 80) and client2.tcp_result(SERVER4B, 80) == "timeout"
    (pid,) = runner_pids(server)
    before = ruleset_shape(server)

    bad = server.minifw("reload", "--restart-hooks", check=False, env=BAD_START)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad.stderr
    assert bad.stderr.startswith("error: ") and "MINIFW_HOOK_RCVBUF" in bad.stderr
    assert f"previous runner (pid {pid}) keeps running" in bad.stderr

    # the old runner, its chains and its state (who knocked) are all still there
    assert alive(pid) and runner_pids(server) == {pid}
    assert ruleset_shape(server) == before
    send_one(client, "evil-after")
    send_one(client, "good-after")
    wait_until(lambda: received(sink)[1] >= 1, what="the good datagram")
    assert received(sink) == (0, 1)
    assert client.tcp_ok(SERVER4, 80)                            # knocked before: open
    assert client2.tcp_result(SERVER4B, 80) == "timeout"     # never knocked: still shut

    text = server.minifw("status", check=False)
    assert text.returncode == 1 and text.stderr.count("\n") == 1
    assert "was not restarted" in text.stderr and "MINIFW_HOOK_RCVBUF" in text.stderr
    assert "warning: hook file" in text.stdout and f"pid {pid}" in text.stdout
    st = server.minifw("status", "--json", check=False)
    assert st.returncode == 1
    (problem,) = json.loads(st.stdout)["hook_problems"]
    assert problem["running"] and problem["file"].endswith("hooks.py")
    assert "MINIFW_HOOK_RCVBUF" in problem["reason"]

    ok = server.minifw("reload", "--restart-hooks")              # the cause gone: it restarts
    assert "restarted 1 hook runners" in ok.stdout
    (pid2,) = runner_pids(server)
    assert pid2 != pid and not alive(pid)
    clean = server.minifw("status", "--json")
    assert clean.returncode == 0 and json.loads(clean.stdout)["hook_problems"] == []
    assert client2.tcp_result(SERVER4B, 80) == "timeout"


def test_restart_never_leaves_a_gap(hlab):
    """A fail-open payload hook restarted under a flood: not one datagram it drops gets
    through while the runners change hands (stop-then-start let hundreds through)."""
    (server, client), _ = setup(hlab)
    sink = start_sink(server)
    stop = hlab.tmp / "stop-sender"
    count = hlab.tmp / "sent"
    sender = client.popen(["python3", "-c", SENDER, SERVER4, str(stop), str(count)])
    wait_until(lambda: received(sink)[1] >= 50, what="the flood to start")
    pids = [runner_pids(server)]
    for _ in range(3):
        good = received(sink)[1]
        assert "restarted 1 hook runners" in server.minifw("reload", "--restart-hooks").stdout
        pids.append(runner_pids(server))
        wait_until(lambda: received(sink)[1] >= good + 50, what="the flood after a restart")
    stop.touch()
    assert sender.wait(timeout=20) == 0
    sent = int(count.read_text())
    evil, good = received(sink)
    assert len(set(map(frozenset, pids))) == 4          # four different runners served
    assert sent > 0 and good > 0 and evil == 0, (sent, evil, good)


def test_a_failed_start_keeps_a_dead_fail_closed_hook_closed(hlab):
    (server, client), config = setup(hlab, hooks="""
        from minifw import ACCEPT, DROP, hook

        @hook("input", priority=-10, fail="closed")
        def no_web(pkt):
            return DROP if pkt.proto == "tcp" and pkt.dport == 80 else ACCEPT
        """)
    assert client.ping(SERVER4) and not client.tcp_ok(SERVER4, 80)
    (pid,) = runner_pids(server)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), what="the runner to die")
    dead = server.minifw("status", check=False)            # a dead runner fails status
    assert dead.returncode == 1 and "is not running" in dead.stderr
    assert "fail-closed chains stay" in dead.stderr

    bad = server.minifw("up", "--config", str(config), check=False, env=BAD_START)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "MINIFW_HOOK_RCVBUF" in bad.stderr and "not running" in bad.stderr
    chains = [c["chain"]["name"] for c in json.loads(
        server.run("nft -j list chains").stdout)["nftables"] if "chain" in c]
    assert "hook_q1000_no_web" in chains                   # the closed gate stays shut
    assert not client.ping(SERVER4) and not client.tcp_ok(SERVER4, 80)
    st = server.minifw("status", "--json", check=False)
    assert st.returncode == 1
    (problem,) = json.loads(st.stdout)["hook_problems"]
    assert not problem["running"] and problem["functions"] == ["no_web"]
    assert "MINIFW_HOOK_RCVBUF" in problem["reason"]

    assert "restarted 1 hook runners" in server.minifw("up", "--config", str(config)).stdout
    assert client.ping(SERVER4) and not client.tcp_ok(SERVER4, 80)
    assert server.minifw("status").returncode == 0
    server.minifw("down")
    assert client.tcp_ok(SERVER4, 80)
