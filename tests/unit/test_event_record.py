"""events/record.py: NFLOG payloads -> event fields, on crafted packets (both sides of every
header-length boundary) and garbage (nulls, never an exception)."""

from __future__ import annotations

import ipaddress
import struct
from types import SimpleNamespace

from hypothesis import given, strategies as st

from minifw.events.record import (
    FIELDS, Interfaces, build_event, format_line, format_ts, parse_packet, parse_ts,
)

SRC4, DST4 = "198.18.0.2", "198.18.0.1"
SRC6, DST6 = "fd00::2", "fd00::1"


def v4(proto: int, l4: bytes, *, ihl: int = 5, frag: int = 0, total: int | None = None) -> bytes:
    options = b"\x01" * (ihl * 4 - 20) if ihl >= 5 else b""
    total = total if total is not None else ihl * 4 + len(l4)
    head = struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, frag, 64, proto, 0,
                       ipaddress.IPv4Address(SRC4).packed, ipaddress.IPv4Address(DST4).packed)
    return head + options + l4


def v6(next_header: int, rest: bytes, plen: int | None = None) -> bytes:
    plen = len(rest) if plen is None else plen
    return (struct.pack(">IHBB", 0x60000000, plen, next_header, 64)
            + ipaddress.IPv6Address(SRC6).packed + ipaddress.IPv6Address(DST6).packed + rest)


UDP = struct.pack(">HHHH", 40000, 53, 8, 0)
TCP = struct.pack(">HHIIBBHHH", 40001, 80, 1, 0, 0x50, 0x02, 1024, 0, 0)
ECHO = struct.pack(">BBHHH", 8, 0, 0, 1, 1)


def test_an_ipv4_ping_gives_every_field():
    f = parse_packet(v4(1, ECHO + b"x" * 56), 2)
    assert f == {"family": "ip", "proto": "icmp", "src": SRC4, "dst": DST4, "sport": None,
                 "dport": None, "icmp_type": 8, "len": 84}


def test_tcp_and_udp_ports():
    assert parse_packet(v4(6, TCP), 2)[("sport")] == 40001
    f = parse_packet(v4(17, UDP), 2)
    assert (f["proto"], f["sport"], f["dport"], f["icmp_type"]) == ("udp", 40000, 53, None)


def test_ipv4_header_boundary_19_and_20_bytes():
    packet = v4(17, UDP)
    short = parse_packet(packet[:19], 2)
    assert short["src"] is None and short["proto"] is None and short["family"] == "ip"
    just = parse_packet(packet[:20], 2)
    assert (just["src"], just["dst"], just["proto"], just["sport"]) == (SRC4, DST4, "udp", None)


def test_port_boundary_three_and_four_bytes_of_transport_header():
    packet = v4(17, UDP)
    assert parse_packet(packet[:23], 2)["dport"] is None
    assert parse_packet(packet[:24], 2)["dport"] == 53


def test_ipv4_options_move_the_transport_header():
    packet = v4(17, UDP, ihl=6)
    assert parse_packet(packet[:27], 2)["sport"] is None
    assert parse_packet(packet[:28], 2)["sport"] == 40000


def test_a_header_length_under_20_is_garbage():
    for ihl in (4, 5):
        f = parse_packet(v4(17, UDP, ihl=ihl), 2)
        assert (f["proto"] is None) == (ihl == 4)
        assert f["src"] == SRC4


def test_a_later_fragment_has_no_ports_the_first_has():
    later = parse_packet(v4(17, UDP, frag=1), 2)
    assert later["proto"] == "udp" and later["sport"] is None
    first = parse_packet(v4(17, UDP, frag=0x2000), 2)  # more fragments, offset 0
    assert first["sport"] == 40000


def test_icmp_type_needs_one_byte():
    packet = v4(1, ECHO)
    assert parse_packet(packet[:20], 2)["icmp_type"] is None
    assert parse_packet(packet[:21], 2)["icmp_type"] == 8


