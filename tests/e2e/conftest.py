"""The cluster tests: the local control plane of hack/cluster.py (started here when it is not running),
the seed's shared namespace, and a fresh privileged namespace per test."""

import pytest
from kubernetes import client

from testbed import cluster

SEED_NAMESPACE = "baseten"


@pytest.fixture(scope="session", autouse=True)
def running_cluster():
    cluster.ensure_running()


@pytest.fixture(scope="session")
def seed_services():
    """The seed's etcd-headless and nats-headless Services in baseten, with the client port names of the
    charts that made them (Bitnami's etcd: client; the NATS project's: nats). Without pods behind them."""
    core = cluster.core()
    if not any(ns.metadata.name == SEED_NAMESPACE for ns in core.list_namespace().items):
        cluster.create_namespace(SEED_NAMESPACE)
    existing = {s.metadata.name for s in core.list_namespaced_service(SEED_NAMESPACE).items}
    for name, port_name, port in (("etcd-headless", "client", 2379), ("nats-headless", "nats", 4222)):
        if name not in existing:
            core.create_namespaced_service(SEED_NAMESPACE, client.V1Service(
                metadata=client.V1ObjectMeta(name=name),
                spec=client.V1ServiceSpec(cluster_ip="None", selector={"app": name},
                                          ports=[client.V1ServicePort(name=port_name, port=port)])))
    return SEED_NAMESPACE


@pytest.fixture
def namespace():
    """A fresh namespace labelled for the PodSecurity privileged level, deleted afterwards."""
    name = cluster.create_namespace(cluster.unique("e2e"))
    yield name
    cluster.delete_namespace(name)

