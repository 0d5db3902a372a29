"""Every command with other tables in the namespace: a NAT table (prerouting dnat, postrouting
masquerade, and a user chain nft's error hints pick up), an iptables-nft ``ip filter`` table,
and tables named like ours (``inet minifw2``, ``inet nu_minifw``, ``ip minifw``).

minifw must work as it does alone, and leave every foreign table exactly as it was. (nft's
error text names the closest table it knows, "did you mean table 'nat' in family ip?", so
anything that decided on that text broke here.)"""

import json
import os
import signal
import subprocess
import textwrap

import pytest

import rkit
from kit import SERVER4, pair, probes, serve, wait_until
from minifw.lab import MINIFW

FOREIGN = """
table ip nat {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        tcp dport 8080 dnat to 198.18.0.1:80
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 198.18.5.0/24 oifname "eth-c" masquerade
    }
    chain proxy {
        tcp dport 3128 accept
    }
}
table inet minifw2 {
    set blocked { type ipv4_addr; elements = { 198.18.0.2 } }
    chain input { type filter hook input priority 10; policy accept; }
}
table inet nu_minifw {
    chain prerouting { type filter hook prerouting priority -300; policy accept; }
}
table ip minifw {
    chain input_0 { type filter hook input priority 0; policy accept; }
    chain hook_q1000_drop_icmp { type filter hook prerouting priority -300; policy accept; }
}
"""

CONFIG = """
[[rule]]
id = "no-81"
hook = "input"
proto = "tcp"
dport = 81
action = "drop"

[[hook]]
file = "hooks.py"
"""

HOOKS = """
from minifw import ACCEPT, DROP, hook

@hook("prerouting", priority=-300)
def drop_icmp(pkt):
    return DROP if pkt.proto == "icmp" else ACCEPT
"""


def foreign(host):
    """Every table but ``inet minifw``, counters zeroed."""
    data = json.loads(host.run(["nft", "-j", "list", "ruleset"]).stdout)["nftables"]

    def mine(obj):
        body = next(iter(obj.values()))
        return (isinstance(body, dict) and body.get("family") == "inet"
                and body.get("table", body.get("name")) == "minifw")

    def scrub(node):
        if isinstance(node, dict):
            return {k: ({"packets": 0, "bytes": 0} if k == "counter" and isinstance(v, dict)
                        else scrub(v)) for k, v in node.items() if k != "handle"}
        if isinstance(node, list):
            return [scrub(v) for v in node]
        return node
    return [scrub(o) for o in data if "metainfo" not in o and not mine(o)]


@pytest.fixture
def net(lab):
    server, client = pair(lab)
    serve(server, tcp=[80, 81, 82])
    server.run(["nft", "-f", "-"], input=FOREIGN)
    for chain in ("INPUT", "FORWARD", "OUTPUT"):       # iptables-nft's own ip filter table
        server.run(["iptables-nft", "-A", chain, "-p", "tcp", "--dport", "9999", "-j", "ACCEPT"])
    lab.tmp.mkdir(parents=True, exist_ok=True)
    (lab.tmp / "hooks.py").write_text(textwrap.dedent(HOOKS))
    (lab.tmp / "minifw.toml").write_text(CONFIG)
    yield server, client
    for rec in (server.state_dir / "hooks").glob("runner-*.json"):
        try:  # runners outlive `ip netns del`
            os.kill(json.loads(rec.read_text())["pid"], signal.SIGKILL)
        except (ProcessLookupError, ValueError, KeyError):
            pass


