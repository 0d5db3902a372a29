"""explain on a live router: the path and output interface from the namespace's routing, NAT
(a port forward, masquerade) as the kernel applies it, checked on the receiving side and
against the nat rules' counters, which move for the first packet of each flow only.

client (eth0) <-> (eth-c) router (eth-s) <-> (eth0) server; the router runs minifw.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from kit import (
    R4_C, R6_C, R_CLIENT4, R_CLIENT6, R_SERVER4, R_SERVER6, new_lab, need_root, routed,
    wait_until,
)

CONFIG = f"""
[policy]
input = "drop"
forward = "drop"

[[nat]]
id = "masq-lan"
kind = "masquerade"
src = ["198.18.11.0/24", "fd00:11::/64"]
oif = "eth-c"

[[nat]]
id = "web-forward"
kind = "dnat"
iif = "eth-c"
proto = "tcp"
dport = 8080
to = "{R_SERVER4}:80"

[[nat]]
id = "web-forward6"
kind = "dnat"
iif = "eth-c"
proto = "tcp"
dport = 8080
to = "[{R_SERVER6}]:80"

[[rule]]
id = "ssh"
proto = "tcp"
dport = 22
action = "accept"

[[rule]]
id = "lan-out"
hook = "forward"
iif = "eth-s"
action = "accept"
"""

# Accepts one TCP connection, writes "peer-address local-address:port" to a file, exits.
CATCH = """
import socket, sys
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1])))
s.listen(1)
open(sys.argv[2] + ".ready", "w").close()
c, peer = s.accept()
local = c.getsockname()
def plain(a):
    return a[7:] if a.startswith("::ffff:") else a
