"""cleanup-mounts: lazily detach the mounts left under a staging directory and remove its empty directories.

When a worker pod goes, its 3FS FUSE mount can stay on the node, answering every call with "Transport
endpoint is not connected". /proc/self/mountinfo is the source of truth for what is mounted (os.path.ismount
says False on such a mount); each mount point is detached with umount2(MNT_DETACH | UMOUNT_NOFOLLOW), deepest
first, and every stat or umount runs under a timeout so that a wedged FUSE daemon cannot hang the command.
Files are never deleted and symlinks are never followed."""

import ctypes
import dataclasses
import errno
import os
import re
import stat
import threading
import time

from dynamo_hooks.report import ERROR, OK, WARNING, Finding, Report

CHECK = "cleanup-mounts"
MOUNTINFO = "/proc/self/mountinfo"
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8
MAX_PASSES = 10  # each pass reaches one more level of mounts hidden below others

# The errnos Kubernetes mount-utils treats as a corrupted mount (IsCorruptedMnt): stat fails, the mount is dead.
BROKEN_ERRNOS = frozenset({errno.ENOTCONN, errno.ESTALE, errno.EIO, errno.EACCES, errno.EHOSTDOWN,
                           errno.EWOULDBLOCK, errno.ENODEV})
# umount2 answers these when the path is not (or no longer) a mount point: the goal is reached.
NOT_MOUNTED_ERRNOS = frozenset({errno.EINVAL, errno.ENOENT})

SYSTEM_DIRS = frozenset({"/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
                         "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/mnt", "/media",
                         "/var/lib", "/var/run", "/var/tmp", "/usr/local"})
SYSTEM_TREES = ("/proc", "/sys", "/dev")

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclasses.dataclass
class Mount:
    """One line of mountinfo. `order` is its line number: a later line at the same point is stacked on top."""

    mount_id: int
    parent_id: int
    mount_point: str
    fs_type: str
    source: str
    order: int = 0


@dataclasses.dataclass
class Health:
    """What a stat of a mount point said: broken (a corrupted-mount errno or a timeout) or not, and why."""

    broken: bool
    reason: str = ""


# --- mountinfo ---------------------------------------------------------------------------------------------------

def unescape(field):
    """Undo the kernel's octal escapes in mountinfo: \\040 space, \\011 tab, \\012 newline, \\134 backslash."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo_line(line, order=0):
    """A mountinfo line -> Mount. Field 5 is the mount point; fs type and source follow the " - " separator."""
    fields = line.rstrip("\n").split(" ")
    try:
        separator = fields.index("-", 6)
        return Mount(mount_id=int(fields[0]), parent_id=int(fields[1]), mount_point=unescape(fields[4]),
                     fs_type=unescape(fields[separator + 1]), source=unescape(fields[separator + 2]), order=order)
    except (ValueError, IndexError) as err:
        raise ValueError(f"unparsable mountinfo line {line.strip()!r}") from err


def read_mountinfo(path=MOUNTINFO):
    """Every mount this process sees, in mount order. Read as bytes: mount points need not be UTF-8."""
    with open(path, "rb") as f:
        lines = [os.fsdecode(raw) for raw in f.read().splitlines()]
    return [parse_mountinfo_line(line, order) for order, line in enumerate(lines) if line.strip()]


def is_under(path, root):
    """`path` is `root` or below it, by whole path components (/a/bc is not under /a/b)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def mounts_under(mounts, root):
    """The mounts at or below `root`, as (mount point, entries topmost first), deepest mount point first."""
    stacks = {}
    for mount in mounts:
        if is_under(mount.mount_point, root):
            stacks.setdefault(mount.mount_point, []).append(mount)
    for entries in stacks.values():
        entries.sort(key=lambda m: m.order, reverse=True)
    return sorted(stacks.items(), key=lambda item: (-depth(item[0]), -item[1][0].order))


def depth(path):
    return len([part for part in path.split("/") if part])


# --- the root ----------------------------------------------------------------------------------------------------

def check_root(root):
    """The normalised root, or ValueError: absolute, no "..", not / nor a system directory, no symlink on the way."""
    if not root or not os.path.isabs(root):
        raise ValueError(f"--root must be an absolute path, got {root!r}")
    if ".." in root.split("/"):
        raise ValueError(f"--root must not contain '..': {root}")
    normal = os.path.normpath(root)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if normal == "/":
        raise ValueError("refusing to clean up /")
    if normal in SYSTEM_DIRS or any(is_under(normal, tree) for tree in SYSTEM_TREES):
        raise ValueError(f"refusing to clean up the system directory {normal}")
    check_no_symlink(normal)
    return normal


