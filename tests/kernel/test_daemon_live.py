"""``minifw daemon`` for real, in namespaces: sd_notify through a socket the test binds, a
``kill -9``-ed runner restarted after its backoff with fail-closed traffic blocked meanwhile,
the control socket against other users and bad requests, and ``up``/``reload``/``down``
handing the runners to the daemon (never two runners for one file)."""

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import textwrap
import time

import pytest

from kit import SERVER4, pair, wait_until
from minifw.control import client as control
from minifw.lab import MINIFW
from minifw.runners.hookstate import pid_alive as alive

FAIL_CLOSED = """
    from minifw import ACCEPT, DROP, hook

    @hook("input", priority=-10, fail="closed")
    def no_web(pkt):
        return DROP if pkt.proto == "tcp" and pkt.dport == 80 else ACCEPT
    """

# A peer that is not root: it connects (dac_override lets it past the socket's 0600 mode, so
# the daemon's SO_PEERCRED check is what answers), asks, and prints all it gets until EOF.
NOT_ROOT = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            "--inh-caps=+dac_override", "--ambient-caps=+dac_override"]
ASK = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(b'{"op": "ping"}\\n')
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
"""

_n = itertools.count()


class Daemon:
    """``minifw daemon`` in ``host``, with NOTIFY_SOCKET bound by the test."""

    def __init__(self, host, config):
        self.host = host
        lab = host.lab
        self.notify_path = lab.tmp / f"notify-{next(_n)}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.err_path = lab.tmp / f"daemon-{self.notify_path.stem}.err"
        with open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", host.ns, MINIFW, "daemon", "--config", str(config)],
                env={**os.environ, "MINIFW_STATE_DIR": str(host.state_dir),
                     "NOTIFY_SOCKET": str(self.notify_path)},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)
        lab._procs.append(self.proc)
        lab.daemons.append(self)

    @property
    def pid(self):
        return self.proc.pid  # ip netns exec execs the command

    def message(self, timeout=30.0):
        """The next sd_notify datagram, as its fields."""
        self.notify.settimeout(timeout)
        try:
            data = self.notify.recv(4096).decode()
        except socket.timeout:
            pytest.fail(f"no sd_notify message in {timeout} s; daemon stderr: "
                        f"{self.err_path.read_text()}")
        return dict(line.split("=", 1) for line in data.split("\n"))

    def ready(self):
        fields = self.message()
        assert fields.get("READY") == "1", fields
        return fields

    def request(self, op, **kw):
        return control.request(self.host.state_dir, op, **kw)

    def runners(self):
        return self.request("status")["runners"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)


@pytest.fixture
def dlab(lab):
    lab.daemons = []
    yield lab
    for d in lab.daemons:
        d.stop()
    for host in lab.hosts.values():  # runners outlive `ip netns del`: end every one
        for rec in (host.state_dir / "hooks").glob("runner-*.json"):
            with contextlib.suppress(ProcessLookupError, ValueError, KeyError):
                os.kill(json.loads(rec.read_text())["pid"], signal.SIGKILL)


def setup(lab, hooks=FAIL_CLOSED):
    server, client = pair(lab)
    lab.tmp.mkdir(parents=True, exist_ok=True)
    (lab.tmp / "hooks.py").write_text(textwrap.dedent(hooks))
    config = lab.tmp / "minifw.toml"
    config.write_text('[[hook]]\nfile = "hooks.py"\n')
    return server, client, config


def plain_daemon(lab):
    """A daemon, ready, in a host of its own with a config of no rules or hooks."""
    server = lab.host("server")
    lab.tmp.mkdir(parents=True, exist_ok=True)
    config = lab.tmp / "minifw.toml"
    config.write_text('[policy]\ninput = "accept"\n')
    d = Daemon(server, config)
    d.ready()
    return server, config, d


def parent(pid):
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])


def live_runner_records(host):
    recs = [json.loads(p.read_text()) for p in (host.state_dir / "hooks").glob("runner-*.json")]
    return [r for r in recs if alive(r["pid"])]


def minifw_chains(host):
    out = json.loads(host.run(["nft", "-j", "list", "chains"]).stdout)["nftables"]
    return [c["chain"]["name"] for c in out
            if "chain" in c and c["chain"]["table"] == "minifw"]


def test_daemon_restarts_a_killed_runner_with_fail_closed_traffic_blocked_meanwhile(dlab):
    server, client, config = setup(dlab)
    d = Daemon(server, config)
    assert "1 hook files" in d.ready()["STATUS"]
    assert client.ping(SERVER4) and client.tcp_result(SERVER4, 80) == "timeout"
    (r,) = d.runners()
    assert r["state"] == "running" and r["restarts"] == 0 and parent(r["pid"]) == d.pid
    wait_until(lambda: (d.runners()[0]["packets"] or 0) >= 2, what="the runner's counts")
    counted = d.runners()[0]
    assert counted["drops"] >= 1 and counted["errors"] == 0

    os.kill(r["pid"], signal.SIGKILL)
    # its fail-closed chain stays while it is down: what it would queue is dropped
    assert not client.ping(SERVER4, timeout=0.5)
    probed = time.time()
    wait_until(lambda: d.runners()[0]["restarts"] == 1 and d.runners()[0]["state"] == "running",
               what="the restart", timeout=10)
    (r2,) = d.runners()
    assert r2["pid"] != r["pid"] and parent(r2["pid"]) == d.pid
    assert r2["last_exit"] == "killed by SIGKILL"
    (rec,) = live_runner_records(server)
    assert rec["pid"] == r2["pid"] and rec["started"] > probed  # the probe was in the gap
    assert len([c for c in minifw_chains(server) if c.startswith("hook_")]) == 1
    assert client.ping(SERVER4)  # fail-closed: only a serving runner lets it through

    st = server.minifw("status", "--json")
    (shown,) = json.loads(st.stdout)["runners"]
    assert shown["restarts"] == 1 and shown["pid"] == r2["pid"]
    text = server.minifw("status").stdout
    assert "1 restarts" in text and "last exit: killed by SIGKILL" in text

    # SIGTERM: what `down` does, and systemd hears of it
    d.proc.send_signal(signal.SIGTERM)
    assert d.message()["STOPPING"] == "1"
    assert d.proc.wait(timeout=30) == 0
    assert not alive(r2["pid"])
    assert "minifw" not in server.run(["nft", "list", "tables"]).stdout
    assert not (server.state_dir / "control.sock").exists()


def test_control_socket_refuses_other_users_and_survives_bad_requests(dlab):
    server, config, d = plain_daemon(dlab)
    path = control.socket_path(server.state_dir)
    assert os.stat(path).st_mode & 0o777 == 0o600

    refused = subprocess.run([*NOT_ROOT, "python3", "-c", ASK, path], capture_output=True,
                             text=True, timeout=20)
    assert refused.returncode == 0, refused.stderr
    (line,) = refused.stdout.splitlines()        # one line, then the daemon hung up
    reply = json.loads(line)
    assert reply["ok"] is False and "only root" in reply["error"] and "65534" in reply["error"]

    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"garbage\n" + b"x" * (1 << 20) + b"\n[]\n" + b'{"op": "nope"}\n'
                  + b'{"op": "ping"}\n')
        replies = []
        with s.makefile("rb") as f:
            for _ in range(5):
                replies.append(json.loads(f.readline()))
    errors = [r["error"] for r in replies[:4]]
    assert all(r["ok"] is False for r in replies[:4]), replies
    assert "not JSON" in errors[0] and "longer than" in errors[1]
    assert "JSON object" in errors[2] and "unknown op 'nope'" in errors[3]
    assert replies[4] == {"ok": True, "pid": d.pid, "state_dir": str(server.state_dir)}

    # a client that hangs up in the middle of a stream
    stream = control.stream(server.state_dir, "runners.watch", interval=0.1)
    assert next(stream)["runners"] == []
    stream.close()
    time.sleep(0.3)  # the stream's next write meets the closed connection
    assert d.request("ping")["pid"] == d.pid and d.proc.poll() is None


def test_up_reload_and_down_hand_the_runners_to_the_daemon(dlab):
    server, _, config = setup(dlab)
    # the daemon and `up` start together: one runner for the file, never two
    up = subprocess.Popen(["ip", "netns", "exec", server.ns, MINIFW, "up", "--config",
                           str(config)], env={**os.environ, "MINIFW_STATE_DIR":
                                              str(server.state_dir)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    d = Daemon(server, config)
    assert up.wait(timeout=60) == 0, up.stderr.read()
    d.ready()
    (rec,) = live_runner_records(server)
    assert len([c for c in minifw_chains(server) if c.startswith("hook_")]) == 1
    (r,) = d.runners()
    assert r["pid"] == rec["pid"] and r["state"] == "running"

    # reload from the command line: the daemon starts the successor (its child)
    assert "restarted 1 hook runners" in server.minifw("reload", "--restart-hooks").stdout
    (r2,) = d.runners()
    assert r2["pid"] != r["pid"] and parent(r2["pid"]) == d.pid and r2["restarts"] == 0
    assert [x["pid"] for x in live_runner_records(server)] == [r2["pid"]]

    # down: the daemon stops them and goes on serving
    server.minifw("down")
    assert d.runners() == [] and live_runner_records(server) == [] and not alive(r2["pid"])
    assert d.proc.poll() is None

    # up again: the daemon starts it
    server.minifw("up", "--config", str(config))
    (r3,) = d.runners()
    assert parent(r3["pid"]) == d.pid
    assert [x["pid"] for x in live_runner_records(server)] == [r3["pid"]]

    # SIGHUP reloads, between RELOADING=1 and READY=1
    d.proc.send_signal(signal.SIGHUP)
    assert d.message()["RELOADING"] == "1"
    assert d.message()["READY"] == "1"
    assert [x["pid"] for x in d.runners()] == [r3["pid"]]  # its file did not change

    # a daemon killed: commands work without it, and the next one adopts the runner
    d.proc.kill()
    d.proc.wait(timeout=10)
    assert json.loads(server.minifw("status", "--json").stdout)["daemon"] is None
    d2 = Daemon(server, config)
    d2.ready()
    (r4,) = d2.runners()
    assert r4["pid"] == r3["pid"] and r4["state"] == "running"
    os.kill(r4["pid"], signal.SIGKILL)
    wait_until(lambda: d2.runners()[0]["restarts"] == 1 and d2.runners()[0]["state"]
               == "running", what="the adopted runner's restart", timeout=10)
    (r5,) = d2.runners()
    assert parent(r5["pid"]) == d2.pid and "not a child" in r5["last_exit"]


def timer_processes(state_dir):
    found = []
    for proc in os.listdir("/proc"):
        if proc.isdigit():
            with contextlib.suppress(OSError):
                cmdline = open(f"/proc/{proc}/cmdline", "rb").read().split(b"\0")
                if b"minifw.app.pending_timer" in cmdline and str(state_dir).encode() in cmdline:
                    found.append(int(proc))
    return found


def test_the_daemon_owns_the_confirm_timers(dlab):
    server, config, d = plain_daemon(dlab)

    def rule_ids():
        return [r["id"] for r in json.loads(server.minifw("list", "--json").stdout)["rules"]]

    add = ["add", "--proto", "tcp", "--dport", "81", "--action", "drop"]
    server.minifw(*add, "--id", "late", "--confirm", "2")
    assert "late" in server.run(["nft", "-j", "list", "table", "inet", "minifw"]).stdout
    assert timer_processes(server.state_dir) == []
    # no command runs meanwhile (their lock's gate would roll it back too): the daemon does
    wait_until(lambda: "late" not in server.run(["nft", "-j", "list", "table", "inet",
                                                  "minifw"]).stdout,
               what="the daemon's rollback", timeout=8)
    assert "not confirmed within 2 s" in server.minifw("status", check=False).stdout

    server.minifw(*add, "--id", "kept", "--confirm", "30")
    assert timer_processes(server.state_dir) == []
    done = server.minifw("confirm", "--json")
    assert json.loads(done.stdout)["op"] == "add"
    assert rule_ids() == ["kept"] and "kept" in config.read_text()


# Loads in the daemon (its validation), but not in a runner while the marker file exists.
FAILS_IN_RUNNER = """
    import os, sys
    from minifw import ACCEPT, DROP, hook

    IN_RUNNER = getattr(sys.modules["__main__"].__spec__, "name", "") == "minifw.runners.runner"
    if IN_RUNNER and os.path.exists(os.path.join(os.path.dirname(__file__), "broken")):
        raise RuntimeError("the hook file is broken")

    @hook("input", priority=-10, fail="closed")
    def no_web(pkt):
        return DROP if pkt.proto == "tcp" and pkt.dport == 80 else ACCEPT
    """


def test_a_runner_that_cannot_start_is_tried_again_after_its_backoff(dlab):
    server, client, config = setup(dlab, hooks=FAILS_IN_RUNNER)
    (dlab.tmp / "broken").touch()
    d = Daemon(server, config)
    ready = d.ready()                        # served: the ruleset is in, the hook is not
    assert "the hook file is broken" in ready["STATUS"]
    (r,) = d.runners()
    assert r["state"] == "failed" and r["pid"] is None
    assert "the hook file is broken" in r["last_exit"]
    st = server.minifw("status", check=False)
    assert st.returncode == 1 and "is not running" in st.stderr
    (dlab.tmp / "broken").unlink()
    wait_until(lambda: d.runners()[0]["state"] == "running", what="the start after the backoff",
               timeout=10)
    assert d.runners()[0]["restarts"] == 1 and client.ping(SERVER4)  # fail-closed: served
    assert server.minifw("status").returncode == 0


def test_a_failsafe_start_is_served_and_says_so_to_systemd(dlab):
    server = dlab.host("server")
    dlab.tmp.mkdir(parents=True, exist_ok=True)
    config = dlab.tmp / "minifw.toml"
    config.write_text('[[rule]]\nid = "bad"\nproto = "tcp"\ndport = 99999\naction = "drop"\n')
    d = Daemon(server, config)
    fields = d.ready()
    assert fields["STATUS"].startswith("failsafe: ") and "dport" in fields["STATUS"]
    assert d.request("status")["daemon"]["status"] == fields["STATUS"]
    st = server.minifw("status", check=False)
    assert st.returncode == 1 and "failsafe" in st.stderr and d.proc.poll() is None
