"""Netfilter BPF links in a lab namespace: a dispatcher per (family, hook, priority), swaps
with no gap, pins that outlive the process and `ip netns exec`, the kernel's refusals."""

import json
import os
import re
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


def once(host, *args):
    """A command in a new process of its own (`ip netns exec` in the server's namespace)."""
    out = host.run([sys.executable, SCRIPT, *map(str, args)], timeout=60)
    return json.loads(out.stdout)


class Server:
    """A bpfattach.py process serving commands inside the namespace: no start-up per call."""

    def __init__(self, host):
        self.proc = subprocess.Popen(["ip", "netns", "exec", host.ns, sys.executable, SCRIPT,
                                      "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def __call__(self, *args):
        self.proc.stdin.write(json.dumps([str(a) for a in args]) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if "error" in answer:
            raise AssertionError(answer["error"])
        return answer["ok"]

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def net(lab):
    server, client = pair(lab)
    # mounted here, in the host's mount namespace, before any `ip netns exec` copies it
    pin_dir = os.path.join(pins.root(), str(os.stat(f"/run/netns/{server.ns}").st_ino))
    bpf = Server(server)
    try:
        yield server, client, pin_dir, bpf
    finally:  # a failed test leaves no pins behind (the netns' links go with the lab)
        bpf.close()
        shutil.rmtree(pin_dir, ignore_errors=True)


def silent(host, addr):
    return not host.ping(addr, timeout=0.4)


def answers(host, addr):
    return host.ping(addr, count=3, timeout=1)  # any of three: a loaded machine is slow


def test_attach_swap_detach(net):
    server, client, pin_dir, bpf = net
    assert answers(client, SERVER4)
    entries = once(server, "attach", "drop_icmp", PF[4], PRE, -300)
    assert [(e["pf"], e["hook"], e["priority"], e["name"]) for e in entries] == \
        [(PF[4], PRE, -300, "drop_icmp")]
    bpf("attach", "drop_icmp", PF[6], PRE, -300)
    # the attaching process has exited: the pins hold the links, seen from the host's mounts
    found = os.listdir(pin_dir)
    assert sorted(n for n in found if not n.startswith(pins.MARK)) == sorted(
        [f"{PF[4]}_{PRE}_-300", f"{PF[6]}_{PRE}_-300"])
    assert len([n for n in found if n.startswith(pins.MARK)]) == 1   # the namespace's marker
    assert sorted(os.listdir(os.path.join(pin_dir, f"{PF[4]}_{PRE}_-300"))) == ["link", "progs"]
    assert silent(client, SERVER4)
    assert silent(client, SERVER6)
    assert client.tcp_result(SERVER4, 9) == "refused"  # TCP passes: a RST comes back

    before = bpf("entries")
    bpf("attach", "accept_a", PF[4], PRE, -300)
    after = bpf("entries")
    v4 = [e for e in after if e["pf"] == PF[4]][0]
    assert v4["name"] == "accept_a"
    # the same link (the dispatcher stayed), another program behind it
    old = [e for e in before if e["pf"] == PF[4]][0]
    assert v4["link_id"] == old["link_id"] and v4["prog_id"] != old["prog_id"]
    assert answers(client, SERVER4)
    assert silent(client, SERVER6)

    assert bpf("detach", PF[6], PRE, -300) is True
    assert bpf("detach", PF[6], PRE, -300) is False
    assert [e["pf"] for e in bpf("entries")] == [PF[4]]
    # neighbour discovery was dropped too (it is ICMPv6): the neighbours may need a new try
    assert answers(client, SERVER6) or answers(client, SERVER6)
    assert bpf("clear") == 1
    assert not os.path.exists(pin_dir)
    assert bpf("entries") == []


def flood(client, swap, count=400, deadline=2):
    """Ping the server every 2 ms while ``swap()`` runs 10 times: (sent, received). The
    flood ends with its last reply, or at the deadline (replies missing: ping slows down)."""
    proc = subprocess.Popen(["ip", "netns", "exec", client.ns, "ping", "-n", "-q", "-i",
                             "0.002", "-c", str(count), "-w", str(deadline), SERVER4],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.1)
        swaps = 0
        while proc.poll() is None and swaps < 10:
            swap(swaps)
            swaps += 1
            time.sleep(0.03)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert swaps == 10, "the flood ended before the swaps"
    sent, received = re.search(r"(\d+) packets transmitted, (\d+) received", out).groups()
    return int(sent), int(received)


def test_a_flood_across_swaps_loses_nothing_and_leaks_nothing(net):
    server, client, _, bpf = net
    bpf("attach", "accept_a", PF[4], PRE, -300)
    # a long deadline: all 400 are sent and answered however loaded the machine is
    assert flood(client, lambda i: bpf("attach", ("accept_b", "accept_a")[i % 2], PF[4], PRE,
                                       -300), deadline=30) == (400, 400)
    assert bpf("entries")[0]["name"] == "accept_a"  # the last swap's program runs
    # dropping programs swapped: no packet slips through between the two
    bpf("attach", "drop_icmp", PF[4], PRE, -300)
    sent, received = flood(client, lambda i: bpf("attach", ("drop_b", "drop_icmp")[i % 2],
                                                  PF[4], PRE, -300))
    assert sent > 50 and received == 0

    # the control: detach then attach (no dispatcher kept) does leave a gap
    def detach_attach(i):
        bpf("detach", PF[4], PRE, -300)
        bpf("attach", ("drop_b", "drop_icmp")[i % 2], PF[4], PRE, -300)
    sent, received = flood(client, detach_attach)
    assert sent > 50 and received > 0


def test_the_kernel_s_refusals(net):
    server, _, _, bpf = net
    bpf("attach", "accept_a", PF[4], PRE, -300)
    busy = bpf("link", PF[4], PRE, -300, 0)
    assert busy["errno"] == 16 and "same family, hook and priority" in busy["error"]
    assert bpf("link", PF[4], PRE, -299, 0)["errno"] == 0
    for priority in (-(1 << 31), (1 << 31) - 1):
        refused = bpf("link", PF[4], PRE, priority, 0)
        assert refused["errno"] == 34 and "priority must be within" in refused["error"]
    for priority in (-(1 << 31) + 1, (1 << 31) - 2):  # the edges just inside
        assert bpf("link", PF[4], PRE, priority, 0)["errno"] == 0
    defrag = bpf("link", PF[4], PRE, -400, 1)
    assert defrag["errno"] == 34 and "defragmentation" in defrag["error"]
    assert bpf("link", PF[4], PRE, -399, 1)["errno"] == 0
    assert bpf("clear") == 1


def test_pins_outlive_the_process_and_are_seen_by_the_next(net):
    server, client, pin_dir, bpf = net
    once(server, "attach", "drop_icmp", PF[4], PRE, -300, -200)
    assert silent(client, SERVER4)
    # a new `ip netns exec` process sees the same pins
    listed = once(server, "entries")
    assert sorted((e["priority"], e["name"]) for e in listed) == [(-300, "drop_icmp"),
                                                                  (-200, "drop_icmp")]
    # `ip netns exec` copied the host's mounts: the pins are reached by the same path
    assert once(server, "dir") == pin_dir
    assert once(server, "clear") == 2
    assert answers(client, SERVER4)