def check_no_symlink(path):
    """lstat every component of `path`: a symlink is refused, naming it. Stops at the first missing component."""
    current = ""
    for part in path.strip("/").split("/"):
        current += "/" + part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno in BROKEN_ERRNOS:
                return  # a dead mount on the way: nothing below it can be a symlink we would follow
            raise ValueError(f"cannot check --root component {current}: {err.strerror}") from err
        if stat.S_ISLNK(mode):
            raise ValueError(f"--root passes through the symlink {current} -> {os.readlink(current)}; "
                             "give the real path")


def root_exists(root):
    """Whether `root` exists; a dead mount on it (lstat fails with a corrupted-mount errno) counts as existing."""
    try:
        os.lstat(root)
        return True
    except FileNotFoundError:
        return False
    except OSError as err:
        if err.errno in BROKEN_ERRNOS:
            return True
        raise ValueError(f"cannot look at --root {root}: {err.strerror}") from err


# --- stat and umount under a timeout ------------------------------------------------------------------------------

class TimedCall:
    """`fn(*args)` in a daemon thread, so a call stuck in a wedged FUSE mount never holds the command (nor its exit)."""

    def __init__(self, fn, *args):
        self.value, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self.thread.start()

    def _run(self, fn, args):
        try:
            self.value = fn(*args)
        except BaseException as err:  # handed to the caller by wait()
            self.error = err

    def wait(self, deadline):
        """(finished, value, error) once the call returns or the monotonic `deadline` passes."""
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive():
            return False, None, None
        return True, self.value, self.error


def probe_all(points, timeout):
    """stat every mount point at once, waiting at most `timeout` in all: {point: Health}."""
    calls = {point: TimedCall(os.stat, point) for point in points}
    deadline = time.monotonic() + timeout
    return {point: health(call.wait(deadline), timeout) for point, call in calls.items()}


def probe(point, timeout):
    return probe_all([point], timeout)[point]


def health(outcome, timeout):
    """A stat outcome -> Health: a corrupted-mount errno or a timeout is broken; any other answer is not."""
    finished, _, error = outcome
    if not finished:
        return Health(True, f"stat timed out after {timeout:g}s")
    if isinstance(error, OSError) and error.errno in BROKEN_ERRNOS:
        return Health(True, os.strerror(error.errno))
    if isinstance(error, OSError):
        return Health(False, f"stat: {os.strerror(error.errno) if error.errno else error}")
    if error is not None:
        raise error
    return Health(False, "")


_libc = None


