"""`minifw explain` on a live instance: the live ruleset, other tables, and --pcap of real traffic."""

from __future__ import annotations

import json
import os

import pytest

from minifw.engine.explain import Probe, explain
from minifw.model import parse_config

from difflab import DiffLab, Sent, build_ip, ether
from kit import LAB_PREFIX

CONFIG = """
[policy]
input = "drop"

[[rule]]
id = "drop-icmp"
hook = "prerouting"
priority = -300
proto = "icmp"
action = "drop"

[[rule]]
id = "web"
proto = "tcp"
dport = [80, 443]
action = "accept"

[[rule]]
id = "no-dns"
proto = "udp"
dport = 53
action = "reject"
"""


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("kernel tests need root")
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})
    try:
        with DiffLab(prefix=f"{LAB_PREFIX}{os.getpid() % 10000}l") as lab:
            lab.load(CONFIG)
            yield lab
    finally:
        os.sched_setaffinity(0, saved)


def explain_json(lab: DiffLab, *args: str) -> dict:
    return json.loads(lab.fw.minifw("explain", *args, "--json").stdout)


def test_explain_reads_the_live_ruleset_and_its_runtime_edits(lab):
    args = ("--proto", "tcp", "--src", "198.18.64.1", "--dst", "198.18.0.1", "--dport", "22",
            "--iif", "c0")
    assert explain_json(lab, *args)["decided_by"] == "policy"
    lab.fw.minifw("add", "--id", "ssh", "--proto", "tcp", "--dport", "22", "--action",
                  "accept", "--runtime")
    try:
        got = explain_json(lab, *args)
        assert (got["verdict"], got["rule"]) == ("accept", "ssh")
        probe = Probe.describe(proto="tcp", src="198.18.64.1", dst="198.18.0.1", dport=22,
                               iif="c0")
        sent = lab.send(Sent(probe, "c", b"minifw-live-ssh"))
        assert sent.delivered and sent.counters.get("ssh") == 1
    finally:
        lab.fw.minifw("delete", "ssh", "--runtime")
    assert explain_json(lab, *args)["verdict"] == "drop"


def test_explain_warns_about_other_tables_at_the_same_hooks(lab):
    lab.fw.run(["nft", "add table ip hxother; add chain ip hxother inp "
                "{ type filter hook input priority 0; policy accept; }"])
    try:
        res = lab.fw.minifw("explain", "--proto", "udp", "--src", "198.18.64.1", "--dst",
                            "198.18.0.1", "--dport", "53")
        assert res.stdout.startswith("reject: rule no-dns at input/0")
        assert "warning: table ip hxother has base chain inp at input priority 0" in res.stderr
        # IPv6 packets never meet an ip table's chain.
        res = lab.fw.minifw("explain", "--proto", "udp", "--src", "fd00:c1::1", "--dst",
                            "fd00:c::1", "--dport", "53")
        assert "hxother" not in res.stderr
    finally:
        lab.fw.run(["nft", "delete table ip hxother"])


def test_pcap_of_real_traffic_matches_the_counters(lab, tmp_path):
    """Send real packets, keep them in a capture, and check that explain --pcap sums them up
    exactly as the rules' counters in the kernel did."""
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    lab.load(CONFIG)  # fresh counters
    ruleset = parse_config(CONFIG, "live")
    specs = [("icmp", "198.18.64.1", None), ("icmpv6", "fd00:c1::1", None),
             ("tcp", "198.18.64.2", 80), ("tcp", "fd00:c1::2", 443), ("tcp", "198.18.64.1", 22),
             ("udp", "198.18.65.9", 53), ("udp", "fd00:c1::1", 53), ("udp", "198.18.64.1", 123),
             ("icmp", "198.18.64.2", None)]
    frames, expected = [], {}
    for n, (proto, src, dport) in enumerate(specs):
        dst = "198.18.0.1" if ":" not in src else "fd00:c::1"
        probe = Probe.describe(proto=proto, src=src, dst=dst, dport=dport,
                               sport=41000 + n if dport else None, iif="c0")
        nonce = b"minifw-pcap-%d" % n
        obs = lab.send(Sent(probe, "c", nonce))
        exp = explain(ruleset, probe)
        assert obs.passed == (exp.verdict == "accept")
        for key, count in obs.counters.items():
            expected[key] = expected.get(key, 0) + count
        frames.append(Ether(ether(lab.mac["fw-c"], lab.mac["c"],
                                  0x0800 if probe.version == 4 else 0x86DD,
                                  build_ip(probe, nonce))))
    cap = lab.lab.tmp / "traffic.pcap"
    wrpcap(str(cap), frames)
    summary = json.loads(lab.fw.minifw("explain", "--pcap", str(cap), "--iif", "c0",
                                       "--json").stdout)
    assert summary["packets"] == summary["explained"] == len(specs), json.dumps(summary)
    by = {d["decider"]: d["packets"] for d in summary["deciders"]}
    assert by["drop-icmp"] == expected["drop-icmp"] == 2
    assert by["web"] == expected["web"] == 2
    assert by["no-dns"] == expected["no-dns"] == 2
    assert by["policy of input"] == expected["policy input"] == 3  # ping6, ssh, ntp


def test_bans_agree_with_the_kernel(lab):
    """A banned source: explain names the ban chain's rule, and the kernel's counter agrees."""
    lab.fw.minifw("ban", "198.18.64.77", "fd00:c1::77")
    try:
        for src, dst in (("198.18.64.77", "198.18.0.1"), ("fd00:c1::77", "fd00:c::1")):
            args = ("--proto", "tcp", "--src", src, "--dst", dst, "--dport", "80", "--iif", "c0")
            got = explain_json(lab, *args)
            assert (got["verdict"], got["rule"], got["hook"], got["priority"]) == (
                "drop", "ban blocked", "prerouting", -350)
            probe = Probe.describe(proto="tcp", src=src, dst=dst, dport=80, iif="c0")
            sent = lab.send(Sent(probe, "c", b"minifw-ban-" + src.encode()))
            assert not sent.passed and sent.counters == {"ban blocked": 1}
            text = lab.fw.minifw("explain", *args).stdout
            assert text.startswith("drop: rule ban blocked at prerouting/-350")
        lab.fw.minifw("unban", "198.18.64.77")
        got = explain_json(lab, "--proto", "tcp", "--src", "198.18.64.77", "--dst",
                           "198.18.0.1", "--dport", "80", "--iif", "c0")
        assert (got["verdict"], got["rule"]) == ("accept", "web")
        probe = Probe.describe(proto="tcp", src="198.18.64.77", dst="198.18.0.1", dport=80,
                               iif="c0")
        sent = lab.send(Sent(probe, "c", b"minifw-unbanned"))
        assert sent.delivered and sent.counters == {"web": 1}
    finally:
        lab.fw.minifw("unban", "198.18.64.77", "fd00:c1::77")
