"""Kernel tests: root only, each test in namespaces it creates and always deletes."""

import itertools
import os

import pytest

from minifw.lab import Lab

_counter = itertools.count()


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/kernel" in str(item.fspath):
            item.add_marker(pytest.mark.kernel)


@pytest.fixture
def lab():
    if os.geteuid() != 0:
        pytest.skip("kernel tests need root")
    with Lab(prefix=f"mk{os.getpid() % 10000}x{next(_counter)}") as lab:
        yield lab
