"""Named sets and bans against the real kernel: traffic dropped, timeouts expiring, persistence."""

import json
import os
import time
from pathlib import Path

import pytest

from minifw.lab import Lab

from kit import ruleset_shape

# A banned IPv6 source loses neighbour discovery too: once the neighbour entry ages out (a
# loaded machine), its connect fails with EHOSTUNREACH instead of timing out. Both are drops.
V6_BANNED = ("timeout", "error 113")

CONFIG = """
[[set]]
name = "web_block"
elements = ["198.18.3.0/24"]

[[rule]]
id = "drop-web-block"
src = "@web_block"
proto = "tcp"
dport = 80
action = "drop"
"""


@pytest.fixture
def hlab():
    if os.geteuid() != 0:
        pytest.skip("kernel tests need root")
    with Lab(prefix=f"hs{os.getpid() % 10000}k") as lab:
        yield lab


def ban_lab(lab, config_text):
    server = lab.host("server")
    client = lab.host("client")
    other = lab.host("other")
    lab.link(server, ["198.18.0.1/24", "fd00:0::1/64"], client, ["198.18.0.2/24", "fd00:0::2/64"])
    lab.link(server, ["198.18.3.1/24"], other, ["198.18.3.2/24"])
    client.run("ip route add default via 198.18.0.1")
    other.run("ip route add default via 198.18.3.1")
    server.serve_http(80)
    cfg = lab.tmp / "minifw.toml"
    lab.tmp.mkdir(parents=True, exist_ok=True)
    cfg.write_text(config_text)
    return server, client, other, str(cfg)


def counts(server):
    st = json.loads(server.minifw("status", "--json").stdout)
    return {s["name"]: s["elements"] for s in st["set_elements"]}


def test_ban_drops_traffic_and_persists(hlab):
    server, client, other, cfg = ban_lab(hlab, CONFIG)
    server.minifw("up", "--config", cfg)
    assert client.tcp_ok("198.18.0.1", 80)
    assert other.tcp_result("198.18.3.1", 80) == "timeout"     # config set in a rule
    server.minifw("ban", "198.18.0.2")                          # creates 'blocked' on first use
    assert client.tcp_result("198.18.0.1", 80) == "timeout"
    assert client.tcp_ok("fd00::1", 80)
    server.minifw("ban", "fd00::/64")                           # a CIDR goes to the interval set
    assert client.tcp_result("fd00::1", 80) in V6_BANNED
    assert counts(server) == {"blocked": 2, "web_block": 1}
    # persistence: down/up, then reload, keep the bans
    server.minifw("down")
    assert client.tcp_ok("198.18.0.1", 80)
    server.minifw("up", "--config", cfg)
    assert client.tcp_result("198.18.0.1", 80) == "timeout"
    assert client.tcp_result("fd00::1", 80) in V6_BANNED
    server.minifw("reload")
    assert client.tcp_result("198.18.0.1", 80) == "timeout"
    assert counts(server)["blocked"] == 2
    out = server.minifw("unban", "fd00::2").stdout
    assert "covered by fd00::/64" in out
    out = server.minifw("unban", "198.18.0.2", "fd00::/64", "198.18.0.77")
    assert out.returncode == 0 and "198.18.0.77 is not in set blocked" in out.stdout
    assert client.tcp_ok("198.18.0.1", 80)
    assert client.tcp_ok("fd00::1", 80)
    assert server.minifw("list", "--json").returncode == 0


def test_timeouts_expire_and_keep_absolute_expiry(hlab):
    server, client, _, cfg = ban_lab(hlab, "")
    server.minifw("up", "--config", cfg)
    banned_at = time.monotonic()
    server.minifw("ban", "198.18.0.2", "--timeout", "8s")
    assert client.tcp_result("198.18.0.1", 80) == "timeout"
    server.minifw("down")
    server.minifw("up", "--config", cfg)                       # re-loaded with the time left
    elems = json.loads(server.run("nft -j list set inet minifw s_blocked_v4").stdout)
    left = [e["elem"]["timeout"] for obj in elems["nftables"] if "set" in obj
            for e in obj["set"].get("elem", []) if isinstance(e, dict)]
    # the remaining time, not the full 8 s again (generous slack for a loaded machine)
    assert left and all(t <= 8 - int(time.monotonic() - banned_at) + 1 for t in left)
    time.sleep(max(0.0, 8.5 - (time.monotonic() - banned_at)))
    assert client.tcp_ok("198.18.0.1", 80)
    assert counts(server)["blocked"] == 0
    listing = json.loads(server.minifw("set", "list", "blocked", "--json").stdout)
    assert listing["items"] == []


