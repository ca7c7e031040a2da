"""The post-delete hook executed for real inside the cluster (testbed/runner.py runs its pods): at
`helm uninstall` the coordinator, with its own token and RBAC, creates a cleanup Job per worker node, the
runner executes each on its node's directory, and real FUSE mounts on this host are detached through the
Job's Bidirectional hostPath volume."""

import errno
import os

import pytest

from testbed import cluster
from testbed.fusefs import FILE_DATA, FILE_NAME, FuseServer, mounted_at
from testbed.helm import chart_defaults
from testbed.runner import LABEL, PodRunner
from tests.helm import environment_values

RELEASE = "dynamo"
NODES = ["gpu-node-1", "gpu-node-2", "gpu-node-3"]
DOWN = "gpu-node-3"  # never runs its Job


def is_stale(path):
    try:
        os.stat(path)
    except OSError as err:
        return err.errno == errno.ENOTCONN
    return False


def test_uninstall_detaches_the_stale_mounts_of_every_node_and_keeps_files_and_live_mounts(seed_services, namespace,
                                                                                         fuse_servers):
    base = environment_values("ipoib")
    cluster.prepare(namespace, base)
    staging = base["threefs"]["mountRoot"]["hostPath"]
    values = [base, cluster.CLUSTER_VALUES, {
        # Only the post-delete hook runs here; the mgmtd address it would check is the seed's own.
        "hooks": {"podLabels": {LABEL: "true"}, "preInstall": {"enabled": False},
                  "postDelete": {"podsWaitSeconds": 10, "deadlineSeconds": 20}},
        "threefs": {"mgmtdAddresses": ["TCP://127.0.0.1:8000"]},
        "worker": {"nodeSelector": None, "nodes": NODES, "replicas": len(NODES)}}]
    with PodRunner(namespace, skip_nodes={DOWN}) as runner:
        layout = {}
        for node in NODES:
            root = runner.node_dir(node) / staging.lstrip("/")
            root.mkdir(parents=True)
            (root / "kept.txt").write_text(node)  # a file of the operator's: every file stays
            dead = FuseServer(root / base["threefs"]["mountSubPath"], subtype="hf3fs")
            live = FuseServer(root / "other-release", subtype="hf3fs")  # another release's, still serving
            fuse_servers.extend([dead.start(), live.start()])
            dead.kill()
            layout[node] = (root, dead.mountpoint, live.mountpoint)
        cluster.wait_until(lambda: all(is_stale(dead) for _, dead, _ in layout.values()), "the mounts stale")

        cluster.install(4, RELEASE, namespace, *values, timeout="3m")
        cluster.uninstall(4, RELEASE, namespace)

        coordinator = next(logs["cleanup"] for logs in runner.logs.values() if "cleanup" in logs)
        node_logs = {name: logs["cleanup-mounts"] for name, logs in runner.logs.items() if "cleanup-mounts" in logs}
        assert coordinator.endswith(f"cleanup: ok ({', '.join(NODES)})\n"), coordinator
        subpath = base["threefs"]["mountSubPath"]
        for node, (root, dead, live) in layout.items():
            assert (root / "kept.txt").read_text() == node
            assert mounted_at(live) and (root / "other-release" / FILE_NAME).read_bytes() == FILE_DATA
            if node == DOWN:
                assert mounted_at(dead), f"{node} ran no Job, yet its mount went"
                assert f"warning: cleanup {node}: node {node} did not run the cleanup Job" in coordinator
                assert not [name for name in node_logs if node in name]
                continue
            assert f"cleanup {node}: Job {namespace}/{RELEASE}-dynamo-offloading-cleanup-node-{node} completed" \
                in coordinator.splitlines()
            assert not mounted_at(dead) and not os.path.lexists(dead), f"{node}: {node_logs}"
            # The Job sees the node's paths at its own mount path, as on a node.
            log = next(text for name, text in node_logs.items() if node in name).splitlines()
            assert f"ok: cleanup-mounts {staging}/{subpath}: detached (fuse.hf3fs testfs-source, stale: " \
                   "Transport endpoint is not connected)" in log
            assert f"ok: cleanup-mounts {staging}/other-release: kept (fuse.hf3fs testfs-source, healthy)" in log
            assert f"ok: cleanup-mounts {staging}/kept.txt: kept file" in log


@pytest.mark.parametrize("mode", ["sidecar", "daemonset"])
def test_uninstall_cleans_every_node_of_every_group_found_by_their_selector(mode, seed_services, namespace,
                                                                          fuse_servers):
    """Groups without a node list: the nodes that match their nodeSelector at install (a lookup on the API
    server) get the cleanup, and the dead mount of each FUSE client (each group's sidecar, or the node's
    DaemonSet pod) in its own directory goes."""
    base = environment_values("scale-out")
    cluster.prepare(namespace, base)
    groups = {name: {"nodes": []} for name in base["worker"]["groups"]}
    values = [base, cluster.CLUSTER_VALUES, {
        "hooks": {"podLabels": {LABEL: "true"}, "preInstall": {"enabled": False},
                  "postDelete": {"podsWaitSeconds": 10, "deadlineSeconds": 20}},
        "threefs": {"mgmtdAddresses": ["TCP://127.0.0.1:8000"], "mode": mode},
        "worker": {"groups": groups}}]
    clients = ([f"{RELEASE}-dynamo-offloading-worker-{group}" for group in groups] if mode == "sidecar"
               else [f"{RELEASE}-dynamo-offloading-fuse"])
    selected = sorted(n.metadata.name for n in cluster.core().list_node(
        label_selector=",".join(f"{k}={v}" for k, v in base["worker"]["nodeSelector"].items())).items)
    assert len(selected) >= 4
    threefs = chart_defaults()["threefs"]
    staging = threefs["mountRoot"]["hostPath"]
    with PodRunner(namespace) as runner:
        dead = []
        for node in selected:
            for client in clients:
                mountpoint = runner.node_dir(node) / staging.lstrip("/") / namespace / client / threefs["mountSubPath"]
                mountpoint.mkdir(parents=True)
                server = FuseServer(mountpoint, subtype="hf3fs")
                fuse_servers.append(server.start())
                server.kill()
                dead.append(mountpoint)
        cluster.wait_until(lambda: all(is_stale(path) for path in dead), "the mounts stale")

        cluster.install(4, RELEASE, namespace, *values, timeout="3m")
        if mode == "daemonset":
            fuse = cluster.core().list_namespaced_pod(namespace, label_selector="app.kubernetes.io/component=fuse")
            assert sorted(p.spec.node_name for p in fuse.items) == selected, "a client on each worker node"
        cluster.uninstall(4, RELEASE, namespace)

        coordinator = next(logs["cleanup"] for logs in runner.logs.values() if "cleanup" in logs)
        assert coordinator.endswith(f"cleanup: ok ({', '.join(selected)})\n"), coordinator
        assert not [path for path in dead if mounted_at(path)]
