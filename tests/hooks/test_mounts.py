"""cleanup-mounts against real mounts: FUSE daemons killed with SIGKILL (the dead mount a worker pod leaves on its
node), tmpfs and bind mounts, all under pytest's tmp_path and detached again whatever a test does."""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import types

import pytest

from dynamo_hooks import cli, mounts
from testbed.fusefs import FILE_DATA, FILE_NAME, FuseServer, mounted_at
from tests.timing import SLACK

SCRIPT = str(pathlib.Path(sys.executable).with_name("dynamo-hooks"))
ENOTCONN_TEXT = os.strerror(errno.ENOTCONN)


# --- fixtures: real mounts, always detached afterwards ------------------------------------------------------------

def detach_everything_under(path):
    for _ in range(mounts.MAX_PASSES):
        stacks = mounts.mounts_under(mounts.read_mountinfo(), str(path))
        if not stacks:
            return
        for point, entries in stacks:
            for _entry in entries:
                mounts.detach(point, 5.0)
    subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True)


@pytest.fixture
def scratch(tmp_path, fuse_servers):
    """tmp_path, with every mount below it lazily detached at the end, whatever the test did."""
    yield tmp_path
    detach_everything_under(tmp_path)
    assert not mounts.mounts_under(mounts.read_mountinfo(), str(tmp_path))


@pytest.fixture
def root(scratch):
    path = scratch / "dynamo-3fs-mount"
    path.mkdir()
    return path


def fuse(fuse_servers, path, subtype="testfs"):
    server = FuseServer(path, subtype=subtype)
    fuse_servers.append(server)
    return server.start()


def dead_fuse(fuse_servers, path, subtype="testfs"):
    """A FUSE mount whose daemon was killed: still listed, every stat fails with ENOTCONN."""
    fuse(fuse_servers, path, subtype).kill()
    return str(path)


def mount(*argv):
    subprocess.run(["mount", *map(str, argv)], check=True, capture_output=True)


def tmpfs(path, source="tmpfs-src"):
    os.makedirs(path, exist_ok=True)
    mount("-t", "tmpfs", source, path)
    return str(path)


def bind(source, path):
    os.makedirs(path, exist_ok=True)
    mount("--bind", source, path)
    return str(path)


def points_under(path):
    return [m.mount_point for m in mounts.read_mountinfo() if mounts.is_under(m.mount_point, str(path))]


def seen(report):
    """What a cleanup-mounts Report says, by kind: the mounts' entries, the directories and the files."""
    def by(*reasons):
        return [f for f in report.findings if f.reason in reasons]
    return types.SimpleNamespace(
        ok=report.ok, report=report, detached=[f.details for f in by("detached", "would-detach")],
        kept=[f.details for f in by("kept")], failed=[f.details for f in by("detach-failed")],
        removed_dirs=[f.peer for f in by("removed", "would-remove")], kept_files=[f.peer for f in by("kept-file")])


def printed(result, capsys):
    """The lines dynamo-hooks prints for the report."""
    capsys.readouterr()
    cli.finish([result.report], as_json=False)
    return capsys.readouterr().out.splitlines()


def run_cli(capsys, *argv):
    status = cli.main(["cleanup-mounts", *map(str, argv)])
    out = capsys.readouterr()
    return status, out.out.splitlines(), out.err.splitlines()


# --- killed and healthy FUSE mounts -------------------------------------------------------------------------------

def test_a_killed_fuse_mount_is_detached_and_its_directory_removed(fuse_servers, scratch, root, capsys):
    point = dead_fuse(fuse_servers, root / "worker-0", subtype="hf3fs")
    with pytest.raises(OSError) as stat_error:
        os.stat(point)
    assert stat_error.value.errno == errno.ENOTCONN
    assert mounted_at(point) and not os.path.ismount(point)  # ismount hides it: mountinfo is the truth

    result = seen(mounts.cleanup(str(root)))

    assert result.ok and result.detached == [{"mount_point": point, "fs_type": "fuse.hf3fs",
                                              "source": "testfs-source", "mount_id": result.detached[0]["mount_id"],
                                              "stale": ENOTCONN_TEXT}]
    assert result.removed_dirs == [point]
    assert not mounted_at(point) and not os.path.lexists(point) and root.is_dir()
    assert printed(result, capsys) == [
        f"ok: cleanup-mounts {point}: detached (fuse.hf3fs testfs-source, stale: {ENOTCONN_TEXT})",
        f"ok: cleanup-mounts {point}: removed empty directory",
        f"cleanup-mounts: ok ({root}: detached 1 mount, removed 1 empty directory, kept 0 files)"]


