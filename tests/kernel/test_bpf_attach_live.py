"""Netfilter BPF links in a lab namespace: a dispatcher per (family, hook, priority), swaps
with no gap, pins that outlive the process and `ip netns exec`, the kernel's refusals."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit import SERVER4, SERVER6, pair
from minifw.bpf.program import HOOKS, PF
from minifw.kernel.bpf import pins

SCRIPT = str(Path(__file__).with_name("bpfattach.py"))
PRE = HOOKS["prerouting"]


def bpf(host, *args):
    out = host.run([sys.executable, SCRIPT, *map(str, args)], timeout=60)
    return json.loads(out.stdout)


@pytest.fixture
def net(lab):
    server, client = pair(lab)
    # mounted here, in the host's mount namespace, before any `ip netns exec` copies it
    pin_dir = os.path.join(pins.root(), str(os.stat(f"/run/netns/{server.ns}").st_ino))
    try:
        yield server, client, pin_dir
    finally:  # a failed test leaves no pins behind (the netns' links go with the lab)
        shutil.rmtree(pin_dir, ignore_errors=True)


def test_attach_swap_detach(net):
    server, client, pin_dir = net
    assert client.ping(SERVER4)
    entries = bpf(server, "attach", "drop_icmp", PF[4], PRE, -300)
    assert [(e["pf"], e["hook"], e["priority"], e["name"]) for e in entries] == \
        [(PF[4], PRE, -300, "drop_icmp")]
    bpf(server, "attach", "drop_icmp", PF[6], PRE, -300)
    # the attaching process has exited: the pins hold the links, seen from the host's mounts
    assert sorted(os.listdir(pin_dir)) == sorted([f"{PF[4]}_{PRE}_-300", f"{PF[6]}_{PRE}_-300"])
    assert sorted(os.listdir(os.path.join(pin_dir, f"{PF[4]}_{PRE}_-300"))) == ["link", "progs"]
    assert not client.ping(SERVER4)
    assert not client.ping(SERVER6)
    assert client.tcp_result(SERVER4, 9) == "refused"  # TCP passes: a RST comes back

    before = bpf(server, "entries")
    bpf(server, "attach", "accept_a", PF[4], PRE, -300)
    after = bpf(server, "entries")
    v4 = [e for e in after if e["pf"] == PF[4]][0]
    assert v4["name"] == "accept_a"
    # the same link (the dispatcher stayed), another program behind it
    old = [e for e in before if e["pf"] == PF[4]][0]
    assert v4["link_id"] == old["link_id"] and v4["prog_id"] != old["prog_id"]
    assert client.ping(SERVER4)
    assert not client.ping(SERVER6)

    assert bpf(server, "detach", PF[6], PRE, -300) is True
    assert bpf(server, "detach", PF[6], PRE, -300) is False
    assert client.ping(SERVER6)
    assert bpf(server, "clear") == 1
    assert not os.path.exists(pin_dir)
    assert bpf(server, "entries") == []


def test_a_flood_across_swaps_loses_nothing(net):
    server, client, _ = net
    bpf(server, "attach", "accept_a", PF[4], PRE, -300)
    count = 1500
    flood = subprocess.Popen(["ip", "netns", "exec", client.ns, "ping", "-n", "-q", "-i",
                              "0.002", "-c", str(count), "-W", "1", SERVER4],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        swaps = 0
        while flood.poll() is None and swaps < 6:
            bpf(server, "attach", ("accept_b", "accept_a")[swaps % 2], PF[4], PRE, -300)
            swaps += 1
        out, _ = flood.communicate(timeout=60)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    assert swaps >= 2, "the flood ended before the swaps"
    assert f"{count} packets transmitted, {count} received" in out, out
    # the control: removing the dispatcher for a moment (detach, attach) is a gap the
    # swap does not have; here only that the last swap's program is the one running
    assert bpf(server, "entries")[0]["name"] in ("accept_a", "accept_b")


def test_the_kernel_s_refusals(net):
    server, _, _ = net
    bpf(server, "attach", "accept_a", PF[4], PRE, -300)
    busy = bpf(server, "link", PF[4], PRE, -300, 0)
    assert busy["errno"] == 16 and "same family, hook and priority" in busy["error"]
    assert bpf(server, "link", PF[4], PRE, -299, 0)["errno"] == 0
    for priority in (-(1 << 31), (1 << 31) - 1):
        refused = bpf(server, "link", PF[4], PRE, priority, 0)
        assert refused["errno"] == 34 and "priority must be within" in refused["error"]
    for priority in (-(1 << 31) + 1, (1 << 31) - 2):  # the edges just inside
        assert bpf(server, "link", PF[4], PRE, priority, 0)["errno"] == 0
    defrag = bpf(server, "link", PF[4], PRE, -400, 1)
    assert defrag["errno"] == 34 and "defragmentation" in defrag["error"]
    assert bpf(server, "link", PF[4], PRE, -399, 1)["errno"] == 0
    assert bpf(server, "clear") == 1


def test_pins_outlive_the_process_and_are_seen_by_the_next(net):
    server, client, pin_dir = net
    bpf(server, "attach", "drop_icmp", PF[4], PRE, -300, -200)
    time.sleep(0.1)
    assert not client.ping(SERVER4)
    # a new `ip netns exec` process sees the same pins
    listed = bpf(server, "entries")
    assert sorted((e["priority"], e["name"]) for e in listed) == [(-300, "drop_icmp"),
                                                                  (-200, "drop_icmp")]
    # `ip netns exec` copied the host's mounts: the pins are reached by the same path
    assert bpf(server, "dir") == pin_dir
    assert bpf(server, "clear") == 2
    assert client.ping(SERVER4)
