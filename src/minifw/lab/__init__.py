"""A throwaway network lab of namespaces and veth links, for the demo, tests and benchmarks.

Everything it creates lives in network namespaces it made, with names that carry a unique
prefix, and it deletes them all on close, on every exit path. Addresses come from
198.18.0.0/15 and fd00::/8, with no route out. It never touches the machine's own namespace
beyond creating veth pairs that it moves away at once.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Sequence

from ..kernel.bpf.pins import ROOT as BPF_PINS

MINIFW = str(Path(__file__).resolve().parents[3] / ".venv" / "bin" / "minifw")
# One marker per namespace a lab made, naming its owner process: a lab whose process died
# without closing it (kill -9, a test timeout's os._exit) is swept by sweep_orphans().
REGISTRY = Path("/run/minifw-labs")


class LabError(RuntimeError):
    pass


class Host:
    def __init__(self, lab: "Lab", name: str):
        self.lab = lab
        self.name = name
        self.ns = f"{lab.prefix}-{name}"
        self.state_dir = lab.tmp / name

    def run(self, cmd: str | Sequence[str], *, check: bool = True, timeout: float = 30,
            input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        full_env = dict(os.environ, MINIFW_STATE_DIR=str(self.state_dir), **(env or {}))
        proc = subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True,
                              text=True, timeout=timeout, input=input, env=full_env)
        if check and proc.returncode != 0:
            raise LabError(f"[{self.name}] {' '.join(argv)} exited {proc.returncode}: "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def popen(self, cmd: str | Sequence[str], **kw) -> subprocess.Popen:
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        # like run(): a minifw started here keeps its state in the host's own directory
        # (an env given by the caller wins)
        kw["env"] = {**os.environ, "MINIFW_STATE_DIR": str(self.state_dir), **(kw.get("env") or {})}
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, **kw)
        self.lab._procs.append(proc)
        return proc

    def minifw(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return self.run([MINIFW, *args], check=check, **kw)

    def sysctl(self, key: str, value: str) -> None:
        self.run(["sysctl", "-qw", f"{key}={value}"])

    # ---- traffic ---------------------------------------------------------------------
    def ping(self, addr: str, count: int = 1, timeout: float = 1) -> bool:
        argv = ["ping", "-n", "-c", str(count), "-W", str(timeout), "-i", "0.2", addr]
        return self.run(argv, check=False, timeout=count * timeout + 5).returncode == 0

    def tcp_ok(self, addr: str, port: int, timeout: float = 1.5) -> bool:
        return self.tcp_result(addr, port, timeout) == "open"

    def tcp_result(self, addr: str, port: int, timeout: float = 1.5) -> str:
        """'open', 'refused' (RST came back) or 'timeout' (dropped)."""
        code = ("import socket,sys\n"
                "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
                f"s.settimeout({timeout})\n"
                "try:\n s.connect((sys.argv[1], int(sys.argv[2]))); print('open')\n"
                "except ConnectionRefusedError: print('refused')\n"
                "except TimeoutError: print('timeout')\n"
                "except OSError as e: print('error', e.errno)\n")
        return self.run(["python3", "-c", code, addr, str(port)], check=False,
                        timeout=timeout + 5).stdout.strip()

    def http_get(self, url: str, timeout: float = 2) -> str | None:
        proc = self.run(["curl", "-s", "-m", str(timeout), "-g", url], check=False,
                        timeout=timeout + 5)
        return proc.stdout if proc.returncode == 0 else None

    def serve_http(self, port: int = 80, directory: str = "/tmp") -> None:
        self.popen(["python3", "-m", "http.server", "-d", directory, "-b", "::", str(port)])
        self.wait_listening(port)

    def wait_listening(self, port: int, proto: str = "tcp", deadline: float = 5) -> None:
        flag = "-ltnH" if proto == "tcp" else "-lunH"
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            out = self.run(["ss", flag, f"sport = :{port}"], check=False).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise LabError(f"[{self.name}] nothing listens on {proto} port {port}")


class Lab:
    """Namespaces joined by veth links. Use as a context manager; it always cleans up."""

    def __init__(self, prefix: str | None = None):
        self.prefix = prefix or f"mfw{os.getpid() % 100000}"
        self.hosts: dict[str, Host] = {}
        self._procs: list[subprocess.Popen] = []
        self._links = 0
        self.tmp = Path(f"/tmp/{self.prefix}-state")

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def host(self, name: str, *, forwarding: bool = False) -> Host:
        host = Host(self, name)
        REGISTRY.mkdir(mode=0o700, exist_ok=True)
        (REGISTRY / host.ns).write_text(f"{_owner(os.getpid())}\n{self.tmp}\n")
        _ip("netns", "add", host.ns)
        self.hosts[name] = host
        host.run("ip link set lo up")
        host.sysctl("net.ipv6.conf.all.accept_dad", "0")
        host.sysctl("net.ipv6.conf.default.accept_dad", "0")
        if forwarding:
            host.sysctl("net.ipv4.ip_forward", "1")
            host.sysctl("net.ipv6.conf.all.forwarding", "1")
        return host

    def link(self, a: Host, a_addrs: Sequence[str], b: Host, b_addrs: Sequence[str],
             a_if: str | None = None, b_if: str | None = None) -> tuple[str, str]:
        """A veth pair between two hosts, with addresses (CIDR notation) on each end."""
        self._links += 1
        a_if = a_if or f"v{self._links}{b.name[:8]}"
        b_if = b_if or f"v{self._links}{a.name[:8]}"
        tmp_a, tmp_b = f"{self.prefix}a{self._links}", f"{self.prefix}b{self._links}"
        _ip("link", "add", tmp_a[:15], "netns", a.ns, "type", "veth", "peer", "name",
            tmp_b[:15], "netns", b.ns)
        for host, tmp, name, addrs in ((a, tmp_a, a_if, a_addrs), (b, tmp_b, b_if, b_addrs)):
            host.run(["ip", "link", "set", tmp[:15], "name", name])
            for addr in addrs:
                host.run(["ip", "addr", "add", addr, "dev", name, "nodad"] if ":" in addr
                         else ["ip", "addr", "add", addr, "dev", name])
            host.run(["ip", "link", "set", name, "up"])
        return a_if, b_if

    def seed_topology(self) -> tuple[Host, Host, Host]:
        """The article's demo: a server with a client and a "blocked" host on two links."""
        server = self.host("server")
        client = self.host("client")
        blocked = self.host("blocked")
        self.link(server, ["198.18.0.1/24"], client, ["198.18.0.2/24"])
        self.link(server, ["198.18.2.1/24"], blocked, ["198.18.2.2/24"])
        client.run("ip route add default via 198.18.0.1")
        blocked.run("ip route add default via 198.18.2.1")
        return server, client, blocked

    def close(self) -> None:
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, 9)
            with contextlib.suppress(Exception):
                proc.wait(timeout=2)
        for host in self.hosts.values():
            _delete_netns(host.ns)
        self.hosts.clear()
        subprocess.run(["rm", "-rf", str(self.tmp)], capture_output=True)


