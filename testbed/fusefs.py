"""Real FUSE filesystems of the tests' own, served by fusepy (libfuse's high-level API) in their own process:
for the mount tests, a tiny one (one read-only file and, writable, what is created in memory); for KVBM's disk
tier, one that passes through to a directory on disk and, like 3FS's FUSE client, has no fallocate. That one
logs the flags each open and create carries (flags set later with fcntl, as KVBM sets O_DIRECT, never reach it).

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

    def __init__(self, mountpoint, subtype="testfs", fsname="testfs-source", writable=False, backing=None):
        self.mountpoint = str(mountpoint)
        self.subtype = subtype
        self.fsname = fsname
        self.mode = f"disk:{backing}" if backing else "rw" if writable else "ro"
        self.process = None

    def start(self, timeout=10.0):
        os.makedirs(self.mountpoint, exist_ok=True)
        before = mounts_at(self.mountpoint)
        self.process = subprocess.Popen([sys.executable, __file__, self.mountpoint, self.fsname, self.subtype,
                                         self.mode],
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
    "rw": that file plus directories and files created in memory; "disk:<directory>": that directory."""
    import fuse

    if mode.startswith("disk:"):
        fuse.FUSE(disk_backed(mode.removeprefix("disk:")), mountpoint, raw_fi=True, foreground=True,
                  nothreads=False, fsname=fsname, subtype=subtype)
        return

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


OPEN_LOG = ".opens"  # in the backing directory, hidden from the mount: "<path> <flags in octal>" per open


def logged_opens(backing):
    """(path, flags) of every open and create the disk-backed filesystem served, oldest first."""
    try:
        with open(os.path.join(backing, OPEN_LOG)) as f:
            return [(path, int(flags, 8)) for path, flags in (line.rsplit(" ", 1) for line in f.read().splitlines())]
    except FileNotFoundError:
        return []


def disk_backed(backing):
    """The operations of the disk-backed filesystem over `backing` (fusepy is imported here, in the child)."""
    import fuse

    class DiskBacked(fuse.Operations):
        """Passthrough to `backing`, one backing fd per open file (fusepy's raw_fi: each call gets the open's
        fuse_file_info, whose flags are logged), with no fallocate: 3FS's client has none (src/fuse/FuseOps.cc
        registers no .fallocate in its fuse_lowlevel_ops), so callers get EOPNOTSUPP. O_DIRECT is dropped on
        the backing file, which need not meet its alignment rules."""

        def __init__(self):
            self.backing = os.path.realpath(backing)
            self.log = open(os.path.join(self.backing, OPEN_LOG), "a", buffering=1)

        def __call__(self, op, *args):
            try:
                return super().__call__(op, *args)
            except OSError as e:
                raise fuse.FuseOSError(e.errno) from None

        def _real(self, path):
            if path.lstrip("/") == OPEN_LOG:
                raise fuse.FuseOSError(errno.ENOENT)
            return self.backing + path

        def _open(self, path, flags, fi, mode=0o600):
            self.log.write(f"{path} {flags:o}\n")
            fi.fh = os.open(self._real(path), flags & ~os.O_DIRECT, mode)
            return 0

        def getattr(self, path, fi=None):
            st = os.fstat(fi.fh) if fi is not None else os.lstat(self._real(path))
            return {key: getattr(st, key) for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size",
                                                      "st_atime", "st_mtime", "st_ctime", "st_blocks")}

        def readdir(self, path, fi):
            return [".", ".."] + [n for n in os.listdir(self._real(path)) if path != "/" or n != OPEN_LOG]

        def statfs(self, path):
            st = os.statvfs(self._real(path))
            return {key: getattr(st, key) for key in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                                                      "f_files", "f_ffree", "f_namemax")}

        def mkdir(self, path, mode):
            os.mkdir(self._real(path), mode)

        def rmdir(self, path):
            os.rmdir(self._real(path))

        def unlink(self, path):
            os.unlink(self._real(path))

        def rename(self, old, new):
            os.rename(self._real(old), self._real(new))

        def chmod(self, path, mode):
            os.chmod(self._real(path), mode)

        def chown(self, path, uid, gid):
            os.chown(self._real(path), uid, gid)

        def utimens(self, path, times=None):
            os.utime(self._real(path), times)

        def truncate(self, path, length, fi=None):
            os.ftruncate(fi.fh, length) if fi is not None else os.truncate(self._real(path), length)

        def open(self, path, fi):
            return self._open(path, fi.flags, fi)

        def create(self, path, mode, fi):
            return self._open(path, fi.flags | os.O_CREAT, fi, mode)

        def read(self, path, size, offset, fi):
            return os.pread(fi.fh, size, offset)

        def write(self, path, data, offset, fi):
            return os.pwrite(fi.fh, data, offset)

        def flush(self, path, fi):
            return 0

        def fsync(self, path, datasync, fi):
            os.fdatasync(fi.fh) if datasync else os.fsync(fi.fh)

        def release(self, path, fi):
            os.close(fi.fh)

    return DiskBacked()


if __name__ == "__main__":
    serve(*sys.argv[1:5])
