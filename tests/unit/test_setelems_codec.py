"""Our GETSETELEM dump codec (netlink/setelems.py) on replies captured from the kernel (6.18)
in a namespace: a hash set with counter values given at add time (2^32 and 2^64-1 among them),
an interval set of ports and ranges, an interval set of IPv6 prefixes, and a missing set."""

from __future__ import annotations

import errno

import pytest

from minifw.errors import PacketError
from minifw.netlink import setelems

# nft -f: add set inet minifw h4 { type ipv4_addr; counter; }; add element inet minifw h4 {
#   198.18.0.1 counter packets 5 bytes 300, 198.18.0.2 counter packets 0 bytes 0,
#   198.18.0.3 counter packets 4294967296 bytes 18446744073709551615 }
#   p { type inet_service; flags interval; counter; } { 22, 8000-8080, 9000 }
#   n6 { type ipv6_addr; flags interval; counter; } { fd00::/64, fd00:1::1 }
CAPTURED = {
    "h4": [
        bytes.fromhex("e00000000c0a020001000000ae0a0000010000020b0001006d696e69667700000700020068340000"
                      "b80003003c0001000c00010008000100c61200022c0007000c000100636f756e746572001c000200"
                      "0c00010000000000000000000c00020000000000000000003c0001000c00010008000100c6120003"
                      "2c0007000c000100636f756e746572001c0002000c000100ffffffffffffffff0c00020000000001"
                      "000000003c0001000c00010008000100c61200012c0007000c000100636f756e746572001c000200"
                      "0c000100000000000000012c0c0002000000000000000005"),
        bytes.fromhex("2c0000000c0a020001000000ae0a0000010000020b0001006d696e69667700000700020068340000"
                      "04000300140000000300020001000000ae0a000000000000"),
    ],
    "p": [
        bytes.fromhex("400100000c0a02000100000060efb1c6010000020b0001006d696e69667700000600020070000000"
                      "18010300180001000c000100060001002329000008000300000000013c0001000c00010006000100"
                      "232800002c0007000c000100636f756e746572001c0002000c00010000000000000000000c000200"
                      "0000000000000000180001000c000100060001001f91000008000300000000013c0001000c000100"
                      "060001001f4000002c0007000c000100636f756e746572001c0002000c0001000000000000000000"
                      "0c0002000000000000000000180001000c000100060001000017000008000300000000013c000100"
                      "0c00010006000100001600002c0007000c000100636f756e746572001c0002000c00010000000000"
                      "000000000c0002000000000000000000180001000c00010006000100000000000800030000000001"),
        bytes.fromhex("2c0000000c0a02000100000060efb1c6010000020b0001006d696e69667700000600020070000000"
                      "0400030014000000030002000100000060efb1c600000000"),
    ],
    "n6": [
        bytes.fromhex("280100000c0a020001000000ae0a0000010000020b0001006d696e6966770000070002006e360000"
                      "00010300240001001800010014000100fd0000010000000000000000000000020800030000000001"
                      "480001001800010014000100fd0000010000000000000000000000012c0007000c000100636f756e"
                      "746572001c0002000c00010000000000000000000c00020000000000000000002400010018000100"
                      "14000100fd0000000000000100000000000000000800030000000001480001001800010014000100"
                      "fd0000000000000000000000000000002c0007000c000100636f756e746572001c0002000c000100"
                      "00000000000000000c00020000000000000000002400010018000100140001000000000000000000"
                      "00000000000000000800030000000001"),
        bytes.fromhex("2c0000000c0a020001000000ae0a0000010000020b0001006d696e6966770000070002006e360000"
                      "04000300140000000300020001000000ae0a000000000000"),
    ],
    "missing": [
        bytes.fromhex("400000000200000001000000c1b7b69afeffffff2c0000000d0a0103010000000000000001000000"
                      "0b0001006d696e69667700000c0002006d697373696e6700"),
    ],
}


def decode(name):
    decoder = setelems.Decoder()
    out = []
    for datagram in CAPTURED[name]:
        out += decoder.receive_data(datagram)
    assert decoder.done
    return out


