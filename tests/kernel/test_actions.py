"""Actions and the keys that are not matches: reject, limit, log (to dmesg), counters, comment."""

import uuid

import pytest

from kit import (CLIENT4, R_SERVER4, R_SERVER6, SERVER4, SERVER6, dmesg_count, listing,
                 nft_objects, ping_burst, probes, reload_with, routed, rules, serve, up,
                 wait_until)


def test_reject_sends_reset_or_port_unreachable(net):
    server, client = net
    path = up(server, """
[[rule]]
id = "rej-tcp"
proto = "tcp"
dport = 80
action = "reject"

[[rule]]
id = "rej-udp"
proto = "udp"
dport = 53
action = "reject"

[[rule]]
id = "rej-icmp"
proto = "icmp"
action = "reject"

[[rule]]
id = "rej-icmpv6"
proto = "icmpv6"
icmp_type = "echo-request"
action = "reject"
""")
    with probes() as p:
        for addr in (SERVER4, SERVER6):
            p.expect(client, "tcp", addr, 80, expect="refused")  # a listener is there: our RST
            p.expect(client, "tcp", addr, 81, expect="open")
            p.expect(client, "udp", addr, 53, expect="refused")  # ECONNREFUSED: port-unreachable
            p.expect(client, "udp", addr, 54, expect="reply")
            p.expect(client, "ping", addr, expect="unreachable")
    # proto any: one rule id compiles to a TCP reset and an ICMPx port-unreachable.
    reload_with(server, path, """
[[rule]]
id = "rej-client"
src = ["198.18.0.2", "fd00::2"]
action = "reject"
""")
    with probes() as p:
        for addr in (SERVER4, SERVER6):
            p.expect(client, "tcp", addr, 81, expect="refused")
            p.expect(client, "udp", addr, 54, expect="refused")
            p.expect(client, "ping", addr, expect="unreachable")
    assert rules(server)["rej-client"]["packets"] == 6


def test_reject_at_forward_and_output(lab):
    client, router, server = routed(lab)
    serve(server, tcp=[80], udp=[53])
    up(router, """
[[rule]]
id = "rej-fwd"
hook = "forward"
proto = "tcp"
dport = 80
action = "reject"

[[rule]]
id = "rej-out"
hook = "output"
proto = "udp"
dport = 53
action = "reject"
""")
    with probes() as p:
        for addr in (R_SERVER4, R_SERVER6):
            p.expect(client, "tcp", addr, 80, expect="refused")
            p.expect(client, "udp", addr, 53, expect="reply")
            p.expect(router, "udp", addr, 53, expect="refused")
            p.expect(router, "tcp", addr, 80, expect="open")


LIMITER = """
[[rule]]
id = "ping-limit"
proto = "{proto}"
icmp_type = "echo-request"
limit = "1/minute burst 3"
action = "accept"

[[rule]]
id = "ping-drop"
proto = "{proto}"
icmp_type = "echo-request"
action = "drop"
"""


@pytest.mark.parametrize("addr,proto", [(SERVER4, "icmp"), (SERVER6, "icmpv6")])
def test_limit_is_an_accept_under_the_rate_then_a_drop(net, addr, proto):
    server, client = net
    up(server, LIMITER.format(proto=proto))
    sent = 20
    received = ping_burst(client, addr, sent)
    # 1/minute with a burst of 3: a handful pass, the rest fall through to the drop rule.
    assert 1 <= received <= 5
    got = rules(server)
    assert got["ping-limit"]["packets"] == received
    assert got["ping-drop"]["packets"] == sent - received


@pytest.fixture
def tag():
    return f"hk{uuid.uuid4().hex[:10]}"


def test_log_lines_reach_dmesg(net, kernel_log, tag):
    server, client = net
    up(server, f"""
[[rule]]
id = "log-drop-icmp"
hook = "prerouting"
priority = -300
proto = "icmp"
action = "drop"
log = "{tag}-drop4"

[[rule]]
id = "log-drop-icmpv6"
proto = "icmpv6"
icmp_type = "echo-request"
action = "drop"
log = "{tag}-drop6"

[[rule]]
id = "log-only"
proto = "tcp"
dport = 80
action = "log"
log = "{tag}-seen80"
""")
    with probes() as p:
        p.expect(client, "ping", SERVER4, expect="timeout")
        p.expect(client, "ping", SERVER6, expect="timeout")
        for addr in (SERVER4, SERVER6):
            p.expect(client, "tcp", addr, 80, expect="open")  # "log" logs, then lets it on
    wait_until(lambda: dmesg_count(f"{tag}-drop4 ") == 1, what="the IPv4 drop log line")
    wait_until(lambda: dmesg_count(f"{tag}-drop6 ") == 1, what="the IPv6 drop log line")
    wait_until(lambda: dmesg_count(f"{tag}-seen80 ") >= 4, what="the log-only lines")
    assert dmesg_count(f"{tag}-drop4 IN=eth-c", f"SRC={CLIENT4} DST={SERVER4}", "PROTO=ICMP") == 1
    assert dmesg_count(f"{tag}-drop6 IN=eth-c", "SRC=fd00:0000:0000:0000:0000:0000:0000:0002") == 1


def test_counters_and_comment(net):
    server, client = net
    up(server, """
[[rule]]
id = "count-echo4"
proto = "icmp"
icmp_type = "echo-request"
action = "accept"
comment = "counted pings"

[[rule]]
id = "count-echo6"
proto = "icmpv6"
icmp_type = "echo-request"
action = "accept"
""")
    before = rules(server)
    assert before["count-echo4"]["packets"] == 0 and before["count-echo4"]["bytes"] == 0
    assert ping_burst(client, SERVER4, 3) == 3
    assert ping_burst(client, SERVER6, 2) == 2
    got = rules(server)
    assert got["count-echo4"]["packets"] == 3
    assert got["count-echo4"]["bytes"] == 3 * 84      # 20 IP + 8 ICMP + 56 data
    assert got["count-echo6"]["packets"] == 2
    assert got["count-echo6"]["bytes"] == 2 * 104     # 40 IPv6 + 8 ICMPv6 + 56 data
    assert got["count-echo4"]["comment"] == "counted pings"
    comments = {r["comment"] for r in nft_objects(server, "rule") if r["table"] == "minifw"}
    assert comments == {"count-echo4: counted pings", "count-echo6"}
    assert [r["id"] for r in listing(server)["rules"]] == ["count-echo4", "count-echo6"]
