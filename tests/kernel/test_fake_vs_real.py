"""The fake kernel against the real one: the same operations and the same raw documents, in a
namespace, through both; what the application reads back (layouts, objects, rule ids, set
elements) and which documents are refused must agree. This is what lets the unit tests trust
the fake (tests/unit/test_rollback.py, test_broken_state.py)."""

from __future__ import annotations

import json
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import json, sys, tempfile
    from pathlib import Path
    from minifw.app.rules import Service
    from minifw.app.sets import SetService
    from minifw.compile import sets as ksets
    from minifw.errors import KernelError
    from minifw.kernel.fake import FakeKernel
    from minifw.kernel.seam import Kernel

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
    [[rule]]
    id = "web1"
    proto = "tcp"
    dport = 80
    src = "198.18.1.0/24"
    action = "accept"
    [[rule]]
    id = "web2"
    proto = "tcp"
    dport = 80
    src = "198.18.2.0/24"
    action = "accept"
    [[rule]]
    id = "slow"
    proto = "udp"
    dport = 53
    limit = "10/second"
    action = "accept"
    [[set]]
    name = "blocked"
    elements = ["198.18.9.9", "198.18.64.0/24"]
    """
    T = {"family": "inet", "table": "minifw"}
    RAW = [
        [{"add": {"element": {**T, "name": "s_blocked_v4", "elem": ["fd00::1"]}}}],
        [{"add": {"element": {**T, "name": "s_blocked_v4",
                              "elem": [{"prefix": {"addr": "198.18.4.0", "len": 24}}]}}}],
        [{"add": {"element": {**T, "name": "s_blocked_v4net",
                              "elem": [{"prefix": {"addr": "198.18.64.128", "len": 25}}]}}}],
        [{"delete": {"element": {**T, "name": "s_blocked_v4", "elem": ["198.18.77.7"]}}}],
        [{"create": {"element": {**T, "name": "s_blocked_v4", "elem": ["198.18.9.9"]}}}],
        [{"add": {"element": {**T, "name": "s_blocked_v4", "elem": ["198.18.9.9"]}}}],
        [{"delete": {"set": {**T, "name": "s_blocked_v4"}}}],
        [{"delete": {"chain": {**T, "name": "bans"}}}],
        [{"delete": {"limit": {**T, "name": "limit_slow"}}}],
        [{"delete": {"chain": {**T, "name": "no_such_chain"}}}],
        [{"add": {"element": {**T, "name": "s_blocked_v6", "elem": ["fd00::7"]}}},
         {"delete": {"element": {**T, "name": "s_blocked_v6", "elem": ["fd00::8"]}}}],
    ]

    def reads(k):
        sets, chains, bans = k.kernel_objects()
        return {"exists": k.exists(), "layout": k.declarative_layout(),
                "objects": [sorted(x) for x in k.objects()], "sets": sorted(sets),
                "chains": sorted(chains), "bans": sorted(bans) if bans is not None else None,
                "ids": {c: [r.rule_id for r in k.chain_rules(c)] for c in sorted(chains)},
                "elements": {s: sorted(map(json.dumps, k.set_elements(s)))
                             for s in sorted(sets) if s.startswith("s_")}}

    out = {}
    work = Path(tempfile.mkdtemp())
    config = work / "c.toml"
    config.write_text(CONFIG)
    imports = work / "i.txt"
    imports.write_text("198.18.7.1\\n198.18.7.2\\nfd00::5\\n198.18.8.0/24\\n")
    for which, kernel in (("real", Kernel()), ("fake", FakeKernel())):
        rules = Service(work / which, kernel)
        sets = SetService(work / which, kernel)
        steps = []
        rules.up(str(config))
        sets.ban(["198.18.5.5", "fd00::9"], None)
        sets.import_file("blocked", str(imports), False, None)
        rules.add({"id": "web3", "proto": "tcp", "dport": 80, "src": "198.18.3.0/24",
                   "action": "accept"}, None, True)
        rules.add({"id": "first", "proto": "udp", "dport": 99, "action": "drop"}, 0, True)
        steps.append(reads(kernel))
        rules.delete("web1", True)
        rules.delete("ping", True)
        sets.unban(["198.18.5.5", "198.18.7.1"])
        steps.append(reads(kernel))
        outcomes = []
        for document in RAW:
            try:
                kernel.run({"nftables": document})
                outcomes.append("applied")
            except KernelError:
                outcomes.append("refused")
        steps.append(outcomes)
        steps.append(reads(kernel))
        rules.down()
        steps.append(reads(kernel))
        out[which] = steps
    print(json.dumps(out))
''')


def test_the_fake_reads_and_refuses_as_the_kernel_does(lab):
    host = lab.host("fw")
    result = json.loads(host.run([sys.executable, "-c", SCRIPT], timeout=120).stdout)
    real, fake = result["real"], result["fake"]
    assert real[2].count("refused") >= 7  # the raw documents do reach both verdicts
    for step, (r, f) in enumerate(zip(real, fake)):
        assert r == f, f"step {step}: real {r}\nfake {f}"