open(sys.argv[2], "w").write(f"{plain(peer[0])} {plain(local[0])}:{local[1]}")
"""


@pytest.fixture(scope="module")
def net():
    need_root()
    with new_lab() as lab:
        client, router, server = routed(lab)
        cfg = lab.tmp / "router.toml"
        lab.tmp.mkdir(parents=True, exist_ok=True)
        cfg.write_text(CONFIG)
        router.minifw("up", "--config", str(cfg))
        yield client, router, server


def explain(router, *args) -> dict:
    res = router.minifw("explain", "--json", *args)
    return json.loads(res.stdout)


def catch(host, port: int):
    """The addresses the next TCP connection to ``port`` arrives with, read on ``host``."""
    out = host.lab.tmp / f"caught-{host.name}-{port}-{time.monotonic_ns()}"
    host.popen([sys.executable, "-c", CATCH, str(port), str(out)])
    wait_until(lambda: out.with_name(out.name + ".ready").exists(), what="catch server")
    return lambda: (wait_until(out.exists, what="a caught connection"),
                    out.read_text().split())[1]


def nat_packets(router, nat_id: str) -> int:
    data = json.loads(router.run(["nft", "-j", "list", "table", "inet", "minifw"]).stdout)
    total = 0
    for item in data["nftables"]:
        rule = item.get("rule")
        if rule and (rule.get("comment") or "").split(":")[0] == nat_id:
            total += sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    return total


def hooks(data: dict) -> list[str]:
    return list(dict.fromkeys(s["hook"] for s in data["trace"]))


def test_the_path_comes_from_routing(net):
    client, router, server = net
    to_router = explain(router, "--proto", "tcp", "--src", R_CLIENT4, "--dst", R4_C,
                        "--dport", "22", "--iif", "eth-c")
    assert to_router["route"]["path"] == "in" and to_router["rule"] == "ssh"
    through = explain(router, "--proto", "tcp", "--src", R_CLIENT4, "--dst", R_SERVER4,
                      "--dport", "80", "--iif", "eth-c")
    assert (through["route"]["path"], through["route"]["oif"]) == ("forward", "eth-s")
    assert (through["verdict"], through["decided_by"]) == ("drop", "policy")
    assert client.tcp_result(R_SERVER4, 80, timeout=0.6) == "timeout"
    back = explain(router, "--proto", "tcp", "--src", R_SERVER4, "--dst", R_CLIENT4,
                   "--dport", "80")  # no --iif: the source is not the router's, so it arrives
    assert (back["route"]["path"], back["route"]["oif"]) == ("forward", "eth-c")
    assert (back["verdict"], back["decided_by"]) == ("drop", "policy")  # iif unknown
    back = explain(router, "--proto", "tcp", "--src", R_SERVER4, "--dst", R_CLIENT4,
                   "--dport", "80", "--iif", "eth-s")
    assert (back["verdict"], back["rule"]) == ("accept", "lan-out")
    own = explain(router, "--proto", "udp", "--src", R4_C, "--dst", R_CLIENT4, "--dport", "53")
    assert (own["route"]["path"], own["route"]["oif"]) == ("out", "eth-c")
    assert hooks(own) == ["postrouting"]   # the masquerade's nat chain, not matching
    nowhere = explain(router, "--proto", "tcp", "--src", R_CLIENT4, "--dst", "198.18.99.9",
                      "--dport", "80", "--iif", "eth-c")
    assert (nowhere["verdict"], nowhere["decided_by"]) == ("drop", "routing")
    assert "no route" in nowhere["route"]["text"]
    # --path and --oif still override: no lookup is made
    forced = explain(router, "--proto", "tcp", "--src", R_CLIENT4, "--dst", R_SERVER4,
                     "--dport", "80", "--iif", "eth-c", "--path", "in")
    assert "route" not in forced and hooks(forced) == ["prerouting", "input"]
    # --path forward alone: the output interface still comes from routing
    half = explain(router, "--proto", "tcp", "--src", R_SERVER4, "--dst", R_CLIENT4,
                   "--dport", "80", "--iif", "eth-s", "--path", "forward")
    assert (half["route"]["path"], half["route"]["oif"]) == ("forward", "eth-c")
    assert (half["verdict"], half["rule"]) == ("accept", "lan-out")


@pytest.mark.parametrize("client_ip, router_ip, server_ip, nat_id", [
    (R_CLIENT4, R4_C, R_SERVER4, "web-forward"),
    (R_CLIENT6, R6_C, R_SERVER6, "web-forward6")])
def test_a_port_forward_as_the_kernel_does_it(net, client_ip, router_ip, server_ip, nat_id):
    client, router, server = net
    data = explain(router, "--proto", "tcp", "--src", client_ip, "--dst", router_ip,
                   "--dport", "8080", "--iif", "eth-c")
    assert (data["verdict"], data["decided_by"]) == ("accept", "policy")
    assert (data["route"]["path"], data["route"]["oif"]) == ("forward", "eth-s")
    (nat,) = data["nat"]
    assert nat["nat"] == nat_id and nat["first_packet"]
    assert (nat["after"]["dst"], nat["after"]["dport"]) == (server_ip, 80)
    before = nat_packets(router, nat_id)
    caught = catch(server, 80)
    assert client.tcp_result(router_ip, 8080) == "open"
    peer, local = caught()
    # what arrived: the translated destination, the client's own source
    assert (peer, local.rsplit(":", 1)[0], local.rsplit(":", 1)[1]) == \
        (client_ip, server_ip, "80")
    assert data["packet"]["src"] == peer
    # the nat rule counted the flow's first packet only (the SYN; the rest followed conntrack)
    assert nat_packets(router, nat_id) - before == 1


@pytest.mark.parametrize("server_ip, client_ip, router_ip", [
    (R_SERVER4, R_CLIENT4, R4_C), (R_SERVER6, R_CLIENT6, R6_C)])
def test_masquerade_as_the_kernel_does_it(net, server_ip, client_ip, router_ip):
    client, router, server = net
    data = explain(router, "--proto", "tcp", "--src", server_ip, "--dst", client_ip,
                   "--dport", "9000", "--iif", "eth-s")
    assert (data["verdict"], data["rule"]) == ("accept", "lan-out")
    (nat,) = data["nat"]
    assert nat["nat"] == "masq-lan" and nat["after"]["src"] == router_ip
    caught = catch(client, 9000)
    assert server.tcp_result(client_ip, 9000) == "open"
    peer, _ = caught()
    assert peer == data["packet"]["src"] == router_ip
