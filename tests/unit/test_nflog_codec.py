"""The NFLOG codec on netlink bytes captured from this kernel (in a namespace: nft rules
`log prefix "x" group 7` and friends, copy range 128, NFULNL_CFG_F_SEQ), the request bytes,
sequence-gap loss counting, both sides of every length boundary, and fuzzing: garbage raises
only PacketError."""

import errno
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifw.errors import PacketError
from minifw.netlink.nflog import SHAPES, CfgFlag, CopyMode, NflogDecoder, NflogPacket
from minifw.netlink.nlmsg import attr, message, message_at, nfgen

# A 228-byte ICMP echo request 198.18.0.2 -> 198.18.0.1 logged at input with prefix "x"
# (ifindex 2, seq 0, a time stamp; payload cut at 128 bytes), ...
# ... an ICMPv6 echo request fd00::2 -> fd00::1 by a rule with no prefix (seq 1), ...
# ... one datagram of three UDP packets to port 9999 with prefix "rule-1" (queue threshold
# 3: seq 2, 3, 4, then NLMSG_DONE), ...
# ... the ack of request 7 (a queue threshold), and the refusals of a second socket binding
# group 7 (seq 1: EPERM) and configuring unbound group 8 (seq 2: ENODEV).
PING4 = bytes.fromhex(
    "0001000000040000000000000000000002000007080001000800010006000a00780000000800040000000002"
    "10000800000600006e513697ac97000006000f000001000006001100000e000012001000ae4be3cab7106e51"
    "3697ac970800000014000300000000006b10022b000000000009c7c908000c000000000084000900450000e4"
    "bf9840004001ee58c6120002c61200010800867b2c5800012b02106b0000000065c709000000000010111213"
    "1415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60616263")
PING6 = bytes.fromhex(
    "e80000000004000000000000000000000a0000070800010086dd010005000a00000000000800040000000002"
    "10000800000600006e513697ac97000006000f000001000006001100000e000012001000ae4be3cab7106e51"
    "3697ac9786dd000014000300000000006b10022c000000000001d7b108000c00000000016c000900600b4e7b"
    "00403a40fd000000000000000000000000000002fd0000000000000000000000000000018000fd0b2c5c0001"
    "2c02106b000000005fd7010000000000101112131415161718191a1b1c1d1e1f202122232425262728292a2b"
    "2c2d2e2f3031323334353637")
BATCH3 = bytes.fromhex(
    "a40000000004000000000000000000000200000708000100080001000b000a0072756c652d31000008000400"
    "0000000210000800000600006e513697ac97000006000f000001000006001100000e000012001000ae4be3ca"
    "b7106e513697ac970800000014000300000000006b10022e000000000007b25f08000c000000000222000900"
    "4500001ec10c40004011ed9ac6120002c6120001af44270f000a8c4368690000a40000000004000000000000"
    "000000000200000708000100080001000b000a0072756c652d31000008000400000000021000080000060000"
    "6e513697ac97000006000f000001000006001100000e000012001000ae4be3cab7106e513697ac9708000000"
    "14000300000000006b10022e000000000007b27a08000c0000000003220009004500001ec10d40004011ed99"
    "c6120002c6120001af44270f000a8c4368690000a40000000004000000000000000000000200000708000100"
    "080001000b000a0072756c652d310000080004000000000210000800000600006e513697ac97000006000f00"
    "0001000006001100000e000012001000ae4be3cab7106e513697ac970800000014000300000000006b10022e"
    "000000000007b28308000c0000000004220009004500001ec10e40004011ed98c6120002c6120001af44270f"
    "000a8c43686900001400000003000000000000000000000000000007")
ACK = bytes.fromhex(
    "240000000200000107000000b52b0000000000001c000000010405000700000000000000")
BUSY = bytes.fromhex(
    "300000000200000001000000d8eb0d85ffffffff1c0000000104050001000000000000000000000705000100"
    "01000000")
