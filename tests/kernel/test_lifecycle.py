"""up, reload and down as a whole: no trace after down, idempotent up, foreign chains kept,
other tables reported by status, and one independent instance per namespace and state dir."""

import json

from kit import (SERVER4, nft_objects, pair, reach, reload_with, ruleset_shape, ruleset_text,
                 rules, serve, up, write_config)

FULL = """
[policy]
input = "drop"
output = "drop"

[[rule]]
id = "web"
proto = "tcp"
dport = 80
limit = "100/second"
log = "hk-web"
action = "accept"

[[rule]]
id = "early-reject"
hook = "prerouting"
priority = -150
proto = "udp"
dport = 9
action = "reject"
"""


def table_names(host):
    return [(t["family"], t["name"]) for t in nft_objects(host, "table")]


def test_down_leaves_no_trace(lab):
    server, client = pair(lab)
    serve(server, tcp=[80])
    server.run(["nft", "add", "table", "ip", "other"])   # someone else's table, untouched
    before = ruleset_text(server)
    up(server, FULL)
    reach(client, "tcp", SERVER4, 81, expect="timeout")
    assert ("inet", "minifw") in table_names(server)
    out = server.minifw("down")
    assert "removed" in out.stdout
    assert ruleset_text(server) == before
    assert table_names(server) == [("ip", "other")]
    status = json.loads(server.minifw("status", "--json").stdout)
    assert status["loaded"] is False
    assert json.loads(server.minifw("list", "--json").stdout)["rules"] == []
    reach(client, "tcp", SERVER4, 81, expect="refused")   # nothing listens: the kernel's own RST
    again = server.minifw("down")                          # down twice is harmless
    assert again.returncode == 0 and ruleset_text(server) == before


def test_up_is_idempotent(lab):
    server, _ = pair(lab)
    path = up(server, FULL)
    first = ruleset_shape(server)
    out = server.minifw("up", "--config", str(path))
    assert "nothing changed" in out.stdout
    assert ruleset_shape(server) == first                 # same handles: nothing was reapplied
    # A chain emptied or edited by another tool is noticed: up loads again.
    server.run(["nft", "flush", "chain", "inet", "minifw", "input_0"])
    assert "nothing changed" not in server.minifw("up", "--config", str(path)).stdout
    assert "web" in rules(server)
    server.run(["nft", "add", "rule", "inet", "minifw", "input_0", "counter"])
    assert "minifw is up" in server.minifw("up", "--config", str(path)).stdout
    assert "nothing changed" in server.minifw("up", "--config", str(path)).stdout
    # A changed config is applied by the next up.
    path.write_text(FULL.replace("dport = 80", "dport = 8080"))
    server.minifw("up", "--config", str(path))
    assert rules(server)["web"]["match"]["dport"] == 8080


def test_up_and_reload_keep_chains_minifw_does_not_own(lab):
    server, client = pair(lab)
    serve(server, tcp=[80, 81])
    path = up(server, FULL)
    server.run(["nft", "add", "chain", "inet", "minifw", "hookfn_test"])
    server.run(["nft", "add", "rule", "inet", "minifw", "hookfn_test", "counter"])
    server.run(["nft", "add", "chain", "inet", "minifw", "hookfn_base",
                "{ type filter hook input priority 5 ; }"])
    server.run(["nft", "add", "rule", "inet", "minifw", "hookfn_base", "tcp", "dport", "81",
                "counter", "accept"])

    def foreign():
        chains = {c["name"] for c in nft_objects(server, "chain") if c["table"] == "minifw"}
        hookfn_rules = [r for r in nft_objects(server, "rule") if r["chain"].startswith("hookfn")]
        return {"hookfn_test", "hookfn_base"} <= chains, len(hookfn_rules)

    assert foreign() == (True, 2)
    reload_with(server, path, FULL.replace('output = "drop"', ""))
    assert foreign() == (True, 2)
    other = write_config(lab, FULL.replace("dport = 80", "dport = 8080"), "other.toml")
    server.minifw("up", "--config", str(other))
    assert foreign() == (True, 2)
    assert {c["name"] for c in nft_objects(server, "chain") if c["table"] == "minifw"} == {
        "hookfn_test", "hookfn_base", "input_0", "prerouting_m150", "input_policy",
        "output_policy"}
    server.minifw("down")
    assert table_names(server) == []


