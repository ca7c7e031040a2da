"""A tiny real FUSE filesystem for the mount tests: one read-only file, served by fusepy in its own process.

The test kills that process with SIGKILL to get what a node keeps after a FUSE daemon dies: a mount that
mountinfo still lists and that answers every stat with "Transport endpoint is not connected"."""

import errno
import os
import signal
import stat
import subprocess
import sys
import time

FILE_NAME = "hello.txt"
FILE_DATA = b"served over FUSE\n"


def mounts_at(path, mountinfo="/proc/self/mountinfo"):
    """How many mounts mountinfo lists at `path` (escaped as the kernel does)."""
    escaped = str(path).replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")
    with open(mountinfo) as f:
        return sum(line.split(" ")[4] == escaped for line in f)


def mounted_at(path, mountinfo="/proc/self/mountinfo"):
    return mounts_at(path, mountinfo) > 0


class FuseServer:
    """The FUSE daemon for one mount point, in a child process; `kill()` leaves the mount stale."""

    def __init__(self, mountpoint, subtype="testfs", fsname="testfs-source"):
        self.mountpoint = str(mountpoint)
        self.subtype = subtype
        self.fsname = fsname
        self.process = None

    def start(self, timeout=10.0):
        os.makedirs(self.mountpoint, exist_ok=True)
        before = mounts_at(self.mountpoint)
        self.process = subprocess.Popen([sys.executable, __file__, self.mountpoint, self.fsname, self.subtype],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while mounts_at(self.mountpoint) == before:
            if self.process.poll() is not None:
                raise RuntimeError(f"FUSE server for {self.mountpoint} exited: {self.process.stderr.read().decode()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"FUSE server for {self.mountpoint} did not mount within {timeout}s")
            time.sleep(0.02)
        return self

    def kill(self):
        """SIGKILL the daemon: the kernel keeps the mount, which now fails with ENOTCONN."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        if self.process:
            self.process.stderr.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()


def serve(mountpoint, fsname, subtype):
    """Runs in the child process: mount `mountpoint` and serve until killed."""
    import fuse

    class OneFile(fuse.Operations):
        def getattr(self, path, fh=None):
            now = time.time()
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_ctime": now, "st_mtime": now,
                        "st_atime": now}
            if path == "/" + FILE_NAME:
                return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": len(FILE_DATA),
                        "st_ctime": now, "st_mtime": now, "st_atime": now}
            raise fuse.FuseOSError(errno.ENOENT)

        def readdir(self, path, fh):
            return [".", "..", FILE_NAME]

        def read(self, path, size, offset, fh):
            return FILE_DATA[offset:offset + size]

    fuse.FUSE(OneFile(), mountpoint, foreground=True, nothreads=True, ro=True, fsname=fsname, subtype=subtype)


if __name__ == "__main__":
    serve(*sys.argv[1:4])
