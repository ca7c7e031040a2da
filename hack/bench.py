#!/usr/bin/env python3
"""make bench (python -m hack.bench): how long rendering the chart, each hook step and a release's life on
the local control plane take here, printed as a table.

Every figure is measured against the real thing on loopback (Helm binaries, etcd, nats-server, a 3FS
wire-format peer, tmpfs mounts, the cluster of hack/cluster.py); nothing is asserted, so a slow machine
prints slow figures."""

import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from dynamo_hooks import etcd, mgmtd, mounts, nats
from testbed import cluster
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
    """(median seconds, runs, peak MiB) of running argv as a whole process, as a Job pays for it: interpreter
    start, imports and the work. GNU time reports the peak resident set: a child's own count would start
    from this (large) process it was forked from."""
    samples, peaks = [], []
    with tempfile.NamedTemporaryFile("r") as peak:
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name, *argv], check=True, capture_output=True)
            samples.append(time.perf_counter() - start)
            peaks.append(int(pathlib.Path(peak.name).read_text().split()[-1]) / 1024)
    return statistics.median(samples), runs, f"{max(peaks):.0f}"


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
    for major in (3, 4):
        for env in ("ipoib", "standalone", "scale-out"):
            for step, median in release_cycle(major, env, 3).items():
                yield f"helm{major} {step} --wait values/{env}.yaml (cluster)", median, 3, ""


def main():
    with tempfile.TemporaryDirectory(prefix="dynamo-bench-") as tmp:
        table = [(name, f"{median * 1000:.1f}", runs, peak) for name, median, runs, peak in rows(pathlib.Path(tmp))]
    width = max(len(name) for name, *_ in table)
    print(f"{'measurement':<{width}}  {'median ms':>10}  {'runs':>4}  {'peak MiB':>8}")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 4}  {'-' * 8}")
    for name, ms, runs, peak in table:
        print(f"{name:<{width}}  {ms:>10}  {runs:>4}  {peak:>8}")


if __name__ == "__main__":
    main()
