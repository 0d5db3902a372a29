"""The recvmmsg burst receiver on a real (unprivileged) datagram socket pair: bursts in order,
each datagram its own copy, oversized datagrams reported and left out, errors as socket.recv's."""

import socket

import pytest

from minifw.kernel import mmsg

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="no recvmmsg in this C library")


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield a, b
    a.close()
    b.close()


def test_a_burst_takes_what_is_queued_up_to_the_slots(pair):
    a, b = pair
    r = mmsg.BurstReceiver(b, slots=8, slot_size=64)
    sent = [bytes([i]) * (i + 1) for i in range(11)]
    for d in sent:
        a.send(d)
    first = r.receive()
    second = r.receive()
    assert [bytes(d) for d in first] == sent[:8]
    assert [bytes(d) for d in second] == sent[8:]
    first[0][0] = 99                        # copies: changing one touches nothing else
    a.send(b"next")
    assert [bytes(d) for d in r.receive()] == [b"next"] and second[0] == sent[8]


def test_oversized_datagram_is_reported_and_left_out(pair):
    a, b = pair
    r = mmsg.BurstReceiver(b, slots=4, slot_size=16)
    seen = []
    r.on_truncated = lambda head, size: seen.append((bytes(head), size))
    a.send(b"small")
    a.send(b"z" * 40)
    a.send(b"after")
    assert [bytes(d) for d in r.receive()] == [b"small", b"after"]
    assert seen == [(b"z" * 16, 40)]


def test_nothing_queued_on_a_non_blocking_socket_raises_like_recv(pair):
    _, b = pair
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        mmsg.BurstReceiver(b, slots=4, slot_size=16).receive()


def test_recv_loop_fallback_has_the_same_interface(pair):
    a, b = pair
    for d in (b"1", b"22", b"333"):
        a.send(d)
    assert mmsg.RecvLoop(b, slots=2, slot_size=16).receive() == [b"1", b"22"]
