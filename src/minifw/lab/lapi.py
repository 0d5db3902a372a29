"""A real CrowdSec Local API (Debian's ``crowdsec -no-cs``) in a lab namespace, for the fleet
tests and bench/fleet.

``fleet_lab`` builds the topology: a ``lapi`` namespace that holds LAPI on 198.18.30.1 and
bridges the host namespaces (198.18.30.11, .12, ...), and routes to an ``attacker`` namespace
whose addresses (in 198.18.40.0/24, 198.18.41.0/24, fd00:40::/64) are what decisions name. LAPI
keeps its config, SQLite database and logs in the lab's temp directory; nothing of the machine's
own crowdsec (its database, its service) is used or touched.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from . import LabError

LAPI4 = "198.18.30.1"
LAPI_PORT = 8080
LAPI_URL = f"http://{LAPI4}:{LAPI_PORT}"
HOST_NET = "198.18.30.{}"
# the attacker's addresses: single bans, a range, a clean control address, v6
ATTACKER4 = ["198.18.40.9", "198.18.40.10", "198.18.40.11", "198.18.40.12", "198.18.40.13",
             "198.18.41.7"]
ATTACKER6 = ["fd00:40::9"]
SYSTEM_CONFIG = Path("/etc/crowdsec/config.yaml")


def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise LabError(f"timed out waiting for {what}")
        time.sleep(0.05)


def lapi_config(system: str, workdir: Path, listen: str) -> str:
    """The system config with LAPI's own listen address, paths in ``workdir``, no central API
    (online_client), no agent daemonizing, no prometheus endpoint."""
    text = system
    subs = {
        r"(\n\s*listen_uri:).*": rf"\1 {listen}",
        # WAL: what Debian's config.yaml.local sets (a sixth of the time to import decisions)
        r"(\n(\s*)db_path:).*": rf"\1 {workdir}/crowdsec.db\n\2use_wal: true",
        r"(\n\s*data_dir:).*": rf"\1 {workdir}/data/",
        r"(\n\s*log_dir:).*": rf"\1 {workdir}/",
        r"(\n\s*daemonize:).*": r"\1 false",
        r"(\n\s*credentials_path:) /etc/crowdsec/local_api_credentials.yaml":
            rf"\1 {workdir}/local_api_credentials.yaml",
        # the online_client block: its key and its indented lines
        r"\n(\s*)online_client:.*(\n\1\s+.*)*": "",
        r"(\nprometheus:\n\s*enabled:).*": r"\1 false",
    }
    for pattern, repl in subs.items():
        text, n = re.subn(pattern, repl, text)
        if n != 1:
            raise LabError(f"{SYSTEM_CONFIG}: {pattern!r} matched {n} times")
    return text


class Lapi:
    """LAPI in namespace ``host`` (which must own LAPI4): start/stop, and cscli against it."""

    def __init__(self, host):
        self.host = host
        self.dir = host.lab.tmp / "lapi"
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "config.yaml"
        self.config.write_text(lapi_config(SYSTEM_CONFIG.read_text(), self.dir,
                                           f"{LAPI4}:{LAPI_PORT}"))
        self.client_creds = self.dir / "local_api_credentials.yaml"
        self.proc = None

    def start(self) -> None:
        assert self.proc is None, "LAPI already runs"
        self.proc = self.host.popen(["crowdsec", "-c", str(self.config), "-no-cs"])
        wait_for(self.up, timeout=30, what="LAPI listening")
        if not self.client_creds.exists():
            # cscli's own login (decisions add/delete go through LAPI as a watcher)
            self.add_machine("cscli", "cscli-fleet-test-password", self.client_creds)

    def up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise LabError(f"LAPI exited {self.proc.returncode}: {self.log()[-2000:]}")
        out = self.host.run(["ss", "-ltnH", f"sport = :{LAPI_PORT}"], check=False).stdout
        return bool(out.strip())

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.dir.glob("*.log")))

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.host.lab._procs.remove(self.proc)
        self.proc = None

    def cscli(self, *args: str, timeout: float = 120) -> str:
        return self.host.run(["cscli", "-c", str(self.config), "--error", *args],
                             timeout=timeout).stdout

    def add_machine(self, name: str, password: str, creds: Path | None = None) -> Path:
        """A watcher (agent) login, written to a credentials file (login, password, url)."""
        creds = creds or self.dir / f"machine-{name}.yaml"
        self.cscli("machines", "add", name, "--password", password, "-f", str(creds),
                   "--url", LAPI_URL, "--force")
        return creds

    def bouncer_key(self, name: str) -> str:
        return self.cscli("bouncers", "add", name, "-o", "raw").strip()

    def add(self, *, ip: str | None = None, range: str | None = None, duration: str = "1h",
            type: str = "ban", reason: str = "fleet test") -> None:
        scope = ["--ip", ip] if ip else ["--range", range]
        self.cscli("decisions", "add", *scope, "--duration", duration, "--type", type,
                   "--reason", reason)

    def delete(self, *, ip: str | None = None, range: str | None = None) -> None:
        scope = ["--ip", ip] if ip else ["--range", range]
        self.cscli("decisions", "delete", *scope)

    def delete_all(self) -> None:
        self.cscli("decisions", "delete", "--all")

    def decisions(self) -> list[dict]:
        """Active decisions, as cscli lists them (alerts with their decisions, flattened)."""
        alerts = json.loads(self.cscli("decisions", "list", "-o", "json", "--limit", "0") or "null")
        return [d for a in alerts or [] for d in a.get("decisions") or []]

    def import_file(self, path: Path) -> None:
        self.cscli("decisions", "import", "-i", str(path), timeout=900)


def fleet_lab(lab, hosts: int = 3):
    """lapi (bridge + router + LAPI), ``hosts`` host namespaces on the bridge, and an attacker
    routed through lapi. Returns (lapi_host, [hosts], attacker)."""
    hub = lab.host("lapi", forwarding=True)
    hub.run("ip link add br0 type bridge")
    hub.run(f"ip addr add {LAPI4}/24 dev br0")
    hub.run("ip link set br0 up")
    members = []
    for n in range(1, hosts + 1):
        host = lab.host(f"host{n}")
        hub_if, _ = lab.link(hub, [], host, [f"{HOST_NET.format(10 + n)}/24", f"fd00:30::{10 + n}/64"],
                             a_if=f"br-h{n}", b_if="eth0")
        hub.run(f"ip link set {hub_if} master br0")
        host.run(f"ip route add default via {LAPI4}")
        host.run("ip -6 route add default via fd00:30::1")
        members.append(host)
    hub.run("ip -6 addr add fd00:30::1/64 dev br0 nodad")
    attacker = lab.host("attacker")
    lab.link(hub, ["198.18.39.1/24", "fd00:39::1/64"], attacker,
             ["198.18.39.2/24", "fd00:39::2/64", *(f"{a}/32" for a in ATTACKER4),
              *(f"{a}/128" for a in ATTACKER6)], a_if="eth-a", b_if="eth0")
    attacker.run("ip route add default via 198.18.39.1")
    attacker.run("ip -6 route add default via fd00:39::1")
    for addr in ATTACKER4:
        hub.run(f"ip route add {addr}/32 via 198.18.39.2")
    for addr in ATTACKER6:
        hub.run(f"ip -6 route add {addr}/128 via fd00:39::2")
    return hub, members, attacker


def reaches(attacker, source: str, target: str) -> bool:
    """One echo request from ``source`` (an attacker address) to ``target``; a short wait."""
    argv = ["ping", "-n", "-c", "1", "-W", "0.6", "-I", source, target]
    return attacker.run(argv, check=False, timeout=10).returncode == 0
