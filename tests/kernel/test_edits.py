"""`add` and `delete` under traffic, `--position`, the config written back with its comments,
and `--runtime` changes that stay out of the file and are gone after `reload`."""

import json
import os
import subprocess
import sys

import pytest

from minifw.lab import MINIFW
from minifw.model import parse_config

from kit import (PROBE, SERVER4, SERVER6, listing, nft_chain_ids, nft_objects, pair, reach,
                 rules, serve, up, wait_until)

STREAM_CONFIG = """\
# The firewall of the stream test.
[policy]
input = "drop"
stateful = false     # no conntrack shortcut: every stream packet must meet its own rule

# The long-running flow.
[[rule]]
id = "stream"
proto = "tcp"
dport = 5000
action = "accept"

[[rule]]
id = "ping6"              # keep ND and ping working for the IPv6 probes
proto = "icmpv6"
action = "accept"
"""


class Stream:
    """A TCP echo flow client -> server:5000; ``rounds()`` is the count of finished round trips."""

    def __init__(self, client, addr):
        self.file = client.lab.tmp / f"stream-{addr.replace(':', '_')}"
        client.popen([sys.executable, PROBE, "stream", addr, "5000", str(self.file)])

    def rounds(self) -> int:
        text = self.file.read_text() if self.file.exists() else "0"
        assert not text.startswith("error"), f"the stream broke: {text}"
        return int(text or 0)

    def still_flowing(self) -> None:
        start = self.rounds()
        wait_until(lambda: self.rounds() > start + 100, what="the stream to keep flowing")


def nft_handles(server, rule_id):
    return [r["handle"] for r in nft_objects(server, "rule")
            if r["table"] == "minifw" and r.get("comment", "").split(": ")[0] == rule_id]


def test_add_and_delete_under_traffic(lab):
    server, client = pair(lab)
    serve(server, tcp=[5000], udp=[53, 54])
    path = up(server, STREAM_CONFIG)
    streams = [Stream(client, SERVER4), Stream(client, SERVER6)]
    for s in streams:
        s.still_flowing()
    stream_handles = nft_handles(server, "stream")

    def edit(*args):
        server.minifw(*args)
        for s in streams:
            s.still_flowing()

    reach(client, "udp", SERVER4, 53, expect="timeout")
    edit("add", "--id", "dns", "--proto", "udp", "--dport", "53", "--action", "accept",
         "--position", "0")
    reach(client, "udp", SERVER4, 53, expect="reply")
    reach(client, "udp", SERVER6, 53, expect="reply")
    edit("add", "--id", "udp54-early", "--priority", "-5", "--proto", "udp", "--dport", "54",
         "--action", "accept", "--comment", "a new chain")
    reach(client, "udp", SERVER6, 54, expect="reply")
    edit("add", "--id", "tmp", "--proto", "tcp", "--dport", "81", "--action", "drop",
         "--runtime", "--position", "1")
    assert nft_chain_ids(server, "input_0") == ["dns", "tmp", "stream", "ping6"]
    edit("delete", "dns")
    reach(client, "udp", SERVER4, 53, expect="timeout")
    edit("delete", "tmp", "--runtime")
    edit("delete", "udp54-early")
    reach(client, "udp", SERVER6, 54, expect="timeout")
    assert "input_m5" not in [c["name"] for c in nft_objects(server, "chain")]
    # Incremental: the stream's own nft rules were never replaced, and the policy never
    # dropped one of its packets while rules came and went around it.
    assert nft_handles(server, "stream") == stream_handles
    for s in streams:
        s.still_flowing()
    data = listing(server)
    assert [r["id"] for r in data["rules"]] == ["stream", "ping6"]
    stream_packets = data["rules"][0]["packets"]
    assert stream_packets > 400
    policy_drops = data["policies"][0]["packets"]
    assert policy_drops == 3   # exactly the three UDP probes above that timed out
    assert path.read_text() == STREAM_CONFIG


POSITION_CONFIG = """\
# Web server firewall.
[[rule]]
id = "allow-80"      # the web port
proto = "tcp"
dport = 80
action = "accept"

# Everything else over TCP is refused.
[[rule]]
id = "drop-tcp"
proto = "tcp"
action = "drop"
"""


