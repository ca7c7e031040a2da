"""write_record against the fake Kubernetes API."""

import pytest

from dynamo_hooks.kube import KubeError
from dynamo_hooks.record import write_record
from tests.hooks.fake_kube_api import FakeKubeApi, config_map

NS, NAME = "baseten", "dynamo-offloading-endpoints"
LABELS = {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "dynamo"}
ANNOTATIONS = {"meta.helm.sh/release-name": "dynamo", "meta.helm.sh/release-namespace": NS}


@pytest.fixture
def fake():
    with FakeKubeApi() as server:
        yield server


def write(fake, data, labels=LABELS, annotations=ANNOTATIONS, namespace=NS):
    return write_record(fake.api_client(), namespace, NAME, data, labels, annotations, 3.0)


def test_create_then_update(fake):
    assert write(fake, {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"}) == "created"
    created = fake.get("configmaps", NS, NAME)
    assert created["data"] == {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"}
    assert created["metadata"]["labels"] == LABELS
    assert created["metadata"]["annotations"] == ANNOTATIONS

    # someone else (the chart) adds a key and a label of its own
    fake.objects["configmaps"][(NS, NAME)]["data"]["CHART_KEY"] = "kept"
    fake.objects["configmaps"][(NS, NAME)]["metadata"]["labels"]["helm.sh/chart"] = "dynamo-offloading-0.1.0"

    assert write(fake, {"ETCD_ENDPOINTS": "http://10.0.1.6:2379", "NATS_SERVER": "nats://10.0.2.3:4222"},
                 labels={**LABELS, "dynamo/recorded": "true"}) == "updated"
    updated = fake.get("configmaps", NS, NAME)
    assert updated["data"] == {"ETCD_ENDPOINTS": "http://10.0.1.6:2379", "NATS_SERVER": "nats://10.0.2.3:4222",
                               "CHART_KEY": "kept"}
    assert updated["metadata"]["labels"] == {**LABELS, "helm.sh/chart": "dynamo-offloading-0.1.0",
                                             "dynamo/recorded": "true"}
    assert updated["metadata"]["annotations"] == ANNOTATIONS
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]

    post1, post2, patch = fake.requests
    assert (post1.method, post2.method, patch.method) == ("POST", "POST", "PATCH")
    assert post1.body["metadata"]["labels"] == LABELS
    assert post1.content_type == "application/json"
    assert patch.path == f"/api/v1/namespaces/{NS}/configmaps/{NAME}"
    assert patch.content_type == "application/merge-patch+json"
    # only the keys written, never the whole object
    assert patch.body == {"data": {"ETCD_ENDPOINTS": "http://10.0.1.6:2379", "NATS_SERVER": "nats://10.0.2.3:4222"},
                          "metadata": {"labels": {**LABELS, "dynamo/recorded": "true"}, "annotations": ANNOTATIONS}}


def test_update_of_a_chart_made_config_map(fake):
    fake.add_config_map(config_map(NS, NAME, {"OTHER": "x"}, labels={"app": "chart"}))
    assert write(fake, {"NATS_SERVER": "nats://10.0.2.3:4222"}, labels={}, annotations={}) == "updated"
    stored = fake.get("configmaps", NS, NAME)
    assert stored["data"] == {"OTHER": "x", "NATS_SERVER": "nats://10.0.2.3:4222"}
    assert stored["metadata"]["labels"] == {"app": "chart"}
    assert fake.requests[-1].body == {"data": {"NATS_SERVER": "nats://10.0.2.3:4222"}}


def test_write_forbidden(fake):
    fake.forbid(NS, "configmaps")
    with pytest.raises(KubeError) as caught:
        write(fake, {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"})
    err = caught.value
    assert (err.reason, err.peer) == ("forbidden", f"{NS}/{NAME}")
    assert err.message.startswith(f"forbidden: cannot create configmaps in namespace {NS} (")


def test_patch_forbidden(fake):
    fake.add_config_map(config_map(NS, NAME, {"OTHER": "x"}))
    fake.forbid(NS, "configmaps", "patch")
    with pytest.raises(KubeError) as caught:
        write(fake, {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"})
    assert caught.value.reason == "forbidden"
    assert f"cannot patch configmaps in namespace {NS}" in caught.value.message


def test_write_timeout(fake):
    fake.set_delay(3.0)
    with pytest.raises(KubeError) as caught:
        write_record(fake.api_client(), NS, NAME, {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"}, {}, {}, 0.5)
    assert caught.value.reason == "timeout"


def test_recreated_when_deleted_between_create_and_patch(fake):
    fake.add_config_map(config_map(NS, NAME, {"OTHER": "x"}))
    handle = fake.handle

    def delete_before_patch(method, path, *rest):
        if method == "PATCH":
            fake.objects["configmaps"].pop((NS, NAME), None)
        return handle(method, path, *rest)

    fake.handle = delete_before_patch
    assert write(fake, {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"}) == "created"
    assert [r.method for r in fake.requests] == ["POST", "PATCH", "POST"]
    assert fake.get("configmaps", NS, NAME)["data"] == {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"}
