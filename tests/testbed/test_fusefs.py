"""testbed/fusefs.py's disk-backed filesystem, the disk tier's 3FS stand-in: real FUSE (root, /dev/fuse)."""

import ctypes
import errno
import os
import subprocess
import time

import pytest

from testbed import fusefs


@pytest.fixture
def mounted(tmp_path):
    backing, mountpoint = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    try:
        with fusefs.FuseServer(mountpoint, subtype="hf3fs", fsname="hf3fs.test", backing=backing):
            yield backing, mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)  # the killed daemon leaves its mount


def test_files_pass_through_to_the_backing_directory(mounted):
    backing, mountpoint = mounted
    (mountpoint / "kvbm").mkdir()
    (mountpoint / "kvbm" / "cache").write_bytes(b"block" * 1000)
    assert (backing / "kvbm" / "cache").read_bytes() == b"block" * 1000
    assert os.listdir(mountpoint) == ["kvbm"]  # the open log stays hidden
    assert fusefs.mounted_at(mountpoint)


def test_no_fallocate_as_3fs_s_client(mounted):
    """The syscall itself, not glibc's posix_fallocate, which falls back to writing zeros."""
    _, mountpoint = mounted
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(mountpoint / "file", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        assert libc.fallocate(fd, 0, ctypes.c_long(0), ctypes.c_long(1 << 20)) == -1
        assert ctypes.get_errno() == errno.EOPNOTSUPP
    finally:
        os.close(fd)


def test_opens_are_logged_with_their_flags(mounted):
    backing, mountpoint = mounted
    fd = os.open(mountpoint / "direct", os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o600)
    os.close(fd)
    with open(mountpoint / "direct", "rb"):
        pass
    opens = fusefs.logged_opens(backing)
    assert [path for path, _ in opens] == ["/direct", "/direct"]
    assert opens[0][1] & os.O_DIRECT and not opens[1][1] & os.O_DIRECT


def test_an_unlinked_open_file_stays_as_fuse_hidden_until_closed(mounted):
    """libfuse's high-level API renames it; 3FS's client (low-level API) unlinks at once."""
    backing, mountpoint = mounted
    fd = os.open(mountpoint / "cache", os.O_CREAT | os.O_RDWR, 0o600)
    os.unlink(mountpoint / "cache")
    assert [n for n in os.listdir(backing) if n.startswith(".fuse_hidden")]
    os.close(fd)
    deadline = time.monotonic() + 5  # the kernel sends RELEASE after close returns
    while [n for n in os.listdir(backing) if n.startswith(".fuse_hidden")]:
        assert time.monotonic() < deadline, "the hidden file outlived its last close"
        time.sleep(0.01)
