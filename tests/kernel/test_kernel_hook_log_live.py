"""pkt.log of hook functions in the kernel, attached by ``up`` ([[hook]]): ``minifw daemon``
reads their ringbuf -> the kernel log and ``hook:<fn>`` events, and follows a reload's new
maps; without a daemon, verdicts go on and the lines that find no room count as lost."""

import json
import os
import sys
import textwrap

from kit import dmesg_count, wait_until
import test_daemon_live
import test_kernel_hooks_live

Daemon = test_daemon_live.Daemon
klab = test_kernel_hooks_live.klab   # the fixture: a seed lab, every pin removed after

HOOKS = """
    from minifw import ACCEPT, DROP, hook

    @hook("prerouting", priority=-300, where="kernel")
    def drop_icmp(pkt):
        if pkt.proto == "icmp":
            pkt.log("Drop ICMP packet {tag}")
            return DROP
        return ACCEPT

    @hook("prerouting", priority=-299, where="kernel")
    def drop_discard(pkt):
        if pkt.proto == "udp" and pkt.dport == 9:
            pkt.log("discard")
            return DROP
        return ACCEPT
    """

# a burst past what the ringbuf holds, unread, is lost: 256 KiB of 16-byte records (header +
# format id), less one
RING_RECORDS = 256 * 1024 // 16 - 1
FLOOD = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[1])):
    s.sendto(b"x", ("198.18.0.1", 9))
"""


def kernel(host):
    data = json.loads(host.minifw("status", "--json").stdout)
    return {k["function"]: k for k in data["kernel_hooks"]}


def events(host, fn):
    out = host.minifw("log", "--json", "--rule", f"hook:{fn}").stdout
    return [json.loads(line) for line in out.splitlines()]


def test_daemon_reads_kernel_hook_logs_and_without_it_lines_count_as_lost(klab):
    lab, server, client, _ = klab
    lab.daemons = []
    tag = f"ke{os.getpid()}"
    hooks = lab.tmp / "khooks.py"
    hooks.write_text(textwrap.dedent(HOOKS.format(tag=f"{tag}a")))
    cfg = lab.tmp / "minifw.toml"
    cfg.write_text('[events]\n\n[[hook]]\nfile = "khooks.py"\n')
    daemon = Daemon(server, cfg)
    try:
        daemon.ready()
        assert not client.ping("198.18.0.1")
        wait_until(lambda: dmesg_count("minifw: Drop ICMP packet", f"{tag}a") == 1, 5,
                   "the pkt.log line in the kernel log")
        got = wait_until(lambda: events(server, "drop_icmp"), 5, "the hook:drop_icmp event")
        assert (got[0]["action"], got[0]["message"]) == ("log", f"Drop ICMP packet {tag}a")
        # a reload swaps in new maps (a new ringbuf): the daemon follows
        hooks.write_text(textwrap.dedent(HOOKS.format(tag=f"{tag}b")))
        server.minifw("reload")
        wait_until(lambda: not client.ping("198.18.0.1", timeout=0.3)
                   and dmesg_count("minifw: Drop ICMP packet", f"{tag}b") >= 1, 10,
                   "the reloaded function's line in the kernel log")
        assert kernel(server)["drop_icmp"]["log_lost"] == 0
    finally:
        daemon.stop()
    # no reader (up without a daemon): the ringbuf fills, the rest is counted, every packet
    # is still dropped
    server.minifw("up", "--config", str(cfg))
    assert kernel(server)["drop_discard"]["log_lost"] == 0
    flood = client.run([sys.executable, "-c", FLOOD, "20000"], check=False)
    assert flood.returncode == 0, flood.stderr

    def lost():
        k = kernel(server)["drop_discard"]
        return k["log_lost"] > 0 and k
    k = wait_until(lost, 5, "log lines counted as lost")
    # the program reserves while the record leaves a byte free (kernel/bpf/ringbuf.c)
    assert k["drops"] == RING_RECORDS + k["log_lost"] and k["drops"] <= 20000
    assert not client.ping("198.18.0.1", timeout=0.3)
    listed = server.minifw("list").stdout
    assert f"{k['log_lost']} log lines lost" in listed
