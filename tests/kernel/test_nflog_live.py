"""The NFLOG socket against the kernel: bound inside a lab namespace, fed by nft rules
`log prefix "..." group N` made there, with real traffic from a client namespace."""

from __future__ import annotations

import ipaddress
import sys
import time

import pytest

from difflab import netns
from kit import CLIENT4, CLIENT6, SERVER4, SERVER6, nft_objects, pair
from minifw.kernel.nflog import GroupBusy, NflogSocket

GROUP = 41
RULES = f"""table inet ee {{
  chain input {{ type filter hook input priority 0; policy accept;
    icmp type echo-request log prefix "x" group {GROUP} drop
    icmpv6 type echo-request log prefix "rule:6" group {GROUP} drop
    udp dport 9999 counter log prefix "flood" group {GROUP} drop
  }}
}}
"""
# client -> server: n UDP datagrams to port 9999, as fast as Python sends them
FLOOD = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
         "for _ in range(int(sys.argv[2])): s.sendto(b'x'*64,(sys.argv[1],9999))\n")


@pytest.fixture
def hosts(lab):
    server, client = pair(lab)
    server.run(["nft", "-f", "-"], input=RULES)
    return server, client


def open_in(host, **kw) -> NflogSocket:
    with netns(host.ns):
        return NflogSocket(GROUP, **kw)


def collect(sock: NflogSocket, want: int, deadline: float = 3.0) -> list:
    got: list = []
    end = time.monotonic() + deadline
    while len(got) < want and time.monotonic() < end:
        if sock.wait(0.1):
            got += sock.receive()
    return got


def flood_counter(server) -> int:
    (rule,) = [r for r in nft_objects(server, "rule")
               if any("counter" in e for e in r["expr"])]
    return next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)


def test_pings_arrive_decoded_with_prefix_devices_and_numbers(hosts):
    server, client = hosts
    ifindex = int(server.run(["cat", "/sys/class/net/eth-c/ifindex"]).stdout)
    with open_in(server, timeout_ms=50) as sock:   # default batch: the timeout flushes
        assert sock.receive() == []
        started = time.monotonic()
        client.run(["ping", "-n", "-c", "1", "-W", "0.2", "-s", "300", SERVER4], check=False)
        client.run(["ping", "-n", "-c", "1", "-W", "0.2", SERVER6], check=False)
        p4, p6 = sorted(collect(sock, 2), key=lambda p: p.family)
        assert time.monotonic() - started < 3
    assert (p4.family, p4.hook, p4.prefix, p4.indev, p4.outdev, p4.seq) == (2, 1, "x",
                                                                         ifindex, None, 0)
    assert len(p4.payload) == 128 and p4.payload[9] == 1   # cut at the copy range; ICMP
    assert p4.payload[12:16] == ipaddress.ip_address(CLIENT4).packed
    assert (p6.family, p6.hook, p6.prefix, p6.indev, p6.seq) == (10, 1, "rule:6", ifindex, 1)
    assert p6.payload[8:24] == ipaddress.ip_address(CLIENT6).packed
    assert p6.timestamp is None or abs(p6.timestamp - time.time()) < 60
    assert sock.lost == 0 and sock.overruns == 0 and sock.received == 2


def test_a_second_socket_cannot_take_the_group(hosts):
    server, _ = hosts
    with open_in(server):
        with pytest.raises(GroupBusy):
            open_in(server)
    open_in(server).close()   # closing unbound it: the group is free again


def test_overflow_is_survived_and_every_loss_counted(hosts):
    server, client = hosts
    # a receive buffer far too small for the burst, read only after the flood
    with open_in(server, rcvbuf=16384, qthreshold=20, nlbufsiz=8192) as sock:
        client.run([sys.executable, "-c", FLOOD, SERVER4, "5000"])
        got = len(collect(sock, 5000, deadline=0.5))
        assert sock.overruns >= 1 and 0 < got < 5000
        # one more packet after the flood shows a loss at its very end as well
        client.run([sys.executable, "-c", FLOOD, SERVER4, "1"])
        time.sleep(0.15)
        got += len(collect(sock, 1, deadline=2.0))
        assert got + sock.lost == flood_counter(server) == 5001
        assert sock.received == got


def test_batches_fill_past_the_buffer_size(hosts):
    """The kernel fills a batch up to its buffer's real room (nearly twice nlbufsiz): no
    datagram may be cut, and a drained socket answers []."""
    server, client = hosts
    with open_in(server, nlbufsiz=4096, qthreshold=1000, timeout_ms=20) as sock:
        client.run([sys.executable, "-c", FLOOD, SERVER4, "600"])
        time.sleep(0.2)
        got = 0
        while batch := sock.receive(most=100):
            got += len(batch)
        assert sock.receive() == []
        assert got == 600 == flood_counter(server)
        assert sock.truncated == 0 and sock.lost == 0 and sock.malformed == 0