def test_stale_only_detaches_the_dead_mount_and_leaves_a_healthy_one_beside_it(fuse_servers, scratch, root):
    dead = dead_fuse(fuse_servers, root / "worker-0")
    healthy = str(fuse(fuse_servers, root / "worker-1").mountpoint)

    result = seen(mounts.cleanup(str(root), stale_only=True))

    assert result.ok
    assert [(m["mount_point"], m["stale"]) for m in result.detached] == [(dead, ENOTCONN_TEXT)]
    assert [(m["mount_point"], m["note"]) for m in result.kept] == [(healthy, "healthy")]
    assert mounted_at(healthy) and (pathlib.Path(healthy) / FILE_NAME).read_bytes() == FILE_DATA
    assert not os.path.lexists(dead) and result.removed_dirs == [dead]
    assert result.report.summary() == (f"cleanup-mounts: ok ({root}: detached 1 mount, kept 1 mount not stale, "
                                       "removed 1 empty directory, kept 0 files)")


def test_a_wedged_fuse_daemon_does_not_hang_the_command(fuse_servers, scratch, root):
    server = fuse(fuse_servers, root / "wedged")
    server.process.send_signal(signal.SIGSTOP)  # stat now blocks until the daemon answers

    started = time.monotonic()
    result = seen(mounts.cleanup(str(root), stale_only=True, timeout=0.5))

    assert time.monotonic() - started < 0.5 + SLACK
    assert result.ok and [m["stale"] for m in result.detached] == ["stat timed out after 0.5s"]
    assert not mounted_at(server.mountpoint)


# --- nested, stacked, hidden, escaped and many mounts -------------------------------------------------------------

def test_nested_mounts_are_detached_deepest_first(fuse_servers, scratch, root):
    node = tmpfs(root / "node", "node-tmpfs")
    kv = dead_fuse(fuse_servers, root / "node" / "kv")
    (scratch / "data").mkdir()
    bound = bind(scratch / "data", root / "node" / "cache" / "bound")

    result = seen(mounts.cleanup(str(root)))

    assert result.ok
    assert [m["mount_point"] for m in result.detached] == [bound, kv, node]
    assert points_under(root) == [] and list(root.iterdir()) == []
    assert (scratch / "data").is_dir()


def test_stacked_mounts_at_one_point_are_all_detached(scratch, root):
    point = tmpfs(root / "stacked", "bottom")
    tmpfs(point, "middle")
    tmpfs(point, "top")

    result = seen(mounts.cleanup(str(root)))

    assert result.ok and [m["source"] for m in result.detached] == ["top", "middle", "bottom"]
    assert not mounted_at(point) and not os.path.lexists(point)


def test_a_mount_hidden_below_one_stacked_on_its_parent_goes_in_a_second_pass(fuse_servers, scratch, root):
    hidden = dead_fuse(fuse_servers, root / "a" / "kv")
    tmpfs(root / "a", "over-parent")  # hides the FUSE mount: its path now resolves into this tmpfs

    result = seen(mounts.cleanup(str(root)))

    assert result.ok and [m["mount_point"] for m in result.detached] == [str(root / "a"), hidden]
    assert points_under(root) == []


def test_a_mount_on_the_root_itself(fuse_servers, scratch, root):
    tmpfs(root, "root-tmpfs")
    dead = dead_fuse(fuse_servers, root / "worker-0")

    kept = seen(mounts.cleanup(str(root), stale_only=True))
    assert kept.ok and [m["mount_point"] for m in kept.detached] == [dead]
    assert [m["mount_point"] for m in kept.kept] == [str(root)] and mounted_at(root) and list(root.iterdir()) == []

    dead_fuse(fuse_servers, root)  # now a dead FUSE mount on top of it: lstat of the root itself fails with ENOTCONN
    gone = seen(mounts.cleanup(str(root)))
    assert gone.ok and [m["source"] for m in gone.detached] == ["testfs-source", "root-tmpfs"]
    assert points_under(root) == [] and root.is_dir()


