"""Reading mountinfo for the bpffs: the mount point is field 5, the type follows the "-"
(after a variable number of optional fields)."""

from minifw.kernel.bpf.pins import _mounted_bpffs

LINES = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:35 / /run/minifw/bpf rw,relatime shared:20 master:1 - bpf bpf rw,mode=700
41 27 0:36 / /sys/fs/bpf rw,relatime - bpf bpf rw
42 27 0:37 / /run/minifw/tmp rw - tmpfs tmpfs rw
"""


def test_a_bpffs_mount_point_is_found_with_optional_fields(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(LINES)
    assert _mounted_bpffs("/run/minifw/bpf", str(info))
    assert _mounted_bpffs("/sys/fs/bpf", str(info))
    assert not _mounted_bpffs("/run/minifw", str(info))       # a parent is not the mount
    assert not _mounted_bpffs("/run/minifw/tmp", str(info))   # mounted, but not a bpffs
    assert not _mounted_bpffs("/run/minifw/bpf/x", str(info))


def test_unreadable_or_garbled_mountinfo_means_not_mounted(tmp_path):
    assert not _mounted_bpffs("/run/minifw/bpf", str(tmp_path / "missing"))
    garbled = tmp_path / "garbled"
    garbled.write_text("40 27 0:35 / /run/minifw/bpf rw bpf\n")  # no "-"
    assert not _mounted_bpffs("/run/minifw/bpf", str(garbled))
