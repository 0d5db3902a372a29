"""Read a packet capture (pcap or pcapng) into packet descriptions for `minifw explain --pcap`.

Parsing uses scapy, a maintained library that reads both pcap and pcapng (any link type it
knows: Ethernet, Linux cooked capture, raw IP) and decodes IPv4, IPv6 with its extension
headers, TCP, UDP, ICMP and ICMPv6, including the headers an ICMP error quotes. It is imported
only here, and only when a capture is explained.

Each packet's direction, as seen from the host that captured it: the pcapng direction flags
(epb_flags) where present, else a Linux cooked capture's packet type, else the Ethernet
addresses against the capture interface's MAC (``own_mac``). A frame for another host's MAC
(seen in promiscuous mode) never entered this host. Packets whose direction cannot be told
(raw IP without flags, no ``own_mac``) are taken as entering, and marked so.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import importlib
import logging
from typing import Iterator

from ..engine.explain import Probe
from ..engine.flows import FlowTracker, Quoted
from ..errors import ConfigError, PacketError
from ..model.types import Proto


@dataclasses.dataclass(frozen=True)
class CapturedPacket:
    index: int                    # 1-based, as packet numbers in tcpdump/wireshark
    probe: Probe | None
    skipped: str | None = None    # why there is no probe (not IP, a fragment, ...)
    direction: str | None = None  # "in" | "out" | "other" (another host's frame) | None


def read_capture(path: str, *, path_kind: str = "in", iif: str | None = None,
                 oif: str | None = None, state: str | None = None,
                 own_mac: bytes | None = None) -> Iterator[CapturedPacket]:
    """Yield one CapturedPacket per packet of the capture, in order.

    ``state`` forces one conntrack state for every packet; otherwise it is inferred per flow.
    Interfaces come from ``iif``/``oif``, or else from a pcapng interface name (as ``iif`` on
    the paths in and forward, ``oif`` on the path out). Incoming packets (and those of unknown
    direction) take ``path_kind``; outgoing ones the path out, ``oif`` being the interface.
    """
    # scapy logs damage ("packet has been truncated") to stderr itself; minifw reports it in
    # its own words (a skipped packet or one error line), so its log says nothing below errors.
    logging.getLogger("scapy").setLevel(logging.ERROR)
    try:
        # The layers first: scapy dissects each packet with the layers loaded when it is read.
        for layer in ("inet", "inet6", "l2"):
            importlib.import_module(f"scapy.layers.{layer}")
        from scapy.error import Scapy_Exception
        from scapy.utils import PcapReader
    except ImportError as exc:  # pragma: no cover - scapy is a dependency
        raise ConfigError(f"reading captures needs scapy ({exc})", file=path) from exc
    tracker = FlowTracker()
    try:
        reader = PcapReader(path)
    except FileNotFoundError:
        raise ConfigError("no such capture file", file=path) from None
    except (OSError, Scapy_Exception) as exc:
        raise ConfigError(f"not a pcap or pcapng capture: {exc}", file=path) from exc
    with reader:
        index = 0
        while True:
            try:
                pkt = reader.read_packet()
            except EOFError:
                return
            except (Scapy_Exception, ValueError, OSError) as exc:
                raise ConfigError(f"the capture is damaged after packet {index}: {exc}",
                                  file=path) from exc
            index += 1
            way = direction(pkt, own_mac)
            if way == "other":
                yield CapturedPacket(index, None, "a frame for another host's MAC address "
                                     "(it never entered this host)", way)
                continue
            if way == "out":
                item = _describe(index, pkt, tracker, "out", None, oif, state)
            else:
                item = _describe(index, pkt, tracker, path_kind, iif,
                                 oif if path_kind != "in" else None, state)
            yield dataclasses.replace(item, direction=way)


PCAPNG_IN, PCAPNG_OUT = 1, 2          # epb_flags & 3
SLL_OUTGOING, SLL_OTHERHOST = 4, 3    # a cooked capture's packet type


def direction(pkt, own_mac: bytes | None) -> str | None:
    """"in", "out", "other" (a frame for another host) or None (cannot be told)."""
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether

    flag = getattr(pkt, "direction", None)
    if flag == PCAPNG_IN:
        return "in"
    if flag == PCAPNG_OUT:
        return "out"
    cooked = pkt.getlayer(CookedLinux) or pkt.getlayer(CookedLinuxV2)
    if cooked is not None:
        kind = int(cooked.pkttype)
        return "out" if kind == SLL_OUTGOING else "other" if kind == SLL_OTHERHOST else "in"
    eth = pkt.getlayer(Ether)
    if eth is None or own_mac is None:
        return None
    src, dst = mac_bytes(eth.src), mac_bytes(eth.dst)
    if src == own_mac:
        return "out"
    if dst == own_mac or dst[0] & 1:  # ours, or broadcast / multicast
        return "in"
    return "other"


def mac_bytes(text: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` as 6 bytes; PacketError if it is not a MAC address."""
    parts = text.strip().lower().replace("-", ":").split(":")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raw = b""
    if len(raw) != 6 or any(len(p) not in (1, 2) for p in parts):
        raise PacketError(f"--iface: {text!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return raw


def _describe(index: int, pkt, tracker: FlowTracker, path_kind: str, iif: str | None,
              oif: str | None, state: str | None) -> CapturedPacket:
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6

    ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    if ip is None:
        return CapturedPacket(index, None, "not IPv4 or IPv6")
    l4, proto_number, fragment = _transport(ip)
    if fragment:
        return CapturedPacket(index, None, "a non-first fragment (no transport header)")
    if isinstance(l4, TCP):
        proto = Proto.TCP
    elif isinstance(l4, UDP) and proto_number == 17:
        proto = Proto.UDP
    elif isinstance(l4, ICMP) and proto_number == 1:
        proto = Proto.ICMP
    elif proto_number == 58 and l4 is not None and any(f.name == "type" for f in l4.fields_desc):
        proto = Proto.ICMPV6
    else:
        return CapturedPacket(index, None, f"IP protocol {proto_number} is not tcp, udp, icmp "
                                           "or icmpv6")
    sport = dport = icmp_type = None
    if proto.has_ports:
        sport, dport = int(l4.sport), int(l4.dport)
    else:
        icmp_type = int(l4.getfieldval("type"))
    src = ipaddress.ip_address(ip.src)
    dst = ipaddress.ip_address(ip.dst)
    name = getattr(pkt, "sniffed_on", None)
    if isinstance(name, str) and name:
        if path_kind == "out":
            oif = oif or name
        else:
            iif = iif or name
    if state is None:
        state = tracker.state(proto, src, dst, sport, dport, icmp_type, _quoted(l4))
    try:
        probe = Probe(src=src, dst=dst, proto=proto, path=path_kind, sport=sport, dport=dport,
                      icmp_type=icmp_type, iif=iif, oif=oif, state=state)
    except PacketError as exc:
        return CapturedPacket(index, None, str(exc))
    return CapturedPacket(index, probe)


def _transport(ip):
    """The transport layer after IPv4 or IPv6 (skipping IPv6 extension headers), its protocol
    number, and whether the packet is a non-first fragment."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6ExtHdrFragment

    if isinstance(ip, IP):
        return ip.payload, int(ip.proto), bool(ip.frag)
    layer, number = ip.payload, int(ip.nh)
    while layer is not None and number in (0, 43, 44, 60):
        if isinstance(layer, IPv6ExtHdrFragment) and layer.offset:
            return None, 44, True
        number = int(layer.getfieldval("nh"))
        layer = layer.payload
    return layer, number, False


def _quoted(l4) -> Quoted | None:
    """The flow an ICMP(v6) error quotes, from its embedded IP header."""
    from scapy.layers.inet import IPerror, TCPerror, UDPerror
    from scapy.layers.inet6 import IPerror6

    inner = l4.getlayer(IPerror) or l4.getlayer(IPerror6)
    if inner is None:
        return None
    number = int(inner.proto) if hasattr(inner, "proto") else int(inner.nh)
    names = {6: Proto.TCP, 17: Proto.UDP, 1: Proto.ICMP, 58: Proto.ICMPV6}
    proto = names.get(number)
    if proto is None:
        return None
    ports = inner.getlayer(TCPerror) or inner.getlayer(UDPerror)
    sport = int(ports.sport) if ports is not None else 0
    dport = int(ports.dport) if ports is not None else 0
    try:
        return Quoted(proto, ipaddress.ip_address(inner.src), ipaddress.ip_address(inner.dst),
                      sport, dport)
    except ValueError:
        return None
