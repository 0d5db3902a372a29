"""The NAT differential test: `explain` against the kernel on a routed three-namespace lab.

client (eth0) <-> (eth-c) router (eth-s) <-> (eth0) server; the router runs minifw. Hypothesis
draws [[nat]] entries (dnat, redirect, snat, masquerade; IPv4 and IPv6), a few filter rules at
the hooks around them and drop policies, then UDP datagrams from the client (to the router and
through it) and from the server (through it). Each ruleset is loaded as `minifw reload` does it
(the API, from one process in the router's namespace; a refused one through the command), each
datagram explained on the router (what `minifw explain --json` prints, from one process in the
router's namespace; the live routing deciding the path) and then sent for real (natlab.py). Per datagram, the kernel and explain must agree on:

- whether it arrived, and where: the router itself, or the host owning the translated
  destination;
- with which addresses and ports, read on the receiving side (after DNAT and SNAT);
- every counter of every rule and nat entry: each moved by the packets explain's trace says
  matched. Every datagram is the first packet of its flow (a fresh source port): NAT rules count
  only first packets, later ones follow conntrack, which explain models and says so
  (tests/unit/test_explain_nat.py pins that side).

CI runs 40 rulesets (1-3 datagrams each); ``MINIFW_NAT_DIFF_CASES=N`` runs more.
"""

from __future__ import annotations

import itertools
import json
import os

import pytest
import tomlkit
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from apiworker import ApiWorker
from kit import (
    R4_C, R4_S, R6_C, R6_S, R_CLIENT4, R_CLIENT6, R_SERVER4, R_SERVER6, new_lab, need_root,
    routed,
)
from natlab import PORTS, Catchers, Explainer, counters, send

CASES = int(os.environ.get("MINIFW_NAT_DIFF_CASES", "40"))
PHASES = ([Phase.explicit, Phase.reuse, Phase.generate]
          if os.environ.get("MINIFW_DIFF_SHRINK") == "0" else list(Phase))

ADDR = {4: {"client": R_CLIENT4, "router-c": R4_C, "router-s": R4_S, "server": R_SERVER4,
            "spare-c": "198.18.10.77", "net-c": "198.18.10.0/24", "net-s": "198.18.11.0/24"},
        6: {"client": R_CLIENT6, "router-c": R6_C, "router-s": R6_S, "server": R_SERVER6,
            "spare-c": "fd00:10::77", "net-c": "fd00:10::/64", "net-s": "fd00:11::/64"}}
OWNER = {a: h for v in (4, 6) for h, a in (("client", ADDR[v]["client"]),
                                            ("router", ADDR[v]["router-c"]),
                                            ("router", ADDR[v]["router-s"]),
                                            ("server", ADDR[v]["server"]),
                                            ("client", ADDR[v]["spare-c"]))}
_sports = itertools.count(20000)


def _to(version: int, addr: str, port: int | None) -> str:
    if port is None:
        return addr
    return f"[{addr}]:{port}" if version == 6 else f"{addr}:{port}"


@st.composite
def nat_tables(draw, index: int) -> dict:
    version = draw(st.sampled_from([4, 6]))
    a = ADDR[version]
    kind = draw(st.sampled_from(["dnat", "dnat", "redirect", "snat", "masquerade"]))
    entry: dict = {"id": f"n{index}", "kind": kind}
    if kind in ("dnat", "redirect"):
        entry["iif"] = draw(st.sampled_from(["eth-c", "eth-c", "eth-s"]))
        entry["proto"] = "udp"
        if draw(st.booleans()):
            entry["dport"] = draw(st.sampled_from(PORTS))
        if draw(st.integers(0, 2)) == 0:
            entry["dst"] = draw(st.sampled_from([a["router-c"], a["server"], a["net-s"]]))
        port = draw(st.sampled_from([None, *PORTS]))
        if kind == "dnat":
            entry["to"] = _to(version, draw(st.sampled_from([a["server"], a["router-s"]])), port)
        else:
            entry["to"] = draw(st.sampled_from(PORTS))
            entry["family"] = "ip" if version == 4 else "ip6"
    else:
        entry["oif"] = draw(st.sampled_from(["eth-c", "eth-s"]))
        entry["src"] = draw(st.sampled_from([a["net-s"], a["net-c"], a["server"]]))
        if kind == "snat":
            entry["to"] = a["spare-c"] if entry["oif"] == "eth-c" else a["router-s"]
    return entry


