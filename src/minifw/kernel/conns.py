"""Find the connections the lockout guard protects: the I/O half of ``minifw.engine.guard``.

The union, one connection per flow, in this order:

- ``SSH_CONNECTION`` from the environment, or else from the nearest ancestor process that has
  it (``/proc/PID/environ``): ``sudo`` on Debian clears it from the command's own environment;
- every established TCP connection to a port an ``sshd`` process listens on: the listening
  sockets' inodes come from ``/proc/PID/fd`` links of processes whose comm is ``sshd``, and the
  sockets from ``/proc/net/tcp`` and ``tcp6``, which show the reading process's namespace;
- the ``--guard ADDR:PORT`` connections given, with this host's address toward ADDR.

Each connection carries this host's interface toward the client (``ip route get``), so rules
with ``iif``/``oif`` are judged. Processes vanish while /proc is walked, and some entries are
not readable: those are skipped, never raised.

Cost: ``minifw ban`` runs this on every call. The socket tables are read first, and the
``/proc/*/fd`` walk for sshd's sockets happens only when some established socket's local port
has a listener in this namespace; ``clients`` gives the candidate client addresses without
that walk, for a caller that only needs to know whether any could be affected.
"""

from __future__ import annotations

import ipaddress
import os
import sys
TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Iterable, Mapping

    from ..engine.guard import Connection, GuardSpec

from ..engine.sockets import TcpSocket, listening_remotes, parse_tcp_table, ssh_fields
from ..errors import GuardError

# engine.guard (its dataclasses) loads where Connections are built; subprocess and json where
# a route is asked: neither is needed to see that a ban cuts no one.

ProcDir = "str | os.PathLike[str]"  # /proc, or a copy of it in a test
PROC = "/proc"  # text, joined with os.path: pathlib is no part of a ban's start-up
SSHD_COMM = b"sshd"       # comm is bytes a process may set to anything (prctl)
_MAX_DEPTH = 256          # ancestors walked at most: a bound costs nothing
_ROUTE_TIMEOUT = 5.0


def find_connections(guards: Iterable[GuardSpec] = (), environ: Mapping[str, str] | None = None,
                     proc: ProcDir = PROC, ifaces: bool = True) -> list[Connection]:
    """Every connection to protect (see the module docstring). ``environ`` defaults to this
    process's; a ``--guard`` peer this host has no route to raises GuardError. ``ifaces``:
    ask each client's interface (``ip route get``)."""
    from ..engine.guard import Connection, dedupe

    found: list[Connection] = []
    sockets = tcp_sockets(proc)
    fields = ssh_connection_fields(environ, proc)
    if fields is not None and served_here(fields, sockets):
        found.append(Connection(*fields, "SSH_CONNECTION"))
    found += sshd_sessions(proc, sockets)
    found += [guard_connection(spec) for spec in guards]
    found = dedupe(found)
    return [_with_iface(c) for c in found] if ifaces else found


def clients(environ: Mapping[str, str] | None = None, proc: ProcDir = PROC) -> list:
    """Every address a protected connection could come from, cheaply: SSH_CONNECTION's client
    and the peers of every established socket a listener here accepted (a superset of the
    sessions to sshd, found without the ``/proc/*/fd`` walk). Addresses as on the wire."""
    from ..engine.sockets import unmap

    sockets = tcp_sockets(proc)
    out = [unmap(s.remote) for s in listening_remotes(sockets or ())]
    fields = ssh_connection_fields(environ, proc)
    if fields is not None and served_here(fields, sockets):
        out.append(fields[0])
    return out


def served_here(fields: tuple, sockets: list[TcpSocket] | None) -> bool:
    """Whether SSH_CONNECTION's server end is in this network namespace: something listens on
    its port (on its address, or on a wildcard). One inherited from a session into another
    namespace (a container's host, a test runner's) is not this namespace's to protect. With
    no socket table to read, it is taken as given."""
    if sockets is None:
        return True
    from ..engine.sockets import unmap

    _, _, server, port = fields
    return any(s.state == "listen" and s.local_port == port
               and (s.local.is_unspecified or unmap(s.local) == server) for s in sockets)


# ---- SSH_CONNECTION ---------------------------------------------------------------------------

def ssh_connection(environ: Mapping[str, str] | None = None,
                   proc: ProcDir = PROC) -> Connection | None:
    """SSH_CONNECTION of ``environ`` (default: this process's), else of the nearest ancestor."""
    from ..engine.guard import Connection

    fields = ssh_connection_fields(environ, proc)
    return None if fields is None else Connection(*fields, "SSH_CONNECTION")


