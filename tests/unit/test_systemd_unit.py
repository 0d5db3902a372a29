"""The systemd unit: `up` on start, `down` on stop, before network-pre.target; verified."""

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


def test_unit_runs_up_and_down_before_network_pre():
    unit = read_unit()
    assert "network-pre.target" in unit["Unit"]["Before"].split()
    assert unit["Service"]["ExecStart"].split()[1:3] == ["up", "--config"]
    assert unit["Service"]["ExecStop"].split()[1:] == ["down"]
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Service"]["RemainAfterExit"] == "yes"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    # Point the unit at this checkout's CLI so verify can check the executables exist.
    text = UNIT.read_text().replace("/opt/minifw", str(ROOT))
    unit = tmp_path / "minifw.service"
    unit.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in proc.stderr.splitlines() if "minifw.service" in line]
    assert proc.returncode == 0 and not problems, proc.stderr
