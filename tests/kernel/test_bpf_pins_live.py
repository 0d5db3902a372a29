"""Where pins live: a bpffs in the host's mount namespace, reached from a private mount
namespace (what `ip netns exec` and `unshare -m` give a command) without vanishing with it."""

import os
import struct
import subprocess
import sys

import pytest

from kit import need_root
from minifw.bpf.program import MapSpec
from minifw.kernel.bpf import pins
from minifw.kernel.bpf.maps import Map

CHILD = """
import sys
from minifw.bpf.program import MapSpec
from minifw.kernel.bpf import pins
from minifw.kernel.bpf.maps import Map
root = pins.root(sys.argv[1])
m = Map.create(MapSpec("m", "array", 4, 8, 1))
m.update(bytes(4), (42).to_bytes(8, "little"))
m.pin(root + "/m")
print(root)
"""


@pytest.fixture
def path():
    need_root()
    path = f"/run/minifw/ba-pins-{os.getpid()}"
    try:
        yield path
    finally:
        subprocess.run(["umount", path], capture_output=True)
        subprocess.run(["rmdir", path], capture_output=True)


def test_a_private_mount_namespace_mounts_in_the_caller_s_and_pins_there(path):
    assert not pins._mounted_bpffs(path)
    out = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                          CHILD, path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # unshare execs in place: the nearest process in another mount namespace is this one
    assert out.stdout.strip() == f"/proc/{os.getpid()}/root{path}"
    assert pins._mounted_bpffs(path)  # here, in our namespace
    with Map.open_pinned(f"{path}/m") as m:  # the child is gone, its pin stays
        assert m.spec == MapSpec("m", "array", 4, 8, 1)
        assert struct.unpack("<Q", m.lookup(bytes(4)))[0] == 42
    os.unlink(f"{path}/m")


def test_an_existing_mount_is_used_as_it_is(path):
    assert pins.root(path) == path
    assert pins._mounted_bpffs(path)
    assert pins.root(path) == path  # mounted once
    with open("/proc/self/mountinfo") as fh:
        assert sum(line.split()[4] == path for line in fh) == 1


def test_a_dead_namespace_s_pins_under_this_inode_are_not_taken_for_ours(path):
    """A namespace deleted without `minifw down` leaves its directory, and a later namespace
    gets its inode: the netns-<cookie> marker tells them apart."""
    root = pins.root(path)
    mine = os.path.join(root, str(pins.netns_inode()))
    os.makedirs(os.path.join(mine, "netns-ffffffffffffffff"))   # another namespace's cookie
    with Map.create(MapSpec("m", "array", 4, 8, 1)) as m:
        m.pin(os.path.join(mine, "left"))
    assert pins.current_dir(path) is None
    assert pins.netns_dir(path) == mine
    assert os.listdir(mine) == [pins.marker()]                   # the dead one's pins went
    assert pins.current_dir(path) == mine
    # a directory without a marker (an older minifw's) is taken as this namespace's
    os.rmdir(os.path.join(mine, pins.marker()))
    assert pins.current_dir(path) == mine
    assert pins.netns_dir(path) == mine and os.listdir(mine) == [pins.marker()]
    assert pins.current_dir(path + "-none") is None
    assert pins.marker() == f"netns-{pins.netns_cookie():x}" and pins.netns_cookie() > 0