@pytest.fixture
def web(lab):
    server, client = pair(lab)
    serve(server, tcp=[80, 81])
    return server, client, up(server, POSITION_CONFIG)


def test_position_places_the_rule_within_its_chain(web):
    server, client, path = web
    reach(client, "tcp", SERVER4, 80, expect="open")
    server.minifw("add", "--id", "deny-80", "--proto", "tcp", "--dport", "80", "--action", "drop",
                  "--position", "0")
    reach(client, "tcp", SERVER4, 80, expect="timeout")
    server.minifw("add", "--id", "allow-81", "--proto", "tcp", "--dport", "81",
                  "--action", "accept", "--position", "2")
    reach(client, "tcp", SERVER6, 81, expect="open")
    server.minifw("add", "--id", "last", "--proto", "udp", "--action", "drop")
    order = ["deny-80", "allow-80", "allow-81", "drop-tcp", "last"]
    assert [r["id"] for r in listing(server)["rules"]] == order
    assert nft_chain_ids(server, "input_0") == order
    # The file has the same order, the user's comments, and parses to the live rules.
    text = path.read_text()
    for line in POSITION_CONFIG.splitlines():
        if "#" in line:
            assert line in text
    ids = [line.split('"')[1] for line in text.splitlines() if line.startswith("id = ")]
    assert ids == order
    assert text.index("# Web server firewall.") < text.index('"deny-80"')   # the file's header
    assert text.index('"allow-81"') < text.index("# Everything else") < text.index('"drop-tcp"')
    # incremental edits leave the same chains a full load of the file makes
    assert "nothing changed" in server.minifw("up", "--config", str(path)).stdout
    too_far = server.minifw("add", "--id", "x", "--proto", "udp", "--action", "drop",
                            "--position", "9", check=False)
    assert too_far.returncode != 0 and "position" in too_far.stderr
    assert [r["id"] for r in listing(server)["rules"]] == order


def test_runtime_changes_skip_the_file_and_reload_drops_them(web):
    server, client, path = web
    server.minifw("add", "--id", "rt-81", "--proto", "tcp", "--dport", "81", "--action", "accept",
                  "--position", "0", "--runtime")
    server.minifw("delete", "allow-80", "--runtime")
    assert path.read_text() == POSITION_CONFIG
    got = rules(server)
    assert got["rt-81"]["runtime"] is True and "allow-80" not in got
    reach(client, "tcp", SERVER4, 81, expect="open")
    reach(client, "tcp", SERVER4, 80, expect="timeout")
    server.minifw("reload")
    assert [r["id"] for r in listing(server)["rules"]] == ["allow-80", "drop-tcp"]
    assert nft_chain_ids(server, "input_0") == ["allow-80", "drop-tcp"]
    reach(client, "tcp", SERVER4, 81, expect="timeout")
    reach(client, "tcp", SERVER4, 80, expect="open")
    assert path.read_text() == POSITION_CONFIG


def test_saved_delete_keeps_comments_and_survives_reload(web):
    server, client, path = web
    server.minifw("delete", "allow-80")
    text = path.read_text()
    assert "allow-80" not in text
    assert "# Web server firewall." in text and "# Everything else over TCP is refused." in text
    server.minifw("reload")
    assert list(rules(server)) == ["drop-tcp"]
    reach(client, "tcp", SERVER4, 80, expect="timeout")
    status = json.loads(server.minifw("status", "--json").stdout)
    assert status["rules"] == 1


def test_concurrent_writers_are_serialized(web):
    server, _, path = web
    env = dict(os.environ, MINIFW_STATE_DIR=str(server.state_dir))
    procs = [subprocess.Popen(["ip", "netns", "exec", server.ns, MINIFW, "add", "--id", f"c{i}",
                               "--proto", "udp", "--dport", str(1000 + i), "--action", "drop"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(6)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    added = {f"c{i}" for i in range(6)}
    assert added <= set(rules(server))
    assert added <= set(nft_chain_ids(server, "input_0"))
    assert added <= {r.id for r in parse_config(path.read_text(), str(path)).rules}
    assert len(nft_chain_ids(server, "input_0")) == 8
