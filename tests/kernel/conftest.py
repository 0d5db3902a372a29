"""Kernel tests: root only, each test in namespaces it creates and always deletes.

Namespace names start with ``$MINIFW_LAB_PREFIX`` (default ``mk``), so several runs can share a
machine without touching each other's namespaces.
"""

import contextlib
from pathlib import Path

import pytest

from kit import need_root, new_lab, pair, serve

LOG_ALL_NETNS = Path("/proc/sys/net/netfilter/nf_log_all_netns")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/kernel" in str(item.fspath):
            item.add_marker(pytest.mark.kernel)


@pytest.fixture
def lab():
    need_root()
    with new_lab() as lab:
        yield lab


@pytest.fixture
def kernel_log():
    """net.netfilter.nf_log_all_netns=1 for the test, then back to the value it had before."""
    need_root()
    before = LOG_ALL_NETNS.read_text().strip()
    try:
        LOG_ALL_NETNS.write_text("1\n")
        yield
    finally:
        with contextlib.suppress(OSError):
            LOG_ALL_NETNS.write_text(before + "\n")


@pytest.fixture
def net(lab):
    """server <-> client, with TCP 80, 81 and UDP 53, 54 echo servers on the server and TCP 80
    on the client. Modules with another topology define their own ``net``."""
    server, client = pair(lab)
    serve(server, tcp=[80, 81], udp=[53, 54])
    serve(client, tcp=[80])
    return server, client