def test_status_reports_other_tables_at_the_same_hooks(lab):
    server, _ = pair(lab)
    server.run(["nft", "add", "table", "ip", "filter"])
    server.run(["nft", "add", "chain", "ip", "filter", "INPUT",
                "{ type filter hook input priority 0 ; policy accept ; }"])
    server.run(["nft", "add", "chain", "ip", "filter", "FORWARD",
                "{ type filter hook forward priority 0 ; }"])
    up(server, FULL)
    status = json.loads(server.minifw("status", "--json").stdout)
    assert status["loaded"] is True
    assert status["rules"] == 2
    used = {(c["hook"], c["priority"]) for c in status["chains"]}
    assert used == {("input", 0), ("prerouting", -150), ("input", 1000), ("output", 1000)}
    # Only the chain at a hook minifw uses is reported; forward is not one of them.
    assert [(f["family"], f["table"], f["chain"], f["hook"]) for f in status["foreign_chains"]] \
        == [("ip", "filter", "INPUT", "input")]
    assert any("filter" in w and "INPUT" in w for w in status["warnings"])
    text = server.minifw("status").stdout
    assert "warning" in text and "filter" in text


def test_state_dirs_keep_instances_apart(lab):
    a = lab.host("a")
    b = lab.host("b")
    dir_a, dir_b = lab.tmp / "state-a", lab.tmp / "state-b"
    conf_a = write_config(lab, FULL, "a.toml")
    conf_b = write_config(lab, "[[rule]]\nid = \"only-b\"\nproto = \"udp\"\naction = \"drop\"\n",
                          "b.toml")
    a.minifw("--state-dir", str(dir_a), "up", "--config", str(conf_a))
    b.minifw("--state-dir", str(dir_b), "up", "--config", str(conf_b))

    def ids(host, d):
        out = host.minifw("--state-dir", str(d), "list", "--json").stdout
        return [r["id"] for r in json.loads(out)["rules"]]

    assert ids(a, dir_a) == ["early-reject", "web"]
    assert ids(b, dir_b) == ["only-b"]
    a.minifw("--state-dir", str(dir_a), "down")
    assert table_names(a) == []
    assert table_names(b) == [("inet", "minifw")]
    assert json.loads(b.minifw("--state-dir", str(dir_b), "status", "--json").stdout)["loaded"]
    assert json.loads(
        (dir_b / "state.json").read_text())["config"] == str(conf_b)


EDGES = f"""
[[rule]]
id = "{'a' * 64}"
priority = 999
proto = "udp"
dport = "0-65535"
log = "{'y' * 127}"
limit = "4294967295/week burst 4294967295"
comment = "{'c' * 300}"
action = "drop"

[[rule]]
id = "lowest"
hook = "forward"
priority = -2147483648
iif = "eth*"
oif = ["x", "y*"]
log = "{'é' * 63}"
action = "log"

[[rule]]
hook = "prerouting"
priority = -199
state = ["established", "related", "new", "invalid", "untracked"]
action = "accept"

[[rule]]
hook = "output"
proto = "icmpv6"
icmp_type = [0, 255, "nd-redirect"]
dst = "fd00::/8"
action = "reject"
"""


def test_the_kernel_accepts_every_edge_the_model_allows(lab):
    host = lab.host("fw")
    up(host, EDGES)
    got = json.loads(host.minifw("list", "--json").stdout)["rules"]
    assert len(got) == 4
    limits = nft_objects(host, "limit")
    assert [(lim["rate"], lim["per"], lim["burst"]) for lim in limits] == [
        (4294967295, "week", 4294967295)]
    comments = [r["comment"] for r in nft_objects(host, "rule")]
    assert all(len(c.encode()) <= 127 for c in comments)
    assert any(c.startswith("a" * 64 + ": ccc") for c in comments)


def test_status_fails_when_the_table_is_gone_from_under_a_loaded_state(lab):
    server, _ = pair(lab)
    up(server, FULL)
    assert server.minifw("status", check=False).returncode == 0
    server.run(["nft", "delete", "table", "inet", "minifw"])   # another tool flushed it
    for args in (["status"], ["status", "--json"]):
        proc = server.minifw(*args, check=False)
        assert proc.returncode == 1, proc
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "table inet minifw is missing" in errors[0]
    assert json.loads(server.minifw("status", "--json", check=False).stdout)["table_missing"]
    server.minifw("reload")
    assert server.minifw("status", check=False).returncode == 0
