"""Hook functions in the kernel (BPF netfilter programs) through minifw's own commands, in lab
namespaces: [[hook]] at up, status, hook set, reload swap, down, minifw run + Ctrl-C, the
priority conflicts, and the auto choice with its reason."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from kit import LAB_PREFIX, need_root, ping_burst, wait_until
from minifw.lab import MINIFW, Lab

SEED_HOOKS = Path(__file__).resolve().parents[2] / "examples" / "seed_hooks.py"
PIN_ROOT = Path("/run/minifw/bpf")


def netns_inode(host) -> str:
    return str(os.stat(f"/run/netns/{host.ns}").st_ino)


@pytest.fixture
def klab():
    need_root()
    with Lab(prefix=f"{LAB_PREFIX}k{os.getpid() % 10000}") as lab:
        server, client, blocked = lab.seed_topology()
        server.serve_http(80)
        lab.tmp.mkdir(parents=True, exist_ok=True)
        try:
            yield lab, server, client, blocked
        finally:  # never leave a pin behind, whatever the test did
            for host in lab.hosts.values():
                with contextlib.suppress(Exception):
                    host.minifw("down", check=False, timeout=30)
                with contextlib.suppress(Exception):
                    shutil.rmtree(PIN_ROOT / netns_inode(host))


def write(lab, name, body):
    path = lab.tmp / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def config(lab, *files, rules=""):
    text = rules + "".join(f'\n[[hook]]\nfile = "{f}"\n' for f in files)
    return write(lab, "minifw.toml", text)


def status(host):
    return json.loads(host.minifw("status", "--json").stdout)


def kernel(host):
    return {k["function"]: k for k in status(host)["kernel_hooks"]}


def entries(host):
    """The dispatchers pinned for the host's namespace: (pf, hook, priority)."""
    d = PIN_ROOT / netns_inode(host)
    return sorted(p.name for p in d.iterdir() if (p / "link").exists()) if d.is_dir() else []


