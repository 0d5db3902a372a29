"""events/journald.py: the native protocol's datagrams, received on a real unix datagram
socket bound at a temporary path."""

from __future__ import annotations

import socket
import struct

from minifw.events.journald import Journal, build_datagram, field


def parse_native(data: bytes) -> dict[str, bytes]:
    """journald's parser, as its protocol documents it."""
    out: dict[str, bytes] = {}
    at = 0
    while at < len(data):
        end = data.index(b"\n", at)
        line = data[at:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            out[key.decode()] = value
            at = end + 1
        else:
            (size,) = struct.unpack_from("<Q", data, end + 1)
            start = end + 9
            out[line.decode()] = data[start:start + size]
            assert data[start + size:start + size + 1] == b"\n"
            at = start + size + 1
    return out


EVENT = {"ts": "2026-12-02T11:43:00.123456Z", "rule": "no-ping", "hook": "input",
         "priority": 0, "action": "drop", "family": "ip", "proto": "icmp",
         "src": "198.18.0.2", "dst": "198.18.0.1", "sport": None, "dport": None,
         "icmp_type": 8, "iif": "veth0", "oif": None, "len": 84, "prefix": "no-ping"}


def test_fields_simple_and_binary_safe():
    assert field("A", "b") == b"A=b\n"
    assert field("A", "x\ny") == b"A\n" + struct.pack("<Q", 3) + b"x\ny\n"
    assert field("A", "") == b"A=\n"
    assert field("A", "\n") == b"A\n" + struct.pack("<Q", 1) + b"\n\n"


def test_the_datagram_carries_message_priority_identifier_and_minifw_fields():
    got = parse_native(build_datagram(EVENT))
    assert got["SYSLOG_IDENTIFIER"] == b"minifw"
    assert got["PRIORITY"] == b"5"
    assert got["MINIFW_RULE"] == b"no-ping" and got["MINIFW_SRC"] == b"198.18.0.2"
    assert got["MINIFW_ICMP_TYPE"] == b"8" and got["MINIFW_PRIORITY"] == b"0"
    assert "MINIFW_SPORT" not in got and "MINIFW_OIF" not in got  # nulls are left out
    assert got["MESSAGE"].startswith(b"2026-12-02T11:43:00.123456Z drop no-ping input/0")
    logged = parse_native(build_datagram(dict(EVENT, action="log")))
    assert logged["PRIORITY"] == b"6"


def test_a_hook_message_is_a_field_and_in_the_line():
    got = parse_native(build_datagram(dict(EVENT, action="log", message="two\nlines")))
    assert got["MINIFW_MESSAGE"] == b"two\nlines"
    assert got["MESSAGE"].endswith(b"message='two\\nlines'")


def test_a_prefix_with_a_newline_survives():
    got = parse_native(build_datagram(dict(EVENT, rule=None, prefix="a\nb")))
    assert got["MINIFW_PREFIX"] == b"a\nb"
    assert b"\n" not in got["MESSAGE"]  # the readable line quotes it


def test_sent_to_a_real_socket(tmp_path):
    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    try:
        journal = Journal(path)
        assert journal.enabled and journal.send(EVENT)
        got = parse_native(server.recv(65536))
        assert got["MINIFW_DST"] == b"198.18.0.1" and journal.sent == 1
        server.close()
        assert not journal.send(EVENT) and journal.errors == 1  # journald gone: counted
        journal.close()
    finally:
        server.close()


def test_no_socket_no_journal(tmp_path):
    journal = Journal(str(tmp_path / "absent"))
    assert not journal.enabled and not journal.send(EVENT) and journal.errors == 0
