"""The lockout guard's decisions over the pure engine, its parsers, and /proc/net/tcp lines."""

from __future__ import annotations

import ipaddress

import pytest

from minifw.engine.explain import HookFunction
from minifw.engine.guard import (
    GUARD_CLIENT_PORT, Connection, GuardError, GuardSpec, check, dedupe, no_connection_warning,
    parse_guard, parse_ssh_connection, refusal, runtime_warnings, sessions_to,
)
from minifw.engine.sockets import parse_tcp_line, parse_tcp_table
from minifw.errors import ConfigError, MinifwError
from minifw.model import Hook, Ruleset

ip = ipaddress.ip_address
SSH = Connection(ip("198.18.0.2"), 40000, ip("198.18.0.1"), 22, "sshd")
SSH6 = Connection(ip("fd00::2"), 51000, ip("fd00::1"), 22, "SSH_CONNECTION")
ACCEPT_SSH = {"id": "ssh", "proto": "tcp", "dport": 22, "action": "accept"}


def rs(*rules: dict, **policy) -> Ruleset:
    data: dict = {"rule": list(rules)}
    if policy:
        data["policy"] = policy
    return Ruleset.from_toml(data)


def verdicts(findings) -> dict[str, tuple[str, str]]:
    return {f.direction: (f.verdict, f.decider) for f in findings}


# ---- what blocks ------------------------------------------------------------------------------

@pytest.mark.parametrize("policy, expected", [
    # stateful: the running session survives an input drop; only the next login is cut
    ({"input": "drop"}, {"new": ("drop", "policy of input"),
                         "established": ("accept", "policy of input"),
                         "reply": ("accept", "policy of postrouting")}),
    # without conntrack's help every packet in is cut
    ({"input": "drop", "stateful": False}, {"new": ("drop", "policy of input"),
                                            "established": ("drop", "policy of input"),
                                            "reply": ("accept", "policy of postrouting")}),
    ({"output": "drop", "stateful": False}, {"new": ("accept", "policy of input"),
                                             "established": ("accept", "policy of input"),
                                             "reply": ("drop", "policy of output")}),
    ({"prerouting": "drop", "postrouting": "drop", "stateful": False},
     {"new": ("drop", "policy of prerouting"), "established": ("drop", "policy of prerouting"),
      "reply": ("drop", "policy of postrouting")}),
    ({}, {"new": ("accept", "policy of input"), "established": ("accept", "policy of input"),
          "reply": ("accept", "policy of postrouting")}),
])
def test_a_drop_policy_without_an_ssh_rule_cuts_the_directions_it_reaches(policy, expected):
    findings = check(rs(**policy), [SSH])
    assert [f.direction for f in findings] == ["new", "established", "reply"]
    assert verdicts(findings) == expected
    assert {f.direction for f in findings if f.blocks} == {
        d for d, (v, _) in expected.items() if v == "drop"}
    assert (refusal(findings) is None) == all(v == "accept" for v, _ in expected.values())


def test_the_refusal_is_one_line_naming_connection_direction_verdict_and_policy():
    findings = check(rs(input="drop"), [SSH])
    assert refusal(findings) == (
        "this change would cut 198.18.0.2:40000 -> 198.18.0.1:22 (ssh session found via sshd): "
        "a new connection in is dropped by the input policy (drop); use --force to apply anyway")
    text = refusal(check(rs(input="drop", stateful=False), [SSH]))
    assert "\n" not in text and text.endswith(
        "(1 more checked packet cut too; 'minifw check' lists them); use --force to apply anyway")


def test_stateless_with_only_an_input_accept_cuts_the_reply_out():
    findings = check(rs(ACCEPT_SSH, input="drop", output="drop", stateful=False), [SSH])
    assert verdicts(findings) == {"new": ("accept", "ssh"), "established": ("accept", "ssh"),
                                  "reply": ("drop", "policy of output")}
    assert refusal(findings) == (
        "this change would cut 198.18.0.2:40000 -> 198.18.0.1:22 (ssh session found via sshd): "
        "the server's reply out is dropped by the output policy (drop); use --force to apply "
        "anyway")
    # the same stateless ruleset with the reply allowed passes
    reply = {"id": "ssh-out", "hook": "output", "proto": "tcp", "sport": 22, "action": "accept"}
    assert refusal(check(rs(ACCEPT_SSH, reply, input="drop", output="drop", stateful=False),
                         [SSH])) is None


