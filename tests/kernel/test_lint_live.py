"""The lint at `up` and `reload`: warnings printed and the config applied; --strict refuses and
the kernel stays as it was. `up` without --config takes the loaded config again."""

from __future__ import annotations

from kit import SERVER4, pair, ping_burst, rules, ruleset_shape, write_config

# A ping limit the stateful drop policy undoes (every echo request after the first of a ping
# is established), a rule shadowed by the one before it, an interface this host lacks.
LINTED = """
[policy]
input = "drop"

[[rule]]
id = "ping"
proto = "icmp"
icmp_type = "echo-request"
limit = "2/second burst 2"
action = "accept"

[[rule]]
id = "ssh"
proto = "tcp"
dport = 22
action = "accept"

[[rule]]
id = "ssh-lan"
proto = "tcp"
dport = 22
src = "198.18.0.0/24"
action = "drop"

[[rule]]
id = "wan"
hook = "forward"
iif = "veth-nope"
action = "accept"
"""

# the same policy and ping rule, without the limit: nothing to find
CLEAN = LINTED.split('[[rule]]\nid = "ssh"')[0].replace('limit = "2/second burst 2"\n', "")


def test_up_warns_and_applies_strict_refuses_and_changes_nothing(lab):
    server, client = pair(lab)
    path = write_config(lab, LINTED, "linted.toml")

    # --strict with nothing loaded: refused, and no failsafe load either
    refused = server.minifw("up", "--config", str(path), "--strict", check=False)
    assert refused.returncode == 1
    assert f"{path}:5: --strict refuses a config with lint findings: rule 'ping'" in refused.stderr
    assert server.run(["nft", "list", "table", "inet", "minifw"], check=False).returncode != 0

    done = server.minifw("up", "--config", str(path))
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert any(f"{path}:5: rule 'ping': ineffective-limit" in w for w in warned), warned
    assert any(f"{path}:18: rule 'ssh-lan': shadowed" in w for w in warned), warned
    assert any("rule 'wan': interface: iif 'veth-nope'" in w for w in warned), warned
    assert set(rules(server)) == {"ping", "ssh", "ssh-lan", "wan"}
    # what the lint says is so: the limit lets the whole burst through
    assert ping_burst(client, SERVER4, 30) == 30

    # reload --strict of a config with findings: refused, the kernel as it was
    before = ruleset_shape(server)
    path.write_text(LINTED.replace('dport = 22\nsrc', 'dport = 23\nsrc'))
    refused = server.minifw("reload", "--strict", check=False)
    assert refused.returncode == 1 and "--strict refuses" in refused.stderr
    assert ruleset_shape(server) == before
    other = write_config(lab, LINTED, "other.toml")
    refused = server.minifw("up", "--config", str(other), "--strict", check=False)
    assert refused.returncode == 1 and ruleset_shape(server) == before

    # up without --config reloads the loaded file (not /etc/minifw/minifw.toml)
    path.write_text(CLEAN)
    server.minifw("up", "--strict")
    assert set(rules(server)) == {"ping"}
    assert client.ping(SERVER4)
