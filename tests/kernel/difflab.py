"""The differential lab: one firewall namespace between two hosts, real crafted packets, and an
observation of what the kernel did with each one.

Topology (all addresses from 198.18.0.0/15 and fd00::/8, no route out)::

    c (eth0) 198.18.0.2 fd00:c::2 --- c0 [fw] s0 --- 198.18.1.2 fd00:5::2 (eth0) s
                                 198.18.0.1 fd00:c::1   198.18.1.1 fd00:5::1

- ``fw`` runs minifw and routes. Behind ``c`` lie 198.18.64.0/20 and fd00:c1::/32, behind ``s``
  198.18.128.0/20 and fd00:51::/32 (routes and permanent neighbours, so no ARP/ND is needed).
- Packets *to* the firewall (path in) and *through* it (path forward) are crafted as Ethernet
  frames and written on the sender's veth with an AF_PACKET socket; packets *from* it (path
  out) are written by an IP_HDRINCL raw socket inside ``fw``.
- Arrival is observed without waiting on a clock: after each probe a *sentinel* follows it on
  the same CPU (an ARP request that ``fw`` answers, or a non-IP frame from ``fw``). Netfilter
  and veth handle frames of one CPU in order, so once the sentinel's echo is seen, the probe's
  fate is sealed: it is in a raw socket of ``fw`` (delivered locally), in the far host's
  AF_PACKET socket (forwarded or sent), or nowhere (dropped), and a reject's reply has come back.
- The nft counters of ``inet minifw`` tell which rules the probe met.

Sockets are opened inside the namespaces with setns(2) and used from the test process, so a
probe costs no process start.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import ipaddress
import json
import os
import select
import socket
import struct
import time

from minifw.compile.comments import rule_id_of_comment
from minifw.engine.explain import Probe
from minifw.lab import Lab, LabError

from apiworker import ApiWorker

ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
ETH_P_SENTINEL = 0x88B5  # IEEE local experimental ethertype
PACKET_OUTGOING = 4
CLONE_NEWNET = 0x40000000

# Addresses, per side. "local" are the firewall's own.
FW_IP = {"c": ("198.18.0.1", "fd00:c::1"), "s": ("198.18.1.1", "fd00:5::1")}
PEER_IP = {"c": ("198.18.0.2", "fd00:c::2"), "s": ("198.18.1.2", "fd00:5::2")}
BEHIND = {"c": ("198.18.64.0/20", "fd00:c1::/32"), "s": ("198.18.128.0/20", "fd00:51::/32")}
# Hosts the generator picks from: a few behind each side, so rules and packets meet often.
REMOTE_HOSTS = {
    "c": {4: ["198.18.64.1", "198.18.64.2", "198.18.65.9"],
          6: ["fd00:c1::1", "fd00:c1::2", "fd00:c1:1::9"]},
    "s": {4: ["198.18.128.1", "198.18.128.2", "198.18.129.7"],
          6: ["fd00:51::1", "fd00:51::2", "fd00:51:1::7"]},
}
LOCAL_HOSTS = {4: ["198.18.0.1", "198.18.1.1"], 6: ["fd00:c::1", "fd00:5::1"]}
FW_IF = {"c": "c0", "s": "s0"}
QUOTED_PORTS = (5353, 53)  # the UDP flow an ICMP error with state "related" is about
OTHER = {"c": "s", "s": "c"}

_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def netns(name: str):
    """Run the block in network namespace ``name`` (this thread only), then come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")
        try:
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home failed")
    finally:
        os.close(home)
        os.close(target)


@dataclasses.dataclass
class Sent:
    """A probe as put on the wire: the description explain gets, plus where it came from."""

    probe: Probe
    side: str            # in/forward: the side it enters from; out: the side it leaves by
    nonce: bytes


@dataclasses.dataclass
class Observed:
    delivered: bool      # path in: reached a local socket of fw
    arrived: bool        # path forward/out: reached the far host
    reply: str | None    # "tcp-reset", "icmp-unreachable" or None
    send_error: str | None
    counters: dict[str, int]  # rule id / "policy <hook>" -> packets counted for this probe

    @property
    def passed(self) -> bool:
        return self.delivered or self.arrived