def test_a_rule_accepting_the_port_passes_and_a_neighbour_port_does_not():
    assert refusal(check(rs(ACCEPT_SSH, input="drop"), [SSH])) is None
    other = dict(ACCEPT_SSH, dport=23)
    assert verdicts(check(rs(other, input="drop"), [SSH]))["new"] == ("drop", "policy of input")
    ranged = dict(ACCEPT_SSH, dport="22-23")
    assert refusal(check(rs(ranged, input="drop"), [SSH])) is None
    above = dict(ACCEPT_SSH, dport="23-24")
    assert refusal(check(rs(above, input="drop"), [SSH])) is not None


def test_a_rule_that_rejects_the_client_is_named_with_its_hook_and_priority():
    deny = {"id": "no-admin", "priority": -5, "src": "198.18.0.2", "proto": "tcp",
            "action": "reject"}
    findings = check(rs(ACCEPT_SSH, deny), [SSH])
    assert verdicts(findings) == {"new": ("reject", "no-admin"),
                                  "established": ("reject", "no-admin"),
                                  "reply": ("accept", "policy of postrouting")}
    assert ("a new connection in is rejected by rule 'no-admin' (input, priority -5)"
            in refusal(findings))
    # the neighbour address is not the admin
    elsewhere = dict(deny, src="198.18.0.3")
    assert refusal(check(rs(ACCEPT_SSH, elsewhere), [SSH])) is None


def test_a_ban_of_the_client_blocks_it_and_not_another_address():
    def lookup(name, addr):
        return addr == ip("198.18.0.2") if name == "blocked" else None

    findings = check(rs(ACCEPT_SSH, input="drop"), [SSH], set_lookup=lookup)
    assert verdicts(findings) == {"new": ("drop", "ban blocked"),
                                  "established": ("drop", "ban blocked"),
                                  "reply": ("accept", "policy of postrouting")}
    assert all(f.hook is Hook.PREROUTING for f in findings if f.blocks)
    assert ("a new connection in is dropped by the ban set @blocked (198.18.0.2 is in it)"
            in refusal(findings))
    other = Connection(ip("198.18.0.3"), 40000, ip("198.18.0.1"), 22, "sshd")
    assert refusal(check(rs(ACCEPT_SSH, input="drop"), [other], set_lookup=lookup)) is None


def test_a_set_rule_drops_the_client_only_when_the_set_holds_it():
    r = Ruleset.from_toml({"policy": {"input": "drop"}, "set": [{"name": "deny"}], "rule": [
        ACCEPT_SSH, {"id": "deny-list", "priority": -1, "src": "@deny", "action": "drop"}]})
    assert refusal(check(r, [SSH], set_lookup=lambda n, a: n == "deny")) is not None
    assert refusal(check(r, [SSH], set_lookup=lambda n, a: False)) is None


def test_a_hook_function_is_runtime_a_warning_and_never_a_refusal():
    fn = HookFunction("screen", Hook.INPUT, 5)
    findings = check(rs(ACCEPT_SSH, input="drop"), [SSH], hook_functions=[fn])
    assert [(f.direction, f.verdict, f.runtime, f.blocks) for f in findings] == [
        ("new", "runtime", True, False), ("established", "runtime", True, False),
        ("reply", "accept", False, False)]
    assert refusal(findings) is None
    assert runtime_warnings(findings)[0] == (
        "198.18.0.2:40000 -> 198.18.0.1:22 (ssh session found via sshd): a new connection in "
        "is decided at run time by hook function 'screen' (input, priority 5), which the guard "
        "cannot check")
    # a drop before the function still refuses
    findings = check(rs(input="drop", stateful=False, prerouting="drop"), [SSH],
                     hook_functions=[fn])
    assert refusal(findings) is not None and not any(f.runtime for f in findings)


def test_an_ipv6_connection_is_checked_with_ipv6_rules():
    v4_only = dict(ACCEPT_SSH, family="ip")
    findings = check(rs(v4_only, input="drop"), [SSH6])
    assert verdicts(findings)["new"] == ("drop", "policy of input")
    assert refusal(findings).startswith(
        "this change would cut [fd00::2]:51000 -> [fd00::1]:22 (ssh session found via "
        "SSH_CONNECTION): a new connection in is dropped")
    assert refusal(check(rs(dict(ACCEPT_SSH, family="ip6"), input="drop"), [SSH6])) is None


