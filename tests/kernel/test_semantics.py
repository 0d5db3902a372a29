"""Priorities, the drop policy and the stateful defaults, as packets see them (IPv4 and IPv6)."""

import json

from kit import (CLIENT4, CLIENT6, SERVER4, SERVER6, listing, probes, reach, reload_with,
                 rules, up)


def test_accept_passes_the_packet_on_to_the_next_priority(net):
    server, client = net
    up(server, """
[[rule]]
id = "accept-all-early"
priority = -10
action = "accept"

[[rule]]
id = "drop-80-later"
priority = 10
proto = "tcp"
dport = 80
action = "drop"
""")
    with probes() as p:
        for addr in (SERVER4, SERVER6):
            p.expect(client, "tcp", addr, 80, expect="timeout")
            p.expect(client, "tcp", addr, 81, expect="open")
    got = rules(server)
    # The early accept saw the SYNs to port 80, and they still met the later drop.
    assert got["accept-all-early"]["packets"] >= 4
    assert got["drop-80-later"]["packets"] >= 2


def test_drop_ends_the_packets_trip(net):
    server, client = net
    up(server, """
[[rule]]
id = "drop-80-early"
priority = -10
proto = "tcp"
dport = 80
action = "drop"

[[rule]]
id = "count-80-later"
priority = 10
proto = "tcp"
dport = 80
action = "accept"
""")
    with probes() as p:
        for addr in (SERVER4, SERVER6):
            p.expect(client, "tcp", addr, 80, expect="timeout")
    got = rules(server)
    assert got["drop-80-early"]["packets"] >= 2
    assert got["count-80-later"]["packets"] == 0


DROP_POLICY = """
[policy]
input = "drop"

[[rule]]
id = "tcp-80-early"
priority = -50
proto = "tcp"
dport = 80
action = "accept"

[[rule]]
id = "udp-53-late"
priority = 500
proto = "udp"
dport = 53
action = "accept"

[[rule]]
id = "tcp-81-other-hook"
hook = "prerouting"
proto = "tcp"
dport = 81
action = "accept"
"""


def test_drop_policy_drops_exactly_what_no_rule_at_the_hook_accepted(net):
    server, client = net
    up(server, DROP_POLICY)
    with probes() as p:
        for addr in (SERVER4, SERVER6):
            p.expect(client, "tcp", addr, 80, expect="open")      # accepted at -50
            p.expect(client, "udp", addr, 53, expect="reply")     # accepted at 500
            p.expect(client, "udp", addr, 54, expect="timeout")   # no rule
            p.expect(client, "ping", addr, expect="timeout")      # no rule
            # Accepted at prerouting, but no rule at input accepted it.
            p.expect(client, "tcp", addr, 81, expect="timeout")
    data = listing(server)
    assert [p["hook"] for p in data["policies"]] == ["input"]
    assert data["policies"][0]["packets"] >= 6
    assert {r["id"]: r["packets"] for r in data["rules"]}["tcp-81-other-hook"] >= 2


def test_accept_then_drop_at_a_higher_priority_still_drops_under_a_drop_policy(net):
    server, client = net
    up(server, DROP_POLICY + """
[[rule]]
id = "drop-80-after-accept"
priority = 100
proto = "tcp"
dport = 80
action = "drop"
""")
    with probes() as p:
        for addr in (SERVER4, SERVER6):
            p.expect(client, "tcp", addr, 80, expect="timeout")
            p.expect(client, "udp", addr, 53, expect="reply")


STATEFUL = """
[policy]
input = "drop"
{extra}

[[rule]]
id = "ping-in"
proto = "icmpv6"
icmp_type = "echo-request"
action = "accept"
"""


def flush_neighbours(*hosts):
    for host in hosts:
        host.run(["ip", "neigh", "flush", "all"])


def test_stateful_defaults_accept_replies_related_loopback_and_neighbour_discovery(net):
    server, client = net
    path = up(server, STATEFUL.format(extra=""))
    with probes() as p:
        for addr in (CLIENT4, CLIENT6):
            p.expect(server, "tcp", addr, 80, expect="open")    # the SYN-ACK is established
            # No UDP listener there: the port-unreachable coming back is related.
            p.expect(server, "udp", addr, 9, expect="refused")
        for addr in ("127.0.0.1", "::1"):
            p.expect(server, "tcp", addr, 80, expect="open")    # lo
        p.expect(client, "tcp", SERVER4, 80, expect="timeout")  # still a drop policy
    flush_neighbours(server, client)
    reach(client, "ping", SERVER6, expect="reply")             # needs neighbour solicitation in

    reload_with(server, path, STATEFUL.format(extra="stateful = false"))
    flush_neighbours(server, client)
    with probes() as p:
        for addr in (CLIENT4, CLIENT6, "127.0.0.1", "::1"):
            p.expect(server, "tcp", addr, 80, expect="timeout")
        for addr in (CLIENT4, CLIENT6):
            p.expect(server, "udp", addr, 9, expect="timeout")
        p.expect(client, "ping", SERVER6, expect="timeout")     # ND is dropped too
    status = json.loads(server.minifw("status", "--json").stdout)
    assert status["stateful"] is False and status["policies"]["input"] == "drop"


def test_output_drop_policy_is_stateful_too(net):
    server, client = net
    path = up(server, "[policy]\noutput = \"drop\"\n")
    with probes() as p:
        for addr in (SERVER4, SERVER6):
            p.expect(client, "tcp", addr, 80, expect="open")    # replies leave as established
        for addr in (CLIENT4, CLIENT6):
            p.expect(server, "tcp", addr, 80, expect="timeout")  # new connections out: dropped
        p.expect(server, "tcp", "127.0.0.1", 80, expect="open")
    reload_with(server, path, "[policy]\noutput = \"drop\"\nstateful = false\n")
    with probes() as p:
        for addr in (SERVER4, SERVER6):
            p.expect(client, "tcp", addr, 80, expect="timeout")
        p.expect(server, "tcp", "127.0.0.1", 80, expect="timeout")
