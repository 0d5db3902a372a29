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
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping

from ..engine.guard import (
    Connection, GuardError, GuardSpec, dedupe, parse_ssh_connection, parse_tcp_table,
    sessions_to,
)

PROC = Path("/proc")
SSHD_COMM = b"sshd"       # comm is bytes a process may set to anything (prctl)
_MAX_DEPTH = 256          # ancestors walked at most (a pid loop cannot happen, but a bound costs nothing)
_ROUTE_TIMEOUT = 5.0


def find_connections(guards: Iterable[GuardSpec] = (), environ: Mapping[str, str] | None = None,
                     proc: Path = PROC) -> list[Connection]:
    """Every connection to protect (see the module docstring). ``environ`` defaults to this
    process's; a ``--guard`` peer this host has no route to raises GuardError."""
    found: list[Connection] = []
    conn = ssh_connection(environ, proc)
    if conn is not None:
        found.append(conn)
    found += sshd_sessions(proc)
    found += [guard_connection(spec) for spec in guards]
    return [_with_iface(c) for c in dedupe(found)]


# ---- SSH_CONNECTION ---------------------------------------------------------------------------

def ssh_connection(environ: Mapping[str, str] | None = None,
                   proc: Path = PROC) -> Connection | None:
    """SSH_CONNECTION of ``environ`` (default: this process's), else of the nearest ancestor."""
    env = os.environ if environ is None else environ
    conn = parse_ssh_connection(env.get("SSH_CONNECTION"))
    if conn is not None:
        return conn
    pid = _ppid(proc / "self")
    for _ in range(_MAX_DEPTH):
        if pid is None or pid < 1:
            return None
        conn = parse_ssh_connection(_environ(proc / str(pid)).get("SSH_CONNECTION"))
        if conn is not None:
            return conn
        pid = _ppid(proc / str(pid))
    return None


def _ppid(pid_dir: Path) -> int | None:
    try:
        # bytes: the Name line carries the comm, which a process may set to any bytes
        for line in (pid_dir / "status").read_bytes().splitlines():
            if line.startswith(b"PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _environ(pid_dir: Path) -> dict[str, str]:
    """A process's environment as it was exec'd; empty if it is gone or not ours to read."""
    try:
        raw = (pid_dir / "environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return out


# ---- sessions to sshd -------------------------------------------------------------------------

def sshd_sessions(proc: Path = PROC) -> list[Connection]:
    """Established TCP connections, in this network namespace, to a port an sshd listens on."""
    inodes = sshd_socket_inodes(proc)
    if not inodes:
        return []
    sockets = []
    for name in ("tcp", "tcp6"):
        try:
            text = (proc / "net" / name).read_bytes().decode("ascii", "replace")
        except OSError:
            continue       # no IPv6 in this kernel, or no /proc/net
        sockets += parse_tcp_table(text, sys.byteorder)
    listeners = [s for s in sockets if s.state == "listen" and s.inode in inodes]
    return sessions_to(listeners, sockets, found="sshd")


def sshd_socket_inodes(proc: Path = PROC) -> set[int]:
    """Inodes of the sockets held by processes named sshd."""
    inodes: set[int] = set()
    try:
        pids = [p for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return inodes
    for pid_dir in pids:
        try:
            if (pid_dir / "comm").read_bytes().strip() != SSHD_COMM:
                continue
            fds = list((pid_dir / "fd").iterdir())
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
    if conn.iface is not None:
        return conn
    route = route_to(conn.client)
    dev = route.get("dev") if route else None
    if not isinstance(dev, str):
        return conn
    return Connection(conn.client, conn.client_port, conn.server, conn.server_port, conn.found,
                      dev)