def _owner(pid: int) -> str:
    """A process's pid with its start time, so a reused pid is not taken for the owner."""
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = "?"
    return f"{pid} {start}"


def _delete_netns(ns: str) -> None:
    """Kill what still runs in a lab namespace, delete it, and forget its marker."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    for pid in pids.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)
    # BPF hook pins of the namespace (kernel/bpf/pins.py: one directory per netns inode)
    # outlive it: remove them with it
    with contextlib.suppress(OSError):
        shutil.rmtree(os.path.join(BPF_PINS, str(os.stat(f"/run/netns/{ns}").st_ino)))
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    with contextlib.suppress(FileNotFoundError):
        (REGISTRY / ns).unlink()


def sweep_orphans() -> list[str]:
    """Delete the namespaces (and state folders) of labs whose owner process is gone."""
    swept = []
    for marker in sorted(REGISTRY.glob("*")) if REGISTRY.is_dir() else []:
        try:
            owner, tmp = marker.read_text().splitlines()[:2]
            pid = int(owner.split()[0])
        except (OSError, ValueError, IndexError):
            owner, tmp, pid = "", "", 0
        if pid and _owner(pid) == owner:
            continue  # its lab is still open
        _delete_netns(marker.name)
        if tmp.startswith("/tmp/"):
            subprocess.run(["rm", "-rf", tmp], capture_output=True)
        swept.append(marker.name)
    return swept


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