@st.composite
def rule_tables(draw, index: int) -> dict:
    hook = draw(st.sampled_from(["prerouting", "forward", "input", "postrouting"]))
    rule: dict = {"id": f"r{index}", "hook": hook, "proto": "udp"}
    prio = draw(st.sampled_from({"prerouting": [-150, 0, 50], "postrouting": [0, 150]}
                                .get(hook, [0])))
    if prio:
        rule["priority"] = prio
    if draw(st.booleans()):
        rule["dport"] = draw(st.sampled_from(PORTS))
    version = draw(st.sampled_from([4, 6]))
    if draw(st.integers(0, 2)) == 0:
        rule["dst"] = draw(st.sampled_from([ADDR[version]["server"], ADDR[version]["router-c"],
                                            ADDR[version]["net-c"]]))
    if draw(st.integers(0, 2)) == 0:
        rule["src"] = draw(st.sampled_from([ADDR[version]["client"], ADDR[version]["net-s"],
                                            ADDR[version]["router-c"]]))
    if hook in ("prerouting", "forward", "input") and draw(st.integers(0, 3)) == 0:
        rule["iif"] = draw(st.sampled_from(["eth-c", "eth-s"]))
    if hook in ("forward", "postrouting") and draw(st.integers(0, 3)) == 0:
        rule["oif"] = draw(st.sampled_from(["eth-c", "eth-s"]))
    rule["action"] = draw(st.sampled_from(["accept", "accept", "drop"]))
    return rule


@st.composite
def rulesets(draw) -> dict:
    data: dict = {"nat": [draw(nat_tables(i)) for i in range(draw(st.integers(1, 3)))]}
    rules = [draw(rule_tables(i)) for i in range(draw(st.integers(0, 3)))]
    if rules:
        data["rule"] = rules
    policy = {h: "drop" for h in ("input", "forward") if draw(st.booleans())}
    if policy:
        data["policy"] = policy
    return data


@st.composite
def datagrams(draw) -> dict:
    version = draw(st.sampled_from([4, 6]))
    a = ADDR[version]
    sender = draw(st.sampled_from(["client", "client", "server"]))
    if sender == "client":
        dst = draw(st.sampled_from([a["router-c"], a["server"], a["router-s"]]))
    else:
        dst = draw(st.sampled_from([a["client"], a["router-s"]]))
    return {"from": sender, "src": a[sender], "dst": dst,
            "dport": draw(st.sampled_from(PORTS)),
            "iif": "eth-c" if sender == "client" else "eth-s"}


def pin_neighbours(host, dev, peer, peer_dev, addrs) -> None:
    """``addrs`` of ``peer`` as permanent neighbours of ``host`` on ``dev``."""
    mac = json.loads(peer.run(["ip", "-j", "link", "show", "dev", peer_dev]).stdout)[0]["address"]
    for addr in addrs:
        host.run(["ip", "neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent"])


@pytest.fixture(scope="module")
def lab():
    need_root()
    with new_lab() as lab:
        client, router, server = routed(lab)
        # Permanent neighbours: a datagram never waits in a neighbour queue for ARP or
        # neighbour discovery, to reach the router after the next datagram's counters were read
        # (a drop is only waited for 0.4 s).
        for (a, a_if, a_addrs), (b, b_if, b_addrs) in (
                ((client, "eth0", (R_CLIENT4, R_CLIENT6)), (router, "eth-c", (R4_C, R6_C))),
                ((server, "eth0", (R_SERVER4, R_SERVER6)), (router, "eth-s", (R4_S, R6_S)))):
            pin_neighbours(a, a_if, b, b_if, b_addrs)
            pin_neighbours(b, b_if, a, a_if, a_addrs)
        hosts = {"client": client, "router": router, "server": server}
        catchers = Catchers(hosts.values())
        explainer = Explainer(router)
        try:
            # the rulesets load through one API process (apiworker.py), not a minifw per case
            yield hosts, catchers, {"up": False, "explain": explainer, "api": ApiWorker(router)}
        finally:
            explainer.close()


