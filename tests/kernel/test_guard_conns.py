"""The lockout guard's finder on real sessions: a real sshd in the server namespace, ssh
sessions from the client namespace, and the finder run under `env -i` (no SSH_CONNECTION, as
after Debian's sudo) must find them from sshd's sockets. Then a plain TCP listener and only
SSH_CONNECTION, in the environment or in an ancestor's."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minifw.engine.guard import GUARD_CLIENT_PORT, Connection, check, refusal
from minifw.model import Ruleset

from kit import CLIENT4, CLIENT6, SERVER4, SERVER6, pair, serve, wait_until

SSHD = "/usr/sbin/sshd"
ip = ipaddress.ip_address
pytestmark = pytest.mark.timeout(60)

# The finder, printing what it found as JSON, or the error's one line (run in a namespace).
FINDER = """
import json, sys
from minifw.engine.guard import parse_guard
from minifw.errors import MinifwError
from minifw.kernel.conns import find_connections
try:
    found = find_connections([parse_guard(g) for g in sys.argv[1:]])
except MinifwError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps([c.to_json() for c in found]))
"""


def find(host, env: dict[str, str] | None = None, via_parent: bool = False,
         guards: tuple[str, ...] = ()) -> list[dict]:
    """Run the finder in ``host`` under `env -i` plus ``env``; with ``via_parent`` ``env`` is
    given only to a parent process, and the finder itself runs under a bare `env -i`."""
    inner = ["env", "-i", sys.executable, "-c", FINDER, *guards]
    assigns = [f"{k}={v}" for k, v in (env or {}).items()]
    if via_parent:
        argv = ["env", "-i", *assigns, sys.executable, "-c",
                "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))", *inner]
    else:
        argv = ["env", "-i", *assigns, *inner[2:]]
    return json.loads(host.run(argv).stdout)


def established(host, peer: str, port: int) -> list[tuple[str, int]]:
    """The local ends of ``host``'s established TCP connections to peer:port, from ss."""
    out = host.run(["ss", "-tnH", "state", "established"]).stdout
    ends = []
    for line in out.splitlines():
        local, remote = line.split()[-2:]
        if remote.rsplit(":", 1) == [f"[{peer}]" if ":" in peer else peer, str(port)]:
            addr, lport = local.rsplit(":", 1)
            ends.append((addr.strip("[]"), int(lport)))
    return ends


@pytest.fixture
def sshd(lab, tmp_path):
    """server and client namespaces, a real sshd on port 22 in the server (its own config,
    host key and authorized key, all made here), and the client's key."""
    if not Path(SSHD).exists() or not shutil.which("ssh"):
        pytest.fail("openssh-server and openssh-client are needed (make install adds them)")
    server, client = pair(lab)
    tmp_path.chmod(0o755)
    for name in ("hostkey", "userkey"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(tmp_path / name)], check=True, capture_output=True, timeout=30)
    (tmp_path / "authorized_keys").write_text((tmp_path / "userkey.pub").read_text())
    config = tmp_path / "sshd_config"
    config.write_text(f"""\
Port 22
ListenAddress 0.0.0.0
ListenAddress ::
HostKey {tmp_path}/hostkey
AuthorizedKeysFile {tmp_path}/authorized_keys
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
""")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation dir
    server.popen([SSHD, "-D", "-e", "-f", str(config)])  # the lab kills it on close
    server.wait_listening(22)
    return server, client, tmp_path


def ssh_session(client, keydir: Path, addr: str, ready: Path) -> None:
    """An ssh session from ``client`` that logs in, says so in ``ready``, and stays."""
    client.popen(["ssh", "-F", "/dev/null", "-i", str(keydir / "userkey"), "-o", "BatchMode=yes",
                  "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                  "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", f"root@{addr}",
                  f"touch {ready}; sleep 30"])
    wait_until(ready.exists, timeout=20, what=f"an ssh session to {addr}")


def test_sessions_to_sshd_are_found_without_ssh_connection(sshd):
    server, client, keys = sshd
    # What the finder sees with no session: at most an SSH_CONNECTION of the test run's own
    # ancestors (this machine may be run over ssh), never an sshd session.
    before = find(server)
    assert all(c["found"] == "SSH_CONNECTION" for c in before), before

    ssh_session(client, keys, SERVER4, keys / "ready4")
    ssh_session(client, keys, SERVER6, keys / "ready6")
    (end4,) = established(client, SERVER4, 22)
    (end6,) = established(client, SERVER6, 22)
    assert end4[0] == CLIENT4 and end6[0] == CLIENT6

    after = find(server)
    new = [c for c in after if c not in before]
    assert len(after) == len(before) + 2
    assert sorted(new, key=lambda c: c["client"]) == [
        {"client": CLIENT4, "client_port": end4[1], "server": SERVER4, "server_port": 22,
         "found": "sshd", "iface": "eth-c"},
        {"client": CLIENT6, "client_port": end6[1], "server": SERVER6, "server_port": 22,
         "found": "sshd", "iface": "eth-c"},
    ]
    # The client's own namespace has no sshd: its end of the sessions is nothing to protect.
    assert all(c["found"] == "SSH_CONNECTION" for c in find(client))

    # What was found feeds the pure check: a drop policy without an ssh rule is refused.
    conns = [Connection(ip(c["client"]), c["client_port"], ip(c["server"]), c["server_port"],
                        c["found"], c["iface"]) for c in new]
    locked = Ruleset.from_toml({"policy": {"input": "drop"}})
    assert refusal(check(locked, conns)).startswith(
        f"this change would cut {CLIENT4}:{end4[1]} -> {SERVER4}:22 (ssh session found via "
        "sshd): a new connection in is dropped by the input policy (drop)")
    open_ssh = Ruleset.from_toml({"policy": {"input": "drop"}, "rule": [
        {"id": "ssh", "iif": "eth-c", "proto": "tcp", "dport": 22, "action": "accept"}]})
    assert refusal(check(open_ssh, conns)) is None


