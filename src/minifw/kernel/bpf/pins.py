"""Where minifw pins its BPF objects: a bpffs at /run/minifw/bpf in the HOST mount namespace,
one directory per network namespace named by its inode.

A namespace that is deleted without ``minifw down`` leaves its directory, and the kernel gives
its inode to a later namespace. So each directory holds a marker, ``netns-<cookie>`` (an empty
directory: a bpffs takes no files), with the namespace's cookie, which is never reused while
the system runs: a directory with another cookie is a dead namespace's, taken for none of ours.

`ip netns exec` gives each command a private mount namespace and remounts /sys there, so a pin
under /sys/fs/bpf vanishes with the command. A bpffs mounted at /run/minifw/bpf in the host's
mount namespace before the command starts is copied into its namespace and stays visible. If a
process in such a private namespace finds it unmounted, it mounts it in the host's mount
namespace (nsenter) and reaches it through /proc/PID/root: a mount made there later does not
propagate into a private copy."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import struct
import subprocess

from .sys import BpfError

ROOT = "/run/minifw/bpf"


def _mounted_bpffs(path: str, mountinfo: str = "/proc/self/mountinfo") -> bool:
    try:
        with open(mountinfo) as fh:
            for line in fh:
                fields = line.split()
                dash = fields.index("-")
                if fields[4] == path and fields[dash + 1] == "bpf":
                    return True
    except (OSError, ValueError, IndexError):
        return False
    return False


def _mnt_ns(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None  # gone, or not ours to read (pid 1 in a container)


def host_pid() -> int | None:
    """A process in the mount namespace where the pins must live, when it is not ours: pid 1
    if readable, else the nearest ancestor in another mount namespace (`ip netns exec` and
    `nsenter` exec their command in place, so that is the process that called them)."""
    mine = _mnt_ns("self")
    first = _mnt_ns(1)
    if first is not None:
        return None if first == mine else 1
    pid = os.getppid()
    for _ in range(64):
        if pid <= 1:
            return None
        ns = _mnt_ns(pid)
        if ns is not None and ns != mine:
            return pid
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return None


def _mount_here(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", os.fsencode(path), b"bpf", 0, b"mode=0700") != 0:
        err = ctypes.get_errno()
        raise BpfError(f"cannot mount a bpffs at {path}: {os.strerror(err)}", err)


def _mount_in(pid: int, path: str) -> None:
    script = f"mountpoint -q {path} || {{ mkdir -p -m 0700 {path} && " \
             f"mount -t bpf -o mode=0700 bpf {path}; }}"
    try:
        proc = subprocess.run(["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--", "sh", "-c",
                               script], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BpfError(f"cannot mount a bpffs at {path} in the host: {exc}") from exc
    if proc.returncode:
        raise BpfError(f"cannot mount a bpffs at {path} in the host: {proc.stderr.strip()}")


def root(path: str = ROOT) -> str:
    """The pin root as this process reaches it, mounting the bpffs in the host if needed."""
    if _mounted_bpffs(path):
        return path
    host = host_pid()
    if host is None:
        _mount_here(path)
        return path
    if not _mounted_bpffs(path, f"/proc/{host}/mountinfo"):
        _mount_in(host, path)
    return f"/proc/{host}/root{path}"


def netns_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


SO_NETNS_COOKIE = 71
MARK = "netns-"


def netns_cookie() -> int:
    """This network namespace's cookie: unlike its inode, never given to another while the
    system runs."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        return struct.unpack("<Q", sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]


def marker() -> str:
    return f"{MARK}{netns_cookie():x}"


def owned(directory: str) -> bool:
    """Whether ``directory`` holds this namespace's pins, not those of a dead namespace whose
    inode this one has: its marker says. One without a marker (an older minifw's) counts as
    this namespace's."""
    try:
        marks = [n for n in os.listdir(directory) if n.startswith(MARK)]
    except OSError:
        return False
    return not marks or marker() in marks


def current_dir(path: str = ROOT) -> str | None:
    """This namespace's pin directory as it is (nothing mounted or made); None where there is
    none, or it is a dead namespace's."""
    directory = os.path.join(path, str(netns_inode()))
    return directory if os.path.isdir(directory) and owned(directory) else None


def netns_dir(path: str = ROOT) -> str:
    """This network namespace's pin directory (created, with its marker), e.g.
    /run/minifw/bpf/4026531840. A dead namespace's pins found there are removed: the links
    they held went with it."""
    directory = os.path.join(root(path), str(netns_inode()))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not owned(directory):
            for name in os.listdir(directory):
                entry = os.path.join(directory, name)
                with contextlib.suppress(OSError):
                    shutil.rmtree(entry) if os.path.isdir(entry) else os.unlink(entry)
        os.makedirs(os.path.join(directory, marker()), mode=0o700, exist_ok=True)
    except OSError as exc:
        raise BpfError(f"cannot create the pin directory {directory}: {exc}") from exc
    return directory