NODEV = bytes.fromhex(
    "300000000200000002000000d8eb0d85edffffff1c0000000104050002000000000000000000000808000500"
    "00000002")

PACKET_TYPE = 0x0400


def decoded(data):
    return NflogDecoder().receive_data(data)


def test_decode_captured_ping4():
    (p,) = decoded(PING4)
    assert isinstance(p, NflogPacket)
    assert (p.family, p.hook, p.prefix, p.group, p.hw_protocol) == (2, 1, "x", 7, 0x0800)
    assert (p.indev, p.outdev, p.seq, p.mark) == (2, None, 0, 0)
    assert len(p.payload) == 128 and isinstance(p.payload, bytes)
    assert p.payload[0] == 0x45 and p.payload[9] == 1  # IPv4, ICMP
    assert ipaddress.ip_address(p.payload[12:16]) == ipaddress.ip_address("198.18.0.2")
    assert ipaddress.ip_address(p.payload[16:20]) == ipaddress.ip_address("198.18.0.1")
    assert struct.unpack(">H", p.payload[2:4])[0] == 228
    assert 1.7e9 < p.timestamp < 4e9


def test_decode_captured_ping6_without_prefix():
    (p,) = decoded(PING6)
    assert (p.family, p.hook, p.prefix, p.indev, p.outdev, p.seq) == (10, 1, "", 2, None, 1)
    assert p.hw_protocol == 0x86DD and p.payload[0] >> 4 == 6 and p.payload[6] == 58
    assert ipaddress.ip_address(p.payload[8:24]) == ipaddress.ip_address("fd00::2")
    assert p.payload[40] == 128  # echo request


def test_decode_captured_batch():
    packets = decoded(BATCH3)
    assert [p.seq for p in packets] == [2, 3, 4]
    assert {p.prefix for p in packets} == {"rule-1"}
    assert all(p.payload[9] == 17 and p.payload[22:24] == b"\x27\x0f" for p in packets)
    assert all(p.payload[-2:] == b"hi" for p in packets)


def test_replies_match_requests():
    d = NflogDecoder()
    for group in range(1, 8):
        d.qthreshold(group, 3)  # seq 1..7
    assert d.receive_data(ACK) == []
    assert d.replies == [(7, 0, "set queue threshold 3 on NFLOG group 7")]
    d = NflogDecoder()
    d.bind(7)
    d.qthreshold(8, 2)
    d.receive_data(BUSY)
    d.receive_data(NODEV)
    assert d.replies == [(1, errno.EPERM, "bind NFLOG group 7"),
                         (2, errno.ENODEV, "set queue threshold 2 on NFLOG group 8")]
    assert d.pending() == {}


def test_request_bytes():
    d = NflogDecoder()
    # header (len, type 0x0401, flags REQUEST|ACK, seq 1, pid 0), nfgenmsg (AF_UNSPEC, group 7)
    assert d.bind(7) == bytes.fromhex(
        "1c000000010405000100000000000000" "00000007" "0500010001000000")
    assert d.unbind(7)[-8:] == bytes.fromhex("0500010002000000")
    assert d.mode(7, CopyMode.PACKET, 128)[20:] == bytes.fromhex("0a000200000000800200" "0000")
    assert d.nlbufsiz(7, 65536)[20:] == bytes.fromhex("0800030000010000")
    assert d.timeout(7, 10)[20:] == bytes.fromhex("080004000000000a")
    assert d.qthreshold(300, 1000)[16:] == bytes.fromhex("0000012c" "08000500000003e8")
    assert d.flags(7, CfgFlag.SEQ)[20:] == bytes.fromhex("0600060000010000")
    assert list(d.pending()) == [1, 2, 3, 4, 5, 6, 7]


# ---- loss counting from sequence numbers ------------------------------------------------------