def ssh_connection_fields(environ: Mapping[str, str] | None = None,
                          proc: ProcDir = PROC) -> tuple | None:
    """(client, client_port, server, server_port) of the first valid SSH_CONNECTION: of
    ``environ`` (default: this process's), else of the nearest ancestor that has one."""
    env = os.environ if environ is None else environ
    fields = ssh_fields(env.get("SSH_CONNECTION"))
    if fields is not None:
        return fields
    pid = _ppid(os.path.join(proc, "self"))
    for _ in range(_MAX_DEPTH):
        if pid is None or pid < 1:
            return None
        fields = ssh_fields(_environ(os.path.join(proc, str(pid))).get("SSH_CONNECTION"))
        if fields is not None:
            return fields
        pid = _ppid(os.path.join(proc, str(pid)))
    return None


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _ppid(pid_dir: str) -> int | None:
    try:
        # bytes: the Name line carries the comm, which a process may set to any bytes
        for line in _read(os.path.join(pid_dir, "status")).splitlines():
            if line.startswith(b"PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _environ(pid_dir: str) -> dict[str, str]:
    """A process's environment as it was exec'd; empty if it is gone or not ours to read."""
    try:
        raw = _read(os.path.join(pid_dir, "environ"))
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return out


# ---- sessions to sshd -------------------------------------------------------------------------

def tcp_sockets(proc: ProcDir = PROC) -> list[TcpSocket] | None:
    """Every TCP socket of this network namespace, IPv4 and IPv6; None when neither table
    could be read. Where nothing listens (asked of sock_diag, about 0.1 ms) there is no session
    to protect and the tables are not read: each costs about 2 ms, as the kernel walks its
    whole established-socket hash for it."""
    if proc == PROC and listening() is False:
        return []
    sockets = None
    for name in ("tcp", "tcp6"):
        try:
            text = _read(os.path.join(proc, "net", name)).decode("ascii", "replace")
        except OSError:
            continue       # no IPv6 in this kernel, or no /proc/net
        sockets = (sockets or []) + parse_tcp_table(text, sys.byteorder)
    return sockets


def listening() -> bool | None:
    """Whether any TCP socket listens in this network namespace, IPv4 or IPv6, from a
    sock_diag dump of listeners only; None when sock_diag cannot be asked."""
    import _socket  # socket's C core: socket.py's enums cost a ban's start
    import struct

    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
        except OSError:
            return None
        try:
            sock.settimeout(_DIAG_TIMEOUT)
            # inet_diag_req_v2: family, IPPROTO_TCP, no extensions, pad, states; a zero sockid
            req = struct.pack("=BBBBI48x", family, 6, 0, 0, 1 << _TCP_LISTEN)
            sock.sendto(struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY,
                                    _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + req, (0, 0))
            data = sock.recv(65536)
            if len(data) < 16:
                return None
            kind = struct.unpack_from("=H", data, 4)[0]
            if kind == _NLMSG_ERROR:
                return None
            if kind != _NLMSG_DONE:
                return True      # a listener's message came first
        except OSError:
            return None
        finally:
            sock.close()
    return False


_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10
_DIAG_TIMEOUT = 2.0


def sshd_sessions(proc: ProcDir = PROC, sockets: list[TcpSocket] | None = None) -> list[Connection]:
    """Established TCP connections, in this network namespace, to a port an sshd listens on.
    The owners are looked up only when some listener here has an established session."""
    sockets = (tcp_sockets(proc) if sockets is None else sockets) or []
    if not listening_remotes(sockets):
        return []
    inodes = sshd_socket_inodes(proc)
    if not inodes:
        return []
    from ..engine.guard import sessions_to

    listeners = [s for s in sockets if s.state == "listen" and s.inode in inodes]
    return sessions_to(listeners, sockets, found="sshd")


def sshd_socket_inodes(proc: ProcDir = PROC) -> set[int]:
    """Inodes of the sockets held by processes named sshd."""
    inodes: set[int] = set()
    try:
        pids = [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return inodes
    for pid in pids:
        pid_dir = os.path.join(proc, pid)
        try:
            if _read(os.path.join(pid_dir, "comm")).strip() != SSHD_COMM:
                continue
            fd_dir = os.path.join(pid_dir, "fd")
            fds = [os.path.join(fd_dir, fd) for fd in os.listdir(fd_dir)]
        except OSError:
            continue       # gone, or not ours to read
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target.endswith("]"):
                number = target[len("socket:["):-1]
                if number.isdigit():
                    inodes.add(int(number))
    return inodes


# ---- --guard and the interfaces ---------------------------------------------------------------

def guard_connection(spec: GuardSpec) -> Connection:
    """A ``--guard`` peer as a connection to this host's address toward it."""
    route = route_to(spec.peer)
    local = route.get("prefsrc") if route else None
    if route is None or local is None:
        where = f"[{spec.peer}]:{spec.port}" if spec.peer.version == 6 else \
            f"{spec.peer}:{spec.port}"
        raise GuardError(f"--guard {where}: this host has no route to {spec.peer}, so no "
                         "connection from it to check")
    return spec.connection(ipaddress.ip_address(local), route.get("dev"))


def route_to(addr) -> dict | None:
    """``ip route get ADDR`` as JSON (dev, prefsrc), or None when there is no route."""
    import json
    import subprocess

    try:
        out = subprocess.run(["ip", "-j", "route", "get", str(addr)], capture_output=True,
                             text=True, timeout=_ROUTE_TIMEOUT)
        if out.returncode != 0:
            return None
        routes = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if not isinstance(routes, list) or not routes or not isinstance(routes[0], dict):
        return None
    return routes[0]


def _with_iface(conn: Connection) -> Connection:
    import dataclasses

    if conn.iface is not None:
        return conn
    route = route_to(conn.client)
    dev = route.get("dev") if route else None
    if not isinstance(dev, str):
        return conn
    return dataclasses.replace(conn, iface=dev)