def test_other_protocols_are_numbers_as_text():
    assert parse_packet(v4(47, b"\0" * 8), 2)["proto"] == "47"


def test_ipv6_header_boundary_39_and_40_bytes():
    packet = v6(17, UDP)
    assert parse_packet(packet[:39], 10)["src"] is None
    f = parse_packet(packet[:40], 10)
    assert (f["family"], f["src"], f["dst"], f["proto"], f["len"]) == ("ip6", SRC6, DST6, "udp", 48)


def test_ipv6_icmpv6_type():
    f = parse_packet(v6(58, struct.pack(">BBH", 128, 0, 0) + b"\0" * 4), 10)
    assert (f["proto"], f["icmp_type"]) == ("icmpv6", 128)


def test_ipv6_extension_headers_as_far_as_the_copy_range_allows():
    hop = struct.pack(">BB6x", 17, 0)  # hop-by-hop, 8 bytes, then UDP
    packet = v6(0, hop + UDP)
    assert parse_packet(packet[:47], 10)["proto"] is None  # the extension header is cut
    at48 = parse_packet(packet[:48], 10)
    assert (at48["proto"], at48["sport"]) == ("udp", None)
    assert parse_packet(packet[:51], 10)["sport"] is None
    assert parse_packet(packet[:52], 10)["sport"] == 40000


def test_ipv6_extension_header_longer_than_the_copy():
    dest = struct.pack(">BB", 6, 1) + b"\0" * 14  # 16 bytes of destination options
    packet = v6(60, dest + TCP)
    assert parse_packet(packet[:55], 10)["proto"] is None  # it runs past the copy: unknown
    at56 = parse_packet(packet[:56], 10)
    assert (at56["proto"], at56["sport"], at56["src"]) == ("tcp", None, SRC6)
    assert parse_packet(packet[:59], 10)["dport"] is None
    assert parse_packet(packet[:60], 10)["dport"] == 80


def test_ipv6_authentication_header_counts_in_four_byte_units():
    ah = struct.pack(">BB", 17, 1) + b"\0" * 10  # (1 + 2) * 4 = 12 bytes
    assert parse_packet(v6(51, ah + UDP), 10)["dport"] == 53


def test_ipv6_fragments():
    first = struct.pack(">BBHI", 17, 0, 0x0001, 7)  # offset 0, more fragments
    later = struct.pack(">BBHI", 17, 0, 0x0008, 7)  # offset 1
    assert parse_packet(v6(44, first + UDP), 10)["sport"] == 40000
    f = parse_packet(v6(44, later + UDP), 10)
    assert (f["proto"], f["sport"]) == ("udp", None)


def test_ipv6_jumbogram_has_no_length():
    assert parse_packet(v6(17, UDP, plen=0), 10)["len"] is None


def test_the_family_from_netlink_wins_and_must_agree():
    assert parse_packet(v4(17, UDP), 10)["src"] is None
    assert parse_packet(v4(17, UDP))["family"] == "ip"  # no family given: the version nibble
    assert parse_packet(v6(17, UDP))["family"] == "ip6"


def test_empty_and_unknown_versions():
    assert parse_packet(b"", 2)["src"] is None
    assert parse_packet(b"\x50" * 40)["family"] is None


@given(st.binary(max_size=200), st.sampled_from([None, 0, 2, 10, 7]))
def test_garbage_never_raises(data, family):
    f = parse_packet(data, family)
    assert set(f) == {"family", "proto", "src", "dst", "sport", "dport", "icmp_type", "len"}


def test_timestamps_are_rfc3339_utc_microseconds():
    assert format_ts(0) == "1970-01-01T00:00:00.000000Z"
    assert format_ts(1796211780.1234564) == "2026-12-02T11:43:00.123456Z"
    assert format_ts(1796211780.9999996) == "2026-12-02T11:43:01.000000Z"
    assert parse_ts(format_ts(1796211780.25)) == 1796211780.25
    assert parse_ts("yesterday") is None and parse_ts(None) is None