def test_a_guard_connection_is_checked_from_the_peer_to_its_port():
    conn = parse_guard("198.18.5.5:2222").connection(ip("198.18.0.1"))
    assert (conn.client, conn.client_port, conn.server, conn.server_port, conn.found) == (
        ip("198.18.5.5"), GUARD_CLIENT_PORT, ip("198.18.0.1"), 2222, "--guard")
    bastion = {"id": "bastion", "src": "198.18.5.5", "proto": "tcp", "dport": 2222,
               "action": "accept"}
    assert refusal(check(rs(bastion, input="drop"), [conn])) is None
    assert refusal(check(rs(ACCEPT_SSH, input="drop"), [conn])) == (
        "this change would cut 198.18.5.5:40000 -> 198.18.0.1:2222 (given by --guard): a new "
        "connection in is dropped by the input policy (drop); use --force to apply anyway")


def test_the_interface_is_judged_when_known_and_loopback_is_loopback():
    by_if = dict(ACCEPT_SSH, iif="eth0")
    on_eth0 = Connection(SSH.client, 40000, SSH.server, 22, "sshd", iface="eth0")
    on_eth1 = Connection(SSH.client, 40000, SSH.server, 22, "sshd", iface="eth1")
    assert refusal(check(rs(by_if, input="drop"), [on_eth0])) is None
    assert refusal(check(rs(by_if, input="drop"), [on_eth1])) is not None
    assert refusal(check(rs(by_if, input="drop"), [SSH])) is not None   # unknown: not assumed
    local = Connection(ip("127.0.0.1"), 40000, ip("127.0.0.1"), 22, "sshd")
    assert refusal(check(rs(input="drop", output="drop"), [local])) is None   # stateful: iif lo
    assert refusal(check(rs(input="drop", stateful=False), [local])) is not None


def test_no_connection_warns_only_where_a_hook_drops_by_default():
    assert no_connection_warning(rs(ACCEPT_SSH)) is None
    text = no_connection_warning(rs(input="drop", forward="drop"))
    assert "nothing" in text and text.endswith("drops by default at input, forward")
    assert "\n" not in text


def test_one_session_found_twice_is_checked_once_as_first_found():
    twice = Connection(SSH.client, 40000, SSH.server, 22, "SSH_CONNECTION")
    assert dedupe([twice, SSH, SSH6]) == [twice, SSH6]
    assert len(check(rs(input="drop"), [twice, SSH])) == 3
    other_port = Connection(SSH.client, 40001, SSH.server, 22, "sshd")
    assert len(dedupe([SSH, other_port])) == 2


# ---- the parsers ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, peer, port", [
    ("198.18.0.2:22", "198.18.0.2", 22),
    ("[fd00::2]:22", "fd00::2", 22),
    (" 198.18.0.2:1 ", "198.18.0.2", 1),
    ("198.18.0.2:65535", "198.18.0.2", 65535),
    ("[fd00::2]:65535", "fd00::2", 65535),
    ("[::ffff:198.18.0.2]:22", "198.18.0.2", 22),    # the wire sees IPv4
])
def test_guard_parses(text, peer, port):
    assert parse_guard(text) == GuardSpec(ip(peer), port)


@pytest.mark.parametrize("text, says", [
    ("198.18.0.2:0", "port 0 is out of range 1-65535"),
    ("198.18.0.2:65536", "port 65536 is out of range 1-65535"),
    ("[fd00::2]:0", "out of range"),
    ("[fd00::2]:65536", "out of range"),
    ("198.18.0.2", "expected ADDR:PORT"),
    ("198.18.0.2:", "'' is not a port number"),
    (":22", "expected ADDR:PORT"),
    ("198.18.0.2:-1", "is not a port number"),
    ("198.18.0.2:２２", "is not a port number"),
    ("fd00::2:22", "goes in brackets"),
    ("[fd00::2]22", "expected ADDR:PORT"),
    ("[fd00::2:22", "expected ADDR:PORT"),
    ("198.18.0.256:22", "is not an IPv4 or IPv6 address"),
    ("host.example:22", "is not an IPv4 or IPv6 address"),
    ("198.18.0.0/24:22", "is not an IPv4 or IPv6 address"),
    ("[fe80::1%eth0]:22", "without a %scope"),
    ("0.0.0.0:22", "is not the address of one peer"),
    ("[ff02::1]:22", "is not the address of one peer"),
    ("", "expected ADDR:PORT"),
])
def test_bad_guards_raise_one_line_naming_the_flag(text, says):
    with pytest.raises(GuardError) as err:
        parse_guard(text)
    assert isinstance(err.value, MinifwError) and not isinstance(err.value, ConfigError)
    msg = str(err.value)
    assert msg.startswith("--guard ") and says in msg and "\n" not in msg


