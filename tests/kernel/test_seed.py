"""The article's mini-firewall, end to end: ping dropped, HTTP passes, one host blocked."""

import json

SEED = "examples/seed.toml"


def seed_lab(lab):
    server, client, blocked = lab.seed_topology()
    server.serve_http(80)
    return server, client, blocked


def test_seed_drops_icmp_and_blocked_host(lab):
    server, client, blocked = seed_lab(lab)
    assert client.ping("198.18.0.1")
    assert blocked.tcp_ok("198.18.2.1", 80)
    server.minifw("up", "--config", SEED)
    assert not client.ping("198.18.0.1")
    assert client.http_get("http://198.18.0.1/") is not None
    assert blocked.tcp_result("198.18.2.1", 80) == "timeout"
    rules = {r["id"]: r for r in json.loads(server.minifw("list", "--json").stdout)["rules"]}
    assert rules["drop-icmp"]["packets"] >= 1
    assert rules["drop-blocked-host"]["packets"] >= 1
    server.minifw("delete", "drop-icmp", "--runtime")
    assert client.ping("198.18.0.1")
    server.minifw("down")
    assert blocked.tcp_ok("198.18.2.1", 80)
    assert server.run("nft -j list ruleset").stdout.count('"table"') == 0
