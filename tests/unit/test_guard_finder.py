"""The guard's finder over a fake /proc tree: the ancestor walk, sshd's sockets, and entries
that vanish or cannot be read. (tests/kernel/test_guard_conns.py runs it on the real one.)"""

from __future__ import annotations

import ipaddress
import os

from minifw.kernel.conns import ssh_connection, sshd_sessions, sshd_socket_inodes

from test_guard import TCP, TCP6

ip = ipaddress.ip_address


def proc_entry(proc, pid, *, ppid=None, comm=None, environ=None, fds=()):
    d = proc / str(pid)
    d.mkdir(parents=True)
    if ppid is not None:
        (d / "status").write_text(f"Name:\tx\nState:\tS (sleeping)\nPPid:\t{ppid}\n")
    if comm is not None:
        (d / "comm").write_text(comm + "\n")
    if environ is not None:
        (d / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0"
                                             for k, v in environ.items()))
    (d / "fd").mkdir()
    for n, target in enumerate(fds):
        os.symlink(target, d / "fd" / str(n))
    return d


def test_the_environment_wins_then_the_nearest_ancestor(tmp_path):
    proc = tmp_path
    proc_entry(proc, "self", ppid=30)
    proc_entry(proc, 30, ppid=20, environ={"HOME": "/root"})          # sudo's command: cleared
    d = proc_entry(proc, 20, ppid=10)                                   # not ours to read
    (d / "environ").mkdir()
    proc_entry(proc, 10, ppid=5, environ={"SSH_CONNECTION": "198.18.0.2 40000 198.18.0.1 22"})
    proc_entry(proc, 5, ppid=0, environ={"SSH_CONNECTION": "198.18.0.9 40009 198.18.0.1 22"})
    conn = ssh_connection({}, proc)
    assert (conn.client, conn.client_port, conn.server, conn.server_port, conn.found) == (
        ip("198.18.0.2"), 40000, ip("198.18.0.1"), 22, "SSH_CONNECTION")
    own = ssh_connection({"SSH_CONNECTION": "fd00::2 1 fd00::1 65535"}, proc)
    assert (own.client, own.client_port, own.server_port) == (ip("fd00::2"), 1, 65535)
    # a malformed value of our own is passed over for the ancestors'
    assert ssh_connection({"SSH_CONNECTION": "garbage"}, proc).client == ip("198.18.0.2")


def test_the_walk_reads_any_comm_and_stops_at_a_vanished_process(tmp_path):
    proc_entry(tmp_path, "self", ppid=30)
    d = proc_entry(tmp_path, 30, ppid=31)
    (d / "status").write_bytes(b"Name:\t\xff\xfe\nPPid:\t31\n")          # any comm bytes
    proc_entry(tmp_path, 31, ppid=32, environ={"SSH_CONNECTION": "198.18.0.2 40000 "
                                                                 "198.18.0.1 22"})
    assert ssh_connection({}, tmp_path).client == ip("198.18.0.2")
    (tmp_path / "31" / "environ").unlink()
    proc_entry(tmp_path, 32)                                            # gone: no status
    assert ssh_connection({}, tmp_path) is None
    assert ssh_connection({}, tmp_path / "missing") is None


def test_sessions_to_the_ports_sshd_listens_on(tmp_path):
    proc = tmp_path
    (proc / "net").mkdir()
    (proc / "net" / "tcp").write_text(TCP)
    proc_entry(proc, 200, comm="sshd", fds=["socket:[1186671]", "/dev/null", "pipe:[5]"])
    proc_entry(proc, 201, comm="python3", fds=["socket:[1186672]"])    # [::]:22, not sshd
    proc_entry(proc, 202)                                               # vanished: no comm
    (proc_entry(proc, 204, fds=["socket:[1186672]"]) / "comm").write_bytes(b"\xff\xfe\n")
    d = proc_entry(proc, 203, comm="sshd")
    os.rmdir(d / "fd")                                                  # fds not readable
    (proc / "self").mkdir()
    assert sshd_socket_inodes(proc) == {1186671}
    got = sshd_sessions(proc)
    assert [(str(c.client), c.client_port, str(c.server), c.server_port, c.found)
            for c in got] == [("198.18.0.1", 40000, "198.18.0.1", 22, "sshd"),
                              ("127.0.0.1", 40002, "127.0.0.1", 22, "sshd")]
    # with tcp6 as well, the IPv6 listener of a python process still adds nothing
    (proc / "net" / "tcp6").write_text(TCP6)
    assert sshd_sessions(proc) == got
    # the IPv6 listener owned by sshd adds the IPv6 session on port 22
    (proc / "201" / "comm").write_text("sshd\n")
    assert [str(c.client) for c in sshd_sessions(proc)] == ["198.18.0.1", "127.0.0.1",
                                                            "fd00::1"]


def test_no_sshd_no_sessions(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(TCP)
    proc_entry(tmp_path, 201, comm="sshd-session", fds=["socket:[1186671]"])
    assert sshd_sessions(tmp_path) == []