def test_import_bad_line_changes_nothing(hlab):
    server, client, _, cfg = ban_lab(hlab, "")
    server.minifw("up", "--config", cfg)
    before = ruleset_shape(server)
    bad = hlab.tmp / "bad.txt"
    bad.write_text("# list\n198.18.0.2\n198.18.0.300\n")
    proc = server.minifw("set", "import", "blocked", str(bad), check=False)
    assert proc.returncode == 1 and f"{bad}:3:" in proc.stderr
    assert ruleset_shape(server) == before
    assert client.tcp_ok("198.18.0.1", 80)
    proc = server.minifw("set", "import", "blocked", str(bad), "--skip-invalid")
    assert "imported 1" in proc.stdout
    assert client.tcp_result("198.18.0.1", 80) == "timeout"
    server.minifw("set", "flush", "blocked")
    assert client.tcp_ok("198.18.0.1", 80)


def test_rule_runs_drop_like_plain_rules(hlab):
    rules = "".join(f'\n[[rule]]\nid = "d{i}"\nsrc = "198.18.9.{i}"\naction = "drop"\n'
                    for i in range(1, 21))
    rules += '\n[[rule]]\nid = "d-client"\nsrc = "198.18.0.2"\naction = "drop"\n'
    server, client, _, cfg = ban_lab(hlab, rules)
    server.minifw("up", "--config", cfg)
    listing = json.loads(server.run("nft -j list chain inet minifw input_0").stdout)
    assert len([o for o in listing["nftables"] if "rule" in o]) == 1   # one lookup, not 21 rules
    assert client.tcp_result("198.18.0.1", 80) == "timeout"
    rules_listed = json.loads(server.minifw("list", "--json").stdout)["rules"]
    assert len(rules_listed) == 21
    assert {r["id"]: r["packets"] for r in rules_listed}["d-client"] >= 1
    server.minifw("delete", "d-client")
    assert client.tcp_ok("198.18.0.1", 80)
    assert len(json.loads(server.minifw("list", "--json").stdout)["rules"]) == 20


def test_reload_applies_config_set_difference_and_keeps_bans(hlab):
    server, client, other, cfg = ban_lab(hlab, CONFIG)
    server.minifw("up", "--config", cfg)
    server.minifw("ban", "198.18.0.2")
    assert other.tcp_result("198.18.3.1", 80) == "timeout"
    # the CIDR leaves the config: reload removes it from the kernel and keeps the ban
    Path(cfg).write_text(CONFIG.replace('"198.18.3.0/24"', '"198.18.7.7"'))
    server.minifw("reload")
    assert other.tcp_ok("198.18.3.1", 80)
    assert client.tcp_result("198.18.0.1", 80) == "timeout"
    assert counts(server) == {"blocked": 1, "web_block": 1}
    # a bad config changes nothing: the kernel ruleset stays byte-identical
    before = ruleset_shape(server)
    Path(cfg).write_text(CONFIG.replace('"198.18.3.0/24"', '"198.18.3.1/24"'))
    proc = server.minifw("reload", check=False)
    assert proc.returncode == 1 and "host bits" in proc.stderr
    assert ruleset_shape(server) == before
    proc = server.minifw("ban", "198.18.0.999", check=False)
    assert proc.returncode == 1
    assert ruleset_shape(server) == before


def test_imported_block_persists_and_unbans(hlab):
    server, client, _, cfg = ban_lab(hlab, "")
    server.minifw("up", "--config", cfg)
    listing = hlab.tmp / "list.txt"
    listing.write_text("# imported\n198.18.0.2\nfd00::2\n198.18.7.7\n198.18.0.2\n")
    assert "imported 3" in server.minifw("set", "import", "blocked", str(listing),
                                         "--timeout", "1h").stdout
    assert client.tcp_result("198.18.0.1", 80) == "timeout"
    assert counts(server)["blocked"] == 3
    server.minifw("down")                              # the import comes back from its block
    server.minifw("up", "--config", cfg)
    assert client.tcp_result("198.18.0.1", 80) == "timeout"
    assert client.tcp_result("fd00::1", 80) in V6_BANNED
    items = json.loads(server.minifw("set", "list", "blocked", "--json").stdout)["items"]
    assert len(items) == 3 and all(0 < i["expires_in"] <= 3600 for i in items)
    out = server.minifw("unban", "198.18.0.2").stdout
    assert "unbanned 1" in out and counts(server)["blocked"] == 2
    assert client.tcp_ok("198.18.0.1", 80)
    server.minifw("down")                              # an unbanned address stays unbanned
    server.minifw("up", "--config", cfg)
    assert client.tcp_ok("198.18.0.1", 80)
    assert client.tcp_result("fd00::1", 80) in V6_BANNED


