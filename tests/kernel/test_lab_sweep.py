"""A lab whose process died without closing it is swept by the next run."""

import subprocess
import sys
import textwrap

from kit import need_root

from minifw import lab as labmod


def netns_names():
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_a_dead_owners_namespaces_are_swept_and_a_live_ones_kept():
    need_root()
    code = textwrap.dedent("""
        import os
        from minifw.lab import Lab
        lab = Lab(prefix="swp%d" % os.getpid())
        lab.host("a")
        print(lab.hosts["a"].ns, flush=True)
        os._exit(0)              # as a test timeout ends pytest: no close()
    """)
    ns = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        check=True, timeout=60).stdout.strip()
    try:
        assert ns in netns_names()
        with labmod.Lab(prefix="swpmine") as mine:
            mine.host("b")
            swept = labmod.sweep_orphans()
            assert ns in swept and mine.hosts["b"].ns not in swept
            assert mine.hosts["b"].ns in netns_names()
        assert ns not in netns_names()
        assert not (labmod.REGISTRY / ns).exists()
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
