"""explain --pcap: each packet's direction (pcapng flags, cooked capture type, MAC addresses),
--direction in|out|all, and the skipped counts."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import CookedLinux, Ether
from scapy.utils import PcapNgWriter, wrpcap

from minifw.cli.main import cli

OWN = "02:00:00:00:00:01"
PEER = "02:00:00:00:00:02"
CONFIG = """
[policy]
input = "drop"
output = "drop"

[[rule]]
id = "web"
proto = "tcp"
dport = 80
action = "accept"

[[rule]]
id = "out-web"
hook = "output"
proto = "tcp"
dport = 80
action = "accept"
"""


def _pkts():
    inbound = IP(src="198.18.0.2", dst="198.18.0.1") / TCP(sport=40000, dport=80, flags="S")
    outbound = IP(src="198.18.0.1", dst="198.18.0.2") / TCP(sport=40001, dport=80, flags="S")
    return inbound, outbound


def run(tmp_path, capture, *args):
    cfg = tmp_path / "fw.toml"
    cfg.write_text(CONFIG)
    res = CliRunner().invoke(cli, ["--state-dir", str(tmp_path / "st"), "explain", "-c",
                                   str(cfg), "--pcap", str(capture), "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture
def pcapng(tmp_path):
    """pcapng with epb_flags: 2 in, 1 out, 1 without flags."""
    inbound, outbound = _pkts()
    path = tmp_path / "c.pcapng"
    pkts = []
    for p, way in ((inbound, 1), (outbound, 2), (inbound, 1), (inbound, None)):
        e = Ether(src=PEER, dst=OWN) / p
        e.direction = way
        pkts.append(e)
    with PcapNgWriter(str(path)) as w:
        for p in pkts:
            w.write(p)
    return path


def test_pcapng_direction_flags(tmp_path, pcapng):
    data = run(tmp_path, pcapng)
    assert data["direction"] == "in"
    assert data["explained"] == 3   # two flagged in, one without flags (taken as in)
    assert data["skipped"] == {"leaving the host (--direction in)": 1}
    assert data["notes"] and data["notes"][0].startswith("1 packets of unknown direction")
    out = run(tmp_path, pcapng, "--direction", "out")
    assert out["explained"] == 1
    assert [d["decider"] for d in out["deciders"]] == ["out-web"]
    assert out["deciders"][0]["hook"] == "output"
    both = run(tmp_path, pcapng, "--direction", "all")
    assert both["explained"] == 4 and both["skipped"] == {}
    assert {d["decider"]: d["packets"] for d in both["deciders"]} == {"web": 3, "out-web": 1}


def test_mac_addresses_against_the_capture_interface(tmp_path):
    inbound, outbound = _pkts()
    path = tmp_path / "c.pcap"
    wrpcap(str(path), [Ether(src=PEER, dst=OWN) / inbound,         # to us
                       Ether(src=OWN, dst=PEER) / outbound,        # from us
                       Ether(src=PEER, dst="ff:ff:ff:ff:ff:ff") / inbound,   # broadcast: in
                       Ether(src=PEER, dst="02:00:00:00:00:09") / inbound])  # another host
    data = run(tmp_path, path, "--iface", OWN, "--direction", "all")
    assert data["packets"] == 4 and data["explained"] == 3
    assert {d["decider"]: d["packets"] for d in data["deciders"]} == {"web": 2, "out-web": 1}
    assert list(data["skipped"]) == ["a frame for another host's MAC address (it never "
                                     "entered this host)"]
    assert data["notes"] == []
    # without --iface, nothing tells: all four are taken as entering
    data = run(tmp_path, path)
    assert data["explained"] == 4 and data["notes"]


def test_cooked_capture_packet_types(tmp_path):
    inbound, outbound = _pkts()
    path = tmp_path / "any.pcap"
    wrpcap(str(path), [CookedLinux(pkttype=0, proto=0x0800) / inbound,
                       CookedLinux(pkttype=4, proto=0x0800) / outbound,
                       CookedLinux(pkttype=3, proto=0x0800) / inbound])
    data = run(tmp_path, path)
    assert data["explained"] == 1 and data["skipped"] == {
        "leaving the host (--direction in)": 1,
        "a frame for another host's MAC address (it never entered this host)": 1}


def test_iface_is_a_mac_or_an_interface_here(tmp_path, pcapng):
    cfg = tmp_path / "fw.toml"
    cfg.write_text(CONFIG)
    for bad in ("02:00:00:00:00", "zz:00:00:00:00:01", "no-such-if0"):
        res = CliRunner().invoke(cli, ["explain", "-c", str(cfg), "--pcap", str(pcapng),
                                       "--iface", bad])
        assert res.exit_code == 1 and res.stderr.startswith("error: --iface: "), res.output
    res = CliRunner().invoke(cli, ["explain", "-c", str(cfg), "--proto", "tcp", "--src",
                                   "198.18.0.2", "--dst", "198.18.0.1", "--dport", "80",
                                   "--direction", "out"])
    assert res.exit_code == 1 and "--pcap captures only" in res.stderr
