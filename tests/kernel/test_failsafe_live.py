"""Failsafe start on the real kernel: with minifw not loaded (after ``down``, or with its table
gone as after a reboot), ``up`` of a broken config loads the last good ruleset, which then
filters real traffic, and fails; ``status`` says failsafe and fails until a good reload. With
no last good ruleset, nothing is loaded and the error says so. (The kernel-refused branch runs
on the fake kernel: tests/unit/test_failsafe.py.)"""

import json

from kit import SERVER4, nft_chain_ids, nft_objects, pair, probes, ruleset_text, serve, \
    write_config

GOOD = """
[policy]
input = "drop"

[[rule]]
id = "web"
proto = "tcp"
dport = 80
action = "accept"
"""
# The operator meant to open 81 too, and mistyped the port: the file does not validate.
BROKEN = GOOD + """
[[rule]]
id = "alt"
proto = "tcp"
dport = 81000
action = "accept"
"""


def error_line(proc) -> str:
    lines = proc.stderr.splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    return lines[0]


def minifw_chains(host) -> set:
    return {c["name"] for c in nft_objects(host, "chain") if c["table"] == "minifw"}


def test_a_broken_config_brings_up_the_last_good_ruleset(lab):
    server, client = pair(lab)
    serve(server, tcp=[80, 81])
    path = write_config(lab, GOOD)
    server.minifw("up", "--config", str(path))
    chains = minifw_chains(server)
    assert chains == {"input_0", "input_policy"}
    for how in ("down", "table gone"):
        if how == "down":   # down keeps the last good ruleset for the next start
            server.minifw("down")
        else:               # what a reboot leaves: no table, a state directory that says up
            server.run(["nft", "delete", "table", "inet", "minifw"])
        path.write_text(BROKEN)
        line = error_line(server.minifw("up", "--config", str(path), check=False))
        assert f"{path}:" in line and "'alt'" in line and "'dport'" in line
        assert "failsafe: loaded the last good ruleset from" in line, line
        assert minifw_chains(server) == chains and nft_chain_ids(server, "input_0") == ["web"]
        with probes() as p:                 # the last good rules filter real traffic
            p.expect(client, "tcp", SERVER4, 80, expect="open")
            p.expect(client, "tcp", SERVER4, 81, expect="timeout")
        status = server.minifw("status", check=False)
        assert "failsafe: running the last good ruleset from " in status.stdout
        assert "config error: " in status.stdout and "'alt'" in status.stdout
        assert "minifw is in failsafe" in error_line(status)
        data = json.loads(server.minifw("status", "--json", check=False).stdout)
        assert data["loaded"] and data["failsafe"]["running"]
        assert data["failsafe"]["config"] == str(path)
        assert data["failsafe"]["last_good"]["rules"] == 1
        path.write_text(GOOD)
    # the config fixed, a reload ends the failsafe
    path.write_text(GOOD.replace("dport = 80", "dport = [80, 81]"))
    server.minifw("reload")
    assert server.minifw("status").returncode == 0
    assert json.loads(server.minifw("status", "--json").stdout)["failsafe"] is None
    with probes() as p:
        p.expect(client, "tcp", SERVER4, 81, expect="open")


def test_no_last_good_ruleset_loads_nothing_and_says_so(lab):
    server, client = pair(lab)
    serve(server, tcp=[81])
    before = ruleset_text(server)
    path = write_config(lab, BROKEN)
    line = error_line(server.minifw("up", "--config", str(path), check=False))
    assert f"{path}:" in line and "'alt'" in line
    assert "no last good ruleset exists, so nothing was loaded" in line, line
    assert ruleset_text(server) == before       # nothing at all went in
    status = server.minifw("status", check=False)
    assert "minifw: not loaded" in status.stdout
    assert "failsafe: no last good ruleset exists, nothing is loaded, config error: " \
        in status.stdout
    assert "has no ruleset loaded" in error_line(status)
    with probes() as p:
        p.expect(client, "tcp", SERVER4, 81, expect="open")
