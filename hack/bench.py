#!/usr/bin/env python3
"""make bench (python -m hack.bench): how long rendering the chart, each hook step, a release's life on the
local control plane and its serving take here, printed as a table.

Every figure is measured against the real thing on loopback or in test hosts (Helm binaries, etcd,
nats-server, a 3FS wire-format peer, tmpfs mounts, the cluster of hack/cluster.py, the Dynamo runtime); nothing is
asserted, so a slow machine prints slow figures."""

import contextlib
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from dynamo_hooks import etcd, mgmtd, mounts, nats
from testbed import by_hand, cluster, serving
from testbed.helm import ROOT, environment_values
from testbed.servers import etcd_server, nats_server
from testbed.threefs_peer import ThreeFSPeer

HOOKS = str(ROOT / ".venv" / "bin" / "dynamo-hooks")


def timed(fn, runs):
    """(median seconds, runs, "") of calling fn() `runs` times."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), runs, ""


def process(argv, runs):
    """(median seconds, runs, "<peak> MiB") of running argv as a whole process, as a Job pays for it: interpreter
    start, imports and the work. GNU time reports the peak resident set: a child's own count would start
    from this (large) process it was forked from."""
    samples, peaks = [], []
    with tempfile.NamedTemporaryFile("r") as peak:
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name, *argv], check=True, capture_output=True)
            samples.append(time.perf_counter() - start)
            peaks.append(int(pathlib.Path(peak.name).read_text().split()[-1]) / 1024)
    return statistics.median(samples), runs, f"{max(peaks):.0f} MiB"


def helm_template(major, env):
    subprocess.run([str(ROOT / ".tools" / "bin" / f"helm{major}"), "template", "dynamo", str(ROOT / "chart"),
                    "-f", str(ROOT / "values" / f"{env}.yaml")], check=True, capture_output=True)


def must(report):
    assert report.ok, report.summary()


def mount_tmpfs(directory, count):
    for i in range(count):
        point = directory / f"m{i:03d}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", f"bench{i}", str(point)], check=True)


def release_cycle(major, env, runs):
    """Medians of helm install --wait (to every pod Ready), upgrade --wait and uninstall --wait on the local
    control plane, each release in a fresh namespace."""
    values = [environment_values(env), cluster.CLUSTER_VALUES]
    upgrade = {"kvbm": {"cpuCacheGB": 30, "diskCacheGB": 60}}
    samples = {"install": [], "upgrade": [], "uninstall": []}

    def measure(step, action, *args):
        start = time.perf_counter()
        action(*args)
        samples[step].append(time.perf_counter() - start)

    for _ in range(runs):
        namespace = cluster.create_namespace(cluster.unique("bench"))
        cluster.prepare(namespace, values[0])
        measure("install", cluster.install, major, "dynamo", namespace, *values)
        measure("upgrade", cluster.install, major, "dynamo", namespace, *values, upgrade)
        measure("uninstall", cluster.uninstall, major, "dynamo", namespace)
        cluster.delete_namespace(namespace)
    return {step: statistics.median(values) for step, values in samples.items()}


def first_completion(env, mgmtd, hub, runs):
    """Median seconds from `helm install` of `env` (Helm 4, no --wait, in a fresh namespace) to the first chat
    completion its frontend answers."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        with serving.release(env, 4, mgmtd, hub, wait=False) as (namespace, _):
            cluster.wait_until(lambda ns=namespace: answers(ns), f"a chat completion from {env}", within=300,
                               every=0.1)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def answers(namespace):
    for pod in cluster.release_pods(namespace, serving.RELEASE, "frontend"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            if pod.status.pod_ip and serving.chat(pod.status.pod_ip, serving.MODELS[0], timeout=5)["choices"]:
                return True
    return False


def per_request(address, runs):
    """Median seconds of a chat completion (4 tokens) from the frontend at `address`, after one to warm up."""
    serving.chat(address, by_hand.MODEL)
    return timed(lambda: serving.chat(address, by_hand.MODEL), runs)[0]


def serving_rows(tmp, runs=30):
    """The chart served for real (testbed/serving.py), against Dynamo started by hand in one test host."""
    with serving.seed_peers(tmp / "peers"), serving.hub(tmp / "model") as hub, serving.mgmtd() as mgmtd:
        cluster.install_dynamo_crd()  # for ipoib-kubernetes (Dynamo 1.6.1, Kubernetes discovery)
        for env in ("ipoib", "ipoib-kubernetes", "scale-out"):
            yield f"serving: helm install to the first chat completion, values/{env}.yaml", \
                first_completion(env, mgmtd, hub, 2), 2, ""
        with serving.release("ipoib", 4, mgmtd, hub) as (namespace, _):
            chart = per_request(serving.frontends(namespace)[0].status.pod_ip, runs)
    with by_hand.started(tmp / "by-hand") as deployment:
        deployment.frontend()
        deployment.worker("worker", 8081)
        deployment.wait_for("a chat completion", lambda: answers_at(deployment.host.address))
        alone = per_request(deployment.host.address, runs)
    yield "serving: a chat completion through the chart's release (ipoib)", chart, runs, ""
    yield "serving: a chat completion, frontend and engine started by hand", alone, runs, ""
    yield "serving: the chart's release against by hand", None, runs, f"ratio {chart / alone:.2f}"


def answers_at(address):
    with contextlib.suppress(OSError, ValueError, KeyError):
        return bool(serving.chat(address, by_hand.MODEL, timeout=5)["choices"])
    return False


def rows(tmp):
    for major in (3, 4):
        for env in ("ipoib", "scale-out"):
            yield f"helm{major} template values/{env}.yaml", *timed(lambda m=major, e=env: helm_template(m, e), 5)
    yield "python -m generator check", *timed(lambda: subprocess.run(
        [sys.executable, "-m", "generator", "check"], cwd=ROOT, check=True, capture_output=True), 3)
    yield "process: python -c pass (the bare interpreter)", *process([sys.executable, "-c", "pass"], 10)
    with etcd_server(tmp / "etcd") as server:
        yield "check-etcd, one healthy endpoint", *timed(lambda: must(etcd.check_etcd([server.url], 5)), 20)
        yield "process: dynamo-hooks check-etcd", *process([HOOKS, "check-etcd", "--endpoints", server.url], 10)
    with nats_server(tmp / "nats") as server:
        yield "check-nats with JetStream", *timed(lambda: must(nats.check_nats(server.url, 5)), 20)
        yield "process: dynamo-hooks check-nats", *process([HOOKS, "check-nats", "--server", server.url], 10)
    with ThreeFSPeer("primary", cluster_id="bench") as peer:
        yield "check-mgmtd, primary named", *timed(
            lambda: must(mgmtd.check_mgmtd([peer.address("RDMA")], "bench", 5)), 50)
        yield "process: dynamo-hooks check-mgmtd", *process(
            [HOOKS, "check-mgmtd", "--address", peer.address("RDMA"), "--cluster-id", "bench"], 10)
    with ThreeFSPeer("silent", cluster_id="bench") as peer:
        yield "check-mgmtd, silent peer, --timeout 1", *timed(
            lambda: mgmtd.check_mgmtd([peer.address("TCP")], "bench", 1), 3)
    if os.geteuid() == 0:
        root = tmp / "staging"
        root.mkdir()
        mount_tmpfs(root, 50)
        yield "cleanup-mounts, 50 tmpfs mounts", *timed(lambda: mounts.cleanup(str(root)), 1)
        yield "process: dynamo-hooks cleanup-mounts, nothing to do", *process(
            [HOOKS, "cleanup-mounts", "--root", str(root)], 10)
    cluster.ensure_running()
    cluster.seed_services()
    yield from serving_rows(tmp)
    for major in (3, 4):
        for env in ("ipoib", "standalone", "scale-out"):
            for step, median in release_cycle(major, env, 3).items():
                yield f"helm{major} {step} --wait values/{env}.yaml (cluster)", median, 3, ""


def main():
    with tempfile.TemporaryDirectory(prefix="dynamo-bench-") as tmp:
        table = [(name, "-" if median is None else f"{median * 1000:.1f}", runs, note)
                 for name, median, runs, note in rows(pathlib.Path(tmp))]
    width = max(len(name) for name, *_ in table)
    print(f"{'measurement':<{width}}  {'median ms':>10}  {'runs':>4}  {'peak or ratio':>13}")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 4}  {'-' * 13}")
    for name, ms, runs, note in table:
        print(f"{name:<{width}}  {ms:>10}  {runs:>4}  {note:>13}")


if __name__ == "__main__":
    main()
