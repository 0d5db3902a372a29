"""The routed lab of the NAT differential test: client <-> router (minifw) <-> server, a UDP
catcher on every host that records each datagram it receives with its addresses, and a sender.

UDP, one datagram per flow (a fresh source port each), so that every counter moves by exactly
the packets explain traces: no handshake, no replies. Every host listens on every port a packet
or a translation can name, so no ICMP error is ever sent back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from kit import wait_until

PORTS = (53, 80, 8080)

# One process per host: IPv4 and IPv6 UDP sockets on PORTS, with PKTINFO for the local
# address; each datagram's nonce, source and destination go to a JSON-lines file.
CATCHER = r"""
import json, select, socket, sys
PORTS = [int(p) for p in sys.argv[2].split(",")]
out = open(sys.argv[1], "a", buffering=1)
socks = []
IP_PKTINFO = 8  # <linux/in.h>; Python 3.11 has no name for it
for fam, level, opt in ((socket.AF_INET, socket.IPPROTO_IP, IP_PKTINFO),
                        (socket.AF_INET6, socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO)):
    for port in PORTS:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setsockopt(level, opt, 1)
        s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
        socks.append((s, fam))
open(sys.argv[1] + ".ready", "w").close()
while True:
    ready, _, _ = select.select([s for s, _ in socks], [], [])
    for s in ready:
        fam = dict(socks)[s]
        data, anc, _, peer = s.recvmsg(2048, 256)
        local = None
        for level, kind, raw in anc:
            if fam == socket.AF_INET:
                local = socket.inet_ntop(socket.AF_INET, raw[8:12])
            else:
                local = socket.inet_ntop(socket.AF_INET6, raw[:16])
        out.write(json.dumps({"nonce": data.decode(), "src": peer[0], "sport": peer[1],
                              "dst": local, "dport": s.getsockname()[1]}) + "\n")
"""

SEND = r"""
import socket, sys
addr, sport, dport, nonce = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if ":" in addr else "0.0.0.0", sport))
s.sendto(nonce.encode(), (addr, dport))
"""


class Catchers:
    def __init__(self, hosts):
        self.files = {}
        for host in hosts:
            path = host.lab.tmp / f"caught-{host.name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
            host.popen([sys.executable, "-c", CATCHER, str(path),
                        ",".join(map(str, PORTS))])
            wait_until(lambda p=path: p.with_name(p.name + ".ready").exists(),
                       what=f"catcher in {host.name}")
            self.files[host.name] = path

    def find(self, nonce: str) -> list[tuple[str, dict]]:
        """(host, record) of every arrival of the datagram ``nonce``."""
        found = []
        for name, path in self.files.items():
            for line in path.read_text().splitlines():
                rec = json.loads(line)
                if rec["nonce"] == nonce:
                    found.append((name, rec))
        return found

    def wait(self, nonce: str, expect: bool, patience: float = 0.4) -> list[tuple[str, dict]]:
        """Arrivals of ``nonce``: as soon as one comes when one is expected, else after a
        short wait (a veth link delivers in microseconds)."""
        end = time.monotonic() + (3.0 if expect else patience)
        while time.monotonic() < end:
            got = self.find(nonce)
            if got:
                return got
            time.sleep(0.02)
        return self.find(nonce)


def send(host, addr: str, sport: int, dport: int, nonce: str) -> None:
    host.run([sys.executable, "-c", SEND, addr, str(sport), str(dport), nonce])


def counters(router) -> dict[str, int]:
    """Packets per rule or nat id (the comment up to ':'), summed over its nft rules."""
    data = json.loads(router.run(["nft", "-j", "list", "table", "inet", "minifw"]).stdout)
    out: dict[str, int] = {}
    for item in data["nftables"]:
        rule = item.get("rule")
        if not rule or not rule.get("comment"):
            continue
        rid = rule["comment"].split(":")[0]
        out[rid] = out.get(rid, 0) + sum(e["counter"]["packets"] for e in rule["expr"]
                                         if "counter" in e)
    return out


# `minifw explain --json` without a process start per packet: the same API call and JSON,
# answered by one process in the router's namespace.
EXPLAINER = r"""
import json, sys
from minifw.api import Firewall
from minifw.errors import MinifwError
fw = Firewall(sys.argv[1])
for line in sys.stdin:
    try:
        out = fw.explain(**json.loads(line)).to_json()
    except MinifwError as exc:
        out = {"error": str(exc)}
    print(json.dumps(out), flush=True)
"""


class Explainer:
    def __init__(self, host):
        self.proc = subprocess.Popen(["ip", "netns", "exec", host.ns, sys.executable, "-c",
                                      EXPLAINER, str(host.state_dir)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