class DiffLab:
    def __init__(self, prefix: str):
        self.lab = Lab(prefix=prefix)
        self.socks: list[socket.socket] = []
        self._counters: dict[str, int] = {}
        self._seq = 0

    # ---- setup -------------------------------------------------------------------------
    def __enter__(self) -> "DiffLab":
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks.clear()
        self.lab.close()

    def _build(self) -> None:
        lab = self.lab
        self.fw = lab.host("fw", forwarding=True)
        self.c = lab.host("c")
        self.s = lab.host("s")
        for host in (self.fw, self.c, self.s):
            for key in ("net.ipv6.conf.default.router_solicitations",
                        "net.ipv6.conf.all.router_solicitations",
                        "net.ipv6.conf.default.accept_ra", "net.ipv6.conf.all.accept_ra"):
                host.sysctl(key, "0")
            host.sysctl("net.ipv6.conf.default.addr_gen_mode", "1")  # no link-local: quiet
            for key in ("mldv1_unsolicited_report_interval", "mldv2_unsolicited_report_interval"):
                host.sysctl(f"net.ipv6.conf.default.{key}", "10")  # ms: joins report at once
        for key, value in (("net.ipv4.icmp_ratelimit", "0"), ("net.ipv6.icmp.ratelimit", "0"),
                           # An inserted TCP flow has no window yet: let conntrack take its ACKs.
                           ("net.netfilter.nf_conntrack_tcp_be_liberal", "1"),
                           ("net.ipv4.conf.all.rp_filter", "0"),
                           ("net.ipv4.conf.default.rp_filter", "0")):
            self.fw.sysctl(key, value)
        lab.link(self.fw, ["198.18.0.1/24", "fd00:c::1/64"], self.c,
                 ["198.18.0.2/24", "fd00:c::2/64"], a_if="c0", b_if="eth0")
        lab.link(self.fw, ["198.18.1.1/24", "fd00:5::1/64"], self.s,
                 ["198.18.1.2/24", "fd00:5::2/64"], a_if="s0", b_if="eth0")
        self.mac = {"fw-c": self._mac(self.fw, "c0"), "fw-s": self._mac(self.fw, "s0"),
                    "c": self._mac(self.c, "eth0"), "s": self._mac(self.s, "eth0")}
        for side, host in (("c", self.c), ("s", self.s)):
            fw_if = FW_IF[side]
            for i, peer in enumerate(PEER_IP[side]):
                self.fw.run(["ip", "-6" if i else "-4", "neigh", "replace", peer, "lladdr",
                             self.mac[side], "dev", fw_if, "nud", "permanent"])
                self.fw.run(["ip", "-6" if i else "-4", "route", "add", BEHIND[side][i],
                             "via", peer])
                host.run(["ip", "-6" if i else "-4", "neigh", "replace", FW_IP[side][i],
                          "lladdr", self.mac[f"fw-{side}"], "dev", "eth0", "nud", "permanent"])
        for host in (self.c, self.s):
            # The outer hosts only send crafted frames (AF_PACKET bypasses netfilter); their own
            # stacks stay silent, e.g. no "no route" ICMP errors about a reject's reply.
            host.run(["nft", "add table inet hxquiet; add chain inet hxquiet out "
                      "{ type filter hook output priority 0; policy drop; }"])
        self._open_sockets()
        # Let the hosts' own start-up chatter (MLD reports of the addresses just added) pass
        # before any probe, so that it never moves a counter of a case. Set-up only.
        time.sleep(1.0)

    @staticmethod
    def _mac(host, ifname: str) -> str:
        out = json.loads(host.run(["ip", "-j", "link", "show", ifname]).stdout)
        return out[0]["address"]

    def _open_sockets(self) -> None:
        def keep(s: socket.socket) -> socket.socket:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            self.socks.append(s)
            return s

        self.sniff = {}
        for side, host in (("c", self.c), ("s", self.s)):
            with netns(host.ns):
                s = keep(socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)))
                s.bind(("eth0", ETH_P_ALL))
                self.sniff[side] = s
        with netns(self.fw.ns):
            self.fw_link = {}
            for side in ("c", "s"):
                s = keep(socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
                s.bind((FW_IF[side], 0))
                self.fw_link[side] = s
            self.local = [keep(socket.socket(fam, socket.SOCK_RAW, proto))
                          for fam in (socket.AF_INET, socket.AF_INET6)
                          for proto in (socket.IPPROTO_TCP, socket.IPPROTO_UDP)]
            self.local.append(keep(socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                 socket.IPPROTO_ICMP)))
            self.local.append(keep(socket.socket(socket.AF_INET6, socket.SOCK_RAW,
                                                 socket.IPPROTO_ICMPV6)))
            self.raw_out = {4: keep(socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                  socket.IPPROTO_RAW)),
                            6: keep(socket.socket(socket.AF_INET6, socket.SOCK_RAW,
                                                  socket.IPPROTO_RAW))}
        for s in self.socks:
            s.setblocking(False)

    # ---- minifw ------------------------------------------------------------------------
    def load(self, toml_text: str) -> None:
        """Load a config into fw with `minifw up` the first time and `minifw reload` after
        (their API calls, from one process: see apiworker.py)."""
        path = self.lab.tmp / "case.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(toml_text)
        first = not getattr(self, "_up", False)
        if first:
            self.api = ApiWorker(self.fw)
        self.api.load("up" if first else "reload", path)
        self._up = True
        # a reload refills the declarative chains (their counters start at 0), but the ban
        # chain is not declarative: its counters run on across loads
        self._counters = self.counters()

    def counters(self) -> dict[str, int]:
        """Packets counted per rule id (and per "policy <hook>") in table inet minifw."""
        listing = json.loads(self.fw.run(["nft", "-j", "list", "table", "inet", "minifw"]).stdout)
        out: dict[str, int] = {}
        for obj in listing["nftables"]:
            rule = obj.get("rule")
            if not rule:
                continue
            packets = sum(e["counter"]["packets"] for e in rule["expr"]
                          if isinstance(e, dict) and isinstance(e.get("counter"), dict))
            comment = rule.get("comment") or ""
            key = comment if comment.startswith("policy ") else rule_id_of_comment(comment)
            if key:
                out[key] = out.get(key, 0) + packets
        return out

    # ---- probes ------------------------------------------------------------------------
    def send(self, sent: Sent) -> Observed:
        probe = sent.probe
        self.fw.run(["conntrack", "-F"], check=False)  # every probe is the first of its flow
        if probe.state == "related":
            # An ICMP error about a UDP flow that its destination once sent to its source.
            self.fw.run(["conntrack", "-I", "-p", "udp", "-s", str(probe.dst), "-d",
                         str(probe.src), "--sport", str(QUOTED_PORTS[0]), "--dport",
                         str(QUOTED_PORTS[1]), "--timeout", "60"])
        if probe.state == "established":
            # ... unless it belongs to a flow that has seen a reply: make that flow.
            assert probe.proto.has_ports, "the lab makes established flows for tcp and udp"
            tcp = ["--state", "ESTABLISHED"] if probe.proto.value == "tcp" else []
            self.fw.run(["conntrack", "-I", "-p", probe.proto.value, "-s", str(probe.src),
                         "-d", str(probe.dst), "--sport", str(probe.sport), "--dport",
                         str(probe.dport), "--timeout", "60", *tcp, "-u",
                         "SEEN_REPLY,ASSURED"])
        self._drain()
        send_error = None
        if probe.path == "out":
            packet = build_ip(probe, sent.nonce)
            try:
                self.raw_out[probe.version].sendto(packet, (str(probe.dst), 0))
            except PermissionError:
                send_error = "EPERM"  # netfilter dropped it on the way out
            far = self._sentinel_out(sent.side)
            arrived = any(sent.nonce in f for f in far)
            delivered, near = False, []
        else:
            frame = ether(self.mac[f"fw-{sent.side}"], self.mac[sent.side],
                          0x0800 if probe.version == 4 else 0x86DD, build_ip(probe, sent.nonce))
            self.sniff[sent.side].send(frame)
            near = self._sentinel_in(sent.side)
            delivered = any(sent.nonce in d for d in self._read_local())
            far = self._read(self.sniff[OTHER[sent.side]])
            arrived = any(sent.nonce in f for f in far)
        reply = _find_reply(probe, sent.nonce, near) if probe.path != "out" else None
        now = self.counters()
        delta = {k: v - self._counters.get(k, 0) for k, v in now.items()
                 if v != self._counters.get(k, 0)}
        self._counters = now
        return Observed(delivered, arrived, reply, send_error, delta)

    def _drain(self) -> None:
        for s in self.socks:
            self._read(s)

    @staticmethod
    def _read(s: socket.socket) -> list[bytes]:
        out = []
        while True:
            try:
                data, addr = s.recvfrom(65535)
            except BlockingIOError:
                return out
            if s.family == socket.AF_PACKET and addr[2] == PACKET_OUTGOING:
                continue
            out.append(data)

    def _read_local(self) -> list[bytes]:
        return [d for s in self.local for d in self._read(s)]

    def _wait(self, s: socket.socket, is_sentinel) -> list[bytes]:
        """Frames on ``s`` up to the sentinel. Waiting is for the lab's health only: the
        sentinel always comes, and a missing one is a lab failure, never a verdict."""
        got = []
        while True:
            ready, _, _ = select.select([s], [], [], 5.0)
            if not ready:
                raise LabError("the sentinel frame did not come back within 5 s")
            for frame in self._read(s):
                if is_sentinel(frame):
                    return got
                got.append(frame)

    def _sentinel_in(self, side: str) -> list[bytes]:
        """Ask fw for its own MAC by ARP; its answer follows every effect of the probe."""
        self._seq += 1
        fw_ip = socket.inet_aton(FW_IP[side][0])
        me_ip = socket.inet_aton(PEER_IP[side][0])
        me_mac = bytes.fromhex(self.mac[side].replace(":", ""))
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, me_mac, me_ip, b"\0" * 6, fw_ip)
        self.sniff[side].send(ether("ff:ff:ff:ff:ff:ff", self.mac[side], ETH_P_ARP, arp))

        def is_reply(frame: bytes) -> bool:
            return (frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x02"
                    and frame[28:32] == fw_ip)
        return self._wait(self.sniff[side], is_reply)

    def _sentinel_out(self, side: str) -> list[bytes]:
        self._seq += 1
        token = b"minifw-sentinel-%d" % self._seq
        frame = ether(self.mac[side], self.mac[f"fw-{side}"], ETH_P_SENTINEL, token)
        self.fw_link[side].send(frame)
        return self._wait(self.sniff[side], lambda f: f[12:14] == b"\x88\xb5" and token in f)


