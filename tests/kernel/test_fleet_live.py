"""A fleet for real: Debian's CrowdSec LAPI in one namespace, three host namespaces running
``minifw daemon`` with ``[crowdsec]`` (interval 1 s), an attacker routed to them.

cscli decisions reach every host's kernel set within interval + 2 s and drop the attacker's
traffic (IP v4 and v6, a Range for a CIDR); a delete releases everywhere; a host restarted after a
delete drops the stale element; host 1 (share = true) shares its ``minifw ban`` with the others
without taking it back as a second element; LAPI stopped: bans stay and ``status`` says
unreachable, LAPI back: the hosts catch up. A fourth host runs ``minifw crowdsec sync --once``.
LAPI starts once for the module (tests/kernel/lapi.py); each test undoes its decisions.
"""

import ipaddress
import json
import os
import signal
import subprocess
import time

import pytest

import lapi
import test_daemon_live
from kit import wait_until
from minifw.lab import MINIFW
from minifw.lab.lapi import ATTACKER4, ATTACKER6, HOST_NET, LAPI_URL

Daemon = test_daemon_live.Daemon
lapi_fleet = lapi.lapi_fleet  # the module's fixture: LAPI and the fleet's namespaces

FLEET_HOSTS = 4        # hosts 1-3 run the daemon, host 4 syncs with the CLI
INTERVAL = 1           # seconds, the hosts' [crowdsec] interval
DEADLINE = INTERVAL + 2
SET = "crowdsec"
SHARE_PASSWORD = "fleet-host1-watcher-password"
BANNED, CONTROL, SHARED, OUTAGE, LATE, IN_RANGE = ATTACKER4
RANGE = "198.18.41.0/24"
BANNED6 = ATTACKER6[0]
SUFFIXES = ("v4", "v4net", "v6", "v6net")


def host_config(fleet_lapi, host, share: bool) -> str:
    key = host.lab.tmp / f"{host.name}.key"
    key.write_text(fleet_lapi.bouncer_key(host.name) + "\n")
    os.chmod(key, 0o600)
    text = (f'[policy]\ninput = "accept"\n\n[crowdsec]\nurl = "{LAPI_URL}"\n'
            f'key_file = "{key}"\nset = "{SET}"\ninterval = "{INTERVAL}s"\n')
    if share:
        password = host.lab.tmp / f"{host.name}.password"
        password.write_text(SHARE_PASSWORD + "\n")
        os.chmod(password, 0o600)
        fleet_lapi.add_machine(host.name, SHARE_PASSWORD)
        text += f'share = true\nlogin = "{host.name}"\npassword_file = "{password}"\n'
    return text


class Fleet:
    def __init__(self, fleet_lapi, hub, hosts, attacker):
        self.lapi, self.hub, self.attacker = fleet_lapi, hub, attacker
        self.hosts, self.cli_host = hosts[:3], hosts[3]
        lab = hub.lab
        lab.daemons = []
        self.configs = {}
        for n, host in enumerate(self.hosts):
            self.configs[host.name] = lab.tmp / f"{host.name}.toml"
            self.configs[host.name].write_text(host_config(fleet_lapi, host, share=n == 0))
        self.daemons = [self.start(host) for host in self.hosts]

    def start(self, host) -> Daemon:
        daemon = Daemon(host, self.configs[host.name])
        daemon.ready()
        return daemon

    def stop(self) -> None:
        for daemon in self.hub.lab.daemons:
            daemon.stop()


@pytest.fixture(scope="module")
def fleet(lapi_fleet):
    f = Fleet(*lapi_fleet)
    try:
        yield f
    finally:
        f.stop()


# ---- reads of the kernel and of traffic -------------------------------------------------------

def _element(item) -> str:
    """An nft -j set element as text: an address, or a CIDR (a prefix or an aligned range)."""
    if isinstance(item, dict) and "elem" in item:
        item = item["elem"]["val"]
    if isinstance(item, str):
        return item
    if "prefix" in item:
        return f"{item['prefix']['addr']}/{item['prefix']['len']}"
    if "range" in item:
        first, last = (ipaddress.ip_address(a) for a in item["range"])
        nets = list(ipaddress.summarize_address_range(first, last))
        return ",".join(str(n) for n in nets)
    raise AssertionError(f"unexpected set element {item!r}")


