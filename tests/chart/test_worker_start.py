"""The worker's start, rendered by Helm and run by a real shell: the request to the resolve sidecar (a real
`dynamo-hooks worker-init --serve` against real etcd and NATS, resolving through the FAKE Kubernetes API),
the wait for a live 3FS mount (a real FUSE mount), and the disk-tier directory it prepares."""

import contextlib
import os
import pathlib
import subprocess
import threading
import time

import pytest

from testbed import fusefs, servers
from testbed.fake_kube_api import endpoint, endpoint_slice
from tests.helm import ROOT, container, environment_values, one, render
from tests.hooks.cluster import fake_api, publish
from tests.hooks.test_model_path import MAIN, write_cache

HANDOFF = "/run/dynamo-offloading"
DYNAMO_HOOKS = ROOT / ".venv" / "bin" / "dynamo-hooks"


def worker_script(*values):
    return worker_script_of(one(render(*values), "StatefulSet", "worker"))


def worker_script_of(worker):
    """The start script, the arguments after it, and the plain env values of the worker container."""
    c = container(worker, "worker")
    assert c["command"][:2] == ["/bin/sh", "-ec"]
    return c["command"][2], c["command"][3:], {e["name"]: e.get("value") for e in c["env"]}


def stub_python(directory):
    """A python3 that prints what it was asked to run, the addresses and the cache directory it was given."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "python3"
    stub.write_text('#!/bin/sh\necho "python3 $*"\necho "etcd $ETCD_ENDPOINTS"\n'
                    'echo "cache dir $DYN_KVBM_DISK_CACHE_DIR"\n')
    stub.chmod(0o755)
    return bin_dir


@contextlib.contextmanager
def answering(run_dir, env_lines="export MODEL_PATH=/models/snapshots/abc\n"):
    """A stand-in for the resolve sidecar that answers every request with the same addresses (the real one
    is exercised in test_each_start_resolves_again)."""
    stop = threading.Event()

    def answer():
        answered = None
        while not stop.is_set():
            request = run_dir / "resolve-request"
            token = request.read_text().strip() if request.exists() else None
            if token and token != answered:
                (run_dir / "worker.env").write_text(f"{env_lines}# answer: {token}\n")
                answered = token
            time.sleep(0.05)

    (run_dir / "worker.env").write_text(env_lines)
    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_start(script, argv0, run_dir, env, *args, timeout=30):
    return subprocess.run(["sh", "-ec", script.replace(HANDOFF, str(run_dir)), *argv0, *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_start_clears_only_its_own_leftover_cache_files(tmp_path):
    cache = tmp_path / "kvbm"
    script, argv0, env = worker_script(environment_values("standalone"), {"kvbm": {"diskCacheDir": str(cache)}})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
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
    with answering(run_dir):
        done = run_start(script, argv0, run_dir, shell_env, "--extra")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in own.iterdir()) == ["notes.txt"]
    assert (other / "dynamo-kvbm-disk-cache-Xy12ab").read_text() == "another worker's cache"
    assert done.stdout.splitlines() == ["python3 -m dynamo.trtllm --model-path=/models/snapshots/abc --extra",
                                        "etcd ", f"cache dir {own}"]


def test_first_start_creates_the_directory(tmp_path):
    script, argv0, env = worker_script(environment_values("standalone"), {"kvbm": {"diskCacheDir": str(tmp_path)}})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cache_dir = tmp_path / "ns" / "w-0"
    shell_env = {"PATH": f"{stub_python(tmp_path)}:{os.environ['PATH']}", "DYN_KVBM_DISK_CACHE_DIR": str(cache_dir)}
    with answering(run_dir):
        assert run_start(script, argv0, run_dir, shell_env).returncode == 0
    assert cache_dir.is_dir() and not list(cache_dir.iterdir())


def test_a_failed_resolution_fails_the_start_with_its_reason(tmp_path):
    script, argv0, _ = worker_script(environment_values("standalone"), {"kvbm": {"diskCacheDir": str(tmp_path)}})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "worker.env").write_text("export MODEL_PATH=/m\n")

    def fail_the_request():
        request = run_dir / "resolve-request"
        while not request.exists():
            time.sleep(0.05)
        token = request.read_text().strip()
        (run_dir / "worker.env").write_text(f"export MODEL_PATH=/m\n# failed: {token}: etcd baseten/etcd: refused\n")

    threading.Thread(target=fail_the_request, daemon=True).start()
    done = run_start(script, argv0, run_dir, {"PATH": f"{stub_python(tmp_path)}:{os.environ['PATH']}"})
    assert done.returncode == 1
    assert done.stderr.strip() == "etcd baseten/etcd: refused"
    assert "python3" not in done.stdout


# --- the real resolve sidecar


def resolve_command(worker, run_dir, hf_home):
    """The resolve sidecar's command as rendered, with the pod's paths mapped to the test's directories."""
    c = container(worker, "resolve")
    args = []
    for arg in c["args"]:
        if arg.startswith("--record-dir="):
            continue  # the mounted record: not needed while the API answers
        arg = arg.replace(HANDOFF, str(run_dir))
        args.append(f"--hf-home={hf_home}" if arg.startswith("--hf-home=") else arg)
    return [str(DYNAMO_HOOKS), *args]


