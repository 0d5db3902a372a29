"""The control socket's JSON-lines protocol (control/protocol.py): framing, both sides of the
size limit, and the errors a malformed request gets."""

import json

import pytest

from minifw.control import protocol
from minifw.control.protocol import LineReader, MAX_REQUEST
from minifw.errors import ControlError


def lines(reader, *chunks):
    out = []
    for chunk in chunks:
        out += reader.receive_data(chunk)
    return out


def test_a_line_of_exactly_the_limit_is_taken_and_one_byte_more_is_refused():
    at = b"x" * MAX_REQUEST
    assert lines(LineReader(), at + b"\n") == [at]
    (refused,) = lines(LineReader(), at + b"x\n")
    assert isinstance(refused, ControlError) and str(MAX_REQUEST) in str(refused)


def test_the_limit_holds_across_chunks_and_counts_no_newline():
    reader = LineReader(limit=10)
    assert lines(reader, b"12345", b"67890") == []          # 10 bytes held: not over
    assert reader.pending == 10
    assert lines(reader, b"\n") == [b"1234567890"]
    (refused,) = lines(reader, b"12345", b"678901")          # 11 bytes: refused at once,
    assert isinstance(refused, ControlError)                 # before any newline came
    assert reader.pending == 0


def test_an_overlong_line_is_skipped_to_its_newline_and_the_next_one_is_read():
    reader = LineReader(limit=8)
    got = lines(reader, b"a" * 20, b"b" * 20, b"c\n{\"op\":1}\n")
    assert isinstance(got[0], ControlError) and got[1:] == [b'{"op":1}']
    # reported once, however long it goes on
    assert sum(isinstance(g, ControlError) for g in got) == 1


def test_an_overlong_line_within_one_chunk_is_refused_and_the_rest_read():
    got = lines(LineReader(limit=4), b"12345\n1234\n\n")
    assert isinstance(got[0], ControlError) and got[1:] == [b"1234", b""]


def test_1_mib_in_one_chunk_gets_one_error_and_the_line_after_it_is_read():
    got = lines(LineReader(), b"y" * (1 << 20) + b"\n" + b'{"op": "ping"}\n')
    assert len(got) == 2 and isinstance(got[0], ControlError)
    assert protocol.parse_request(got[1]) == {"op": "ping"}


@pytest.mark.parametrize("line, why", [
    (b"garbage", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "an array"),
    (b'"status"', "a string"),
    (b"null", "null"),
    (b"{}", '"op"'),
    (b'{"op": ""}', '"op"'),
    (b'{"op": 3}', '"op"'),
    (b"[" * 100000, "not JSON"),
])
def test_malformed_requests_raise_only_control_errors(line, why):
    with pytest.raises(ControlError, match=why):
        protocol.parse_request(line)


def test_a_request_and_a_reply_make_the_round_trip_as_one_line():
    data = protocol.encode({"op": "status", "text": "a\nb"})
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    assert protocol.parse_request(data[:-1]) == {"op": "status", "text": "a\nb"}
    assert protocol.parse_reply(protocol.encode(protocol.ok(n=1))[:-1]) == {"ok": True, "n": 1}


def test_an_error_reply_raises_its_message():
    with pytest.raises(ControlError, match="no such op"):
        protocol.parse_reply(protocol.encode(protocol.error("no such op"))[:-1])
    with pytest.raises(ControlError, match="not a JSON object"):
        protocol.parse_reply(b"[]")


def test_unknown_op_names_the_known_ones():
    err = protocol.unknown_op("nope", ["status", "ping"])
    assert "'nope'" in str(err) and "ping, status" in str(err)
    assert json.loads(protocol.encode(protocol.error(str(err))))["ok"] is False
