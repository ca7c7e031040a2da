"""resolve_service against the fake Kubernetes API: which EndpointSlice endpoints count, and the errors."""

import socket
import time

import pytest

from dynamo_hooks import kube
from dynamo_hooks.endpoints import is_serving, resolve_service
from dynamo_hooks.kube import KubeError
from tests.hooks.fake_kube_api import (
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


def test_ready_endpoints(fake):
    add_slice(fake, [endpoint("10.0.1.7", pod="etcd-1"), endpoint("10.0.1.5", pod="etcd-0")])
    assert resolve(fake) == ["10.0.1.5:2379", "10.0.1.7:2379"]
    assert resolve(fake, port_name="peer") == ["10.0.1.5:2380", "10.0.1.7:2380"]


def test_requests_sent(fake):
    add_slice(fake, [endpoint("10.0.1.5")])
    resolve(fake)
    get, listing = fake.requests
    assert (get.method, get.path) == ("GET", f"/api/v1/namespaces/{NS}/services/{SVC}")
    assert (listing.method, listing.path) == ("GET", f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices")
    assert listing.query["labelSelector"] == f"kubernetes.io/service-name={SVC}"


def test_only_the_services_slices(fake):
    add_slice(fake, [endpoint("10.0.1.5")])
    fake.add_endpoint_slice(endpoint_slice(NS, "nats", [endpoint("10.0.9.9")], ports=(("client", 4222),)))
    assert resolve(fake) == ["10.0.1.5:2379"]


def test_not_serving_though_ready_on_publish_not_ready_service(fake):
    """publishNotReadyAddresses: the controller sets ready=true for every pod; serving tells readiness."""
    add_slice(fake, [endpoint("10.0.1.5", ready=True, serving=True),
                     endpoint("10.0.1.6", ready=True, serving=False),
                     endpoint("10.0.1.7", ready=True, serving=False)])
    assert resolve(fake) == ["10.0.1.5:2379"]


def test_none_serving(fake):
    add_slice(fake, [endpoint(f"10.0.1.{i}", ready=True, serving=False) for i in (5, 6, 7)])
    err = error_of(fake)
    assert err.reason == "no-ready-endpoints"
    assert err.peer == f"{NS}/{SVC}"
    assert err.message == f"Service {NS}/{SVC} has no serving endpoints (3 not ready)"


def test_serving_absent_falls_back_to_ready(fake):
    add_slice(fake, [endpoint("10.0.1.5", ready=True, serving=None),
                     endpoint("10.0.1.6", ready=False, serving=None),
                     endpoint("10.0.1.7", ready=None, serving=None, terminating=None)])
    assert resolve(fake) == ["10.0.1.5:2379", "10.0.1.7:2379"]


def test_conditions_nil_semantics():
    from kubernetes.client import V1EndpointConditions as C

    assert is_serving(None)
    assert is_serving(C())
    assert is_serving(C(ready=False, serving=True))
    assert not is_serving(C(ready=True, serving=False))
    assert not is_serving(C(ready=False))
    assert not is_serving(C(ready=True, serving=True, terminating=True))


def test_terminating_skipped(fake):
    add_slice(fake, [endpoint("10.0.1.5"),
                     endpoint("10.0.1.6", ready=False, serving=True, terminating=True)])
    assert resolve(fake) == ["10.0.1.5:2379"]


def test_only_terminating(fake):
    add_slice(fake, [endpoint("10.0.1.6", ready=False, serving=True, terminating=True),
                     endpoint("10.0.1.7", ready=False, serving=False)])
    err = error_of(fake)
    assert err.reason == "no-ready-endpoints"
    assert "(1 not ready, 1 terminating)" in err.message


def test_slices_merged_and_deduplicated(fake):
    add_slice(fake, [endpoint("10.0.1.9"), endpoint("10.0.1.5")])
    add_slice(fake, [endpoint("10.0.1.5"), endpoint("10.0.2.3"), endpoint("10.0.2.4", serving=False)])
    add_slice(fake, [endpoint("fd00::5")], address_type="IPv6")
    assert resolve(fake) == ["10.0.1.5:2379", "10.0.1.9:2379", "10.0.2.3:2379"]


def test_slice_without_the_port_skipped(fake):
    add_slice(fake, [endpoint("10.0.1.5")])
    add_slice(fake, [endpoint("10.0.3.3")], ports=(("metrics", 9090),))
    assert resolve(fake) == ["10.0.1.5:2379"]
    assert resolve(fake, port_number=9090) == ["10.0.1.5:2379"]  # the name wins over the number


def test_port_taken_by_number_when_no_port_has_the_name(fake):
    """The NATS project's chart names its client port nats, Bitnami's tcp-client: a name that is not there
    falls back to the Service's port number, and the result says so."""
    add_slice(fake, [endpoint("10.0.1.5"), endpoint("10.0.1.6", serving=False)], ports=(("tcp-client", 4222),
                                                                                      ("monitor", 8222)))
    assert resolve(fake, port_name="nats", port_number=4222,
                   note=f"Service {NS}/{SVC} has no port named 'nats'; used port 4222") == ["10.0.1.5:4222"]
    err = error_of(fake, port_name="nats", port_number=4223)
    assert err.reason == "no-port"
    assert err.message == (f"Service {NS}/{SVC} has no port named 'nats' or numbered 4223 in its EndpointSlices "
                           "(ports seen: 'monitor', 'tcp-client')")


def test_ipv6_only(fake):
    add_slice(fake, [endpoint("fd00::5")], address_type="IPv6")
    err = error_of(fake)
    assert err.reason == "no-ready-endpoints"
    assert "1 not IPv4" in err.message


def test_no_slices(fake):
    err = error_of(fake)
    assert err.reason == "no-ready-endpoints"
    assert err.message == f"Service {NS}/{SVC} has no serving endpoints (no EndpointSlices)"


@pytest.mark.parametrize("endpoints", [[], None], ids=["empty", "null"])
def test_slice_without_endpoints(fake, endpoints):
    add_slice(fake, endpoints)
    err = error_of(fake)
    assert err.reason == "no-ready-endpoints"
    assert err.message == f"Service {NS}/{SVC} has no serving endpoints (no endpoints)"


def test_placeholder_slice_without_ports(fake):
    add_slice(fake, None, ports=None)
    assert error_of(fake).reason == "no-ready-endpoints"


def test_missing_service(fake):
    err = error_of(fake, name="etcd-missing")
    assert err.reason == "not-found"
    assert err.peer == f"{NS}/etcd-missing"
    assert err.message == f"Service {NS}/etcd-missing not found"
    assert len(fake.requests) == 1  # no listing after the 404


def test_forbidden_names_namespace(fake):
    fake.forbid(NS, "endpointslices", "list")
    add_slice(fake, [endpoint("10.0.1.5")])
    err = error_of(fake)
    assert err.reason == "forbidden"
    assert err.message.startswith(f"forbidden: cannot list endpointslices in namespace {NS} (")
    assert "ServiceAccount baseten/dynamo-hooks needs a Role there" in err.message


def test_forbidden_service_get(fake):
    fake.forbid(NS)
    err = error_of(fake)
    assert (err.reason, err.peer) == ("forbidden", f"{NS}/{SVC}")
    assert f"cannot get services in namespace {NS}" in err.message


def test_wrong_port_name(fake):
    add_slice(fake, [endpoint("10.0.1.5")])
    err = error_of(fake, port_name="etcd-client")
    assert err.reason == "no-port"
    assert "'etcd-client'" in err.message
    assert "ports seen: 'client', 'peer'" in err.message


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
