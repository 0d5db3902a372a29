"""The nf_tables batch encoder's set elements (``NftBatch.add_elements``), against bytes laid out
by hand from <linux/netfilter/nf_tables.h>, and the cuts of a bulk add: into messages (an
attribute's 16-bit length) and into transactions (``chunked``), each pinned on both sides."""

from __future__ import annotations

import socket
import struct
import sys

import pytest

from minifw.kernel.nfnl import CHUNK
from minifw.netlink.nftables import (
    ELEMENTS_MAX, NftBatch, NftMsg, chunked, element, element_batches, element_run,
)
from minifw.netlink.nlmsg import NfnlMsg, split_messages

# Netlink headers are in host order: the literal bytes below are little-endian.
little_endian = pytest.mark.skipif(sys.byteorder != "little", reason="host-order bytes")

NEWSETELEM = (10 << 8) | NftMsg.NEWSETELEM


def v4(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, text)


def v6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def attrs(data: bytes | memoryview) -> list[tuple[int, bytes]]:
    """(type with flags, payload) of one level of attributes: a decoder of its own."""
    out, off = [], 0
    while off < len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        assert length >= 4 and off + length <= len(data)
        out.append((kind, bytes(data[off + 4:off + length])))
        off += (length + 3) & ~3
    assert off == len(data)
    return out


def element_messages(batch: NftBatch) -> list[tuple[int, bytes]]:
    """(flags, body after nfgenmsg) of each NEWSETELEM message; checks the batch's frame."""
    msgs = list(split_messages(batch.to_bytes()))
    assert [m[0] for m in msgs[:1] + msgs[-1:]] == [NfnlMsg.BATCH_BEGIN, NfnlMsg.BATCH_END]
    assert [m[2] for m in msgs] == list(range(1, len(msgs) + 1))   # seq 1, 2, ...
    assert all(m[0] == NEWSETELEM for m in msgs[1:-1])
    assert all(bytes(m[4][:4]) == b"\x01\x00\x00\x00" for m in msgs[1:-1])  # inet, v0, res 0
    return [(m[1], bytes(m[4][4:])) for m in msgs[1:-1]]


def keys_of(body: bytes) -> list[bytes]:
    (_, table), (_, name), (kind, elems) = attrs(body)
    assert kind == 3 | 0x8000                                       # ELEMENTS, nested
    out = []
    for kind, elem in attrs(elems):
        assert kind == 1 | 0x8000                                   # LIST_ELEM, nested
        key = dict(attrs(elem))[1 | 0x8000]                         # SET_ELEM_KEY
        assert attrs(key)[0][0] == 1                                # DATA_VALUE
        out.append(attrs(key)[0][1])
    return out


# ---- elements against bytes ---------------------------------------------------------------

@little_endian
def test_an_ipv4_element_is_elem_key_value_around_the_address():
    assert element(v4("198.18.0.1")) == bytes.fromhex(
        "1000 0180"      # LIST_ELEM, nested, 16 bytes
        "0c00 0180"      # SET_ELEM_KEY, nested, 12 bytes
        "0800 0100"      # DATA_VALUE, 8 bytes
        "c612 0001")     # 198.18.0.1, network order


@little_endian
def test_an_ipv6_element_carries_all_sixteen_bytes():
    assert element(v6("fd00::1")) == bytes.fromhex(
        "1c00 0180" "1800 0180" "1400 0100"
        "fd00 0000 0000 0000 0000 0000 0000 0001")


@little_endian
def test_a_timeout_follows_the_key_as_big_endian_milliseconds():
    assert element(v4("198.18.0.1"), 60_000) == bytes.fromhex(
        "1c00 0180" "0c00 0180" "0800 0100" "c612 0001"
        "0c00 0400"      # SET_ELEM_TIMEOUT, 12 bytes
        "0000 0000 0000 ea60")   # 60000 ms, be64
    assert element(v6("fd00::2"), 2**40)[-8:] == (2**40).to_bytes(8, "big")
    # timeout 0 is a timeout (the set's default is not asked for): the attribute is there
    assert len(element(v4("198.18.0.1"), 0)) == 28 and len(element(v4("198.18.0.1"))) == 16


@pytest.mark.parametrize("timeout", [None, 0, 1000, 7 * 86400 * 1000])
@pytest.mark.parametrize("keys", [[v4("198.18.0.1"), v4("198.19.255.255")],
                                  [v6("fd00::1"), v6("fd00:ffff::abcd"), v6("fd00::")]])
def test_a_run_of_elements_is_each_element_in_turn(keys, timeout):
    assert element_run(keys, timeout) == b"".join(element(k, timeout) for k in keys)
    assert element_run([], timeout) == b""


@little_endian
def test_a_batch_adding_one_address_byte_for_byte():
    batch = NftBatch().add_elements("minifw", "s_b_v4", [v4("198.18.0.1")], 60_000)
    assert batch.elements == 1 and batch.requests == {2: "add 1 elements to set minifw s_b_v4"}
    assert batch.to_bytes() == bytes.fromhex(
        # BATCH_BEGIN: len 20, type 0x10, flags REQUEST, seq 1, pid 0; nfgen unspec, res nftables
        "14000000 1000 0100 01000000 00000000" "00 00 000a"
        # NEWSETELEM: len 76, type 0x0a0c, flags REQUEST|ACK|CREATE, seq 2; nfgen inet
        "4c000000 0c0a 0504 02000000 00000000" "01 00 0000"
        "0b00 0100 6d696e696677 00 00"           # LIST_TABLE "minifw\0" + pad
        "0b00 0200 735f625f7634 00 00"           # LIST_SET "s_b_v4\0" + pad
        "2000 0380"                              # LIST_ELEMENTS, nested, 32 bytes
        "1c00 0180 0c00 0180 0800 0100 c6120001 0c00 0400 00000000 0000ea60"
        # BATCH_END: type 0x11, seq 3
        "14000000 1100 0100 03000000 00000000" "00 00 000a")