def wait_for_file(path, process, within=30.0):
    deadline = time.monotonic() + within
    while not (path.exists() and path.stat().st_size):
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.05)


def test_each_start_resolves_again(monkeypatch, tmp_path, etcd, nats):
    """etcd's pods move while the worker runs: the worker loses its lease and its container restarts (the pod
    stays, so no init container would run again). The next start gets the new address."""
    values = {"threefs": {"enabled": False}, "kvbm": {"diskCacheGB": 0},
              "hooks": {"timeoutSeconds": 1, "workerInit": {"waitSeconds": 20}}}
    worker = one(render(environment_values("ipoib"), values), "StatefulSet", "worker")
    script, argv0, _ = worker_script_of(worker)
    run_dir, hf_home = tmp_path / "run", tmp_path / "hf"
    run_dir.mkdir()
    write_cache(hf_home)
    probe = [a.replace(HANDOFF, str(run_dir)) for a in container(worker, "resolve")["startupProbe"]["exec"]["command"]]
    assert subprocess.run(probe).returncode != 0  # no handoff yet: the worker is held
    with fake_api(monkeypatch, tmp_path) as api, servers.etcd_server(tmp_path / "moved") as moved:
        publish(api, "baseten", "etcd-headless", etcd.port)
        publish(api, "baseten", "nats-headless", nats.port)
        sidecar = subprocess.Popen(resolve_command(worker, run_dir, hf_home), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, env={**os.environ, "POD_NAMESPACE": "dynamo"})
        try:
            wait_for_file(run_dir / "worker.env", sidecar)
            assert subprocess.run(probe).returncode == 0  # the kubelet now starts the worker
            shell_env = {"PATH": f"{stub_python(tmp_path)}:{os.environ['PATH']}"}
            first = run_start(script, argv0, run_dir, shell_env)
            assert first.returncode == 0, first.stderr
            assert f"etcd http://127.0.0.1:{etcd.port}" in first.stdout.splitlines()
            assert f"--model-path={hf_home}/hub/models--Qwen--Qwen3-8B/snapshots/{MAIN}" in first.stdout

            for namespace, name in list(api.objects["endpointslices"]):
                if name.startswith("etcd-headless-"):
                    api.delete("endpointslices", namespace, name)
            api.add_endpoint_slice(endpoint_slice("baseten", "etcd-headless", [endpoint("127.0.0.1")],
                                                  ports=(("client", moved.port),), name="etcd-headless-fghij"))
            second = run_start(script, argv0, run_dir, shell_env)
            assert second.returncode == 0, second.stderr
            assert f"etcd http://127.0.0.1:{moved.port}" in second.stdout.splitlines()
        finally:
            sidecar.terminate()
            sidecar.wait(timeout=10)
            sidecar.stdout.close()


# --- the 3FS mount


@pytest.fixture
def on_threefs(tmp_path):
    """The ipoib worker with the mount root and the cache under tmp_path, and a short mount timeout."""
    root = tmp_path / "root"
    mountpoint = root / "3fs"
    mountpoint.mkdir(parents=True)
    values = {"threefs": {"mountRoot": {"mountPath": str(root)}, "fuse": {"mountTimeoutSeconds": 5}},
              "kvbm": {"diskCacheDir": str(mountpoint / "kvbm_cache")}}
    objects = render(environment_values("ipoib"), values)
    yield one(objects, "StatefulSet", "worker"), mountpoint
    while fusefs.mounted_at(mountpoint):
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def start_env(tmp_path, worker, mountpoint):
    _, _, env = worker_script_of(worker)
    cache_dir = env["DYN_KVBM_DISK_CACHE_DIR"].replace("$(POD_NAMESPACE)", "ns").replace("$(POD_NAME)", "w-0")
    return {"PATH": f"{stub_python(tmp_path)}:{os.environ['PATH']}", "DYN_KVBM_DISK_CACHE_DIR": cache_dir}


def test_no_start_on_the_bare_staging_directory(tmp_path, on_threefs):
    """The sidecar is mounting again (or never mounted): the start waits, then fails without writing a byte
    of the disk tier into the node's staging directory."""
    worker, mountpoint = on_threefs
    script, argv0, _ = worker_script_of(worker)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with answering(run_dir):
        done = run_start(script, argv0, run_dir, start_env(tmp_path, worker, mountpoint))
    assert done.returncode == 1
    assert f"3FS is not mounted at {mountpoint} after 5 s; not starting on the node's disk" in done.stderr
    assert "python3" not in done.stdout
    assert list(mountpoint.iterdir()) == []


