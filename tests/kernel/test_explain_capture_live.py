"""explain --pcap on a real mixed-direction capture: `tcpdump -i eth-c` on the firewall, real
traffic both ways; the packets explain says each rule matched (its "hits"), entering and
leaving, are what the kernel's counters of those rules show.

server (eth-c, minifw: input and output drop policies) <-> client (eth0).
"""

from __future__ import annotations

import json
import signal
import subprocess

from kit import CLIENT4, SERVER4, counter, new_lab, need_root, pair, probe, serve, up

CONFIG = """
[policy]
input = "drop"
output = "drop"

[[rule]]
id = "web"
proto = "tcp"
dport = 80
action = "accept"

[[rule]]
id = "dns"
proto = "udp"
dport = 53
action = "accept"

[[rule]]
id = "noping"
proto = "icmp"
icmp_type = "echo-request"
action = "drop"

[[rule]]
id = "out-web"
hook = "output"
proto = "tcp"
dport = 80
action = "accept"

[[rule]]
id = "out-ping"
hook = "output"
proto = "icmp"
action = "accept"
"""
RULES = ("web", "dns", "noping", "out-web", "out-ping")


def traffic(server, client) -> None:
    """Flows both ways: into the server (web, dns, a dropped ping) and out of it (web, ping)."""
    for _ in range(3):
        assert probe(client, "tcp", SERVER4, 80, expect="open") == "open"
    for _ in range(2):
        assert probe(server, "tcp", CLIENT4, 80, expect="open") == "open"
        assert probe(server, "ping", CLIENT4, expect="reply") == "reply"
        assert probe(client, "udp", SERVER4, 53, expect="reply") == "reply"
    assert probe(client, "ping", SERVER4, expect="timeout") == "timeout"


def test_capture_sums_match_the_counters_both_ways():
    need_root()
    with new_lab() as lab:
        server, client = pair(lab)
        serve(server, tcp=[80], udp=[53])
        serve(client, tcp=[80])
        up(server, CONFIG)
        before = {r: counter(server, r) for r in RULES}
        cap = lab.tmp / "eth-c.pcap"
        # an ordinary capture (pcap, Ethernet, no direction flags); --immediate-mode so that
        # nothing waits in the capture ring when it stops
        dump = subprocess.Popen(["ip", "netns", "exec", server.ns, "tcpdump", "-n", "-U",
                                 "--immediate-mode", "-i", "eth-c", "-w", str(cap), "ip"],
                                stderr=subprocess.PIPE, text=True)
        try:
            assert "listening on eth-c" in dump.stderr.readline()
            traffic(server, client)
        finally:
            dump.send_signal(signal.SIGINT)
            dump.communicate(timeout=10)
        moved = {r: counter(server, r) - before[r] for r in RULES}

        def sums(*args) -> dict:
            out = server.minifw("explain", "--pcap", str(cap), "--json", *args)
            data = json.loads(out.stdout)
            return data, data["hits"]

        data, got = sums("--iface", "eth-c", "--direction", "all")
        assert data["notes"] == [] and data["explained"] == data["packets"]
        assert {r: got.get(r, 0) for r in RULES} == moved
        assert all(moved.values())   # every rule saw traffic: the sums are not all zeros
        # the default: only what entered, and how many left is said
        data, got = sums("--iface", "eth-c")
        entered = {r: got.get(r, 0) for r in RULES}
        assert entered == {**moved, "out-web": 0, "out-ping": 0}
        left = data["skipped"]["leaving the host (--direction in)"]
        data, got = sums("--iface", "eth-c", "--direction", "out")
        assert data["explained"] == left
        assert {r: got.get(r, 0) for r in ("out-web", "out-ping")} == \
            {"out-web": moved["out-web"], "out-ping": moved["out-ping"]}
