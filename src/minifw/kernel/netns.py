"""Facts about the network namespace minifw runs in."""

from __future__ import annotations

import os
import subprocess

LOG_ALL_NETNS = "/proc/sys/net/netfilter/nf_log_all_netns"


def in_root_netns() -> bool:
    try:
        return os.stat("/proc/self/ns/net").st_ino == os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return True  # cannot tell (no /proc access): assume the common case


def log_all_netns() -> bool | None:
    """The machine's net.netfilter.nf_log_all_netns, read in the root namespace; None if unknown."""
    try:
        if in_root_netns():
            with open(LOG_ALL_NETNS) as fh:
                return fh.read().strip() == "1"
        out = subprocess.run(["nsenter", "--net=/proc/1/ns/net", "cat", LOG_ALL_NETNS],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() == "1" if out.returncode == 0 else None


def kernel_log_visible() -> bool:
    """Whether nft `log` lines from this namespace reach the kernel log (dmesg)."""
    return in_root_netns() or log_all_netns() is True
