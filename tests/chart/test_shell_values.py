"""Values inserted into the shell scripts of privileged containers are inert: with the schema check skipped, a
path holding $(...), a backtick and a quote is used as the literal path it is and runs nothing."""

import subprocess

import pytest
import yaml

from tests.helm import CHART, ROOT, container, helm, one

EVIL = "x$(touch PWNED1)`touch PWNED2`'q\"$(touch PWNED3)"
MARKERS = ("PWNED1", "PWNED2", "PWNED3")


@pytest.fixture
def evil(tmp_path):
    """The ipoib worker rendered without the schema check, with the mount root and the FUSE binary at paths
    full of shell syntax; the binary records that it ran."""
    root = tmp_path / f"root-{EVIL}"
    binary = tmp_path / f"bin-{EVIL}" / "hf3fs_fuse_main"
    binary.parent.mkdir()
    binary.write_text(f"#!/bin/sh\necho ran > {tmp_path}/binary-ran\n")
    binary.chmod(0o755)
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "threefs": {"mountRoot": {"mountPath": str(root)}, "mountSubPath": "3fs",
                    "fuse": {"binary": str(binary), "mountTimeoutSeconds": 5}},
        "kvbm": {"diskCacheDir": f"{root}/3fs/kvbm_cache"}}))
    out = helm(4, "template", "dynamo", str(CHART), "--skip-schema-validation", "-f", str(ROOT / "values/ipoib.yaml"),
               "-f", str(values)).stdout
    worker = one([o for o in yaml.safe_load_all(out) if o], "StatefulSet", "worker")
    return worker, root / "3fs", tmp_path


def no_command_ran(cwd):
    return not any((cwd / m).exists() or (ROOT / m).exists() for m in MARKERS)


def test_the_fuse_client_start_uses_the_literal_paths(evil):
    worker, mountpoint, cwd = evil
    done = subprocess.run(container(worker, "fuse-sidecar")["command"], cwd=cwd, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert mountpoint.is_dir(), "mkdir made the path as written"
    assert (cwd / "binary-ran").read_text() == "ran\n", "exec ran the binary at the path as written"
    assert no_command_ran(cwd)


def test_the_probes_and_the_worker_start_use_the_literal_paths(evil):
    worker, mountpoint, cwd = evil
    probe = container(worker, "fuse-sidecar")["startupProbe"]["exec"]["command"]
    assert subprocess.run(probe, cwd=cwd, capture_output=True, timeout=30).returncode != 0, "nothing is mounted"
    liveness = container(worker, "worker")["livenessProbe"]["exec"]["command"]
    failed = subprocess.run(liveness, cwd=cwd, capture_output=True, text=True, timeout=30)
    assert failed.returncode != 0 and f"3FS mount {mountpoint} is dead or was replaced" in failed.stdout
    script = container(worker, "worker")["command"][2]
    wait = script[script.index("waited=0\nuntil grep -E"):script.index("stat -c %d")]
    done = subprocess.run(["sh", "-ec", wait], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert f"3FS is not mounted at {mountpoint} after 5 s; not starting on the node's disk" in done.stderr
    stop = container(worker, "fuse-sidecar")["lifecycle"]["preStop"]["exec"]["command"]
    assert subprocess.run(stop, cwd=cwd, capture_output=True, timeout=30).returncode == 0
    assert no_command_ran(cwd)
