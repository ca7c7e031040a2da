"""The worker's start script, rendered by Helm and run by a real shell: the handoff from the init
container and the disk-tier directory it prepares."""

import os
import subprocess

from tests.helm import container, environment_values, one, render

HANDOFF = "/run/dynamo-offloading"


def worker_script(*values):
    worker = one(render(*values), "StatefulSet", "worker")
    c = container(worker, "worker")
    assert c["command"][:2] == ["/bin/sh", "-ec"]
    return c["command"][2], c["command"][3:], {e["name"]: e.get("value") for e in c["env"]}


def stub_python(directory):
    """A python3 that prints what it was asked to run and the cache directory it was given."""
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "python3"
    stub.write_text('#!/bin/sh\necho "python3 $*"\necho "cache dir $DYN_KVBM_DISK_CACHE_DIR"\n')
    stub.chmod(0o755)
    return bin_dir


def test_start_clears_only_its_own_leftover_cache_files(tmp_path):
    cache = tmp_path / "kvbm"
    script, argv0, env = worker_script(environment_values("standalone"), {"kvbm": {"diskCacheDir": str(cache)}})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "worker.env").write_text("export MODEL_PATH='/models/snapshots/abc'\n")
    own = cache / "dynamo" / "dynamo-dynamo-offloading-worker-0"
    other = cache / "dynamo" / "dynamo-dynamo-offloading-worker-1"
    other.mkdir(parents=True)
    (other / "dynamo-kvbm-disk-cache-Xy12ab").write_text("another worker's cache")
    own.mkdir(parents=True)
    (own / "dynamo-kvbm-disk-cache-a1B2c3").write_bytes(b"\0" * 1024)  # killed mid-allocation
    (own / "notes.txt").write_text("not a cache file")
    cache_dir = env["DYN_KVBM_DISK_CACHE_DIR"].replace("$(POD_NAMESPACE)", "dynamo").replace(
        "$(POD_NAME)", "dynamo-dynamo-offloading-worker-0")
    shell_env = {"PATH": f"{stub_python(tmp_path)}:{os.environ['PATH']}", "DYN_KVBM_DISK_CACHE_DIR": cache_dir}
    done = subprocess.run(["sh", "-ec", script.replace(HANDOFF, str(run_dir)), *argv0, "--extra"],
                          env=shell_env, capture_output=True, text=True, timeout=30, check=True)
    assert sorted(p.name for p in own.iterdir()) == ["notes.txt"]
    assert (other / "dynamo-kvbm-disk-cache-Xy12ab").read_text() == "another worker's cache"
    assert done.stdout.splitlines() == ["python3 -m dynamo.trtllm --model-path=/models/snapshots/abc --extra",
                                        f"cache dir {own}"]


def test_first_start_creates_the_directory(tmp_path):
    script, argv0, env = worker_script(environment_values("standalone"), {"kvbm": {"diskCacheDir": str(tmp_path)}})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "worker.env").write_text("export MODEL_PATH=/m\n")
    cache_dir = tmp_path / "ns" / "w-0"
    shell_env = {"PATH": f"{stub_python(tmp_path)}:{os.environ['PATH']}", "DYN_KVBM_DISK_CACHE_DIR": str(cache_dir)}
    subprocess.run(["sh", "-ec", script.replace(HANDOFF, str(tmp_path / "run")), *argv0],
                   env=shell_env, capture_output=True, text=True, timeout=30, check=True)
    assert cache_dir.is_dir() and not list(cache_dir.iterdir())