@pytest.mark.parametrize("value, expected", [
    ("198.18.0.2 40000 198.18.0.1 22", SSH),
    ("fd00::2 51000 fd00::1 22", Connection(ip("fd00::2"), 51000, ip("fd00::1"), 22,
                                            "SSH_CONNECTION")),
    ("198.18.0.2 1 198.18.0.1 65535", Connection(ip("198.18.0.2"), 1, ip("198.18.0.1"),
                                                 65535, "SSH_CONNECTION")),
    ("198.18.0.2 65535 198.18.0.1 1", Connection(ip("198.18.0.2"), 65535, ip("198.18.0.1"),
                                                 1, "SSH_CONNECTION")),
    ("fe80::2%eth0 40000 fe80::1%eth0 22", Connection(ip("fe80::2"), 40000, ip("fe80::1"), 22,
                                                      "SSH_CONNECTION")),
])
def test_ssh_connection_parses(value, expected):
    got = parse_ssh_connection(value)
    assert got is not None and got.key == expected.key and got.found == "SSH_CONNECTION"


@pytest.mark.parametrize("value", [
    None, "", "198.18.0.2 40000 198.18.0.1", "198.18.0.2 40000 198.18.0.1 22 x",
    "198.18.0.2 0 198.18.0.1 22", "198.18.0.2 40000 198.18.0.1 0",
    "198.18.0.2 65536 198.18.0.1 22", "198.18.0.2 40000 198.18.0.1 65536",
    "198.18.0.2 40000 fd00::1 22", "client 40000 198.18.0.1 22", "198.18.0.2 x 198.18.0.1 22",
])
def test_a_malformed_ssh_connection_is_no_connection(value):
    assert parse_ssh_connection(value) is None


# ---- /proc/net/tcp and tcp6 (lines captured on a little-endian host) --------------------------

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1186671 1 000000002e4e04a8 100 0 0 10 0                   
   1: 010012C6:0016 010012C6:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1186677 1 000000004a1b199f 20 0 0 10 -1                   
   2: 010012C6:9C40 010012C6:0016 01 00000000:00000000 00:00000000 00000000     0        0 1186674 2 000000006d58e789 20 0 0 10 -1                   
   3: 0100007F:0016 0100007F:9C42 01 00000000:00000000 00:00000000 00000000     0        0 1186679 1 0000000040775253 20 0 0 10 -1                   
   4: 0100007F:9C42 0100007F:0016 01 00000000:00000000 00:00000000 00000000     0        0 1186676 2 00000000bfb33d12 20 0 0 10 -1                   
   5: 010012C6:9C43 010012C6:1F90 04 00000001:00000000 01:00000014 00000000     0        0 0 2 00000000c24b6bf7 20 0 0 10 -1                         
"""  # noqa: W291
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 000000FD000000000000000001000000:08AE 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1186673 1 0000000074bba690 100 0 0 10 0
   1: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1186672 1 0000000098dbf601 100 0 0 10 0
   2: 000000FD000000000000000001000000:9C41 000000FD000000000000000001000000:0016 01 00000000:00000000 00:00000000 00000000     0        0 1186675 2 0000000071b99c90 20 0 0 10 -1
   3: 000000FD000000000000000001000000:0016 000000FD000000000000000001000000:9C41 01 00000000:00000000 00:00000000 00000000     0        0 1186678 1 000000002efbb915 20 0 0 10 -1
   4: 0000000000000000FFFF0000010012C6:1F90 0000000000000000FFFF0000010012C6:9C43 08 00000000:00000001 00:00000000 00000000     0        0 1187309 1 000000003c483f65 20 4 0 10 -1
"""


def test_ipv4_lines_in_host_byte_order():
    lines = TCP.splitlines()
    assert parse_tcp_line(lines[0], "little") is None                      # the header
    lis = parse_tcp_line(lines[1], "little")
    assert (lis.local, lis.local_port, lis.remote, lis.remote_port, lis.state, lis.inode) == (
        ip("0.0.0.0"), 22, ip("0.0.0.0"), 0, "listen", 1186671)
    est = parse_tcp_line(lines[2], "little")
    assert (est.local, est.local_port, est.remote, est.remote_port, est.state) == (
        ip("198.18.0.1"), 22, ip("198.18.0.1"), 40000, "established")
    lo = parse_tcp_line(lines[4], "little")
    assert (lo.local, lo.remote, lo.remote_port) == (ip("127.0.0.1"), ip("127.0.0.1"), 40002)
    assert parse_tcp_line(lines[6], "little").state == "04"                # FIN_WAIT1
    # the same word on a big-endian host reads the other way round
    assert parse_tcp_line(lines[4], "big").local == ip("1.0.0.127")


