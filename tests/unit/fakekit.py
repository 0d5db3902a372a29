"""Unit tests on the fake kernel: a config, a Service and a SetService over one FakeKernel, and a
guard that fails any test reaching the real kernel (these tests run as root on the machine's own
namespace, whose firewall they must never touch)."""

from __future__ import annotations

import copy
import json

import pytest

from minifw.app.rules import Service
from minifw.app.sets import SetService
from minifw.kernel import nfnl, nft
from minifw.kernel.fake import FakeKernel

CONFIG = """
[[rule]]
id = "ping"
proto = "icmp"
action = "drop"

[[rule]]
id = "ssh"
proto = "tcp"
dport = 22
src = "198.18.0.0/24"
action = "accept"

[[set]]
name = "blocked"
elements = ["198.18.9.9"]
"""


class NoKernel:
    """Stands in for libnftables: reads are refused (as for a process without privilege),
    writes fail the test."""

    def set_json_output(self, value):
        pass

    set_handle_output = set_terse_output = set_json_output

    def cmd(self, text):
        return 1, "", "Error: the unit tests have no kernel"

    def json_cmd(self, document):
        raise AssertionError(f"a unit test reached the real kernel: {json.dumps(document)[:200]}")


@pytest.fixture
def no_real_kernel(monkeypatch):
    monkeypatch.setattr(nft, "_handle", NoKernel())

    def send_batch(*args, **kwargs):
        raise AssertionError("a unit test reached the real kernel over netlink")
    monkeypatch.setattr(nfnl, "send_batch", send_batch)


class Lab:
    def __init__(self, tmp_path):
        self.kernel = FakeKernel()
        self.state_dir = tmp_path / "state"
        self.config = tmp_path / "minifw.toml"
        self.config.write_text(CONFIG)
        self.rules = Service(self.state_dir, self.kernel)
        self.sets = SetService(self.state_dir, self.kernel)

    def snapshot(self):
        """Everything a failed operation must leave as it was: the kernel's table (with set
        elements), the state files, the config and the set record."""
        files = {p.name: p.read_bytes() for p in sorted(self.state_dir.iterdir())
                 if p.is_file() and p.name not in ("lock",) and not p.name.startswith("sets.db")}
        record = None
        if (self.state_dir / "sets.db").exists():
            record = {name: sorted(self.sets.record.page(name, 0, 1 << 20))
                      for name in self.sets.record.names()}
        return {"kernel": copy.deepcopy(self.kernel.tables), "files": files,
                "config": self.config.read_text(), "record": record}


@pytest.fixture
def lab(tmp_path, no_real_kernel):
    return Lab(tmp_path)
