"""Structured events for real, in namespaces, with ``minifw daemon`` running: a logged rule's
drop, a ban, a drop policy and a hook function's DROP each reach ``minifw log --json`` with the
right origin; ``log -f`` shows a ping's event within 1 s; under a flood every packet is still
dropped while the event cap applies, and events the reader could not keep up with are counted
as lost, exactly (written + lost = the rule's counter)."""

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

from kit import CLIENT4, CLIENT6, SERVER4, SERVER6, counter, pair, probes, wait_until
from minifw.control import client as control
from minifw.lab import MINIFW
import test_daemon_live

Daemon = test_daemon_live.Daemon
dlab = test_daemon_live.dlab  # the fixture: a lab whose daemons are stopped after

HOOKS = """
    from minifw import ACCEPT, DROP, hook

    @hook("input", priority=-10, where="queue")  # the queue runner's events (kernel: klog test)
    def no_dns(pkt):
        if pkt.proto == "udp" and pkt.dport == 53:
            pkt.log("dns refused")
            return DROP
        return ACCEPT
    """

CONFIG = """
[policy]
input = "drop"

[events]
drops = true

[[hook]]
file = "hooks.py"

[[rule]]
id = "no-ping"
proto = "icmp"
action = "drop"
log = "no ping "

[[rule]]
id = "ping6"
proto = "icmpv6"
action = "accept"

[[rule]]
id = "dns"
proto = "udp"
dport = 53
action = "accept"
"""

FLOOD = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    s.sendto(b"x" * 16, (sys.argv[1], 9))
"""


def start(lab, config_text, hooks=HOOKS, env=None):
    server, client = pair(lab)
    lab.tmp.mkdir(parents=True, exist_ok=True)
    (lab.tmp / "hooks.py").write_text(textwrap.dedent(hooks))
    config = lab.tmp / "minifw.toml"
    config.write_text(config_text)
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        d = Daemon(server, config)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    d.ready()
    return server, client, d, config


def logged(host, *args):
    out = host.minifw("log", "--json", *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def stats(host):
    return control.request(host.state_dir, "events.stats")["stats"]


def test_events_of_a_rule_a_ban_a_policy_and_a_hook_function(dlab):
    server, client, d, _ = start(dlab, CONFIG)
    follow = subprocess.Popen(
        ["ip", "netns", "exec", server.ns, MINIFW, "log", "-f", "--json", "-n", "0", "--rule",
         "no-ping"], env={**os.environ, "MINIFW_STATE_DIR": str(server.state_dir)},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_until(lambda: stats(server)["followers"] == 1, what="the follower")
        sent = time.monotonic()
        assert not client.ping(SERVER4, timeout=0.3)
        ready, _, _ = select.select([follow.stdout], [], [], max(0.0, sent + 1.0 - time.monotonic()))
        assert ready, "no event within 1 s of the ping"
        first = json.loads(follow.stdout.readline())
    finally:
        follow.terminate()
        follow.wait(timeout=10)
    assert (first["rule"], first["hook"], first["action"]) == ("no-ping", "input", "drop")
    assert (first["src"], first["dst"], first["proto"], first["icmp_type"]) == \
        (CLIENT4, SERVER4, "icmp", 8)
    assert first["iif"] == "eth-c" and first["family"] == "ip" and first["len"] == 84

    assert client.ping(SERVER6)  # the client knows the server's link address before the ban
    server.minifw("ban", CLIENT6)
    with probes() as p:
        p.expect(client, "ping", SERVER6, expect="timeout")      # the ban
        p.expect(client, "udp", SERVER4, 54, expect="timeout")   # the input policy
        p.expect(client, "udp", SERVER4, 53, expect="timeout")   # the hook function
    ban = wait_until(lambda: logged(server, "--rule", "set:blocked", "--dst", SERVER6),
                     what="the ban's event")[0]
    assert (ban["src"], ban["family"], ban["action"], ban["proto"], ban["icmp_type"]) == \
        (CLIENT6, "ip6", "drop", "icmpv6", 128)
    policy = wait_until(lambda: logged(server, "--rule", "policy:input", "--dst", SERVER4),
                        what="the policy's event")[0]
    assert (policy["proto"], policy["dport"], policy["src"], policy["hook"]) == \
        ("udp", 54, CLIENT4, "input")
    hooked = wait_until(lambda: len(logged(server, "--rule", "hook:no_dns")) >= 2,
                        what="the hook function's events") and \
        logged(server, "--rule", "hook:no_dns")
    assert [e["action"] for e in hooked[:2]] == ["log", "drop"]
    assert hooked[0]["message"] == "dns refused"
    for e in hooked[:2]:
        assert (e["proto"], e["dport"], e["src"], e["hook"], e["priority"]) == \
            ("udp", 53, CLIENT4, "input", -10)
    # the filters, on the file: --src and -n
    assert logged(server, "--src", "198.18.99.0/24") == []
    assert len(logged(server, "-n", "1")) == 1
    text = server.minifw("log", "--rule", "no-ping").stdout.splitlines()
    assert " drop no-ping input/0 icmp 198.18.0.2 -> 198.18.0.1 type=8 iif=eth-c len=84" in \
        text[0]


def test_a_flood_is_dropped_whole_under_the_event_cap_and_losses_are_counted(dlab):
    config = textwrap.dedent("""
        [policy]
        input = "accept"

        [events]
        drops = true
        limit = "20/second"

        [[rule]]
        id = "flood"
        proto = "udp"
        dport = 9
        action = "drop"
        """)
    server, client, d, path = start(dlab, config, env={"MINIFW_EVENTS_RCVBUF": "65536"})
    n = 3000
    started = time.monotonic()
    client.run([sys.executable, "-c", FLOOD, SERVER4, str(n)])
    elapsed = time.monotonic() - started
    assert counter(server, "flood") == n  # every packet dropped, the cap notwithstanding
    time.sleep(0.3)  # the reader's batch timeout
    capped = len(logged(server, "--rule", "flood"))
    assert 1 <= capped <= 20 * (elapsed + 1) + 20

    # the cap off, the reader stopped: its socket overflows; sequence gaps say how much
    path.write_text(config.replace('"20/second"', '"off"'))
    server.minifw("reload")
    wait_until(lambda: stats(server)["written"] >= 0, what="the reload")
    before = stats(server)
    counted = counter(server, "flood")
    os.kill(d.pid, signal.SIGSTOP)
    try:
        client.run([sys.executable, "-c", FLOOD, SERVER4, "20000"])
    finally:
        os.kill(d.pid, signal.SIGCONT)
    wait_until(lambda: stats(server)["nflog_overruns"] > before["nflog_overruns"],
               what="the reader to see its socket overflowed")
    time.sleep(0.3)  # it drains what its socket still holds
    # a loss is measured at the next packet that comes through (its sequence number)
    client.run([sys.executable, "-c", FLOOD, SERVER4, "10"])
    total = counter(server, "flood") - counted
    assert total == 20010

    def settled():
        s = stats(server)
        return s if s["written"] + s["lost"] - before["written"] - before["lost"] >= total \
            else None
    after = wait_until(settled, what="every packet written or counted lost")
    lost = after["lost"] - before["lost"]
    written = after["written"] - before["written"]
    assert lost > 0 and written >= 10
    assert written + lost == total