def test_mount_points_with_spaces_tabs_newlines_and_backslashes(fuse_servers, scratch, root):
    spaced = dead_fuse(fuse_servers, root / "kv cache")
    odd = tmpfs(root / "tab\there\nnew\\line", "odd src")
    raw = pathlib.Path("/proc/self/mountinfo").read_text()
    assert "/kv\\040cache " in raw and "/tab\\011here\\012new\\134line " in raw and " odd\\040src " in raw

    result = seen(mounts.cleanup(str(root)))

    assert result.ok and sorted(m["mount_point"] for m in result.detached) == sorted([spaced, odd])
    assert {m["source"] for m in result.detached} == {"testfs-source", "odd src"}
    assert list(root.iterdir()) == []


def test_twenty_mounts(scratch, root):
    (scratch / "shared").mkdir()
    made = [tmpfs(root / f"tmpfs-{i:02}", f"t{i}") for i in range(10)]
    made += [bind(scratch / "shared", root / "binds" / f"bind-{i:02}") for i in range(10)]

    result = seen(mounts.cleanup(str(root)))

    assert result.ok and sorted(m["mount_point"] for m in result.detached) == sorted(made)
    assert points_under(root) == [] and list(root.iterdir()) == []


# --- what is not a mount ------------------------------------------------------------------------------------------

def test_a_clean_root_twice(root, capsys):
    (root / "a" / "b" / "c").mkdir(parents=True)

    status, out, err = run_cli(capsys, "--root", root)
    assert (status, err) == (0, [])
    assert out == [f"ok: cleanup-mounts {root}/a/b/c: removed empty directory",
                   f"ok: cleanup-mounts {root}/a/b: removed empty directory",
                   f"ok: cleanup-mounts {root}/a: removed empty directory",
                   f"cleanup-mounts: ok ({root}: detached 0 mounts, removed 3 empty directories, kept 0 files)"]

    status, out, err = run_cli(capsys, "--root", root)
    assert (status, err) == (0, [])
    assert out == [f"cleanup-mounts: ok ({root}: detached 0 mounts, removed 0 empty directories, kept 0 files)"]
    assert root.is_dir()


def test_a_missing_root_is_nothing_to_do(scratch, capsys):
    status, out, err = run_cli(capsys, "--root", scratch / "gone")
    assert (status, out, err) == (0, [f"cleanup-mounts: ok ({scratch}/gone does not exist, nothing to do)"], [])


def test_a_symlink_inside_the_root_is_never_followed(scratch, root):
    outside = tmpfs(scratch / "outside", "outside-src")
    (pathlib.Path(outside) / "weights.bin").write_bytes(b"weights")
    (pathlib.Path(outside) / "empty").mkdir()
    (root / "link").symlink_to(outside)
    (root / "deep").mkdir()
    (root / "deep" / "to-file").symlink_to(pathlib.Path(outside) / "weights.bin")
    (root / "loop").symlink_to(root)

    result = seen(mounts.cleanup(str(root)))

    assert result.ok and result.detached == [] and result.removed_dirs == []
    assert result.kept_files == [f"{root}/deep/to-file", f"{root}/link", f"{root}/loop"]
    assert mounted_at(outside)
    assert (pathlib.Path(outside) / "weights.bin").read_bytes() == b"weights"
    assert (pathlib.Path(outside) / "empty").is_dir()


def test_a_symlink_where_a_mount_was_listed_is_not_followed(scratch, root):
    """mountinfo read a moment before a mount point under the root was detached and a symlink to a mount
    outside put in its place: the detach works on the path itself (UMOUNT_NOFOLLOW), never on the target."""
    outside = tmpfs(scratch / "outside", "outside-src")
    (root / "worker-0").symlink_to(outside)
    listing = scratch / "mountinfo"
    listing.write_text(pathlib.Path(mounts.MOUNTINFO).read_text()
                       + f"99999 1 0:999 / {root}/worker-0 rw,relatime - fuse.hf3fs hf3fs.ipoib rw\n")

    result = seen(mounts.cleanup(str(root), mountinfo=str(listing)))

    assert mounted_at(outside)
    assert (root / "worker-0").is_symlink()
    # Still listed in the stale copy of mountinfo, so reported as not detached, not silently passed.
    assert [m["mount_point"] for m in result.failed] == [f"{root}/worker-0"]