def kernel_expiry(server, kset):
    """{element: seconds until it expires in the kernel, or None} of one backing set."""
    out = json.loads(server.run(f"nft -j list set inet minifw {kset}").stdout)
    found = {}
    for obj in out["nftables"]:
        for e in obj.get("set", {}).get("elem", []):
            val = e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
            if isinstance(val, dict):
                val = f'{val["prefix"]["addr"]}/{val["prefix"]["len"]}'
            found[val] = e["elem"].get("expires") if isinstance(e, dict) and "elem" in e else None
    return found


def test_reimport_refreshes_the_kernel_timeout(hlab):
    server, _, _, cfg = ban_lab(hlab, "")
    server.minifw("up", "--config", cfg)
    listing = hlab.tmp / "list.txt"
    listing.write_text("198.18.0.2\nfd00::2\n198.18.8.0/24\n")
    server.minifw("set", "import", "blocked", str(listing), "--timeout", "1m")
    server.minifw("set", "import", "blocked", str(listing), "--timeout", "1h")
    for kset, elem in (("s_blocked_v4", "198.18.0.2"), ("s_blocked_v6", "fd00::2"),
                       ("s_blocked_v4net", "198.18.8.0/24")):
        assert 3000 < kernel_expiry(server, kset)[elem] <= 3600, kset
    items = json.loads(server.minifw("set", "list", "blocked", "--json").stdout)["items"]
    assert len(items) == 3 and all(3000 < i["expires_in"] <= 3600 for i in items)
    # a permanent import of the same addresses makes them permanent in the kernel too, and a
    # timed import of permanent ones gives them the timeout
    server.minifw("set", "import", "blocked", str(listing))
    for kset, elem in (("s_blocked_v4", "198.18.0.2"), ("s_blocked_v6", "fd00::2"),
                       ("s_blocked_v4net", "198.18.8.0/24")):
        assert kernel_expiry(server, kset)[elem] is None, kset
    server.minifw("set", "import", "blocked", str(listing), "--timeout", "1h")
    for kset, elem in (("s_blocked_v4", "198.18.0.2"), ("s_blocked_v6", "fd00::2"),
                       ("s_blocked_v4net", "198.18.8.0/24")):
        assert 3000 < kernel_expiry(server, kset)[elem] <= 3600, kset


def kernel_elements(host, kset):
    """{address: timeout or None} of a small kernel set (never for big ones: it lists all)."""
    listing = json.loads(host.run(f"nft -j list set inet minifw {kset}").stdout)["nftables"]
    out = {}
    def text(val):
        return f"{val['prefix']['addr']}/{val['prefix']['len']}" if isinstance(val, dict) else val
    for item in next(o["set"] for o in listing if "set" in o).get("elem", []):
        if isinstance(item, dict) and "elem" in item:
            out[text(item["elem"]["val"])] = item["elem"].get("timeout")
        else:
            out[text(item)] = None
    return out


def test_import_of_present_addresses_sets_their_timeout_in_kernel_and_record(hlab):
    server, _, _, cfg = ban_lab(hlab, "")
    server.minifw("up", "--config", cfg)
    server.minifw("ban", "198.18.5.5", "fd00::5", "--timeout", "30s")
    server.minifw("ban", "198.18.5.7")                                 # permanent
    listing = hlab.tmp / "list.txt"
    listing.write_text("198.18.5.5\nfd00::5\n198.18.5.7\n198.18.5.6\n")
    server.minifw("set", "import", "blocked", str(listing), "--timeout", "1h")
    assert kernel_elements(server, "s_blocked_v4") == {
        "198.18.5.5": 3600, "198.18.5.6": 3600, "198.18.5.7": 3600}
    assert kernel_elements(server, "s_blocked_v6") == {"fd00::5": 3600}
    items = json.loads(server.minifw("set", "list", "blocked", "--json").stdout)["items"]
    assert len(items) == 4 and all(3500 < i["expires_in"] <= 3600 for i in items)
    server.minifw("set", "import", "blocked", str(listing))           # now without a timeout
    assert kernel_elements(server, "s_blocked_v4") == {
        "198.18.5.5": None, "198.18.5.6": None, "198.18.5.7": None}
    items = json.loads(server.minifw("set", "list", "blocked", "--json").stdout)["items"]
    assert [i["expires_in"] for i in items] == [None] * 4


