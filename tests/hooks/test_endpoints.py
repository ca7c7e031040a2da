"""resolve_service where a real API server cannot easily be made to fail: an HTTP 500, no answer in time,
nothing listening (a FAKE API serves the first two). Which endpoints count, and the other errors, are tested
against the real API server in tests/e2e/test_hooks_api.py."""

import socket
import time

import pytest

from dynamo_hooks import kube
from dynamo_hooks.endpoints import is_serving, resolve_service
from dynamo_hooks.kube import KubeError
from testbed.fake_kube_api import (
    FakeKubeApi,
    api_client_for,
    endpoint,
    endpoint_slice,
    service,
)
from tests.timing import LONG_TIMEOUT, SLACK

NS, SVC = "baseten", "etcd-headless"


@pytest.fixture
def fake():
    with FakeKubeApi() as server:
        server.add_service(service(NS, SVC, ports=(("client", 2379), ("peer", 2380)), publish_not_ready=True))
        yield server


def resolve(fake, port_name="client", timeout=3.0, namespace=NS, name=SVC, port_number=None, note=""):
    """The addresses, after checking the note says how the port was chosen (or nothing)."""
    resolved = resolve_service(fake.api_client(), namespace, name, port_name, timeout, port_number=port_number)
    assert resolved.note == note
    return resolved.addresses


def add_slice(fake, endpoints, **kwargs):
    kwargs.setdefault("ports", (("client", 2379), ("peer", 2380)))
    fake.add_endpoint_slice(endpoint_slice(NS, SVC, endpoints, **kwargs))


def error_of(fake, **kwargs):
    with pytest.raises(KubeError) as caught:
        resolve(fake, **kwargs)
    return caught.value


def test_conditions_nil_semantics():
    from kubernetes.client import V1EndpointConditions as C

    assert is_serving(None)
    assert is_serving(C())
    assert is_serving(C(ready=False, serving=True))
    assert not is_serving(C(ready=True, serving=False))
    assert not is_serving(C(ready=False))
    assert not is_serving(C(ready=True, serving=True, terminating=True))


def test_api_error(fake):
    add_slice(fake, [endpoint("10.0.1.5")])

    def broken(*args):
        return 500, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcdserver: leader changed",
                     "reason": "InternalError", "code": 500}

    fake.handle = broken
    err = error_of(fake)
    assert err.reason == "api-error"
    assert "HTTP 500" in err.message and "etcdserver: leader changed" in err.message


@pytest.mark.parametrize("delayed", [None, "endpointslices"], ids=["service", "slices"])
def test_timeout(fake, delayed):
    add_slice(fake, [endpoint("10.0.1.5")])
    fake.set_delay(4.0, path_contains=delayed)
    start = time.monotonic()
    err = error_of(fake, timeout=1.0)
    elapsed = time.monotonic() - start
    assert err.reason == "timeout"
    assert elapsed < 1.0 + SLACK
    assert "within 1 s" in err.message and NS in err.message
    assert sum(r.path.endswith(delayed or SVC) for r in fake.requests) == 1  # not retried


def test_unreachable():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = api_client_for(f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(KubeError) as caught:
        resolve_service(api, NS, SVC, "client", LONG_TIMEOUT)
    assert time.monotonic() - start < LONG_TIMEOUT / 2  # refused at once, not waited for
    err = caught.value
    assert err.reason == "unreachable"
    assert f"127.0.0.1:{port}" in err.message and f"Service {NS}/{SVC}" in err.message


def test_client_retries_off():
    configuration = kube.configure(__import__("kubernetes").client.Configuration())
    assert configuration.retries is False
    assert configuration.client_go_retries is False
