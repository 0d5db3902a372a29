"""Every golden load document of the compiler unit tests is accepted by this kernel as is."""

import json
import sys
from pathlib import Path

import pytest

from kit import nft_objects

GOLDEN = Path(__file__).resolve().parents[1] / "unit" / "golden"
APPLY = "import json, sys\nfrom minifw.kernel import nft\nnft.run(json.load(open(sys.argv[1])))\n"


@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("load_*.json")))
def test_golden_applies(lab, name):
    host = lab.host("fw")
    host.run([sys.executable, "-c", APPLY, str(GOLDEN / f"{name}.json")])
    document = json.loads((GOLDEN / f"{name}.json").read_text())
    wanted: dict[str, list] = {}
    for cmd in document["nftables"]:
        if "rule" in cmd.get("add", {}):
            rule = cmd["add"]["rule"]
            wanted.setdefault(rule["chain"], []).append(rule["comment"])
    got: dict[str, list] = {}
    for rule in nft_objects(host, "rule"):
        got.setdefault(rule["chain"], []).append(rule["comment"])
    assert got == wanted