def plain_session(client, tmp_path, seconds: int) -> None:
    """A TCP session CLIENT4:40022 -> SERVER4:22 held open for ``seconds`` (no sshd)."""
    ready = tmp_path / "ready"
    client.popen([sys.executable, "-c",
                  "import socket, sys, time\n"
                  "s = socket.create_connection((sys.argv[1], 22), 5, (sys.argv[2], 40022))\n"
                  "open(sys.argv[3], 'w').close()\n"
                  f"time.sleep({seconds})\n", SERVER4, CLIENT4, str(ready)])
    wait_until(ready.exists, what="a TCP session to the plain listener")


def test_ssh_connection_alone_with_a_plain_listener(lab, tmp_path):
    server, client = pair(lab)
    serve(server, tcp=[22])                               # a plain TCP echo server, no sshd
    plain_session(client, tmp_path, 30)
    assert established(client, SERVER4, 22) == [(CLIENT4, 40022)]
    value = f"{CLIENT4} 40022 {SERVER4} 22"
    want = [{"client": CLIENT4, "client_port": 40022, "server": SERVER4, "server_port": 22,
             "found": "SSH_CONNECTION", "iface": "eth-c"}]
    assert find(server, {"SSH_CONNECTION": value}) == want
    # the same value in the parent only, as `sudo` leaves it: the nearest ancestor gives it
    assert find(server, {"SSH_CONNECTION": value}, via_parent=True) == want
    # IPv6, and an IPv4-mapped value reads as the IPv4 flow it is on the wire
    six = find(server, {"SSH_CONNECTION": f"{CLIENT6} 40023 {SERVER6} 22"})
    assert six == [{"client": CLIENT6, "client_port": 40023, "server": SERVER6,
                    "server_port": 22, "found": "SSH_CONNECTION", "iface": "eth-c"}]
    mapped = find(server, {"SSH_CONNECTION": f"::ffff:{CLIENT4} 40022 ::ffff:{SERVER4} 22"})
    assert mapped == want
    # one of a session into another namespace: nothing here serves port 2222, so it is not
    # this namespace's to protect (as a test runner's own SSH_CONNECTION in a lab)
    assert find(server, {"SSH_CONNECTION": f"{CLIENT4} 40022 {SERVER4} 2222"}) == []
    assert find(client, {"SSH_CONNECTION": value}) == []


def test_guard_peers_get_this_hosts_address_toward_them(lab):
    server, client = pair(lab)
    serve(server, tcp=[22])          # SSH_CONNECTION counts where its server port is served
    got = find(server, {"SSH_CONNECTION": f"{CLIENT4} 40022 {SERVER4} 22"},
               guards=(f"{CLIENT4}:2222", f"[{CLIENT6}]:22", f"{CLIENT4}:22"))
    assert got == [
        {"client": CLIENT4, "client_port": 40022, "server": SERVER4, "server_port": 22,
         "found": "SSH_CONNECTION", "iface": "eth-c"},
        {"client": CLIENT4, "client_port": GUARD_CLIENT_PORT, "server": SERVER4,
         "server_port": 2222, "found": "--guard", "iface": "eth-c"},
        {"client": CLIENT6, "client_port": GUARD_CLIENT_PORT, "server": SERVER6,
         "server_port": 22, "found": "--guard", "iface": "eth-c"},
        {"client": CLIENT4, "client_port": GUARD_CLIENT_PORT, "server": SERVER4,
         "server_port": 22, "found": "--guard", "iface": "eth-c"},
    ]
    # a peer this namespace has no route to (198.18.0.0/15, on no link here) is an error
    assert find(server, guards=("198.19.255.1:22",)) == {
        "error": "--guard 198.19.255.1:22: this host has no route to 198.19.255.1, so no "
                 "connection from it to check"}


def test_sock_diag_says_whether_anything_listens(lab):
    """Where nothing listens, the finder skips the socket tables (about 2 ms each to read)."""
    server, client = pair(lab)
    ask = [sys.executable, "-c", "from minifw.kernel.conns import listening; print(listening())"]
    assert server.run(ask).stdout.strip() == "False"
    serve(server, tcp=[2222])
    assert server.run(ask).stdout.strip() == "True"
    assert client.run(ask).stdout.strip() == "False"