def with_seq(data: bytes, seq: int) -> bytes:
    """A captured single-packet datagram renumbered."""
    at = data.index(bytes.fromhex("08000c00"))
    return data[:at + 4] + struct.pack(">I", seq) + data[at + 8:]


def test_gaps_are_lost_packets():
    d = NflogDecoder()
    d.bind(7)
    d.receive_data(BATCH3)          # seq 2, 3, 4: 0 and 1 never came
    assert d.lost == 2
    d.receive_data(with_seq(PING4, 5))
    assert d.lost == 2
    d.receive_data(with_seq(PING4, 9))
    assert d.lost == 5


def test_a_step_back_is_a_restart_not_a_loss():
    d = NflogDecoder()
    d.bind(7)
    d.receive_data(BATCH3)
    d.receive_data(PING4)           # seq 0 again: the group was bound afresh
    d.receive_data(PING6)           # seq 1
    assert d.lost == 2


@pytest.mark.parametrize("gap, lost", [(0x7FFFFFFF, 0x7FFFFFFF), (0x80000000, 0), (1, 1), (0, 0)])
def test_gap_boundary_and_wrap(gap, lost):
    d = NflogDecoder()
    d.receive_data(with_seq(PING4, 0xFFFFFFFF))  # unbound: the first number seen is expected
    d.receive_data(with_seq(PING4, gap))  # 0 is expected next: the numbers wrap
    assert d.lost == lost


def test_packets_without_numbers_count_nothing():
    at = PING4.index(bytes.fromhex("08000c00"))
    unnumbered = PING4[:at] + PING4[at + 8:]
    unnumbered = struct.pack("=I", len(unnumbered)) + unnumbered[4:]
    d = NflogDecoder()
    d.bind(7)
    (p,) = d.receive_data(unnumbered)
    assert p.seq is None and d.lost == 0 and p.prefix == "x"


# ---- boundaries --------------------------------------------------------------------------------

HDR = attr(1, struct.pack(">HBB", 0x0800, 3, 0))  # NFULA_PACKET_HDR: IPv4, output hook


def pkt(*attrs: bytes, body: bytes | None = None) -> bytes:
    return message(PACKET_TYPE, 0, 0, nfgen(2, 7) + b"".join(attrs) if body is None else body)


def test_message_header_of_exactly_16_bytes():
    assert decoded(message(1, 0, 0, b"")) == []          # a NOOP with no body
    with pytest.raises(PacketError, match="needs 16"):
        decoded(message(1, 0, 0, b"")[:15])
    with pytest.raises(PacketError, match="claims 15"):
        decoded(struct.pack("=IHHII", 15, 1, 0, 0, 0))


def test_message_length_against_the_datagram():
    data = pkt(HDR)
    assert decoded(data)[0].hook == 3
    with pytest.raises(PacketError, match="claims"):
        decoded(struct.pack("=I", len(data) + 1) + data[4:])


def test_nfgenmsg_of_exactly_4_bytes():
    with pytest.raises(PacketError, match="no packet header"):
        decoded(pkt(body=nfgen(2, 7)))
    with pytest.raises(PacketError, match="no nfgenmsg"):
        decoded(pkt(body=nfgen(2, 7)[:3]))


def test_attribute_of_exactly_4_bytes():
    (p,) = decoded(pkt(HDR, attr(30, b"")))  # an empty attribute of a type we skip
    assert p.hook == 3 and p.payload == b""
    bad = HDR + struct.pack("=HH", 3, 30) + b"\0"
    with pytest.raises(PacketError, match="claims 3"):
        decoded(pkt(body=nfgen(2, 7) + bad))


def test_truncated_attribute_header():
    for extra in (1, 2, 3):
        with pytest.raises(PacketError, match="truncated"):
            decoded(pkt(body=nfgen(2, 7) + HDR + b"\0" * extra))


