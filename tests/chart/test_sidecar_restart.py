"""The FUSE client's start and stop, as a worker pod's sidecar and as the node's DaemonSet pod, rendered by
Helm and run by a real shell against a real FUSE mount: a restart after the daemon was killed (the seed's
"Transport endpoint is not connected") mounts again."""

import errno
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from testbed import fusefs
from tests.helm import container, environment_values, one, render


@pytest.fixture(params=["sidecar", "daemonset"])
def sidecar(tmp_path, request):
    """The rendered FUSE client, with the mount root under tmp_path and a FUSE daemon of the tests' own as the
    3FS binary (it mounts a fuse.hf3fs filesystem at the mountpoint and serves it in the foreground)."""
    daemon = tmp_path / "hf3fs_fuse_main"
    mountpoint = tmp_path / "root" / "3fs"
    daemon.write_text(f"#!/bin/sh\nexec {sys.executable} {fusefs.__file__} {mountpoint} hf3fs.ipoib hf3fs\n")
    daemon.chmod(0o755)
    values = {"threefs": {"mode": request.param, "mountRoot": {"mountPath": str(tmp_path / "root")},
                          "fuse": {"binary": str(daemon)}},
              "kvbm": {"diskCacheDir": str(mountpoint / "kvbm_cache")}}
    objects = render(environment_values("ipoib"), values)
    if request.param == "sidecar":
        client = container(one(objects, "StatefulSet", "worker"), "fuse-sidecar")
    else:
        client = container(one(objects, "DaemonSet", "fuse"), "fuse")
    yield client, mountpoint
    while fusefs.mounted_at(mountpoint):
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def start(sidecar_container, mountpoint):
    """Run the sidecar's command as the kubelet would, and wait until its mount appears."""
    before = fusefs.mounts_at(mountpoint)
    process = subprocess.Popen(sidecar_container["command"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    deadline = time.monotonic() + 15
    while not (fusefs.mounts_at(mountpoint) > before or (before and live(mountpoint))):
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the sidecar did not mount"
        time.sleep(0.05)
    return process


def live(mountpoint):
    try:
        return (mountpoint / fusefs.FILE_NAME).read_bytes() == fusefs.FILE_DATA
    except OSError:
        return False


def stat_errno(path, within=5.0):
    """The errno stat fails with, once the kernel's attribute cache of the mount root (1 s) has expired."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.stat(path)
        except OSError as err:
            return err.errno
        time.sleep(0.1)
    return None


def probe(sidecar_container, name):
    command = sidecar_container[name]["exec"]["command"]
    return subprocess.run(command, capture_output=True, timeout=10).returncode


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    process.stdout.close()


def test_restart_after_a_crash_heals_the_dead_mount(sidecar):
    c, mountpoint = sidecar
    first = start(c, mountpoint)
    assert live(mountpoint) and probe(c, "startupProbe") == 0
    kill(first)  # the daemon dies; its mount stays behind, dead
    assert stat_errno(mountpoint) == errno.ENOTCONN
    assert probe(c, "livenessProbe") != 0

    second = start(c, mountpoint)  # the kubelet restarts the sidecar in place
    try:
        assert live(mountpoint)
        assert fusefs.mounts_at(mountpoint) == 1  # the dead mount was detached, not stacked under
        assert probe(c, "livenessProbe") == 0
        output = second.stdout.readline()
        assert output.strip() == f"detaching the mount at {mountpoint}"
    finally:
        kill(second)


def test_prestop_detaches_the_mount(sidecar):
    c, mountpoint = sidecar
    process = start(c, mountpoint)
    try:
        subprocess.run(c["lifecycle"]["preStop"]["exec"]["command"], check=True, capture_output=True, timeout=10)
        assert not fusefs.mounted_at(mountpoint)
        assert pathlib.Path(mountpoint).is_dir()
    finally:
        kill(process)
    # A start with nothing left behind mounts straight away.
    again = start(c, mountpoint)
    try:
        assert live(mountpoint) and fusefs.mounts_at(mountpoint) == 1
    finally:
        kill(again)
