"""minifw as a router, in three namespaces (client on the WAN side, the router, a LAN server):
masquerade, SNAT, a port forward, a redirect and DNAT of the router's own connections, v4 and v6, under drop policies at forward and
input. Every check is made on the side that received the flow: which source address arrived
there, and which destination address and port it was delivered to. Then `nat add / delete /
list` live, and the counters (the first packet of each flow only)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from minifw.lab import MINIFW

from kit import (
    R4_C, R6_C, R_CLIENT4, R_CLIENT6, R_SERVER4, R_SERVER6, routed, up, wait_until,
)

PEER = str(Path(__file__).with_name("natpeer.py"))
# SNAT addresses: the router's, on lo (the client routes them to the router by default), so
# that masquerade and redirect, which take the interface's address, are not in doubt
SNAT4, SNAT6 = "198.18.12.1", "fd00:12::1"

ROUTER = f"""
[policy]
forward = "drop"
input = "drop"

# the LAN may go out; nothing comes in unless a [[nat]] forwards it
[[rule]]
id = "lan-out"
hook = "forward"
iif = "eth-s"
action = "accept"

[[nat]]
id = "masq"
kind = "masquerade"
oif = "eth-c"
proto = "tcp"

[[nat]]
id = "snat-udp"
kind = "snat"
oif = "eth-c"
proto = "udp"
src = "198.18.11.0/24"
to = "{SNAT4}"

[[nat]]
id = "snat-udp6"
kind = "snat"
oif = "eth-c"
proto = "udp"
src = "fd00:11::/64"
to = "{SNAT6}"

[[nat]]
id = "web"
kind = "dnat"
iif = "eth-c"
proto = "tcp"
dport = 8080
to = "{R_SERVER4}:80"

[[nat]]
id = "web6"
kind = "dnat"
iif = "eth-c"
proto = "tcp"
dport = 8080
to = "[{R_SERVER6}]:80"

[[nat]]
id = "own"
kind = "dnat"
hook = "output"
proto = "tcp"
dport = 7000
to = "{R_SERVER4}:81"