@pytest.mark.timeout(max(300, CASES * 10))   # a larger run is given the time it needs
@settings(max_examples=CASES, deadline=None, phases=PHASES,
          suppress_health_check=list(HealthCheck))
@given(data=rulesets(), packets=st.lists(datagrams(), min_size=1, max_size=3))
# a DNAT from the server's side back to the server: forwarded, then dropped by the server itself
@example(data={"nat": [{"id": "n0", "kind": "dnat", "iif": "eth-s", "proto": "udp",
                        "to": ADDR[4]["server"]}]},
         packets=[{"from": "server", "src": ADDR[4]["server"], "dst": ADDR[4]["router-s"],
                   "dport": PORTS[0], "iif": "eth-s"}])
@example(data={"nat": [{"id": "n0", "kind": "dnat", "iif": "eth-s", "proto": "udp",
                        "to": ADDR[6]["server"]}]},
         packets=[{"from": "server", "src": ADDR[6]["server"], "dst": ADDR[6]["router-c"],
                   "dport": PORTS[0], "iif": "eth-s"}])
def test_explain_agrees_with_the_kernel_on_nat(lab, data, packets):
    hosts, catchers, state = lab
    router = hosts["router"]
    path = router.lab.tmp / "nat-case.toml"
    path.write_text(tomlkit.dumps(data))
    op = "up" if not state["up"] else "reload"
    if state["api"].load(op, path, check=False) is not None:
        # a combination the config refuses: the command refuses it too, in one line
        res = router.minifw(op, "--config", str(path), check=False)
        assert res.returncode != 0, res.stdout
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
        event("config refused")
        return
    state["up"] = True
    ids = [r["id"] for r in data.get("rule", [])] + [n["id"] for n in data["nat"]]
    for pkt in packets:
        sport = next(_sports)
        nonce = f"{os.getpid()}-{sport}"
        exp = state["explain"](proto="udp", src=pkt["src"], dst=pkt["dst"], sport=sport,
                               dport=pkt["dport"], iif=pkt["iif"])
        final = exp.get("packet") or {"src": pkt["src"], "sport": sport,
                                      "dst": pkt["dst"], "dport": pkt["dport"]}
        # A DNAT back to the sender makes a datagram from the sender's own address: the router
        # forwards it (what explain answers for), and the sender's IPv4 stack drops it as a
        # martian (IPv6 takes it).
        martian = final["src"] == final["dst"] and ":" not in final["src"]
        before = counters(router)
        send(hosts[pkt["from"]], pkt["dst"], sport, pkt["dport"], nonce)
        got = catchers.wait(nonce, exp["verdict"] == "accept" and not martian)
        after = counters(router)
        where = f"case {data} packet {pkt} sport {sport}: explain {json.dumps(exp)}"
        event(f"{exp['verdict']} {exp['route']['path']} nat {len(exp.get('nat', []))}")
        if exp["verdict"] != "accept" or martian:
            assert got == [], where
        else:
            assert len(got) == 1, where
            host, rec = got[0]
            want_host = "router" if exp["route"]["path"] == "in" else OWNER[final["dst"]]
            assert host == want_host, where
            assert (rec["src"], rec["sport"], rec["dst"], rec["dport"]) == (
                final["src"], final["sport"], final["dst"], final["dport"]), where
        hit = {s.get("rule") or s.get("name") for s in exp["trace"]
               if s["matched"] and s["kind"] in ("rule", "nat")}
        moved = {i: after.get(i, 0) - before.get(i, 0) for i in ids}
        assert moved == {i: int(i in hit) for i in ids}, where
