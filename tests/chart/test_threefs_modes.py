"""Who mounts 3FS: a sidecar per worker pod, one DaemonSet client per node that the node's workers share, or a
mount the host already has. The workers see it at the same path in every mode."""

import pytest

from tests.helm import container, containers, environment_values, find, one, pod_spec, render, render_error

SCALE_OUT = environment_values("scale-out")
PREFIX = "dynamo-dynamo-offloading"
ROOT = "/tmp/dynamo-3fs-mount"


def mode(name, *more):
    return render(SCALE_OUT, {"threefs": {"mode": name}}, *more)


def mount_root(obj):
    return next(v["hostPath"]["path"] for v in pod_spec(obj)["volumes"] if v["name"] == "threefs-mount-root")


def worker_mount(sts):
    return next(m for m in container(sts, "worker")["volumeMounts"] if m["name"] == "threefs-mount-root")


def test_daemonset_mode_runs_one_client_per_node_that_the_workers_share():
    objects = mode("daemonset")
    daemonset = one(objects, "DaemonSet", "fuse")
    client = container(daemonset, "fuse")
    assert client["securityContext"]["privileged"] is True
    assert "restartPolicy" not in client, "a plain container of its own pod"
    assert next(m for m in client["volumeMounts"] if m["name"] == "threefs-mount-root")["mountPropagation"] == \
        "Bidirectional"
    assert mount_root(daemonset) == f"{ROOT}/dynamo-test/{PREFIX}-fuse"
    assert pod_spec(daemonset)["hostNetwork"] is True
    for sts in find(objects, "StatefulSet", "worker"):
        assert "fuse-sidecar" not in [c["name"] for c in containers(sts)]
        assert mount_root(sts) == mount_root(daemonset), "the node's one mount"
        assert worker_mount(sts)["mountPropagation"] == "HostToContainer"
        assert "fuse-launcher" not in [v["name"] for v in pod_spec(sts)["volumes"]]
        start = container(sts, "worker")["command"][2]
        assert "waiting for the 3FS mount" in start, "the start waits for the node's client"
        assert "3FS mount %s is dead" in container(sts, "worker")["livenessProbe"]["exec"]["command"][2]
    assert find(objects, "ConfigMap", "fuse-launcher")
    cleanup = next(j for j in find(objects, "Job") if j["metadata"]["name"].endswith("-cleanup"))
    assert "--nodes=gpu-node-1,gpu-node-2,gpu-node-3,gpu-node-4" in container(cleanup, "cleanup")["args"]


def test_the_daemonset_goes_where_every_group_goes():
    spec = pod_spec(one(mode("daemonset", {"worker": {"groups": {
        "qwen3-8b": {"nodes": ["gpu-node-1"], "tolerations": [{"key": "pool-a", "operator": "Exists"}]},
        "qwen3-32b": {"nodes": [], "nodeSelector": {"pool": "b"}}}}}), "DaemonSet", "fuse"))
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert sorted(terms, key=str) == sorted([
        {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]},
                              {"key": "kubernetes.io/hostname", "operator": "In", "values": ["gpu-node-1"]}]},
        {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]},
                              {"key": "pool", "operator": "In", "values": ["b"]}]}], key=str)
    assert {"key": "pool-a", "operator": "Exists"} in spec["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    anywhere = pod_spec(one(mode("daemonset", {"worker": {"nodeSelector": None, "groups": {
        "qwen3-8b": {"nodes": []}}}}), "DaemonSet", "fuse"))
    assert "affinity" not in anywhere, "a group that may run anywhere needs a client anywhere"


def test_host_mode_uses_the_hosts_mount_and_leaves_it_alone():
    objects = mode("host", {"threefs": {"fuse": {"image": {"repository": "", "tag": ""}}, "existingSecret": "",
                                        "mgmtdAddresses": [], "clusterId": ""}})
    assert not find(objects, "DaemonSet")
    assert not find(objects, "ConfigMap", "fuse-launcher") and not find(objects, "Secret", "threefs-token")
    assert not [j for j in find(objects, "Job") if "cleanup" in j["metadata"]["name"]], "not the release's mount"
    for sts in find(objects, "StatefulSet", "worker"):
        assert "fuse-sidecar" not in [c["name"] for c in containers(sts)]
        assert mount_root(sts) == ROOT
        assert worker_mount(sts)["mountPropagation"] == "HostToContainer"
        assert "waiting for the 3FS mount" in container(sts, "worker")["command"][2]
    pre_install = one(objects, "Job", "pre-install")
    assert not [a for a in container(pre_install, "pre-install")["args"] if a.startswith("--mgmtd")]


def test_host_mode_with_mgmtd_addresses_needs_the_cluster_id():
    message = render_error(SCALE_OUT, {"threefs": {"mode": "host", "clusterId": ""}})
    assert "threefs.clusterId: required with threefs.mgmtdAddresses" in message


@pytest.mark.parametrize("name", ["daemonset", "sidecar"])
def test_a_client_of_the_release_needs_its_image_and_token(name):
    message = render_error(SCALE_OUT, {"threefs": {"mode": name, "existingSecret": "",
                                                   "fuse": {"image": {"tag": ""}}}})
    assert "threefs.token, threefs.existingSecret" in message and "threefs.fuse.image" in message
