"""A test cluster for the end-to-end hook commands: real etcd and NATS on loopback, a 3FS wire-format
peer, and the FAKE Kubernetes API serving their Services and EndpointSlices.

A FAKE API here because these peers listen on loopback, and a real API server refuses loopback endpoint
addresses; tests/e2e/test_hooks_in_cluster.py runs the same commands through the real server, with the
peers in a network namespace of the test."""

import contextlib
import json
import pathlib

from testbed.fake_kube_api import FakeKubeApi, endpoint, endpoint_slice, service
from testbed.servers import free_port

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{url}"}}}}]
users: [{{name: hooks, user: {{token: fake-token}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: hooks}}}}]
current-context: fake
"""


# The seed's Services, as the chart describes them to dynamo-hooks (--etcd, --nats).
SEED = {"etcd": {"namespace": "baseten", "service": "etcd-headless", "port": 2379, "portName": "client"},
        "nats": {"namespace": "baseten", "service": "nats-headless", "port": 4222, "portName": "nats"}}


def peer(name, **description):
    """The --etcd/--nats argument of a peer's description; `seed=True` starts from the seed's Service."""
    base = dict(SEED[name]) if description.pop("seed", False) else {}
    return f"--{name}={json.dumps({**base, **description})}"


def write_kubeconfig(directory, url):
    path = pathlib.Path(directory) / "kubeconfig"
    path.write_text(KUBECONFIG.format(url=url))
    return str(path)


def dead_url():
    """An API URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


def publish(fake, namespace, name, port, ready_ips=("127.0.0.1",), not_ready_ips=(), port_name=None):
    """A headless Service and its EndpointSlice, as the cluster's controllers write them; not-ready pods are
    published with ready=true but serving=false (publishNotReadyAddresses). The client port is named as the
    common charts name it: nats for a NATS Service, client for etcd."""
    port_name = port_name or ("nats" if name.startswith("nats") else "client")
    fake.add_service(service(namespace, name, ports=((port_name, port),), publish_not_ready=bool(not_ready_ips)))
    endpoints = [endpoint(ip, namespace=namespace) for ip in ready_ips]
    endpoints += [endpoint(ip, ready=True, serving=False, namespace=namespace) for ip in not_ready_ips]
    fake.add_endpoint_slice(endpoint_slice(namespace, name, endpoints, ports=((port_name, port),)))


@contextlib.contextmanager
def fake_api(monkeypatch, tmp_path):
    """The fake API server, with KUBECONFIG pointing at it for the process under test."""
    with FakeKubeApi() as fake:
        monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path, fake.url))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield fake
