"""Config changes roll the pods; two workers never share a node."""

import pytest

from tests.helm import environment_values, one, pod_spec, render

IPOIB = environment_values("ipoib")


def checksums(*values):
    worker = one(render(*values), "StatefulSet", "worker")
    frontend = one(render(*values), "Deployment", "frontend")
    annotations = {**worker["spec"]["template"]["metadata"]["annotations"]}
    annotations.update({f"frontend/{k}": v for k, v in frontend["spec"]["template"]["metadata"]["annotations"].items()})
    return annotations


@pytest.mark.parametrize("change,changed", [
    ({"worker": {"engine": {"max_batch_size": 32}}}, {"checksum/engine-config"}),
    ({"worker": {"extraEngineArgs": {"max_seq_len": 4096}}}, {"checksum/engine-config"}),
    ({"threefs": {"clusterId": "other"}}, {"checksum/fuse-launcher"}),
    ({"threefs": {"mgmtdAddresses": ["RDMA://10.2.10.56:8010"]}}, {"checksum/fuse-launcher"}),
    ({"threefs": {"existingSecret": "", "token": "abc"}}, {"checksum/threefs-token"}),
    # The hostNetwork worker resolves the Service too: its fallback environment names it.
    ({"etcd": {"service": {"name": "etcd"}}}, {"frontend/checksum/connections", "checksum/connections"}),
])
def test_config_change_changes_exactly_its_checksum(change, changed):
    before, after = checksums(IPOIB), checksums(IPOIB, change)
    assert {k for k in before if before[k] != after.get(k)} == changed


def test_unrelated_change_keeps_checksums():
    assert checksums(IPOIB) == checksums(IPOIB, {"frontend": {"replicas": 3}})


def test_workers_never_share_a_node():
    worker = one(render(IPOIB, {"worker": {"replicas": 3}}), "StatefulSet", "worker")
    spec = worker["spec"]
    # A StatefulSet replaces each pod only after the old one is gone.
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    anti = pod_spec(worker)["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    assert anti["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