def test_an_event_takes_its_origin():
    origin = SimpleNamespace(rule="no-ping", hook="input", priority=0, action="drop")
    fields = parse_packet(v4(1, ECHO), 2)
    event = build_event(fields, ts=0, origin=origin, prefix="no-ping", hook=0, iif="veth0")
    assert list(event) == list(FIELDS)
    assert event["rule"] == "no-ping" and event["hook"] == "input"
    assert event["priority"] == 0 and event["action"] == "drop" and event["iif"] == "veth0"
    assert event["oif"] is None and event["prefix"] == "no-ping"


def test_an_unmapped_prefix_keeps_rule_null_and_the_raw_prefix():
    event = build_event(parse_packet(v4(17, UDP), 2), ts=0, origin=None, prefix="stranger",
                        hook=1)
    assert event["rule"] is None and event["prefix"] == "stranger"
    assert event["hook"] == "input"  # the packet's own hook, from the netlink message
    assert event["action"] is None and event["priority"] is None
    assert build_event({}, ts=0, prefix=None, hook=5)["hook"] is None
    assert build_event({}, ts=0, prefix=None, hook=4)["hook"] == "postrouting"


def test_interfaces_are_named_once_and_unknown_ones_by_number():
    calls = []

    def lookup(index):
        calls.append(index)
        if index == 9:
            raise OSError("no such device")
        return f"if{index}"

    names = Interfaces(lookup)
    assert names.name(2) == "if2" and names.name(2) == "if2" and calls == [2]
    assert names.name(9) == "9" and names.name(None) is None and names.name(0) is None
    names.forget()
    names.name(2)
    assert calls == [2, 9, 2]


def test_the_readable_line():
    origin = SimpleNamespace(rule="no-dns", hook="input", priority=0, action="drop")
    event = build_event(parse_packet(v4(17, UDP), 2), ts=0, origin=origin, prefix="no-dns",
                        iif="veth0")
    assert format_line(event) == ("1970-01-01T00:00:00.000000Z drop no-dns input/0 udp "
                                  "198.18.0.2:40000 -> 198.18.0.1:53 iif=veth0 len=28")
    six = build_event(parse_packet(v6(17, UDP), 10), ts=0, prefix="x")
    assert "prefix='x'" in format_line(six) and "[fd00::2]:40000 -> [fd00::1]:53" in \
        format_line(six)


def test_events_from_nflog_bytes_captured_from_the_kernel():
    """The nflog codec's captures (test_nflog_codec.py): an IPv4 ping cut at 128 bytes, an
    IPv6 ping, and a datagram of three UDP packets."""
    from minifw.netlink.nflog import NflogDecoder
    from test_nflog_codec import BATCH3, PING4, PING6

    names = Interfaces(lambda index: {2: "eth-c"}[index])

    def events(data):
        return [build_event(parse_packet(p.payload, p.family), ts=p.timestamp or 0,
                            prefix=p.prefix, hook=p.hook, iif=names.name(p.indev),
                            oif=names.name(p.outdev))
                for p in NflogDecoder().receive_data(data)]

    (ping,) = events(PING4)
    assert (ping["family"], ping["proto"], ping["src"], ping["dst"], ping["icmp_type"],
            ping["len"], ping["hook"], ping["iif"], ping["prefix"]) == \
        ("ip", "icmp", SRC4, DST4, 8, 228, "input", "eth-c", "x")
    (ping6,) = events(PING6)
    assert (ping6["family"], ping6["proto"], ping6["src"], ping6["dst"], ping6["icmp_type"],
            ping6["len"]) == ("ip6", "icmpv6", SRC6, DST6, 128, 104)
    udp = events(BATCH3)
    assert [(e["proto"], e["dport"], e["len"], e["prefix"]) for e in udp] == \
        [("udp", 9999, 30, "rule-1")] * 3