def test_files_are_kept_and_reported(fuse_servers, scratch, root, capsys):
    dead = dead_fuse(fuse_servers, root / "worker-0")
    (root / "notes.txt").write_text("keep me")
    (root / "model-cache" / "empty-sub").mkdir(parents=True)
    (root / "model-cache" / "weights.bin").write_bytes(b"w")
    beside = scratch / "model-cache"
    (beside / "empty").mkdir(parents=True)
    (beside / "config.json").write_text("{}")

    result = seen(mounts.cleanup(str(root)))

    assert result.ok and [m["mount_point"] for m in result.detached] == [dead]
    assert result.kept_files == [f"{root}/model-cache/weights.bin", f"{root}/notes.txt"]
    assert result.removed_dirs == [f"{root}/model-cache/empty-sub", dead]
    assert (root / "notes.txt").read_text() == "keep me" and (root / "model-cache" / "weights.bin").read_bytes() == b"w"
    assert (beside / "empty").is_dir() and (beside / "config.json").read_text() == "{}"
    assert f"ok: cleanup-mounts {root}/notes.txt: kept file" in printed(result, capsys)


# --- refusals -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "relative/dir", "", "/tmp", "/var", "/var/", "//etc", "/usr/", "/mnt",
                                  "/home", "/proc/self", "/sys/fs/cgroup", "/dev/shm", "/tmp/x/../../etc"])
def test_refused_roots_exit_2_with_one_line(path, capsys):
    status, out, err = run_cli(capsys, "--root", path)
    assert status == 2 and out == [] and len(err) == 1
    assert err[0].startswith("dynamo-hooks cleanup-mounts: ")


def test_a_root_through_a_symlink_is_refused_naming_it(scratch, capsys):
    real = tmpfs(scratch / "real" / "root", "real-src")
    (scratch / "alias").symlink_to(scratch / "real")

    status, out, err = run_cli(capsys, "--root", scratch / "alias" / "root")

    assert status == 2 and len(err) == 1 and f"symlink {scratch}/alias -> {scratch}/real" in err[0]
    assert mounted_at(real)


# --- dry run, JSON, the console script ----------------------------------------------------------------------------

def test_dry_run_changes_nothing(fuse_servers, scratch, root, capsys):
    dead = dead_fuse(fuse_servers, root / "worker-0")
    node = tmpfs(root / "node", "node-src")
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("x")
    before = points_under(root)

    status, out, err = run_cli(capsys, "--root", root, "--dry-run")

    assert (status, err) == (0, [])
    assert out == [f"ok: cleanup-mounts {node}: would detach (tmpfs node-src)",  # same depth: the later mount first
                   f"ok: cleanup-mounts {dead}: would detach (fuse.testfs testfs-source, stale: {ENOTCONN_TEXT})",
                   f"ok: cleanup-mounts {root}/empty: would remove empty directory",
                   f"ok: cleanup-mounts {node}: would remove empty directory",
                   f"ok: cleanup-mounts {dead}: would remove empty directory",
                   f"ok: cleanup-mounts {root}/notes.txt: kept file",
                   f"cleanup-mounts: ok (dry run, {root}: would detach 2 mounts, would remove 3 empty directories, "
                   "kept 1 file)"]
    assert points_under(root) == before and (root / "empty").is_dir()


def test_json_report(fuse_servers, scratch, root, capsys):
    dead = dead_fuse(fuse_servers, root / "worker-0")
    healthy = tmpfs(root / "node", "node-src")
    (root / "notes.txt").write_text("x")

    status, out, err = run_cli(capsys, "--root", root, "--stale-only", "--json")

    report = json.loads("\n".join(out))
    assert (status, err, report["ok"]) == (0, [], True)
    (check,) = report["checks"]
    found = [(f["reason"], f["peer"]) for f in check["findings"]]
    assert found == [("ok", str(root)), ("detached", dead), ("kept", healthy), ("removed", dead),
                     ("kept-file", f"{root}/notes.txt")]
    assert check["findings"][1]["details"]["stale"] == ENOTCONN_TEXT