def test_up_verdicts_status_hook_set_and_down(klab):
    lab, server, client, blocked = klab
    Path(lab.tmp / "seed_hooks.py").write_text(SEED_HOOKS.read_text())
    cfg = config(lab, "seed_hooks.py")
    assert "1 hook files" in server.minifw("up", "--config", cfg).stdout
    assert not client.ping("198.18.0.1")                       # ICMP dropped in the kernel
    assert client.http_get("http://198.18.0.1/") is not None    # TCP passes both programs
    assert blocked.tcp_result("198.18.2.1", 80) == "timeout"    # the blocked host dropped
    # no queue, no chain: the programs are BPF links, one per family and function
    assert server.run("nft -j list ruleset").stdout.count("hook_q") == 0
    assert entries(server) == sorted(["2_0_-300", "10_0_-300", "2_0_-299", "10_0_-299"])
    k = kernel(server)
    assert {n: (v["where"], v["reason"]) for n, v in k.items()} == {
        "drop_icmp": ("kernel", 'where="kernel"'),
        "drop_blocked_host": ("kernel", 'where="kernel"')}
    assert k["drop_icmp"]["drops"] >= 1 and k["drop_icmp"]["packets"] > k["drop_icmp"]["drops"]
    assert k["drop_blocked_host"]["drops"] >= 1
    assert "hook drop_icmp at prerouting/-300: kernel" in server.minifw("status").stdout
    listed = json.loads(server.minifw("list", "--json").stdout)["kernel_hooks"]
    assert {k["function"]: k["drops"] >= 1 for k in listed} == {
        "drop_icmp": True, "drop_blocked_host": True}
    assert not status(server)["hooks"]                          # no runner

    target = f"{lab.tmp / 'seed_hooks.py'}:BLOCKED"
    out = json.loads(server.minifw("hook", "set", target, "add", "198.18.0.0/24",
                                   "--json").stdout)
    assert out["changed"] == 1
    assert not client.tcp_ok("198.18.0.1", 80)                 # a CIDR now blocks the client
    server.minifw("hook", "set", target, "del", "198.18.0.0/24")
    assert client.tcp_ok("198.18.0.1", 80)
    # (seconds of margin: a loaded machine takes one to start a command)
    server.minifw("hook", "set", target, "add", "198.18.0.2", "--timeout", "5")
    assert not client.tcp_ok("198.18.0.1", 80, timeout=0.5)
    wait_until(lambda: client.tcp_ok("198.18.0.1", 80, timeout=0.5), 15, "the entry to expire")
    # a CIDR with a timeout under a live, shorter one: its expiry uncovers nothing
    server.minifw("hook", "set", target, "add", "198.18.0.0/24", "--timeout", "2")
    server.minifw("hook", "set", target, "add", "198.18.0.0/16")
    time.sleep(2.5)
    assert not client.tcp_ok("198.18.0.1", 80, timeout=0.5)     # the /16 still covers it
    server.minifw("hook", "set", target, "del", "198.18.0.0/16")
    assert client.tcp_ok("198.18.0.1", 80)                      # the /24 has expired
    server.minifw("hook", "set", target, "del", "198.18.0.0/24")
    bad = server.minifw("hook", "set", target, "add", "not-an-address", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ")
    assert "Traceback" not in bad.stderr
    bad = server.minifw("hook", "set", f"{lab.tmp / 'seed_hooks.py'}:NOPE", "add",
                        "198.18.0.2", check=False)
    assert bad.returncode == 1 and "no Addresses named 'NOPE'" in bad.stderr

    server.minifw("down")
    assert client.ping("198.18.0.1") and blocked.tcp_ok("198.18.2.1", 80)
    assert not (PIN_ROOT / netns_inode(server)).exists()        # links and pins gone
    assert status(server)["kernel_hooks"] == []


COUNTER_HOOK = """\
    from minifw import hook, ACCEPT, DROP

    @hook("input", priority=10, where="kernel")
    def gate(pkt):
        if pkt.proto == "udp" and pkt.dport == {port}:
            return DROP
        return ACCEPT
    """


def test_reload_swaps_the_program_without_losing_a_packet(klab):
    lab, server, client, _ = klab
    write(lab, "gate.py", COUNTER_HOOK.format(port=9))
    cfg = config(lab, "gate.py")
    server.minifw("up", "--config", cfg)
    before = entries(server)
    assert before == ["10_1_10", "2_1_10"]
    result = {}

    def flood():
        result["got"] = ping_burst(client, "198.18.0.1", 600)
    import threading
    t = threading.Thread(target=flood)
    t.start()
    time.sleep(0.3)
    for port in (7, 8, 9):  # three swaps while the flood runs
        write(lab, "gate.py", COUNTER_HOOK.format(port=port))
        server.minifw("reload")
    t.join()
    assert result["got"] == 600                                 # no gap, no lost packet
    assert entries(server) == before                            # the same links, swapped
    assert kernel(server)["gate"]["packets"] < 600              # counters restart at reload
    # the file moves its function: the old point is detached
    write(lab, "gate.py", COUNTER_HOOK.format(port=9).replace("priority=10", "priority=11"))
    server.minifw("reload")
    assert entries(server) == ["10_1_11", "2_1_11"]


def start_run(lab, server, name: str, source: str | None = None):
    """``minifw run`` of the seed's hooks (or of ``source``) in the server's namespace, once it
    says it is ready."""
    seed = write(lab, f"{name}.py", source if source is not None else SEED_HOOKS.read_text())
    err = open(lab.tmp / f"{name}.err", "w+")
    proc = subprocess.Popen(["ip", "netns", "exec", server.ns, MINIFW, "run", seed],
                            env=dict(os.environ, MINIFW_STATE_DIR=str(server.state_dir)),
                            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    lab._procs.append(proc)
    wait_until(lambda: "Ctrl-C stops" in Path(err.name).read_text() or proc.poll() is not None,
               20, "minifw run to be ready")
    return proc, err


def test_run_holds_kernel_hooks_until_ctrl_c(klab):
    lab, server, client, blocked = klab
    proc, err = start_run(lab, server, "seed_run")
    assert proc.poll() is None, Path(err.name).read_text()
    assert "drop_icmp@prerouting/-300 (kernel)" in Path(err.name).read_text()
    assert not client.ping("198.18.0.1")
    assert blocked.tcp_result("198.18.2.1", 80) == "timeout"
    assert client.tcp_ok("198.18.0.1", 80)
    # an up whose [[hook]] wants the same place is refused while run holds it
    write(lab, "other.py", SEED_HOOKS.read_text())
    refused = server.minifw("up", "--config", config(lab, "other.py"), check=False)
    assert "prerouting priority -300" in refused.stdout + refused.stderr
    # so is a rule chain there: the BPF hook that run holds is no chain of up's
    early = '[[rule]]\nid = "early"\nhook = "prerouting"\npriority = -300\nproto = "udp"\n' \
            'action = "accept"\n'
    refused = server.minifw("up", "--config", config(lab, rules=early), check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "both at prerouting priority -300" in refused.stderr
    assert "minifw run" in refused.stderr
    server.minifw("up", "--config", config(lab))                # elsewhere: fine
    added = server.minifw("add", "--runtime", "--id", "late", "--hook", "prerouting",
                          "--priority", "-299", "--proto", "udp", "--action", "accept",
                          check=False)
    assert added.returncode == 1 and "both at prerouting priority -299" in added.stderr
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    server.minifw("down")
    assert client.ping("198.18.0.1") and blocked.tcp_ok("198.18.2.1", 80)
    assert entries(server) == []
    # kill -9: the pinned links outlive the process, and `down` removes them
    proc, err = start_run(lab, server, "seed_run_again")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not client.ping("198.18.0.1") and len(entries(server)) == 4
    server.minifw("down")
    assert client.ping("198.18.0.1") and entries(server) == []
    # [[nat]] is refused where run holds the kernel's NAT priority
    proc, err = start_run(lab, server, "seed_nat",
                          SEED_HOOKS.read_text().replace("priority=-300", "priority=-100"))
    nat = '[[nat]]\nid = "masq"\nkind = "masquerade"\noif = "eth-x"\n'
    refused = server.minifw("up", "--config", config(lab, rules=nat), check=False)
    assert refused.returncode == 1 and "both at prerouting priority -100" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    server.minifw("up", "--config", config(lab, rules=nat))    # once run is gone


def test_a_dead_namespace_s_pins_under_a_reused_inode_are_not_ours(klab):
    """A namespace deleted without `down` leaves its pins, and a later namespace may get its
    inode: its dispatchers must neither clash with this one's rules nor take its programs."""
    lab, server, client, blocked = klab
    proc, err = start_run(lab, server, "seed_dead")
    os.killpg(proc.pid, signal.SIGKILL)                         # its pins stay, with its marker
    proc.wait(timeout=10)
    other = lab.host("other")
    shutil.rmtree(PIN_ROOT / netns_inode(other), ignore_errors=True)
    os.rename(PIN_ROOT / netns_inode(server), PIN_ROOT / netns_inode(other))
    early = '[[rule]]\nid = "early"\nhook = "prerouting"\npriority = -300\nproto = "udp"\n' \
            'action = "accept"\n'
    other.minifw("up", "--config", config(lab, rules=early))   # no clash with the dead pins
    write(lab, "other_seed.py", SEED_HOOKS.read_text().replace("-300", "-310"))
    other.minifw("up", "--config", config(lab, "other_seed.py", rules=early))
    assert entries(other) == sorted(["2_0_-310", "10_0_-310", "2_0_-299", "10_0_-299"])
    other.minifw("down")
    assert not (PIN_ROOT / netns_inode(other)).exists()


def test_conflicts_are_refused_and_auto_says_why_it_stays_on_the_queue(klab):
    lab, server, client, _ = klab
    write(lab, "k.py", """\
        from minifw import hook, ACCEPT, DROP

        @hook("input", priority=0, where="kernel")
        def k(pkt):
            return ACCEPT
        """)
    rule = '[[rule]]\nid = "web"\nhook = "input"\npriority = 0\naction = "accept"\n' \
           'proto = "tcp"\ndport = 80\n'
    out = server.minifw("up", "--config", config(lab, "k.py", rules=rule), check=False)
    assert out.returncode == 1 and "both at input priority 0" in out.stderr
    write(lab, "k2.py", (lab.tmp / "k.py").read_text().replace("def k(", "def k2("))
    out = server.minifw("up", "--config", config(lab, "k.py", "k2.py"), check=False)
    assert out.returncode == 1 and "both at input priority 0" in out.stderr
    # where="kernel" that cannot compile: one line with file, line and construct
    write(lab, "loop.py", """\
        from minifw import hook, ACCEPT

        @hook("input", priority=5, where="kernel")
        def loop(pkt):
            for i in range(3):
                pass
            return ACCEPT
        """)
    out = server.minifw("up", "--config", config(lab, "loop.py"), check=False)
    assert out.returncode == 1 and f"{lab.tmp / 'loop.py'}:5:" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert entries(server) == []                                # refused before any change
    assert server.run("nft -j list ruleset").stdout.count('"table"') == 0
    # auto: a loop, or an explicit fail=, keeps a function on the queue, and status says why
    write(lab, "auto.py", """\
        from minifw import hook, ACCEPT, DROP

        @hook("input", priority=5)
        def looped(pkt):
            for i in range(2):
                pass
            return ACCEPT

        @hook("input", priority=6, fail="open")
        def failing(pkt):
            return ACCEPT

        @hook("input", priority=7)
        def plain(pkt):
            if pkt.proto == "icmp":
                return DROP
            return ACCEPT
        """)
    server.minifw("up", "--config", config(lab, "auto.py"))
    k = kernel(server)
    assert k["looped"]["where"] == "queue"
    assert k["looped"]["reason"].startswith(f"auto: does not compile: {lab.tmp / 'auto.py'}:")
    assert (k["failing"]["where"], k["failing"]["reason"]) == (
        "queue", "auto: fail= only applies to the queue (in the kernel there is no userspace "
        "to fail, and no exception or payload copy)")
    assert (k["plain"]["where"], k["plain"]["reason"]) == ("kernel", "auto: compiles to BPF")
    assert {h["function"] for h in status(server)["hooks"]} == {"looped", "failing"}
    assert entries(server) == ["10_1_7", "2_1_7"]
    assert not client.ping("198.18.0.1") and client.tcp_ok("198.18.0.1", 80)


def test_run_writes_pkt_log_lines_to_dmesg(klab):
    lab, server, client, _ = klab
    proc, err = start_run(lab, server, "seed_log")
    assert not client.ping("198.18.0.1")
    wait_until(lambda: "Drop ICMP packet" in Path(err.name).read_text(), 5,
               "the pkt.log line through the ringbuf")
    dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    assert "minifw: Drop ICMP packet" in dmesg
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
