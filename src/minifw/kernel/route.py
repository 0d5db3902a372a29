"""Route lookups in this network namespace over rtnetlink (what `ip route get` asks). The I/O
edge of netlink/route.py."""

from __future__ import annotations

import itertools
import socket

from ..errors import KernelError
from ..netlink.route import Address, RouteAnswer, getroute_request, parse_getroute

_seq = itertools.count(1)


def lookup(dst: Address, *, src: Address | None = None, iif: str | None = None,
           timeout: float = 2.0) -> RouteAnswer:
    """The kernel's route for ``dst``: an input lookup as a packet arriving on ``iif`` (with
    source ``src``) when ``iif`` is given, else the lookup of a packet this host sends."""
    index = None
    if iif is not None:
        try:
            index = socket.if_nametoindex(iif)
        except OSError:
            raise KernelError(f"--iif: there is no interface {iif!r} here") from None
    seq = next(_seq)
    request = getroute_request(seq, dst, src=src, iif=index)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
            sock.settimeout(timeout)
            sock.bind((0, 0))
            sock.send(request)
            while True:
                answer = parse_getroute(sock.recv(65536), seq)
                if answer is not None:
                    return answer
    except OSError as exc:
        raise KernelError(f"the route lookup for {dst} failed: "
                          f"{exc.strerror or exc}") from exc


def ifname(index: int | None) -> str | None:
    """The name of interface ``index`` (None when unknown or gone)."""
    if index is None:
        return None
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None


def interface_mac(name: str) -> str | None:
    """The MAC address of interface ``name`` in this namespace (None if it has none)."""
    if "/" in name or name in (".", ".."):
        return None
    try:
        with open(f"/sys/class/net/{name}/address") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def interface_address(name: str | None, version: int):
    """The first address of ``version`` on interface ``name`` (lo when None), as the kernel's
    redirect picks it; None if there is none or it cannot be read."""
    import ipaddress
    import json
    import subprocess

    try:
        out = subprocess.run(["ip", "-j", f"-{version}", "addr", "show", "dev", name or "lo"],
                             capture_output=True, text=True, timeout=5)
        for link in json.loads(out.stdout or "[]"):
            for info in link.get("addr_info", []):
                if info.get("scope") in ("global", "host"):
                    return ipaddress.ip_address(info["local"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return None
    return None
