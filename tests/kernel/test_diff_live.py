"""`minifw diff` on a real kernel: nothing loaded, up to date, one rule changed, another config
file, a reordered chain, and a ruleset flushed by another tool (not in sync); it never
changes the kernel."""

from __future__ import annotations

import json

import pytest

from kit import ruleset_text, up, write_config

pytestmark = pytest.mark.timeout(60)

A = ('[[rule]]\nid = "web"\nproto = "tcp"\ndport = 80\naction = "accept"\n\n'
     '[[rule]]\nid = "dns"\nproto = "udp"\ndport = 53\naction = "accept"\n')


def diff(host, config) -> dict:
    return json.loads(host.minifw("diff", "--config", str(config), "--json").stdout)


def test_diff_against_the_live_ruleset(lab):
    host = lab.host("fw")
    a = write_config(lab, A, "a.toml")
    found = diff(host, a)
    assert (found["loaded"], found["in_sync"], found["up_to_date"]) == (False, False, False)
    assert [r["id"] for r in found["added"]] == ["web", "dns"]

    up(host, A, "a.toml")
    live = ruleset_text(host)
    assert diff(host, a) == {"wanted": str(a), "loaded": True, "config": str(a), "in_sync": True,
                             "same": True, "up_to_date": True, "added": [], "removed": [],
                             "changed": [], "moved": [], "sections": []}

    b = write_config(lab, A.replace("dport = 80", "dport = 8080"), "b.toml")
    found = diff(host, b)
    assert found["changed"] == [{"id": "web",
                                 "live": {"id": "web", "proto": "tcp", "dport": 80,
                                          "action": "accept"},
                                 "wanted": {"id": "web", "proto": "tcp", "dport": 8080,
                                            "action": "accept"}}]
    assert (found["same"], found["up_to_date"], found["added"], found["removed"]) == \
        (False, False, [], [])
    text = host.minifw("diff", "--config", str(b)).stdout
    assert "~ web" in text and "dport=8080" in text and "dns" not in text

    # the same rules from another file: the rulesets are the same, but 'up' would switch files
    same = write_config(lab, A, "same.toml")
    assert (diff(host, same)["same"], diff(host, same)["up_to_date"]) == (True, False)

    swapped = A.split("\n\n")
    found = diff(host, write_config(lab, swapped[1] + "\n" + swapped[0] + "\n", "c.toml"))
    assert found["moved"] == ["input/0"] and found["changed"] == []
    assert ruleset_text(host) == live                  # diff changed nothing

    host.run(["nft", "flush", "chain", "inet", "minifw", "input_0"])
    found = diff(host, a)
    assert (found["same"], found["in_sync"], found["up_to_date"]) == (True, False, False)


def test_a_broken_config_is_one_line(lab):
    host = lab.host("fw")
    bad = write_config(lab, A.replace('"accept"', '"acept"', 1), "bad.toml")
    out = host.minifw("diff", "--config", str(bad), "--json", check=False)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith(f"error: {bad}:") and out.stderr.count("\n") == 1