# ---- packets ----------------------------------------------------------------------------------

def ether(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return (bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", ""))
            + struct.pack("!H", ethertype) + payload)


def build_ip(probe: Probe, nonce: bytes) -> bytes:
    """The probe as an IP packet with valid checksums (conntrack checks them at prerouting)."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6Unknown, IPv6
    from scapy.packet import Raw

    ip = (IP(src=str(probe.src), dst=str(probe.dst), ttl=64) if probe.version == 4
          else IPv6(src=str(probe.src), dst=str(probe.dst), hlim=64))
    if probe.proto.value == "tcp":
        flags = "A" if probe.state == "established" else "S"  # a new flow starts with SYN
        l4 = TCP(sport=probe.sport, dport=probe.dport, flags=flags, seq=1000, ack=1,
                 window=64240)
    elif probe.proto.value == "udp":
        l4 = UDP(sport=probe.sport, dport=probe.dport)
    elif probe.state == "related":
        # The error quotes the flow's packet (destination -> source) with the nonce in it.
        inner = (IP(src=str(probe.dst), dst=str(probe.src)) if probe.version == 4
                 else IPv6(src=str(probe.dst), dst=str(probe.src)))
        quote = bytes(inner / UDP(sport=QUOTED_PORTS[0], dport=QUOTED_PORTS[1]) / Raw(nonce))
        if probe.version == 4:
            return bytes(ip / ICMP(type=probe.icmp_type, code=3) / Raw(quote))
        body = b"\0\0\0\0" + quote
        return bytes(ip / ICMPv6Unknown(type=probe.icmp_type, code=4, msgbody=body))
    elif probe.proto.value == "icmp":
        l4 = ICMP(type=probe.icmp_type, code=0, id=0x4d46, seq=1)
    else:
        l4 = ICMPv6Unknown(type=probe.icmp_type, code=0, msgbody=b"\x4d\x46\x00\x01" + nonce)
        return bytes(ip / l4)
    return bytes(ip / l4 / Raw(nonce))


def _find_reply(probe: Probe, nonce: bytes, frames: list[bytes]) -> str | None:
    """A reject's answer among the frames the sender saw: a TCP reset for its flow, or an ICMP
    port-unreachable quoting it."""
    from scapy.layers.inet import ICMP, IP, TCP
    from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6
    from scapy.layers.l2 import Ether

    for frame in frames:
        pkt = Ether(frame)
        ip = pkt.getlayer(IP) if probe.version == 4 else pkt.getlayer(IPv6)
        if ip is None or ipaddress.ip_address(ip.dst) != probe.src:
            continue
        tcp = pkt.getlayer(TCP)
        if (probe.proto.value == "tcp" and tcp is not None and tcp.flags.R
                and tcp.sport == probe.dport and tcp.dport == probe.sport):
            return "tcp-reset"
        icmp = pkt.getlayer(ICMP) if probe.version == 4 else pkt.getlayer(ICMPv6DestUnreach)
        if icmp is not None and nonce in frame:
            if probe.version == 4 and (icmp.type, icmp.code) == (3, 3):
                return "icmp-unreachable"
            if probe.version == 6 and icmp.code == 4:
                return "icmp-unreachable"
    return None