def test_no_start_on_a_dead_mount(tmp_path, on_threefs):
    worker, mountpoint = on_threefs
    script, argv0, _ = worker_script_of(worker)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fuse = fusefs.FuseServer(mountpoint, subtype="hf3fs", fsname="hf3fs.ipoib", writable=True).start()
    fuse.kill()  # the sidecar's daemon died: a fuse.hf3fs mount that answers ENOTCONN
    with answering(run_dir):
        done = run_start(script, argv0, run_dir, start_env(tmp_path, worker, mountpoint))
    assert done.returncode == 1 and "python3" not in done.stdout


def test_start_waits_for_the_mount_then_liveness_follows_it(tmp_path, on_threefs):
    worker, mountpoint = on_threefs
    script, argv0, _ = worker_script_of(worker)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = start_env(tmp_path, worker, mountpoint)
    with answering(run_dir):
        start = subprocess.Popen(["sh", "-ec", script.replace(HANDOFF, str(run_dir)), *argv0], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)  # the worker is waiting for the sidecar to mount
        assert start.poll() is None
        fuse = fusefs.FuseServer(mountpoint, subtype="hf3fs", fsname="hf3fs.ipoib", writable=True).start()
        try:
            out, err = start.communicate(timeout=20)
            assert start.returncode == 0, err
            # The disk tier's directory is on the 3FS mount, not in the staging directory under it.
            assert pathlib.Path(env["DYN_KVBM_DISK_CACHE_DIR"]).is_dir()
            assert os.stat(env["DYN_KVBM_DISK_CACHE_DIR"]).st_dev == os.stat(mountpoint).st_dev
            assert liveness_mount_check(worker, run_dir) == 0
            fuse.kill()
            assert wait_until(lambda: liveness_mount_check(worker, run_dir) != 0)
        finally:
            fuse.kill()
    # A mount of another type at the mountpoint (the bare staging directory under a tmpfs) is not 3FS.
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mountpoint)], check=True)
    (run_dir / "mount-device").write_text(f"{os.stat(mountpoint).st_dev}\n")
    assert liveness_mount_check(worker, run_dir) != 0


def liveness_mount_check(worker, run_dir):
    """The worker's liveness command up to its /live request: the 3FS part of it."""
    command = container(worker, "worker")["livenessProbe"]["exec"]["command"]
    shell = command[2].replace(HANDOFF, str(run_dir))
    mount_part = shell[:shell.index("curl ")].rstrip().rstrip(";")
    return subprocess.run(["sh", "-c", mount_part], capture_output=True, timeout=10).returncode


def wait_until(condition, within=5.0):
    """True once the kernel's attribute cache of the dead mount's root (1 s) has expired."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False



# --- the room for sparse disk tiers

MB = 10**6


@pytest.mark.parametrize("size_mb,written_mb,starts", [
    (100, 0, False),   # four 50 MB tiers need 200 MB
    (210, 0, True),
    (180, 60, False),  # 60 MB of the others' tiers are written, 140 MB still to come, 120 MB free
    (210, 60, True),   # a restart once the others have written part of theirs
])
def test_a_sparse_start_checks_the_room_for_every_worker_sharing_the_filesystem(tmp_path, size_mb, written_mb, starts):
    """A real filesystem of a given size (a tmpfs on the 3FS mount's cache directory) and four workers whose
    50 MB tiers share it; space already used counts as the other workers' written blocks."""
    root = tmp_path / "root"
    mountpoint = root / "3fs"
    mountpoint.mkdir(parents=True)
    values = {"threefs": {"mountRoot": {"mountPath": str(root)}, "fuse": {"mountTimeoutSeconds": 5}},
              "kvbm": {"diskCacheDir": str(mountpoint / "kvbm_cache"), "diskAllocation": "sparse",
                       "cpuCacheGB": 0.05, "diskCacheGB": 0.05},
              "worker": {"replicas": 4}}
    worker = one(render(environment_values("ipoib"), values), "StatefulSet", "worker")
    script, argv0, _ = worker_script_of(worker)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fuse = fusefs.FuseServer(mountpoint, subtype="hf3fs", fsname="hf3fs.ipoib", writable=True).start()
    cache = mountpoint / "kvbm_cache"
    try:
        cache.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb * MB}", "tmpfs", str(cache)], check=True)
        if written_mb:
            (cache / "ns" / "w-1").mkdir(parents=True)
            (cache / "ns" / "w-1" / "written").write_bytes(b"\1" * (written_mb * MB))
        with answering(run_dir):
            done = run_start(script, argv0, run_dir, start_env(tmp_path, worker, mountpoint))
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)
        fuse.kill()
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
    if starts:
        assert done.returncode == 0, done.stderr
        assert "python3 -m dynamo.trtllm" in done.stdout
    else:
        assert done.returncode == 1 and "python3" not in done.stdout
        free_gb = (size_mb - written_mb) * MB / 1e9
        assert f"kvbm.diskAllocation sparse: {cache}/ns/w-0 has {free_gb:.1f} GB free" in done.stderr, done.stderr
        assert "0.2 GB in all" in done.stderr