def v4(last):
    return bytes([198, 18, 0, last])


def test_hash_set_counters_up_to_64_bits():
    assert sorted(decode("h4")) == [(v4(1), 0, 5, 300), (v4(2), 0, 0, 0),
                                    (v4(3), 0, 1 << 32, (1 << 64) - 1)]


def test_interval_sets_start_and_end_elements():
    port = lambda n: n.to_bytes(2, "big")  # noqa: E731
    end = setelems.INTERVAL_END
    assert decode("p") == [(port(9001), end, 0, 0), (port(9000), 0, 0, 0),
                           (port(8081), end, 0, 0), (port(8000), 0, 0, 0),
                           (port(23), end, 0, 0), (port(22), 0, 0, 0), (port(0), end, 0, 0)]
    starts = [key.hex() for key, flags, _, _ in decode("n6") if not flags]
    assert starts == ["fd000001000000000000000000000001", "fd" + "0" * 30]


def test_the_fast_path_reads_what_the_walk_reads():
    """Elements after the first are read at the first one's offsets when their other bytes
    match; each must decode as a full attribute walk of it does."""
    for name in ("h4", "p", "n6"):
        walked = [e for datagram in CAPTURED[name] for e in _walk_all(datagram)]
        assert decode(name) == walked


def _walk_all(datagram):
    """Every element of one reply datagram (one message each here), walked attribute by
    attribute."""
    out = []
    view = memoryview(datagram)
    length = int.from_bytes(datagram[:4], "little")
    msg_type = int.from_bytes(datagram[4:6], "little")
    if msg_type != setelems.NEWSETELEM:
        return out
    for kind, a, b in setelems.attrs(view, 16 + 4, length):
        if kind != setelems.SetElemListAttr.ELEMENTS:
            continue
        for _, c, d in setelems.attrs(view, a, b):
            klo, khi, p, nb, flags = setelems._walk(view, c, d)
            counted = p >= 0
            out.append((datagram[klo:khi], flags,
                        int.from_bytes(datagram[p:p + 8], "big") if counted else 0,
                        int.from_bytes(datagram[nb:nb + 8], "big") if counted else 0))
    return out


def test_a_missing_set_is_refused_with_its_errno():
    with pytest.raises(setelems.DumpRefused) as caught:
        decode("missing")
    assert caught.value.errno == errno.ENOENT


def test_the_request_names_table_and_set():
    req = setelems.request("minifw", "r_input_0_1_v4", seq=7)
    assert int.from_bytes(req[:4], "little") == len(req)
    assert int.from_bytes(req[4:6], "little") == (10 << 8) | 13  # NFTABLES, GETSETELEM
    assert int.from_bytes(req[6:8], "little") == 0x301  # REQUEST | DUMP
    assert int.from_bytes(req[8:12], "little") == 7
    assert b"minifw\0" in req and b"r_input_0_1_v4\0" in req


@pytest.mark.parametrize("cut", [1, 4, 17])
def test_truncated_replies_raise_packet_errors(cut):
    data = CAPTURED["h4"][0]
    with pytest.raises(PacketError):
        setelems.Decoder().receive_data(data[:-cut])


@pytest.mark.parametrize("grow, fails", [(0, False), (4, True)])
def test_an_element_list_longer_than_its_message_is_refused(grow, fails):
    data = bytearray(CAPTURED["h4"][0])
    at = 16 + 4 + 12 + 8  # nlmsghdr, nfgenmsg, TABLE "minifw", SET "h4": then ELEMENTS
    assert int.from_bytes(data[at + 2:at + 4], "little") & 0xFF == 3
    size = int.from_bytes(data[at:at + 2], "little")
    assert at + size == len(data)  # it ends where the message ends
    data[at:at + 2] = (size + grow).to_bytes(2, "little")
    if fails:
        with pytest.raises(PacketError):
            setelems.Decoder().receive_data(bytes(data))
    else:
        assert len(setelems.Decoder().receive_data(bytes(data))) == 3
