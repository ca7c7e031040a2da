"""patch_record against an API that does not answer in time (a FAKE API: a real server cannot easily be
made to hang). The rest of patch_record is tested against the real API server in tests/e2e/test_hooks_api.py."""

import time

import pytest

from dynamo_hooks.kube import KubeError
from dynamo_hooks.record import patch_record
from testbed.fake_kube_api import FakeKubeApi, config_map
from tests.timing import LONG_TIMEOUT, SLACK

NS, NAME = "dynamo-qwen", "dynamo-dynamo-offloading-endpoints"


@pytest.fixture
def fake():
    with FakeKubeApi() as server:
        yield server


def patch(fake, data, timeout=3.0):
    return patch_record(fake.api_client(), NS, NAME, data, timeout)


def test_timeout(fake):
    fake.add_config_map(config_map(NS, NAME, {}))
    fake.set_delay(LONG_TIMEOUT)
    start = time.monotonic()
    with pytest.raises(KubeError) as caught:
        patch(fake, {"ETCD_ENDPOINTS": "http://10.0.1.5:2379"}, timeout=0.5)
    assert caught.value.reason == "timeout" and time.monotonic() - start < 0.5 + SLACK
