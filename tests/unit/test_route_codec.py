"""netlink/route.py: RTM_GETROUTE requests and their answers, both ways, with their bounds."""

from __future__ import annotations

import errno
import ipaddress
import struct

import pytest

from minifw.errors import PacketError
from minifw.netlink import route as r
from minifw.netlink.nlmsg import NLMSG_HDR, NlmsgType, attr, message

A = ipaddress.ip_address


def _attrs(body: bytes) -> dict[int, bytes]:
    out, off = {}, r.RTMSG.size
    while off < len(body):
        length, kind = struct.unpack_from("=HH", body, off)
        out[kind] = body[off + 4:off + length]
        off += (length + 3) & ~3
    return out


def test_request_names_the_destination_and_its_prefix_length():
    raw = r.getroute_request(7, A("198.18.1.2"))
    length, kind, flags, seq, _ = NLMSG_HDR.unpack_from(raw)
    assert (length, kind, flags, seq) == (len(raw), r.RTM_GETROUTE, 1, 7)
    body = raw[NLMSG_HDR.size:]
    family, dst_len, src_len = body[0], body[1], body[2]
    assert (family, dst_len, src_len) == (r.AF_INET, 32, 0)
    assert _attrs(body) == {r.RTA_DST: A("198.18.1.2").packed}


def test_input_lookup_carries_source_and_interface_index():
    raw = r.getroute_request(1, A("fd00::2"), src=A("fd00::9"), iif=5)
    body = raw[NLMSG_HDR.size:]
    assert (body[0], body[1], body[2]) == (r.AF_INET6, 128, 128)
    assert _attrs(body) == {r.RTA_DST: A("fd00::2").packed, r.RTA_SRC: A("fd00::9").packed,
                            r.RTA_IIF: struct.pack("=I", 5)}


def test_mixed_versions_are_refused():
    with pytest.raises(PacketError):
        r.getroute_request(1, A("fd00::2"), src=A("198.18.0.1"))


def _answer(seq: int, rtype: int, *attrs: bytes, family: int = r.AF_INET) -> bytes:
    body = r.RTMSG.pack(family, 32, 0, 0, 254, 2, 0, rtype, 0) + b"".join(attrs)
    return message(r.RTM_NEWROUTE, 0, seq, body)


def test_a_forward_route_gives_type_interface_gateway_and_source():
    data = _answer(3, 1, attr(r.RTA_OIF, struct.pack("=I", 4)),
                   attr(r.RTA_GATEWAY, A("198.18.1.1").packed),
                   attr(r.RTA_PREFSRC, A("198.18.1.2").packed))
    got = r.parse_getroute(data, 3)
    assert got == r.RouteAnswer("unicast", 4, A("198.18.1.1"), A("198.18.1.2"))


def test_local_route_and_other_sequence_numbers():
    data = _answer(2, 2) + _answer(3, 2, attr(r.RTA_OIF, struct.pack("=I", 1)))
    assert r.parse_getroute(data, 3) == r.RouteAnswer("local", 1)
    assert r.parse_getroute(data, 9) is None
    assert r.parse_getroute(_answer(3, 99), 3).type == "99"  # a type newer than this table


def test_an_error_is_the_reason_there_is_no_route_and_an_ack_is_not():
    req = NLMSG_HDR.pack(16, r.RTM_GETROUTE, 1, 5, 0)
    err = message(NlmsgType.ERROR, 0, 5, struct.pack("=i", -errno.ENETUNREACH) + req)
    ack = message(NlmsgType.ERROR, 0, 5, struct.pack("=i", 0) + req)
    assert r.parse_getroute(err, 5) == r.RouteAnswer(errno=errno.ENETUNREACH)
    assert r.parse_getroute(ack, 5) is None
    assert r.parse_getroute(ack + _answer(5, 2), 5).type == "local"


def test_attribute_bounds():
    good = attr(r.RTA_OIF, struct.pack("=I", 4))
    # an attribute that exactly fills the message is read; one byte more is refused
    assert r.parse_getroute(_answer(1, 1, good), 1).oif == 4
    bad = struct.pack("=HH", 9, r.RTA_OIF) + struct.pack("=I", 4)
    with pytest.raises(PacketError):
        r.parse_getroute(_answer(1, 1, bad), 1)
    with pytest.raises(PacketError):   # shorter than an attribute header
        r.parse_getroute(_answer(1, 1, struct.pack("=HH", 3, r.RTA_OIF)), 1)


def test_rtmsg_and_address_sizes():
    body = r.RTMSG.pack(r.AF_INET, 32, 0, 0, 254, 2, 0, 1, 0)
    assert r.parse_getroute(message(r.RTM_NEWROUTE, 0, 1, body), 1).type == "unicast"
    with pytest.raises(PacketError):
        r.parse_getroute(message(r.RTM_NEWROUTE, 0, 1, body[:-1]), 1)
    with pytest.raises(PacketError):  # an IPv4 gateway of 16 bytes
        r.parse_getroute(_answer(1, 1, attr(r.RTA_GATEWAY, A("fd00::1").packed)), 1)
    six = _answer(1, 1, attr(r.RTA_GATEWAY, A("fd00::1").packed), family=r.AF_INET6)
    assert r.parse_getroute(six, 1).gateway == A("fd00::1")