def umount2(path, flags):
    """umount2(2) through libc; returns 0 or the errno."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.umount2(os.fsencode(path), ctypes.c_int(flags)) == 0:
        return 0
    return ctypes.get_errno()


def detach(path, timeout):
    """Lazily detach the topmost mount at `path`, never following a symlink there: (ok, errno text). EINVAL and
    ENOENT (not a mount point, or no longer there) are ok too; mountinfo has the last word afterwards."""
    finished, code, error = TimedCall(umount2, path, MNT_DETACH | UMOUNT_NOFOLLOW).wait(time.monotonic() + timeout)
    if not finished:
        return False, f"umount timed out after {timeout:g}s"
    if error is not None:
        return False, str(error)
    if code == 0:
        return True, ""
    return code in NOT_MOUNTED_ERRNOS, os.strerror(code)


# --- empty directories --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Leftovers:
    """What the directory pass did: directories removed (or that would be), files kept, directories unreadable."""

    removed_dirs: list = dataclasses.field(default_factory=list)
    kept_files: list = dataclasses.field(default_factory=list)
    unreadable: list = dataclasses.field(default_factory=list)


def remove_empty_dirs(root, mounted, assume_empty=(), dry_run=False):
    """Remove the empty directories below `root`, deepest first; `root` itself stays. Walks by directory file
    descriptors opened with O_NOFOLLOW, so no symlink is ever followed. A mount point in `mounted` is neither
    entered nor removed; one in `assume_empty` (a dry run's would-be-detached mounts) counts as an empty directory."""
    out = Leftovers()
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as err:
        out.unreadable.append({"path": root, "error": err.strerror})
        return out
    try:
        sweep(fd, root, set(mounted), set(assume_empty), dry_run, out)
    finally:
        os.close(fd)
    return out


def sweep(dir_fd, path, mounted, assume_empty, dry_run, out):
    """One directory of remove_empty_dirs; True when it is (or would be) empty afterwards."""
    try:
        with os.scandir(dir_fd) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        out.unreadable.append({"path": path, "error": err.strerror})
        return False
    empty = True
    for entry in entries:
        child = os.path.join(path, entry.name)
        if child in mounted:
            empty = False
            continue
        if child not in assume_empty and not entry.is_dir(follow_symlinks=False):
            out.kept_files.append(child)
            empty = False
            continue
        emptied = child in assume_empty or sweep_child(dir_fd, entry.name, child, mounted, assume_empty, dry_run, out)
        if emptied and remove_dir(dir_fd, entry.name, child, dry_run, out):
            out.removed_dirs.append(child)
        else:
            empty = False
    return empty


def sweep_child(dir_fd, name, path, mounted, assume_empty, dry_run, out):
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as err:
        out.unreadable.append({"path": path, "error": err.strerror})
        return False
    try:
        return sweep(fd, path, mounted, assume_empty, dry_run, out)
    finally:
        os.close(fd)


def remove_dir(dir_fd, name, path, dry_run, out):
    if dry_run:
        return True
    try:
        os.rmdir(name, dir_fd=dir_fd)
        return True
    except OSError as err:  # raced with a new file or mount: keep it
        out.unreadable.append({"path": path, "error": f"rmdir: {err.strerror}"})
        return False


# --- the whole pass -----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    """What one cleanup-mounts run did, gathered as it goes; report() turns it into the command's Report."""

    root: str
    dry_run: bool = False
    stale_only: bool = False
    missing: bool = False
    detached: list = dataclasses.field(default_factory=list)
    kept: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)
    leftovers: Leftovers = dataclasses.field(default_factory=Leftovers)

    @property
    def verbs(self):
        """What was done to mounts and directories, or would be in a dry run."""
        return ("would detach", "would remove") if self.dry_run else ("detached", "removed")

    def report(self):
        """One finding per mount, directory and file (each entry in its details), and the root's; the tally
        counts them."""
        detached, removed = self.verbs
        # The root's own finding, silent: the tally speaks of it.
        findings = [Finding(self.root, OK, "ok", "does not exist, nothing to do" if self.missing else "present")]
        findings += [Finding(m["mount_point"], OK, detached.replace(" ", "-"), f"{detached} ({describe(m)})", m)
                     for m in self.detached]
        findings += [Finding(m["mount_point"], OK, "kept", f"kept ({describe(m)})", m) for m in self.kept]
        findings += [Finding(m["mount_point"], ERROR, "detach-failed",
                             f"could not detach ({m['fs_type']} {m['source']}): {m['error']}", m) for m in self.failed]
        findings += [Finding(d, OK, removed.replace(" ", "-"), f"{removed} empty directory")
                     for d in self.leftovers.removed_dirs]
        findings += [Finding(f, OK, "kept-file", "kept file") for f in self.leftovers.kept_files]
        findings += [Finding(u["path"], WARNING, "unreadable", f"kept directory ({u['error']})")
                     for u in self.leftovers.unreadable]
        return Report(CHECK, findings, tally=self.tally())

    def tally(self):
        if self.missing:
            return f"{self.root} does not exist, nothing to do"
        detached, removed = self.verbs
        parts = [f"{detached} {count(len(self.detached), 'mount')}"]
        if self.stale_only:
            parts.append(f"kept {count(len(self.kept), 'mount')} not stale")
        parts += [f"{removed} {count(len(self.leftovers.removed_dirs), 'empty directory', 'empty directories')}",
                  f"kept {count(len(self.leftovers.kept_files), 'file')}"]
        return f"{'dry run, ' if self.dry_run else ''}{self.root}: {', '.join(parts)}"


def count(number, singular, plural=None):
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def describe(entry):
    """"fuse.hf3fs hf3fs.ipoib, stale: Transport endpoint is not connected" for an action line."""
    parts = [f"{entry['fs_type']} {entry['source']}"]
    if entry.get("stale"):
        parts.append(f"stale: {entry['stale']}")
    if entry.get("note"):
        parts.append(entry["note"])
    return ", ".join(parts)


def mount_entry(mount, **extra):
    return {"mount_point": mount.mount_point, "fs_type": mount.fs_type, "source": mount.source,
            "mount_id": mount.mount_id, **extra}


