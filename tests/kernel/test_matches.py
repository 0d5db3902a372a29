"""Every match key, on real traffic: family, proto, src, dst, sport, dport, iif, oif, state,
icmp_type (limit, log and comment have their own files). Each test probes both what the rule
matches and what it must leave alone, over IPv4 and IPv6."""

import pytest

from kit import (CLIENT4, CLIENT4B, CLIENT6, CLIENT6B, SERVER4, SERVER4B, SERVER6, SERVER6B,
                 nft_objects, pair, probes, rules, serve, up)


@pytest.fixture
def net(lab):
    server, client, client2 = pair(lab, second_client=True)
    serve(server, tcp=[80, 8000, 8001, 8002, 8003], udp=[53, 54])
    serve(client, tcp=[80])
    serve(client2, tcp=[80])
    return server, client, client2


def test_family_and_proto(net):
    server, client, _ = net
    up(server, """
[[rule]]
id = "v4-80"
family = "ip"
proto = "tcp"
dport = 80
action = "drop"

[[rule]]
id = "v6-8000"
family = "ip6"
proto = "tcp"
dport = 8000
action = "drop"

[[rule]]
id = "udp-53"
proto = "udp"
dport = 53
action = "drop"

[[rule]]
id = "icmp-v4-only"
proto = "icmp"
action = "drop"
""")
    with probes() as p:
        p.expect(client, "tcp", SERVER4, 80, expect="timeout")
        p.expect(client, "tcp", SERVER6, 80, expect="open")
        p.expect(client, "tcp", SERVER4, 8000, expect="open")
        p.expect(client, "tcp", SERVER6, 8000, expect="timeout")
        for addr in (SERVER4, SERVER6):
            p.expect(client, "udp", addr, 53, expect="timeout")
            p.expect(client, "udp", addr, 54, expect="reply")
        p.expect(client, "ping", SERVER4, expect="timeout")
        p.expect(client, "ping", SERVER6, expect="reply")
    got = rules(server)
    assert got["v4-80"]["packets"] >= 1 and got["v6-8000"]["packets"] >= 1
    assert got["udp-53"]["packets"] == 2 and got["icmp-v4-only"]["packets"] == 1


def test_src_and_dst_with_cidr_and_mixed_lists(net):
    server, client, client2 = net
    up(server, """
[[rule]]
id = "from-client"
src = ["198.18.0.0/24", "fd00::2"]
proto = "tcp"
dport = 8000
action = "drop"

[[rule]]
id = "to-first-link"
dst = ["198.18.0.0/31", "fd00::/127"]
proto = "tcp"
dport = 8001
action = "drop"
""")
    with probes() as p:
        for addr in (SERVER4, SERVER6):
            p.expect(client, "tcp", addr, 8000, expect="timeout")
            p.expect(client, "tcp", addr, 8001, expect="timeout")
        for addr in (SERVER4B, SERVER6B):
            p.expect(client2, "tcp", addr, 8000, expect="open")
            p.expect(client2, "tcp", addr, 8001, expect="open")
    # One minifw rule per id: its v4 and v6 nft rules share the id and their counters add up.
    nft_ids = [r["comment"] for r in nft_objects(server, "rule") if r["table"] == "minifw"]
    assert nft_ids.count("from-client") == 2 and nft_ids.count("to-first-link") == 2
    got = rules(server)
    assert got["from-client"]["packets"] >= 2 and got["to-first-link"]["packets"] >= 2
    assert got["from-client"]["match"]["src"] == ["198.18.0.0/24", "fd00::2"]


def test_sport_and_dport_ranges_and_lists(net):
    server, client, _ = net
    up(server, """
[[rule]]
id = "dports"
proto = "tcp"
dport = ["8000-8001", 8003]
action = "drop"

[[rule]]
id = "sports-tcp"
proto = "tcp"
sport = "40000-40009"
action = "drop"

[[rule]]
id = "sports-udp"
proto = "udp"
sport = [5353, 5355]
action = "drop"
""")
    with probes() as p:
        for addr in (SERVER4, SERVER6):
            for port in (8000, 8001, 8003):
                p.expect(client, "tcp", addr, port, expect="timeout")
            p.expect(client, "tcp", addr, 8002, expect="open")
        p.expect(client, "tcp", SERVER4, 80, sport=40005, expect="timeout")
        p.expect(client, "tcp", SERVER6, 80, sport=40009, expect="timeout")
        p.expect(client, "tcp", SERVER4, 80, sport=40010, expect="open")
        p.expect(client, "tcp", SERVER6, 80, sport=39999, expect="open")
        p.expect(client, "udp", SERVER4, 53, sport=5353, expect="timeout")
        p.expect(client, "udp", SERVER6, 53, sport=5355, expect="timeout")
        p.expect(client, "udp", SERVER4, 53, sport=5354, expect="reply")
    got = rules(server)
    assert got["dports"]["packets"] >= 6
    assert got["sports-tcp"]["packets"] >= 2 and got["sports-udp"]["packets"] == 2


def test_iif_and_oif(net):
    server, client, client2 = net
    up(server, """
[[rule]]
id = "in-from-c"
iif = "eth-c"
proto = "tcp"
dport = 8000
action = "drop"

[[rule]]
id = "out-to-d"
hook = "output"
oif = ["eth-d", "nosuch0"]
proto = "tcp"
dport = 80
action = "drop"
""")
    with probes() as p:
        for addr in (SERVER4, SERVER6):
            p.expect(client, "tcp", addr, 8000, expect="timeout")
        for addr in (SERVER4B, SERVER6B):
            p.expect(client2, "tcp", addr, 8000, expect="open")
        for addr in (CLIENT4B, CLIENT6B):
            p.expect(server, "tcp", addr, 80, expect="timeout")
        for addr in (CLIENT4, CLIENT6):
            p.expect(server, "tcp", addr, 80, expect="open")
    got = rules(server)
    assert got["in-from-c"]["packets"] >= 2 and got["out-to-d"]["packets"] >= 2


def test_state(net):
    server, client, _ = net
    up(server, """
[[rule]]
id = "no-new-tcp-in"
proto = "tcp"
state = "new"
action = "drop"
""")
    with probes() as p:
        for addr in (SERVER4, SERVER6):
            p.expect(client, "tcp", addr, 80, expect="timeout")    # a SYN in is new
        for addr in (CLIENT4, CLIENT6):
            p.expect(server, "tcp", addr, 80, expect="open")       # the SYN-ACK back is established
    assert rules(server)["no-new-tcp-in"]["match"]["state"] == ["new"]


def test_icmp_type_by_name_and_number(net):
    server, client, _ = net
    up(server, """
[[rule]]
id = "no-echo-v4"
proto = "icmp"
icmp_type = "echo-request"
action = "drop"

[[rule]]
id = "no-echo-v6"
proto = "icmpv6"
icmp_type = [128]
action = "drop"
""")
    with probes() as p:
        for addr in (SERVER4, SERVER6):
            p.expect(client, "ping", addr, expect="timeout")      # requests in are dropped
        for addr in (CLIENT4, CLIENT6):
            p.expect(server, "ping", addr, expect="reply")        # replies in are not
    got = rules(server)
    assert got["no-echo-v4"]["packets"] == 1 and got["no-echo-v6"]["packets"] == 1
