"""The public Python API without root: what reads only files (check, explain --config), the
results it returns (the same data --json prints), and errors only from minifw's tree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import minifw
from minifw.api import Firewall, _in_tree
from minifw.app import explain as explainer
from minifw.app.results import CaptureSummary, Checked, Explained
from minifw.cli.main import cli
from minifw.errors import ConfigError, MinifwError, PacketError, StateError

ROOT = Path(__file__).resolve().parents[2]
SEED = str(ROOT / "examples" / "seed.toml")


@pytest.fixture(autouse=True)
def no_kernel(monkeypatch, tmp_path):
    monkeypatch.setattr(explainer, "foreign_chains", lambda hooks, versions: [])
    monkeypatch.setenv("MINIFW_STATE_DIR", str(tmp_path / "env-state"))


def cli_json(*args: str):
    res = CliRunner().invoke(cli, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_firewall_is_exported_lazily():
    code = ("import sys, minifw; assert 'minifw.api' not in sys.modules; "
            "from minifw import Firewall; import minifw.api; "
            "assert Firewall is minifw.api.Firewall; "
            "assert 'minifw.app.rules' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
    assert "Firewall" in minifw.__all__ and "Firewall" in dir(minifw)


def test_state_dir_defaults_to_the_environment(tmp_path):
    assert Firewall().state_dir == tmp_path / "env-state"
    assert Firewall(state_dir=tmp_path / "x").state_dir == tmp_path / "x"
    assert "x" in repr(Firewall(state_dir=tmp_path / "x"))


def test_check_returns_what_check_json_prints():
    checked = Firewall().check(SEED)
    assert isinstance(checked, Checked)
    assert checked.to_json() == cli_json("check", "--config", SEED)
    assert [r.id for r in checked.ruleset.rules][:1] == ["drop-icmp"]


def test_explain_returns_the_explanation_json_prints():
    probe = dict(proto="icmp", src="198.18.0.2", dst="198.18.0.1")
    got = Firewall().explain(config=SEED, **probe)
    assert isinstance(got, Explained)
    assert (got.verdict, got.rule, got.decided_by, str(got.point)) == (
        "drop", "drop-icmp", "rule", "prerouting/-300")
    assert got.ruleset == SEED and got.warnings == () and got.hook_logs == ()
    assert got.to_json() == cli_json("explain", "--config", SEED, "--proto", "icmp", "--src",
                                     "198.18.0.2", "--dst", "198.18.0.1")
    # ports as ints or text alike
    assert Firewall().explain(config=SEED, proto="tcp", src="198.18.0.2", dst="198.18.0.1",
                              dport=22).to_json() == \
        Firewall().explain(config=SEED, proto="tcp", src="198.18.0.2", dst="198.18.0.1",
                           dport="22").to_json()


def test_explain_warnings_come_with_the_result(monkeypatch):
    monkeypatch.setattr(explainer, "foreign_chains", lambda hooks, versions: ["other table"])
    got = Firewall().explain(config=SEED, proto="udp", src="198.18.0.2", dst="198.18.0.1",
                             dport=53)
    assert got.warnings == ("other table",)


def test_explain_of_a_capture(tmp_path):
    from scapy.layers.inet import IP, UDP
    from scapy.utils import wrpcap

    pcap = tmp_path / "c.pcap"
    wrpcap(str(pcap), [IP(src="198.18.0.2", dst="198.18.0.1") / UDP(sport=4000, dport=53)] * 3)
    got = Firewall().explain(config=SEED, pcap=pcap)
    assert isinstance(got, CaptureSummary)
    assert (got.packets, got.explained) == (3, 3) and got.ruleset == SEED
    assert got.to_json() == cli_json("explain", "--config", SEED, "--pcap", str(pcap))
    with pytest.raises(PacketError, match="^--dport: with --pcap"):
        Firewall().explain(config=SEED, pcap=pcap, dport=53)


@pytest.mark.parametrize("call, error", [
    (lambda fw: fw.check("/nonexistent/minifw.toml"), ConfigError),
    (lambda fw: fw.explain(config=SEED, proto="tcp", src="198.18.0.2", dst="198.18.0.1"),
     PacketError),
    (lambda fw: fw.explain(proto="tcp", src="198.18.0.2", dst="198.18.0.1", dport=1),
     StateError),  # no live ruleset in an empty state dir
])
def test_errors_are_minifws(call, error, tmp_path):
    with pytest.raises(error):
        call(Firewall(state_dir=tmp_path / "state"))


def test_foreign_errors_are_wrapped_into_the_tree(tmp_path):
    import sqlite3

    @_in_tree
    def raising(exc):
        raise exc

    with pytest.raises(StateError, match=r"^/x/y: No such file or directory$") as info:
        raising(FileNotFoundError(2, "No such file or directory", "/x/y"))
    assert isinstance(info.value.__cause__, FileNotFoundError)
    with pytest.raises(StateError, match="needs root \\(CAP_NET_ADMIN\\)$"):
        raising(PermissionError(13, "Permission denied", "/var/lib/minifw"))
    with pytest.raises(StateError, match="^the set record failed: disk I/O error$"):
        raising(sqlite3.OperationalError("disk I/O error"))
    with pytest.raises(MinifwError, match="nested too deeply"):
        raising(RecursionError())
    with pytest.raises(KeyError):  # a bug stays a bug: the CLI names it as one
        raising(KeyError("x"))
    # and for real: a state dir that is a file
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(MinifwError):
        Firewall(state_dir=blocker / "state").list_set("blocked")


def test_add_refuses_a_negative_position(tmp_path):
    with pytest.raises(ConfigError, match="position"):
        Firewall(state_dir=tmp_path).add({"id": "x", "action": "accept"}, position=-1)