def test_console_script(fuse_servers, scratch, root):
    dead = dead_fuse(fuse_servers, root / "worker-0", subtype="hf3fs")
    done = subprocess.run([SCRIPT, "cleanup-mounts", f"--root={root}", "--stale-only", "--timeout=2"],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        f"ok: cleanup-mounts {dead}: detached (fuse.hf3fs testfs-source, stale: {ENOTCONN_TEXT})",
        f"ok: cleanup-mounts {dead}: removed empty directory",
        f"cleanup-mounts: ok ({root}: detached 1 mount, kept 0 mounts not stale, removed 1 empty directory, "
        "kept 0 files)"]
    assert not mounted_at(dead)


def test_console_script_fails_on_a_mount_it_cannot_detach(root):
    """In a user namespace the mounts inherited from the parent are locked: umount2 answers EINVAL and they stay."""
    pinned = tmpfs(root / "pinned", "pinned-src")
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", SCRIPT, "cleanup-mounts",
                           f"--root={root}"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"cleanup-mounts {pinned}: could not detach (tmpfs pinned-src): still mounted "
                                        f"(umount2: {os.strerror(errno.EINVAL)})"]
    assert done.stdout == ""
    assert mounted_at(pinned)


# --- mountinfo parsing --------------------------------------------------------------------------------------------

def test_parse_mountinfo_lines_with_escapes():
    line = ("812 27 0:52 / /tmp/dynamo-3fs-mount/kv\\040cache rw,nosuid,nodev,relatime shared:401 master:7 - "
            "fuse.hf3fs hf3fs.ipoib rw,user_id=0,group_id=0,default_permissions,allow_other")
    assert mounts.parse_mountinfo_line(line, order=3) == mounts.Mount(
        mount_id=812, parent_id=27, mount_point="/tmp/dynamo-3fs-mount/kv cache", fs_type="fuse.hf3fs",
        source="hf3fs.ipoib", order=3)
    odd = mounts.parse_mountinfo_line(
        "99 812 0:61 / /mnt/3fs-root/tab\\011here\\012new\\134line rw,relatime - tmpfs my\\040src rw,size=65536k\n")
    assert (odd.mount_point, odd.source, odd.fs_type) == ("/mnt/3fs-root/tab\there\nnew\\line", "my src", "tmpfs")
    no_optional = mounts.parse_mountinfo_line("36 35 98:0 /mnt1 /mnt2 rw,noatime - ext3 /dev/root rw,errors=continue")
    assert (no_optional.mount_point, no_optional.source) == ("/mnt2", "/dev/root")
    with pytest.raises(ValueError, match="unparsable mountinfo line"):
        mounts.parse_mountinfo_line("36 35 98:0 /mnt1 /mnt2 rw,noatime ext3 /dev/root")


def test_mounts_under_takes_whole_components_deepest_first_topmost_first(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text("\n".join([
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
        "40 27 0:40 / /a/b rw - tmpfs bottom rw",
        "41 27 0:41 / /a/bc rw - tmpfs sibling rw",
        "42 40 0:42 / /a/b/c\\040d rw - fuse.hf3fs hf3fs.ipoib rw",
        "43 40 0:43 / /a/b rw - tmpfs top rw",
        "44 43 0:44 / /a/b/e rw - tmpfs e rw",
        "45 27 0:45 / /a/b-x rw - tmpfs dash rw",
    ]) + "\n")
    stacks = mounts.mounts_under(mounts.read_mountinfo(info), "/a/b")
    assert [(point, [m.source for m in entries]) for point, entries in stacks] == [
        ("/a/b/e", ["e"]), ("/a/b/c d", ["hf3fs.ipoib"]), ("/a/b", ["top", "bottom"])]
    assert mounts.is_under("/a/b", "/a/b") and not mounts.is_under("/a/bc", "/a/b")
