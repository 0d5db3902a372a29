"""The systemd unit: `minifw daemon` (Type=notify) before network-pre.target, `reload` on
reload, SIGTERM to the daemon alone on stop (it does what `down` does); verified."""

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "minifw.service"


def read_unit():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def test_unit_runs_the_daemon_before_network_pre():
    unit = read_unit()
    service = unit["Service"]
    assert "network-pre.target" in unit["Unit"]["Before"].split()
    assert service["ExecStart"].split()[1:3] == ["daemon", "--config"]
    assert service["ExecReload"].split()[1:3] == ["reload", "--config"]
    assert service["Type"] == "notify"
    # stop: SIGTERM to the daemon only, which stops its runners and removes minifw itself
    assert service["KillMode"] == "mixed" and "ExecStop" not in service


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    # Point the unit at this checkout's CLI so verify can check the executables exist.
    text = UNIT.read_text().replace("/opt/minifw", str(ROOT))
    unit = tmp_path / "minifw.service"
    unit.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in proc.stderr.splitlines() if "minifw.service" in line]
    assert proc.returncode == 0 and not problems, proc.stderr