def test_an_import_the_kernel_refuses_halfway_is_taken_back(hlab):
    """The kernel set is made with a size limit the import overflows: its first transaction
    goes in, the next is refused; the kernel set and the record end as they were."""
    server, _, _, cfg = ban_lab(hlab, "")
    server.run("nft add table inet minifw")
    server.run(["nft", "add set inet minifw s_blocked_v4 { type ipv4_addr; flags timeout; "
                "size 60000; gc-interval 1m; }"])
    server.minifw("up", "--config", cfg)
    server.minifw("ban", "198.18.9.9")
    listing = hlab.tmp / "big.txt"
    listing.write_text("".join(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}\n"
                               for i in range(100_000)))
    out = server.minifw("set", "import", "blocked", str(listing), check=False)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert str(listing) in out.stderr and "taken back" in out.stderr and "full" in out.stderr
    assert kernel_elements(server, "s_blocked_v4") == {"198.18.9.9": None}
    assert counts(server) == {"blocked": 1}


def ban_chains(host):
    """{chain: [what each rule does]} of the three ban chains: a looked-up set or "dispatch"."""
    listing = json.loads(host.run("nft -j list ruleset").stdout)["nftables"]
    out = {"bans": [], "bans_v4": [], "bans_v6": []}
    for obj in listing:
        rule = obj.get("rule")
        if not rule or rule["table"] != "minifw" or rule["chain"] not in out:
            continue
        shape = None
        for expr in rule["expr"]:
            right = expr.get("match", {}).get("right")
            if isinstance(right, str) and right.startswith("@"):
                shape = right[1:]
            elif "vmap" in expr:
                shape = "dispatch"
        out[rule["chain"]].append(shape)
    return out


def test_ban_chain_looks_up_only_the_backing_sets_that_hold_elements(hlab):
    server, client, _, cfg = ban_lab(hlab, "")
    server.minifw("up", "--config", cfg)
    server.minifw("ban", "fd00::2")                    # IPv6 only: one lookup, in the base chain
    assert ban_chains(server) == {"bans": ["s_blocked_v6"], "bans_v4": [], "bans_v6": []}
    assert client.tcp_result("fd00::1", 80) in V6_BANNED
    assert client.tcp_ok("198.18.0.1", 80)
    server.minifw("ban", "198.18.0.0/24")              # both versions: dispatch by version
    assert ban_chains(server) == {"bans": ["dispatch"], "bans_v4": ["s_blocked_v4net"],
                                  "bans_v6": ["s_blocked_v6"]}
    assert client.tcp_result("198.18.0.1", 80) == "timeout"
    imports = hlab.tmp / "v4.txt"
    imports.write_text("198.18.9.1\n198.18.9.2\n")
    server.minifw("set", "import", "blocked", str(imports))
    assert ban_chains(server)["bans_v4"] == ["s_blocked_v4", "s_blocked_v4net"]
    # unban leaves the lookups until the next load, which drops those of empty sets
    server.minifw("unban", "198.18.0.0/24", "fd00::2")
    assert client.tcp_ok("198.18.0.1", 80) and client.tcp_ok("fd00::1", 80)
    server.minifw("reload")
    assert ban_chains(server) == {"bans": ["s_blocked_v4"], "bans_v4": [], "bans_v6": []}
    server.minifw("set", "flush", "blocked")
    assert ban_chains(server) == {"bans": [], "bans_v4": [], "bans_v6": []}
    # a ban recorded while down is looked up from the next up
    server.minifw("down")
    server.minifw("ban", "198.18.0.2")
    server.minifw("up", "--config", cfg)
    assert ban_chains(server) == {"bans": ["s_blocked_v4"], "bans_v4": [], "bans_v6": []}
    assert client.tcp_result("198.18.0.1", 80) == "timeout"