def test_every_command_with_foreign_tables(net):
    server, client = net
    before = foreign(server)
    assert {(t["table"]["family"], t["table"]["name"]) for t in before if "table" in t} >= {
        ("ip", "nat"), ("ip", "filter"), ("inet", "minifw2"), ("inet", "nu_minifw"),
        ("ip", "minifw")}
    config = str(server.lab.tmp / "minifw.toml")
    ran = []

    def cli(*args, **kw):
        out = server.minifw(*args, **kw)
        ran.append(args[0] if args[0] != "set" else f"set {args[1]}")
        assert "Traceback" not in out.stderr
        assert foreign(server) == before, f"minifw {' '.join(args)} changed a foreign table"
        return out

    assert "ok: 1 rules" in cli("check", "--config", config).stdout
    assert "started 1 hook runners" in cli("up", "--config", config).stdout
    with probes() as p:
        p.expect(client, "tcp", SERVER4, 80, expect="open")
        p.expect(client, "tcp", SERVER4, 81, expect="timeout")
        p.expect(client, "ping", SERVER4, expect="timeout")

    st = json.loads(cli("status", "--json").stdout)
    assert st["loaded"] and st["hook_problems"] == [] and st["rules"] == 1
    assert [h["function"] for h in st["hooks"] if h["running"]] == ["drop_icmp"]
    ours = {c["chain"] for c in st["chains"]}
    assert ours == {"input_0", "hook_q1000_drop_icmp"}           # not ip minifw's namesakes
    assert {(f["family"], f["table"]) for f in st["foreign_chains"]} >= {
        ("ip", "nat"), ("ip", "filter"), ("inet", "minifw2"), ("inet", "nu_minifw"),
        ("ip", "minifw")}
    assert "minifw: loaded" in cli("status").stdout

    assert [r["id"] for r in json.loads(cli("list", "--json").stdout)["rules"]] == ["no-81"]
    cli("add", "--id", "no-82", "--hook", "input", "--proto", "tcp", "--dport", "82",
        "--action", "drop")
    assert not client.tcp_ok(SERVER4, 82)
    cli("delete", "no-82")
    assert client.tcp_ok(SERVER4, 82)
    why = json.loads(cli("explain", "--proto", "tcp", "--src", "198.18.0.2", "--dst", SERVER4,
                         "--dport", "81", "--run-hooks", "--json").stdout)
    assert (why["verdict"], why["rule"]) == ("drop", "no-81")

    cli("ban", "198.18.0.2")
    assert not client.tcp_ok(SERVER4, 80)
    cli("unban", "198.18.0.2")
    assert client.tcp_ok(SERVER4, 80)
    listing = server.lab.tmp / "bans.txt"
    listing.write_text("198.18.0.2\n198.18.9.0/24\n")
    cli("set", "import", "blocked", str(listing))
    assert not client.tcp_ok(SERVER4, 80)
    assert "198.18.9.0/24" in cli("set", "list", "blocked").stdout
    cli("set", "flush", "blocked")
    assert client.tcp_ok(SERVER4, 80)

    assert "reloaded 1 rules" in cli("reload").stdout
    (pid,) = {h["pid"] for h in json.loads(cli("status", "--json").stdout)["hooks"]}
    assert "restarted 1 hook runners" in cli("reload", "--restart-hooks").stdout
    (pid2,) = {h["pid"] for h in json.loads(cli("status", "--json").stdout)["hooks"]}
    assert pid2 != pid and not client.ping(SERVER4)

    assert "table inet minifw removed" in cli("down").stdout
    with probes() as p:
        p.expect(client, "tcp", SERVER4, 81, expect="open")
        p.expect(client, "ping", SERVER4, expect="reply")

    # `minifw run` in the foreground, the command of the report
    err = open(server.lab.tmp / "run.err", "w+")
    proc = subprocess.Popen(["ip", "netns", "exec", server.ns, MINIFW, "run",
                             str(server.lab.tmp / "hooks.py")],
                            env=dict(os.environ, MINIFW_STATE_DIR=str(server.state_dir)),
                            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    server.lab._procs.append(proc)
    hooks_dir = server.state_dir / "hooks"
    wait_until(lambda: proc.poll() is not None or list(hooks_dir.glob("runner-*.json")),
               timeout=20, what="minifw run to start")
    err.seek(0)
    assert proc.poll() is None, err.read()
    assert not client.ping(SERVER4)
    assert foreign(server) == before
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    ran.append("run")
    assert client.ping(SERVER4) and foreign(server) == before
    rkit.report("foreign tables", commands=len(ran), kinds=len(set(ran)),
                foreign_tables=sum(1 for t in before if "table" in t))