def test_attribute_ending_at_the_message_end_or_past_it():
    body = nfgen(2, 7) + HDR + struct.pack("=HH", 7, 9) + b"abc"   # payload, no padding
    assert decoded(pkt(body=body))[0].payload == b"abc"
    body = nfgen(2, 7) + HDR + struct.pack("=HH", 8, 9) + b"abc"
    with pytest.raises(PacketError, match="claims 8"):
        decoded(pkt(body=body))


def test_packet_header_needs_3_bytes():
    assert decoded(pkt(attr(1, b"\x08\x00\x02")))[0].hook == 2
    with pytest.raises(PacketError, match="needs 3"):
        decoded(pkt(attr(1, b"\x08\x00")))


@pytest.mark.parametrize("kind, field", [(4, "indev"), (5, "outdev"), (2, "mark"), (12, "seq")])
def test_u32_attributes_need_exactly_4_bytes(kind, field):
    (p,) = decoded(pkt(HDR, attr(kind, b"\0\0\1\2")))
    assert getattr(p, field) == 0x102
    for size in (3, 5):
        with pytest.raises(PacketError, match="needs 4"):
            decoded(pkt(HDR, attr(kind, b"\1" * size)))


def test_physical_devices_stand_in_for_missing_ones():
    (p,) = decoded(pkt(HDR, attr(6, b"\0\0\0\5"), attr(7, b"\0\0\0\6")))
    assert (p.indev, p.outdev) == (5, 6)
    (p,) = decoded(pkt(HDR, attr(4, b"\0\0\0\1"), attr(6, b"\0\0\0\5")))
    assert p.indev == 1


def test_timestamp_needs_exactly_16_bytes():
    (p,) = decoded(pkt(HDR, attr(3, struct.pack(">QQ", 1_800_000_000, 250_000))))
    assert p.timestamp == 1_800_000_000.25
    for size in (15, 17):
        with pytest.raises(PacketError, match="needs 16"):
            decoded(pkt(HDR, attr(3, b"\0" * size)))


def test_prefix_stops_at_its_nul_and_tolerates_bad_utf8():
    assert decoded(pkt(HDR, attr(10, b"set:blocked\0")))[0].prefix == "set:blocked"
    assert decoded(pkt(HDR, attr(10, b"abc")))[0].prefix == "abc"
    assert decoded(pkt(HDR, attr(10, b"\xff\0")))[0].prefix == "\ufffd"


def test_unexpected_message_type():
    with pytest.raises(PacketError, match="unexpected"):
        decoded(message(0x0401, 0, 0, nfgen(2, 7)))


# ---- fuzz --------------------------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_packet_error(data):
    try:
        NflogDecoder().receive_data(data)
    except PacketError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([PING4, PING6, BATCH3, ACK, BUSY]), st.data())