def test_ipv6_lines_are_four_words_each_in_host_order():
    lines = TCP6.splitlines()
    assert parse_tcp_line(lines[0], "little") is None
    lis = parse_tcp_line(lines[1], "little")
    assert (lis.local, lis.local_port, lis.state) == (ip("fd00::1"), 2222, "listen")
    est = parse_tcp_line(lines[4], "little")
    assert (est.local, est.local_port, est.remote, est.remote_port, est.state, est.inode) == (
        ip("fd00::1"), 22, ip("fd00::1"), 40001, "established", 1186678)
    mapped = parse_tcp_line(lines[5], "little")
    assert (mapped.local, mapped.remote, mapped.state) == (
        ip("::ffff:198.18.0.1"), ip("::ffff:198.18.0.1"), "08")
    assert parse_tcp_line(lines[1], "big").local == ip("0:fd::100:0")


@pytest.mark.parametrize("line", [
    "",
    "   0:",
    "   0: 0100007F:0016 0100007F:9C42 01 00000000:00000000 00:00000000 00000000     0",
    "   x: 0100007F:0016 0100007F:9C42 01 00000000:00000000 00:00000000 00000000 0 0 1 1",
    "   0: 0100007F 0100007F:9C42 01 00000000:00000000 00:00000000 00000000 0 0 1 1",
    "   0: 0100007G:0016 0100007F:9C42 01 00000000:00000000 00:00000000 00000000 0 0 1 1",
    "   0: 0100007F:16 0100007F:9C42 01 00000000:00000000 00:00000000 00000000 0 0 1 1",
    "   0: 0100007F00:0016 0100007F:9C42 01 00000000:00000000 00:00000000 00000000 0 0 1 1",
    "   0: 0100007F:0016 0100007F:9C42 1 00000000:00000000 00:00000000 00000000 0 0 1 1",
    "   0: 0100007F:0016 0100007F:9C42 01 00000000:00000000 00:00000000 00000000 0 0 x 1",
    "   0: 0100007F:0016 0100007F:9C42 01 00000000:00000000 00:00000000 00000000 0 0 -1 1",
    "   0: 0100_07F:0016 0100007F:9C42 01 00000000:00000000 00:00000000 00000000 0 0 1 1",
    "   0: 0100007F:+016 0100007F:9C42 01 00000000:00000000 00:00000000 00000000 0 0 1 1",
    "   0: 0x00007F:0016 0100007F:9C42 01 00000000:00000000 00:00000000 00000000 0 0 1 1",
    "   0: 0100007F:0016 0100007F:9C42 01 00000000:00000000 00:00000000 00000000 0 0",  # 9
])
def test_malformed_lines_are_no_socket(line):
    assert parse_tcp_line(line, "little") is None


def test_a_line_with_exactly_the_needed_fields_parses():
    line = "   0: 0100007F:0016 0100007F:9C42 01 00000000:00000000 00:00000000 00000000 0 0 7"
    assert parse_tcp_line(line, "little").inode == 7


def test_sessions_to_the_listeners_ports():
    v4, v6 = parse_tcp_table(TCP, "little"), parse_tcp_table(TCP6, "little")
    assert len(v4) == 6 and len(v6) == 5
    listen22_v4 = [s for s in v4 if s.state == "listen"]
    got = sessions_to(listen22_v4, v4 + v6)
    # both server ends of port 22 in tcp; the client ends (local port 40000, 40002) are not
    assert [(str(c.client), c.client_port, str(c.server), c.server_port) for c in got] == [
        ("198.18.0.1", 40000, "198.18.0.1", 22), ("127.0.0.1", 40002, "127.0.0.1", 22)]
    # an IPv4 wildcard listener does not take IPv6 sockets; the IPv6 wildcard does
    listen22_v6 = [s for s in v6 if s.state == "listen" and s.local_port == 22]
    got6 = sessions_to(listen22_v6, v4 + v6)
    assert [(str(c.client), c.client_port) for c in got6] == [("fd00::1", 40001)]
    # a listener on one address takes only that address
    only = [parse_tcp_line(TCP6.splitlines()[1], "little")]                 # fd00::1:2222
    assert sessions_to(only, v4 + v6) == []
    assert all(c.found == "sshd" for c in got + got6)


def test_an_ipv4_peer_of_a_dual_stack_listener_is_an_ipv4_connection():
    listener = parse_tcp_table(TCP6, "little")[1]                              # [::]:22
    mapped = parse_tcp_table(TCP6, "little")[4]          # a captured ::ffff: socket, port 8080
    est = mapped._replace(local_port=22, state="established")
    (conn,) = sessions_to([listener], [est])
    assert (conn.client, conn.server, conn.client_port) == (ip("198.18.0.1"), ip("198.18.0.1"),
                                                            40003)
