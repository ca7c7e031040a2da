"""patch_record against the fake Kubernetes API."""

import time

import pytest

from dynamo_hooks.kube import KubeError
from dynamo_hooks.record import patch_record
from tests.hooks.fake_kube_api import FakeKubeApi, config_map
from tests.timing import LONG_TIMEOUT, SLACK

NS, NAME = "dynamo-qwen", "dynamo-dynamo-offloading-endpoints"


@pytest.fixture
def fake():
    with FakeKubeApi() as server:
        yield server


def patch(fake, data, timeout=3.0):
    return patch_record(fake.api_client(), NS, NAME, data, timeout)


def test_patches_only_its_keys_into_the_charts_config_map(fake):
    fake.add_config_map(config_map(NS, NAME, {"OTHER": "kept"}, labels={"app.kubernetes.io/managed-by": "Helm"}))
    assert patch(fake, {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"}) is True
    assert patch(fake, {"ETCD_ENDPOINTS": "http://10.0.1.6:2379", "NATS_SERVER": "nats://10.0.2.3:4222"}) is True
    stored = fake.get("configmaps", NS, NAME)
    assert stored["data"] == {"OTHER": "kept", "ETCD_ENDPOINTS": "http://10.0.1.6:2379",
                              "NATS_SERVER": "nats://10.0.2.3:4222"}
    assert stored["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "Helm"}
    request = fake.requests[-1]
    assert (request.method, request.content_type) == ("PATCH", "application/merge-patch+json")
    assert request.body == {"data": {"ETCD_ENDPOINTS": "http://10.0.1.6:2379", "NATS_SERVER": "nats://10.0.2.3:4222"}}


def test_a_config_map_that_does_not_exist_yet_is_not_created(fake):
    """A first install runs its pre-install hook before Helm creates the release's objects."""
    assert patch(fake, {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"}) is False
    assert fake.get("configmaps", NS, NAME) is None
    assert [r.method for r in fake.requests] == ["PATCH"]


def test_forbidden(fake):
    fake.add_config_map(config_map(NS, NAME, {}))
    fake.forbid(NS, "configmaps", "patch")
    with pytest.raises(KubeError) as caught:
        patch(fake, {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"})
    assert caught.value.reason == "forbidden" and caught.value.peer == f"{NS}/{NAME}"
    assert f"cannot patch configmaps in namespace {NS}" in caught.value.message


def test_timeout(fake):
    fake.add_config_map(config_map(NS, NAME, {}))
    fake.set_delay(LONG_TIMEOUT)
    start = time.monotonic()
    with pytest.raises(KubeError) as caught:
        patch(fake, {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"}, timeout=0.5)
    assert caught.value.reason == "timeout" and time.monotonic() - start < 0.5 + SLACK