def test_mutated_captures_raise_only_packet_error(sample, data):
    buf = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(buf) - 1))
        buf[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    try:
        NflogDecoder().receive_data(bytes(buf[:cut]))
    except PacketError:
        pass


# ---- runs of one layout (one mask check, one unpack) against message by message ----------------

ONE_UDP = BATCH3[:0xA4]   # the first message of the batch: its own layout
DONE = BATCH3[-20:]


def renumbered(message_bytes: bytes, seq: int) -> bytes:
    at = message_bytes.index(bytes.fromhex("08000c00"))
    return message_bytes[:at + 4] + struct.pack(">I", seq) + message_bytes[at + 8:]


def one_by_one(datagram: bytes) -> list:
    """The reference: each message decoded in a datagram of its own, by a fresh decoder."""
    out, off = [], 0
    while off < len(datagram):
        length, _, _ = message_at(datagram, off, len(datagram))
        out += NflogDecoder().receive_data(datagram[off:off + length])
        off += (length + 3) & ~3
    return out


@pytest.mark.parametrize("count", [1, 2, 63, 64, 65, 130, 300])
def test_a_long_run_decodes_as_message_by_message(count):
    datagram = b"".join(renumbered(ONE_UDP, i) for i in range(count)) + DONE
    d = NflogDecoder()
    d.bind(7)
    packets = d.receive_data(datagram)
    assert packets == one_by_one(datagram[:-20])
    assert [p.seq for p in packets] == list(range(count)) and d.lost == 0


def test_mixed_layouts_in_one_datagram():
    """IPv4 with prefix "x", IPv6 with none, UDP with "rule-1": each switch of layout is found,
    whichever message comes first, and every packet keeps its own fields."""
    v4, v6 = PING4, PING6
    parts = [ONE_UDP, ONE_UDP, v4, v6, ONE_UDP, v6, v6, v4]
    datagram = b"".join(parts)
    packets = NflogDecoder().receive_data(datagram)
    assert packets == one_by_one(datagram)
    assert [p.prefix for p in packets] == ["rule-1", "rule-1", "x", "", "rule-1", "", "", "x"]
    assert [p.family for p in packets] == [2, 2, 2, 10, 2, 10, 10, 2]


def test_a_prefix_of_the_same_length_is_another_layout():
    other = ONE_UDP.replace(b"rule-1", b"rule-2")
    packets = NflogDecoder().receive_data(ONE_UDP + other + ONE_UDP)
    assert [p.prefix for p in packets] == ["rule-1", "rule-2", "rule-1"]


def test_values_differ_within_a_run():
    """Devices, mark, payload, family and group are values, not layout: each packet its own."""
    first = ONE_UDP
    second = bytearray(ONE_UDP)
    at = ONE_UDP.index(bytes.fromhex("08000400")) + 4        # the input device
    second[at:at + 4] = struct.pack(">I", 9)
    second[-6:-2] = b"HI!!"                                  # the payload's last bytes
    second[16:20] = nfgen(10, 8)                              # family, group
    packets = NflogDecoder().receive_data(first + bytes(second))
    assert [(p.indev, p.family, p.group) for p in packets] == [(2, 2, 7), (9, 10, 8)]
    assert packets[1].payload[-4:] == b"HI!!" != packets[0].payload[-4:]


@pytest.mark.parametrize("where", [0, 4, 20, 24, 0xA0])
def test_a_changed_header_inside_a_run_is_not_taken_for_the_layout(where):
    """Any header byte a run's mask covers (message length and type, attribute lengths and
    types) that differs ends the run there: that message is decoded (or refused) alone."""
    run = [bytearray(renumbered(ONE_UDP, i)) for i in range(70)]
    changed = run[40]
    if where == 0xA0:                                        # the payload attribute's type
        at = ONE_UDP.index(bytes.fromhex("22000900"))
        changed[at + 2] = 0x1E                               # 9 -> 30: an unknown attribute
    else:
        changed[where] ^= 0x01
    datagram = b"".join(map(bytes, run))
    try:
        packets = NflogDecoder().receive_data(datagram)
    except PacketError:
        with pytest.raises(PacketError):
            one_by_one(datagram)
        return
    assert packets == one_by_one(datagram)
    if where == 0xA0:
        assert packets[40].payload == b"" and packets[41].payload == packets[39].payload


def test_many_layouts_beyond_what_is_remembered():
    prefixes = [f"p{i:02d}".encode() for i in range(SHAPES + 5)]
    parts = [ONE_UDP.replace(b"rule-1", b"ru" + p + b"x") for p in prefixes] * 2
    packets = NflogDecoder().receive_data(b"".join(parts))
    assert [p.prefix for p in packets] == [f"ru{p.decode()}x" for p in prefixes] * 2


def test_the_last_message_without_its_padding():
    """A message whose length is not a multiple of 4 ends the datagram without padding."""
    body = nfgen(2, 7) + HDR + struct.pack("=HH", 7, 9) + b"abc"
    assert len(body) % 4 == 3
    data = pkt(body=body)
    assert NflogDecoder().receive_data(data)[0].payload == b"abc"
    assert [p.payload for p in NflogDecoder().receive_data(data + data[:0])] == [b"abc"]
