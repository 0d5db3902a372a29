"""Logging what is dropped, for real: [policy] log and [[set]] log in dmesg, NFLOG events of
[events] drops under a flood (the cap limits the events, never the drop), and counters that
survive reload, add and delete, merged runs included."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from kit import (
    CLIENT4, CLIENT6, SERVER4, SERVER6, dmesg_count, listing, nft_chain_ids, nft_objects, probes,
    reload_with, up, wait_until,
)
from minifw.compile.events import event_origin
from minifw.model import parse_config

FLOOD = 3000
# Reads one NFLOG group in the namespace it runs in until stdin closes; prints the packets
# per prefix, with the fields event_origin needs, and the loss the socket counted.
READER = """
import json, select, sys
from minifw.kernel.nflog import NflogSocket
s = NflogSocket(int(sys.argv[1]))
print("ready", flush=True)
counts, ports = {}, {}
stopping = False
while True:
    ready = select.select([s.fileno()] + ([] if stopping else [sys.stdin]), [], [],
                          0.5 if stopping else 1)[0]
    if sys.stdin in ready:
        stopping = True  # then read until the kernel's batch timeout (100 ms) has passed
    elif stopping and not ready:
        break
    for p in s.receive():
        counts[p.prefix] = counts.get(p.prefix, 0) + 1
        ports.setdefault(p.prefix, int.from_bytes(p.payload[22:24], "big"))
print(json.dumps({"counts": counts, "dport": ports, "lost": s.lost}))
"""


class Reader:
    def __init__(self, host, group: int):
        self.proc = subprocess.Popen(["ip", "netns", "exec", host.ns, sys.executable, "-c",
                                      READER, str(group)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def result(self) -> dict:
        out, _ = self.proc.communicate("stop\n", timeout=10)
        return json.loads(out)


def flood(host, addr: str, port: int, count: int = FLOOD) -> None:
    host.run([sys.executable, "-c", "import socket,sys\n"
              "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
              f"for _ in range({count}): s.sendto(b'x'*20,(sys.argv[1],{port}))\n", addr])


def counts(host) -> dict[str, int]:
    return {r["id"]: r["packets"] for r in listing(host)["rules"]}


def test_policy_and_ban_drops_reach_dmesg_and_accepts_do_not(net, kernel_log):
    server, client = net
    tag = f"eb{uuid.uuid4().hex[:10]}"  # this run's lines only
    up(server, f"""
[policy]
input = "drop"
log = "{tag}-pol "
log_limit = "50/second"

[[set]]
name = "blocked"
log = "{tag}-ban "

[[rule]]
id = "web"
proto = "tcp"
dport = 80
action = "accept"
""")
    server.minifw("ban", CLIENT6)
    with probes() as p:
        p.expect(client, "tcp", SERVER4, 80, expect="open")
        p.expect(client, "tcp", SERVER4, 81, expect="timeout")
        p.expect(client, "ping", SERVER6, expect="timeout")
    wait_until(lambda: dmesg_count(f"{tag}-pol ", f"SRC={CLIENT4}", "DPT=81"),
               what="the policy's log line")
    wait_until(lambda: dmesg_count(f"{tag}-ban ", "PROTO=ICMPv6"), what="the ban's log line")
    assert dmesg_count(f"{tag}-pol ", "DPT=80") == 0  # accepted: never logged
    assert dmesg_count(f"{tag}-ban ", f"SRC={CLIENT4}") == 0
    bans = listing(server)["bans"]
    assert bans[0]["set"] == "blocked" and bans[0]["packets"] >= 1


RUN = "".join(f"""
[[rule]]
id = "p{i}"
proto = "udp"
dport = {60 + i}
action = "drop"
""" for i in range(8))


def test_event_cap_limits_the_events_never_the_drop(net):
    server, client = net
    text = f"""
[policy]
input = "drop"

[events]
drops = true
limit = "10/second"
group = 41

[[rule]]
id = "dns"
proto = "udp"
dport = 53
action = "accept"

[[rule]]
id = "sink"
proto = "udp"
dport = 54
iif = "eth-c"
action = "drop"
{RUN}"""
    up(server, text)
    logs = [e["log"] for r in nft_objects(server, "rule") for e in r["expr"]
            if isinstance(e, dict) and "log" in e]
    assert {"prefix": "sink", "group": 41} in logs
    assert {"prefix": "run:r_input_0_2", "group": 41} in logs
    assert {"prefix": "policy:input", "group": 41} in logs
    reader = Reader(server, 41)
    try:
        flood(client, SERVER4, 54)
        flood(client, SERVER4, 63)
        flood(client, SERVER4, 99, count=50)  # no rule: the policy drops it
    finally:
        got = reader.result()
    after = counts(server)
    assert after["sink"] == FLOOD  # the cap never let one packet through
    assert after["p3"] == FLOOD  # the run's element counter: counted once per packet
    assert after["p2"] == after["p4"] == 0
    seen = got["counts"]
    for prefix in ("sink", "run:r_input_0_2", "policy:input"):
        assert 1 <= seen.get(prefix, 0) <= 10 + 40, (prefix, seen)  # burst + a few seconds
    assert "dns" not in seen
    ruleset = parse_config(text, "t.toml")
    origin = event_origin(ruleset, "run:r_input_0_2", {"dport": got["dport"]["run:r_input_0_2"]})
    assert origin is not None and origin.rule == "p3"


def test_reload_add_and_delete_keep_unchanged_counters(net):
    server, client = net
    base = """
[[rule]]
id = "dns"
proto = "udp"
dport = 53
action = "accept"

[[rule]]
id = "edited"
proto = "udp"
dport = 55
action = "drop"
"""
    path = up(server, base + RUN)
    flood(client, SERVER4, 53, 5)
    flood(client, SERVER4, 55, 6)
    flood(client, SERVER4, 61, 7)
    flood(client, SERVER4, 66, 8)
    before = counts(server)
    assert (before["dns"], before["edited"], before["p1"], before["p6"]) == (5, 6, 7, 8)
    reload_with(server, path, base.replace("dport = 55", "dport = 56") + RUN)
    after = counts(server)
    assert after == dict(before, edited=0)
    server.minifw("add", "--id", "late", "--proto", "udp", "--dport", "70", "--action", "drop",
                  "--position", "1")  # into the chain with the run: refilled in one go
    assert counts(server) == dict(after, late=0)
    server.minifw("delete", "edited")
    assert counts(server) == {k: v for k, v in dict(after, late=0).items() if k != "edited"}
    flood(client, SERVER4, 61, 1)
    assert counts(server)["p1"] == 8


def test_add_and_delete_place_and_remove_helper_rules(net):
    server, _ = net
    up(server, """
[events]
drops = true

[[rule]]
id = "a"
proto = "tcp"
dport = 80
action = "accept"

[[rule]]
id = "b"
proto = "tcp"
dport = 81
action = "drop"
""")
    assert nft_chain_ids(server, "input_0") == ["a", "log b", "b"]
    server.minifw("add", "--id", "c", "--proto", "udp", "--dport", "9", "--action", "drop",
                  "--position", "1")
    assert nft_chain_ids(server, "input_0") == ["a", "log c", "c", "log b", "b"]
    server.minifw("delete", "b")
    assert nft_chain_ids(server, "input_0") == ["a", "log c", "c"]
    server.minifw("delete", "c")
    assert nft_chain_ids(server, "input_0") == ["a"]