def elements(host, name: str = SET) -> set[str]:
    """The addresses and CIDRs in named set ``name``'s four kernel sets."""
    found = set()
    for suffix in SUFFIXES:
        proc = host.run(["nft", "-j", "list", "set", "inet", "minifw", f"s_{name}_{suffix}"],
                        check=False)
        if proc.returncode != 0:
            continue  # not loaded (yet): no elements
        for obj in json.loads(proc.stdout)["nftables"]:
            for item in obj.get("set", {}).get("elem", []):
                found.add(_element(item))
    return found


def on_all(hosts, value: str, present: bool = True, timeout: float = DEADLINE) -> float:
    """Wait until ``value`` is in (or out of) every host's crowdsec set; the seconds it took."""
    start = time.monotonic()
    wait_until(lambda: all((value in elements(h)) == present for h in hosts), timeout=timeout,
               what=f"{value} {'in' if present else 'out of'} the {SET} set of "
                    f"{', '.join(h.name for h in hosts)}")
    return time.monotonic() - start


def replies(attacker, source: str, hosts) -> list[bool]:
    """One echo request from ``source`` to each host, side by side: which answered."""
    procs = [subprocess.Popen(["ip", "netns", "exec", attacker.ns, "ping", "-n", "-c", "1",
                               "-W", "0.6", "-I", source, target(h, source)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for h in hosts]
    return [p.wait(timeout=10) == 0 for p in procs]


def target(host, source: str) -> str:
    n = int(host.name.removeprefix("host"))
    return f"fd00:30::{10 + n}" if ":" in source else HOST_NET.format(10 + n)


def status_text(host) -> str:
    return host.minifw("status", check=False).stdout


# ---- the tests ---------------------------------------------------------------------------------

def test_lapi_streams_decisions_to_a_bouncer(lapi_fleet):
    """The fixture itself: a bouncer key reads cscli's decisions from LAPI's stream."""
    fleet_lapi, hub, hosts, _ = lapi_fleet
    key = fleet_lapi.bouncer_key("stream-probe")
    fleet_lapi.add(ip="198.18.40.200", duration="5m")
    try:
        out = hosts[0].run(["curl", "-sf", "-m", "5", "-H", f"X-Api-Key: {key}",
                            f"{LAPI_URL}/v1/decisions/stream?startup=true"]).stdout
        new = json.loads(out)["new"]
        assert [(d["scope"], d["value"], d["type"], d["origin"]) for d in new] == [
            ("Ip", "198.18.40.200", "ban", "cscli")]
        assert new[0]["duration"].startswith("4m5")  # 5 minutes less the seconds since: 4m5x...
    finally:
        fleet_lapi.delete(ip="198.18.40.200")


def test_decisions_reach_every_host_and_drop_traffic(fleet):
    hosts, attacker = fleet.hosts, fleet.attacker
    assert replies(attacker, BANNED, hosts) == [True] * 3
    assert replies(attacker, BANNED6, hosts) == [True] * 3
    fleet.lapi.add(ip=BANNED)
    fleet.lapi.add(ip=BANNED6)
    try:
        on_all(hosts, BANNED)
        on_all(hosts, BANNED6)
        assert replies(attacker, BANNED, hosts) == [False] * 3
        assert replies(attacker, BANNED6, hosts) == [False] * 3
        assert replies(attacker, CONTROL, hosts) == [True] * 3
    finally:
        fleet.lapi.delete(ip=BANNED)
        fleet.lapi.delete(ip=BANNED6)
    # a delete releases everywhere
    on_all(hosts, BANNED, present=False)
    on_all(hosts, BANNED6, present=False)
    assert replies(attacker, BANNED, hosts) == [True] * 3
    assert replies(attacker, BANNED6, hosts) == [True] * 3


def test_range_decision_covers_its_cidr(fleet):
    hosts, attacker = fleet.hosts, fleet.attacker
    fleet.lapi.add(range=RANGE)
    try:
        on_all(hosts, RANGE)
        assert replies(attacker, IN_RANGE, hosts) == [False] * 3
        assert replies(attacker, CONTROL, hosts) == [True] * 3
    finally:
        fleet.lapi.delete(range=RANGE)
    on_all(hosts, RANGE, present=False)
    assert replies(attacker, IN_RANGE, hosts) == [True] * 3


def test_restart_after_a_delete_removes_the_stale_element(fleet):
    hosts = fleet.hosts
    fleet.lapi.add(ip=LATE)
    fleet.lapi.add(ip=CONTROL, duration="10m")
    stale_host = hosts[2]
    try:
        on_all(hosts, LATE)
        on_all(hosts, CONTROL)
        # kill -9: nothing is taken down, the element stays in the kernel while LAPI forgets it
        daemon = fleet.daemons[2]
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.proc.wait(timeout=10)
        fleet.lapi.delete(ip=LATE)
        on_all(hosts[:2], LATE, present=False)
        assert LATE in elements(stale_host)
        fleet.daemons[2] = fleet.start(stale_host)
        on_all([stale_host], LATE, present=False)
        assert CONTROL in elements(stale_host)  # what LAPI still holds stays
    finally:
        fleet.lapi.delete(ip=CONTROL)
    on_all(hosts, CONTROL, present=False)


def test_a_shared_ban_reaches_the_others_and_is_not_echoed(fleet):
    host1, others, attacker = fleet.hosts[0], fleet.hosts[1:], fleet.attacker
    host1.minifw("ban", SHARED)
    try:
        on_all(others, SHARED)
        assert replies(attacker, SHARED, fleet.hosts) == [False] * 3
        shared = [d for d in fleet.lapi.decisions() if d["value"] == SHARED]
        assert [(d["type"], d["scenario"]) for d in shared] == [("ban", "minifw/ban")]
        time.sleep(INTERVAL + 1)  # host 1 has read the stream since: its ban came back
        assert SHARED not in elements(host1)
        assert SHARED in elements(host1, "blocked")
    finally:
        host1.minifw("unban", SHARED)
    on_all(others, SHARED, present=False)
    assert not [d for d in fleet.lapi.decisions() if d["value"] == SHARED]
    assert replies(attacker, SHARED, fleet.hosts) == [True] * 3


def test_lapi_down_keeps_bans_and_back_catches_up(fleet):
    hosts, attacker = fleet.hosts, fleet.attacker
    fleet.lapi.add(ip=OUTAGE)
    try:
        on_all(hosts, OUTAGE)
        fleet.lapi.stop()
        try:
            wait_until(lambda: all("crowdsec: unreachable since" in status_text(h)
                                   for h in hosts), timeout=DEADLINE + 2,
                       what="status: crowdsec unreachable on every host")
            assert all(OUTAGE in elements(h) for h in hosts)
            assert replies(attacker, OUTAGE, hosts) == [False] * 3
        finally:
            fleet.lapi.start()
        fleet.lapi.add(ip=BANNED)
        fleet.lapi.delete(ip=OUTAGE)
        # the retry backoff is at most 4 intervals, then a normal sync
        on_all(hosts, BANNED, timeout=4 * INTERVAL + DEADLINE)
        on_all(hosts, OUTAGE, present=False, timeout=DEADLINE)
        wait_until(lambda: not any("unreachable" in status_text(h) for h in hosts),
                   timeout=DEADLINE, what="status: crowdsec reachable again")
    finally:
        for ip in (OUTAGE, BANNED):
            fleet.lapi.delete(ip=ip)
    on_all(hosts, BANNED, present=False)


def test_sync_once_without_a_daemon(fleet):
    host = fleet.cli_host
    config = host.lab.tmp / f"{host.name}.toml"
    config.write_text(host_config(fleet.lapi, host, share=False))
    fleet.lapi.add(range=RANGE)
    fleet.lapi.add(ip=BANNED)
    try:
        host.run([MINIFW, "up", "--config", str(config)])
        host.minifw("crowdsec", "sync", "--once")
        assert elements(host) == {RANGE, BANNED}
        assert replies(fleet.attacker, BANNED, [host]) == [False]
        fleet.lapi.delete(ip=BANNED)
        host.minifw("crowdsec", "sync", "--once")
        assert elements(host) == {RANGE}
        assert replies(fleet.attacker, BANNED, [host]) == [True]
    finally:
        fleet.lapi.delete(range=RANGE)
        fleet.lapi.delete(ip=BANNED)
        host.minifw("down", check=False)