[[nat]]
id = "proxy"
kind = "redirect"
iif = "eth-c"
proto = "tcp"
dport = 3000
to = 3128
"""


def serve(host, tcp=(), udp=()):
    ready = host.lab.tmp / f"natpeer-{host.name}-{time.monotonic_ns()}"
    host.lab.tmp.mkdir(parents=True, exist_ok=True)
    host.popen([sys.executable, PEER, "serve", str(ready), "--tcp", ",".join(map(str, tcp)),
                "--udp", ",".join(map(str, udp))])
    wait_until(ready.exists, what=f"natpeer in {host.name}")


def ask(host, kind, addr, port, timeout=3.0):
    argv = [sys.executable, PEER, "ask", kind, addr, str(port), "--timeout", str(timeout)]
    return host.run(argv, check=False, timeout=timeout + 10).stdout.strip()


def nat_counters(router):
    listed = json.loads(router.minifw("nat", "list", "--json").stdout)
    return {n["id"]: n["packets"] for n in listed["nats"]}


def router_lab(lab):
    client, router, server = routed(lab)
    router.run(["ip", "addr", "add", f"{SNAT4}/32", "dev", "lo"])
    router.run(["ip", "addr", "add", f"{SNAT6}/128", "dev", "lo", "nodad"])
    serve(server, tcp=[80, 81])
    serve(client, tcp=[9000], udp=[9001])
    serve(router, tcp=[3128])
    up(router, ROUTER)
    return client, router, server


def test_masquerade_snat_port_forward_and_redirect_v4_and_v6(lab):
    client, router, server = router_lab(lab)

    # port forward: the server receives the client's own address, on its port 80
    assert ask(client, "tcp", R4_C, 8080) == f"{R_CLIENT4} {R_SERVER4} 80"
    assert ask(client, "tcp", R6_C, 8080) == f"{R_CLIENT6} {R_SERVER6} 80"
    # ... and only the forwarded flows pass: the forward drop policy still holds
    assert ask(client, "tcp", R_SERVER4, 80, timeout=0.6) == "timeout"
    assert ask(client, "tcp", R_SERVER6, 80, timeout=0.6) == "timeout"
    # redirect: the router itself answers on 3128, through its input drop policy
    assert ask(client, "tcp", R4_C, 3000) == f"{R_CLIENT4} {R4_C} 3128"
    assert ask(client, "tcp", R6_C, 3000) == f"{R_CLIENT6} {R6_C} 3128"
    # the router's own connection, translated at output: to the server, from the router
    assert ask(router, "tcp", R_CLIENT4, 7000) == f"{R4_C} {R_SERVER4} 81"
    # masquerade (TCP) and SNAT (UDP): the client sees the router's addresses, not the LAN's
    assert ask(server, "tcp", R_CLIENT4, 9000) == f"{R4_C} {R_CLIENT4} 9000"
    assert ask(server, "tcp", R_CLIENT6, 9000) == f"{R6_C} {R_CLIENT6} 9000"
    assert ask(server, "udp", R_CLIENT4, 9001) == f"{SNAT4} - -"
    assert ask(server, "udp", R_CLIENT6, 9001) == f"{SNAT6} - -"

    # one flow each, so one packet each: later packets follow conntrack, not the NAT chain
    assert nat_counters(router) == {"masq": 2, "snat-udp": 1, "snat-udp6": 1, "web": 1,
                                    "web6": 1, "own": 1, "proxy": 2}

    chains = {c["chain"]["name"]: c["chain"] for c in json.loads(router.run(
        "nft -j list chains inet").stdout)["nftables"] if "chain" in c}
    for name, hook, prio in (("nat_prerouting", "prerouting", -100),
                             ("nat_output", "output", -100),
                             ("nat_postrouting", "postrouting", 100)):
        assert (chains[name]["type"], chains[name]["hook"], chains[name]["prio"]) == (
            "nat", hook, prio)

    status = json.loads(router.minifw("status", "--json").stdout)
    assert not status["warnings"] and not status["foreign_chains"]
    kinds = {c["chain"]: c["kind"] for c in status["chains"]}
    assert kinds["nat_prerouting"] == kinds["nat_output"] == kinds["nat_postrouting"] == "nat"
    # reload keeps them, as declarative chains (and up finds them in sync)
    router.minifw("reload")
    assert "already up" in router.minifw("up", "--config", str(lab.tmp / "router.toml")).stdout
    assert ask(client, "tcp", R4_C, 8080) == f"{R_CLIENT4} {R_SERVER4} 80"


def test_nat_add_delete_list_live(lab):
    client, router, server = router_lab(lab)
    config = lab.tmp / "router.toml"
    assert ask(client, "tcp", R4_C, 2222, timeout=0.6) == "timeout"   # input drop policy

    router.minifw("nat", "add", "--id", "ssh-fwd", "--kind", "dnat", "--iif", "eth-c",
                  "--proto", "tcp", "--dport", "2222", "--to", f"{R_SERVER4}:81")
    assert ask(client, "tcp", R4_C, 2222) == f"{R_CLIENT4} {R_SERVER4} 81"
    assert 'id = "ssh-fwd"' in config.read_text() and "# the LAN may go out" in config.read_text()
    assert nat_counters(router)["ssh-fwd"] == 1

    # a forward rule that drops the forwarded flow still drops it (its chain runs first)
    router.minifw("add", "--id", "no-81", "--hook", "forward", "--proto", "tcp", "--dport", "81",
                  "--action", "drop", "--runtime")
    assert ask(client, "tcp", R4_C, 2222, timeout=0.6) == "timeout"
    router.minifw("delete", "no-81", "--runtime")

    router.minifw("nat", "delete", "ssh-fwd")
    assert 'ssh-fwd' not in config.read_text()
    assert ask(client, "tcp", R4_C, 2222, timeout=0.6) == "timeout"
    assert "ssh-fwd" not in nat_counters(router)

    # a runtime entry, then the live table equals a fresh load of the config
    router.minifw("nat", "add", "--id", "tmp", "--kind", "dnat", "--proto", "udp",
                  "--dport", "5353", "--to", R_SERVER4, "--runtime")
    assert "tmp" not in config.read_text()
    listed = json.loads(router.minifw("nat", "list", "--json").stdout)["nats"]
    assert [n["runtime"] for n in listed if n["id"] == "tmp"] == [True]
    # bad input: one line, nothing changed
    bad = router.minifw("nat", "add", "--kind", "dnat", "--to", f"{R_SERVER4}:80", check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1
    assert "field 'to': a port needs proto" in bad.stderr
    refused = router.minifw("add", "--hook", "prerouting", "--priority", "-100",
                            "--action", "accept", check=False)
    assert refused.returncode != 0 and "where the kernel runs NAT" in refused.stderr


HOOK_AT = """\
from minifw import hook, ACCEPT

@hook("{hook}", priority={priority}, where="queue")
def passes(pkt):
    return ACCEPT
"""


def test_nat_and_hook_functions_never_share_a_nat_priority(lab):
    fw = lab.host("fw")
    fw.state_dir.mkdir(parents=True, exist_ok=True)
    hook_file = lab.tmp / "at_srcnat.py"
    hook_file.write_text(HOOK_AT.format(hook="postrouting", priority=100))
    runner = fw.popen([MINIFW, "run", str(hook_file)])
    wait_until(lambda: "hook_q" in fw.run("nft list table inet minifw", check=False).stdout,
               what="the hook runner's chain")
    # a hook function holds postrouting/100: NAT is refused, naming why, and nothing changes
    config = lab.tmp / "fw.toml"
    config.write_text('[[nat]]\nkind = "masquerade"\n')
    refused = fw.minifw("up", "--config", str(config), check=False)
    assert refused.returncode != 0 and "original or the translated address" in refused.stderr
    assert "nat_" not in fw.run("nft list table inet minifw").stdout
    runner.terminate()
    runner.wait(timeout=10)
    # NAT first: a hook function at dstnat is refused by the runner itself
    fw.minifw("up", "--config", str(config))
    config.write_text('[[nat]]\nkind = "redirect"\n')
    fw.minifw("reload")
    hook_file.write_text(HOOK_AT.format(hook="prerouting", priority=-100))
    late = fw.minifw("run", str(hook_file), check=False, timeout=20)
    assert late.returncode != 0 and "nat_prerouting" in late.stderr
