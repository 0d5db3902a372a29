"""Golden libnftables JSON for representative rulesets and edits.

The goldens under tests/unit/golden/ were reviewed by hand. After an intended compiler change,
regenerate them with ``MINIFW_UPDATE_GOLDEN=1 pytest tests/unit`` and review the diff.
"""

import json
import os
from pathlib import Path

import pytest

from minifw.compile import comments
from minifw.compile import nft as compiler
from minifw.model import Rule, parse_config

GOLDEN = Path(__file__).with_name("golden")
ROOT = Path(__file__).resolve().parents[2]

POLICY_MIXED = """
[policy]
input = "drop"

[[rule]]
id = "ssh-admins"
priority = -10
proto = "tcp"
src = ["198.18.4.0/24", "fd00:4::/64", "198.18.5.5"]
dport = 22
log = "ssh in"
action = "accept"

[[rule]]
id = "web"
proto = "tcp"
dport = ["80", 443, "8000-8080"]
limit = "100/second burst 20"
action = "accept"

[[rule]]
id = "dns"
family = "ip6"
proto = "udp"
sport = "1024-65535"
dport = 53
action = "accept"
comment = "resolvers only"
"""

REJECTS = """
[[rule]]
id = "rej-any"
src = "198.18.9.9"
action = "reject"

[[rule]]
id = "rej-any-dual"
hook = "forward"
action = "reject"

[[rule]]
id = "rej-tcp"
hook = "output"
proto = "tcp"
dport = 25
action = "reject"

[[rule]]
id = "rej-udp-v4"
hook = "prerouting"
family = "ip"
proto = "udp"
action = "reject"

[[rule]]
id = "rej-icmpv6"
proto = "icmpv6"
icmp_type = "echo-request"
action = "reject"
"""

STATELESS = """
[policy]
forward = "drop"
output = "drop"
stateful = false

[[rule]]
id = "fwd-lan"
hook = "forward"
iif = "lan*"
oif = ["wan0", "wan1"]
state = ["new", "established"]
action = "accept"

[[rule]]
hook = "output"
proto = "icmp"
icmp_type = ["echo-request", 0]
action = "accept"

[[rule]]
id = "log-only"
hook = "postrouting"
priority = 50
dst = "fd00:99::/48"
action = "log"
log = "to the lab"
"""

# [events] drops, [policy] log and [[set]] log: helper rules (capped logs, no verdict, no
# counter) before each drop, one per run set (over a shadow set), and the chain bans_log
EVENTS = """
[policy]
input = "drop"
log = "minifw drop "
log_limit = "3/second burst 5"

[events]
drops = true
limit = "50/second"
group = 7

[[set]]
name = "blocked"
log = "minifw ban "

[[rule]]
id = "ssh"
proto = "tcp"
dport = 22
action = "accept"
log = "ssh "

[[rule]]
id = "rej"
proto = "udp"
dport = 9
action = "reject"

[[rule]]
id = "slow"
proto = "udp"
dport = 10
limit = "5/second"
action = "drop"
""" + "".join(f"""
[[rule]]
id = "net{i}"
src = "198.18.{i}.0/24"
action = "drop"
""" for i in range(8))

CASES = {
    "seed": (ROOT / "examples" / "seed.toml").read_text(),
    "events": EVENTS,
    "policy_mixed": POLICY_MIXED,
    "rejects": REJECTS,
    "stateless": STATELESS,
}


def check_golden(name: str, document: dict) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    if os.environ.get("MINIFW_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden {path.name}; run with MINIFW_UPDATE_GOLDEN=1 and review it"
    assert json.loads(path.read_text()) == json.loads(text)


@pytest.mark.parametrize("name", list(CASES))
def test_load_golden(name):
    ruleset = parse_config(CASES[name], f"{name}.toml")
    check_golden(f"load_{name}", compiler.build_load(ruleset))


def test_load_is_deterministic():
    ruleset = parse_config(POLICY_MIXED, "x.toml")
    assert compiler.build_load(ruleset) == compiler.build_load(parse_config(POLICY_MIXED, "x.toml"))


def test_reload_over_existing_objects_golden():
    """A reload flushes and reuses minifw's chains, deletes stale ones and leaves the rest."""
    ruleset = parse_config(POLICY_MIXED, "x.toml")
    document = compiler.build_load(
        ruleset, existing_chains=["input_m10", "input_0", "forward_5", "output_policy",
                                  "hookfn_test", "prerouting_mine"],
        existing_limits=["limit_web", "limit_old"])
    check_golden("reload_existing", document)
    touched = [json.dumps(c) for c in document["nftables"]]
    assert not any("hookfn_test" in c or "prerouting_mine" in c for c in touched)
    assert not any("table" in c.get("delete", {}) for c in document["nftables"])


def test_add_and_delete_golden():
    ruleset = parse_config(POLICY_MIXED, "x.toml")
    new = Rule.from_toml({"id": "late", "priority": -10, "proto": "udp", "dport": 123,
                          "limit": "5/minute", "action": "accept"})
    joined = ruleset.with_rule(new, 0)
    check_golden("add_before_handle", compiler.build_add(new, joined, True, 42))
    check_golden("add_new_chain", compiler.build_add(
        Rule.from_toml({"id": "x", "hook": "output", "action": "drop"}), joined, False, None))
    check_golden("delete_last_in_chain", compiler.build_delete(new, [7, 9], delete_chain=True))
    check_golden("down", compiler.build_down())


def test_every_nft_rule_has_a_counter_and_the_rule_id_as_comment():
    for name, text in CASES.items():
        ruleset = parse_config(text, f"{name}.toml")
        ids = {r.id for r in ruleset.rules}
        for cmd in compiler.build_load(ruleset)["nftables"]:
            nft_rule = cmd.get("add", {}).get("rule")
            if nft_rule is None or nft_rule["chain"].endswith("_policy"):
                continue
            if comments.helper_owner(nft_rule["comment"]) is not None:
                # a helper: no counter, no verdict, never taken for a rule
                assert not any(k in e for e in nft_rule["expr"]
                               for k in ("counter", "drop", "accept", "reject"))
                assert comments.rule_id_of_comment(nft_rule["comment"]) not in ids
                continue
            assert {"counter": None} in nft_rule["expr"]
            if nft_rule["comment"].startswith("run "):  # a merged run: its set names the rules
                continue
            assert comments.rule_id_of_comment(nft_rule["comment"]) in ids