def cleanup(root, stale_only=False, dry_run=False, timeout=5.0, mountinfo=MOUNTINFO):
    """Detach the (stale, with `stale_only`) mounts at or below `root` deepest first, then remove the empty
    directories. Passes repeat while they make progress: a mount hidden below another one stacked on a parent
    directory can only be reached once that one is gone. ValueError for a root it must not touch."""
    root = check_root(root)
    result = Outcome(root=root, dry_run=dry_run, stale_only=stale_only)
    if not root_exists(root):
        result.missing = True
        return result.report()
    if dry_run:
        return plan(root, result, mountinfo, timeout).report()
    for _ in range(MAX_PASSES):
        settled = {e["mount_id"] for e in result.kept}
        stacks = mounts_under([m for m in read_mountinfo(mountinfo) if m.mount_id not in settled], root)
        result.failed = []
        if not stacks:
            break
        progress = reconcile(detach_pass(stacks, result, stale_only, timeout), result, stale_only, mountinfo)
        if not result.failed or not progress:
            break
    remaining = {m.mount_point for m in read_mountinfo(mountinfo) if is_under(m.mount_point, root)}
    result.leftovers = remove_empty_dirs(root, remaining)
    return result.report()


def plan(root, result, mountinfo, timeout):
    """The dry run: what one pass would detach and keep, and the directories that would then be empty."""
    stacks = mounts_under(read_mountinfo(mountinfo), root)
    states = probe_all([point for point, _ in stacks], timeout)
    for point, entries in stacks:
        if result.stale_only and not states[point].broken:
            keep_stack(entries, states[point], result)
        else:
            result.detached.extend(mount_entry(m, **health_fields(states[point])) for m in entries)
    kept_points = {m["mount_point"] for m in result.kept}
    would_go = {m["mount_point"] for m in result.detached}
    result.leftovers = remove_empty_dirs(root, kept_points, would_go, dry_run=True)
    return result


def detach_pass(stacks, result, stale_only, timeout):
    """One pass over the mount points, deepest first: [(mount, health fields, ok, errno text)] for each detach
    tried. Healthy mounts kept under `stale_only` go straight to result.kept."""
    states = probe_all([point for point, _ in stacks], timeout)
    attempts = []
    for point, entries in stacks:
        attempts += detach_stack(point, entries, states[point], result, stale_only, timeout)
    return attempts


def detach_stack(point, entries, state, result, stale_only, timeout):
    """Detach the mounts stacked at one point, topmost first, until none is left (`stale_only`: until the one
    on top is healthy, which keeps it and those below it)."""
    attempts = []
    for index, mount in enumerate(entries):
        if index:
            state = probe(point, timeout)
        if stale_only and not state.broken:
            keep_stack(entries[index:], state, result)
            break
        ok, text = detach(point, timeout)
        attempts.append((mount, health_fields(state), ok, text))
        if not ok:
            break
    return attempts


def keep_stack(entries, state, result):
    """A healthy mount on top, under --stale-only: it and the ones stacked below it stay."""
    top, *below = entries
    result.kept.append(mount_entry(top, note=state.reason or "healthy"))
    result.kept.extend(mount_entry(mount, note="below a healthy mount") for mount in below)


def health_fields(state):
    if state.broken:
        return {"stale": state.reason}
    return {"note": state.reason} if state.reason else {}


def reconcile(attempts, result, stale_only, mountinfo):
    """Read mountinfo again: a mount tried and gone is detached (also when its own umount failed but its parent's
    took it along); one still listed is a failure for now, and so, without `stale_only`, is any other mount
    still under the root. Returns whether this pass detached anything."""
    left = [m for m in read_mountinfo(mountinfo) if is_under(m.mount_point, result.root)]
    left_ids = {m.mount_id for m in left}
    for mount, fields, ok, text in attempts:
        if mount.mount_id not in left_ids:
            note = {} if ok else {"note": f"detached with its parent mount ({text})"}
            result.detached.append(mount_entry(mount, **fields, **note))
        else:
            error = text if not ok else (f"still mounted (umount2: {text})" if text else "still mounted")
            result.failed.append(mount_entry(mount, **fields, error=error))
    if not stale_only:
        known = {e["mount_id"] for e in result.failed + result.kept}
        result.failed.extend(mount_entry(m, error="still mounted") for m in left if m.mount_id not in known)
    return any(m.mount_id not in left_ids for m, *_ in attempts)