def test_empty_groups_add_no_message():
    batch = NftBatch().add_elements("minifw", "s_b_v4", [])
    assert len(batch) == 0 and batch.elements == 0


# ---- the cut into messages: ELEMENTS_MAX bytes of elements per message ----------------------

@pytest.mark.parametrize("key, timeout, width", [
    (v4("198.18.0.1"), None, 16), (v4("198.18.0.1"), 1000, 28),
    (v6("fd00::1"), None, 28), (v6("fd00::1"), 1000, 40)],
    ids=["v4", "v4-timeout", "v6", "v6-timeout"])
def test_a_message_holds_as_many_elements_as_fit_and_one_more_starts_another(key, timeout,
                                                                              width):
    fit = ELEMENTS_MAX // width
    assert len(element(key, timeout)) == width
    full = NftBatch().add_elements("minifw", "s", [key] * fit, timeout)
    assert len(full) == 1
    over = NftBatch().add_elements("minifw", "s", [key] * (fit + 1), timeout)
    assert len(over) == 2
    bodies = [body for _, body in element_messages(over)]
    assert [len(keys_of(b)) for b in bodies] == [fit, 1]
    # the nested attribute's 16-bit length holds the fullest message
    (_, _), (_, _), (_, elems) = attrs(bodies[0])
    assert fit * width == len(elems) <= ELEMENTS_MAX and len(elems) + 4 <= 0xFFFF


def test_timed_v6_elements_fill_a_message_to_the_byte():
    """40-byte elements divide the limit: 1625 make exactly ELEMENTS_MAX bytes, one message."""
    key = v6("fd00::1")
    assert ELEMENTS_MAX == 1625 * 40
    one = element_messages(NftBatch().add_elements("minifw", "s", [key] * 1625, 1000))
    assert len(one) == 1 and len(attrs(one[0][1])[2][1]) == ELEMENTS_MAX
    assert len(element_messages(NftBatch().add_elements("minifw", "s", [key] * 1626, 1000))) == 2


def test_every_key_goes_out_once_in_order_across_messages_and_sets():
    four = [v4(f"198.18.{i >> 8}.{i & 255}") for i in range(9000)]
    six = [v6(f"fd00::{i:x}") for i in range(5000)]
    batch = NftBatch().add_elements("minifw", "s_b_v4", four, None)
    batch.add_elements("minifw", "s_b_v6", six, 5000)
    msgs = element_messages(batch)
    assert all(flags == 0x405 for flags, _ in msgs)          # REQUEST | ACK | CREATE
    names = [attrs(body)[1][1] for _, body in msgs]
    assert names == [b"s_b_v4\0"] * 3 + [b"s_b_v6\0"] * 4   # 4062 x 2 + 876; 1625 x 3 + 125
    assert [k for _, body in msgs for k in keys_of(body)] == four + six
    assert batch.elements == 14_000 and len(batch.requests) == 7


# ---- the cut into transactions ---------------------------------------------------------------

def test_bulk_adds_are_cut_into_transactions_in_order():
    groups = [("a", [b"%d" % i for i in range(5)]), ("b", []), ("c", [b"x", b"y"])]
    cut = chunked(groups, size=3)
    assert cut == [[("a", [b"0", b"1", b"2"])], [("a", [b"3", b"4"]), ("c", [b"x"])],
                   [("c", [b"y"])]]
    assert chunked([("a", [])], size=3) == []
    assert [k for t in chunked(groups, size=2) for _, keys in t for k in keys] == \
        [k for _, keys in groups for k in keys]


def test_a_transaction_holds_exactly_its_size_and_one_more_key_starts_another():
    assert chunked([("a", [b"k"] * 3)], size=3) == [[("a", [b"k"] * 3)]]
    assert chunked([("a", [b"k"] * 4)], size=3) == [[("a", [b"k"] * 3)], [("a", [b"k"])]]
    # across two sets: 2 + 1 fill one transaction; the next key starts another
    assert len(chunked([("a", [b"k"] * 2), ("b", [b"k"])], size=3)) == 1
    assert len(chunked([("a", [b"k"] * 2), ("b", [b"k"] * 2)], size=3)) == 2


def test_an_import_of_chunk_addresses_is_one_transaction_and_one_more_is_two():
    key = v4("198.18.0.1")
    exact = list(element_batches("minifw", [("s", [key] * CHUNK)], None, CHUNK))
    assert [b.elements for b in exact] == [CHUNK]
    over = list(element_batches("minifw", [("s", [key] * (CHUNK - 1)), ("t", [key] * 2)],
                                1000, CHUNK))
    assert [b.elements for b in over] == [CHUNK, 1]
    assert over[1].requests == {2: "add 1 elements to set minifw t"}
    # each transaction is a batch of its own: BATCH_BEGIN ... BATCH_END, seq from 1
    assert all(list(split_messages(b.to_bytes()))[0][2] == 1 for b in over)
