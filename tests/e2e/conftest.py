"""The cluster tests: the local control plane of hack/cluster.py (started here when it is not running),
the seed's shared namespace, and a fresh privileged namespace per test."""

import pytest

from testbed import cluster, serving


@pytest.fixture(scope="session", autouse=True)
def running_cluster():
    cluster.ensure_running()


@pytest.fixture(scope="session")
def seed_services():
    return cluster.seed_services()


@pytest.fixture
def namespace():
    """A fresh namespace labelled for the PodSecurity privileged level, deleted afterwards."""
    name = cluster.create_namespace(cluster.unique("e2e"))
    yield name
    cluster.delete_namespace(name)



# The served releases' peers (testbed/serving.py), once per module that serves one.
@pytest.fixture(scope="module")
def seed_peers(tmp_path_factory):
    with serving.seed_peers(tmp_path_factory.mktemp("peers")) as peers:
        yield peers


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with serving.hub(tmp_path_factory.mktemp("model")) as served:
        yield served


@pytest.fixture(scope="module")
def mgmtd():
    with serving.mgmtd() as peer:
        yield peer
