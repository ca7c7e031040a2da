"""A tiny real FUSE filesystem for the mount tests: one read-only file (and, writable, what is created in
memory), served by fusepy in its own process.

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

    def __init__(self, mountpoint, subtype="testfs", fsname="testfs-source", writable=False):
        self.mountpoint = str(mountpoint)
        self.subtype = subtype
        self.fsname = fsname
        self.writable = writable
        self.process = None

    def start(self, timeout=10.0):
        os.makedirs(self.mountpoint, exist_ok=True)
        before = mounts_at(self.mountpoint)
        self.process = subprocess.Popen([sys.executable, __file__, self.mountpoint, self.fsname, self.subtype,
                                         "rw" if self.writable else "ro"],
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


def serve(mountpoint, fsname, subtype, mode="ro"):
    """Runs in the child process: mount `mountpoint` and serve until killed. "ro": one read-only file;
    "rw": that file plus directories and files created in memory."""
    import fuse

    class InMemory(fuse.Operations):
        def __init__(self):
            now = time.time()
            times = {"st_ctime": now, "st_mtime": now, "st_atime": now}
            self.attrs = {"/": {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, **times},
                          "/" + FILE_NAME: {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1,
                                            "st_size": len(FILE_DATA), **times}}
            self.data = {"/" + FILE_NAME: FILE_DATA}

        def getattr(self, path, fh=None):
            if path not in self.attrs:
                raise fuse.FuseOSError(errno.ENOENT)
            return self.attrs[path]

        def readdir(self, path, fh):
            prefix = path.rstrip("/") + "/"
            return [".", ".."] + [p[len(prefix):] for p in self.attrs
                                  if p.startswith(prefix) and p != prefix and "/" not in p[len(prefix):]]

        def read(self, path, size, offset, fh):
            return self.data[path][offset:offset + size]

        def mkdir(self, path, mode):
            self.attrs[path] = {**self.attrs["/"], "st_mode": stat.S_IFDIR | mode}

        def create(self, path, mode, fi=None):
            self.attrs[path] = {**self.attrs["/" + FILE_NAME], "st_mode": stat.S_IFREG | mode, "st_size": 0}
            self.data[path] = b""
            return 0

        def write(self, path, data, offset, fh):
            self.data[path] = self.data[path][:offset] + data
            self.attrs[path]["st_size"] = len(self.data[path])
            return len(data)

        def unlink(self, path):
            self.attrs.pop(path)
            self.data.pop(path)

        def statfs(self, path):
            """A large, empty filesystem (1 PiB in 4 KiB blocks), as a 3FS cluster's would look."""
            blocks = 2 ** 38
            return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": blocks, "f_bfree": blocks, "f_bavail": blocks,
                    "f_files": 2 ** 32, "f_ffree": 2 ** 32, "f_namemax": 255}

    fuse.FUSE(InMemory(), mountpoint, foreground=True, nothreads=True, ro=(mode == "ro"), fsname=fsname,
              subtype=subtype)


if __name__ == "__main__":
    serve(*sys.argv[1:5])
