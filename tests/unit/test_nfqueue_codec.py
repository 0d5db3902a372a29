"""The nfqueue codec on netlink bytes captured from this kernel, plus fuzzing: garbage raises
only PacketError (minifw's own error), never anything else."""

import errno
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifw.errors import PacketError
from minifw.hooks.packet import Packet
from minifw.netlink.nfqueue import (
    Ack, CfgFlag, CopyMode, NfqueueCodec, QueuedPacket, Refused, Verdict, VerdictWriter,
)

# Captured in a namespace: queue 7, input hook, 128-byte copy range, NFQA_CFG_F_GSO.
# A 228-byte ICMP echo request on lo (truncated copy: NFQA_CAP_LEN = 228) ...
PING = bytes.fromhex(
    "e0000000000300000000000000000000020000070b000100000000010800010008000500000000011000090000"
    "060000000000000000000014000400000000006b084fd60000000000074f5008000d00000000e408000e000000"
    "000484000a00450000e41b3d4000400120da7f0000017f0000010800232828d60001d64f086b000000002b4f07"
    "0000000000101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637"
    "38393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60616263")
# ... and a UDP datagram "hello" from ::1 to [::1]:5353 (whole packet copied).
UDP6 = bytes.fromhex(
    "8d0000000003000000000000000000000a0000070b0001000000000286dd0100080005000000000110000900000"
    "60000000000000000000014000400000000006b084fd6000000000007506208000e000000000139000a00600136"
    "52000d11400000000000000000000000000000000100000000000000000000000000000001a55214e9000d0020"
    "68656c6c6f")
# The kernel's answers to "bind queue 8" (seq 2: ack) and "bind queue 7" again (seq 3: EBUSY).
ACK = bytes.fromhex("240000000200000102000000bf280000000000001c000000020305000200000000000000")
EBUSY = bytes.fromhex("300000000200000003000000bf280000f0ffffff1c00000002030500030000000000000"
                      "0000000070800010001000000")


def test_decode_captured_ping():
    (ev,) = NfqueueCodec().receive_data(PING)
    assert isinstance(ev, QueuedPacket)
    assert (ev.queue, ev.id, ev.hook, ev.hw_protocol) == (7, 1, 1, 0x0800)
    assert ev.cap_len == 228 and ev.length == 228 and len(ev.payload) == 128
    assert ev.indev == 1 and ev.mark == 0 and ev.ct_info is None
    pkt = Packet(ev)
    assert pkt.version == 4 and pkt.proto == "icmp" and pkt.icmp_type == 8
    assert pkt.src == "127.0.0.1" and pkt.dst == ipaddress.ip_address("127.0.0.1")
    assert pkt.src in ipaddress.ip_network("127.0.0.0/8")
    assert pkt.src in {ipaddress.ip_address("127.0.0.1")} and str(pkt.dst) == "127.0.0.1"
    assert pkt.src != "::1" and pkt.src != "not an address"
    assert pkt.sport is None and pkt.hook == "input" and pkt.ct_state is None
    with pytest.raises(PacketError, match="payload=True"):
        pkt.payload  # only headers were copied


def test_decode_captured_udp6():
    (ev,) = NfqueueCodec().receive_data(UDP6)
    pkt = Packet(ev, ifname=lambda i: {1: "lo"}.get(i))
    assert pkt.version == 6 and pkt.proto == "udp"
    assert pkt.src == "::1" and pkt.dst == ipaddress.IPv6Address("::1")
    assert pkt.dport == 5353 and pkt.payload == b"hello" and pkt.length == 53
    assert pkt.src in {ipaddress.ip_address("::1")} and pkt.src != "127.0.0.1"
    assert pkt.iif == "lo" and pkt.oif is None and pkt.hook == "input"
    assert pkt.id == 2


def test_acks_and_refusals_match_requests():
    codec = NfqueueCodec()
    codec.bind(1)  # seq 1
    codec.bind(8)  # seq 2
    codec.bind(7)  # seq 3
    assert codec.receive_data(ACK) == [Ack(2)]
    (refused,) = codec.receive_data(EBUSY)
    assert isinstance(refused, Refused) and refused.errno == errno.EBUSY
    assert refused.request == "bind queue 7"
    assert list(codec.pending()) == [1]


def test_request_bytes():
    codec = NfqueueCodec()
    assert codec.bind(7) == bytes.fromhex(
        "1c000000020305000100000000000000000000070800010001000000")
    params = codec.params(7, CopyMode.PACKET, 128)
    assert params[16:20] == bytes([0, 0, 0, 7]) and params[-8:] == bytes.fromhex(
        "0000008002000000")  # copy_range 128 (big-endian), mode PACKET, attribute padding
    flags = codec.flags(7, CfgFlag.GSO | CfgFlag.FAIL_OPEN, CfgFlag.GSO | CfgFlag.FAIL_OPEN)
    assert flags[20:] == bytes.fromhex("0800050000000005" "0800040000000005")


def test_verdict_batch_bytes():
    v = NfqueueCodec().verdict_batch(7, 41, Verdict.ACCEPT)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", v)
    assert (length, kind, flags) == (len(v), (3 << 8) | 3, 1)
    assert v[16:20] == bytes([0, 0, 0, 7])
    assert v[20:32] == bytes.fromhex("0c000200" "00000001" "00000029")
    marked = NfqueueCodec().verdict_batch(7, 41, Verdict.ACCEPT, mark=0x20000000)
    assert marked[20:28] == bytes.fromhex("0800030020000000")  # NFQA_MARK, then the header
    assert marked[28:] == v[20:32]
    writer = VerdictWriter()
    for mark in (None, 0x20000000):
        for pid in (41, 7, 0xFFFFFFFF):
            assert writer.batch(7, pid, 1, mark) == NfqueueCodec().verdict_batch(
                7, pid, Verdict.ACCEPT, mark)


@pytest.mark.parametrize("cut", [1, 10, 17, 30, 60, len(PING) - 1])
def test_truncated_captures_raise_packet_error(cut):
    with pytest.raises(PacketError):
        NfqueueCodec().receive_data(PING[:cut])


def _touch_all(pkt: Packet) -> None:
    for field in ("version", "src", "dst", "proto", "sport", "dport", "icmp_type", "length",
                  "iif", "oif", "hook", "mark", "ct_state", "payload", "raw"):
        try:
            getattr(pkt, field)
        except PacketError:
            pass


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_garbage_raises_only_packet_error(data):
    try:
        events = NfqueueCodec().receive_data(data)
    except PacketError:
        return
    for ev in events:
        if isinstance(ev, QueuedPacket):
            _touch_all(Packet(ev))


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(PING) - 1), st.integers(0, 255), st.integers(0, len(UDP6) - 1))
def test_fuzz_mutated_captures(i, byte, j):
    for data, k in ((PING, i), (UDP6, j)):
        mutated = bytearray(data)
        mutated[k % len(data)] = byte
        try:
            events = NfqueueCodec().receive_data(bytes(mutated))
        except PacketError:
            continue
        for ev in events:
            if isinstance(ev, QueuedPacket):
                _touch_all(Packet(ev))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_packet_fields(payload):
    q = QueuedPacket(1, 1, 0x0800, 0, payload, 0, 0, 0, None, None)
    _touch_all(Packet(q))