def test_ban_chains_laid_out_otherwise_are_rebuilt_with_every_recorded_kind(hlab):
    server, client, _, cfg = ban_lab(hlab, "")
    server.minifw("up", "--config", cfg)
    server.minifw("ban", "198.18.0.2")
    # an older layout: every lookup in the base chain, no per-version chains
    server.run("nft delete chain inet minifw bans_v4")
    server.run("nft flush chain inet minifw bans")
    for match in ("ip saddr @s_blocked_v4", "ip saddr @s_blocked_v4net",
                  "ip6 saddr @s_blocked_v6", "ip6 saddr @s_blocked_v6net"):
        server.run(["nft", f"add rule inet minifw bans {match} counter drop comment \"ban blocked\""])
    server.minifw("ban", "fd00::2")
    assert ban_chains(server) == {"bans": ["dispatch"], "bans_v4": ["s_blocked_v4"],
                                  "bans_v6": ["s_blocked_v6"]}
    assert client.tcp_result("198.18.0.1", 80) == "timeout"     # the earlier ban still drops
    assert client.tcp_result("fd00::1", 80) in V6_BANNED


def test_config_elements_stay_permanent_through_timed_bans_imports_and_unbans(hlab):
    server, client, _, cfg = ban_lab(
        hlab, '[[set]]\nname = "blocked"\nelements = ["198.18.0.2", "fd00::/64"]\n')
    server.minifw("up", "--config", cfg)
    assert client.tcp_result("198.18.0.1", 80) == "timeout"
    out = server.minifw("ban", "198.18.0.2", "fd00::/64", "198.18.0.9", "--timeout", "3s").stdout
    assert "198.18.0.2 stays permanent" in out and "fd00::/64 stays permanent" in out
    imports = hlab.tmp / "timed.txt"
    imports.write_text("198.18.0.2\n198.18.0.8\n")
    server.minifw("set", "import", "blocked", str(imports), "--timeout", "3s")
    assert "stays in set blocked: the config lists it" in server.minifw("unban", "fd00::/64").stdout
    assert kernel_elements(server, "s_blocked_v4")["198.18.0.2"] is None
    assert kernel_elements(server, "s_blocked_v6net") == {"fd00::/64": None}
    time.sleep(4)                                              # the timed elements expire
    assert set(kernel_elements(server, "s_blocked_v4")) == {"198.18.0.2"}
    server.minifw("reload")
    assert client.tcp_result("198.18.0.1", 80) == "timeout"
    assert client.tcp_result("fd00::1", 80) in V6_BANNED
    items = json.loads(server.minifw("set", "list", "blocked", "--json").stdout)["items"]
    assert {(i["element"], i["expires_in"]) for i in items} == {("198.18.0.2", None),
                                                                ("fd00::/64", None)}
    mapped = server.minifw("ban", "::ffff:198.18.0.9")             # banned, with a warning
    assert "IPv4-mapped" in mapped.stdout + mapped.stderr and "198.18.0.9" in mapped.stderr


def test_a_zoned_address_in_a_set_is_refused_before_anything_changes(hlab):
    server, _, _, cfg = ban_lab(hlab, CONFIG)
    server.minifw("up", "--config", cfg)
    before = ruleset_shape(server)
    bad = hlab.tmp / "zoned.toml"
    bad.write_text(CONFIG.replace('"198.18.3.0/24"', '"198.18.3.0/24", "fe80::1%eth0"'))
    for args in (["check", "--config", str(bad)], ["reload", "--config", str(bad)],
                 ["ban", "fe80::1%eth0"]):
        proc = server.minifw(*args, check=False)
        assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "zone" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert ruleset_shape(server) == before


def test_a_set_the_config_drops_goes_unless_something_was_banned_into_it(hlab):
    server, _, _, cfg = ban_lab(hlab, CONFIG + '\n[[set]]\nname = "keep"\nelements = ["198.18.7.7"]\n')
    server.minifw("up", "--config", cfg)
    server.minifw("ban", "198.18.8.8", "--set", "keep")            # a runtime element
    Path(cfg).write_text("")
    server.minifw("reload")
    assert counts(server) == {"keep": 1}                            # web_block is gone
    sets = {o["set"]["name"] for o in json.loads(server.run("nft -j list sets").stdout)["nftables"]
            if "set" in o}
    assert not any(n.startswith("s_web_block_") for n in sets)
    assert "s_keep_v4" in sets
